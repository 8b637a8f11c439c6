"""Where the inputs are: the three source layouts, detected on their own, and header checks.

  oasis-png  keras_png_slices_{train,validate,test}/case_NNN_slice_K.nii.png (the OASIS PNG
             release; 32 slices a case, segmentation masks in keras_png_slices_seg_*),
             possibly nested one level deeper
  oasis-raw  OAS1_NNNN_MR1/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc.{img,nii,nii.gz}
             (raw OASIS-1: Analyze 7.5 or NIfTI, 176x208x176 at 1 mm, brain-masked)
  folder     any folder of PNG/JPEG/TIFF/BMP images: one training split

A scan lists the input files (units) without decoding pixels; `check_*` look at each file's
header deeply enough to catch empty, truncated and wrongly shaped files before packing.
"""
from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .manifest import SPLITS, DataError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
PNG_NAME = re.compile(r"^case_(\d+)_slice_(\d+)\.nii\.png$")
RAW_SUBJECT = re.compile(r"^OAS1_(\d+)_MR\d+$")
RAW_VOLUME_GLOB = "*_t88_masked_gfc"


@dataclass
class Unit:
    """One input file: a PNG slice (one image) or a volume (several slices)."""
    split: str
    path: str
    case: str
    slice_index: int = -1  # -1 for volumes: slices are chosen when the volume is read


@dataclass
class Scan:
    units: list = field(default_factory=list)     # [Unit], in packing order
    skipped: list = field(default_factory=list)   # [{"path", "reason"}]
    ignored: dict = field(default_factory=dict)   # what was left out on purpose, counted
    split_assignment: dict | None = None          # subject -> split (raw layout)


