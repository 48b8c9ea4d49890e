"""Memory (MB) and run time (minutes) a job needs, from the model, the input size and the batch.

The workflow declares ``threads``, ``gpu``, ``mem_mb`` and ``runtime`` of every model-running job
with :func:`job_resource` (one table of job kinds → formulas, :data:`JOB_RESOURCES`; the rules call
it through ``job_resource`` in ``workflow/rules/common.smk``), so a paper-size job (VGG16 at 224 px,
batches of 64-128) asks the cluster for what it uses instead of a fixed number. No torch or
Snakemake import: the rules import this module while the DAG is built. No workflow script imports
it, so an edit of a formula reruns no job (:mod:`oncorobust.pipeline.codehash`).

Peak resident memory of a job (MB)::

    mem = SAFETY × (BASE + model + batch × ACT_FACTOR × activations + DATA_FACTOR × data)

- ``BASE`` (1000 MB): Python with torch, torchattacks, pandas and oncorobust imported, run as a
  Snakemake script. Measured RSS after the imports: 808 MB (CPU torch 2.x, Linux); 890-990 MB
  for the preprocess jobs of the smoke run (no model); a vgg_small adversarial training at 32 px
  (batch 32, 700 images, checkpoints): 1014 MB. A CUDA build maps more host memory, which the
  safety factor covers only partly; on a GPU the activations live in GPU memory, so ``mem_mb``
  is then an upper bound of host memory.
- ``model``: copies of the parameters (4 bytes each) held at the peak, plus, for vgg16, the
  transient default classifier torchvision builds before the paper's head replaces it (123.6 M
  parameters, 472 MB): attack/health/sensitivity/figure jobs 2 copies (the model and the loaded
  state dict; transfer attacks 4: the source model too), training 5 (weights, gradients, SGD
  momentum, the best epoch's copy, and the loaded or saved checkpoint).
- ``activations``: per-image size of every convolution and pooling output of the network (an
  analytic count, :func:`activation_mb`), times ``ACT_FACTOR`` = 1.25: what autograd keeps for
  the backward pass (the ReLUs are in place; max-pool indices; the gradient buffers of the
  largest layers). Measured on the CPU (torch 2.x, one thread, peak RSS per extra image of a
  forward + input-gradient pass, or a forward + backward + SGD step):

  ==========  ======  ===================  ==============================================
  arch        px      analytic MB / image  measured MB / image (batches compared)
  ==========  ======  ===================  ==============================================
  vgg16       224     57.5                 69.8 attack, 69.9 train (16 vs 32)
  vgg16       116     15.3                 17.1 attack (32 vs 64), 18.9 train (32 vs 64)
  vgg16       32      1.17                 1.38 train (64 vs 256); attack: below the
                                           model-building peak
  vgg_small   32      0.90 (width 16)      0.89 attack, 0.91 train (64 vs 256)
  ==========  ======  ===================  ==============================================

  Peak RSS measured at a batch of 32 (vgg16, one thread, no checkpoint or data): 3.9 GB
  (224 px, attack), 4.9 GB (224 px, train), 1.9 / 2.2 GB (116 px attack / train); mem_mb
  declares 5.8 / 7.5 / 2.9 / 3.4 GB for these (it also counts a loaded state dict, the best-epoch
  copy and the data).

  The sensitivity search (APGD bisection + FAB) keeps twice that: measured 35 MB per image at
  116 px (flip_eps_bracket, batch 16 vs 32: 2.28 / 2.84 GB), so its activations count
  ``KIND_ACT["sensitivity"]`` = 2 times.

  Restarts, steps and bisection rounds run one after another on the same batch, so they do
  not change the peak (they do change the run time).
- ``batch``: the configured batch (``train.batch_size``, ``adversarial_training.batch_size`` or
  ``attacks.batch_size``), but never more than the images of the job's split when that is known
  (the tensor files exist when a job is scheduled, so Snakemake evaluates the resources then).
- ``data``: the job's input tensor files, held in memory (``DATA_FACTOR`` = 2: the loaded split
  plus batch copies and results).
- ``SAFETY`` = 1.25, rounded up to 100 MB, never below ``FLOOR_MB`` = 1000.

Run time (minutes) is a rough upper estimate: multiply-accumulates per image (analytic) × images ×
passes (forward = 1, forward + backward = 3; PGD: steps × restarts, all restarts counted) at
``RATE_GMACS`` (GMAC/s: 20 per CPU thread, 4000 on a GPU) × ``TIME_SAFETY``, plus a few minutes
to start and load; never below ``FLOOR_MIN``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Callable

from oncorobust.pipeline import dag
from oncorobust.spec import base_method, is_transfer, split_replicate_name

# the cost model in gradient passes (passes.py; the attack, health and sensitivity code reads it for its
# progress lines)
from oncorobust.pipeline.passes import attack_passes, health_passes, sensitivity_passes, train_grad_evals

BASE_MB = 1000.0
ACT_FACTOR = 1.25
DATA_FACTOR = 2.0
SAFETY = 1.25
FLOOR_MB = 1000
TORCHVISION_VGG16_CLASSIFIER = 123_642_856  # built by torchvision.models.vgg16(), then replaced
TORCHVISION_VGG16 = 138_357_544  # the ImageNet state dict loaded by model.pretrained: imagenet
VGG16_FEATURES = 14_714_688
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
MODEL_COPIES = {"train": 5, "attack": 2, "transfer": 4, "health": 2, "sensitivity": 2, "figure": 2}
KIND_ACT = {"sensitivity": 2.0}  # activation multiplier per job kind (default 1)

# other archs (torchvision:*, monai:*, python:*, torchscript:*): no analytic count; estimated as
# VGG16 at the same input size (more parameters and activations than most 2-D classifiers of
# that size) times this factor, for the memory-hungry ones (e.g. DenseNet's concatenations)
OTHER_ARCH_FACTOR = 1.5
KNOWN_ARCHS = ("vgg16", "vgg_small")

RATE_GMACS = {"cpu": 20.0, "cuda": 4000.0}
TIME_SAFETY = 3.0
START_MIN = 5.0
FLOOR_MIN = 10


def _layers(arch: str, size: int, width: int = 32) -> list[tuple[str, int, int, int]]:
    """(kind, channels in, channels out, output side) of each conv ('C') and pool ('M') layer."""
    if arch == "vgg16":
        cfg, cin = VGG16_CFG, 3
    elif arch == "vgg_small":
        w = (width, 2 * width, 4 * width)
        cfg = [w[0], w[0], "M", w[1], w[1], "M", w[2], w[2], "M"]
        cin = 1
    else:
        raise ValueError(f"unknown arch {arch!r}; choose vgg16 or vgg_small")
    out, side, c = [], int(size), cin
    for v in cfg:
        if v == "M":
            side //= 2
            out.append(("M", c, c, side))
        else:
            out.append(("C", c, int(v), side))
            c = int(v)
    return out


def param_count(arch: str, size: int, classes: int = 2, width: int = 32) -> int:
    """Parameters of :func:`oncorobust.models.architectures.build_model` (the paper's head on the conv base).

    Args:
        arch: ``vgg16`` or ``vgg_small``.
        size: input side in pixels.
        classes: output classes.
        width: vgg_small's first-block channels (ignored for vgg16).
    Returns:
        The number of parameters.
    Raises:
        ValueError: ``arch`` is neither vgg16 nor vgg_small.
    """
    if arch == "vgg16":
        feat, flat, hidden = VGG16_FEATURES, 512 * (size // 32) ** 2, (4096, 1024)
    else:
        feat = sum(9 * ci * co + co + 2 * co for kind, ci, co, _ in _layers(arch, size, width) if kind == "C")
        flat, hidden = 4 * width * (size // 8) ** 2, (256, 64)
    head = flat * hidden[0] + hidden[0] + hidden[0] * hidden[1] + hidden[1] + hidden[1] * classes + classes
    return feat + head


def activation_mb(arch: str, size: int, width: int = 32) -> float:
    """MB (2**20 bytes) of all conv and pool outputs of one image (float32); vgg_small's
    convolutions count four times (the batch norm's output, and what autograd keeps of both:
    measured 0.9 MB per image at 32 px, width 16).

    Args:
        arch: ``vgg16`` or ``vgg_small``.
        size: input side in pixels.
        width: vgg_small's first-block channels (ignored for vgg16).
    Returns:
        MB per image.
    Raises:
        ValueError: ``arch`` is neither vgg16 nor vgg_small.
    """
    n = sum(co * side * side * (4 if arch == "vgg_small" and kind == "C" else 1)
            for kind, _, co, side in _layers(arch, size, width))
    return 4 * n / 2 ** 20


def gmacs(arch: str, size: int, width: int = 32, classes: int = 2) -> float:
    """Multiply-accumulates (10**9) of one forward pass of one image.

    Args:
        arch: ``vgg16`` or ``vgg_small``.
        size: input side in pixels.
        width: vgg_small's first-block channels (ignored for vgg16).
        classes: output classes.
    Returns:
        GMAC: the 3×3 convolutions' MACs plus the parameter count (≈ the dense layers' MACs).
    Raises:
        ValueError: ``arch`` is neither vgg16 nor vgg_small.
    """
    conv = sum(9 * ci * co * side * side for kind, ci, co, side in _layers(arch, size, width) if kind == "C")
    return (conv + param_count(arch, size, classes, width)) / 1e9


def images_in(data_mb: float, size: int, channels: int = 1) -> int:
    """An upper estimate of the images in tensor files of ``data_mb`` MB (float32 C×size×size).

    Args:
        data_mb: size of the files in MB (2**20 bytes).
        size: image side in pixels.
        channels: channels per image.
    Returns:
        The image count, rounded up.
    """
    return int(math.ceil(data_mb * 2 ** 20 / (4 * channels * size * size)))


def mem_mb(kind: str, arch: str, size: int, batch: int, *, channels: int = 1, data_mb: float = 0.0,
           n_images: int | None = None, width: int = 32, classes: int = 2,
           pretrained: bool = False) -> int:
    """Peak resident memory (MB) of one job; see the module docstring for the formula.

    Args:
        kind: ``train``, ``attack``, ``transfer`` (an attack that loads the source model too),
            ``health``, ``sensitivity`` or ``figure``.
        arch, size, width, classes: the model (``model.arch``, ``preprocess.size``); an arch
            other than vgg16/vgg_small gets ``OTHER_ARCH_FACTOR`` × VGG16's estimate.
        batch: images per model call.
        channels: of the stored images (used to count the images of ``data_mb``).
        data_mb: size of the job's input tensor files (0 when not known yet).
        n_images: images of the largest split the job batches over; default: counted from
            ``data_mb`` when given. The batch never exceeds it.
        pretrained: training starts from the ImageNet file (its 528 MB state dict is loaded
            beside the model).
    Returns:
        MB, a multiple of 100, at least ``FLOOR_MB``.
    Raises:
        ValueError: an unknown ``kind``, ``batch`` < 1 or ``size`` < 1.
    """
    if arch not in KNOWN_ARCHS:
        if batch < 1 or size < 1:
            raise ValueError(f"need batch >= 1 and size >= 1, got batch={batch}, size={size}")
        vgg = mem_mb(kind, "vgg16", max(32, size), batch, channels=channels, data_mb=data_mb,
                     n_images=n_images, classes=classes)
        return int(math.ceil(OTHER_ARCH_FACTOR * vgg / 100.0)) * 100
    if kind not in MODEL_COPIES:
        raise ValueError(f"unknown job kind {kind!r}; choose from {sorted(MODEL_COPIES)}")
    if batch < 1 or size < 1:
        raise ValueError(f"need batch >= 1 and size >= 1, got batch={batch}, size={size}")
    if n_images is None and data_mb > 0:
        n_images = images_in(data_mb, size, channels)
    b = min(int(batch), int(n_images)) if n_images else int(batch)
    params_mb = 4 * param_count(arch, size, classes, width) / 2 ** 20
    model = MODEL_COPIES[kind] * params_mb
    if arch == "vgg16":
        model += 4 * TORCHVISION_VGG16_CLASSIFIER / 2 ** 20
        if pretrained:
            model += 4 * TORCHVISION_VGG16 / 2 ** 20
    act = KIND_ACT.get(kind, 1.0) * ACT_FACTOR * activation_mb(arch, size, width)
    total = BASE_MB + model + b * act + DATA_FACTOR * data_mb
    return max(FLOOR_MB, int(math.ceil(SAFETY * total / 100.0)) * 100)


def runtime_min(arch: str, size: int, n_images: int, passes: float, *, device: str = "cpu",
                threads: int = 1, width: int = 32) -> int:
    """Rough upper estimate of a job's minutes: ``n_images`` × ``passes`` forward-pass
    equivalents (forward + backward = 3) of the model, at ``RATE_GMACS`` of the device.

    Args:
        arch: ``model.arch``; other than vgg16/vgg_small: VGG16 at ``max(32, size)`` × ``OTHER_ARCH_FACTOR``.
        size: input side in pixels.
        n_images: images the job processes.
        passes: forward-pass equivalents per image.
        device: ``cpu`` or ``cuda…`` (picks the rate).
        threads: CPU threads (the CPU rate scales with them; ignored on a GPU).
        width: vgg_small's first-block channels.
    Returns:
        Minutes, including ``START_MIN``, at least ``FLOOR_MIN``.
    """
    if arch not in KNOWN_ARCHS:
        return runtime_min("vgg16", max(32, size), n_images, passes * OTHER_ARCH_FACTOR, device=device,
                           threads=threads)
    gpu = str(device).startswith("cuda")
    rate = RATE_GMACS["cuda"] if gpu else RATE_GMACS["cpu"] * max(1, int(threads))
    seconds = TIME_SAFETY * gmacs(arch, size, width) * max(0, n_images) * max(0.0, passes) / rate
    return max(FLOOR_MIN, int(math.ceil(START_MIN + seconds / 60)))


# ------------------------------------------------------------------------------ the workflow's jobs
# One resource function (:func:`job_resource`) for every model-running rule: a table of job kinds →
# one formula per resource (threads, gpu, mem_mb, runtime). A formula reads the job's shape from the
# config (:func:`job_shape`), its images from the sizes of its input tensor files (0 before they are
# written: Snakemake evaluates the resources again when the job is scheduled) and its passes per
# image from the registry's cost model (:mod:`oncorobust.pipeline.passes`, :data:`oncorobust.spec.METHODS`).


@dataclass(frozen=True)
class Job:
    """What a resource formula sees of one job.

    Attributes:
        config: the validated workflow config.
        ds: the dataset (None for a job over every dataset).
        wildcards: the job's wildcards (name → value).
        inputs: its named input files (name → path, or list of paths).
        threads: its threads (1 while they are being determined).
    """

    config: dict
    ds: str | None
    wildcards: dict
    inputs: dict
    threads: int = 1


def job_shape(config: dict, ds: str) -> dict:
    """The model and image shape of a dataset's jobs, as :func:`mem_mb` and :func:`runtime_min` take it.

    Args:
        config: the validated workflow config.
        ds: the dataset.
    Returns:
        ``{"arch", "size", "width", "channels"}``; a user model (torchvision:, monai:, python:,
        torchscript:) counts as vgg16, the heaviest network estimated here.
    Raises:
        KeyError: ``ds`` is not a configured dataset.
    """
    d = config["datasets"][ds]
    m = d.get("model", {})
    arch = m.get("arch", "vgg_small")
    return {"arch": arch if arch in KNOWN_ARCHS else "vgg16", "size": int(d["preprocess"]["size"]),
            "width": int(m.get("width", 32)), "channels": 3 if d["source"]["format"] == "cifar10" else 1}


def files_mb(*paths: str | None) -> float:
    """Total size (MB) of the existing files among ``paths`` (0 before they are written).

    Args:
        paths: file paths; None and empty ones are skipped.
    Returns:
        MB (2**20 bytes).
    """
    return sum(os.path.getsize(p) for p in paths if p and os.path.exists(p)) / 2 ** 20


def _images(config: dict, ds: str, *paths: str) -> int:
    """Images in a dataset's tensor files (0 before they are written)."""
    s = job_shape(config, ds)
    return images_in(files_mb(*paths), s["size"], s["channels"])


