"""Preprocess: lesion-centred crop → intensity scaling to [0,1] → resize → balanced tensors.

Per split, ``results/{ds}/tensors/{split}.pt`` holds ``{"x": float32 N×C×H×W in [0,1],
"y": int64 N, "ids": list[str]}``; ``stats.json`` the train-set channel mean/std (the model's
own Normalize layer uses them), class counts and what was skipped.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from .config import ON_BAD_FILE, check_choice
from .errors import DataError, DicomError
from .sources import ARRAY_FORMATS, source_root
from .sources.arrays import load_arrays
from .sources.images import read_image, whole_image

log = logging.getLogger("oncorobust.preprocess")

LUNG_WINDOW = (-1350.0, 150.0)  # HU: level -600, width 1500


def crop_square(image: np.ndarray, centre: tuple[float, float], side: int, sample: str = "") -> np.ndarray:
    """A side×side crop of the (H, W) ``image`` centred on (row, col); pads with the image minimum
    where the window leaves the image. A centre outside the image is a DataError."""
    h, w = image.shape
    r, c = centre
    if not (0 <= r < h and 0 <= c < w):
        raise DataError(f"{sample}: ROI centre (row {r:.1f}, col {c:.1f}) lies outside the"
                        f" {h}x{w} image; check the annotation / manifest row")
    top, left = int(round(r - side / 2)), int(round(c - side / 2))
    pad = max(0, -top, -left, top + side - h, left + side - w)
    if pad:
        image = np.pad(image, pad, mode="constant", constant_values=float(image.min()))
        top, left = top + pad, left + pad
    return image[top: top + side, left: left + side]


def intensity_range(crop: np.ndarray, cfg: dict) -> tuple[float, float] | None:
    """The raw values mapped to 0 and 1 by :func:`scale_intensity` (None for ``mode: none``)."""
    mode = cfg.get("mode", "percentile")
    if mode == "none":
        return None
    if mode == "window":
        lo, hi = cfg.get("window", LUNG_WINDOW)
    else:
        lo, hi = np.percentile(crop, cfg.get("percentiles", [1.0, 99.0]))
    return float(lo), float(hi)


def scale_intensity(crop: np.ndarray, cfg: dict) -> np.ndarray:
    """Map raw values to [0,1]: a fixed window (``mode: window``, e.g. HU), per-image robust
    percentiles (``mode: percentile``) or nothing (``mode: none``, data already in [0,1])."""
    rng = intensity_range(crop, cfg)
    if rng is None:
        return np.clip(crop, 0, 1)
    lo, hi = rng
    if hi <= lo:
        return np.zeros_like(crop)
    return np.clip((crop - lo) / (hi - lo), 0, 1)


#: Grey levels per [0,1] of the bundled/array sources (ε × levels = grey levels of the stored data).
ARRAY_LEVELS = {"digits": 16.0, "mnist": 255.0, "cifar10": 255.0}


def eps_units(source_format: str, intensity: dict, spans: list[float]) -> dict:
    """What ε = 1 means in the stored data, for tables and figure axes.

    Args:
        source_format: the dataset's ``source.format``.
        intensity: its ``preprocess.intensity`` block.
        spans: per image, the raw-value span (hi − lo) mapped onto [0,1] (percentile mode).
    Returns:
        ``{"unit", "per_eps", "how", "step"}``: ε × ``per_eps`` is the perturbation in ``unit``;
        ``step`` is one stored-value step in that unit (an ε below ``step / per_eps`` cannot be
        written back into the stored image). ``per_eps`` is None when unknown.
    """
    mode = intensity.get("mode", "percentile")
    if mode == "window":
        lo, hi = intensity.get("window", LUNG_WINDOW)
        unit = "HU" if source_format == "lidc" else "stored value"
        return {"unit": unit, "per_eps": float(hi - lo), "how": f"window width {hi - lo:g} {unit}", "step": 1.0}
    if mode == "percentile":
        med = float(np.median(spans)) if len(spans) else None
        return {"unit": "grey level", "per_eps": med, "step": 1.0,
                "how": "median over images of the percentile span p_hi − p_lo in stored grey levels"}
    levels = ARRAY_LEVELS.get(source_format)
    return {"unit": "grey level", "per_eps": levels, "step": 1.0,
            "how": f"{levels:g} grey levels of the source data" if levels else "unknown (intensity mode none)"}


def resize(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) or (H, W, C) array → C×size×size float32 tensor (bilinear, antialiased), in [0,1]."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    t = t.permute(2, 0, 1) if t.ndim == 3 else t[None]
    if t.shape[-2:] != (size, size):
        t = TF.resize(t, [size, size], antialias=True)
    return t.clamp_(0, 1)


def balance(idx: np.ndarray, y: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Indices of a class-balanced subset: seeded undersampling of the larger classes."""
    if method == "none":
        return idx
    rng = np.random.default_rng(seed)
    n = min(np.bincount(y[idx])[np.unique(y[idx])])
    keep = [rng.choice(idx[y[idx] == c], n, replace=False) for c in np.unique(y[idx])]
    return np.sort(np.concatenate(keep))


