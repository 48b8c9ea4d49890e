"""GPU throughput of the paper's workloads, checked against physical limits and the scheduler's
assumptions (``oncorobust.pipeline.resources``), and the effect of TF32 on attack outcomes.

For each shape (default: VGG16 at 224 px — ct/mri —, 116 px — mammo — and 32 px — mnist/cifar10;
random weights, seeded; random images in [0,1], seeded; labels = the model's own predictions;
float32) it measures, on ``--device`` (default cuda when available):

1. training: images/s of SGD steps (forward, cross-entropy, backward, Nesterov-momentum step) at the
   paper's batch 50, model in train mode;
2. adversarial training: images/s of PGD-7 training steps at batch 128 as ``train.fit`` does them
   (``clean_fraction`` 0.5: the first 64 images attacked by ``attack(..., "pgd", steps=7)``, then
   one step on the 128);
3. attacks at ``attacks.batch_size`` 64, model in eval mode: PGD-10 (one restart, α = ε/4, random
   start, final iterate), APGD-CE (100 steps, early exit) and the per-image bracket
   ``flip_eps_bracket`` at its default settings (APGD-margin bisection, eps_max 0.02, tol 1e-5, FAB
   cross-check) on at most 64 images; images/s, % flipped, gradient evaluations per image
   (``GradCounter``);
4. the physical limit: PGD-10's time per batch / (10 × one forward+backward of that batch, timed as
   ten passes) must be ≥ ~1; below 0.9 the timing is wrong, and the report says so;
5. the measured rate in GMAC/s (``resources.gmacs`` × forward-pass equivalents × images/s;
   forward + backward = 3) against ``resources.RATE_GMACS``, and ``runtime_min``'s estimate for
   10,000 images of each job (PGD-10 × 20 restarts, APGD-CE, sensitivity, an epoch of training)
   against the time measured here: an estimate below it would get SLURM jobs killed;
6. precision (CUDA only; VGG16 at 116 px): cuDNN convolutions use TF32 by default. Strict fp32
   (``fp32_precision = "ieee"``, or ``allow_tf32 = False`` on older torch) against the default:
   max |logit difference|, the share of images whose PGD-10 outcome (flipped or not, at ε = 0.002,
   0.004 and the median flipping ε) or whose ``flip_eps_bracket`` eps_upper (> 10 % apart)
   differs, PGD-10's speed under each, and whether repeated eval-mode forward passes and PGD runs
   are bitwise equal. The backend flags are restored afterwards;
7. peak GPU memory (``torch.cuda.max_memory_allocated``) per measurement, next to
   ``resources.mem_mb`` for that kind of job (a host-RSS estimate: printed side by side only).

Timings: warm-up, then ``--repeats`` interleaved repeats (each repeat runs every measurement once,
in a rotated order), ``torch.cuda.synchronize()`` around each; reported: median and min–max. A
measurement whose warm-up takes long gets fewer repeats (never below 2; the bracket and quick mode:
1), and a section that would start after ``--max-minutes`` is skipped (printed), so that the whole
run stays at 2–3 minutes on an H200.

Run on a GPU machine (about 2–3 minutes on an H200)::

    PYTHONPATH=src python benchmarks/gpu_throughput.py

and on a CPU as a check of the script itself (tiny sizes, under a minute)::

    .venv/bin/python benchmarks/gpu_throughput.py --quick --out /tmp/gpu_quick.json

(quick mode runs torch on one CPU thread, as the workflow's jobs do: two threads on two shared,
busy cores were up to 8× slower). Writes ``results/benchmarks/gpu_throughput.json`` (``--out``),
rewritten after every section.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import math
import platform
import resource
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from oncorobust.pipeline import resources as res
from oncorobust.attacks.methods import attack
from oncorobust.io import write_json
from oncorobust.models.architectures import build_model
from oncorobust.evaluation.sensitivity import GradCounter, flip_eps_bracket

N_JOB = 10_000  # images of the jobs whose runtime estimate is checked
ADV = {"eps": 0.002, "step": 0.0005, "iters": 7, "clean_fraction": 0.5}  # mammo's adversarial_training
SENS = {"eps_max": 0.02, "tol": 1e-5, "rel_tol": 0.005, "steps": 10, "restarts": 1, "fab_steps": 100,
        "refine_steps": 50}  # schema defaults
BRACKET_METHOD = inspect.signature(flip_eps_bracket).parameters["method"].default  # its default inner attack


# --------------------------------------------------------------------------------------------
# environment and backend flags
# --------------------------------------------------------------------------------------------

def _get(path: str):
    """A backend attribute by dotted path under torch.backends, or None (absent / not readable:
    torch ≥ 2.9 may refuse to mix the legacy allow_tf32 and the new fp32_precision API)."""
    obj = torch.backends
    try:
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception:  # noqa: BLE001 - absent or refused: report as unknown
        return None


FLAGS = ("cudnn.conv.fp32_precision", "cuda.matmul.fp32_precision", "fp32_precision", "cudnn.allow_tf32",
         "cuda.matmul.allow_tf32", "cudnn.benchmark", "cudnn.deterministic")


def environment(dev: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
           "device": str(dev), "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "backend_flags": {k: _get(k) for k in FLAGS}}
    try:
        import torchvision
        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        env.update(device_name=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=p.total_memory / 2 ** 30,
                   multiprocessors=p.multi_processor_count, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def _has_new_api() -> bool:
    return _get("cudnn.conv.fp32_precision") is not None and _get("cuda.matmul.fp32_precision") is not None


@contextlib.contextmanager
def fp32_mode(mode: str):
    """``default``: the backend flags as they are (cuDNN convolutions in TF32 on Ampere and later);
    ``ieee``: strict fp32 convolutions and matmuls. The previous flags are restored on exit."""
    if mode == "default":
        yield
        return
    if _has_new_api():
        conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul
        saved = (conv.fp32_precision, mm.fp32_precision)
        conv.fp32_precision, mm.fp32_precision = mode, mode
        try:
            yield
        finally:
            conv.fp32_precision, mm.fp32_precision = saved
    else:
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = mode != "ieee"
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------

class Timer:
    def __init__(self, dev: torch.device):
        self.cuda = dev.type == "cuda"
        self.dev = dev

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def __call__(self, fn) -> float:
        self.sync()
        t = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t

    def reset_peak(self) -> float:
        if not self.cuda:
            return math.nan
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.dev)
        return torch.cuda.memory_allocated(self.dev) / 2 ** 20

    def peak(self) -> float:
        return torch.cuda.max_memory_allocated(self.dev) / 2 ** 20 if self.cuda else math.nan


def run_interleaved(measures: dict, timer: Timer, repeats: int, per_measure_s: float, min_repeats: int) -> None:
    """Warm up each measure (peak memory, outputs for strength), then time it in interleaved,
    rotated repeats. ``measures``: name → dict(fn, images, [repeats]); adds ``times``,
    ``warmup_s``, ``peak_mb``, ``resident_mb`` and ``warm`` (the warm-up's return value)."""
    for m in measures.values():
        m["resident_mb"] = timer.reset_peak()
        timer.sync()
        t = time.perf_counter()
        m["warm"] = m["fn"](True)
        timer.sync()
        m["warmup_s"] = time.perf_counter() - t
        m["peak_mb"] = timer.peak()
        want = min(m.get("repeats", repeats), repeats)
        m["n_repeats"] = max(min(min_repeats, m.get("min_repeats", min_repeats)),
                             min(want, int(per_measure_s // max(m["warmup_s"], 1e-9))))
        m["times"] = []
    names = list(measures)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            m = measures[k]
            if len(m["times"]) < m["n_repeats"]:
                m["times"].append(timer(lambda m=m: m["fn"](False)))


def rate(m: dict) -> dict:
    v = m["times"]
    return {"median": m["images"] / statistics.median(v), "min": m["images"] / max(v), "max": m["images"] / min(v)}


def batches(n: int, b: int):
    return [(i, min(i + b, n)) for i in range(0, n, b)]


def flipped_share(model: nn.Module, adv: torch.Tensor, y: torch.Tensor, b: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(adv[i:j]).argmax(1) != y[i:j] for i, j in batches(len(adv), b)])


def predict(model: nn.Module, x: torch.Tensor, b: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:j]) for i, j in batches(len(x), b)])


