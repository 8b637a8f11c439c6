"""SSIM against tf.image.ssim and skimage; the seed metric against its own definition."""

import numpy as np
import pytest

from oasis_dcgan.post import metrics
from oasis_dcgan.post.metrics import MetricError


def structured(n, res, seed):
    """Smooth blobs and edges, brain-like in scale, in (-1, 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res] / res
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.2, 0.4)]
        disk = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r).astype(np.float32)
        waves = np.sin(xx * rng.uniform(5, 20)) * np.cos(yy * rng.uniform(5, 20))
        out.append(np.clip(disk * (0.4 + 0.5 * waves) - (1 - disk) * 0.9, -1, 1))
    return np.stack(out).astype(np.float32)


def pairs(kind, res):
    rng = np.random.default_rng(res)
    if kind == "random":
        x = rng.uniform(-1, 1, (6, res, res)).astype(np.float32)
        y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    elif kind == "structured":
        x, y = structured(6, res, 1), structured(6, res, 2)
    else:
        x = structured(6, res, 3)
        y = x.copy()
    return x, y


@pytest.mark.parametrize("res", [32, 64])
@pytest.mark.parametrize("kind", ["random", "structured", "identical"])
def test_ssim_agrees_with_tensorflow_and_skimage(kind, res):
    import tensorflow as tf
    from skimage.metrics import structural_similarity

    x, y = pairs(kind, res)
    ours = metrics.ssim(x, y, max_val=2.0)
    tf_ref = tf.image.ssim(x[..., None], y[..., None], max_val=2.0).numpy()
    sk_ref = np.array([structural_similarity(a, b, data_range=2.0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False) for a, b in zip(x, y)])
    assert np.abs(ours - tf_ref).max() < 1e-4
    assert np.abs(ours - sk_ref).max() < 1e-3
    if kind == "identical":
        np.testing.assert_allclose(ours, 1.0, atol=1e-6)


def test_max_val_matters_and_matches_tensorflow():
    import tensorflow as tf

    x, y = pairs("random", 32)
    x255, y255 = x * 127.5, y * 127.5  # SSIM is invariant to a joint scaling of data and max_val
    a = metrics.ssim(x255, y255, max_val=255.0)
    np.testing.assert_allclose(a, tf.image.ssim(x255[..., None], y255[..., None], max_val=255.0).numpy(), atol=1e-4)
    np.testing.assert_allclose(a, metrics.ssim(x, y, max_val=2.0), atol=1e-4)  # same images, same scale ratio
    assert np.abs(metrics.ssim(x, y, max_val=1.0) - metrics.ssim(x, y, max_val=2.0)).max() > 1e-3
    with pytest.raises(MetricError, match="max_val"):
        metrics.ssim(x, y, max_val=0)


def test_mismatched_and_too_small_batches_are_refused():
    x, y = pairs("random", 32)
    with pytest.raises(MetricError, match="one shape"):
        metrics.ssim(x, y[:, :16, :16])
    with pytest.raises(MetricError, match="pair"):
        metrics.max_ssim_over_batches(x[:4], np.stack([y[:5]] * 3))
    with pytest.raises(MetricError, match="smaller than"):
        metrics.ssim(x[:, :8, :8], y[:, :8, :8])


def test_seed_metric_is_the_max_of_all_position_paired_values():
    import tensorflow as tf

    gen = structured(16, 32, 9)
    real = np.stack([structured(16, 32, 100 + b) for b in range(7)])
    real[4, 11] = gen[11]  # plant a perfect match at batch 4, position 11
    out = metrics.max_ssim_over_batches(gen, real)
    brute = np.stack([tf.image.ssim(gen[..., None], b[..., None], max_val=2.0).numpy() for b in real])
    np.testing.assert_allclose(out["values"], brute, atol=1e-4)
    assert (out["batch"], out["position"]) == (4, 11) and out["max"] == pytest.approx(1.0, abs=1e-5)
    # pairing is by position: the same image elsewhere in the batch does not count
    real[4, 11] = real[4, 10]
    real[4, 3] = gen[11]
    assert metrics.max_ssim_over_batches(gen, real)["max"] < 0.99


def test_ms_ssim_diversity_sees_collapse():
    varied = structured(8, 64, 5)
    collapsed = np.stack([varied[0]] * 8) + np.random.default_rng(0).normal(0, 0.01, (8, 64, 64)).astype(np.float32)
    assert metrics.pairwise_diversity(collapsed) > 0.95 > metrics.pairwise_diversity(varied)


def numpy_ms_ssim_two_scales(x, y, max_val=2.0):
    """MS-SSIM at 2 scales from its definition: contrast-structure at full size, whole SSIM after a
    2x2 average, each a mean over valid 11x11 Gaussian windows (sigma 1.5), weights renormalised."""
    from scipy.signal import convolve2d

    t = np.exp(-0.5 * (np.arange(11) - 5.0) ** 2 / 1.5 ** 2)
    win = np.outer(t, t) / t.sum() ** 2
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2

    def stats(a, b):
        f = lambda z: convolve2d(z, win, mode="valid")  # noqa: E731
        ma, mb = f(a), f(b)
        va, vb, cov = f(a * a) - ma ** 2, f(b * b) - mb ** 2, f(a * b) - ma * mb
        cs = (2 * cov + c2) / (va + vb + c2)
        return cs.mean(), ((2 * ma * mb + c1) / (ma ** 2 + mb ** 2 + c1) * cs).mean()

    w = np.array([0.0448, 0.2856]) / (0.0448 + 0.2856)
    cs1, _ = stats(x.astype(np.float64), y.astype(np.float64))
    half = lambda z: z.reshape(z.shape[0] // 2, 2, z.shape[1] // 2, 2).mean(axis=(1, 3))  # noqa: E731
    _, s2 = stats(half(x.astype(np.float64)), half(y.astype(np.float64)))
    return max(cs1, 0) ** w[0] * max(s2, 0) ** w[1]


def test_pair_matrix_matches_its_definition():
    imgs = structured(6, 32, 4)
    mat = metrics.pair_matrix(imgs)
    assert mat.shape == (6, 6) and np.isnan(np.diag(mat)).all() and np.allclose(mat, mat.T, equal_nan=True)
    for i, j in [(0, 1), (2, 5), (3, 4)]:
        assert mat[i, j] == pytest.approx(numpy_ms_ssim_two_scales(imgs[i], imgs[j]), abs=2e-4)
    assert metrics.ms_ssim_scales(32) == 2


def test_brain_ssim_is_the_ssim_map_averaged_over_brain_windows():
    from scipy.signal import convolve2d
    from skimage.metrics import structural_similarity

    x, y = structured(3, 32, 5), structured(3, 32, 6)
    got = metrics.brain_ssim(x, y)
    t = metrics.gaussian_taps().astype(np.float64)
    win = np.outer(t, t)
    for i in range(3):
        _, full = structural_similarity(x[i], y[i], data_range=2.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
        valid = full[5:-5, 5:-5]   # skimage pads; the metric's windows are the valid ones
        brain = convolve2d(((x[i] > -0.8) | (y[i] > -0.8)).astype(float), win, mode="valid") >= 0.5
        assert 0 < brain.sum() < brain.size
        assert got[i] == pytest.approx(valid[brain].mean(), abs=2e-4)
        assert got[i] != pytest.approx(valid.mean(), abs=1e-3), "the background is left out"


def test_exact_nearest_ssim_flags_copies_and_matches_a_skimage_search(dataset32):
    from skimage.metrics import structural_similarity

    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.prep.reader import ShardReader

    r = ShardReader(dataset32, "train")
    reals = to_unit(r.read(np.arange(len(r))))
    copies = reals[[17, 150]] + np.random.default_rng(0).normal(0, 0.01, (2, 32, 32)).astype(np.float32)
    gen = np.concatenate([copies, structured(2, 32, 0)])
    nn = metrics.nearest_ssim(gen, r, real_block=50, query_block=3)
    assert nn["exact"] and nn["compared_with"] == len(r)
    assert nn["index"][:2].tolist() == [17, 150] and nn["ssim"][:2].min() > 0.95, "a copying generator is flagged"

    def sk(a, b):  # tf.image.ssim's definition in skimage's terms: 11-tap Gaussian, no sample covariance
        return structural_similarity(a, b, data_range=2.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)

    for i in range(len(gen)):
        scores = [sk(gen[i], y) for y in reals]
        assert nn["ssim"][i] == pytest.approx(max(scores), abs=2e-4)
        assert scores[nn["index"][i]] == pytest.approx(max(scores), abs=2e-4), "the neighbour it names is the best"


def test_fid_and_kid_from_a_local_extractor(tmp_path):
    import tensorflow as tf

    from oasis_dcgan.post import features

    net = tf.keras.Sequential([tf.keras.layers.Input((32, 32, 1)), tf.keras.layers.Conv2D(4, 3, strides=2),
                               tf.keras.layers.GlobalAveragePooling2D()])
    net.save(tmp_path / "fx.keras")
    net = features.load_extractor(str(tmp_path / "fx.keras"))
    a, b = structured(40, 32, 1), structured(40, 32, 2)
    fa, fb = features.features(net, a), features.features(net, -b)
    same, diff = features.frechet_distance(fa, fa), features.frechet_distance(fa, fb)
    assert abs(same["fid"]) < 1e-6 and diff["fid"] > same["fid"]
    assert features.kid(fa, fb, subsets=5, subset_size=20)["kid_mean"] > features.kid(fa, fa, 5, 20)["kid_mean"]
    with pytest.raises(features.FeatureError, match="not found"):
        features.load_extractor(str(tmp_path / "missing.keras"))
