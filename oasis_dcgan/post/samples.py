"""Images from a trained generator: for the report's checks and for `oasis-dcgan generate`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import fsutil
from ..imaging import to_uint8
from ..training import model


def generate(generator: str | os.PathLike, n: int, rng_seed: int) -> np.ndarray | None:
    """n seeded images [N, H, W] in (-1, 1) from a saved generator; None when there is none (yet)."""
    path = Path(generator)
    if not path.is_file():
        return None
    return model.generate(model.load_generator(path), n, rng_seed)


def write_pngs(images: np.ndarray, out: str | os.PathLike) -> list[Path]:
    """One 8-bit PNG per image, sample_00000.png onwards, each written atomically."""
    import imageio.v3 as iio

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, px in enumerate(to_uint8(images)):
        path = out / f"sample_{i:05d}.png"
        with fsutil.atomic_path(path) as tmp:
            iio.imwrite(tmp, px, extension=".png")
        paths.append(path)
    return paths
