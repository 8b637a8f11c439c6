"""Image-quality metrics: the reference's max-SSIM, and the numbers that say more than it does.

SSIM here is tf.image.ssim's definition (11-tap Gaussian, sigma 1.5, k1 0.01, k2 0.03,
valid filtering, no sample-covariance correction), computed differently:
  - the 11x11 Gaussian is applied as an 11x1 then a 1x11 pass (22 taps, not 121),
    written as shifted adds that XLA fuses into one vectorised loop;
  - in the reference metric the generated batch is the same for all 50 real batches, so its
    local means and variances are filtered once; each pair then needs only E[xy].
"""
from __future__ import annotations

import functools

import numpy as np

from ..imaging import squeeze_channel, to_unit

FILTER_SIZE, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class MetricError(ValueError):
    pass


def gaussian_taps(size: int = FILTER_SIZE, sigma: float = SIGMA) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * x * x / (sigma * sigma))
    return (g / g.sum()).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _blur_fn():
    import tensorflow as tf

    taps = [float(t) for t in gaussian_taps()]
    n = len(taps)

    # Two compiled passes, not one: fused, XLA recomputes the vertical pass inside the
    # horizontal one (121 taps a pixel); apart, each pass is 11 taps over data in cache.
    @tf.function(jit_compile=True, reduce_retracing=True)
    def vertical(z):
        h = tf.shape(z)[-2]
        out = taps[0] * z[..., 0:h - n + 1, :]
        for i in range(1, n):
            out += taps[i] * z[..., i:h - n + 1 + i, :]
        return out

    @tf.function(jit_compile=True, reduce_retracing=True)
    def horizontal(z):
        w = tf.shape(z)[-1]
        out = taps[0] * z[..., 0:w - n + 1]
        for i in range(1, n):
            out += taps[i] * z[..., i:w - n + 1 + i]
        return out

    def blur(z):  # [..., H, W] -> [..., H-10, W-10]: valid filtering on the last two axes
        return horizontal(vertical(z))

    return blur


@functools.lru_cache(maxsize=None)
def _pair_fn(max_val: float):
    import tensorflow as tf

    blur = _blur_fn()
    c1, c2 = (K1 * max_val) ** 2, (K2 * max_val) ** 2

    @tf.function(jit_compile=True, reduce_retracing=True)
    def combine(mx, exx, my, eyy, exy):
        # Same algebra as tf.image.ssim's helper, so float32 rounding stays close to it.
        num0 = mx * my * 2.0
        den0 = mx * mx + my * my
        lum = (num0 + c1) / (den0 + c1)
        cs = (exy * 2.0 - num0 + c2) / (exx + eyy - den0 + c2)
        return tf.reduce_mean(lum * cs, axis=[-2, -1])

    @tf.function(reduce_retracing=True)
    def ssim_with(mx, exx, x, y):
        """SSIM of x[i] and y[i], given x's filtered mean and mean square (which callers reuse).

        The filtered maps come from one blur call each, outside the combining kernel: fused
        into it, XLA would recompute the 11 vertical taps for every horizontal one.
        """
        return combine(mx, exx, blur(y), blur(y * y), blur(x * y))

    return ssim_with


def _check_pair(x: np.ndarray, y: np.ndarray, max_val: float) -> None:
    if x.shape != y.shape:
        raise MetricError(f"SSIM needs images of one shape; got {x.shape} and {y.shape}")
    if x.ndim != 3:
        raise MetricError(f"SSIM takes [N, H, W] batches; got shape {x.shape}")
    if min(x.shape[1:]) < FILTER_SIZE:
        raise MetricError(f"images of {x.shape[1]}x{x.shape[2]} are smaller than the {FILTER_SIZE}-pixel window")
    if not max_val > 0:
        raise MetricError(f"max_val must be > 0, got {max_val}")


def _squeeze(a) -> np.ndarray:
    return squeeze_channel(np.asarray(a, dtype=np.float32))


