"""Pack OASIS brain slices into verified HDF5 shards.

Three input layouts (../shared/SEED-FACTS.md), detected on their own:
  oasis-png  keras_png_slices_{train,validate,test}/case_NNN_slice_K.nii.png, maybe nested once
  oasis-raw  OAS1_NNNN_MR1/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc.{img,nii,nii.gz}
  folder     any folder of PNG/JPEG/TIFF images: one split

The work is split in three steps so it can run as a Slurm array:
  plan()       scan + header-level validation of every input; nothing is written if any is bad
  pack_task()  array task i writes shards i, i+n, i+2n, ... (temp file, fsync, rename)
  seal()       re-hash every shard and write manifest.json
`preprocess()` runs all three in-process.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, fsutil

FORMAT_VERSION = 1
SPLITS = ("train", "validate", "test")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
PNG_NAME = re.compile(r"^case_(\d+)_slice_(\d+)\.nii\.png$")
RAW_SUBJECT = re.compile(r"^OAS1_(\d+)_MR\d+$")
RAW_VOLUME_GLOB = "*_t88_masked_gfc"
SHARD_NAME = re.compile(r"^(train|validate|test)-(\d{5})-of-(\d{5})\.h5$")
PLAN_FILE = ".plan.json"
TASK_DIR = ".tasks"


class DataError(ValueError):
    """Input that cannot be packed. The message names every offending file and why."""


# --------------------------------------------------------------------------- scanning

@dataclass
class Unit:
    """One input file: a PNG slice (one image) or a volume (several slices)."""
    split: str
    path: str
    case: str
    slice_index: int = -1  # -1 for volumes: slices are chosen when the volume is read


@dataclass
class Plan:
    layout: str
    source: str
    resolution: int
    units: list = field(default_factory=list)         # [Unit]
    shards: dict = field(default_factory=dict)        # split -> [[unit indices], ...]
    skipped: list = field(default_factory=list)       # [{"path", "reason"}]
    ignored: dict = field(default_factory=dict)       # what was left out on purpose, counted
    split_assignment: dict | None = None              # subject -> split (raw layout)
    options: dict = field(default_factory=dict)       # slicing/scaling settings that shape the pixels

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["units"] = [dataclasses.asdict(u) for u in self.units]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        d = dict(d)
        d["units"] = [Unit(**u) for u in d["units"]]
        return cls(**d)

    def shard_list(self):
        """[(split, index, total, unit indices)] in a fixed order; array task i takes every n-th."""
        out = []
        for split in SPLITS:
            groups = self.shards.get(split, [])
            out += [(split, i, len(groups), g) for i, g in enumerate(groups)]
        return out

    def images_per_unit(self) -> int:
        return self.options.get("slices_per_volume", 1) if self.layout == "oasis-raw" else 1


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _find_dirs(src: Path, predicate, depth: int = 2) -> list[Path]:
    """Directories at most `depth` levels below src (src included) that satisfy predicate."""
    found, frontier = [], [src]
    for _ in range(depth + 1):
        nxt = []
        for d in frontier:
            if predicate(d):
                found.append(d)
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                pass
        frontier = nxt
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


def _subdirs(d: Path):
    try:
        return [p for p in d.iterdir() if p.is_dir()]
    except OSError:
        return []


def _scan_png(root: Path, plan: Plan) -> None:
    seg = sum(1 for d in root.glob("keras_png_slices_seg_*") if d.is_dir() for _ in d.iterdir())
    plan.ignored["segmentation_masks"] = seg
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
                plan.skipped.append({"path": str(p), "reason": "name is not case_NNN_slice_K.nii.png"})
            else:
                non_image += 1
        # Case, then slice as numbers: a plain sort puts slice_10 before slice_2.
        for case, sl, p in sorted(found, key=lambda t: (t[0], t[1])):
            plan.units.append(Unit(split, str(p), f"{case:03d}", sl))
    plan.ignored["non_image_files"] = non_image


def _raw_volume(subject_dir: Path) -> Path | None:
    t88 = subject_dir / "PROCESSED" / "MPRAGE" / "T88_111"
    for ext in (".img", ".nii", ".nii.gz"):
        hits = sorted(t88.glob(RAW_VOLUME_GLOB + ext))
        if hits:
            return hits[0]
    return None


def _scan_raw(root: Path, plan: Plan, fractions, seed: int) -> None:
    subjects = sorted((p for p in _subdirs(root) if RAW_SUBJECT.match(p.name)), key=lambda p: _natural_key(p.name))
    found = []
    for s in subjects:
        vol = _raw_volume(s)
        if vol is None:
            plan.skipped.append({"path": str(s), "reason": f"no PROCESSED/MPRAGE/T88_111/{RAW_VOLUME_GLOB}"
                                                           ".img|.nii|.nii.gz volume"})
        else:
            found.append((s.name, vol))
    # Split by subject, seeded: a subject's slices never straddle train and test.
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(found))
    n = len(found)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    assignment = {}
    for rank, i in enumerate(order):
        split = "train" if rank < n_train else "validate" if rank < n_train + n_val else "test"
        assignment[found[i][0]] = split
    plan.split_assignment = assignment
    for name, vol in found:
        plan.units.append(Unit(assignment[name], str(vol), name))
    plan.units.sort(key=lambda u: (SPLITS.index(u.split), _natural_key(u.case)))


def _scan_folder(root: Path, plan: Plan) -> None:
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: _natural_key(str(p.relative_to(root))))
    non_image = 0
    for p in files:
        if p.suffix.lower() in IMAGE_EXTS:
            plan.units.append(Unit("train", str(p), str(p.parent.relative_to(root)) or ".", -1))
        else:
            non_image += 1
    plan.ignored["non_image_files"] = non_image


def _check_image(path: str) -> str | None:
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


def _check_volume(path: str) -> str | None:
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


def plan(src: str | os.PathLike, resolution: int = 256, layout: str = "auto", shard_size: int = 2048,
         skip_bad: bool = False, slices: int = 32, slice_range: str = "", percentile: float = 99.5,
         split_fractions=(0.85, 0.10, 0.05), split_seed: int = 0) -> Plan:
    """Scan and validate the source. Raises DataError naming every bad file unless skip_bad."""
    src = Path(src).expanduser().resolve()
    detected, root = detect_layout(src)
    if layout != "auto" and layout != detected:
        root = src
        detected = layout
    p = Plan(layout=detected, source=str(root), resolution=resolution,
             options={"slices": slices, "slice_range": slice_range, "percentile": percentile,
                      "split_fractions": list(split_fractions), "split_seed": split_seed,
                      "skip_bad": bool(skip_bad)})
    if detected == "oasis-png":
        _scan_png(root, p)
    elif detected == "oasis-raw":
        _scan_raw(root, p, split_fractions, split_seed)
        p.options["slices_per_volume"] = _slices_per_volume(slices, slice_range)
    else:
        _scan_folder(root, p)
    check = _check_volume if detected == "oasis-raw" else _check_image
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        reasons = list(pool.map(check, [u.path for u in p.units]))
    bad = [{"path": u.path, "reason": r} for u, r in zip(p.units, reasons) if r]
    p.units = [u for u, r in zip(p.units, reasons) if not r]
    p.skipped += bad
    if p.skipped and not skip_bad:
        lines = "\n".join(f"  {s['path']}: {s['reason']}" for s in p.skipped)
        raise DataError(f"{len(p.skipped)} bad input file(s) under {root}; nothing was written. "
                        f"Fix or remove them, or pass --skip-bad to record and skip them:\n{lines}")
    if not any(u.split == "train" for u in p.units):
        raise DataError(f"{root}: no usable training images found (layout {detected})")
    per_unit = p.images_per_unit()
    units_per_shard = max(1, shard_size // per_unit)
    for split in SPLITS:
        idx = [i for i, u in enumerate(p.units) if u.split == split]
        if idx:
            p.shards[split] = [idx[i:i + units_per_shard] for i in range(0, len(idx), units_per_shard)]
    return p


# --------------------------------------------------------------------------- pixels

def _slices_per_volume(slices: int, slice_range: str) -> int:
    if slice_range:
        a, b = (int(x) for x in slice_range.split(":"))
        return b - a
    return slices


def to_square(img: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-pad (or crop) to a square, pad up to `resolution`, or area-resample down to it."""
    from skimage.transform import resize_local_mean

    h, w = img.shape
    s = max(h, w)
    out = np.zeros((s, s), dtype=img.dtype)
    y, x = (s - h) // 2, (s - w) // 2
    out[y:y + h, x:x + w] = img
    if s < resolution:
        pad = np.zeros((resolution, resolution), dtype=img.dtype)
        o = (resolution - s) // 2
        pad[o:o + s, o:o + s] = out
        return pad
    if s > resolution:
        # Area resampling (mean over each output pixel's footprint): no aliasing, no ringing.
        return resize_local_mean(out.astype(np.float32), (resolution, resolution), preserve_range=True)
    return out


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def load_image(path: str, resolution: int) -> tuple[np.ndarray, str]:
    """Read one 2D image as uint8 [res, res]. Returns (pixels, note) where note says what was converted."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        note = ""
        if im.mode in ("RGB", "RGBA", "P", "LA", "1"):
            note = "converted_to_gray" if im.mode != "1" else ""
            im = im.convert("L")
        a = np.asarray(im)
    if a.dtype == np.uint8:
        img = a.astype(np.float32)
    else:
        # 16-bit and float images: scale the image's own range to 0..255; MRI rarely fills 16 bits.
        a = a.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        img = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        note = "scaled_to_8bit"
    return _to_uint8(to_square(img, resolution)), note


def volume_slices(vol: np.ndarray, slices: int = 32, slice_range: str = "", percentile: float = 99.5):
    """Axial slices of a brain volume as float images on 0..255, oriented like the PNG release.

    The slab is the `slices` central slices of the brain's extent along the last axis (the
    nonzero voxels, since OASIS T88 volumes are brain-masked), or `slice_range` when given.
    Intensities are scaled per volume: the `percentile` of brain voxels maps to 255.
    """
    vol = np.asarray(vol, dtype=np.float32)
    if vol.ndim == 4 and vol.shape[3] == 1:
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise DataError(f"expected a 3D volume, got shape {vol.shape}")
    vol = np.nan_to_num(vol)
    nz = vol > 0
    if slice_range:
        a, b = (int(x) for x in slice_range.split(":"))
    else:
        zs = np.flatnonzero(nz.any(axis=(0, 1)))
        if zs.size == 0:
            raise DataError("volume is empty (all zero)")
        centre = (zs[0] + zs[-1] + 1) // 2
        a = max(0, min(centre - slices // 2, vol.shape[2] - slices))
        b = a + slices
    if a < 0 or b > vol.shape[2]:
        raise DataError(f"slice range {a}:{b} is outside the volume's {vol.shape[2]} axial slices")
    brain = vol[nz]
    hi = float(np.percentile(brain, percentile)) if brain.size else 0.0
    scale = 255.0 / hi if hi > 0 else 0.0
    # Analyze/T88 axes are x (left-right), y (posterior-anterior), z (inferior-superior);
    # rot90 puts anterior at the top, as the PNG release shows it.
    return [(k, np.rot90(vol[:, :, k]) * scale) for k in range(a, b)]


def load_volume_slices(path: str, resolution: int, slices: int, slice_range: str, percentile: float):
    import nibabel as nib

    vol = nib.load(path).get_fdata(dtype=np.float32)
    return [(k, _to_uint8(to_square(np.clip(img, 0, 255), resolution)))
            for k, img in volume_slices(vol, slices, slice_range, percentile)]


# --------------------------------------------------------------------------- packing

def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.h5"


def _inputs_hash(p: Plan, units: list) -> str:
    """What a shard's bytes depend on: inputs (path, size, mtime) and the pixel settings."""
    h = hashlib.sha256()
    h.update(json.dumps([FORMAT_VERSION, p.layout, p.resolution, p.options], sort_keys=True).encode())
    for u in units:
        st = os.stat(u.path)
        h.update(f"{u.path}\0{u.case}\0{u.slice_index}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_units(p: Plan, units: list):
    """Decode a shard's inputs. Returns (images, sources, cases, slices, skipped, notes)."""
    images, sources, cases, slices, skipped, notes = [], [], [], [], [], {}
    o = p.options
    for u in units:
        try:
            if p.layout == "oasis-raw":
                for k, img in load_volume_slices(u.path, p.resolution, o["slices"], o["slice_range"], o["percentile"]):
                    images.append(img), sources.append(u.path), cases.append(u.case), slices.append(k)
            else:
                img, note = load_image(u.path, p.resolution)
                if note:
                    notes[note] = notes.get(note, 0) + 1
                images.append(img), sources.append(u.path), cases.append(u.case), slices.append(u.slice_index)
        except Exception as e:
            skipped.append({"path": u.path, "reason": f"decode failed ({type(e).__name__}: {e})"})
    return images, sources, cases, slices, skipped, notes


def image_block_offset(path) -> int | None:
    """Byte offset of the images when their chunks lie back to back in order, else None.

    Shards are written so that they do (early chunk allocation), which lets the reader map
    the images straight from the file instead of asking HDF5 for them one at a time.
    """
    import h5py

    with h5py.File(path, "r") as f:
        ds = f["images"]
        n = ds.shape[0]
        if n == 0 or ds.chunks != (1,) + ds.shape[1:] or ds.compression:
            return None
        size = int(np.prod(ds.shape[1:]))
        offs = [ds.id.get_chunk_info_by_coord((k, 0, 0)).byte_offset for k in range(n)]
    return int(offs[0]) if all(o == offs[0] + k * size for k, o in enumerate(offs)) else None


def _write_shard(dest: Path, split: str, images, sources, cases, slices, resolution: int) -> int | None:
    import h5py

    with fsutil.atomic_path(dest) as tmp:
        # track_times=False and a fixed libver make the bytes a function of the content
        # alone, so a rerun reproduces a shard exactly and its sha256 can vouch for it.
        with h5py.File(tmp, "w", libver=("v110", "v110"), track_order=False) as f:
            n = len(images)
            arr = np.stack(images) if n else np.zeros((0, resolution, resolution), np.uint8)
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # chunks in one run, in index order
            ds = f.create_dataset("images", shape=arr.shape, dtype=np.uint8, track_times=False,
                                  chunks=(1, resolution, resolution) if n else None, dcpl=dcpl if n else None)
            if n:
                ds[...] = arr
            str_t = h5py.string_dtype("utf-8")
            f.create_dataset("source", data=np.array(sources, dtype=object), dtype=str_t, track_times=False)
            f.create_dataset("case", data=np.array(cases, dtype=object), dtype=str_t, track_times=False)
            f.create_dataset("slice", data=np.asarray(slices, dtype=np.int32), track_times=False)
            f.attrs["split"] = split
            f.attrs["resolution"] = resolution
            f.attrs["format_version"] = FORMAT_VERSION
        return image_block_offset(tmp)


def save_plan(p: Plan, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(out / PLAN_FILE, p.to_dict())
    return out / PLAN_FILE


def load_plan(out: str | os.PathLike) -> Plan:
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        raise DataError(f"{path}: no packing plan; run the plan step (oasis-dcgan preprocess) first")
    return Plan.from_dict(fsutil.read_json(path))


def pack_task(out: str | os.PathLike, task: int = 0, ntasks: int = 1, log=print) -> dict:
    """Write this task's shards. A shard already on disk with the same inputs and hash is kept."""
    out = Path(out)
    p = load_plan(out)
    (out / TASK_DIR).mkdir(exist_ok=True)
    written = kept = images = 0
    t0 = time.perf_counter()
    for j, (split, i, total, idx) in enumerate(p.shard_list()):
        if j % ntasks != task:
            continue
        units = [p.units[k] for k in idx]
        name = shard_name(split, i, total)
        dest, side = out / name, out / TASK_DIR / (name + ".json")
        # This task alone writes this shard, so temps under its name are a killed attempt's.
        fsutil.remove_stale_temps(out, name)
        fsutil.remove_stale_temps(out / TASK_DIR, name)
        ih = _inputs_hash(p, units)
        if dest.exists() and side.exists():
            rec = fsutil.read_json(side)
            if rec.get("inputs_hash") == ih and rec.get("sha256") == fsutil.sha256_file(dest):
                kept += 1
                continue
        imgs, srcs, cases, slices, skipped, notes = _read_units(p, units)
        if skipped and not p.options.get("skip_bad"):
            lines = "\n".join(f"  {s['path']}: {s['reason']}" for s in skipped)
            raise DataError(f"shard {name}: {len(skipped)} file(s) failed to decode; shard not written:\n{lines}")
        offset = _write_shard(dest, split, imgs, srcs, cases, slices, p.resolution)
        fsutil.write_json(side, {"file": name, "count": len(imgs), "sha256": fsutil.sha256_file(dest),
                                 "images_offset": offset, "inputs_hash": ih, "skipped": skipped, "notes": notes})
        written += 1
        images += len(imgs)
        log(f"[preprocess task {task}/{ntasks}] wrote {name}: {len(imgs)} images")
    dt = time.perf_counter() - t0
    return {"task": task, "written": written, "kept": kept, "images": images, "seconds": dt}


def seal(out: str | os.PathLike) -> dict:
    """Check every planned shard against its task record and publish manifest.json."""
    out = Path(out)
    p = load_plan(out)
    splits: dict = {}
    skipped = list(p.skipped)
    notes: dict = {}
    problems = []
    planned = set()
    for split, i, total, _ in p.shard_list():
        name = shard_name(split, i, total)
        planned.add(name)
        side = out / TASK_DIR / (name + ".json")
        if not (out / name).exists() or not side.exists():
            problems.append(f"{name}: missing (its array task did not finish)")
            continue
        rec = fsutil.read_json(side)
        digest = fsutil.sha256_file(out / name)
        if digest != rec["sha256"]:
            problems.append(f"{name}: sha256 {digest[:12]}... differs from the one its task recorded")
            continue
        s = splits.setdefault(split, {"count": 0, "shards": []})
        s["count"] += rec["count"]
        s["shards"].append({"file": name, "count": rec["count"], "sha256": digest,
                            "images_offset": rec.get("images_offset")})
        skipped += rec.get("skipped", [])
        for k, v in rec.get("notes", {}).items():
            notes[k] = notes.get(k, 0) + v
    if problems:
        raise DataError(f"{out}: cannot seal the dataset:\n" + "\n".join(f"  {x}" for x in problems))
    fsutil.remove_stale_temps(out)  # every task has finished: anything left is a killed attempt's
    fsutil.remove_stale_temps(out / TASK_DIR)
    for f in out.glob("*.h5"):  # shards of an earlier, different plan would confuse readers
        if SHARD_NAME.match(f.name) and f.name not in planned:
            f.unlink()
    manifest = {
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "layout": p.layout,
        "sources": [p.source],
        "resolution": p.resolution,
        "dtype": "uint8",
        "scaling": "reader maps uint8 x to (x - 127.5) / 127.5, as the seed does",
        "splits": splits,
        "counts": {k: v["count"] for k, v in splits.items()},
        "skipped": skipped,
        "ignored": p.ignored,
        "converted": notes,
        "split_assignment": p.split_assignment,
        "options": p.options,
    }
    fsutil.write_json(out / "manifest.json", manifest)
    return manifest


def preprocess(src, out, log=print, **plan_kwargs) -> dict:
    """Plan, pack and seal in this process."""
    p = plan(src, **plan_kwargs)
    save_plan(p, out)
    pack_task(out, 0, 1, log=log)
    return seal(out)


# --------------------------------------------------------------------------- checking

def load_manifest(dataset: str | os.PathLike) -> dict:
    path = Path(dataset) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path}: not found. Is {dataset} a packed dataset (oasis-dcgan preprocess)?")
    m = fsutil.read_json(path)
    if m.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {m.get('format_version')}, this tool reads {FORMAT_VERSION}")
    return m


def manifest_hash(dataset: str | os.PathLike) -> str:
    """Identifies the dataset's content: the shards' hashes, not the manifest's timestamps."""
    m = load_manifest(dataset)
    ids = [(s, sh["file"], sh["sha256"]) for s in sorted(m["splits"]) for sh in m["splits"][s]["shards"]]
    return hashlib.sha256(json.dumps([m["resolution"], ids]).encode()).hexdigest()


def verify(dataset: str | os.PathLike) -> list[str]:
    """Re-hash every shard and check shapes and dtypes. Returns the problems found (empty: good)."""
    import h5py

    d = Path(dataset)
    m = load_manifest(d)
    res = m["resolution"]
    problems = []
    for split, s in m["splits"].items():
        total = 0
        for sh in s["shards"]:
            f = d / sh["file"]
            if not f.is_file():
                problems.append(f"{f}: missing")
                continue
            digest = fsutil.sha256_file(f)
            if digest != sh["sha256"]:
                problems.append(f"{f}: sha256 mismatch (manifest {sh['sha256'][:12]}..., file {digest[:12]}...)")
            try:
                with h5py.File(f, "r") as h:
                    im = h["images"]
                    if im.dtype != np.uint8:
                        problems.append(f"{f}: images dtype {im.dtype}, expected uint8")
                    if im.shape != (sh["count"], res, res):
                        problems.append(f"{f}: images shape {im.shape}, expected {(sh['count'], res, res)}")
                    if sh.get("images_offset") is not None and image_block_offset(f) != sh["images_offset"]:
                        problems.append(f"{f}: images are not at byte {sh['images_offset']} as recorded")
                    for key in ("source", "case", "slice"):
                        if key not in h or len(h[key]) != sh["count"]:
                            problems.append(f"{f}: '{key}' missing or not {sh['count']} long")
            except Exception as e:
                problems.append(f"{f}: cannot be read as HDF5 ({type(e).__name__}: {e})")
            total += sh["count"]
        if total != s["count"]:
            problems.append(f"{split}: shards hold {total} images, manifest says {s['count']}")
    return problems


def info(dataset: str | os.PathLike, sheet: str | os.PathLike | None = None, per_split: int = 8,
         seed: int = 0) -> str:
    """A text summary; also writes a contact sheet PNG of random images per split."""
    from .reader import ShardReader

    d = Path(dataset)
    m = load_manifest(d)
    lines = [f"dataset    {d}", f"layout     {m['layout']}  (from {', '.join(m['sources'])})",
             f"resolution {m['resolution']}x{m['resolution']} uint8", f"created    {m['created']}"]
    for split, s in m["splits"].items():
        lines.append(f"{split:<10} {s['count']:>7} images in {len(s['shards'])} shard(s)")
    for k, v in m.get("ignored", {}).items():
        lines.append(f"ignored    {k}: {v}")
    for k, v in m.get("converted", {}).items():
        lines.append(f"converted  {k}: {v}")
    lines.append(f"skipped    {len(m['skipped'])} bad file(s)")
    if sheet is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        splits = list(m["splits"])
        fig, axes = plt.subplots(len(splits), per_split, figsize=(per_split * 1.2, len(splits) * 1.35),
                                 squeeze=False)
        for r, split in enumerate(splits):
            rd = ShardReader(d, split)
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(len(rd), size=min(per_split, len(rd)), replace=False))
            imgs = rd.read(idx)
            for c in range(per_split):
                ax = axes[r, c]
                ax.axis("off")
                if c < len(imgs):
                    ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=255)
                if c == 0:
                    ax.set_title(split, loc="left", fontsize=9)
        fig.tight_layout()
        with fsutil.atomic_path(sheet) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        lines.append(f"sheet      {sheet}")
    return "\n".join(lines)