def make_model(arch: str, size: int, seed: int, dev: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, classes=2, in_channels=1, size=size, mean=[0.5], std=[0.25]).to(dev).eval()


def images(n: int, size: int, seed: int, dev: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=gen).to(dev)


# --------------------------------------------------------------------------------------------
# 1-5, 7: throughput of one shape
# --------------------------------------------------------------------------------------------

def bench_shape(arch: str, size: int, args, dev: torch.device, timer: Timer) -> dict:
    model = make_model(arch, size, args.seed, dev)
    ab, tb, advb = args.attack_batch, args.train_batch, args.adv_batch
    x = images(max(args.attack_images, args.apgd_images, args.bracket_images, ab, tb * args.train_steps,
                   advb * args.adv_steps), size, args.seed + 1, dev)
    y = predict(model, x, ab).argmax(1)
    eps = args.eps
    # training runs on a copy: the attacks keep the seeded weights
    tmodel = copy.deepcopy(model).train()
    opt = torch.optim.SGD(tmodel.parameters(), lr=2e-4, momentum=0.9, nesterov=True)

    def sgd_step(xb, yb):
        loss = F.cross_entropy(tmodel(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def train(_warm):
        for s in range(args.train_steps):
            sgd_step(x[s * tb:(s + 1) * tb], y[s * tb:(s + 1) * tb])

    n_adv = int(round(advb * (1 - ADV["clean_fraction"])))

    def adv_train(_warm):
        for s in range(args.adv_steps):
            xb, yb = x[s * advb:(s + 1) * advb], y[s * advb:(s + 1) * advb]
            xa = attack(tmodel, xb[:n_adv], yb[:n_adv], "pgd", ADV["eps"], steps=ADV["iters"], alpha=ADV["step"],
                        random_start=True, seed=s)
            sgd_step(torch.cat([xa, xb[n_adv:]]), yb)

    xu, yu = x[:ab], y[:ab]

    def fwd_bwd(_warm):  # ten passes, like PGD-10 (and ten times less noise than one); strict fp32
        with fp32_mode("ieee"):  # as the attacks run (oncorobust.device.strict_fp32)
            _ten_passes()

    def _ten_passes():
        for _ in range(10):
            xi = xu.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xi), yu), xi)

    def batched_attack(method, n, **kw):
        def fn(warm):
            mdl = GradCounter(model) if warm else model
            outs = [attack(mdl, x[i:j], y[i:j], method, eps, seed=0, **kw) for i, j in batches(n, ab)]
            if warm:
                adv = torch.cat(outs)
                return {"flipped_percent": 100 * flipped_share(model, adv, y[:n], ab).float().mean().item(),
                        "grad_evals_per_image": mdl.grad_images / n}
        return fn

    def bracket(warm):
        stats = {}
        out = flip_eps_bracket(model, x[:args.bracket_images], eps_max=SENS["eps_max"], tol=args.bracket_tol,
                               steps=SENS["steps"], restarts=SENS["restarts"], fab_steps=args.bracket_fab_steps,
                               batch_size=ab, seed=0, stats=stats)
        if warm:
            up = out["eps_upper"]
            fin = up[torch.isfinite(up)]
            return {"grad_evals_per_image": stats["grad_evals"] / args.bracket_images, "rounds": stats["rounds"],
                    "lowered_by_fab": stats["lowered_by_fab"],
                    "flipped_percent": 100 * len(fin) / len(up),
                    "median_eps_upper": fin.median().item() if len(fin) else math.inf}

    pgd_kw = dict(steps=10, alpha_ratio=0.25, random_start=True, restarts=1)
    adv_passes = 3 + 3 * ADV["iters"] * (1 - ADV["clean_fraction"])  # as common.smk's get_train_runtime
    sens_passes = res.sensitivity_passes({**SENS, "tol": args.bracket_tol, "fab_steps": args.bracket_fab_steps,
                                          "method": BRACKET_METHOD})  # as common.smk counts them
    measures = {
        f"10 x forward+backward ({ab})": dict(fn=fwd_bwd, images=ab, passes=30.0, mem=("attack", ab)),
        f"train step (batch {tb})": dict(fn=train, images=tb * args.train_steps, passes=3.0, mem=("train", tb)),
        f"adv. train PGD-7 (batch {advb})": dict(fn=adv_train, images=advb * args.adv_steps, passes=adv_passes,
                                                 mem=("train", advb)),
        "PGD-10 (1 restart)": dict(fn=batched_attack("pgd", args.attack_images, **pgd_kw), images=args.attack_images,
                                   passes=res.attack_passes("pgd", pgd_kw), mem=("attack", ab)),
        f"APGD-CE ({args.apgd_steps} steps)": dict(
            fn=batched_attack("apgd_ce", args.apgd_images, steps=args.apgd_steps), images=args.apgd_images,
            passes=res.attack_passes("apgd_ce", {"steps": args.apgd_steps}), mem=("attack", ab), measured_passes=True),
        "flip_eps_bracket": dict(fn=bracket, images=args.bracket_images, passes=float(sens_passes),
                                 mem=("sensitivity", ab), repeats=args.bracket_repeats, min_repeats=1,
                                 measured_passes=True),
    }
    fwd_bwd(False)  # CUDA context, cuDNN handles and allocator pools before the first warm-up
    run_interleaved(measures, timer, args.repeats, args.per_measure_s, 1 if args.quick else 2)
    del tmodel, opt

    g = res.gmacs(arch, size)
    gpu = dev.type == "cuda"
    threads = torch.get_num_threads()
    assumed = res.RATE_GMACS["cuda"] if gpu else res.RATE_GMACS["cpu"] * threads
    out = {"arch": arch, "size": size, "gmacs_per_forward": g, "eps": eps, "rate_assumed_gmacs": assumed,
           "measurements": {}}
    for name, m in measures.items():
        r = rate(m)
        warm = m["warm"] or {}
        # forward-pass equivalents actually done: the scheduler's count, or 3 per gradient measured
        passes = 3 * warm["grad_evals_per_image"] if m.get("measured_passes") else m["passes"]
        kind, b = m["mem"]
        out["measurements"][name] = {
            "images_per_s": r, "seconds": m["times"], "repeats": len(m["times"]), "images": m["images"],
            "warmup_s": m["warmup_s"], "peak_gpu_mb": m["peak_mb"], "resident_before_mb": m["resident_mb"],
            "mem_mb_estimate": res.mem_mb(kind, arch, size, b), "mem_kind": kind, "batch": b,
            "scheduler_passes_per_image": m["passes"], "passes_per_image_done": passes,
            "gmac_per_s": g * passes * r["median"], **warm}
    ms = out["measurements"]
    names = list(ms)
    unit_s = statistics.median(measures[names[0]]["times"])
    pgd_batch_s = statistics.median(measures["PGD-10 (1 restart)"]["times"]) / len(batches(args.attack_images, ab))
    out["pgd10_over_10_fwd_bwd"] = pgd_batch_s / unit_s
    # 5: the scheduler's runtime estimate for N_JOB images against the time measured here
    pgd20 = {"steps": 10, "restarts": 20}
    def per_s(name):
        return ms[name]["images_per_s"]["median"]

    # (job, the scheduler's passes per image as common.smk counts them, measured seconds); PGD with
    # 20 restarts: every restart on every image (the worst case; restarts skip flipped images)
    jobs = [
        ("attack PGD-10 x 20 restarts", res.attack_passes("pgd", pgd20) + 2, 20 * N_JOB / per_s("PGD-10 (1 restart)")),
        (f"attack APGD-CE {args.apgd_steps}", res.attack_passes("apgd_ce", {"steps": args.apgd_steps}) + 2,
         N_JOB / per_s(f"APGD-CE ({args.apgd_steps} steps)")),
        ("sensitivity (bracket)", sens_passes, N_JOB / per_s("flip_eps_bracket")),
        ("clean training, 1 epoch", 3.0, N_JOB / per_s(f"train step (batch {tb})")),
        ("adv. training, 1 epoch", adv_passes, N_JOB / per_s(f"adv. train PGD-7 (batch {advb})")),
    ]
    out["runtime_check"] = []
    for job, passes, seconds in jobs:
        est = res.runtime_min(arch, size, N_JOB, passes, device=str(dev), threads=threads)
        compute = res.TIME_SAFETY * g * N_JOB * passes / assumed / 60
        out["runtime_check"].append({"job": job, "images": N_JOB, "scheduler_passes_per_image": passes,
                                     "runtime_min_estimate": est, "estimate_compute_min": compute,
                                     "measured_min": seconds / 60, "headroom": est / (seconds / 60),
                                     "ok": est >= seconds / 60})
    return out


