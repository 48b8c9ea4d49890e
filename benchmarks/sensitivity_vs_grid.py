"""Min-flip ε: the paper's grid scan against our batched bisection at equal resolution.

The paper ran, for every test image, a full PGD-10 with 20 random restarts at each of 18–32 ε
values. We run it the same way (``grid_flip_eps``: every image, every grid value, every restart)
on one demo model, and our bisection with the grid step as tolerance and (default) 5 restarts. Reported:
gradient evaluations and wall time of each, and the fraction of images whose answers lie within
one grid step (both ``inf`` counts as agreement). A grid scan with one restart is reported too,
so the saving from the search and from the restarts can be told apart.

Run with `make bench` after `make demo`; writes results/benchmarks/sensitivity_vs_grid.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from oncorobust.io import write_json
from oncorobust.models.loading import load_model
from oncorobust.evaluation.sensitivity import grid_flip_eps, min_flip_eps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="results/digits/models/clean.pt")
    ap.add_argument("--tensors", default="results/digits/tensors/test.pt")
    ap.add_argument("--n", type=int, default=200, help="test images (at least 200)")
    ap.add_argument("--eps-max", type=float, default=0.15)
    ap.add_argument("--grid-size", type=int, default=30, help="the paper used 18-32 values")
    ap.add_argument("--grid-restarts", type=int, default=20, help="the paper's code: 20")
    ap.add_argument("--bisection-restarts", type=int, default=5)
    ap.add_argument("--out", default="results/benchmarks/sensitivity_vs_grid.json")
    args = ap.parse_args()
    model = load_model(args.model)
    x = torch.load(args.tensors, weights_only=True)["x"][: args.n]
    step = args.eps_max / args.grid_size
    grid = [step * k for k in range(1, args.grid_size + 1)]

    def timed(fn):
        stats = {}
        t = time.perf_counter()
        out = fn(stats).numpy()
        return out, stats["grad_evals"], time.perf_counter() - t

    bis, bis_evals, bis_t = timed(lambda s: min_flip_eps(model, x, eps_max=args.eps_max, tol=step,
                                                          restarts=args.bisection_restarts, stats=s))
    grid1, g1_evals, g1_t = timed(lambda s: grid_flip_eps(model, x, grid, restarts=1, stats=s))
    gridp, gp_evals, gp_t = timed(lambda s: grid_flip_eps(model, x, grid, restarts=args.grid_restarts, stats=s))

    def agree(a, b):
        both_inf = np.isinf(a) & np.isinf(b)
        close = np.isfinite(a) & np.isfinite(b) & (np.abs(a - b) <= step * (1 + 1e-6))
        return float(np.mean(both_inf | close))

    result = {
        "images": len(x), "grid_values": len(grid), "grid_step": step, "eps_max": args.eps_max,
        "model": args.model, "grid_restarts": args.grid_restarts, "bisection_restarts": args.bisection_restarts,
        "grad_evals": {"bisection": bis_evals, "grid_paper": gp_evals, "grid_1_restart": g1_evals},
        "wall_time_s": {"bisection": bis_t, "grid_paper": gp_t, "grid_1_restart": g1_t},
        "grad_evals_ratio": gp_evals / bis_evals, "wall_time_ratio": gp_t / bis_t,
        "agreement_within_one_step": agree(bis, gridp),
        "grad_evals_ratio_1_restart": g1_evals / bis_evals, "wall_time_ratio_1_restart": g1_t / bis_t,
        "agreement_within_one_step_1_restart": agree(bis, grid1),
        "not_flipped": {"bisection": int(np.isinf(bis).sum()), "grid_paper": int(np.isinf(gridp).sum())},
    }
    write_json(result, args.out)
    print(f"{len(x)} images, grid of {len(grid)} ε (step {step:.4g}), paper grid with {args.grid_restarts} restarts")
    print(f"gradient evaluations: grid {gp_evals:,} vs bisection {bis_evals:,} -> {result['grad_evals_ratio']:.1f}x fewer")
    print(f"wall time: grid {gp_t:.1f} s vs bisection {bis_t:.1f} s -> {result['wall_time_ratio']:.1f}x less")
    print(f"agreement within one grid step: {100 * result['agreement_within_one_step']:.1f}%")
    print(f"(grid with 1 restart: {result['grad_evals_ratio_1_restart']:.1f}x evals, "
          f"{result['wall_time_ratio_1_restart']:.1f}x time, agreement {100 * result['agreement_within_one_step_1_restart']:.1f}%)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
