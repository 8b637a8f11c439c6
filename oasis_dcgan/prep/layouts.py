"""Where the inputs are: the three source layouts, detected on their own, and header checks.

  oasis-png  keras_png_slices_{train,validate,test}/case_NNN_slice_K.nii.png (the OASIS PNG
             release; 32 slices a case, segmentation masks in keras_png_slices_seg_*),
             possibly nested one level deeper
  oasis-raw  OAS1_NNNN_MRk/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc.{img,nii,nii.gz}
             (raw OASIS-1: Analyze 7.5 or NIfTI, 176x208x176 at 1 mm, brain-masked), in
             any number of folders side by side (the release's disc1/ ... disc12/); MR2 is
             a rescan of subject NNNN
  folder     any folder of PNG/JPEG/TIFF/BMP images: one training split

A scan lists the input files (units) without decoding pixels; `check_*` look at each file's
header deeply enough to catch empty, truncated and wrongly shaped files before packing.

Each layout is one `Layout` subclass registered in LAYOUTS, at the end of this module: the
config's data.layout choices, detection, the packer's scan, check and read, the images an input
gives, and the keys that make a dataset's identity all come from it. No other module names a
layout.
"""
from __future__ import annotations

import gzip
import os
import re
import typing
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import pixels
from .manifest import SPLITS, DataError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
PNG_NAME = re.compile(r"^case_(\d+)_slice_(\d+)\.nii\.png$")
RAW_SESSION = re.compile(r"^(OAS1_\d+)_MR(\d+)$")
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
    summary: dict = field(default_factory=dict)   # per split: cases (PNG), or sessions and subjects (raw)


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
    """(layout name, its root): the first layout in LAYOUTS found at or below src."""
    if not src.exists():
        raise DataError(f"{src}: no such directory")
    if not src.is_dir():
        raise DataError(f"{src}: not a directory")
    for layout in LAYOUTS.values():
        root = layout.find(src)
        if root is not None:
            return layout.name, root
    if not any(src.iterdir()):
        raise DataError(f"{src}: the directory is empty")
    raise DataError(f"{src}: no recognised layout. Looked for: "
                    + "; ".join(f"{v.looks_for} ({k})" for k, v in LAYOUTS.items()))


def scan_png(root: Path, allow_shared_cases: bool = False) -> Scan:
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
    cases = {split: sorted({u.case for u in scan.units if u.split == split}) for split in SPLITS}
    scan.summary = {split: {"cases": len(c)} for split, c in cases.items() if c}
    _check_cases_disjoint(root, cases, allow_shared_cases)
    return scan


def _check_cases_disjoint(root: Path, cases: dict, allow: bool) -> None:
    """One case in two splits would let the metric compare a brain with its own other slices."""
    where: dict = {}
    for split, names in cases.items():
        for c in names:
            where.setdefault(c, []).append(split)
    shared = {c: s for c, s in where.items() if len(s) > 1}
    if shared and not allow:
        lines = "\n".join(f"  case {c}: {', '.join(s)}" for c, s in sorted(shared.items()))
        raise DataError(f"{root}: {len(shared)} case(s) appear in more than one split; nothing was written. "
                        f"Remove the duplicates, or set data.allow_shared_cases=true to pack them anyway:\n{lines}")


def _raw_volume(subject_dir: Path) -> Path | None:
    t88 = subject_dir / "PROCESSED" / "MPRAGE" / "T88_111"
    for ext in (".img", ".nii", ".nii.gz"):
        hits = sorted(t88.glob(RAW_VOLUME_GLOB + ext))
        if hits:
            return hits[0]
    return None


def assign_splits(names: list[str], fractions, rng_seed: int) -> dict:
    """A seeded shuffle of `names` cut by `fractions` into train, validate and test."""
    order = np.random.default_rng(rng_seed).permutation(len(names))
    n_train = int(round(fractions[0] * len(names)))
    n_val = int(round(fractions[1] * len(names)))
    return {names[i]: "train" if pos < n_train else "validate" if pos < n_train + n_val else "test"
            for pos, i in enumerate(order)}


def _session_folders(root: Path) -> list[Path]:
    """Every OAS1_NNNN_MRk folder in root or up to two levels below it (disc1/, disc2/, ...)."""
    holders = _find_dirs(root, lambda d: any(RAW_SESSION.match(p.name) for p in _subdirs(d)), depth=2)
    return [p for d in holders for p in _subdirs(d) if RAW_SESSION.match(p.name)]


