"""The paper's networks and the wrapper every other model runs in.

Every classifier takes images in [0,1] (float32, N×C×H×W) and returns logits (N×classes).
Normalisation lives inside the model (its first layer, :class:`Normalize`: the train-set
mean/std of ``stats.json``, or ``model.input``'s), so attacks clip to [0,1] and ε means the same
for every dataset. Grayscale inputs are repeated to three channels where the network expects RGB
(ImageNet weights).

- ``vgg16`` (:func:`vgg16_classifier`): torchvision's VGG16 convolutional base (optionally
  ImageNet weights from a local file) with the paper's head (Table S2, :func:`paper_head`):
  dropout → flatten → fc 4096 → dropout → fc 1024 → fc classes. As in Keras'
  ``VGG16(include_top=False)``, the head reads the base's output directly (no adaptive pooling),
  so its size depends on the input size (224 → 7×7×512, 116 → 3×3×512, 32 → 1×1×512).
- ``vgg_small`` (:func:`vgg_small_classifier`): a compact VGG-style network (3 blocks of two 3×3
  convs + max-pool, with batch norm) and the same head shape, scaled down, for CPU demos at
  16–64 px, trained from scratch.

Any other network (``torchvision:``, ``monai:``, ``python:``, ``torchscript:``, ``export:``; see
:mod:`oncorobust.models.architectures`) runs inside :class:`Wrapped`: ``model.input``'s
normalisation (:func:`input_normalization`) → the network → its output head
(:class:`~oncorobust.models.heads.OutputHead`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from oncorobust.errors import ModelError
from oncorobust.models.heads import OutputHead, main_output

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 weights file name
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class Normalize(nn.Module):
    """(x − mean) / std per channel; optionally repeats one channel to ``out_channels``.

    Args:
        mean: per-channel means in [0,1] pixel units (one value, or one per channel).
        std: per-channel standard deviations, same units and length as ``mean``.
        out_channels: the channels the next layer takes; a one-channel input is repeated to it.
            None: leave the channels as they are.
    """

    def __init__(self, mean: list[float], std: list[float], out_channels: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×C×H×W images in [0,1] → normalised N×C'×H×W (C' = ``out_channels`` when C is 1).

        Args:
            x: N×C×H×W float32 images in [0,1].
        """
        x = (x - self.mean) / self.std
        if self.out_channels and x.shape[1] == 1 and self.out_channels != 1:
            x = x.expand(-1, self.out_channels, -1, -1)
        return x


def paper_head(in_features: int, classes: int, hidden=(4096, 1024), dropout: float = 0.5) -> nn.Sequential:
    """Table S2: dropout → flatten → fc hidden[0] (ReLU) → dropout → fc hidden[1] (ReLU) → fc classes.

    Args:
        in_features: the flattened size of the convolutional base's output (C×H×W).
        classes: the number of logits.
        hidden: the widths of the two hidden layers.
        dropout: the dropout probability.

    Returns:
        The head, mapping N×C×H×W features to N×classes logits.
    """
    return nn.Sequential(
        nn.Dropout(dropout), nn.Flatten(),
        nn.Linear(in_features, hidden[0]), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True),
        nn.Linear(hidden[1], classes),
    )


