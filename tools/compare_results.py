#!/usr/bin/env python3
# Usage: python tools/compare_results.py <sha256 list of the old results/> <old results/> <new results/>
"""Invariant check: every baseline file under results/ against the new run.

byte-identical, or equal in content where a byte difference has a known non-result cause:
CSVs equal in every old column (new columns appended), torch files equal tensor for tensor (the
baseline's archive record names came from random temporary file names; timings in model meta),
history CSVs equal except the wall-clock columns, cards equal except their runtime line, PDFs
equal except the creation date, demo DICOMs equal except pydicom's random SOP Instance UID of
compressed files (the baseline drew one per run)."""
import hashlib, sys, re
from pathlib import Path
import pandas as pd, torch, pydicom

base_list, base_dir, new_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
TIMING = {"train_seconds", "seconds"}

def eq_obj(a, b, path=""):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        if set(a) != set(b): return False
        return all(k in TIMING or k == "config_hash" or eq_obj(a[k], b[k], path + "/" + str(k)) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(eq_obj(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b: return True
    return a == b

def classify(old, new):
    if old.suffix == ".pt":
        a = torch.load(old, weights_only=True); b = torch.load(new, weights_only=True)
        return "torch content" if eq_obj(a, b) else None
    if old.suffix == ".csv":
        o = pd.read_csv(old, dtype=str, keep_default_na=False); n = pd.read_csv(new, dtype=str, keep_default_na=False)
        if list(n.columns[: len(o.columns)]) == list(o.columns) and n[o.columns].equals(o):
            return "old columns"
        # new columns inserted before the key and provenance columns: the old ones equal (row_fp,
        # the digest of a whole row, changes with them)
        same = [c for c in o.columns if c != "row_fp"]
        if set(o.columns) <= set(n.columns) and n[same].equals(o[same]):
            return "old columns (new ones inserted)"
        keep = [c for c in o.columns if c not in TIMING]
        if old.name.endswith("history.csv") and list(n.columns) == list(o.columns) and n[keep].equals(o[keep]):
            return "history without timings"
        return None
    if old.suffix in (".md", ".html") and old.parent.name == "cards":
        strip = lambda t: [l for l in t.splitlines() if "Runtime" not in l]
        return "card without runtime line" if strip(old.read_text()) == strip(new.read_text()) else None
    if old.suffix == ".pdf":
        streams = lambda b: re.findall(rb"stream\r?\n(.*?)endstream", b, re.S)  # every drawn object
        return "pdf equal in every stream (no creation date)" if streams(old.read_bytes()) == streams(new.read_bytes()) else None
    if old.suffix == ".dcm":
        a, b = pydicom.dcmread(old), pydicom.dcmread(new)
        for d in (a, b):
            d.SOPInstanceUID = "x"; d.file_meta.MediaStorageSOPInstanceUID = "x"
        same = a.PixelData == b.PixelData and all(e == b[e.tag] for e in a if e.tag != (0x7fe0, 0x0010))
        return "dicom without random SOP UID" if same else None
    return None

rows = [l.split(maxsplit=1) for l in base_list.read_text().splitlines()]
counts, bad = {}, []
for sha, rel in rows:
    rel = rel.strip(); r = Path(rel).relative_to("results")
    old, new = base_dir / r, new_dir / r
    if not new.exists():
        bad.append(("missing", rel)); continue
    if hashlib.sha256(new.read_bytes()).hexdigest() == sha:
        counts["byte-identical"] = counts.get("byte-identical", 0) + 1; continue
    kind = classify(old, new)
    if kind is None:
        bad.append(("differs", rel))
    else:
        counts[kind] = counts.get(kind, 0) + 1
print(f"{len(rows)} baseline files:", ", ".join(f"{v} {k}" for k, v in counts.items()), f"; {len(bad)} different or missing")
for b in bad[:50]:
    print(*b)
