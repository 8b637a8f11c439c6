"""The quality verdicts against independent computations: one image repeated is less varied and
noise more varied than held-out slices, the linear anchor is a PCA, intervals resample cases,
`evaluate` refuses bad images by name, and FID sits beside held-out images at one n."""

import numpy as np
import pytest

from oasis_dcgan.imaging import to_uint8, to_unit
from oasis_dcgan.post import anchors, evaluate, intervals, quality, verdicts
from oasis_dcgan.prep.reader import ShardReader

from tests.conftest import small_metrics


def test_diversity_is_read_against_held_out_slices_with_a_margin(held_out_rich):
    reader = ShardReader(held_out_rich, "train")
    real = to_unit(reader.read(np.arange(len(reader))))
    cases = np.array([m["case"] for m in reader.metadata(np.arange(len(reader)))])
    base = quality.pairs_only(real, 24, rng_seed=0, cases=cases)
    held_reader = ShardReader(held_out_rich, "validate")
    held = quality.pairs_only(to_unit(held_reader.read(np.arange(len(held_reader)))), 24, rng_seed=2,
                              cases=[m["case"] for m in held_reader.metadata(np.arange(len(held_reader)))])
    one = quality.pairs_only(np.stack([real[5]] * 24), 24, rng_seed=0)
    got = quality.diversity(one, base, rng_seed=0, held=held)
    assert got["verdict"] == verdicts.LESS_VARIED and got["relative_ci95"][0] > 1 + verdicts.DIVERSITY_MARGIN
    noise = quality.pairs_only(np.random.default_rng(0).uniform(-1, 1, (24, 32, 32)).astype(np.float32), 24, 0)
    assert quality.diversity(noise, base, rng_seed=0, held=held)["verdict"] == verdicts.MORE_VARIED
    other = quality.diversity(quality.pairs_only(real, 24, rng_seed=1, cases=cases), base, rng_seed=0, held=held)
    lo, hi = other["relative_ci95"]
    assert lo < 1 < hi and other["verdict"] in (verdicts.AS_VARIED, verdicts.UNDETERMINED), other
    assert quality.diversity(one, base, rng_seed=0)["verdict"] == verdicts.UNDETERMINED, "no held-out: no verdict"


