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


def _window(slice_range: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in slice_range.split(":"))
    except ValueError:
        raise DataError(f"data.slice_range={slice_range!r}: expected 'a:b' in voxel indices") from None
    return a, b


def slice_rule(count: int, slice_range: str, spacing: int, min_brain: float) -> str:
    """The raw layout's slice choice in words, for the manifest."""
    window = (f"voxels {slice_range} of the RAS axial axis" if slice_range else
              f"the brain's axial extent, without end slices holding under {min_brain:g} of the fullest slice's brain")
    how = f"{count} slices {spacing} apart, centred" if spacing else f"{count} slices spread evenly end to end"
    return f"{how} in {window}"


def slices_per_volume(slices: int, slice_range: str) -> int:
    if slice_range:
        a, b = _window(slice_range)
        return min(slices, b - a)
    return slices


def choose_slices(area: np.ndarray, count: int, slice_range: str, spacing: int, min_brain: float) -> list[int]:
    """Which axial slices to take, given each slice's brain area (voxels).

    The window is `slice_range` or else the brain's axial extent, leaving out the near-empty
    slices at its top and bottom (less brain than `min_brain` times the fullest slice). In it,
    `count` slices spread evenly from end to end, as the PNG release's 32 a case span the
    brain; or, with `spacing`, `count` slices that far apart, centred in the window.
    """
    n = len(area)
    if slice_range:
        a, b = _window(slice_range)
        if a < 0 or b > n or a >= b:
            raise DataError(f"slice range {a}:{b} is outside the volume's {n} axial slices")
    else:
        full = np.flatnonzero(area >= min_brain * area.max()) if area.max() > 0 else []
        if not len(full):
            raise DataError("volume is empty (all zero)")
        a, b = int(full[0]), int(full[-1]) + 1
    span = b - a
    if spacing:
        need = (count - 1) * spacing + 1
        if need > span:
            raise DataError(f"{count} slices {spacing} apart span {need} slices; the window {a}:{b} has {span}")
        start = a + (span - need) // 2
        return list(range(start, start + need, spacing))
    if slice_range and count >= span:
        return list(range(a, b))
    if count > span:
        raise DataError(f"the brain spans {span} axial slices ({a}:{b}), fewer than the {count} asked for")
    # Steps of at least one slice: rounding keeps the indices distinct and in order.
    return [int(k) for k in np.rint(np.linspace(a, b - 1, count))]


def volume_slices(vol: np.ndarray, o: dict):
    """Axial slices of a brain volume in RAS order as float images on 0..255, oriented like the PNG release.

    `o` holds the raw layout's options (prep/layouts.py): the slices are chosen by `choose_slices`
    from the nonzero voxels (OASIS T88 volumes are brain-masked), and intensities are scaled per
    volume: the `percentile` of brain voxels maps to 255.
    """
    vol = np.asarray(vol, dtype=np.float32)
    if vol.ndim != 3:
        raise DataError(f"expected a 3D volume, got shape {vol.shape}")
    vol = np.nan_to_num(vol)
    nz = vol > 0
    chosen = choose_slices(nz.sum(axis=(0, 1)), o["slices"], o["slice_range"], o["slice_spacing"],
                           o["min_brain_fraction"])
    brain = vol[nz]
    hi = float(np.percentile(brain, o["percentile"])) if brain.size else 0.0
    scale = 255.0 / hi if hi > 0 else 0.0
    # RAS axes are x (left to right), y (posterior to anterior), z (inferior to superior);
    # rot90 puts anterior at the top, as the PNG release shows it.
    return [(k, np.rot90(vol[:, :, k]) * scale) for k in chosen]


def volume_problem(img, max_anisotropy: float) -> str | None:
    """Why a loaded volume cannot be sliced axially as it is, or None."""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        return f"wrong dimensionality: shape {shape}, expected a 3D volume"
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    if min(zooms) <= 0:
        return f"voxel sizes {zooms} in the header are not positive"
    if max(zooms) / min(zooms) > max_anisotropy:
        return (f"voxel sizes {' x '.join(f'{z:g}' for z in zooms)} mm are far from isotropic (ratio "
                f"{max(zooms) / min(zooms):.2f} > data.max_anisotropy {max_anisotropy:g}); resample it first")
    return None


def canonical_volume(path: str, max_anisotropy: float) -> np.ndarray:
    """The volume's voxels reordered to RAS, whatever order the file stores them in.

    Slicing the stored array's third axis is only axial when the file is RAS-like; FreeSurfer
    writes LIA, for one. The header's affine says which way each axis points.
    """
    import nibabel as nib

    img = nib.load(path)
    why = volume_problem(img, max_anisotropy)
    if why:
        raise DataError(f"{path}: {why}")
    if len(img.shape) == 4:
        img = img.slicer[..., 0]
    return nib.as_closest_canonical(img).get_fdata(dtype=np.float32)


def load_volume_slices(path: str, resolution: int, o: dict):
    """A volume file's chosen axial slices as [(slice index in RAS, uint8 [res, res])], `o` being
    the raw layout's options."""
    vol = canonical_volume(path, o["max_anisotropy"])
    return [(k, round_to_uint8(to_square(np.clip(img, 0, 255), resolution))) for k, img in volume_slices(vol, o)]
