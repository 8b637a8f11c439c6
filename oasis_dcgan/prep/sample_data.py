"""Sample brain data made offline, in the layouts OASIS users hold (see prep/layouts.py).

The real OASIS data cannot be downloaded here. nilearn's wheel ships the MNI ICBM152 T1
template, a real averaged brain; random smooth deformations, small affine changes and
intensity changes of it give subject-like variety. From those "subjects" this module writes
  - the preprocessed PNG release (keras_png_slices_*, seg folders, gapped case numbers), or
  - raw OASIS-1 subject folders with Analyze 7.5 .img/.hdr (or NIfTI) T88 volumes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config import DataConfig
from . import layouts
from .pixels import round_to_uint8, to_square, volume_slices

log = logging.getLogger(__name__)

OASIS_T88_SHAPE = (176, 208, 176)
MARKER = "SAMPLE-DATA.txt"  # preprocess records a source holding this as synthetic


def mark_synthetic(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("Synthetic brains made offline by oasis-dcgan sample-data from the MNI152 template "
                               "(warped, re-shaded subjects). Not OASIS data.\n")


def load_template() -> np.ndarray:
    """The MNI152 T1 template (1 mm, brain only) as float32 on 0..1, axes x, y, z (RAS)."""
    from nilearn.datasets import load_mni152_template

    return np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)


def _smooth_field(rng, shape, grid: int, amplitude: float) -> np.ndarray:
    from scipy.ndimage import zoom

    coarse = rng.normal(0.0, 1.0, size=(grid,) * len(shape)).astype(np.float32)
    f = zoom(coarse, [s / grid for s in shape], order=1)[tuple(slice(0, s) for s in shape)]
    return f * (amplitude / (np.abs(f).max() + 1e-6))


def make_subject(template: np.ndarray, rng: np.random.Generator, z_range: tuple[int, int] | None = None) -> np.ndarray:
    """One synthetic subject: the template warped, rescaled and re-shaded. Only z_range is computed."""
    from scipy.ndimage import map_coordinates

    sx, sy, sz = template.shape
    z0, z1 = z_range or (0, sz)
    shape = (sx, sy, z1 - z0)
    grid = np.meshgrid(np.arange(sx, dtype=np.float32), np.arange(sy, dtype=np.float32),
                       np.arange(z0, z1, dtype=np.float32), indexing="ij")
    centre = np.array([sx / 2, sy / 2, sz / 2], dtype=np.float32)
    scale = rng.uniform(0.9, 1.08, size=3).astype(np.float32)     # head size and shape
    theta = np.deg2rad(rng.uniform(-6, 6))                         # in-plane tilt
    c, s = np.cos(theta), np.sin(theta)
    x, y = grid[0] - centre[0], grid[1] - centre[1]
    coords = [
        (c * x - s * y) / scale[0] + centre[0] + _smooth_field(rng, shape, 5, 4.0),
        (s * x + c * y) / scale[1] + centre[1] + _smooth_field(rng, shape, 5, 4.0),
        (grid[2] - centre[2]) / scale[2] + centre[2] + _smooth_field(rng, shape, 5, 2.0),
    ]
    vol = map_coordinates(template, coords, order=1, mode="constant", cval=0.0)
    brain = vol > 0.02
    gamma = rng.uniform(0.75, 1.3)
    bias = 1.0 + _smooth_field(rng, shape, 3, 0.12)
    vol = np.where(brain, np.clip(vol, 0, None) ** gamma * bias, 0.0)
    vol += np.where(brain, rng.normal(0, 0.015, size=shape), 0.0)
    return np.clip(vol, 0, None).astype(np.float32)


def _case_numbers(rng, start: int, count: int, gap_every: int = 5) -> list[int]:
    """Increasing case numbers with occasional gaps, like the release's."""
    out, n = [], start
    while len(out) < count:
        if rng.random() < 1.0 / gap_every:
            n += int(rng.integers(1, 3))
        out.append(n)
        n += 1
    return out


def _segment(img: np.ndarray) -> np.ndarray:
    """A crude 4-class mask (background, CSF, grey, white) standing in for the seg release."""
    seg = np.zeros_like(img, dtype=np.uint8)
    brain = img > 0
    seg[brain & (img < 90)] = 85
    seg[brain & (img >= 90) & (img < 170)] = 170
    seg[brain & (img >= 170)] = 255
    return seg