class Classifier(nn.Module):
    """normalize → features → head: N×C×H×W images in [0,1] → N×classes logits.

    Args:
        normalize: the input normalisation.
        features: the convolutional base.
        head: maps the features to N×classes logits (e.g. :func:`paper_head`).
    """

    def __init__(self, normalize: Normalize, features: nn.Module, head: nn.Module):
        super().__init__()
        self.normalize, self.features, self.head = normalize, features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×C×H×W images in [0,1] → N×classes logits.

        Args:
            x: N×C×H×W float32 images in [0,1].
        """
        return self.head(self.features(self.normalize(x)))


def _vgg_small_features(in_channels: int, widths=(32, 64, 128)) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                   nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers)


def find_vgg16_weights(weights: str | None) -> Path:
    """The ImageNet VGG16 file: the configured path, else torch's hub cache. Never downloads.

    Args:
        weights: ``model.weights`` (a path), or None for the hub cache
            (``<torch hub dir>/checkpoints/vgg16-397923af.pth``).

    Returns:
        The existing file.

    Raises:
        ModelError: the file is not there (the message says where to put it).
    """
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"model.weights = {path}: no such file. Put torchvision's VGG16 ImageNet"
                             f" weights ({VGG16_FILE}) there, or set model.pretrained: none")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if not path.is_file():
        raise ModelError(f"ImageNet VGG16 weights not found: expected {path} (torch hub cache) or a"
                         f" path in model.weights. Copy {VGG16_FILE} (torchvision's"
                         " VGG16_Weights.IMAGENET1K_V1) there; nothing is downloaded at run time.")
    return path


def vgg16_classifier(*, classes: int, size: int, mean: list[float], std: list[float],
                     imagenet_state: dict[str, torch.Tensor] | None = None) -> Classifier:
    """``vgg16``: torchvision's VGG16 convolutional base with the paper's head.

    Args:
        classes: the number of logits.
        size: input side in pixels (≥ 32; the head's input is 512 × (size // 32)²).
        mean: the input normalisation's means (one value, or one per channel), [0,1] units.
        std: its standard deviations.
        imagenet_state: torchvision's VGG16 ImageNet state dict for the base, or None (random).

    Returns:
        A :class:`Classifier` mapping N×C×size×size images in [0,1] (C = 1 or 3) to N×classes
        logits.

    Raises:
        ModelError: ``size`` below 32 px.
    """
    from torchvision.models import vgg16

    if size < 32:
        raise ModelError(f"vgg16 needs inputs of at least 32 px (five 2× poolings), got {size}")
    base = vgg16(weights=None)
    if imagenet_state is not None:
        base.load_state_dict(imagenet_state)
    side = size // 32
    return Classifier(Normalize(mean, std, out_channels=3), base.features,
                      paper_head(512 * side * side, classes))


def vgg_small_classifier(*, classes: int, in_channels: int, size: int, mean: list[float],
                         std: list[float], width: int = 32) -> Classifier:
    """``vgg_small``: three VGG blocks (widths ``width``, 2×, 4×) with a scaled-down paper head.

    Args:
        classes: the number of logits.
        in_channels: the images' channels.
        size: input side in pixels (≥ 8; the head's input is 4·width × (size // 8)²).
        mean: the input normalisation's means (one value, or one per channel), [0,1] units.
        std: its standard deviations.
        width: the first block's channels.

    Returns:
        A :class:`Classifier` mapping N×in_channels×size×size images in [0,1] to N×classes logits.

    Raises:
        ModelError: ``size`` below 8 px.
    """
    if size < 8:
        raise ModelError(f"vgg_small needs inputs of at least 8 px, got {size}")
    widths = (width, 2 * width, 4 * width)
    side = size // 8
    return Classifier(Normalize(mean, std), _vgg_small_features(in_channels, widths),
                      paper_head(widths[-1] * side * side, classes, hidden=(256, 64)))


def input_normalization(model_cfg: dict, stats: dict) -> tuple[list[float], list[float], int]:
    """(mean, std, channels) the wrapped network's input gets, from ``model.input``.

    ``normalize``: ``dataset`` (default: the train-set mean/std of ``stats.json``), ``imagenet``,
    ``none`` (the network takes [0,1] pixels) or ``custom`` (``mean``/``std`` lists, one value or
    one per channel). ``channels``: what the network's first layer takes (default: the data's).

    Args:
        model_cfg: the dataset's ``model`` block.
        stats: the dataset's ``tensors/stats.json`` (``channels``, ``mean``, ``std``).

    Returns:
        (mean, std, channels): [0,1]-unit means and standard deviations, and the network's input
        channels.

    Raises:
        ModelError: an unknown ``normalize``, ``custom`` without mean/std, a mean/std count that
            fits neither the data nor the network, or fewer network channels than the data have.
    """
    spec = model_cfg.get("input") or {}
    mode = spec.get("normalize", "dataset")
    channels = int(spec.get("channels") or stats["channels"])
    if mode == "dataset":
        mean, std = list(stats["mean"]), list(stats["std"])
    elif mode == "imagenet":
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    elif mode == "none":
        mean, std = [0.0], [1.0]
    elif mode == "custom":
        if not spec.get("mean") or not spec.get("std"):
            raise ModelError("model.input.normalize: custom needs model.input.mean and model.input.std")
        mean, std = [float(v) for v in spec["mean"]], [float(v) for v in spec["std"]]
    else:
        raise ModelError(f"model.input.normalize = {mode!r}: choose dataset, imagenet, none or custom")
    if len(mean) not in (1, channels) and len(mean) != int(stats["channels"]):
        raise ModelError(f"model.input: {len(mean)} mean/std values for a network taking {channels} channel(s)")
    if int(stats["channels"]) > channels:
        raise ModelError(f"model.input.channels = {channels}, but the data have {stats['channels']} channels;"
                         " the network must take at least as many channels as the images have")
    return [float(v) for v in mean], [float(v) for v in std], channels


def weights_dtype(net: nn.Module) -> torch.dtype | None:
    """The floating dtype of a network's weights: its first floating parameter's, else its first
    floating buffer's (for a ``torch.export`` program, :class:`~oncorobust.models.architectures.ExportedNet`,
    those of the graph module it holds).

    Args:
        net: a network.

    Returns:
        The dtype (``torch.float32``, ``torch.float16``, ...), or None when it holds no floating
        tensor.
    """
    for holder in (net, getattr(net, "_gm", None)):
        if isinstance(holder, nn.Module):
            for tensors in (holder.parameters(), holder.buffers()):
                for t in tensors:
                    if t.is_floating_point():
                        return t.dtype
    return None


class Wrapped(nn.Module):
    """normalize (``model.input``) → a user's network → :class:`~oncorobust.models.heads.OutputHead`:
    [0,1] images (N×C×H×W) in, N×classes float32 logits out.

    A network returning a tuple (e.g. auxiliary heads) or a dict with ``logits``/``out`` is
    reduced to its main output before the head. A network with float64 weights gets its input in
    float64 (exact: every float32 value is a float64 one); a floating output of another dtype
    (float64, float16) is cast to float32 before the head, so attacks and margins always see
    float32 logits and the gradient w.r.t. the images is float32. A float16/bfloat16 network gets
    float32 input (its forward fails: :func:`~oncorobust.models.architectures.fit_problems` says to
    save it in float32), since attacks at small ε need float32 precision.

    Args:
        normalize: the input normalisation.
        net: the network.
        head: its output head (default: ``logits``, unchanged).
    """

    def __init__(self, normalize: Normalize, net: nn.Module, head: OutputHead | None = None):
        super().__init__()
        self.normalize, self.net = normalize, net
        self.head = head or OutputHead("logits")

    def raw(self, x: torch.Tensor):
        """The network's main output (before the head, in its own dtype) for images in [0,1].

        Args:
            x: N×C×H×W float32 images in [0,1].

        Returns:
            What the network returns, reduced to its main output
            (:func:`~oncorobust.models.heads.main_output`): N×K scores for a classifier, of the
            network's dtype (an integer dtype for a network returning labels).
        """
        z = self.normalize(x)
        if weights_dtype(self.net) == torch.float64:
            z = z.double()
        return main_output(self.net(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×C×H×W images in [0,1] → N×classes float32 logits.

        Args:
            x: N×C×H×W float32 images in [0,1].
        """
        out = self.raw(x)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.dtype != torch.float32:
            out = out.float()
        return self.head(out)


def first_conv(net: nn.Module) -> tuple[nn.Module, str, nn.Conv2d] | None:
    """The first ``Conv2d`` of ``net`` in module order.

    Args:
        net: a network.

    Returns:
        (its parent module, its attribute name there, the convolution), or None when ``net`` has
        no ``Conv2d``.
    """
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, child = name.rpartition(".")
            return net.get_submodule(parent_name) if parent_name else net, child, module
    return None