def _device(config: dict) -> str:
    """``cuda`` when the config names a CUDA device (only then does the cluster get a GPU request)."""
    return "cuda" if config["device"].startswith("cuda") else "cpu"


def _is_large(config: dict, ds: str) -> bool:
    return config["datasets"][ds]["preprocess"]["size"] > 64


def _unknown_runtime(config: dict, ds: str) -> int:
    """Minutes asked while a training or sensitivity job's inputs are not written (a dry run)."""
    return 24 * 60 if _is_large(config, ds) else 60


def _model_mem(job: Job, kind: str, batch: int, data: list, n_images: int | None = None, **kw) -> int:
    """:func:`mem_mb` of a job of ``kind`` with the dataset's shape and ``data`` files in memory."""
    s = job_shape(job.config, job.ds)
    return mem_mb(kind, s["arch"], s["size"], batch, channels=s["channels"], width=s["width"],
                  data_mb=files_mb(*data), n_images=n_images, **kw)


def _model_minutes(job: Job, n_images: int, passes: float, **kw) -> int:
    """:func:`runtime_min` of ``n_images`` × ``passes`` of the dataset's model on the config's device."""
    s = job_shape(job.config, job.ds)
    return runtime_min(s["arch"], s["size"], n_images, passes, device=_device(job.config), width=s["width"], **kw)


