"""The injection suite: copies of every kind among samples are found, unseen brains are not
flagged, the distribution metric puts real unseen slices near chance and blur, noise and a PCA
model far from it; and `evaluate` on an array, a folder of PNGs and a dataset's split by subject."""

import json

import numpy as np
import pytest

from oasis_dcgan.imaging import to_unit
from oasis_dcgan.post import anchors, checks, evaluate, samples, verdicts
from oasis_dcgan.prep.reader import ShardReader

from tests.conftest import copying_of, judged, small_metrics, with_copies


def _train(ds, n=128, rng_seed=0):
    reader = ShardReader(ds, "train")
    return to_unit(reader.read(np.sort(np.random.default_rng(rng_seed).choice(len(reader), n, replace=False))))


TRANSFORMS = {   # on the demo's 64x64 slices, as the bench injects them
    "blurred": lambda x: anchors.blurred(x),
    "shifted": lambda x: np.pad(x, ((0, 0), (2, 0), (2, 0)), mode="edge")[:, :-2, :-2],
    "flipped": lambda x: x[:, :, ::-1].copy(),
    "noised": lambda x: np.clip(x + np.random.default_rng(0).normal(0, 0.1, x.shape), -1, 1).astype(np.float32),
}


def test_verbatim_copies_at_5_percent_among_unseen_brains_are_counted(demo_brains, fresh_brains):
    mixed, k = with_copies(_train(fresh_brains, 128, rng_seed=1), demo_brains, 0.05)
    got = copying_of(mixed, demo_brains)
    assert got["verdict"] == verdicts.COPIES and got["duplicates"]["count"] == k == got["duplicates"]["equal_pixels"]


def test_verbatim_copies_among_test_split_slices_judged_by_subject_are_counted(demo_brains):
    test = ShardReader(demo_brains, "test")
    idx = np.arange(len(test))
    cases = checks.case_ids("test", test, idx)
    mixed, k = with_copies(to_unit(test.read(idx)), demo_brains, 0.05, rng_seed=2)
    got = copying_of(mixed, demo_brains, cases)
    assert got["verdict"] == verdicts.COPIES and got["duplicates"]["count"] == k == 3
    assert got["duplicates"]["held_out_count"] == 0
    assert got["near_copies"]["held_out"]["subjects"] == 4, "the judged test subjects left the null"


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_transformed_copies_are_near_copies(demo_brains, kind):
    got = copying_of(TRANSFORMS[kind](_train(demo_brains)), demo_brains)
    near = got["near_copies"]
    assert got["duplicates"]["count"] == 0, "no longer equal to their sources"
    assert got["verdict"] == verdicts.NEAR_COPIES and near["flagged"] is True, near
    assert near["share"] > 4 * near["held_out"]["upper"]


def test_real_unseen_brains_are_not_flagged(demo_brains, fresh_brains):
    real = _train(fresh_brains, 128, rng_seed=3)
    got = copying_of(real, demo_brains)
    assert got["verdict"] == verdicts.NO_SIGN and got["duplicates"]["count"] == 0, got


def _distribution(images, ds, cases=None):
    return checks.distribution_metric(judged(images, ds, cases))


def test_the_distribution_metric_is_not_fooled_by_blur_noise_or_a_pca(demo_brains, fresh_brains):
    reader = ShardReader(fresh_brains, "train")
    idx = np.sort(np.random.default_rng(4).choice(len(reader), 128, replace=False))
    unseen = _distribution(to_unit(reader.read(idx)), demo_brains, checks.case_ids("fresh", reader, idx))
    assert unseen["verdict"] != verdicts.DISTINGUISHABLE and unseen["ci95"][0] < 0.5 + unseen["margin"], unseen
    baseline = unseen["held_out"]
    assert baseline["accuracy"] is not None and baseline["ci95"][0] < 0.5 + unseen["margin"], baseline
    train = _train(demo_brains)
    fakes = {"blurred": TRANSFORMS["blurred"](train), "noised": TRANSFORMS["noised"](train),
             "linear": anchors.fit_linear(_train(demo_brains, 384), 40).sample(128, rng_seed=1)}
    for name, x in fakes.items():
        got = _distribution(x, demo_brains)
        assert got["verdict"] == verdicts.DISTINGUISHABLE and got["ci95"][0] > unseen["ci95"][1], (name, got)


def test_evaluate_an_array_and_a_png_folder(held_out_rich, tmp_path):
    test = ShardReader(held_out_rich, "test")
    pixels = test.read(np.arange(40))
    np.save(tmp_path / "real.npy", pixels)
    samples.write_pngs(to_unit(pixels), tmp_path / "pngs")
    m = small_metrics(diversity_samples=16)
    got = evaluate.evaluate(tmp_path / "real.npy", held_out_rich, tmp_path / "a", m)
    on_disk = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for d in (got, on_disk):
        assert d["copying"]["verdict"] in (verdicts.COPIES, verdicts.NEAR_COPIES, verdicts.NO_SIGN,
                                           verdicts.UNDETERMINED)
        assert {"duplicates", "near_copies"} <= set(d["copying"]) and d["resampled"] == "by image"
        assert len(d["nn_ssim"]["ci95"]) == 2 and len(d["diversity"]["relative_ci95"]) == 2
        assert d["distribution"]["held_out"]["accuracy"] is not None
        assert all(isinstance(d["anchors"][a]["nn_ssim"]["median"], float) for a in ("held_out", "blurred", "linear"))
    assert "On the ladder of anchors" in (tmp_path / "a" / "report.md").read_text()
    # a folder of PNGs is read to the same pixels, so every check says the same of it
    np.testing.assert_array_equal(evaluate.load_images(tmp_path / "pngs", 32), evaluate.load_images(
        tmp_path / "real.npy", 32))


def test_evaluate_resamples_a_datasets_split_by_subject_and_leaves_it_out_of_the_nulls(held_out_rich, tmp_path):
    m = small_metrics(diversity_samples=24)
    got = evaluate.evaluate(held_out_rich, held_out_rich, tmp_path / "split", m, split="test")
    assert got["resampled"] == "by case" and got["n_images"] == len(ShardReader(held_out_rich, "test"))
    assert got["nn_ssim"]["resampled"] == "by case"
    # the test split's subjects are judged, so only the validate split's are the unseen brains
    assert got["distribution"]["real_subjects"] == 6 and got["copying"]["near_copies"]["held_out"]["subjects"] == 6
    assert got["distribution"]["verdict"] != verdicts.DISTINGUISHABLE
    ids = [f"s{i // 10}" for i in range(40)]
    np.save(tmp_path / "x.npy", ShardReader(held_out_rich, "test").read(np.arange(40)))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    _, by_file = evaluate.load_judged(tmp_path / "x.npy", held_out_rich, 32, cases=tmp_path / "ids.txt")
    assert by_file.tolist() == ids
    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(evaluate.ImagesError, match="short.txt: 2 case ids for 40 images"):
        evaluate.load_judged(tmp_path / "x.npy", held_out_rich, 32, cases=tmp_path / "short.txt")
    with pytest.raises(evaluate.ImagesError, match="say which split"):
        evaluate.load_judged(held_out_rich, held_out_rich, 32)
