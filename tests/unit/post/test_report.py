"""Post-processing: metrics files, figures that are not blank, GIF order, the report, idempotence."""

import numpy as np

from oasis_dcgan import rundir
from oasis_dcgan.post import checks, copying, distribution, figures, quality, report, verdicts


def test_gif_frames_follow_epoch_order_past_ten(tmp_path):
    import imageio.v3 as iio

    samples = tmp_path / "samples"
    samples.mkdir()
    for e in range(1, 13):  # brightness encodes the epoch
        np.save(samples / f"epoch_{e:04d}.npy", np.full((16, 16, 16, 1), -1 + e / 6.5, np.float32))
    found = report.epoch_samples(rundir.RunDir(tmp_path))
    assert [e for e, _ in found] == list(range(1, 13))
    assert figures.make_gif(found, tmp_path / "p.gif") == 12
    frames = iio.imread(tmp_path / "p.gif", index=None)
    assert len(frames) == 12
    centre = [f[f.shape[0] // 2 - 20:f.shape[0] // 2 + 20, f.shape[1] // 2 - 20:f.shape[1] // 2 + 20].mean()
              for f in frames]
    assert centre == sorted(centre) and centre[0] < centre[-1]


def test_notable_epochs_scale_with_run_length():
    assert report.notable_epochs(50) == [1, 2, 3, 10, 25, 50]
    assert report.notable_epochs(100) == [1, 2, 3, 20, 50, 100]
    assert report.notable_epochs(10) == [1, 2, 3, 5, 10]
    assert report.notable_epochs(2) == [1, 2]


def _checks(gen_nn, rel_ci, gaps, accuracy_ci, duplicates=0):
    """The parts of metrics.json the readings use, each computed by the function the check uses."""
    rng = np.random.default_rng(0)
    held_nn = np.repeat(rng.normal(0.85, 0.01, 8), 16)
    cases = np.repeat([f"validate/{i}" for i in range(8)], 16)
    gen = quality.Profile(nn=np.asarray(gen_nn, float), nearest=np.zeros(len(gen_nn), int), brain=np.zeros(len(gen_nn)),
                          pairs=None)
    held = quality.Profile(nn=held_nn, nearest=np.zeros(128, int), brain=np.zeros(128), pairs=None, cases=cases)
    rel = sum(rel_ci) / 2
    held_gaps = rng.gamma(2.0, 0.01, 128)
    pixels = np.zeros((len(gen_nn), 4, 4), np.uint8)
    dup = copying.duplicates(np.r_[np.ones(duplicates), np.zeros(len(gen_nn) - duplicates)], pixels, set(), held_nn)
    near = copying.near_copies(np.asarray(gaps, float), held_gaps, cases)
    rung = lambda median, acc: {"nn_ssim": {"median": median, "ci95": [median - .01, median + .01], "n": 128},  # noqa: E731
                                "distribution": {"accuracy": acc, "ci95": [acc - .05, acc + .05]}}
    return {"nn_ssim": {**quality.nn_summary(gen, 0), "closeness": quality.closeness(gen, held, 0)},
            "copying": {"verdict": copying.verdict(dup, near), "duplicates": dup, "near_copies": near},
            "diversity": {"generated": 0.5 * rel, "real": 0.5, "held_out": 0.5, "ratio": rel, "ci95": rel_ci,
                          "relative": rel, "relative_ci95": rel_ci, "margin": verdicts.DIVERSITY_MARGIN,
                          "verdict": verdicts.against(rel_ci, 1, verdicts.DIVERSITY_MARGIN, verdicts.MORE_VARIED,
                                                      verdicts.AS_VARIED, verdicts.LESS_VARIED),
                          "scales": 3, "n": 256, "real_split": "train"},
            "distribution": {"accuracy": sum(accuracy_ci) / 2, "ci95": accuracy_ci, "margin": 0.1,
                             "verdict": distribution.read(accuracy_ci),
                             "held_out": {"accuracy": 0.52, "ci95": [0.4, 0.64], "n": 128}},
            "anchors": {"held_out": {**rung(0.85, 0.52), "nn_ssim": quality.nn_summary(held, 0)},
                        "blurred": rung(0.80, 0.99), "linear": rung(0.73, 0.97)},
            "feature_distances": {}}


def test_readings_follow_the_intervals():
    rng = np.random.default_rng(1)
    level, clean, alike, indist, ladder = checks.readings(_checks(
        rng.normal(0.85, 0.01, 256), [0.95, 1.05], rng.gamma(2.0, 0.01, 256), [0.45, 0.58]))
    assert "level with unseen brains" in level
    assert "Verdict: no sign of copying" in clean and "0 of 256 images are exact copies" in clean
    assert "as varied as unseen brains" in alike and "[0.95, 1.05]" in alike
    assert "indistinguishable from unseen brains" in indist
    assert "better than held-out slices, blurred 1 px" in ladder and "better than linear model" in ladder
    far, copies, collapsed, seen, _ = checks.readings(_checks(
        rng.normal(0.70, 0.01, 256), [1.15, 1.30], rng.gamma(2.0, 0.01, 256), [0.9, 1.0], duplicates=1))
    assert "further from the training images" in far
    assert "Verdict: copies" in copies and "1 of 256 images are exact copies" in copies
    assert "less varied than unseen brains" in collapsed
    assert "Verdict: distinguishable" in seen
    close, near, unsure, unsure_dist, _ = checks.readings(_checks(
        rng.normal(0.95, 0.01, 256), [0.85, 1.05], np.r_[np.full(128, 0.5), rng.gamma(2.0, 0.01, 128)], [0.55, 0.7]))
    assert "closer to the training images than unseen brains are. That is not better" in close
    assert "Verdict: near copies" in near and "no sign" not in near.lower()
    assert "undetermined" in unsure and "undetermined" in unsure_dist
    rows = checks.ladder_table(_checks(rng.normal(0.85, 0.01, 64), [0.95, 1.05], rng.gamma(2.0, 0.01, 64),
                                       [0.45, 0.58]))[1]
    assert [r[0] for r in rows] == ["generated", "held-out slices", "held-out slices, blurred 1 px",
                                    "linear model (PCA-Gaussian)"]
    assert rows[0][5] == "1.00 [0.95, 1.05] (as varied)"


def test_markdown_markers_keep_spaces_outside():
    from oasis_dcgan.post.document import Bold, Code, _md_inline

    assert _md_inline([Bold("Data: "), "sample brains"]) == "**Data:** sample brains"
    assert _md_inline(["a", Code(" x "), "b"]) == "a `x` b"