def test_diversity_against_pairs_that_share_nothing_is_undetermined_not_a_crash():
    """MS-SSIM is 0 for pairs with no common structure; a resample of only such pairs has no scale."""
    rng = np.random.default_rng(0)
    zero = np.zeros((8, 8))
    np.fill_diagonal(zero, np.nan)
    blank = quality.Profile(nn=np.zeros(8), nearest=np.zeros(8, int), brain=np.zeros(8), pairs=zero,
                            pair_cases=np.arange(8) // 4)
    some = rng.uniform(0.2, 0.4, (8, 8))
    np.fill_diagonal(some, np.nan)
    gen = quality.Profile(nn=np.zeros(8), nearest=np.zeros(8, int), brain=np.zeros(8), pairs=some)
    got = quality.diversity(gen, blank, rng_seed=0, held=blank)
    assert np.isnan(got["ratio"]) and np.isnan(got["relative"]), got
    assert got["verdict"] == verdicts.UNDETERMINED, got


def test_the_linear_anchor_is_a_pca_of_the_training_images():
    rng = np.random.default_rng(0)
    images = np.tanh(rng.normal(size=(60, 12, 12)) + np.linspace(-1, 1, 12)).astype(np.float32)
    model = anchors.fit_linear(images, 5)
    x = images.reshape(60, -1).astype(np.float64)
    u, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(model.mean, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(model.scales, s[:5] / np.sqrt(59), rtol=1e-8)
    np.testing.assert_allclose(np.abs((model.components * vt[:5]).sum(1)), 1.0, rtol=1e-8)  # same axes, any sign
    z = np.random.default_rng(3).standard_normal((4, 5))
    signs = np.sign((model.components * vt[:5]).sum(1))
    want = np.clip(x.mean(0) + (z * s[:5] / np.sqrt(59) * signs) @ vt[:5], -1, 1).reshape(4, 12, 12)
    np.testing.assert_allclose(model.sample(4, rng_seed=3), want, atol=1e-5)


def test_bootstrap_by_case_is_wider_than_by_image_when_cases_differ():
    values = np.repeat([0.6, 0.7, 0.8, 0.9], 30) + np.random.default_rng(0).normal(0, 0.01, 120)
    by_image = intervals.bootstrap(values, rng_seed=0)
    by_case = intervals.bootstrap(values, groups=np.repeat(np.arange(4), 30), rng_seed=0)
    assert by_case[1] - by_case[0] > 3 * (by_image[1] - by_image[0])
    assert intervals.share_interval(0, 100)[0] == 0.0 and intervals.share_interval(100, 100)[1] == 1.0


def test_evaluate_refuses_bad_images_by_name(held_out_rich, tmp_path):
    cases = {"small.npy": np.zeros((4, 16, 16), np.uint8), "range.npy": np.full((4, 32, 32), 3.0, np.float32),
             "ints.npy": np.zeros((4, 32, 32), np.int64), "one.npy": np.zeros((1, 32, 32), np.uint8)}
    for name, a in cases.items():
        np.save(tmp_path / name, a)
        with pytest.raises(evaluate.ImagesError, match=str(tmp_path / name)):
            evaluate.load_images(tmp_path / name, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(evaluate.ImagesError, match="no .png files"):
        evaluate.load_images(tmp_path / "empty", 32)
    assert evaluate.load_images(_save(tmp_path, to_uint8(np.zeros((3, 32, 32)))), 32).shape == (3, 32, 32)


def _save(tmp_path, a):
    np.savez(tmp_path / "ok.npz", images=a)
    return tmp_path / "ok.npz"


def test_feature_distances_sit_beside_held_out_images_at_one_n(held_out_rich, tmp_path):
    import tensorflow as tf

    net = tf.keras.Sequential([tf.keras.layers.Input((32, 32, 1)), tf.keras.layers.Conv2D(6, 3, strides=2),
                               tf.keras.layers.GlobalAveragePooling2D()])
    net.save(tmp_path / "fx.keras")
    test = ShardReader(held_out_rich, "test")
    np.save(tmp_path / "real.npy", test.read(np.arange(100)))
    m = small_metrics(fid_weights=f'"{tmp_path / "fx.keras"}"', kid_subsets=10, fid_real_images=80)
    f = evaluate.evaluate(tmp_path / "real.npy", held_out_rich, tmp_path / "out", m)["feature_distances"]
    assert f["n"] == 80 and f["held_out"]["fid"] is not None and f["fid"] is not None
    assert f["subset_size"] == 40 and f["kid_std"] > 0 and f["held_out"]["kid_std"] > 0, "subsets of half: a spread"
    assert 0 <= f["precision"] <= 1 and 0 <= f["held_out"]["recall"] <= 1
    md = (tmp_path / "out" / "report.md").read_text()
    assert "FID against the train split" in md and "+- 0.0000" not in md


def test_a_check_registered_in_one_place_is_computed_saved_tabled_and_read_and_moves_no_other(
        held_out_rich, tmp_path, monkeypatch):
    """A throwaway check, registered here only, lands in metrics.json and the report; it draws from its own
    stream, so every other check's numbers stay what they were without it."""
    from oasis_dcgan import fsutil
    from oasis_dcgan.post import checks

    test = ShardReader(held_out_rich, "test")
    np.save(tmp_path / "real.npy", test.read(np.arange(48)))
    m = small_metrics(nn_samples=16, diversity_samples=8)
    before = evaluate.evaluate(tmp_path / "real.npy", held_out_rich, tmp_path / "before", m)
    monkeypatch.setattr(checks, "CHECKS", dict(checks.CHECKS))

    def row(m):
        return [["mean intensity (throwaway check)", f"{m['intensity']['mean']:.4f}", "-"]]

    @checks.register_check("intensity", rows=row, reading=lambda m: f"Intensity: a draw of {m['intensity']['draw']}.")
    def intensity(ctx):
        return {"mean": float(ctx.generated.mean()), "draw": int(np.random.default_rng(ctx.seed("intensity"))
                                                                  .integers(1000))}

    after = evaluate.evaluate(tmp_path / "real.npy", held_out_rich, tmp_path / "after", m)
    want = float(to_unit(test.read(np.arange(48))).mean())
    assert after["intensity"]["mean"] == pytest.approx(want, abs=1e-6)
    assert fsutil.read_json(tmp_path / "after" / evaluate.METRICS_FILE)["intensity"] == after["intensity"]
    md = (tmp_path / "after" / evaluate.REPORT_FILE).read_text()
    assert f"{want:.4f}" in md and f"Intensity: a draw of {after['intensity']['draw']}." in md
    for name in before:
        if name not in ("images", "dataset"):
            assert after[name] == before[name], name
