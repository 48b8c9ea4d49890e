"""Array datasets: MNIST and CIFAR-10 from local files (torchvision's formats) and scikit-learn's
bundled handwritten digits (the offline stand-in for MNIST in the demo).

Nothing is downloaded: MNIST/CIFAR-10 are read with torchvision's own readers and
``download=False``. The official test part becomes the test split; validation is carved from
the official training part. Each image is its own "patient".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncorobust.errors import DataError
from oncorobust.data.sources.common import IngestResult, record

_WHERE = {
    "mnist": "{root}/MNIST/raw/ with the extracted train-images-idx3-ubyte, train-labels-idx1-ubyte,"
             " t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (gunzip the downloads)",
    "cifar10": "{root}/cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta"
               " (the 'CIFAR-10 python version' archive, extracted)",
}


def load_arrays(cfg: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (...)}``; images N×H×W (gray) or N×H×W×3, float32 0..1.

    Args:
        cfg: the source config (``format``: ``digits``, ``mnist`` or ``cifar10``; ``root`` for the
            latter two).

    Returns:
        {part: (float32 images in [0,1], int64 labels N)}; ``digits`` gives one part ``"all"``
        (8×8 images).

    Raises:
        DataError: ``source.root`` is not a folder, or the MNIST/CIFAR-10 files are missing or corrupt.
    """
    fmt = cfg["format"]
    if fmt == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = (bunch.images / 16.0).astype(np.float32)  # 8×8, values 0..16
        return {"all": (images, bunch.target.astype(np.int64))}
    root = cfg.get("root")
    if not root or not Path(root).is_dir():
        raise DataError(f"source.root = {root!r}: no such folder. Put {fmt} in "
                        + _WHERE[fmt].format(root="<root>") + "; nothing is downloaded at run time")
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10}[fmt]
    out = {}
    for part, train in (("train", True), ("test", False)):
        try:
            ds = cls(root=str(root), train=train, download=False)
        except RuntimeError as exc:
            raise DataError(f"{fmt} files not found or corrupt under {root} ({exc}). Expected "
                            + _WHERE[fmt].format(root=root)) from exc
        data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
        out[part] = ((data / 255.0).astype(np.float32), np.asarray(ds.targets, dtype=np.int64))
    return out


def ingest(cfg: dict, result: IngestResult) -> None:
    """Add one record per image (its own patient; the official test part is the test split).

    Args:
        cfg: the source config (see :func:`load_arrays`).
        result: receives the records; ``source`` is ``<format>:<part>:<index>``.

    Raises:
        DataError: as :func:`load_arrays`.
    """
    fmt = cfg["format"]
    for part, (_, labels) in load_arrays(cfg).items():
        split = "test" if part == "test" else ""
        for i, y in enumerate(labels):
            sid = f"{fmt}-{part}-{i:05d}"
            result.records.append(record(sid, sid, int(y), str(int(y)), f"{fmt}:{part}:{i}", split=split))
