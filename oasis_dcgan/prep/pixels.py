"""From a file on disk to the uint8 square the shards store: decode, scale, slice, resample."""
from __future__ import annotations

import numpy as np

from .manifest import DataError


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


def round_to_uint8(a: np.ndarray) -> np.ndarray:
    """Values already on 0..255 (float) to uint8, rounded and clipped."""
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
    return round_to_uint8(to_square(img, resolution)), note


def slices_per_volume(slices: int, slice_range: str) -> int:
    if slice_range:
        a, b = (int(x) for x in slice_range.split(":"))
        return b - a
    return slices


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
    """A volume file's chosen axial slices as [(slice index, uint8 [res, res])]."""
    import nibabel as nib

    vol = nib.load(path).get_fdata(dtype=np.float32)
    return [(k, round_to_uint8(to_square(np.clip(img, 0, 255), resolution)))
            for k, img in volume_slices(vol, slices, slice_range, percentile)]
