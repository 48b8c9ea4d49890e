"""Attack throughput and strength: ours against IBM ART on the same model, images and ε; the
effect of early exit; and PGD-10's cost against its physical limit (10 forward+backward passes).

Every compared run is repeated ``--repeats`` times, interleaved (each repeat runs every attack once,
in a rotated order) so that machine noise hits all alike; reported: median and min–max of
images/s, and the strength of each attack (% of predictions flipped, pushed away from the
model's prediction). A throughput ratio is only meaningful at equal or greater strength.

Early exit (``attacks.early_exit`` for BIM/PGD; always on for APGD): an image that has flipped is
no longer attacked. It can only flip more images (its first successful iterate is kept) and it
needs fewer gradient evaluations; both are printed.

By default the model is the demo's trained mammography model and its test split (run `make demo`
first); without it, a random vgg_small on random images. Run with `make bench` (needs the bench
extra: adversarial-robustness-toolbox). Writes results/benchmarks/attack_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn

from oncorobust.attacks.methods import attack
from oncorobust.io import write_json
from oncorobust.models.architectures import build_model
from oncorobust.models.loading import load_model
from oncorobust.evaluation.sensitivity import GradCounter


def load(args, dev):
    if os.path.exists(args.model) and os.path.exists(args.tensors):
        model = load_model(args.model, dev)
        x = torch.load(args.tensors, weights_only=True)["x"][: args.batch].to(dev)
        return model, x, f"demo model {args.model} on {len(x)} test images"
    torch.manual_seed(0)
    model = build_model("vgg_small", classes=2, in_channels=1, size=32, mean=[0.5], std=[0.25], width=16).to(dev).eval()
    return model, torch.rand(args.batch, 1, 32, 32, device=dev), "random vgg_small width 16, random 32 px images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="results/mammo/models/clean.pt")
    ap.add_argument("--tensors", default="results/mammo/tensors/test.pt")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--eps", type=float, default=0.016, help="the demo's reference ε for the medical sets")
    ap.add_argument("--apgd-steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="results/benchmarks/attack_throughput.json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    model, x, what = load(args, dev)
    with torch.no_grad():
        y = model(x).argmax(1)
    n = len(x)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    eps = args.eps

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(nn.functional.cross_entropy(model(xi), y), xi)

    from art.attacks.evasion import (AutoProjectedGradientDescent, BasicIterativeMethod, FastGradientMethod,
                                     ProjectedGradientDescent)
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=2,
                            clip_values=(0.0, 1.0), device_type="gpu" if dev.type == "cuda" else "cpu")
    xn, yn = x.cpu().numpy(), y.cpu().numpy()
    art = {
        "fgsm": FastGradientMethod(clf, eps=eps, batch_size=n),
        "bim": BasicIterativeMethod(clf, eps=eps, eps_step=eps / 10, max_iter=10, batch_size=n, verbose=False),
        "pgd": ProjectedGradientDescent(clf, eps=eps, eps_step=eps / 4, max_iter=10, num_random_init=1,
                                        batch_size=n, verbose=False),
        "apgd_ce": AutoProjectedGradientDescent(clf, eps=eps, eps_step=2 * eps, max_iter=args.apgd_steps,
                                                nb_random_init=1, batch_size=n, loss_type="cross_entropy",
                                                verbose=False),
    }
    ours = {f"ours {m}": (m, {}) for m in ("fgsm", "bim", "pgd")}
    ours.update({"ours bim early exit": ("bim", {"early_exit": True}),
                 "ours pgd early exit": ("pgd", {"early_exit": True}),
                 "ours apgd_ce": ("apgd_ce", {"steps": args.apgd_steps})})
    runs = {"unit: 1 forward+backward": lambda mdl=model: fwd_bwd()}
    for k, (m, kw) in ours.items():
        runs[k] = lambda mdl=model, m=m, kw=kw: attack(mdl, x, y, m, eps, seed=0, **kw)
    for m, a in art.items():
        runs[f"ART {m}"] = lambda mdl=model, a=a: torch.from_numpy(a.generate(xn, yn)).to(dev)
    names = list(runs)
    times = {k: [] for k in names}
    flips, grads = {}, {}
    for k in names:  # warm-up, strength and gradient count (ours: every gradient pass counted)
        counter = GradCounter(model)
        out = runs[k](counter)
        if isinstance(out, torch.Tensor):
            with torch.no_grad():
                flips[k] = 100 * (model(out.to(dev)).argmax(1) != y).float().mean().item()
        if k in ours:
            grads[k] = counter.grad_images / n
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            t = time.perf_counter()
            runs[k]()
            sync()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: {"median": n / med[k], "min": n / max(v), "max": n / min(v)} for k, v in times.items()}
    unit = med["unit: 1 forward+backward"]
    pgd_overhead = med["ours pgd"] / (10 * unit)
    if pgd_overhead < 0.9:
        raise SystemExit(f"PGD-10 measured faster than 10 forward+backward passes ({pgd_overhead:.2f}): the"
                         " measurement is wrong")
    result = {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "setup": what, "eps": eps, "repeats": args.repeats, "images_per_s": rate, "flipped_percent": flips,
        "grad_evals_per_image": grads, "pgd10_overhead_vs_10_fwd_bwd": pgd_overhead,
        "speedup_vs_art_median": {m: rate[f"ours {m}"]["median"] / rate[f"ART {m}"]["median"]
                                  for m in ("fgsm", "bim", "pgd", "apgd_ce")},
        "early_exit": {m: {"flipped_final_iterate": flips[f"ours {m}"], "flipped_early_exit": flips[f"ours {m} early exit"],
                           "grad_evals_final_iterate": grads[f"ours {m}"],
                           "grad_evals_early_exit": grads[f"ours {m} early exit"]} for m in ("bim", "pgd")},
    }
    write_json(result, args.out)
    print(f"{what}, ε = {eps:g}, {args.repeats} interleaved repeats, torch threads {torch.get_num_threads()}")
    print(f"{'attack':<26}{'img/s median':>14}{'[min, max]':>22}{'flipped %':>11}{'grads/img':>11}")
    for k in names:
        r_ = rate[k]
        print(f"{k:<26}{r_['median']:>14.1f}   [{r_['min']:8.1f}, {r_['max']:8.1f}]"
              f"{flips.get(k, float('nan')):>11.1f}{grads.get(k, float('nan')):>11.1f}")
    for m, s in result["speedup_vs_art_median"].items():
        print(f"{m}: ours / ART throughput {s:.2f}x at strength {flips[f'ours {m}']:.1f}% vs {flips[f'ART {m}']:.1f}% flipped")
    for m, e in result["early_exit"].items():
        print(f"early exit, {m}: flipped {e['flipped_final_iterate']:.1f}% -> {e['flipped_early_exit']:.1f}%,"
              f" gradient evaluations per image {e['grad_evals_final_iterate']:.1f} -> {e['grad_evals_early_exit']:.1f}")
    print(f"PGD-10 cost / 10 x (forward+backward): {pgd_overhead:.3f}")
    print(f"wrote {args.out}")
    np.testing.assert_array_less(0, [v["median"] for v in rate.values()])


if __name__ == "__main__":
    main()
