"""Post-processing: metrics files, figures that are not blank, GIF order, the report, idempotence."""

import numpy as np

from oasis_dcgan.post import checks, figures, quality, report


def test_gif_frames_follow_epoch_order_past_ten(tmp_path):
    import imageio.v3 as iio

    samples = tmp_path / "samples"
    samples.mkdir()
    for e in range(1, 13):  # brightness encodes the epoch
        np.save(samples / f"epoch_{e:04d}.npy", np.full((16, 16, 16, 1), -1 + e / 6.5, np.float32))
    found = report.epoch_samples(tmp_path)
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


def _checks(gen_ci, held_ci, ratio_ci, copies=0):
    """The parts of metrics.json the readings use: intervals decide, point estimates are their middles."""
    mid = lambda ci: sum(ci) / 2  # noqa: E731
    ratio = mid(ratio_ci)
    verdict = "less varied" if ratio_ci[0] > 1 else "more varied" if ratio_ci[1] < 1 else "as varied"
    copy = quality.copying(quality.Profile(nn=np.r_[np.full(copies, 1.0), np.full(256 - copies, 0.7)],
                                           nearest=np.zeros(256, int), brain=np.zeros(256), pairs=None),
                           0.93, {"count": 1, "n": 128, "share": 1 / 128, "ci95": [0.0, 0.04], "from": "test"})
    rung = lambda ci: {"nn_ssim": {"median": mid(ci), "ci95": ci, "n": 128}}  # noqa: E731
    return {"nn_ssim": {"median": mid(gen_ci), "ci95": gen_ci, "n": 256},
            "copying": copy,
            "diversity": {"generated": 0.5 * ratio, "real": 0.5, "ratio": ratio, "ci95": ratio_ci, "verdict": verdict,
                          "scales": 3, "n": 256, "real_split": "train"},
            "anchors": {"held_out": rung(held_ci), "blurred": rung([0.79, 0.81]), "linear": rung([0.72, 0.74])},
            "feature_distances": {}}


def test_readings_follow_the_intervals():
    near, copying, alike, ladder = checks.readings(_checks([0.83, 0.86], [0.82, 0.90], [0.95, 1.08]))
    assert "as close to the training images as unseen brains" in near
    assert "No sign of copying" in copying and "0 of 256" in copying
    assert "as varied as real slices" in alike and "[0.95, 1.08]" in alike
    assert "level with held-out slices (0.860)" in ladder and "above linear model" in ladder
    far, flagged, collapsed, low = checks.readings(_checks([0.68, 0.70], [0.82, 0.90], [1.05, 1.30], copies=13))
    assert "not yet as brain-like" in far
    assert "a sign of copying" in flagged and "13 of 256" in flagged
    assert "less varied than real slices" in collapsed
    assert "below held-out slices" in low and "below linear model" in low
    _, unsure, noisy, _ = checks.readings(_checks([0.68, 0.70], [0.82, 0.90], [0.70, 0.90], copies=6))
    assert "inconclusive" in unsure and "no sign" not in unsure.lower()
    assert "more varied than real slices" in noisy
    rows = checks.ladder_table(_checks([0.68, 0.70], [0.82, 0.90], [0.70, 0.90]))[1]
    assert [r[0] for r in rows] == ["generated", "held-out slices", "held-out slices, blurred 1 px",
                                    "linear model (PCA-Gaussian)"]
    assert rows[0][5] == "0.80 [0.70, 0.90] (more varied)"


def test_markdown_markers_keep_spaces_outside():
    from oasis_dcgan.post.document import Bold, Code, _md_inline

    assert _md_inline([Bold("Data: "), "sample brains"]) == "**Data:** sample brains"
    assert _md_inline(["a", Code(" x "), "b"]) == "a `x` b"
