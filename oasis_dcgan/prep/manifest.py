"""The packed dataset's format: shard names, manifest.json, its content hash, and verification.

A dataset directory holds `{split}-NNNNN-of-NNNNN.h5` shards (uint8 images [N, H, W] in
chunks of one image, allocated back to back, plus each image's source, case and slice) and
`manifest.json`, which lists every shard with its count, sha256 and the byte offset of its
image block. Training reads only what the manifest vouches for.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from .. import fsutil
from ..errors import DataError

FORMAT_VERSION = 1
SPLITS = ("train", "validate", "test")
SHARD_NAME = re.compile(r"^(train|validate|test)-(\d{5})-of-(\d{5})\.h5$")
MANIFEST = "manifest.json"



def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.h5"


def load_manifest(dataset: str | os.PathLike) -> dict:
    path = Path(dataset) / MANIFEST
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


def _shard_problems(path: Path, entry: dict, resolution: int, full: bool) -> list[str]:
    """What is wrong with one shard against its manifest entry.

    Always: present, its size, the HDF5 header, the images' dtype, shape and place, the
    metadata's lengths: milliseconds a shard, so cheap enough for every train start. `full`
    adds the sha256, which reads every byte.
    """
    if not path.is_file():
        return [f"{path}: missing"]
    size = path.stat().st_size
    if entry.get("bytes") is not None and size != entry["bytes"]:
        return [f"{path}: {size} bytes, the manifest recorded {entry['bytes']} (truncated or overwritten)"]
    problems = []
    if full:
        digest = fsutil.sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(f"{path}: sha256 mismatch (manifest {entry['sha256'][:12]}..., file {digest[:12]}...)")
    count = entry["count"]
    try:
        import h5py

        with h5py.File(path, "r") as h:
            im = h["images"]
            if im.dtype != np.uint8:
                problems.append(f"{path}: images dtype {im.dtype}, expected uint8")
            if im.shape != (count, resolution, resolution):
                problems.append(f"{path}: images shape {im.shape}, expected {(count, resolution, resolution)}")
            for key in ("source", "case", "slice"):
                if key not in h or len(h[key]) != count:
                    problems.append(f"{path}: '{key}' missing or not {count} long")
        if entry.get("images_offset") is not None and image_block_offset(path) != entry["images_offset"]:
            problems.append(f"{path}: images are not at byte {entry['images_offset']} as recorded")
    except Exception as e:  # h5py raises several types for damaged files
        problems.append(f"{path}: cannot be read as HDF5 ({type(e).__name__}: {e})")
    return problems


def verify(dataset: str | os.PathLike, full: bool = True) -> list[str]:
    """Check every shard against the manifest. Returns the problems found (empty: good).

    `full` re-hashes every shard; without it only sizes, headers, shapes and counts are read.
    """
    d = Path(dataset)
    m = load_manifest(d)
    problems = []
    for split, s in m["splits"].items():
        for sh in s["shards"]:
            problems += _shard_problems(d / sh["file"], sh, m["resolution"], full)
        total = sum(sh["count"] for sh in s["shards"])
        if total != s["count"]:
            problems.append(f"{split}: shards hold {total} images, manifest says {s['count']}")
    return problems


def check_before_training(dataset: str | os.PathLike, full: bool = False) -> None:
    """Raise a DataError naming every bad shard, so a damaged dataset stops a job before its first step."""
    problems = verify(dataset, full=full)
    if problems:
        how = "re-hashed (--verify-data)" if full else "checked (sizes, headers, shapes; --verify-data also hashes)"
        raise DataError(f"{dataset}: the dataset does not match its manifest.json ({how}):\n"
                        + "\n".join(f"  {x}" for x in problems)
                        + "\nRe-run preprocess to repack it, or point data.dataset at an intact copy.")