def natural_key(s: str):
    """Sort key that orders embedded numbers by value: slice_2 before slice_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _subdirs(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _find_dirs(src: Path, predicate, depth: int = 2) -> list[Path]:
    """Directories at most `depth` levels below src (src included) that satisfy predicate."""
    found, frontier = [], [src]
    for _ in range(depth + 1):
        found += [d for d in frontier if predicate(d)]
        frontier = [sub for d in frontier for sub in _subdirs(d)]
    return found


def detect_layout(src: Path) -> tuple[str, Path]:
    if not src.exists():
        raise DataError(f"{src}: no such directory")
    if not src.is_dir():
        raise DataError(f"{src}: not a directory")
    png_roots = _find_dirs(src, lambda d: (d / "keras_png_slices_train").is_dir())
    if png_roots:
        return "oasis-png", png_roots[0]
    raw = _find_dirs(src, lambda d: any(RAW_SUBJECT.match(p.name) for p in _subdirs(d)), depth=1)
    if raw:
        return "oasis-raw", raw[0]
    if any(p.suffix.lower() in IMAGE_EXTS for p in src.rglob("*") if p.is_file()):
        return "folder", src
    if not any(src.iterdir()):
        raise DataError(f"{src}: the directory is empty")
    raise DataError(
        f"{src}: no recognised layout. Looked for: keras_png_slices_train/ (the OASIS PNG release, up to two "
        f"levels down); OAS1_NNNN_MR1/ subject folders (raw OASIS-1); or image files "
        f"({', '.join(sorted(IMAGE_EXTS))}) anywhere below it")


def scan_png(root: Path) -> Scan:
    scan = Scan()
    scan.ignored["segmentation_masks"] = sum(1 for d in root.glob("keras_png_slices_seg_*") if d.is_dir()
                                             for _ in d.iterdir())
    non_image = 0
    for split in SPLITS:
        d = root / f"keras_png_slices_{split}"
        if not d.is_dir():
            continue
        found = []
        for p in d.iterdir():
            if not p.is_file():
                continue
            m = PNG_NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), p))
            elif p.suffix.lower() in IMAGE_EXTS:
                scan.skipped.append({"path": str(p), "reason": "name is not case_NNN_slice_K.nii.png"})
            else:
                non_image += 1
        # Case, then slice as numbers: a plain sort puts slice_10 before slice_2.
        for case, sl, p in sorted(found, key=lambda t: (t[0], t[1])):
            scan.units.append(Unit(split, str(p), f"{case:03d}", sl))
    scan.ignored["non_image_files"] = non_image
    return scan


def _raw_volume(subject_dir: Path) -> Path | None:
    t88 = subject_dir / "PROCESSED" / "MPRAGE" / "T88_111"
    for ext in (".img", ".nii", ".nii.gz"):
        hits = sorted(t88.glob(RAW_VOLUME_GLOB + ext))
        if hits:
            return hits[0]
    return None


def assign_splits(names: list[str], fractions, seed: int) -> dict:
    """A seeded shuffle of `names` cut by `fractions` into train, validate and test."""
    order = np.random.default_rng(seed).permutation(len(names))
    n_train = int(round(fractions[0] * len(names)))
    n_val = int(round(fractions[1] * len(names)))
    return {names[i]: "train" if pos < n_train else "validate" if pos < n_train + n_val else "test"
            for pos, i in enumerate(order)}


def scan_raw(root: Path, fractions, seed: int) -> Scan:
    scan = Scan()
    subjects = sorted((p for p in _subdirs(root) if RAW_SUBJECT.match(p.name)), key=lambda p: natural_key(p.name))
    found = []
    for s in subjects:
        vol = _raw_volume(s)
        if vol is None:
            scan.skipped.append({"path": str(s), "reason": f"no PROCESSED/MPRAGE/T88_111/{RAW_VOLUME_GLOB}"
                                                           ".img|.nii|.nii.gz volume"})
        else:
            found.append((s.name, vol))
    # Split by session folder, seeded: its slices never straddle train and test.
    scan.split_assignment = assign_splits([name for name, _ in found], fractions, seed)
    scan.units = sorted((Unit(scan.split_assignment[name], str(vol), name) for name, vol in found),
                        key=lambda u: (SPLITS.index(u.split), natural_key(u.case)))
    return scan


def scan_folder(root: Path) -> Scan:
    scan = Scan()
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p.relative_to(root))))
    for p in files:
        if p.suffix.lower() in IMAGE_EXTS:
            scan.units.append(Unit("train", str(p), str(p.parent.relative_to(root)) or ".", -1))
    scan.ignored["non_image_files"] = len(files) - len(scan.units)
    return scan


def check_image(path: str) -> str | None:
    """Header-level check: zero bytes, truncation (PNG chunk CRCs), wrong dimensionality."""
    from PIL import Image

    try:
        if os.path.getsize(path) == 0:
            return "zero bytes"
        with Image.open(path) as im:
            im.verify()  # walks every chunk and checks its CRC for PNG: truncation shows here
        with Image.open(path) as im:
            if im.mode not in ("1", "L", "P", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"):
                return f"unsupported pixel mode {im.mode}"
            if getattr(im, "n_frames", 1) > 1:
                return f"{im.n_frames} frames; expected a single 2D image"
            if min(im.size) < 8:
                return f"too small ({im.size[0]}x{im.size[1]})"
    except Exception as e:  # PIL raises many types for damaged files
        return f"unreadable image ({type(e).__name__}: {e})"
    return None


def check_volume(path: str) -> str | None:
    """Header-level check of a volume: readable, 3-D, and (Analyze) as long as its header says."""
    import nibabel as nib

    try:
        if os.path.getsize(path) == 0:
            return "zero bytes"
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            return f"wrong dimensionality: shape {shape}, expected a 3D volume"
        if path.endswith(".img"):
            need = int(np.prod(shape)) * img.get_data_dtype().itemsize + int(img.dataobj.offset)
            have = os.path.getsize(path)
            if have < need:
                return f"truncated: {have} bytes, the header needs {need}"
        elif path.endswith(".nii.gz"):
            with gzip.open(path, "rb") as f:  # a truncated gzip fails here, not mid-pack
                while f.read(1 << 22):
                    pass
    except (Exception, zlib.error) as e:
        return f"unreadable volume ({type(e).__name__}: {e})"
    return None
