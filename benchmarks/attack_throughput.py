"""Attack throughput: our torchattacks-based FGSM/BIM/PGD against IBM ART on the same model and
batch, and PGD-10's overhead over the physical limit (10 forward+backward passes).

Run with `make bench` (needs the bench extra: adversarial-robustness-toolbox). Writes
results/benchmarks/attack_throughput.json and prints the ratios.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from torch import nn

from oncorobust.attacks import attack
from oncorobust.io import write_json
from oncorobust.models import build_model


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=16, help="vgg_small width")
    ap.add_argument("--eps", type=float, default=0.004)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="results/benchmarks/attack_throughput.json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("vgg_small", classes=2, in_channels=1, size=args.size, mean=[0.5], std=[0.25],
                        width=args.width).to(dev).eval()
    x = torch.rand(args.batch, 1, args.size, args.size, device=dev)
    with torch.no_grad():
        y = model(x).argmax(1)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xi), y)
        torch.autograd.grad(loss, xi)
        sync()

    t_unit = best_of(fwd_bwd, args.repeats)
    ours = {}
    for method in ("fgsm", "bim", "pgd"):
        t = best_of(lambda m=method: (attack(model, x, y, m, args.eps), sync()), args.repeats)
        ours[method] = args.batch / t
    t_pgd = args.batch / ours["pgd"]

    from art.attacks.evasion import BasicIterativeMethod, FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, args.size, args.size),
                            nb_classes=2, clip_values=(0.0, 1.0), device_type="gpu" if dev.type == "cuda" else "cpu")
    xn, yn = x.cpu().numpy(), y.cpu().numpy()
    art_attacks = {
        "fgsm": FastGradientMethod(clf, eps=args.eps, batch_size=args.batch),
        "bim": BasicIterativeMethod(clf, eps=args.eps, eps_step=args.eps / 10, max_iter=10,
                                    batch_size=args.batch, verbose=False),
        "pgd": ProjectedGradientDescent(clf, eps=args.eps, eps_step=args.eps / 4, max_iter=10, num_random_init=1,
                                        batch_size=args.batch, verbose=False),
    }
    art = {m: args.batch / best_of(lambda a=a: a.generate(xn, yn), args.repeats) for m, a in art_attacks.items()}
    result = {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "model": f"vgg_small width {args.width}", "image": [1, args.size, args.size], "batch": args.batch,
        "eps": args.eps, "ours_images_per_s": ours, "art_images_per_s": art,
        "speedup_vs_art": {m: ours[m] / art[m] for m in ours},
        "one_fwd_bwd_s": t_unit, "pgd10_s": t_pgd, "pgd_overhead": t_pgd / (10 * t_unit),
    }
    write_json(result, args.out)
    for m in ours:
        print(f"{m}: ours {ours[m]:8.1f} img/s   ART {art[m]:8.1f} img/s   speed-up {ours[m] / art[m]:.2f}x")
    print(f"PGD-10 overhead over 10 x (forward+backward): {result['pgd_overhead']:.3f}")
    print(f"wrote {args.out}")
    np.testing.assert_array_less(0, list(ours.values()))


if __name__ == "__main__":
    main()
