"""FID, KID and precision/recall against independent computations on small inputs."""

import itertools

import numpy as np
import pytest

from oasis_dcgan.post import features


def trace_sqrt_product(s1, s2):
    """tr(sqrt(s1 s2)) from the eigenvalues of s1 s2 (real and non-negative for covariances)."""
    return float(np.sqrt(np.clip(np.real(np.linalg.eigvals(s1 @ s2)), 0, None)).sum())


def test_fid_matches_the_eigenvalue_formula_and_is_zero_on_itself():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(0.5, 1.3, size=(300, 6))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product(s1, s2)
    got = features.frechet_distance(a, b)
    assert got["fid"] == pytest.approx(want, rel=1e-8)
    assert got["trustworthy"] and not got["rank_limited"]
    assert features.frechet_distance(a, a)["fid"] == pytest.approx(0, abs=1e-6)


def test_fid_with_fewer_images_than_features_says_so_and_stays_finite():
    rng = np.random.default_rng(1)
    got = features.frechet_distance(rng.normal(size=(20, 64)), rng.normal(size=(20, 64)))
    assert np.isfinite(got["fid"]) and got["rank_limited"]


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(12, 5)), rng.normal(0.3, 1, size=(9, 5))

    def k(x, y):
        return (np.dot(x, y) / 5 + 1) ** 3

    m, n = len(a), len(b)
    want = (sum(k(a[i], a[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
            + sum(k(b[i], b[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
            - 2 * sum(k(x, y) for x in a for y in b) / (m * n))
    halves = features.kid(a, b, subsets=20, subset_size=100)
    assert halves["subset_size"] == 4 and halves["kid_std"] > 0, "no more images than a subset: subsets of half"
    tiny = features.kid(a[:3], b[:3], subsets=20, subset_size=100)
    assert tiny["kid_std"] is None and "none" in tiny["kid_spread"], "too few for a spread: absent, never 0"
    assert tiny["kid_mean"] == pytest.approx(features._poly_mmd2(a[:3], b[:3]))
    assert features._poly_mmd2(a, b) == pytest.approx(want, rel=1e-10)
    spread = features.kid(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)), subsets=20, subset_size=50)
    assert spread["kid_std"] > 0 and abs(spread["kid_mean"]) < 3 * spread["kid_std"] + 1e-3


def brute_precision_recall(real, fake, k):
    def radius(x, pts):
        return sorted(np.linalg.norm(p - x) for p in pts)[k]  # index 0: the point itself

    r_real = [radius(x, real) for x in real]
    r_fake = [radius(y, fake) for y in fake]
    precision = np.mean([any(np.linalg.norm(y - x) <= r for x, r in zip(real, r_real)) for y in fake])
    recall = np.mean([any(np.linalg.norm(x - y) <= r for y, r in zip(fake, r_fake)) for x in real])
    return precision, recall


def test_precision_recall_match_a_brute_force_count_in_any_block_size(monkeypatch):
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(40, 3)), rng.normal(0.7, 0.6, size=(40, 3))
    got = features.precision_recall(real, fake, k=3)
    want = brute_precision_recall(real, fake, 3)
    assert (got["precision"], got["recall"]) == pytest.approx(want)
    blocks = features._row_blocks
    monkeypatch.setattr(features, "_row_blocks", lambda n, other: blocks(n, other, budget=7 * other))  # 7 rows a block
    assert features._row_blocks(40, 40)[0] == slice(0, 7)
    small = features.precision_recall(real, fake, k=3)
    assert (small["precision"], small["recall"]) == pytest.approx(want)
    with pytest.raises(features.FeatureError, match="one size"):
        features.precision_recall(real, fake[:30], k=3)   # more generated than real would inflate recall


def test_a_generator_of_one_image_has_fidelity_but_no_recall():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(200, 8))
    one = real[:1] + rng.normal(0, 1e-3, size=(200, 8))
    got = features.precision_recall(real, one, k=3)
    assert got["precision"] == 1.0 and got["recall"] < 0.05
    fair = features.precision_recall(real, rng.normal(size=(200, 8)), k=3)
    assert fair["recall"] > 0.5


@pytest.fixture(scope="module")
def small_extractor(tmp_path_factory):
    import tensorflow as tf

    inp = tf.keras.Input((32, 32, 1))
    x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = tf.keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)  # unpooled: features() pools it
    path = tmp_path_factory.mktemp("fx") / "small.keras"
    tf.keras.Model(inp, x).save(path)
    return str(path)


def test_an_unpooled_extractor_is_pooled_and_images_are_resized_to_its_input(small_extractor):
    import tensorflow as tf

    net = features.load_extractor(small_extractor)
    imgs = np.random.default_rng(5).uniform(-1, 1, (5, 64, 64)).astype(np.float32)
    got = features.features(net, imgs, "unit")
    x = tf.image.resize(imgs[..., None], (32, 32), antialias=True) * 0.5 + 0.5
    want = np.asarray(net(x)).mean(axis=(1, 2))
    assert got.shape == (5, 16)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(features.FeatureError, match="fid_preprocessing"):
        features.features(net, imgs, "imagenet")