def _unique_sessions(root: Path, folders: list[Path]) -> dict:
    """session name -> folder; one session unpacked twice (two discs, a copy) is an error."""
    by_name: dict = {}
    for f in folders:
        by_name.setdefault(f.name, []).append(f)
    twice = {n: fs for n, fs in by_name.items() if len(fs) > 1}
    if twice:
        lines = "\n".join(f"  {n}: {', '.join(str(f) for f in fs)}" for n, fs in sorted(twice.items()))
        raise DataError(f"{root}: {len(twice)} session(s) are present more than once; keep one copy of each:\n{lines}")
    return {n: fs[0] for n, fs in by_name.items()}


def _sessions_kept(sessions: dict, rescans: str, scan: Scan) -> dict:
    """rescans="keep": every session; "drop": each subject's lowest-numbered session only."""
    if rescans not in ("keep", "drop"):
        raise DataError(f"data.rescans={rescans!r}: expected 'keep', or 'drop' for each subject's first session only")
    if rescans == "keep":
        return sessions
    first: dict = {}
    for name in sorted(sessions, key=natural_key):
        first.setdefault(RAW_SESSION.match(name).group(1), name)
    scan.ignored["rescans"] = len(sessions) - len(first)
    return {n: sessions[n] for n in first.values()}


def scan_raw(root: Path, fractions, rng_seed: int, rescans: str = "keep") -> Scan:
    scan = Scan()
    sessions = _sessions_kept(_unique_sessions(root, _session_folders(root)), rescans, scan)
    found = []
    for name in sorted(sessions, key=natural_key):
        vol = _raw_volume(sessions[name])
        if vol is None:
            scan.skipped.append({"path": str(sessions[name]), "reason": f"no PROCESSED/MPRAGE/T88_111/"
                                                                      f"{RAW_VOLUME_GLOB}.img|.nii|.nii.gz volume"})
        else:
            found.append((name, vol))
    # Split by subject, seeded: a subject's sessions (MR1 and its rescans) share one split, so
    # no brain is in train and in test.
    subject_of = {name: RAW_SESSION.match(name).group(1) for name, _ in found}
    scan.split_assignment = assign_splits(sorted(set(subject_of.values()), key=natural_key), fractions, rng_seed)
    scan.units = sorted((Unit(scan.split_assignment[subject_of[name]], str(vol), name) for name, vol in found),
                        key=lambda u: (SPLITS.index(u.split), natural_key(u.case)))
    for split in SPLITS:
        names = [u.case for u in scan.units if u.split == split]
        if names:
            scan.summary[split] = {"sessions": len(names), "subjects": len({subject_of[n] for n in names})}
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


def check_volume(path: str, max_anisotropy: float) -> str | None:
    """Header-level check of a volume: readable, 3-D, near-isotropic, and (Analyze) as long as its header says."""
    import nibabel as nib

    from .pixels import volume_problem

    try:
        if os.path.getsize(path) == 0:
            return "zero bytes"
        img = nib.load(path)
        why = volume_problem(img, max_anisotropy)
        if why:
            return why
        if path.endswith(".img"):
            need = int(np.prod(img.shape)) * img.get_data_dtype().itemsize + int(img.dataobj.offset)
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


# ----------------------------------------------------------------------------- the registry

LAYOUTS: dict[str, Layout] = {}   # by name, in detection order


def register_layout(cls: type[Layout]) -> type[Layout]:
    LAYOUTS[cls.name] = cls()
    return cls


class Layout:
    """A source layout's contract: how it is found, scanned, checked and read, how many images one
    input gives, and which data.* keys shape the pixels and splits of a dataset packed from it (its
    identity, recorded in the manifest). A new layout is one subclass with @register_layout."""
    name: typing.ClassVar[str]
    doc: typing.ClassVar[str]
    looks_for: typing.ClassVar[str]                   # for the error when nothing is found
    identity: typing.ClassVar[tuple[str, ...]] = ()
    volumes: typing.ClassVar[bool] = False            # an input holds many slices, chosen as it is read

    def find(self, src: Path) -> Path | None:
        """Its root at or below the source, or None."""
        raise NotImplementedError

    def scan(self, root: Path, data) -> Scan:
        """The inputs under the root (`data`: the config's data section), without decoding pixels."""
        raise NotImplementedError

    def check(self, path: str, options: dict) -> str | None:
        """What is wrong with one input's header, or None."""
        raise NotImplementedError

    def read(self, unit: Unit, resolution: int, options: dict) -> tuple[list, str]:
        """([(slice index, uint8 image)], a note) of one input."""
        raise NotImplementedError

    def images_per_unit(self, data) -> int:
        """How many images one input gives: shards are sized by it. No default, so a volume layout
        cannot forget it."""
        raise NotImplementedError

    def extras(self, data) -> dict:
        """What the manifest records beside the identity keys."""
        return {}

    def options(self, data) -> dict:
        """The plan's options: the identity keys' values from the data section, and the extras."""
        return {"skip_bad": bool(data.skip_bad), **{k: getattr(data, k) for k in self.identity},
                **self.extras(data)}