def write_png_release(out: str | Path, cases=(24, 4, 4), slices: int = 32, resolution: int = 256,
                      rng_seed: int = 0, nested: bool = False) -> Path:
    """Write keras_png_slices_data/ as the OASIS PNG release is laid out. Returns its root."""
    import imageio.v3 as iio

    rng = np.random.default_rng(rng_seed)
    root = Path(out) / "keras_png_slices_data"
    if nested:
        root = root / "keras_png_slices_data"
    template = load_template()
    zs = np.flatnonzero((template > 0.02).any(axis=(0, 1)))
    zc = (zs[0] + zs[-1]) // 2
    slab = (max(0, zc - slices), min(template.shape[2], zc + slices))
    # The slices the raw layout would take from each volume, with the config's defaults otherwise.
    options = layouts.LAYOUTS[layouts.RAW].options(DataConfig(slices=slices))
    starts = {"train": 1, "validate": 402, "test": 441}
    for split, count in zip(("train", "validate", "test"), cases):
        img_dir, seg_dir = root / f"keras_png_slices_{split}", root / f"keras_png_slices_seg_{split}"
        img_dir.mkdir(parents=True, exist_ok=True)
        seg_dir.mkdir(parents=True, exist_ok=True)
        for case in _case_numbers(rng, starts[split], count):
            vol = make_subject(template, rng, slab)
            for k, (_, img) in enumerate(volume_slices(vol, options)):
                px = round_to_uint8(to_square(np.clip(img, 0, 255), resolution))
                iio.imwrite(img_dir / f"case_{case:03d}_slice_{k}.nii.png", px)
                iio.imwrite(seg_dir / f"seg_{case:03d}_slice_{k}.nii.png", _segment(px))
        log.info(f"[sample-data] {split}: {count} cases x {slices} slices -> {img_dir}")
    mark_synthetic(root)
    return root


def _save_volume(stem: Path, data: np.ndarray, fmt: str) -> None:
    """Save a RAS-ordered array as OASIS-1 does (Analyze 7.5), or as NIfTI in RAS or LIA order."""
    import nibabel as nib

    if fmt == "analyze":
        # Analyze has no orientation field; readers take its first axis as right to left
        # (radiological), so the array is stored mirrored.
        nib.save(nib.AnalyzeImage(np.ascontiguousarray(data[::-1]), None), str(stem) + ".img")
        return
    img = nib.Nifti1Image(data, np.eye(4))
    if fmt.endswith("-lia"):  # the voxel order FreeSurfer writes
        o = nib.orientations
        img = img.as_reoriented(o.ornt_transform(o.axcodes2ornt("RAS"), o.axcodes2ornt("LIA")))
    nib.save(img, str(stem) + (".nii.gz" if fmt.startswith("nifti-gz") else ".nii"))


def _t88_canvas(vol: np.ndarray) -> np.ndarray:
    """Crop/pad to OASIS T88's 176x208x176 grid around the centre, as OASIS's 16-bit intensities."""
    canvas = np.zeros(OASIS_T88_SHAPE, dtype=np.float32)
    src = [slice(max(0, (a - b) // 2), max(0, (a - b) // 2) + min(a, b)) for a, b in zip(vol.shape, canvas.shape)]
    dst = [slice(max(0, (b - a) // 2), max(0, (b - a) // 2) + min(a, b)) for a, b in zip(vol.shape, canvas.shape)]
    canvas[tuple(dst)] = vol[tuple(src)]
    return np.clip(canvas * 1200, 0, 32767).astype(np.int16)


def write_raw_release(out: str | Path, subjects: int = 6, rng_seed: int = 0, fmt: str = "analyze",
                      discs: int = 0, rescans: int = 0) -> Path:
    """Write OAS1_NNNN_MRk/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc volumes.

    fmt: analyze (as OASIS-1 ships), nifti, nifti-gz, or nifti-lia / nifti-gz-lia (LIA voxel
    order). `discs` > 0 deals the sessions into disc1/ ... discN/ as the release's tarballs
    unpack; the first `rescans` subjects also get an MR2 session, a second scan of the same brain.
    """
    rng = np.random.default_rng(rng_seed)
    root = Path(out)
    template = load_template()
    sessions = []
    for i, n in enumerate(_case_numbers(rng, 1, subjects)):
        vol = make_subject(template, rng)
        sessions.append((f"OAS1_{n:04d}_MR1", _t88_canvas(vol)))
        if i < rescans:  # the same brain again: new noise and a slightly different gain
            again = vol * rng.uniform(0.95, 1.05) + np.where(vol > 0, rng.normal(0, 0.01, vol.shape), 0)
            sessions.append((f"OAS1_{n:04d}_MR2", _t88_canvas(again.astype(np.float32))))
    for j, (name, data) in enumerate(sessions):
        base = root / f"disc{1 + j * discs // len(sessions)}" if discs else root
        d = base / name / "PROCESSED" / "MPRAGE" / "T88_111"
        d.mkdir(parents=True, exist_ok=True)
        (base / name / "RAW").mkdir(exist_ok=True)
        (base / name / "FSL_SEG").mkdir(exist_ok=True)
        _save_volume(d / f"{name}_mpr_n4_anon_111_t88_masked_gfc", data, fmt)
    mark_synthetic(root)
    log.info(f"[sample-data] {subjects} raw OASIS-1 subjects, {len(sessions)} sessions ({fmt}) -> {root}")
    return root


def _png(out, cases, rng_seed, **_) -> Path:
    return write_png_release(out, cases=tuple(cases), rng_seed=rng_seed)


def _raw(out, cases, rng_seed, fmt="analyze", discs=0, rescans=0) -> Path:
    return write_raw_release(out, subjects=sum(cases), rng_seed=rng_seed, fmt=fmt, discs=discs, rescans=rescans)


# The layouts `sample-data` writes, each from (out, cases per split, rng_seed, and the raw layout's fmt, discs,
# rescans).
WRITERS = {layouts.PNG: _png, layouts.RAW: _raw}
