"""Pack a source into verified HDF5 shards, in three steps so the work can run as a Slurm array.

  start()      scan + header-level validation of every input (plan()), nothing written if any is
               bad; then the plan is saved and the dataset directory locked for this packing
  pack_task()  array task i of n writes shards i, i+n, i+2n, ... (temp file, fsync, rename)
  seal()       re-hash every shard against its task's record, publish manifest.json, unlock

`preprocess()` is the one way to run them: the tasks in this process, or as an array job
through the runner launch/ hands it; a plain sbatch array (slurm/preprocess.sbatch) runs the
same three steps, one command each. A shard whose inputs did not change since it was written is
kept, so a rerun after a kill finishes only what is missing.
"""
from __future__ import annotations

import logging
import dataclasses
import hashlib
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__, claimfile, fsutil
from ..config import DataConfig
from . import datalock, layouts
from .manifest import FORMAT_VERSION, MANIFEST, SHARD_NAME, SPLITS, DataError, image_block_offset, shard_name

log = logging.getLogger(__name__)

PLAN_FILE = ".plan.json"
TASK_DIR = ".tasks"


@dataclass
class Plan:
    layout: str
    source: str
    resolution: int
    units: list = field(default_factory=list)         # [layouts.Unit]
    shards: dict = field(default_factory=dict)        # split -> [[unit indices], ...]
    skipped: list = field(default_factory=list)       # [{"path", "reason"}]
    ignored: dict = field(default_factory=dict)       # what was left out on purpose, counted
    split_assignment: dict | None = None              # subject -> split (raw layout)
    summary: dict = field(default_factory=dict)       # per split: cases, or sessions and subjects
    options: dict = field(default_factory=dict)       # slicing/scaling settings that shape the pixels
    token: str = ""                                   # the packing that holds the directory (datalock)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["units"] = [dataclasses.asdict(u) for u in self.units]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        d = dict(d)
        d["units"] = [layouts.Unit(**u) for u in d["units"]]
        return cls(**d)

    def shard_list(self):
        """[(split, index, total, unit indices)] in a fixed order; array task i takes every n-th."""
        out = []
        for split in SPLITS:
            groups = self.shards.get(split, [])
            out += [(split, i, len(groups), g) for i, g in enumerate(groups)]
        return out


# --------------------------------------------------------------------------- plan

def _drop_bad_units(p: Plan, skip_bad: bool, root: Path) -> None:
    """Check every input's header in parallel; fail naming each bad file, or record and skip them."""
    check = layouts.LAYOUTS[p.layout].check
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        reasons = list(pool.map(lambda path: check(path, p.options), [u.path for u in p.units]))
    p.skipped += [{"path": u.path, "reason": r} for u, r in zip(p.units, reasons) if r]
    p.units = [u for u, r in zip(p.units, reasons) if not r]
    if p.skipped and not skip_bad:
        lines = "\n".join(f"  {s['path']}: {s['reason']}" for s in p.skipped)
        raise DataError(f"{len(p.skipped)} bad input file(s) under {root}; nothing was written. "
                        f"Fix or remove them, or pass --skip-bad to record and skip them:\n{lines}")
    if not any(u.split == "train" for u in p.units):
        raise DataError(f"{root}: no usable training images found (layout {p.layout})")


