"""How long `oncorobust audit` takes at its defaults, per budget, beside the estimate it prints.

The case of issue 20: 80 PNGs (two classes, 40 patients) audited at the default 224 px by a small
TorchScript CNN (three strided convolutions, trained here for a few epochs so that its predictions
mean something), with every other option at its default (ε 0.001-0.008; fgsm, bim, pgd, worst;
health checks; the sensitivity search). Each budget runs `oncorobust audit` as a user would (a
subprocess, --cores 2 on this machine), timed from start to the report; the estimate is the one the
command prints before it starts. Runs are interleaved by budget when repeated.

Goals (issue 20): quick within 5 minutes, standard within 20 minutes on the 2-core development
machine, each estimate within ±30% of the measured time.

    .venv/bin/python benchmarks/audit_budgets.py [--budgets quick standard] [--repeats 1]

Writes results/benchmarks/audit_budgets.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
GOALS_S = {"quick": 300, "standard": 1200, "thorough": None}


class SmallCNN(nn.Module):
    """Three strided convolutions, global average pooling, two logits (about 25 k parameters)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(64, 2)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def make_pngs(root: Path, n: int = 80, side: int = 256, seed: int = 0) -> None:
    """``n`` 8-bit PNGs of side ``side``: a bright disc, larger when malignant, on noise; two
    images per patient (file name prefix)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    for i in range(n):
        c = i % 2
        cls = ["benign", "malignant"][c]
        (root / cls).mkdir(parents=True, exist_ok=True)
        r = side * (0.12 + 0.08 * c + rng.normal(0, 0.03))
        cy, cx = side / 2 + rng.normal(0, side / 20, 2)
        img = 70 + 90 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r) + rng.normal(0, 25, (side, side))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / cls / f"p{i // 2:03d}_{i}.png")


def train_model(root: Path, out: Path, size: int = 224, epochs: int = 8) -> None:
    """Train :class:`SmallCNN` briefly on all the PNGs (the audit's own split decides what it
    tests on; the point is a model with meaningful predictions) and save it as TorchScript."""
    xs, ys = [], []
    for c, cls in enumerate(["benign", "malignant"]):
        for p in sorted((root / cls).glob("*.png")):
            img = Image.open(p).convert("L").resize((size, size), Image.BILINEAR)
            xs.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None])
            ys.append(c)
    x, y = torch.stack(xs), torch.tensor(ys)
    torch.manual_seed(0)
    net = SmallCNN()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(16):
            opt.zero_grad()
            nn.functional.cross_entropy(net((x[i] - 0.4) / 0.2), y[i]).backward()
            opt.step()

    class Normalised(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net((x - 0.4) / 0.2)

    model = Normalised(net).eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    print(f"model: SmallCNN trained {epochs} epochs, training accuracy {acc:.3f}", flush=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(model).save(str(out))


def run_audit(data: Path, model: Path, out: Path, budget: str, cores: int) -> dict:
    """One `oncorobust audit` at its defaults with ``--budget``; wall time and printed estimate."""
    cmd = [sys.executable, "-m", "oncorobust.cli", "audit", "--model", str(model), "--data", str(data),
           "--out", str(out), "--budget", budget, "--normalize", "none", "--cores", str(cores)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"audit --budget {budget} failed (exit {proc.returncode})")
    m = re.search(r"estimated total (?:(\d+) h )?(?:(\d+) min )?(?:(\d+) s)?", proc.stderr)
    est = None
    if m:
        h, mi, s = (int(g) if g else 0 for g in m.groups())
        est = 3600 * h + 60 * mi + s
    progress = len(re.findall(r"% of the planned passes", proc.stderr))
    return {"budget": budget, "wall_s": wall, "estimate_s": est, "progress_lines": progress,
            "estimate_line": next((ln for ln in proc.stderr.splitlines() if "estimated total" in ln), "")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", nargs="+", default=["quick", "standard"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", help="keep the audit folders under this path")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="audit_budgets_"))
    work.mkdir(parents=True, exist_ok=True)
    data, model = work / "pngs", work / "cnn.ts"
    if not data.exists():
        make_pngs(data)
    if not model.exists():
        train_model(data, model)
    runs = []
    for rep in range(args.repeats):
        for budget in args.budgets:  # interleaved
            r = run_audit(data, model, work / f"audit_{budget}_{rep}", budget, args.cores)
            r["repeat"] = rep
            runs.append(r)
            print(f"{budget} (repeat {rep}): measured {r['wall_s']:.0f} s, estimated {r['estimate_s']} s"
                  f" ({r['progress_lines']} progress lines)\n  {r['estimate_line']}", flush=True)
    summary = {}
    for budget in args.budgets:
        walls = [r["wall_s"] for r in runs if r["budget"] == budget]
        ests = [r["estimate_s"] for r in runs if r["budget"] == budget and r["estimate_s"]]
        med = statistics.median(walls)
        ratio = statistics.median(ests) / med if ests else None
        goal = GOALS_S.get(budget)
        summary[budget] = {"median_s": med, "min_s": min(walls), "max_s": max(walls),
                           "estimate_s": statistics.median(ests) if ests else None, "estimate_ratio": ratio,
                           "goal_s": goal, "time_goal_met": goal is None or med <= goal,
                           "estimate_goal_met": ratio is not None and 0.7 <= ratio <= 1.3}
        print(f"{budget}: median {med:.0f} s (min {min(walls):.0f}, max {max(walls):.0f}; goal"
              f" {goal if goal else '-'} s), estimate/measured {ratio if ratio is None else round(ratio, 2)}",
              flush=True)
    out = REPO / "results" / "benchmarks" / "audit_budgets.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "summary": summary, "cores": args.cores,
                               "machine_cpus": os.cpu_count()}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
