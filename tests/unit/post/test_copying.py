"""Copies counted exactly, near copies tested against held-out subjects, the distribution metric,
and the verdicts' margins: each against a computation done here by other means."""

import numpy as np
import pytest

from oasis_dcgan.post import copying, distribution, metrics, verdicts


def test_a_verdict_needs_its_whole_interval_on_one_side_of_the_margin():
    read = lambda ci: verdicts.against(ci, 1.0, 0.1, "below", "level", "above")  # noqa: E731
    assert read([0.95, 1.05]) == "level" and read([0.9, 1.1]) == "level"
    assert read([0.7, 0.85]) == "below" and read([1.2, 1.4]) == "above"
    assert read([0.85, 1.05]) == verdicts.UNDETERMINED and read([0.95, 1.2]) == verdicts.UNDETERMINED
    assert read([0.5, 1.5]) == verdicts.UNDETERMINED
    assert distribution.read([0.4, 0.6]) == verdicts.INDISTINGUISHABLE
    assert distribution.read([0.61, 0.9]) == verdicts.DISTINGUISHABLE
    assert distribution.read([0.5, 0.7]) == verdicts.UNDETERMINED


def test_exact_copies_are_equal_pixels_or_ssim_at_the_rule():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    samples = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    samples[2] = train[4]                               # a verbatim copy, whatever its SSIM reads
    nn = np.array([0.5, 0.995, 0.3, 0.2, copying.DUPLICATE_SSIM, 0.98])
    got = copying.duplicates(nn, samples, set(copying.pixel_hashes(train)), np.array([0.9, 0.95]))
    assert got["indices"] == [1, 2, 4] and got["count"] == 3 and got["equal_pixels"] == 1
    assert got["held_out_count"] == 0


def test_the_null_share_leaves_each_subject_out():
    gaps = np.r_[np.linspace(0, 0.1, 10), np.linspace(0, 0.1, 10), np.linspace(0, 0.1, 10), np.full(10, 0.5)]
    cases = np.repeat(list("abcd"), 10)
    got = copying.null_share(gaps, cases)
    # a, b and c each against a threshold the twin d lifts to 0.5: none above; d against 0.1-ish: all above
    want = []
    for s in "abcd":
        t = np.quantile(gaps[cases != s], copying.TAIL)
        want.append(np.mean(gaps[cases == s] > t))
    assert got["per_subject"] == pytest.approx(want) and got["share"] == pytest.approx(np.mean(want))
    assert want == [0, 0, 0, 1] and got["upper"] > got["share"]
    assert copying.null_share(gaps[:30], cases[:30]) is None, "3 subjects are too few"


def test_near_copies_are_flagged_and_unseen_brains_are_not():
    rng = np.random.default_rng(0)
    held = rng.gamma(2.0, 0.01, 320)
    cases = np.repeat(np.arange(10), 32)
    unseen = copying.near_copies(rng.gamma(2.0, 0.01, 256), held, cases)
    assert unseen["verdict"] == verdicts.NO_SIGN and unseen["flagged"] is False
    copies = np.r_[np.full(64, 0.2), rng.gamma(2.0, 0.01, 192)]
    got = copying.near_copies(copies, held, cases)
    assert got["verdict"] == verdicts.NEAR_COPIES and got["count"] >= 64 and got["p_value"] < 1e-6
    few = copying.near_copies(copies, held[:96], cases[:96])
    assert few["verdict"] == verdicts.UNDETERMINED and "3 held-out subjects" in few["why"]
    assert copying.verdict({"count": 1}, unseen) == verdicts.COPIES, "one exact copy outweighs the test"


def test_a_shifted_and_mirrored_copy_has_its_source_among_the_variants():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 12, 12)).astype(np.float32)
    moved = np.roll(x, (1, -1), axis=(1, 2))[:, :, ::-1]
    found = [np.abs(v[:, 2:-2, 2:-2] - x[:, 2:-2, 2:-2]).max() for v in copying.variants(moved)]
    assert len(found) == 18 and min(found) == 0.0


def test_cross_ssim_is_every_pair_of_ssim():
    rng = np.random.default_rng(0)
    q = np.tanh(rng.normal(size=(3, 16, 16))).astype(np.float32)
    r = np.tanh(rng.normal(size=(70, 16, 16))).astype(np.float32)
    got = metrics.cross_ssim(q, r)
    want = np.array([[metrics.ssim(q[i:i + 1], r[j:j + 1])[0] for j in range(70)] for i in range(3)])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_source_gap_is_the_best_subject_over_the_runner_up():
    closeness = np.array([[0.9, 0.7, 0.8], [0.5, 0.6, 0.55]])
    np.testing.assert_allclose(copying.source_gaps(closeness), [0.1, 0.05])


def test_the_two_sample_test_is_near_chance_on_one_distribution_and_sure_on_two():
    rng = np.random.default_rng(0)
    train, real = rng.normal(size=(400, 6)), rng.normal(size=(120, 6))
    groups = np.repeat(np.arange(12), 10)
    same = distribution.two_sample(rng.normal(size=(128, 6)), np.arange(128), train, real, groups, 0)
    assert same["ci95"][0] < 0.5 < same["ci95"][1] and abs(same["accuracy"] - 0.5) < 0.1
    moved = distribution.two_sample(rng.normal(size=(128, 6)) + 1.5, np.arange(128), train, real, groups, 0)
    assert moved["accuracy"] > 0.85 and moved["verdict"] == verdicts.DISTINGUISHABLE


def test_the_features_see_blur_and_noise_that_ssim_forgives():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x = np.tanh(ndimage.gaussian_filter(rng.normal(size=(4, 64, 64)), (0, 1, 1)) * 3).astype(np.float32)
    end = distribution.LAYOUT_SIZE ** 2 + distribution.BINS   # the spectrum's last bins: the finest detail
    top = slice(end - 4, end)
    sharp = distribution.describe(x)[:, top]
    blurred = distribution.describe(ndimage.gaussian_filter(x, (0, 1, 1)))[:, top]
    noisy = distribution.describe(np.clip(x + rng.normal(0, 0.1, x.shape), -1, 1).astype(np.float32))[:, top]
    assert (blurred < sharp - 1).all() and (noisy > sharp).all()
