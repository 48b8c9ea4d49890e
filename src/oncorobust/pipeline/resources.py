"""Memory (MB) and run time (minutes) a job needs, from the model, the input size and the batch.

The workflow declares ``mem_mb`` and ``runtime`` of every model-running job from these functions
(``workflow/rules/common.smk``), so a paper-size job (VGG16 at 224 px, batches of 64-128) asks the
cluster for what it uses instead of a fixed number. No torch or Snakemake import: the rules import
this module while the DAG is built.

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

# the cost model in gradient passes lives in passes.py (the attack, health and sensitivity code reads it
# for its progress lines); re-exported here, where it was first defined
from oncorobust.pipeline.passes import attack_passes, health_passes, sensitivity_passes, train_grad_evals  # noqa: F401

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