def run_preprocess(manifest: pd.DataFrame, source: dict, prep: dict, seed: int,
                   on_bad_file: str = "skip") -> tuple[dict[str, dict], dict, pd.DataFrame]:
    """Return ({split: tensors}, stats, skipped) for one dataset's manifest.

    Args:
        manifest: ``results/{ds}/manifest.csv`` (ingest's output).
        source: the dataset's source config.
        prep: the dataset's ``preprocess`` config.
        seed: seed of the training-set balancing.
        on_bad_file: ``skip`` (list undecodable files in the skipped frame) or ``error``.

    Returns:
        ({split: {"x", "y", "ids"}}, stats, skipped).

    Raises:
        ConfigError: an unknown ``on_bad_file``, ``preprocess.balance`` or
            ``preprocess.intensity.mode``.
        DataError: a ROI outside its image, a frame index that does not fit its file, or a split
            that misses a class after skipping.
        DicomError: an undecodable file with ``on_bad_file: error``.
    """
    check_choice(on_bad_file, ON_BAD_FILE, "on_bad_file")
    check_choice(prep.get("balance", "undersample"), ("undersample", "none"), "preprocess.balance")
    check_choice(prep.get("intensity", {}).get("mode", "percentile"), ("window", "percentile", "none"),
                 "preprocess.intensity.mode")
    size = int(prep["size"])
    skipped: list[dict] = []
    images: list[torch.Tensor | None] = []
    spans: list[float] = []
    if source["format"] in ARRAY_FORMATS:
        arrays = load_arrays(source)
        for src in manifest.source:
            _, part, i = src.split(":")
            images.append(resize(arrays[part][0][int(i)], size))
    else:
        root = source_root(source)
        read = functools.lru_cache(maxsize=4)(read_image)  # DICOM, PNG/JPEG/TIFF, NIfTI
        crop_cfg = prep.get("crop", {})
        for row in tqdm(manifest.itertuples(index=False), total=len(manifest), desc="crop",
                        mininterval=5, disable=None):
            path = root / row.source
            try:
                pixels = read(path)
            except DicomError as exc:
                if on_bad_file == "error":
                    raise
                skipped.append({"stage": "preprocess", "file": str(path), "sample_id": row.sample_id,
                                "reason": str(exc).split(": ", 1)[-1]})
                images.append(None)
                continue
            pixels = select_frame(pixels, int(row.frame), f"{row.sample_id} ({path})")
            if math.isnan(row.roi_row) and math.isnan(row.roi_col):  # already a lesion crop: used whole
                crop = whole_image(pixels)
            else:
                side = crop_side(row.roi_size_px, crop_cfg)
                crop = crop_square(pixels, (row.roi_row, row.roi_col), side, f"{row.sample_id} ({path})")
            rng = intensity_range(crop, prep.get("intensity", {}))
            if rng is not None:
                spans.append(rng[1] - rng[0])
            images.append(resize(scale_intensity(crop, prep.get("intensity", {})), size))
    if skipped:
        log.warning("preprocess: %d image(s) could not be decoded and were skipped", len(skipped))
    ok = np.array([im is not None for im in images])
    y = manifest.label.to_numpy(dtype=np.int64)
    splits = manifest.split.to_numpy()
    tensors, counts = {}, {}
    for split in ("train", "val", "test"):
        idx = np.flatnonzero((splits == split) & ok)
        counts[split] = {"before_balancing": _counts(manifest, idx)}
        if split == "train":
            idx = balance(idx, y, prep.get("balance", "undersample"), seed)
        if len(np.unique(y[idx])) < manifest.label.nunique():
            raise DataError(f"after skipping unreadable files the {split} split misses a class;"
                            " fix the files listed in tensors/skipped.csv")
        counts[split]["used"] = _counts(manifest, idx)
        tensors[split] = {"x": torch.stack([images[i] for i in idx]).contiguous(),
                          "y": torch.from_numpy(y[idx]),
                          "ids": [str(s) for s in manifest.sample_id.to_numpy()[idx]]}
    x = tensors["train"]["x"]
    names = manifest.drop_duplicates("label").set_index("label").label_name.sort_index()
    stats = {
        "mean": x.mean(dim=(0, 2, 3)).tolist(),
        "std": x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist(),
        "size": size, "channels": int(x.shape[1]),
        "classes": [str(names.get(k, k)) for k in range(int(names.index.max()) + 1)],
        "counts": counts, "n_skipped": len(skipped),
        "eps_units": eps_units(source["format"], prep.get("intensity", {}), spans),
    }
    return tensors, stats, pd.DataFrame(skipped, columns=["stage", "file", "sample_id", "reason"])


