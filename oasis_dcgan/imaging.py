"""Pixels and pictures shared by every stage: the uint8 <-> (-1, 1) mapping, grids, matplotlib.

Shards store uint8; the model sees x / 127.5 - 1 exactly as the seed project scales
its PNGs, and generated images come back to uint8 by the inverse. One module owns that
mapping and the one headless matplotlib set-up, so packing, training and the report agree.
"""
from __future__ import annotations

import math
import os

import numpy as np

from . import fsutil

HALF_RANGE = 127.5


def to_unit(images_uint8) -> np.ndarray:
    """uint8 -> float32 in (-1, 1): (x - 127.5) / 127.5."""
    return (np.asarray(images_uint8, dtype=np.float32) - HALF_RANGE) / HALF_RANGE


def to_unit_tf(images_uint8):
    """The same mapping inside a TensorFlow graph (the train step scales its own batches)."""
    import tensorflow as tf

    return (tf.cast(images_uint8, tf.float32) - HALF_RANGE) / HALF_RANGE


def to_uint8(images) -> np.ndarray:
    """(-1, 1) -> uint8, rounded and clipped."""
    return np.clip(np.rint(np.asarray(images, np.float32) * HALF_RANGE + HALF_RANGE), 0, 255).astype(np.uint8)


def squeeze_channel(images) -> np.ndarray:
    """[N, H, W, 1] -> [N, H, W]; anything else unchanged."""
    a = np.asarray(images)
    return a[..., 0] if a.ndim == 4 and a.shape[-1] == 1 else a


def tile(images, cols: int = 0, gap: int = 2, fill: float = -1.0) -> np.ndarray:
    """A batch [N, H, W] (or [N, H, W, 1]) as one image, `cols` wide (near-square by default)."""
    images = squeeze_channel(images)
    n, h, w = images.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    out = np.full((rows * (h + gap), cols * (w + gap)), fill, np.float32)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = r * (h + gap) + gap // 2, c * (w + gap) + gap // 2
        out[y:y + h, x:x + w] = im
    return out


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (batch nodes have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write a figure as PNG atomically, then free it."""
    with fsutil.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)


def grid_figure(images, title: str = ""):
    """A figure of a batch in (-1, 1) as one near-square grid, with an optional title.

    Made without pyplot's global state, so training can render it in a background thread.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4.3 if title else 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(tile(images), cmap="gray", vmin=-1, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=12)
    fig.tight_layout()
    return fig


def save_grid(images, path: str | os.PathLike) -> None:
    """The per-epoch grid PNG that training writes: the fixed-noise batch tiled at full
    resolution. Plain pixels, no figure: it is written while the next epoch trains, and a
    matplotlib figure held Python's lock for a tenth of a second a grid (postprocess draws the
    titled figures and the GIF from the epoch's .npy)."""
    import imageio.v3 as iio

    with fsutil.atomic_path(path) as tmp:
        iio.imwrite(tmp, to_uint8(tile(images)), extension=".png")
