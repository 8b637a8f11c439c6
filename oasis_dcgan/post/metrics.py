"""Image-quality metrics: the seed's max-SSIM, and the numbers that say more than it does.

SSIM here is tf.image.ssim's definition (11-tap Gaussian, sigma 1.5, k1 0.01, k2 0.03,
valid filtering, no sample-covariance correction), computed differently:
  - the 11x11 Gaussian is applied as an 11x1 then a 1x11 pass (22 taps, not 121),
    written as shifted adds that XLA fuses into one vectorised loop;
  - in the seed metric the generated batch is the same for all 50 real batches, so its
    local means and variances are filtered once; each pair then needs only E[xy].
"""
from __future__ import annotations

import functools

import numpy as np

from ..imaging import squeeze_channel, to_unit
from ..errors import MetricError

FILTER_SIZE, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
BRAIN_LEVEL = -0.8   # on (-1, 1): a tenth of the range above black, where a slice's brain begins



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
def _combine_fn(max_val: float):
    import tensorflow as tf

    c1, c2 = (K1 * max_val) ** 2, (K2 * max_val) ** 2

    @tf.function(jit_compile=True, reduce_retracing=True)
    def combine(mx, exx, my, eyy, exy):
        return tf.reduce_mean(ssim_map(mx, exx, my, eyy, exy, c1, c2), axis=[-2, -1])

    return combine


def ssim_map(mx, exx, my, eyy, exy, c1, c2):
    """SSIM at every window from the filtered moments; tf.image.ssim's algebra, so float32 rounding stays close."""
    num0 = mx * my * 2.0
    den0 = mx * mx + my * my
    lum = (num0 + c1) / (den0 + c1)
    cs = (exy * 2.0 - num0 + c2) / (exx + eyy - den0 + c2)
    return lum * cs


@functools.lru_cache(maxsize=None)
def _pair_fn(max_val: float):
    import tensorflow as tf

    blur, combine = _blur_fn(), _combine_fn(max_val)

    @tf.function(reduce_retracing=True)
    def ssim_with(mx, exx, x, y):
        """SSIM of x[i] and y[i], given x's filtered mean and mean square (which callers reuse).

        The filtered maps come from one blur call each, outside the combining kernel: fused
        into it, XLA would recompute the 11 vertical taps for every horizontal one.
        """
        return combine(mx, exx, blur(y), blur(y * y), blur(x * y))

    return ssim_with


@functools.lru_cache(maxsize=None)
def _cross_fn(max_val: float):
    import tensorflow as tf

    blur, combine = _blur_fn(), _combine_fn(max_val)

    @tf.function(reduce_retracing=True)
    def cross(x, mx, exx, y, my, eyy):
        """SSIM of every x[i] with every y[j] -> [I, J]; both sides' means and mean squares given.

        Each pair then costs one filtering (of x*y), not three.
        """
        exy = blur(x[:, None] * y[None, :])
        return combine(mx[:, None], exx[:, None], my[None, :], eyy[None, :], exy)

    return cross


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
    """The seed's metric: generated[k] vs real_batches[b][k] for all b, k; the max of them all.

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
    scales = ms_ssim_scales(min(x.shape[1:]))
    w = np.array(MS_SSIM_WEIGHTS[:scales])
    w = (w / w.sum()).tolist()
    out = []
    for s in range(0, len(x), 512):
        out.append(tf.image.ssim_multiscale(x[s:s + 512, ..., None], y[s:s + 512, ..., None], max_val,
                                            power_factors=w).numpy())
    return np.concatenate(out)


def ms_ssim_scales(size: int) -> int:
    """How many of MS-SSIM's 5 scales an image of `size` pixels allows (each halving must keep the 11-pixel window)."""
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and size // (2 ** scales) >= FILTER_SIZE:
        scales += 1
    return scales


def pair_matrix(images, max_val: float = 2.0) -> np.ndarray:
    """MS-SSIM of every distinct pair of a set, as a symmetric [N, N] matrix with nan on the diagonal.

    Its mean is the set's diversity reading: far above a real set's, the images are too alike
    (collapse); far below, less alike than brains are (noise, inconsistent anatomy). The whole
    matrix is kept so that intervals can resample images (quality.py) without scoring pairs again.
    """
    x = _squeeze(images)
    n = len(x)
    i, j = np.triu_indices(n, k=1)
    mat = np.full((n, n), np.nan)
    mat[i, j] = mat[j, i] = ms_ssim_pairs(x[i], x[j], max_val)
    return mat