def _attack_batch(job: Job) -> int:
    return int(job.config["attacks"]["batch_size"])


def _members(att: dict) -> dict:
    """``worst``'s members' parameter blocks."""
    return {m: att.get(m, {}) for m in att["worst"]["members"]}


def _train_batch(job: Job) -> int:
    d = job.config["datasets"][job.ds]
    if job.wildcards.get("regime", "clean") == "clean":
        return int(d["train"]["batch_size"])
    return int(d.get("adversarial_training", {}).get("batch_size", d["train"]["batch_size"]))


def _train_mem(job: Job) -> int:
    """Five parameter copies, the (adversarial) training batch's activations, train + val in memory."""
    i = job.inputs
    return _model_mem(job, "train", _train_batch(job), [i["train"], i["val"]],
                      _images(job.config, job.ds, i["train"]) or None,
                      pretrained=job.config["datasets"][job.ds].get("model", {}).get("pretrained") == "imagenet")


def _train_runtime(job: Job) -> int:
    """Epochs × (the update loop's and the validation attack's gradient evaluations
    (:func:`train_grad_evals`) × 3 + the validation's forward passes)."""
    config, ds = job.config, job.ds
    regime = split_replicate_name(job.wildcards.get("regime", "clean"))[0]
    d = config["datasets"][ds]
    n_train, n_val = _images(config, ds, job.inputs["train"]), _images(config, ds, job.inputs["val"])
    if not n_train:
        return _unknown_runtime(config, ds)
    adv = d.get("adversarial_training", {}) if regime != "clean" else {}
    epochs = int(adv.get("epochs", d["train"]["epochs"]))
    if regime == "adv_free":  # fit() divides the epochs by the replays
        epochs = -(-epochs // int(adv.get("free_replays", 4)))
    cost = train_grad_evals(regime, adv, n_train, n_val)
    forward_only = n_val * (1 if regime == "clean" else 2)
    return _model_minutes(job, 1, epochs * (3 * (cost["train"] + cost["validation"]) + forward_only),
                          threads=job.threads)


def _attack_mem(job: Job) -> int:
    """The model (and a transfer attack's source model), one attack batch, the test tensors."""
    kind = "transfer" if is_transfer(job.wildcards.get("method", "")) else "attack"
    return _model_mem(job, kind, _attack_batch(job), [job.inputs["test"]])


def _attack_runtime(job: Job) -> int:
    """The method's passes per image (+ 2) at each ε of the job, on every test image."""
    att = job.config["attacks"]
    method = job.wildcards["method"]
    passes = attack_passes(method, att.get(base_method(method), {}), _members(att))
    if att["labels"] == "predicted":
        passes *= 1.5  # the images the model gets wrong are attacked again with their label
    n = _images(job.config, job.ds, job.inputs["test"])
    if not n:
        return 60
    return _model_minutes(job, n, (passes + 2) * len(dag.attack_job_eps(job.config, job.ds)))


def _corrupt_mem(job: Job) -> int:
    """As an attack job without a source model."""
    return _model_mem(job, "attack", _attack_batch(job), [job.inputs["test"]])


def _corrupt_runtime(job: Job) -> int:
    """Per corruption and severity two forward passes per test image (clean, corrupted) and the corruption."""
    n = _images(job.config, job.ds, job.inputs["test"])
    if not n:
        return 10
    return _model_minutes(job, n, 4 * len(dag.corruption_jobs(job.config, job.ds, "clean")))


def _health_images(job: Job) -> int:
    return min(_images(job.config, job.ds, job.inputs["test"]), int(job.config["attacks"]["health"]["max_images"]))


def _health_mem(job: Job) -> int:
    return _model_mem(job, "health", _attack_batch(job), [job.inputs["test"]], _health_images(job) or None)


def _health_runtime(job: Job) -> int:
    """PGD × 1, × restarts and × 2 steps × 2 restarts, APGD at ε = 1, Square, gradients; the worst
    case with doubled budgets on at most 64 images."""
    att = job.config["attacks"]
    passes = health_passes(att["pgd"], att["health"]["square_queries"])
    n = _health_images(job)
    if not n:
        return 60
    if "worst" in job.config["datasets"][job.ds]["attack"]["methods"]:
        passes += 2 * attack_passes("worst", att["worst"], _members(att)) * min(n, 64) / n  # members' steps doubled
    return _model_minutes(job, n, passes)


def _sensitivity_mem(job: Job) -> int:
    i = job.inputs
    n = max(_images(job.config, job.ds, i["val"]), _images(job.config, job.ds, i["test"]))
    return _model_mem(job, "sensitivity", _attack_batch(job), [i["val"], i["test"]], n or None)


def _sensitivity_runtime(job: Job) -> int:
    """Val + test images × the search's passes per image (:func:`sensitivity_passes`)."""
    n = _images(job.config, job.ds, job.inputs["val"]) + _images(job.config, job.ds, job.inputs["test"])
    if not n:
        return _unknown_runtime(job.config, job.ds)
    return _model_minutes(job, n, sensitivity_passes(job.config["datasets"][job.ds]["sensitivity"]))


def _per_test_split(job: Job) -> list[Job]:
    """One job per dataset of a job over every dataset's test split (input ``tests``, in report order)."""
    return [replace(job, ds=ds, inputs={"test": t}) for ds, t in zip(dag.datasets(job.config), job.inputs["tests"])]


def _fig1_mem(job: Job) -> int:
    """Models are loaded one after another: the largest dataset's need."""
    return max(_model_mem(j, "figure", _attack_batch(j), [j.inputs["test"]]) for j in _per_test_split(job))


def _fig1_runtime(job: Job) -> int:
    """PGD on each test split (at worst the whole split, when no image yields an example), one start."""
    passes = attack_passes("pgd", job.config["attacks"]["pgd"]) + 2
    if not any(os.path.exists(t) for t in job.inputs["tests"]):
        return 60
    jobs = _per_test_split(job)
    total = sum(_model_minutes(j, _images(j.config, j.ds, j.inputs["test"]), passes) for j in jobs)
    return max(FLOOR_MIN, total - (len(jobs) - 1) * int(START_MIN))


def _import_mem(job: Job) -> int:
    """The file, the network built from it and the wrapped copy: a few times the file."""
    return int(2000 + 4 * files_mb(job.inputs["checkpoint"]))


def _gpu(job: Job) -> int:
    """One GPU when ``device`` names CUDA (SLURM: --gpus=1); ``auto`` may run anywhere."""
    return 1 if _device(job.config) == "cuda" else 0


def _train_threads(job: Job) -> int:
    """Compact demo models use one core each (two jobs in parallel beat one job on two cores)."""
    return 8 if _is_large(job.config, job.ds) else 1


JOB_RESOURCES: dict[str, dict[str, Callable[[Job], int]]] = {
    "train": {"threads": _train_threads, "gpu": _gpu, "mem_mb": _train_mem, "runtime": _train_runtime},
    "attack": {"gpu": _gpu, "mem_mb": _attack_mem, "runtime": _attack_runtime},
    "corrupt": {"gpu": _gpu, "mem_mb": _corrupt_mem, "runtime": _corrupt_runtime},
    "health": {"gpu": _gpu, "mem_mb": _health_mem, "runtime": _health_runtime},
    "sensitivity": {"gpu": _gpu, "mem_mb": _sensitivity_mem, "runtime": _sensitivity_runtime},
    "fig1": {"mem_mb": _fig1_mem, "runtime": _fig1_runtime},
    "import": {"mem_mb": _import_mem},
}
"""Job kind → resource → formula: what :func:`job_resource` computes (a rule's other resources are fixed)."""


def job_resource(config: dict, kind: str, name: str, *, ds: str | None = None, wildcards: dict | None = None,
                 inputs: dict | None = None, threads: int = 1) -> int:
    """One resource of one workflow job (the rules' ``threads:`` and ``resources:`` call it through
    ``job_resource`` in ``workflow/rules/common.smk``).

    Args:
        config: the validated workflow config.
        kind: a job kind of :data:`JOB_RESOURCES` (train, attack, corrupt, health, sensitivity,
            fig1, import).
        name: ``threads``, ``gpu``, ``mem_mb`` or ``runtime`` (minutes), as the kind defines.
        ds: the dataset, for rules made per dataset (no ``ds`` wildcard); default: the wildcard's.
        wildcards: the job's wildcards.
        inputs: its named inputs (``train``/``val``/``test``, ``tests`` of fig1, ``checkpoint`` of
            import); files not written yet count as empty (the dry-run values).
        threads: its threads (the CPU run time scales with them).
    Returns:
        The value: threads, GPUs, MB or minutes.
    Raises:
        ValueError: ``kind`` or ``name`` is not in :data:`JOB_RESOURCES`.
        KeyError: the job lacks an input or wildcard its formula reads.
    """
    formula = JOB_RESOURCES.get(kind, {}).get(name)
    if formula is None:
        known = ", ".join(f"{k}: {'/'.join(v)}" for k, v in JOB_RESOURCES.items())
        raise ValueError(f"no resource {name!r} for job kind {kind!r}; known: {known}")
    wildcards = dict(wildcards or {})
    return formula(Job(config, ds or wildcards.get("ds"), wildcards, dict(inputs or {}), int(threads)))