class _Images(Layout):
    """A layout whose inputs are image files, one image each."""

    def check(self, path, options):
        return check_image(path)

    def read(self, unit, resolution, options):
        img, note = pixels.load_image(unit.path, resolution)
        return [(unit.slice_index, img)], note

    def images_per_unit(self, data) -> int:
        return 1


# In detection order: a PNG release may also hold loose images, so the folder layout comes last.
@register_layout
class PngRelease(_Images):
    name, doc = "oasis-png", "the OASIS PNG release (keras_png_slices_*)"
    looks_for = "keras_png_slices_train/ (the OASIS PNG release, up to two levels down)"
    identity = ("allow_shared_cases",)

    def find(self, src):
        roots = _find_dirs(src, lambda d: (d / "keras_png_slices_train").is_dir())
        return roots[0] if roots else None

    def scan(self, root, data):
        return scan_png(root, data.allow_shared_cases)


@register_layout
class RawOasis(Layout):
    name, doc = "oasis-raw", "raw OASIS-1 sessions (Analyze or NIfTI volumes)"
    looks_for = "OAS1_NNNN_MRk/ session folders (raw OASIS-1, up to two levels down)"
    identity = ("slices", "slice_range", "slice_spacing", "min_brain_fraction", "percentile", "max_anisotropy",
                "rescans", "split_fractions", "split_seed")
    volumes = True

    def find(self, src):
        return src if _session_folders(src) else None

    def scan(self, root, data):
        return scan_raw(root, data.split_fractions, data.split_seed, data.rescans)

    def check(self, path, options):
        return check_volume(path, options["max_anisotropy"])

    def read(self, unit, resolution, options):
        return pixels.load_volume_slices(unit.path, resolution, options), ""

    def images_per_unit(self, data) -> int:
        return pixels.slices_per_volume(data.slices, data.slice_range)

    def extras(self, data):
        """How slices were chosen, and how many a volume gives."""
        return {"orientation": "RAS (nibabel as_closest_canonical)",
                "slice_selection": pixels.slice_rule(data.slices, data.slice_range, data.slice_spacing,
                                                     data.min_brain_fraction),
                "slices_per_volume": self.images_per_unit(data)}


@register_layout
class Folder(_Images):
    name, doc = "folder", "any folder of images: one training split"
    looks_for = f"image files ({', '.join(sorted(IMAGE_EXTS))}) anywhere below it"

    def find(self, src):
        return src if any(p.suffix.lower() in IMAGE_EXTS for p in src.rglob("*") if p.is_file()) else None

    def scan(self, root, data):
        return scan_folder(root)


PNG, RAW, FOLDER = PngRelease.name, RawOasis.name, Folder.name
AUTO_LAYOUT = "auto"  # data.layout's other choice: detect it


def identity(m: dict) -> dict:
    """A dataset's identity as data.* keys and their values, from its manifest: what shapes its
    pixels and splits besides its source (its layout's identity keys, recorded under "options")."""
    opts = m.get("options", {})
    keys = LAYOUTS[m["layout"]].identity if m["layout"] in LAYOUTS else ()
    return {"data.resolution": m["resolution"], "data.layout": m["layout"],
            **{f"data.{k}": opts[k] for k in keys if k in opts}}


def identity_differences(m: dict, data, only: typing.Callable[[str], bool] = lambda key: True) -> list[str]:
    """'key: packed with X, the config says Y' for each identity key (that `only` admits) on which
    the config's data section and the dataset disagree. A layout of "auto" agrees with any."""
    out = []
    for key, packed in identity(m).items():
        ours = getattr(data, key.split(".", 1)[1])
        if key == "data.layout" and ours == AUTO_LAYOUT:
            continue
        if ours != packed and only(key):
            out.append(f"{key}: packed with {packed!r}, the config says {ours!r}")
    return out
