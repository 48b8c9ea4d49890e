"""Start-up cost of an attack job: a fresh Python process that runs the imports of
``workflow/scripts/attack.py`` (and Snakemake's script preamble), without attacking anything.

Usage::

    python benchmarks/job_startup.py [--old-src DIR] [--repeats 7]

With ``--old-src`` (the ``src`` folder of another checkout, e.g. a ``git worktree`` of an older
commit) both versions are timed, interleaved (old, new, old, new, …), and the paired ratio is
printed. Writes ``results/benchmarks/job_startup.json``. A job's whole cost is this start-up plus
loading the tensors and the model plus the attack itself (``results/benchmarks/attack/``). With
``attacks.jobs: per_method`` (the default) one job runs a method at every ε of the grid, so this
start-up is paid once per dataset, regime and method rather than once per ε.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def script_imports(script: Path) -> str:
    """The top-level import statements of a workflow script, as code to run."""
    tree = ast.parse(script.read_text())
    lines = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return "\n".join(["import snakemake.script", *lines])


def time_once(code: str, src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-src", type=Path, help="src/ of an older checkout to compare with")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    runs = {"new": (ROOT / "src", ROOT / "workflow/scripts/attack.py")}
    if args.old_src:
        runs["old"] = (args.old_src.resolve(), args.old_src.resolve().parent / "workflow/scripts/attack.py")
    codes = {k: script_imports(script) for k, (_, script) in runs.items()}
    for k, (src, _) in runs.items():  # warm the file cache once
        time_once(codes[k], src)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, (src, _) in runs.items():
            times[k].append(time_once(codes[k], src))
    out = {"python": sys.version.split()[0], "repeats": args.repeats, "cpu_count": os.cpu_count()}
    for k, ts in times.items():
        out[k] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
                  "imports": codes[k].splitlines()}
        print(f"{k}: attack job start-up {statistics.median(ts):.2f} s median"
              f" (range {min(ts):.2f}-{max(ts):.2f} s, {args.repeats} runs)")
    if "old" in times:
        ratios = [o / n for o, n in zip(times["old"], times["new"])]
        out["old_over_new_median"] = statistics.median(ratios)
        print(f"old / new: {statistics.median(ratios):.2f}x (paired median; range"
              f" {min(ratios):.2f}-{max(ratios):.2f})")
    dest = ROOT / "results/benchmarks/job_startup.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
