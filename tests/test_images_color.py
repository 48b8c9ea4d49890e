"""Image files as a user has them: colour kept as RGB, 16-bit grey levels scaled by their bit depth,
windows that clip, tiny images, copies under two patients, and folder trees with symlinks,
empty classes and __MACOSX folders (issues 20 and 21)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from oncorobust.data.dicom import write_dicom
from oncorobust.errors import DataError, OncorobustError
from oncorobust.data.preprocess import (IntensityError, bitdepth_window, crop_square, eps_units,
                                   run_preprocess, select_frame)
from oncorobust.data.sources import folder as folder_src
from oncorobust.data.sources.common import IngestResult
from oncorobust.data.sources.images import ImageError, decode_image, read_image, whole_image

SPLITS = ["train", "train", "val", "test"]
MR = {"modality": "MR", "patient_id": "P1", "study_uid": "1.2.3.4", "series_uid": "1.2.3.4.5"}


def _frame(records: list[dict]) -> pd.DataFrame:
    """Ingest records with a split per class: train, train, val, test (repeated)."""
    df = pd.DataFrame(records)
    df["split"] = [SPLITS[i % len(SPLITS)] for i in df.groupby("label").cumcount()]
    return df


def _folder(root, images: dict[str, list[np.ndarray]], suffix=".png"):
    for cls, arrays in images.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(arrays):
            Image.fromarray(arr).save(root / cls / f"{cls}_{i}{suffix}")
    return root


def _ingest_folder(root, classes=("benign", "malignant")) -> pd.DataFrame:
    res = IngestResult()
    folder_src.ingest({"root": str(root), "classes": list(classes)}, res)
    return _frame(res.records)


def _prep(df, root, **prep):
    prep = {"size": 16, "balance": "none", **prep}
    return run_preprocess(df, {"format": "folder", "root": str(root)}, prep, 0)


def _const(value, shape=(20, 24), dtype=np.uint8, offset=0):
    """A constant image (a distinct value per image keeps pixel contents apart)."""
    arr = np.full(shape, value, dtype)
    arr[0, 0] = arr[0, 0] + offset  # one pixel apart: the content hash tells images apart
    return arr


# ----------------------------------------------------------------------------- colour


def test_rgb_png_kept_as_three_channels(tmp_path):
    colour = np.zeros((20, 24, 3), np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 255, 0, 128
    Image.fromarray(colour).save(tmp_path / "c.png")
    rgba = np.dstack([colour, np.full((20, 24), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c4.png")
    assert np.array_equal(read_image(tmp_path / "c.png", color="rgb"), colour.astype(np.float32))
    assert np.array_equal(read_image(tmp_path / "c4.png", color="rgb"), colour.astype(np.float32))  # alpha dropped
    lum = np.asarray(Image.fromarray(colour).convert("L"), np.float32)
    assert np.array_equal(read_image(tmp_path / "c.png"), lum)  # the default is unchanged
    dec = decode_image(tmp_path / "c.png", "rgb")
    assert dec.bits == 8 and dec.colour
    # a grey PNG, a 16-bit PNG and a DICOM under rgb: three equal channels
    grey = (np.arange(20 * 24).reshape(20, 24) % 200).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    g = read_image(tmp_path / "g.png", color="rgb")
    assert g.shape == (20, 24, 3) and all(np.array_equal(g[..., k], grey) for k in range(3))
    Image.fromarray(grey.astype(np.uint16) * 20).save(tmp_path / "g16.png")
    dec16 = decode_image(tmp_path / "g16.png", "rgb")
    assert dec16.bits == 16 and not dec16.colour and dec16.pixels[..., 2].max() == 199 * 20
    write_dicom(tmp_path / "g.dcm", grey.astype(np.uint16), **MR)
    d = read_image(tmp_path / "g.dcm", color="rgb")
    assert d.shape == (20, 24, 3) and np.array_equal(d[..., 1], grey)
    with pytest.raises(ValueError, match="color"):
        read_image(tmp_path / "c.png", color="cmyk")


def test_multipage_rgb_tiff_frames_keep_channels(tmp_path):
    pages = [np.full((12, 10, 3), (10 * k, 20 * k, 30 * k), np.uint8) for k in range(1, 4)]
    ims = [Image.fromarray(p) for p in pages]
    ims[0].save(tmp_path / "m.tif", save_all=True, append_images=ims[1:])
    pixels = read_image(tmp_path / "m.tif", color="rgb")
    assert pixels.shape == (3, 12, 10, 3)
    assert np.array_equal(select_frame(pixels, 2, "s", rgb=True), pages[2].astype(np.float32))
    with pytest.raises(DataError, match="holds 3 frames"):
        select_frame(pixels, -1, "s", rgb=True)
    one = read_image(tmp_path / "m.tif", color="rgb")[0]
    assert select_frame(one, -1, "s", rgb=True).shape == (12, 10, 3)


def test_crop_and_pad_of_colour_images():
    img = np.arange(10 * 12 * 3, dtype=np.float32).reshape(10, 12, 3) + 5
    crop = crop_square(img, (1, 1), 6)  # leaves the image: padded with the minimum (5)
    assert crop.shape == (6, 6, 3) and crop[0, 0, 0] == 5 and np.array_equal(crop[2, 2], img[0, 0])
    sq = whole_image(img)
    assert sq.shape == (12, 12, 3) and np.array_equal(sq[1:11], img) and (sq[0] == 5).all()


def test_rgb_folder_gives_three_channel_tensors_and_stats(tmp_path):
    def colour(r, g, b, k):
        arr = np.empty((20, 24, 3), np.uint8)
        arr[...] = (r, g, b)
        arr[0, 0] = 40 * k + 1  # distinct content per image, in colour and in luminance
        return arr

    imgs = {"benign": [colour(255, 0, 128, k) for k in range(4)],
            "malignant": [colour(0, 255, 64, k) for k in range(4)]}
    root = _folder(tmp_path / "rgb", imgs)
    Image.fromarray(np.full((20, 24), 51, np.uint8)).save(root / "benign" / "grey.png")  # grey: repeated
    df = _ingest_folder(root)
    tensors, stats, skipped = _prep(df, root, color="rgb", intensity={"mode": "bitdepth"})
    assert skipped.empty and stats["channels"] == 3 and len(stats["mean"]) == 3 and len(stats["std"]) == 3
    x = tensors["train"]["x"]
    assert x.shape[1:] == (3, 16, 16)
    assert stats["mean"] == pytest.approx(x.mean(dim=(0, 2, 3)).tolist())
    test = dict(zip(tensors["test"]["ids"], tensors["test"]["x"]))
    centre = {sid: t[:, 8, 8].tolist() for sid, t in test.items()}
    for sid, v in centre.items():
        want = [0, 1, 64 / 255] if sid.startswith("malignant") else [1, 0, 128 / 255]
        if sid == "benign/grey":
            want = [0.2, 0.2, 0.2]
        assert v == pytest.approx(want, abs=1e-6), sid
    # the default stays one luminance channel, bit-identical to an explicit 'luminance'
    t1, s1, _ = _prep(df, root, intensity={"mode": "bitdepth"})
    t2, _, _ = _prep(df, root, color="luminance", intensity={"mode": "bitdepth"})
    assert s1["channels"] == 1 and t1["train"]["x"].shape[1] == 1
    assert all(torch.equal(t1[s]["x"], t2[s]["x"]) for s in t1)
    lum = np.asarray(Image.fromarray(imgs["benign"][1]).convert("L"), np.float32)[5, 5] / 255
    assert float(t1["train"]["x"][1, 0, 8, 8]) == pytest.approx(lum, abs=1e-6)
    with pytest.raises(OncorobustError, match="preprocess.color"):
        _prep(df, root, color="RGB")


# ----------------------------------------------------------------------------- bit depth


def _sixteen_bit_folder(root, values=(4000, 3000, 2048, 1000), shape=(20, 24)):
    """Two classes of 16-bit PNGs holding 12-bit values (each image constant but for one pixel)."""
    imgs = {"benign": [_const(v, shape, np.uint16, k) for k, v in enumerate(values)],
            "malignant": [_const(v // 2, shape, np.uint16, k) for k, v in enumerate(values)]}
    return _folder(root, imgs)


def test_bitdepth_window_known_values():
    assert bitdepth_window(0) == 255 and bitdepth_window(255) == 255 and bitdepth_window(256) == 511
    assert bitdepth_window(4095) == 4095 and bitdepth_window(4096) == 8191 and bitdepth_window(65535) == 65535


def test_16bit_png_scaled_by_its_bit_depth_not_white(tmp_path):
    root = _sixteen_bit_folder(tmp_path / "d16")
    df = _ingest_folder(root)
    tensors, stats, skipped = _prep(df, root, intensity={"mode": "bitdepth"})
    assert skipped.empty
    x = {sid: float(t[0, 8, 8]) for s in tensors.values() for sid, t in zip(s["ids"], s["x"])}
    # one window for the whole dataset, from its largest value (4000 -> 12 bits -> [0, 4095])
    assert x["benign/benign_0"] == pytest.approx(4000 / 4095, abs=1e-6)
    assert x["benign/benign_3"] == pytest.approx(1000 / 4095, abs=1e-6)  # not 1000/1023
    assert x["malignant/malignant_2"] == pytest.approx(1024 / 4095, abs=1e-6)
    assert max(x.values()) < 1  # not 100% white
    assert stats["eps_units"]["per_eps"] == 4095 and "bit depth" in stats["eps_units"]["how"]


def test_8bit_bitdepth_is_bit_identical_to_window_0_255(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {c: [rng.integers(0, 256, (21, 17)).astype(np.uint8) for _ in range(4)] for c in ("benign", "malignant")}
    root = _folder(tmp_path / "d8", imgs)
    df = _ingest_folder(root)
    a, sa, _ = _prep(df, root, intensity={"mode": "bitdepth"})
    b, sb, _ = _prep(df, root, intensity={"mode": "window", "window": [0, 255]})
    assert all(torch.equal(a[s]["x"], b[s]["x"]) for s in a) and sa["mean"] == sb["mean"]
    assert sa["eps_units"]["per_eps"] == 255


def test_window_that_clips_most_of_an_image_is_an_error_naming_file_and_window(tmp_path):
    root = _sixteen_bit_folder(tmp_path / "d16")
    df = _ingest_folder(root)
    with pytest.raises(IntensityError, match=r"benign_0\.png: 100\.0% of its pixels lie outside"
                       r" preprocess\.intensity\.window \[0, 255\].*window: \[0, 4095\].*bitdepth"):
        _prep(df, root, intensity={"mode": "window", "window": [0, 255]})
    assert issubclass(IntensityError, DataError)
    # saturation declared intended: kept, each image listed as clipped
    tensors, stats, skipped = _prep(df, root, intensity={"mode": "window", "window": [0, 255], "max_clipped": 1})
    assert (skipped.stage == "clipped").sum() == 8 and stats["n_skipped"] == 0


def test_window_clipping_a_few_percent_is_noted_and_kept(tmp_path, caplog):
    base = np.tile(np.arange(20, dtype=np.uint16)[:, None] * 10, (1, 20))  # 0..190
    hot = base.copy()
    hot[:2, :] = 1000  # 2 rows of 20: 10% of the pixels above the window
    imgs = {"benign": [base + k for k in range(3)] + [hot],
            "malignant": [base + 10 + k for k in range(4)]}
    root = _folder(tmp_path / "few", imgs)
    df = _ingest_folder(root)
    with caplog.at_level(logging.WARNING, logger="oncorobust.data.preprocess"):
        tensors, stats, skipped = _prep(df, root, intensity={"mode": "window", "window": [0, 255]})
    assert len(skipped) == 1 and stats["n_skipped"] == 0
    row = skipped.iloc[0]
    assert row.stage == "clipped" and row.file.endswith("benign_3.png") and row.sample_id == "benign/benign_3"
    assert "10.0% of its pixels lie outside preprocess.intensity.window [0, 255]" in row.reason
    assert "benign_3.png" in caplog.text and "10.0%" in caplog.text
    assert "benign/benign_3" in tensors["test"]["ids"]  # kept


def test_intensity_none_on_integer_images_is_refused(tmp_path):
    imgs = {c: [_const(100 + k + 10 * i) for k in range(4)] for i, c in enumerate(("benign", "malignant"))}
    root = _folder(tmp_path / "n8", imgs)
    df = _ingest_folder(root)
    with pytest.raises(IntensityError, match=r"benign_0\.png: preprocess\.intensity\.mode none expects values"
                       r" already in \[0,1\], but this is a 8-bit image.*mode: bitdepth"):
        _prep(df, root, intensity={"mode": "none"})


def test_intensity_none_on_float_data_in_range_is_fine_and_out_of_range_refused(tmp_path):
    root = tmp_path / "f"
    for i, c in enumerate(("benign", "malignant")):
        (root / c).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(np.full((16, 16), 0.1 + 0.2 * i + 0.01 * k, np.float32)).save(root / c / f"{k}.tif")
    df = _ingest_folder(root)
    tensors, _, skipped = _prep(df, root, intensity={"mode": "none"})
    assert skipped.empty and float(tensors["test"]["x"][0].mean()) == pytest.approx(0.13, abs=1e-6)
    Image.fromarray(np.full((16, 16), 3.0, np.float32)).save(root / "benign" / "0.tif")
    with pytest.raises(IntensityError, match=r"0\.tif: 100\.0% of its pixels lie outside .*mode none"):
        _prep(df, root, intensity={"mode": "none"})
    with pytest.raises(IntensityError, match=r"mode bitdepth is for integer PNG/JPEG/TIFF/BMP"):
        _prep(df, root, intensity={"mode": "bitdepth"})


def test_bitdepth_on_dicom_is_refused_with_the_fix(tmp_path):
    root = tmp_path / "dcm"
    for i, c in enumerate(("benign", "malignant")):
        (root / c).mkdir(parents=True)
        for k in range(4):
            write_dicom(root / c / f"{k}.dcm", np.full((16, 16), 100 * i + k, np.uint16), **MR)
    df = _ingest_folder(root)
    with pytest.raises(IntensityError, match=r"\.dcm: preprocess\.intensity\.mode bitdepth.*window.*percentile"):
        _prep(df, root, intensity={"mode": "bitdepth"})


def test_eps_units_of_bitdepth():
    assert eps_units("folder", {"mode": "bitdepth"}, [], 4095.0)["per_eps"] == 4095.0
    assert eps_units("folder", {"mode": "bitdepth"}, [], None)["per_eps"] is None


# ----------------------------------------------------------------------------- tiny images, copies


def test_images_smaller_than_8_pixels_are_skipped_with_the_file_named(tmp_path):
    imgs = {c: [_const(50 + 10 * i + k) for k in range(4)] for i, c in enumerate(("benign", "malignant"))}
    root = _folder(tmp_path / "tiny", imgs)
    Image.fromarray(np.full((1, 1), 9, np.uint8)).save(root / "benign" / "one.png")
    Image.fromarray(np.full((3, 3), 9, np.uint8)).save(root / "malignant" / "three.png")
    Image.fromarray(np.full((7, 30), 9, np.uint8)).save(root / "malignant" / "thin.png")
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(root / "malignant" / "eight.png")  # allowed
    df = _ingest_folder(root)
    tensors, stats, skipped = _prep(df, root, intensity={"mode": "bitdepth"})
    assert sorted(skipped.sample_id) == ["benign/one", "malignant/thin", "malignant/three"]
    assert (skipped.stage == "preprocess").all() and stats["n_skipped"] == 3
    assert skipped.reason.str.contains("smaller than 8 pixels on a side").all()
    assert "a 7x30 image" in skipped.set_index("sample_id").reason["malignant/thin"]
    ids = {i for t in tensors.values() for i in t["ids"]}
    assert "malignant/eight" in ids and "benign/one" not in ids
    with pytest.raises(ImageError, match=r"one\.png: a 1x1 image .* smaller than 8 pixels"):
        run_preprocess(df, {"format": "folder", "root": str(root)},
                       {"size": 16, "balance": "none", "intensity": {"mode": "bitdepth"}}, 0, "error")


def test_same_pixels_under_two_patients_is_an_error_naming_both_rows(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for i in range(8):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16)).astype(np.uint8)).save(tmp_path / name)
        rows.append({"sample_id": f"s{i}", "patient_id": f"p{i}", "label": i % 2, "label_name": "ab"[i % 2],
                     "source": name, "frame": -1, "roi_row": np.nan, "roi_col": np.nan, "roi_size_px": np.nan})
    df = _frame(rows)
    src = {"format": "manifest", "root": str(tmp_path)}
    prep = {"size": 16, "balance": "none", "intensity": {"mode": "percentile"}}
    run_preprocess(df, src, prep, 0)  # distinct images: fine
    df2 = df.copy()
    df2.loc[5, "source"] = "img1.png"  # the same file under patients p1 and p5
    with pytest.raises(DataError, match=r"identical pixel content.*patient 'p1' \(sample 's1', .*img1\.png\)"
                       r" and patient 'p5' \(sample 's5', .*img1\.png\)"):
        run_preprocess(df2, src, prep, 0)
    # a byte-different copy (re-saved) with the same pixels is caught by content, not by name
    Image.open(tmp_path / "img1.png").save(tmp_path / "copy.png", optimize=True)
    df3 = df.copy()
    df3.loc[5, "source"] = "copy.png"
    with pytest.raises(DataError, match=r"'p1'.*img1\.png.*'p5'.*copy\.png"):
        run_preprocess(df3, src, prep, 0)
    # the same image for two lesions of one patient is not leakage
    df4 = df2.copy()
    df4.loc[5, "patient_id"] = "p1"
    run_preprocess(df4, src, prep, 0)


def test_duplicate_image_in_a_folder_without_patient_pattern_is_refused(tmp_path):
    imgs = {c: [_const(50 + 10 * i + k) for k in range(4)] for i, c in enumerate(("benign", "malignant"))}
    root = _folder(tmp_path / "dup", imgs)
    Image.fromarray(imgs["benign"][0]).save(root / "malignant" / "copy.png")
    df = _ingest_folder(root)
    with pytest.raises(DataError, match=r"'benign/benign_0'.*'malignant/copy'"):
        _prep(df, root, intensity={"mode": "bitdepth"})


# ----------------------------------------------------------------------------- folder trees


def _images(folder, n, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(_const(start + k, (12, 12))).save(folder / f"im{start + k}.png")


def test_symlinked_subfolders_and_files_are_followed_once(tmp_path):
    root = tmp_path / "data"
    _images(root / "benign", 4)
    _images(root / "malignant", 4, start=100)
    _images(tmp_path / "elsewhere", 10, start=200)
    os.symlink(tmp_path / "elsewhere", root / "malignant" / "linked")  # 10 images behind a link
    os.symlink(root / "benign", root / "benign" / "loop")  # a loop back to its own class folder
    os.symlink(root / "benign" / "im0.png", root / "benign" / "again.png")  # a second path to one file
    os.symlink(tmp_path / "nowhere.png", root / "benign" / "dangling.png")
    res = IngestResult()
    folder_src.ingest({"root": str(root), "classes": ["benign", "malignant"]}, res)
    ids = sorted(r["sample_id"] for r in res.records)
    assert len(ids) == 18 and sum(i.startswith("malignant/linked/") for i in ids) == 10
    reasons = {os.path.basename(s["file"]): s["reason"] for s in res.skipped}
    assert set(reasons) == {"loop", "again.png", "dangling.png"}
    assert "symbolic-link loop" in reasons["loop"] and "same file as" in reasons["again.png"]
    assert "dangling" in reasons["dangling.png"]


def test_symlinked_class_folder_counts_as_a_class(tmp_path):
    root = tmp_path / "data"
    _images(root / "benign", 3)
    _images(tmp_path / "m", 3, start=50)
    os.symlink(tmp_path / "m", root / "malignant")
    assert folder_src.class_folders(root) == ["benign", "malignant"]
    res = IngestResult()
    folder_src.ingest({"root": str(root), "classes": ["benign", "malignant"]}, res)
    assert sorted({r["label"] for r in res.records}) == [0, 1] and len(res.records) == 6


@pytest.mark.parametrize("empty", ["benign", "malignant", "middle"])
def test_empty_class_folder_is_an_error_naming_it(tmp_path, empty):
    root = tmp_path / "data"
    classes = ["benign", "middle", "malignant"]
    for i, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        if c != empty:
            _images(root / c, 3, start=10 * i)
    (root / empty / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=rf"data/{empty}: the folder of class '{empty}' holds no usable image"):
        folder_src.ingest({"root": str(root), "classes": classes}, IngestResult())


def test_macosx_and_hidden_folders_are_ignored(tmp_path, caplog):
    root = tmp_path / "data"
    _images(root / "benign", 3)
    _images(root / "malignant", 3, start=50)
    _images(root / "__MACOSX" / "benign", 3, start=90)
    (root / "benign" / "._im0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    _images(root / "malignant" / "__MACOSX", 2, start=80)
    _images(root / "malignant" / ".thumbs", 2, start=70)
    _images(root / ".git", 1, start=60)
    assert folder_src.class_folders(root) == ["benign", "malignant"]
    res = IngestResult()
    with caplog.at_level(logging.INFO, logger="oncorobust.data.sources.folder"):
        folder_src.ingest({"root": str(root), "classes": ["benign", "malignant"]}, res)
    assert len(res.records) == 6 and not res.skipped
    assert not any("MACOSX" in r["sample_id"] or "thumbs" in r["sample_id"] for r in res.records)
    assert "__MACOSX" in caplog.text
    with pytest.raises(DataError, match="no such folder"):
        folder_src.class_folders(tmp_path / "nowhere")


def test_manifest_roi_crops_of_colour_images(tmp_path):
    rows = []
    for i in range(8):
        arr = np.zeros((40, 50, 3), np.uint8)
        arr[...] = (10, 20, 30)
        arr[10:30, 15:35] = (200, 100 + i, 50)  # the lesion: a coloured square
        Image.fromarray(arr).save(tmp_path / f"c{i}.png")
        rows.append({"sample_id": f"s{i}", "patient_id": f"p{i}", "label": i % 2, "label_name": "ab"[i % 2],
                     "source": f"c{i}.png", "frame": -1, "roi_row": 20.0, "roi_col": 25.0, "roi_size_px": 10.0})
    prep = {"size": 8, "balance": "none", "color": "rgb", "crop": {"margin": 1.0, "min_px": 10},
            "intensity": {"mode": "window", "window": [0, 255]}}
    tensors, stats, skipped = run_preprocess(_frame(rows), {"format": "manifest", "root": str(tmp_path)}, prep, 0)
    assert skipped.empty and stats["channels"] == 3
    x = {sid: t for s in tensors.values() for sid, t in zip(s["ids"], s["x"])}["s3"]
    assert x.shape == (3, 8, 8)  # the 10x10 crop inside the square, every pixel the lesion's colour
    assert torch.allclose(x, torch.tensor([200 / 255, 103 / 255, 50 / 255])[:, None, None].expand(3, 8, 8))
