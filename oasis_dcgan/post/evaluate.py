"""`oasis-dcgan evaluate IMAGES DATASET --out DIR`: the report's checks, anchors and verdicts for
any set of images, so another generator's samples, or real images, stand on the same footing as
a run's. Writes DIR/metrics.json (the keys a run's report/metrics.json has for its checks) and a
short DIR/report.md.
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
from ..prep.manifest import DataError, load_manifest
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


def evaluate(images: str | os.PathLike, dataset: str | os.PathLike, out: str | os.PathLike, m: MetricsConfig) -> dict:
    """Judge the images against the dataset; write DIR/metrics.json and DIR/report.md; return the metrics."""
    t0 = time.perf_counter()
    manifest = load_manifest(dataset)
    x = load_images(images, int(manifest["resolution"]))
    if m.split not in manifest["splits"]:
        raise DataError(f"{dataset}: no '{m.split}' split to compare with (metrics.split)")
    ctx = checks.Context(x, str(images), str(dataset), m)
    results = {**checks.run_all(ctx), "images": str(images), "dataset": str(dataset), "n_images": len(x)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(out / METRICS_FILE, results)
    doc = Document("Evaluation")
    doc.lines([["Images: ", Code(str(images)), f" ({len(x)})"], ["Against: ", Code(str(dataset))]])
    checks.add_section(doc, results, [])
    fsutil.write_text(out / REPORT_FILE, doc.markdown())
    log.info(f"[evaluate] {out / METRICS_FILE} and {out / REPORT_FILE} in {time.perf_counter() - t0:.1f} s")
    return results