def _mb(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.0f}"


def report_shape(o: dict, quick: bool) -> None:
    print(f"\n== {o['arch']} at {o['size']} px: {o['gmacs_per_forward']:.3f} GMAC per forward pass, ε = {o['eps']:g} ==")
    print(f"{'measurement':<30}{'img/s median':>13}{'[min, max]':>22}{'n':>3}{'flip %':>8}{'grads/img':>10}"
          f"{'GMAC/s':>9}{'peak GPU MB':>12}{'mem_mb':>8}")
    for name, m in o["measurements"].items():
        r = m["images_per_s"]
        print(f"{name:<30}{r['median']:>13.1f}   [{r['min']:>8.1f}, {r['max']:>8.1f}]{m['repeats']:>3}"
              f"{m.get('flipped_percent', math.nan):>8.1f}{m.get('grad_evals_per_image', math.nan):>10.1f}"
              f"{m['gmac_per_s']:>9.0f}{_mb(m['peak_gpu_mb']):>12}{m['mem_mb_estimate']:>8d}")
    print("  (GMAC/s = gmacs x forward-pass equivalents x img/s; APGD/bracket: 3 x measured gradients per image;"
          " mem_mb: the scheduler's host-memory estimate for that job kind and batch)")
    if "median_eps_upper" in o["measurements"]["flip_eps_bracket"]:
        b = o["measurements"]["flip_eps_bracket"]
        print(f"  bracket: {b['rounds']} rounds, FAB lowered {b['lowered_by_fab']}, median eps_upper"
              f" {b['median_eps_upper']:.3g}")
    ratio = o["pgd10_over_10_fwd_bwd"]
    verdict = ("ok" if ratio >= 0.9 else
               "BELOW THE PHYSICAL LIMIT: the measurement is wrong (asynchronous timing, cached work or early exit)")
    print(f"  PGD-10 time per batch / (10 x forward+backward of the batch) = {ratio:.3f}: {verdict}")
    pgd = o["measurements"]["PGD-10 (1 restart)"]["gmac_per_s"]
    print(f"  measured PGD-10 rate {pgd:.0f} GMAC/s vs the scheduler's {o['rate_assumed_gmacs']:.0f}"
          f" ({pgd / o['rate_assumed_gmacs']:.2f}x; with TIME_SAFETY {res.TIME_SAFETY:g} it is safe down to"
          f" {1 / res.TIME_SAFETY:.2f}x)")
    print(f"  runtime_min estimate for {N_JOB:,} images vs measured compute time (minutes)"
          + (", quick mode: tiny batches, indicative only:" if quick else ":"))
    for j in o["runtime_check"]:
        flag = "ok" if j["ok"] else "ESTIMATE TOO LOW: SLURM would kill the job"
        print(f"    {j['job']:<30} estimate {j['runtime_min_estimate']:>6d} (compute part {j['estimate_compute_min']:8.2f})"
              f"  measured {j['measured_min']:8.2f}  headroom {j['headroom']:7.1f}x  {flag}")


