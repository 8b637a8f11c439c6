"""`oasis-dcgan evaluate IMAGES DATASET --out DIR`: the report's checks, anchors and verdicts for
any set of images, so another generator's samples, or real images, stand on the same footing as
a run's. Writes DIR/metrics.json (the keys a run's report/metrics.json has for its checks) and a
short DIR/report.md.

Real slices come with their subjects: a packed dataset and one of its splits (`--split`), an .npz
with a `cases` array beside `images`, or a case-id file (`--cases`, one id a line). Their
intervals then resample subjects, not slices, and a held-out subject among them leaves every
held-out pool it would otherwise be compared with.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from .. import fsutil, rundir
from ..config import MetricsConfig
from ..imaging import to_unit
from ..prep.manifest import MANIFEST, DataError, load_manifest
from ..prep.reader import ShardReader
from . import checks
from .document import Code, Document
from ..errors import ImagesError

log = logging.getLogger(__name__)

# The names a run's report gives the same files.
METRICS_FILE, REPORT_FILE = rundir.REPORT_METRICS, rundir.REPORT_MD



def _as_unit(a: np.ndarray, where: str) -> np.ndarray:
    """uint8 pixels, or floats on (-1, 1), as float32 on (-1, 1)."""
    if a.dtype == np.uint8:
        return to_unit(a)
    if not np.issubdtype(a.dtype, np.floating):
        raise ImagesError(f"{where}: images of dtype {a.dtype}; expected uint8 pixels or floats on (-1, 1)")
    if not np.isfinite(a).all():
        raise ImagesError(f"{where}: the images hold NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
        raise ImagesError(f"{where}: float images range over [{lo:.3g}, {hi:.3g}]; expected (-1, 1) "
                          "(or give uint8 pixels)")
    return np.clip(a, -1.0, 1.0).astype(np.float32)


def _from_array_file(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ImagesError(f"{path}: not a readable .npy/.npz array ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if not data.files:
                raise ImagesError(f"{path}: the .npz archive holds no array")
            name = "images" if "images" in data.files else data.files[0]
            return np.asarray(data[name])
    return np.asarray(data)


def _from_png_folder(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    files = sorted(path.glob("*.png"))
    if not files:
        raise ImagesError(f"{path}: no .png files in the folder")
    images = []
    for f in files:
        try:
            px = np.asarray(iio.imread(f))
        except Exception as e:   # imageio raises several kinds for a file that is not an image
            raise ImagesError(f"{f}: not a readable PNG ({e})") from None
        if px.ndim == 3:   # an RGB(A) PNG of a grey image: its first channel
            px = px[..., 0]
        if px.dtype != np.uint8:
            raise ImagesError(f"{f}: {px.dtype} pixels; expected 8-bit greyscale")
        if images and px.shape != images[0].shape:
            raise ImagesError(f"{f}: {px.shape[1]}x{px.shape[0]} pixels, unlike {files[0].name}'s "
                              f"{images[0].shape[1]}x{images[0].shape[0]}")
        images.append(px)
    return np.stack(images)


def load_images(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """[N, resolution, resolution] on (-1, 1) from a .npy/.npz array or a folder of PNGs."""
    path = Path(path)
    if path.is_dir():
        a = _from_png_folder(path)
    elif path.suffix in (".npy", ".npz") and path.is_file():
        a = _from_array_file(path)
    elif not path.exists():
        raise ImagesError(f"{path}: no such file or folder")
    else:
        raise ImagesError(f"{path}: expected a .npy or .npz array, or a folder of PNGs")
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 3 or a.shape[1:] != (resolution, resolution):
        raise ImagesError(f"{path}: images of shape {a.shape}; the dataset's are [N, {resolution}, {resolution}]")
    if len(a) < 2:
        raise ImagesError(f"{path}: {len(a)} image(s); the checks need at least 2")
    return _as_unit(a, str(path))


def _case_file(path: Path, n: int) -> np.ndarray:
    """One case id per image: a text file of one id a line, or a .npy array."""
    try:
        ids = np.load(path, allow_pickle=False) if path.suffix == ".npy" else \
            np.array([line.strip() for line in path.read_text().splitlines() if line.strip()])
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ImagesError(f"{path}: not a readable case-id file ({e})") from None
    if ids.ndim != 1 or len(ids) != n:
        raise ImagesError(f"{path}: {len(ids) if ids.ndim == 1 else ids.shape} case ids for {n} images; one a line, "
                          "one per image")
    return ids.astype(str)


def _from_dataset(path: Path, split: str, dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    """A packed dataset's split, with its cases named as the checks name this dataset's ("split/case")."""
    splits = load_manifest(path)["splits"]
    if split not in splits:
        raise ImagesError(f"{path}: no '{split}' split (it has {', '.join(splits)})")
    reader = ShardReader(path, split)
    idx = np.arange(len(reader))
    cases = checks.case_ids(split, reader, idx)
    if path.resolve() != Path(dataset).resolve():   # another dataset's subjects are no one's here
        cases = np.array([f"{path}:{c}" for c in cases])
    return reader.read(idx), cases


def load_judged(images: str | os.PathLike, dataset: str | os.PathLike, resolution: int, split: str | None = None,
                cases: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The images on (-1, 1), and their subjects when they are known."""
    path = Path(images)
    if (path / MANIFEST).is_file():
        if not split:
            raise ImagesError(f"{path}: a packed dataset; say which split to judge (--split)")
        pixels, ids = _from_dataset(path, split, Path(dataset))
        if pixels.shape[1:] != (resolution, resolution):
            raise ImagesError(f"{path}: images of {pixels.shape[1:]}; the dataset's are {resolution}x{resolution}")
        return _as_unit(pixels, str(path)), ids
    if split:
        raise ImagesError(f"{path}: --split reads a packed dataset, and this is not one (no {MANIFEST})")
    x = load_images(path, resolution)
    if cases:
        return x, _case_file(Path(cases), len(x))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "cases" in data.files:
                ids = np.asarray(data["cases"]).astype(str)
                if ids.shape != (len(x),):
                    raise ImagesError(f"{path}: 'cases' holds {ids.shape} ids for {len(x)} images")
                return x, ids
    return x, None


def evaluate(images: str | os.PathLike, dataset: str | os.PathLike, out: str | os.PathLike, m: MetricsConfig,
             split: str | None = None, cases: str | os.PathLike | None = None) -> dict:
    """Judge the images against the dataset; write DIR/metrics.json and DIR/report.md; return the metrics."""
    t0 = time.perf_counter()
    manifest = load_manifest(dataset)
    x, ids = load_judged(images, dataset, int(manifest["resolution"]), split, cases)
    if m.split not in manifest["splits"]:
        raise DataError(f"{dataset}: no '{m.split}' split to compare with (metrics.split)")
    ctx = checks.Context(x, str(images), str(dataset), m, cases=ids)
    results = {**checks.run_all(ctx), "images": str(images), "dataset": str(dataset), "n_images": len(x),
               "resampled": "by case" if ids is not None else "by image"}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(out / METRICS_FILE, results)
    doc = Document("Evaluation")
    doc.lines([["Images: ", Code(str(images)), f" ({len(x)}, "
                + (f"real slices of {len(np.unique(ids))} subjects, resampled by subject)" if ids is not None
                   else "resampled by image)")], ["Against: ", Code(str(dataset))]])
    checks.add_section(doc, results, [])
    fsutil.write_text(out / REPORT_FILE, doc.markdown())
    log.info(f"[evaluate] {out / METRICS_FILE} and {out / REPORT_FILE} in {time.perf_counter() - t0:.1f} s")
    return results