def select_frame(pixels: np.ndarray, frame: int, sample: str = "") -> np.ndarray:
    """The (H, W) image of a decoded file: ``frame`` of a multi-frame (F, H, W) array.

    Args:
        pixels: (H, W) or (F, H, W) from :func:`~oncorobust.dicom.read_dicom`.
        frame: the manifest's ``frame`` (-1: the file is a single image).
        sample: named in the message.

    Returns:
        The (H, W) image.

    Raises:
        DataError: a multi-frame file without a frame index, or an index outside its frames
            (never silently frame 0).
    """
    if pixels.ndim == 2:
        if frame > 0:
            raise DataError(f"{sample}: frame {frame} asked of a single-frame image; rerun ingest")
        return pixels
    if frame < 0:
        if pixels.shape[0] == 1:
            return pixels[0]
        raise DataError(f"{sample}: the file holds {pixels.shape[0]} frames and the manifest gives no"
                        " frame index; give roi_slice (the frame) in the manifest and rerun ingest")
    if frame >= pixels.shape[0]:
        raise DataError(f"{sample}: frame {frame} outside the file's {pixels.shape[0]} frames; rerun ingest")
    return pixels[frame]


def crop_side(roi_size_px: float, cfg: dict) -> int:
    """Crop side in pixels: ``fixed_px``, else ``margin`` × lesion extent, at least ``min_px``."""
    if cfg.get("fixed_px"):
        return int(cfg["fixed_px"])
    side = int(cfg.get("min_px", 32))
    if roi_size_px is not None and not math.isnan(roi_size_px):
        side = max(side, int(math.ceil(roi_size_px * float(cfg.get("margin", 2.0)))))
    return side


def _counts(manifest: pd.DataFrame, idx: np.ndarray) -> dict[str, int]:
    return {str(k): int(v) for k, v in manifest.label_name.iloc[idx].value_counts().sort_index().items()}


def save_tensors(tensors: dict[str, dict], out_dir: str | Path) -> None:
    from .io import save_torch

    for split, payload in tensors.items():
        save_torch(payload, Path(out_dir) / f"{split}.pt")