def plan(src: str | os.PathLike, data: DataConfig) -> Plan:
    """Scan and validate the source as the config's data section says. Raises DataError naming
    every bad file unless data.skip_bad."""
    src = Path(src).expanduser().resolve()
    detected, root = layouts.detect_layout(src)
    if data.layout != layouts.AUTO_LAYOUT and data.layout != detected:
        detected, root = data.layout, src
    layout = layouts.LAYOUTS[detected]
    scan = layout.scan(root, data)
    p = Plan(layout=detected, source=str(root), resolution=data.resolution, units=scan.units, skipped=scan.skipped,
             ignored=scan.ignored, split_assignment=scan.split_assignment, summary=scan.summary,
             options=layout.options(data))
    _drop_bad_units(p, data.skip_bad, root)
    units_per_shard = max(1, data.shard_size // layout.images_per_unit(data))
    for split in SPLITS:
        idx = [i for i, u in enumerate(p.units) if u.split == split]
        if idx:
            p.shards[split] = [idx[i:i + units_per_shard] for i in range(0, len(idx), units_per_shard)]
    return p


def start(src: str | os.PathLike, out: str | os.PathLike, data: DataConfig, token: str = "",
          queued: bool = False, liveness: claimfile.Liveness = datalock.BY_AGE) -> Plan:
    """Lock `out` for a packing and save its plan. `token` names a packing whose tasks start on
    their own (a plain sbatch array): the first to arrive plans, the others use its plan.
    `queued`: the tasks are jobs, which may start long after this process is gone."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fsutil.io_failure(f"{out}: cannot create the dataset directory ({fsutil.io_reason(e)})", e,
                                DataError) from e
    shared = bool(token)
    token = token or datalock.new_token()
    datalock.take(out, token, queued, liveness)
    try:
        if shared and (out / PLAN_FILE).is_file() and load_plan(out).token == token:
            return load_plan(out)
        if (out / MANIFEST).is_file() and (runs := datalock.live_readers(out, liveness)):
            raise DataError(f"{out}: live run(s) train on this dataset: {'; '.join(runs)}. Packing into it would "
                            "change their data under them; nothing was written. Set data.dataset to a new "
                            "directory to pack a new version beside it, or wait for them to end.")
        p = plan(src, data)
        p.token = token
        save_plan(p, out)
    except BaseException:
        datalock.release(out, token)
        raise
    return p


def tasks_for(p: Plan, wanted: int) -> int:
    """Array tasks worth starting: never more than there are shards."""
    return max(1, min(wanted, len(p.shard_list())))


def save_plan(p: Plan, out: str | os.PathLike) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fsutil.write_json(out / PLAN_FILE, p.to_dict())
    except OSError as e:
        raise fsutil.io_failure(f"{out / PLAN_FILE}: cannot write the packing plan ({fsutil.io_reason(e)}); "
                                "no shard was written by this attempt.", e, DataError) from e
    return out / PLAN_FILE


def load_plan(out: str | os.PathLike) -> Plan:
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        raise DataError(f"{path}: no packing plan; run the plan step (oasis-dcgan preprocess) first")
    return Plan.from_dict(fsutil.read_json(path))


# --------------------------------------------------------------------------- pack

def _inputs_hash(p: Plan, units: list) -> str:
    """What a shard's bytes depend on: inputs (path, size, mtime) and the pixel settings."""
    h = hashlib.sha256()
    h.update(json.dumps([FORMAT_VERSION, p.layout, p.resolution, p.options], sort_keys=True).encode())
    for u in units:
        st = os.stat(u.path)
        h.update(f"{u.path}\0{u.case}\0{u.slice_index}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass
class _ShardContent:
    images: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    cases: list = field(default_factory=list)
    slices: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    def add(self, image, source: str, case: str, slice_index: int) -> None:
        self.images.append(image)
        self.sources.append(source)
        self.cases.append(case)
        self.slices.append(slice_index)


def _read_units(p: Plan, units: list) -> _ShardContent:
    """Decode a shard's inputs; a file that fails is recorded, not raised."""
    content, read = _ShardContent(), layouts.LAYOUTS[p.layout].read
    for u in units:
        try:
            images, note = read(u, p.resolution, p.options)
            for k, img in images:
                content.add(img, u.path, u.case, k)
            if note:
                content.notes[note] = content.notes.get(note, 0) + 1
        except Exception as e:
            content.skipped.append({"path": u.path, "reason": f"decode failed ({type(e).__name__}: {e})"})
    return content


def _write_shard(dest: Path, split: str, c: _ShardContent, resolution: int) -> int | None:
    """Write one shard atomically; returns the byte offset of its image block (see manifest.py).

    HDF5 builds the file in memory and the suite writes its bytes: a full disk is then an
    OSError of our own write, and never leaves the HDF5 library holding a half-closed file
    (whose later clean-up crashed the process)."""
    image = io.BytesIO()
    _build_shard(image, split, c, resolution)
    fsutil.write_bytes(dest, image.getbuffer())
    return image_block_offset(image)


def _build_shard(fileobj, split: str, c: _ShardContent, resolution: int) -> None:
    import h5py

    # track_times=False and a fixed libver make the bytes a function of the content
    # alone, so a rerun reproduces a shard exactly and its sha256 can vouch for it.
    with h5py.File(fileobj, "w", libver=("v110", "v110"), track_order=False) as f:
        n = len(c.images)
        arr = np.stack(c.images) if n else np.zeros((0, resolution, resolution), np.uint8)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # chunks in one run, in index order
        ds = f.create_dataset("images", shape=arr.shape, dtype=np.uint8, track_times=False,
                              chunks=(1, resolution, resolution) if n else None, dcpl=dcpl if n else None)
        if n:
            ds[...] = arr
        str_t = h5py.string_dtype("utf-8")
        f.create_dataset("source", data=np.array(c.sources, dtype=object), dtype=str_t, track_times=False)
        f.create_dataset("case", data=np.array(c.cases, dtype=object), dtype=str_t, track_times=False)
        f.create_dataset("slice", data=np.asarray(c.slices, dtype=np.int32), track_times=False)
        f.attrs["split"] = split
        f.attrs["resolution"] = resolution
        f.attrs["format_version"] = FORMAT_VERSION


def _slices_by_case(c: _ShardContent) -> dict:
    """case -> the axial slice indices (RAS) taken from its volume."""
    out: dict = {}
    for case, k in zip(c.cases, c.slices):
        out.setdefault(case, []).append(int(k))
    return out


def _pack_shard(out: Path, p: Plan, name: str, split: str, units: list) -> int | None:
    """Write one shard and its task record, unless an identical one is there. Returns images written."""
    dest, record = out / name, out / TASK_DIR / (name + ".json")
    # This task alone writes this shard, so temps under its name are a killed attempt's.
    fsutil.remove_stale_temps(out, name)
    fsutil.remove_stale_temps(out / TASK_DIR, name)
    inputs = _inputs_hash(p, units)
    if dest.exists() and record.exists():
        rec = fsutil.read_json(record)
        if rec.get("inputs_hash") == inputs and rec.get("sha256") == fsutil.sha256_file(dest):
            return None
    c = _read_units(p, units)
    if c.skipped and not p.options.get("skip_bad"):
        lines = "\n".join(f"  {s['path']}: {s['reason']}" for s in c.skipped)
        raise DataError(f"shard {name}: {len(c.skipped)} file(s) failed to decode; shard not written:\n{lines}")
    slices = _slices_by_case(c) if layouts.LAYOUTS[p.layout].volumes else {}
    try:
        offset = _write_shard(dest, split, c, p.resolution)
        fsutil.write_json(record, {"file": name, "count": len(c.images), "sha256": fsutil.sha256_file(dest),
                                   "images_offset": offset, "inputs_hash": inputs, "skipped": c.skipped,
                                   "notes": c.notes, "volume_slices": slices})
    except OSError as e:  # a full disk, a quota, a read-only mount: say so in one line
        # The shard is written whole or not at all, so whatever is at dest is complete: never
        # remove it (it may be another writer's, or the previous one). A shard whose record is
        # missing or differs is rewritten by the rerun.
        raise fsutil.io_failure(f"{dest}: cannot write the shard ({fsutil.io_reason(e)}). Every shard already in "
                                f"{out} is complete and kept; its temp file was removed. Free space and run "
                                "preprocess again: it writes only the missing shards.", e, DataError) from e
    return len(c.images)


def _plan_of(out: Path, token: str) -> Plan:
    """The plan of the packing `token` ("": whichever is saved), which must still hold the lock."""
    p = load_plan(out)
    if token and p.token != token:
        raise DataError(f"{out}: packing {token} was replaced by packing {p.token}; it writes nothing")
    datalock.check(out, p.token)
    return p


def pack_task(out: str | os.PathLike, task: int, ntasks: int, token: str = "") -> dict:
    """Write this task's shards of the packing `token`. A shard already on disk with the same
    inputs and hash is kept."""
    out = Path(out)
    p = _plan_of(out, token)
    if not 0 <= task < ntasks:
        raise DataError(f"task {task} of {ntasks}: tasks are numbered 0 to {ntasks - 1}")
    (out / TASK_DIR).mkdir(exist_ok=True)
    written = kept = images = 0
    t0 = time.perf_counter()
    for j, (split, i, total, idx) in enumerate(p.shard_list()):
        if j % ntasks != task:
            continue
        datalock.check(out, p.token)  # before each shard: another packing may have taken over
        name = shard_name(split, i, total)
        n = _pack_shard(out, p, name, split, [p.units[k] for k in idx])
        if n is None:
            kept += 1
            continue
        written += 1
        images += n
        log.info(f"[preprocess task {task}/{ntasks}] wrote {name}: {n} images")
    return {"task": task, "written": written, "kept": kept, "images": images, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- seal

def _collect_records(out: Path, p: Plan) -> tuple[dict, list, dict, dict]:
    """Each planned shard checked against its task record: (splits, skipped, notes, volume slices)."""
    splits, skipped, notes, volume_slices, problems = {}, list(p.skipped), {}, {}, []
    for split, i, total, _ in p.shard_list():
        name = shard_name(split, i, total)
        record = out / TASK_DIR / (name + ".json")
        if not (out / name).exists() or not record.exists():
            problems.append(f"{name}: missing (its array task did not finish)")
            continue
        rec = fsutil.read_json(record)
        digest = fsutil.sha256_file(out / name)
        if digest != rec["sha256"]:
            problems.append(f"{name}: sha256 {digest[:12]}... differs from the one its task recorded")
            continue
        s = splits.setdefault(split, {"count": 0, "shards": []})
        s["count"] += rec["count"]
        s["shards"].append({"file": name, "count": rec["count"], "sha256": digest,
                            "bytes": (out / name).stat().st_size, "images_offset": rec.get("images_offset")})
        skipped += rec.get("skipped", [])
        for k, v in rec.get("notes", {}).items():
            notes[k] = notes.get(k, 0) + v
        volume_slices.update(rec.get("volume_slices", {}))
    if problems:
        raise DataError(f"{out}: cannot seal the dataset:\n" + "\n".join(f"  {x}" for x in problems))
    return splits, skipped, notes, volume_slices


def _origin(source: Path) -> str:
    """Sample brains or the user's data: the report must not set one beside the seed's OASIS figure as the other."""
    from .sample_data import MARKER

    if any((d / MARKER).is_file() for d in (source, *list(source.parents)[:2])):
        return "sample brains (synthetic, made offline by oasis-dcgan sample-data; not OASIS)"
    return "as given (not made by sample-data)"


def seal(out: str | os.PathLike, token: str = "") -> dict:
    """Check every planned shard of the packing `token` against its task record, publish
    manifest.json and unlock."""
    out = Path(out)
    p = _plan_of(out, token)
    splits, skipped, notes, volume_slices = _collect_records(out, p)
    fsutil.remove_stale_temps(out)  # every task has finished: anything left is a killed attempt's
    fsutil.remove_stale_temps(out / TASK_DIR)
    planned = {shard_name(split, i, total) for split, i, total, _ in p.shard_list()}
    for f in out.glob("*.h5"):  # shards of an earlier, different plan would confuse readers
        if SHARD_NAME.match(f.name) and f.name not in planned:
            f.unlink()
    manifest = {
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "layout": p.layout,
        "sources": [p.source],
        "origin": _origin(Path(p.source)),
        "resolution": p.resolution,
        "dtype": "uint8",
        "scaling": "reader maps uint8 x to (x - 127.5) / 127.5, as the seed project does",
        "splits": splits,
        "counts": {k: v["count"] for k, v in splits.items()},
        "skipped": skipped,
        "ignored": p.ignored,
        "converted": notes,
        "split_assignment": p.split_assignment,
        "summary": p.summary,
        "volume_slices": volume_slices or None,  # raw layout: case -> axial slices taken (RAS voxel index)
        "options": p.options,
    }
    try:
        fsutil.write_json(out / MANIFEST, manifest)
    except OSError as e:
        raise fsutil.io_failure(f"{out / MANIFEST}: cannot write the manifest ({fsutil.io_reason(e)}); every shard "
                                "is complete and verified. Free space and run preprocess --seal.", e, DataError) from e
    datalock.release(out, p.token)
    return manifest


def preprocess(src: str | os.PathLike, out: str | os.PathLike, data: DataConfig, tasks: int = 1,
               run_tasks=None, liveness: claimfile.Liveness = datalock.BY_AGE) -> dict:
    """The one way to pack: plan and lock here, then `tasks` pack tasks (in this process, or as
    jobs through `run_tasks(out, n)`, which waits for them), then seal. Returns the manifest.
    `liveness` judges another packing's lock found there."""
    p = start(src, out, data, queued=run_tasks is not None, liveness=liveness)
    n = tasks_for(p, tasks)
    if run_tasks is not None:
        run_tasks(Path(out), n, p.token)
        return seal(out, p.token)
    try:
        for t in range(n):
            pack_task(out, t, n, p.token)
        return seal(out, p.token)
    finally:  # everything of this packing ran here: whatever happened, it is over
        datalock.release(Path(out), p.token)
