"""Post-processing: metrics files, figures that are not blank, GIF order, the report, idempotence."""
import json
import shutil

import numpy as np
import pytest

from oasis_dcgan import config
from oasis_dcgan.post import checks, figures, quality, report

from tests.conftest import log_lines

FIGS = ("loss.png", "ssim.png", "progress.gif", "notable_epochs.png", "last_vs_real.png", "nn_pairs.png",
        "nn_ssim.png")


@pytest.fixture
def finished_run(tiny_run):
    return tiny_run


def test_postprocess_outputs(finished_run):
    import imageio.v3 as iio

    m = report.postprocess(finished_run)
    rd = finished_run / "report"
    metrics = json.loads((rd / "metrics.json").read_text())
    assert len(metrics["seed_max_ssim"]["per_epoch"]) == 3
    assert metrics["seed_max_ssim"]["final"] == metrics["seed_max_ssim"]["per_epoch"][-1]
    assert {"mean", "median"} <= set(metrics["nn_ssim"])
    assert {"generated", "real", "ratio", "ci95", "verdict"} <= set(metrics["diversity"])
    assert {"flagged", "share", "held_out_share"} <= set(metrics["copying"])
    assert {"held_out", "blurred", "linear", "final_holdout"} <= set(metrics["anchors"])
    features = metrics["feature_distances"]
    assert features["fid"] is None and "never downloaded" in features["note"].replace("Nothing is ever", "never")
    lines = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    sel = json.loads((rd / "metric_batches.json").read_text())
    assert sel["split"] == "train" and len(sel["batches"]) == 10 and all(len(b) == 16 for b in sel["batches"])
    for f in FIGS:
        img = iio.imread(rd / f, index=0) if f.endswith(".gif") else iio.imread(rd / f)
        assert img.astype(float).std() > 5, f"{f} is blank"
    md = (rd / "report.md").read_text()
    html = (rd / "report.html").read_text()
    for f in FIGS:
        assert f"({f})" in md, f
    assert html.count("<img") == len(FIGS) and "data:image/png;base64" in html and "src=\"report" not in html
    assert "0.65" in md and "does not" in md
    assert "**Training recipe:** " in md and "the seed's recipe" in md
    assert "Nearest-neighbour SSIM: median" in md and "MS-SSIM diversity over" in md  # the readings
    assert "Copying: " in md and "On the ladder of anchors, the generator" in md
    assert "| linear model (PCA-Gaussian) |" in md  # the ladder's table
    assert "not the seed's recipe" in report.recipe({"train": {"adam_beta1": 0.5, "ema_kimg": 10}})
    assert "not the seed's" not in report.recipe({"train": {"lr": 1e-4, "adam_beta1": 0.9, "batch_size": 16}})
    for key, value in config.recipe(config.load(config.preset("demo"))).items():  # every recipe key the demo sets
        if value != config.seed_recipe()[key]:
            words = report.recipe({"train": {key.split(".")[1]: value}})
            assert "not the seed's recipe" in words and key in words, key
    for departs in ({"lr": 2e-4}, {"d_dropout_scale": 0.0}, {"batch_size": 8}, {"d_lr_ratio": 2.0},
                    {"lr_rampdown": 0.5}):
        assert "not the seed's recipe" in report.recipe({"train": departs}), departs
    assert m["run_complete"] is True


def test_seed_metric_matches_an_independent_recomputation(finished_run, dataset32):
    import tensorflow as tf

    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.prep.reader import ShardReader

    report.postprocess(finished_run)
    rd = finished_run / "report"
    sel = json.loads((rd / "metric_batches.json").read_text())
    gen = np.load(finished_run / "samples" / "epoch_0003.npy")
    r = ShardReader(dataset32, sel["split"])
    vals = [tf.image.ssim(gen, to_unit(r.read(b))[..., None], max_val=2.0).numpy() for b in sel["batches"]]
    expected = float(np.max(vals))
    got = json.loads((rd / "metrics.json").read_text())["seed_max_ssim"]["final"]
    assert got == pytest.approx(expected, abs=1e-4)


def test_rerun_reuses_cached_values(finished_run):
    report.postprocess(finished_run)
    with log_lines() as logs:
        report.postprocess(finished_run)
    assert not any("seed metric for" in x for x in logs), "nothing recomputed"


def test_running_run_reports_epochs_so_far(finished_run, tmp_path):
    run = tmp_path / "running"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("report", "generator.keras", "state.json"))
    (run / "samples" / "epoch_0003.npy").unlink()
    m = report.postprocess(run)
    assert m["epochs_done"] == 2 and m["run_complete"] is False
    assert "in progress" in (run / "report" / "report.md").read_text()


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