# --------------------------------------------------------------------------------------------
# 6: precision (CUDA)
# --------------------------------------------------------------------------------------------

def bench_precision(args, dev: torch.device, timer: Timer) -> dict:
    arch, size = args.precision_arch, args.precision_size
    model = make_model(arch, size, args.seed, dev)
    ab, n, nb = args.attack_batch, args.attack_images, args.bracket_images
    x = images(n, size, args.seed + 2, dev)
    modes = ("default", "ieee")
    out = {"arch": arch, "size": size, "images": n, "bracket_images": nb, "new_api": _has_new_api(),
           "flags_before": {k: _get(k) for k in FLAGS}}
    logits, determ = {}, {}
    for mode in modes:
        with fp32_mode(mode):
            logits[mode] = predict(model, x, ab)
            again = predict(model, x, ab)
            determ[mode] = {"forward_bitwise_equal": bool(torch.equal(logits[mode], again))}
    y = logits["ieee"].argmax(1)  # reference labels: strict fp32
    diff = (logits["default"] - logits["ieee"]).abs()
    out["max_abs_logit_diff"] = diff.max().item()
    out["max_abs_logit"] = logits["ieee"].abs().max().item()
    out["prediction_disagreement"] = (logits["default"].argmax(1) != y).float().mean().item()
    margins = (logits["ieee"].gather(1, y[:, None]).squeeze(1) - logits["ieee"].scatter(1, y[:, None], -math.inf).amax(1))
    out["median_abs_margin"] = margins.abs().median().item()

    # attack() and flip_eps_bracket() force strict fp32 (strict_fp32 decorator); their undecorated
    # bodies (__wrapped__) run under whatever fp32_mode sets, which is what is compared here
    raw_attack, raw_bracket = attack.__wrapped__, flip_eps_bracket.__wrapped__

    def pgd(e):
        return torch.cat([raw_attack(model, x[i:j], y[i:j], "pgd", e, seed=0, steps=10, alpha_ratio=0.25,
                                 random_start=True) for i, j in batches(n, ab)])

    br = {}
    for mode in modes:
        with fp32_mode(mode):
            br[mode] = raw_bracket(model, x[:nb], eps_max=SENS["eps_max"], tol=args.bracket_tol,
                                        fab_steps=args.bracket_fab_steps, batch_size=ab, seed=0)["eps_upper"]
    up_d, up_i = br["default"], br["ieee"]
    both_inf = torch.isinf(up_d) & torch.isinf(up_i)
    rel = (up_d - up_i).abs() / torch.minimum(up_d, up_i)
    out["bracket_eps_upper_differs_10pct"] = (~both_inf & ~(rel <= 0.10)).float().mean().item()
    out["bracket_eps_upper_max_rel_diff"] = rel[~both_inf].max().item() if (~both_inf).any() else 0.0
    fin = up_i[torch.isfinite(up_i)]
    eps_list = [0.002, 0.004] + ([round(fin.median().item(), 6)] if len(fin) else [])
    out["pgd"] = {}
    for e in eps_list:
        flips, advs = {}, {}
        for mode in modes:
            with fp32_mode(mode):
                advs[mode] = pgd(e)
                flips[mode] = flipped_share(model, advs[mode], y, ab)
                if e == eps_list[0]:
                    determ[mode]["pgd10_bitwise_equal"] = bool(torch.equal(advs[mode], pgd(e)))
        out["pgd"][str(e)] = {
            "flipped_percent": {m: 100 * flips[m].float().mean().item() for m in modes},
            "outcome_differs": (flips["default"] != flips["ieee"]).float().mean().item(),
            "max_abs_adv_diff": (advs["default"] - advs["ieee"]).abs().max().item()}
    out["determinism"] = determ
    # speed of PGD-10 under each mode
    measures = {}
    for mode in modes:
        def fn(_warm, mode=mode):
            with fp32_mode(mode):
                pgd(0.002)
        measures[mode] = dict(fn=fn, images=n)
    run_interleaved(measures, timer, args.repeats, args.per_measure_s, 2)
    out["pgd10_images_per_s"] = {m: rate(measures[m]) for m in modes}
    out["flags_after"] = {k: _get(k) for k in FLAGS}
    out["flags_restored"] = out["flags_after"] == out["flags_before"]
    return out