def ssim(x, y, max_val: float = 2.0, chunk: int = 64) -> np.ndarray:
    """SSIM of x[i] with y[i] for every i: [N, H, W] (or [N, H, W, 1]) -> [N]."""
    x, y = _squeeze(x), _squeeze(y)
    _check_pair(x, y, max_val)
    blur, pair = _blur_fn(), _pair_fn(float(max_val))
    out = []
    for s in range(0, len(x), chunk):
        xs, ys = x[s:s + chunk], y[s:s + chunk]
        out.append(pair(blur(xs), blur(xs * xs), xs, ys).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def max_ssim_over_batches(generated, real_batches, max_val: float = 2.0) -> dict:
    """The reference's metric: generated[k] vs real_batches[b][k] for all b, k; the max of them all.

    generated: [16, H, W]; real_batches: [B, 16, H, W]. Returns max, argmax and all values.
    """
    g = _squeeze(generated)
    r = np.asarray(real_batches, dtype=np.float32)
    if r.ndim == 5 and r.shape[-1] == 1:
        r = r[..., 0]
    if r.ndim != 4 or r.shape[1:] != g.shape:
        raise MetricError(f"real batches of shape {r.shape} do not pair with a generated batch of {g.shape}")
    _check_pair(g, g, max_val)
    blur, pair = _blur_fn(), _pair_fn(float(max_val))
    mx, exx = blur(g), blur(g * g)  # the generated batch is filtered once for all 50 batches
    per_call = max(1, (1 << 20) // g.size)  # about 4 MiB of pixels a call: the passes stay in cache
    v = np.concatenate([pair(mx, exx, g, r[s:s + per_call]).numpy() for s in range(0, len(r), per_call)])
    b, k = np.unravel_index(int(np.argmax(v)), v.shape)
    return {"max": float(v[b, k]), "batch": int(b), "position": int(k), "values": v}


def ms_ssim_pairs(x, y, max_val: float = 2.0) -> np.ndarray:
    """MS-SSIM of x[i] with y[i], with as many of the 5 standard scales as the size allows."""
    import tensorflow as tf

    x, y = _squeeze(x), _squeeze(y)
    _check_pair(x, y, max_val)
    size = min(x.shape[1:])
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and size // (2 ** scales) >= FILTER_SIZE:
        scales += 1
    w = np.array(MS_SSIM_WEIGHTS[:scales])
    w = (w / w.sum()).tolist()
    out = []
    for s in range(0, len(x), 512):
        out.append(tf.image.ssim_multiscale(x[s:s + 512, ..., None], y[s:s + 512, ..., None], max_val,
                                            power_factors=w).numpy())
    return np.concatenate(out)


def pairwise_diversity(images, max_val: float = 2.0, seed: int = 0, max_pairs: int = 2016) -> float:
    """Mean MS-SSIM over distinct pairs of a set: near 1 means the set is near-identical (collapse)."""
    images = _squeeze(images)
    n = len(images)
    i, j = np.triu_indices(n, k=1)
    if len(i) > max_pairs:
        sel = np.random.default_rng(seed).choice(len(i), max_pairs, replace=False)
        i, j = i[sel], j[sel]
    return float(np.mean(ms_ssim_pairs(images[i], images[j], max_val)))


def nearest_neighbours(generated, reader, max_val: float = 2.0, candidates: int = 32, block: int = 2048,
                       search_res: int = 64) -> dict:
    """For each generated image, the training image with the highest SSIM to it.

    Every training image is compared by L2 distance at `search_res` (a cheap matmul); the
    `candidates` closest are then scored by full-resolution SSIM. With the whole set as
    candidates this is the exact nearest neighbour by SSIM.
    """
    from skimage.transform import resize_local_mean

    g = _squeeze(generated)
    n_real = len(reader)
    res = g.shape[1]

    def small(a):
        if res <= search_res:
            return a.reshape(len(a), -1)
        return np.stack([resize_local_mean(im, (search_res, search_res)) for im in a]).reshape(len(a), -1)

    gs = small(g).astype(np.float32)
    k = min(candidates, n_real)
    best_d = np.full((len(g), k), np.inf, np.float32)
    best_i = np.zeros((len(g), k), np.int64)
    g2 = (gs * gs).sum(1)[:, None]
    for s in range(0, n_real, block):
        idx = np.arange(s, min(s + block, n_real))
        rs = small(to_unit(reader.read(idx))).astype(np.float32)
        d = g2 - 2.0 * gs @ rs.T + (rs * rs).sum(1)[None, :]
        cat_d = np.concatenate([best_d, d], 1)
        cat_i = np.concatenate([best_i, np.broadcast_to(idx, d.shape)], 1)
        top = np.argpartition(cat_d, k - 1, axis=1)[:, :k]
        best_d = np.take_along_axis(cat_d, top, 1)
        best_i = np.take_along_axis(cat_i, top, 1)
    flat = best_i.reshape(-1)
    uniq, inv = np.unique(flat, return_inverse=True)
    reals = to_unit(reader.read(uniq))[inv]
    vals = ssim(np.repeat(g, k, axis=0), reals, max_val).reshape(len(g), k)
    j = np.argmax(vals, axis=1)
    nn_ssim = vals[np.arange(len(g)), j]
    return {"ssim": nn_ssim, "index": best_i[np.arange(len(g)), j], "candidates": k, "exact": k == n_real}


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (KID)."""
    d = f1.shape[1]
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
    m, n = len(f1), len(f2)
    kxx, kyy, kxy = k(f1, f1), k(f2, f2), k(f1, f2)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def fid_kid(weights_path: str, generated, real) -> dict:
    """FID and KID with a feature extractor loaded from a local Keras file. Never downloads."""
    import os

    import tensorflow as tf

    if not os.path.exists(weights_path):
        raise MetricError(f"{weights_path}: feature extractor not found (metrics.fid_weights)")
    net = tf.keras.models.load_model(weights_path, compile=False)
    shape = net.input_shape[1:]

    def feats(imgs):
        x = _squeeze(imgs)[..., None]
        x = tf.image.resize(x, shape[:2]) if tuple(x.shape[1:3]) != tuple(shape[:2]) else x
        if shape[-1] == 3:
            x = tf.repeat(x, 3, axis=-1)
        return np.asarray(net.predict(x, batch_size=32, verbose=0)).reshape(len(imgs), -1).astype(np.float64)

    fg, fr = feats(generated), feats(real)
    return {"fid": frechet_distance(fg, fr), "kid": kernel_inception_distance(fg, fr),
            "features": int(fg.shape[1]), "n_generated": len(fg), "n_real": len(fr)}


def summary(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
            "p95": float(np.percentile(v, 95))}


