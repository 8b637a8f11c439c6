"""Distances in a feature extractor's space: FID, KID, and k-NN precision and recall.

The extractor is a local Keras file (nothing is downloaded). Its features are pooled to one
vector an image: a spatial feature map is global-average-pooled, since ~10^5 unpooled
features would not fit a covariance in memory and are not what FID is defined on.
"""
from __future__ import annotations

import os

import numpy as np
from ..errors import FeatureError

FREE_INPUT_SIZE = 299   # what an extractor with a free input size is fed: InceptionV3's native size
PREPROCESSING = {       # images arrive on (-1, 1); what the extractor was trained to take
    "tanh": (1.0, 0.0),        # (-1, 1) as is: keras.applications.inception_v3.preprocess_input's range
    "unit": (0.5, 0.5),        # (0, 1)
    "0-255": (127.5, 127.5),   # raw pixel values
}



def load_extractor(path: str):
    """The Keras model at `path`, with its input size and channels. Never downloads."""
    import tensorflow as tf

    if not os.path.exists(path):
        raise FeatureError(f"{path}: feature extractor not found (metrics.fid_weights)")
    net = tf.keras.models.load_model(path, compile=False)
    shape = tuple(net.input_shape[1:])
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise FeatureError(f"{path}: input shape {shape}; expected (height, width, 1 or 3)")
    return net


def input_size(net) -> tuple[int, int]:
    """The extractor's own input size when fixed; FREE_INPUT_SIZE when it takes any size."""
    h, w = net.input_shape[1:3]
    return (h or FREE_INPUT_SIZE, w or FREE_INPUT_SIZE)


def features(net, images, preprocessing: str = "tanh", batch: int = 32) -> np.ndarray:
    """One pooled float64 feature vector per image ([N, H, W] or [N, H, W, 1] on (-1, 1))."""
    import tensorflow as tf

    if preprocessing not in PREPROCESSING:
        raise FeatureError(f"metrics.fid_preprocessing={preprocessing!r}: expected one of {', '.join(PREPROCESSING)}")
    scale, shift = PREPROCESSING[preprocessing]
    size, channels = input_size(net), net.input_shape[-1]
    imgs = np.asarray(images, np.float32).reshape(len(images), *np.shape(images)[1:3], 1)
    out = []
    for i in range(0, len(imgs), batch):
        x = imgs[i:i + batch]
        # Anti-aliased: a downsized image keeps its detail averaged in, not aliased into false texture.
        x = tf.image.resize(x, size, antialias=True) if x.shape[1:3] != size else tf.constant(x)
        x = tf.repeat(x, channels, axis=-1) * scale + shift
        f = np.asarray(net(x, training=False), np.float64)
        if f.ndim == 4:    # a spatial map: global average pool
            f = f.mean(axis=(1, 2))
        out.append(f.reshape(len(f), -1))
    return np.concatenate(out)


def frechet_distance(f1: np.ndarray, f2: np.ndarray, eps: float = 1e-6) -> dict:
    """FID between two feature sets, with the square root stabilised and its imaginary part checked.

    sqrtm of a product of singular covariances (fewer images than features) is ill-posed: an
    eps on the diagonals makes it well-defined, and an imaginary part beyond rounding means
    the figure cannot be trusted, which the result says rather than dropping it silently.
    """
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2)
    stabilised = not np.isfinite(covmean).all()
    if stabilised:
        offset = np.eye(len(s1)) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    imag = float(np.abs(np.imag(covmean)).max()) if np.iscomplexobj(covmean) else 0.0
    fid = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))
    return {"fid": fid, "sqrtm_imaginary_max": imag, "sqrtm_stabilised": stabilised,
            "trustworthy": imag < 1e-3 * max(1.0, abs(fid)),
            "rank_limited": min(len(f1), len(f2)) <= f1.shape[1]}


def _poly_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3."""
    d = a.shape[1]
    kaa, kbb, kab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
    m, n = len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def kid(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000, rng_seed: int = 0) -> dict:
    """KID as the mean and standard deviation of the MMD^2 over random subsets of both sets.

    Subsets as large as a whole set would all be that set, and their spread a meaningless 0:
    when a set holds no more than `subset_size` images, the subsets take half of it. Below 4
    images there is no spread to give, and the result says so (kid_std None).
    """
    rng = np.random.default_rng(rng_seed)
    n = min(len(f1), len(f2))
    size = subset_size if n > subset_size else n // 2
    if size < 2:
        return {"kid_mean": _poly_mmd2(f1, f2), "kid_std": None, "subsets": 1, "subset_size": n,
                "kid_spread": "none: too few images for subsets"}
    vals = [_poly_mmd2(f1[rng.choice(len(f1), size, replace=False)], f2[rng.choice(len(f2), size, replace=False)])
            for _ in range(subsets)]
    return {"kid_mean": float(np.mean(vals)), "kid_std": float(np.std(vals)), "subsets": subsets,
            "subset_size": size}


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0))


def _row_blocks(n: int, other: int, budget: int = 1 << 24):
    """Row ranges of an n x other distance matrix, about 128 MiB of float64 each, never the whole matrix."""
    step = max(1, budget // max(other, 1))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def _kth_neighbour_radius(f: np.ndarray, k: int) -> np.ndarray:
    """Each point's distance to its k-th nearest other point of the same set (position 0 is itself)."""
    return np.concatenate([np.partition(_distances(f[b], f), k, axis=1)[:, k] for b in _row_blocks(len(f), len(f))])


def _inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Whether each point lies in any ball (centre, radius)."""
    return np.concatenate([(_distances(points[b], centres) <= radii[None, :]).any(axis=1)
                           for b in _row_blocks(len(points), len(centres))])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict:
    """Improved precision and recall (k-NN manifolds in feature space), on sets of equal size.

    Precision: the share of generated images inside the real set's manifold (a ball around
    each real feature reaching its k-th neighbour): fidelity. Recall: the share of real images
    inside the generated set's manifold: how much of the real variety the generator covers.
    A larger generated set has a denser manifold and inflates recall, so the sizes must match.
    """
    if len(real) != len(fake):
        raise FeatureError(f"precision/recall compares sets of one size; got {len(real)} real and {len(fake)} "
                           "generated")
    if len(real) <= k:
        raise FeatureError(f"precision/recall with k={k} needs more than {k} images in each set")
    precision = float(_inside(fake, real, _kth_neighbour_radius(real, k)).mean())
    recall = float(_inside(real, fake, _kth_neighbour_radius(fake, k)).mean())
    return {"precision": precision, "recall": recall, "k": k}
