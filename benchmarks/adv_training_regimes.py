"""Adversarial-training regimes side by side on one demo dataset: seconds per epoch of the update
loop (validation attacks excluded) and the best validation PGD accuracy of adv_pgd, adv_fast and
adv_free, with the clean model for reference. Needs the demo's tensors (`make demo`).

Writes results/benchmarks/adv_training_regimes.json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import yaml

from oncorobust.io import write_json
from oncorobust.models.architectures import build_model
from oncorobust.training.train import fit, robust_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--out", default="results/benchmarks/adv_training_regimes.json")
    args = ap.parse_args()
    cfg = yaml.safe_load(open(args.config))["datasets"][args.dataset]
    root = f"results/{args.dataset}/tensors"
    data = {s: torch.load(f"{root}/{s}.pt", weights_only=True) for s in ("train", "val", "test")}
    stats = json.load(open(f"{root}/stats.json"))
    adv = cfg["adversarial_training"]
    out = {}
    for regime in ("clean", "adv_pgd", "adv_fast", "adv_free"):
        torch.manual_seed(0)
        model = build_model(cfg["model"]["arch"], classes=len(stats["classes"]), in_channels=stats["channels"],
                            size=stats["size"], mean=stats["mean"], std=stats["std"], width=cfg["model"]["width"])
        model, hist = fit(model, data, regime=regime, train=cfg["train"], adv=adv, progress=False)
        test_rob = robust_accuracy(model, data["test"]["x"], data["test"]["y"], torch.device("cpu"),
                                   eps=adv["eps"], step=adv["step"], iters=10, seed=0)
        out[regime] = {"epochs": len(hist), "train_s_per_epoch": float(np.mean([h["train_seconds"] for h in hist])),
                       "best_val_robust_acc": float(np.nanmax([h["val_robust_acc"] for h in hist])) if regime != "clean" else None,
                       "test_pgd10_acc": test_rob}
        print(f"{regime:9s} epochs {len(hist):3d}  update loop {out[regime]['train_s_per_epoch']:.2f} s/epoch"
              f"  best val robust acc {out[regime]['best_val_robust_acc']}  test PGD-10 acc {test_rob:.3f}")
    write_json({"dataset": args.dataset, "eps": adv["eps"], "regimes": out}, args.out)


if __name__ == "__main__":
    main()