def report_precision(o: dict) -> None:
    print(f"\n== precision: cuDNN/cuBLAS default (TF32 convolutions) vs strict fp32 ('ieee'), {o['arch']} at"
          f" {o['size']} px, {o['images']} images ==")
    print(f"  flags before: {o['flags_before']}")
    print(f"  max |logit difference| {o['max_abs_logit_diff']:.3g} (max |logit| {o['max_abs_logit']:.3g},"
          f" median |margin| {o['median_abs_margin']:.3g}); predictions differing"
          f" {100 * o['prediction_disagreement']:.2f} %")
    for e, p in o["pgd"].items():
        f = p["flipped_percent"]
        print(f"  PGD-10 at ε = {e}: flipped {f['default']:.1f} % (default) vs {f['ieee']:.1f} % (fp32);"
              f" outcome differs for {100 * p['outcome_differs']:.2f} % of images;"
              f" max |x_adv difference| {p['max_abs_adv_diff']:.3g}")
    print(f"  flip_eps_bracket eps_upper more than 10 % apart: {100 * o['bracket_eps_upper_differs_10pct']:.1f} %"
          f" of {o['bracket_images']} images (max relative difference {o['bracket_eps_upper_max_rel_diff']:.3g})")
    for m, r in o["pgd10_images_per_s"].items():
        print(f"  PGD-10 speed, {m:<8}: {r['median']:10.1f} img/s  [{r['min']:.1f}, {r['max']:.1f}]")
    print(f"  TF32 speed-up: {o['pgd10_images_per_s']['default']['median'] / o['pgd10_images_per_s']['ieee']['median']:.2f}x")
    for m, d in o["determinism"].items():
        print(f"  determinism, {m:<8}: repeated forward bitwise equal {d['forward_bitwise_equal']},"
              f" repeated PGD-10 bitwise equal {d.get('pgd10_bitwise_equal')}")
    print(f"  backend flags restored: {o['flags_restored']}")