def pairwise_diversity(images, max_val: float = 2.0, rng_seed: int = 0, max_pairs: int = 2016) -> float:
    """Mean MS-SSIM over distinct pairs of a set: near 1 means the set is near-identical (collapse)."""
    images = _squeeze(images)
    n = len(images)
    i, j = np.triu_indices(n, k=1)
    if len(i) > max_pairs:
        sel = np.random.default_rng(rng_seed).choice(len(i), max_pairs, replace=False)
        i, j = i[sel], j[sel]
    return float(np.mean(ms_ssim_pairs(images[i], images[j], max_val)))


def cross_ssim(queries, images, max_val: float = 2.0, block: int = 64) -> np.ndarray:
    """SSIM of every query with every image: [Q, H, W] x [R, H, W] -> [Q, R], arrays in memory."""
    q, r = _squeeze(queries), _squeeze(images)
    _check_pair(q, q, max_val)
    if r.shape[1:] != q.shape[1:]:
        raise MetricError(f"images of {q.shape[1:]} cannot be compared with images of {r.shape[1:]}")
    blur, cross = _blur_fn(), _cross_fn(float(max_val))
    qm, qe = blur(q), blur(q * q)
    query_block = max(8, (1 << 22) // (block * q.shape[1] * q.shape[2]))   # about 16 MiB of products a call
    out = np.empty((len(q), len(r)), np.float32)
    for s in range(0, len(r), block):
        rs = r[s:s + block]
        rm, re_ = blur(rs), blur(rs * rs)
        for t in range(0, len(q), query_block):
            b = slice(t, t + query_block)
            out[b, s:s + block] = cross(q[b], qm[b], qe[b], rs, rm, re_).numpy()
    return out


def nearest_ssim(queries, reader, max_val: float = 2.0, real_block: int = 64, query_block: int = 8) -> dict:
    """Exact: for each query image, the highest SSIM to any image `reader` holds, and which.

    Every pair is scored (no shortlist, which could miss the true neighbour and understate
    memorisation). Each image's local means and mean squares are filtered once; a pair
    then needs only the filtering of their product.
    """
    q = _squeeze(queries)
    _check_pair(q, q, max_val)
    blur, cross = _blur_fn(), _cross_fn(float(max_val))
    qm, qe = blur(q), blur(q * q)
    best = np.full(len(q), -np.inf, np.float32)
    where = np.zeros(len(q), np.int64)
    for s in range(0, len(reader), real_block):
        idx = np.arange(s, min(s + real_block, len(reader)))
        r = to_unit(reader.read(idx)).astype(np.float32)
        if r.shape[1:] != q.shape[1:]:
            raise MetricError(f"images of {q.shape[1:]} cannot be compared with the dataset's {r.shape[1:]}")
        rm, re_ = blur(r), blur(r * r)
        for t in range(0, len(q), query_block):
            v = cross(q[t:t + query_block], qm[t:t + query_block], qe[t:t + query_block], r, rm, re_).numpy()
            j = np.argmax(v, axis=1)
            better = v[np.arange(len(v)), j] > best[t:t + query_block]
            best[t:t + query_block] = np.where(better, v[np.arange(len(v)), j], best[t:t + query_block])
            where[t:t + query_block] = np.where(better, idx[j], where[t:t + query_block])
    return {"ssim": best, "index": where, "exact": True, "compared_with": len(reader)}


def brain_ssim(x, y, max_val: float = 2.0, level: float = BRAIN_LEVEL) -> np.ndarray:
    """SSIM of x[i] with y[i] averaged over the windows that are mostly brain in either image: [N].

    Over a whole slice, the black background agrees in any two images and lifts every score
    towards 1; over the brain alone, the score says how alike the anatomy is. A window is brain
    when at least half of its Gaussian weight falls on pixels above `level` in x or in y.
    """
    x, y = _squeeze(x), _squeeze(y)
    _check_pair(x, y, max_val)
    blur = _blur_fn()
    c1, c2 = (K1 * max_val) ** 2, (K2 * max_val) ** 2
    out = []
    for s in range(0, len(x), 64):
        xs, ys = x[s:s + 64], y[s:s + 64]
        m = ssim_map(blur(xs), blur(xs * xs), blur(ys), blur(ys * ys), blur(xs * ys), c1, c2).numpy()
        brain = blur(((xs > level) | (ys > level)).astype(np.float32)).numpy() >= 0.5
        counts = brain.sum(axis=(1, 2))
        out.append(np.where(counts > 0, (m * brain).sum(axis=(1, 2)) / np.maximum(counts, 1), np.nan))
    return np.concatenate(out) if out else np.zeros(0)


def summary(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
            "p95": float(np.percentile(v, 95))}