# --------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU check of the script, < 1 min)")
    ap.add_argument("--shapes", default=None, help="arch:size,... (default vgg16:224,vgg16:116,vgg16:32;"
                                                     " quick: vgg_small:32,vgg16:32)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5, quick 2)")
    ap.add_argument("--eps", type=float, default=0.002, help="ε of the attacks (the medical sets' reference ε)")
    ap.add_argument("--attack-images", type=int, default=None, help="PGD-10 images (default 256, quick 4)")
    ap.add_argument("--attack-batch", type=int, default=None, help="attacks.batch_size (default 64, quick 4)")
    ap.add_argument("--train-batch", type=int, default=None, help="train.batch_size (default 50, quick 4)")
    ap.add_argument("--adv-batch", type=int, default=None, help="adversarial_training.batch_size (default 128, quick 4)")
    ap.add_argument("--train-steps", type=int, default=None, help="SGD steps per timing (default 4, quick 1)")
    ap.add_argument("--adv-steps", type=int, default=None, help="adversarial steps per timing (default 2, quick 1)")
    ap.add_argument("--apgd-images", type=int, default=None, help="default 64, quick 2")
    ap.add_argument("--apgd-steps", type=int, default=None, help="default 100, quick 20")
    ap.add_argument("--bracket-images", type=int, default=None, help="default 64, quick 2")
    ap.add_argument("--bracket-repeats", type=int, default=None, help="default 2, quick 1")
    ap.add_argument("--bracket-tol", type=float, default=None, help="default 1e-5 (sensitivity.tol), quick 2e-3")
    ap.add_argument("--bracket-fab-steps", type=int, default=None, help="default 100, quick 5")
    ap.add_argument("--per-measure-s", type=float, default=None,
                    help="time budget of one measurement's repeats (fewer repeats when its warm-up is slow)")
    ap.add_argument("--max-minutes", type=float, default=4.0, help="skip sections that would start after this")
    ap.add_argument("--precision-arch", default="vgg16")
    ap.add_argument("--precision-size", type=int, default=116)
    ap.add_argument("--no-precision", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; quick: 1, as the workflow's jobs run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/benchmarks/gpu_throughput.json")
    args = ap.parse_args()
    q = args.quick
    defaults = dict(shapes="vgg_small:32,vgg16:32" if q else "vgg16:224,vgg16:116,vgg16:32", repeats=2 if q else 5,
                    attack_images=4 if q else 256, attack_batch=4 if q else 64, train_batch=4 if q else 50,
                    adv_batch=4 if q else 128, train_steps=1 if q else 4, adv_steps=1 if q else 2,
                    apgd_images=2 if q else 64, apgd_steps=20 if q else 100, bracket_images=2 if q else 64,
                    bracket_repeats=1 if q else 2, bracket_tol=2e-3 if q else SENS["tol"],
                    bracket_fab_steps=5 if q else SENS["fab_steps"], per_measure_s=2.0 if q else 10.0)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.threads or q:
        torch.set_num_threads(args.threads or 1)
    dev = torch.device(args.device)
    timer = Timer(dev)
    t0 = time.perf_counter()
    env = environment(dev)
    result = {"environment": env, "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "adversarial_training": ADV, "sensitivity": {**SENS, "method": BRACKET_METHOD, "tol": args.bracket_tol,
                                                           "fab_steps": args.bracket_fab_steps},
              "shapes": {}, "skipped": []}
    print(f"python {env['python']}, torch {env['torch']}, torchvision {env.get('torchvision')}, device {dev}"
          + (f" = {env['device_name']} (sm {env['capability']}, {env['gpu_memory_gib']:.0f} GiB), CUDA {env['cuda']},"
             f" cuDNN {env['cudnn']}" if dev.type == "cuda" else f" ({env['cpu']}, {env['torch_threads']} torch threads)"))
    print(f"backend flags: {env['backend_flags']}; float32 matmul precision {env['float32_matmul_precision']}")
    print(f"{'quick mode (tiny sizes: a check of the script, not a measurement); ' if q else ''}"
          f"{args.repeats} interleaved repeats, attack batch {args.attack_batch}, train batch {args.train_batch},"
          f" adv. batch {args.adv_batch}, PGD-10 on {args.attack_images} images, APGD-CE {args.apgd_steps} steps on"
          f" {args.apgd_images}, bracket on {args.bracket_images} (inner attack {BRACKET_METHOD}, tol"
          f" {args.bracket_tol:g}, FAB {args.bracket_fab_steps} steps)")

    def over_budget(what: str) -> bool:
        if time.perf_counter() - t0 > 60 * args.max_minutes:
            print(f"\n-- skipped {what}: past --max-minutes {args.max_minutes:g}")
            result["skipped"].append(what)
            return True
        return False

    for spec in args.shapes.split(","):
        arch, size = spec.split(":")
        if over_budget(spec):
            continue
        ts = time.perf_counter()
        o = bench_shape(arch, int(size), args, dev, timer)
        o["section_s"] = time.perf_counter() - ts
        result["shapes"][spec] = o
        report_shape(o, q)
        print(f"  ({o['section_s']:.1f} s)")
        result["elapsed_s"] = time.perf_counter() - t0
        write_json(result, args.out)
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    if dev.type != "cuda":
        print("\n-- precision section skipped: TF32 and cuDNN determinism only concern CUDA devices")
        result["precision"] = None
    elif args.no_precision:
        result["precision"] = None
    elif not over_budget("precision"):
        ts = time.perf_counter()
        result["precision"] = bench_precision(args, dev, timer)
        result["precision"]["section_s"] = time.perf_counter() - ts
        report_precision(result["precision"])
        print(f"  ({result['precision']['section_s']:.1f} s)")

    result["elapsed_s"] = time.perf_counter() - t0
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        result["max_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    write_json(result, args.out)
    wrong = [s for s, o in result["shapes"].items() if o["pgd10_over_10_fwd_bwd"] < 0.9]
    low = [f"{s}: {j['job']}" for s, o in result["shapes"].items() for j in o["runtime_check"] if not j["ok"]]
    print(f"\nsummary: {len(result['shapes'])} shapes in {result['elapsed_s']:.0f} s, peak host RSS"
          f" {result['max_rss_mb']:.0f} MB; physical-limit check "
          + (f"FAILED for {wrong} (the measurement is wrong)" if wrong else "passed")
          + "; runtime estimates " + (f"TOO LOW for {low}" if low else "above the measured times"))
    print(f"wrote {args.out}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
