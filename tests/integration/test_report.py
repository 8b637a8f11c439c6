"""Post-processing: metrics files, figures that are not blank, GIF order, the report, idempotence."""

import json
import shutil

import numpy as np
import pytest

from oasis_dcgan import config
from oasis_dcgan.post import report, verdicts
from oasis_dcgan.rundir import RunDir


FIGS = ("loss.png", "ssim.png", "progress.gif", "notable_epochs.png", "last_vs_real.png", "nn_pairs.png",
        "nn_ssim.png")


@pytest.fixture
def finished_run(tiny_run):
    return tiny_run


def test_postprocess_outputs(finished_run):
    import imageio.v3 as iio

    m = report.postprocess(RunDir(finished_run))
    rd = finished_run / "report"
    metrics = json.loads((rd / "metrics.json").read_text())
    assert len(metrics["seed_max_ssim"]["per_epoch"]) == 3
    assert metrics["seed_max_ssim"]["final"] == metrics["seed_max_ssim"]["per_epoch"][-1]
    assert {"mean", "median"} <= set(metrics["nn_ssim"])
    assert {"generated", "real", "ratio", "ci95", "relative", "relative_ci95", "verdict"} <= set(metrics["diversity"])
    assert {"verdict", "duplicates", "near_copies"} <= set(metrics["copying"])
    assert metrics["copying"]["duplicates"]["count"] == len(metrics["copying"]["duplicates"]["indices"])
    assert {"accuracy", "ci95", "held_out", "verdict"} <= set(metrics["distribution"])
    assert metrics["nn_ssim"]["closeness"]["verdict"] in (verdicts.CLOSER, verdicts.LEVEL, verdicts.FURTHER,
                                                          verdicts.UNDETERMINED)
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
    assert "Closeness to the training split: median NN-SSIM" in md and "MS-SSIM diversity over" in md  # readings
    assert "Copying: " in md and "Distribution: a classifier" in md and "On the ladder of anchors" in md
    assert "| linear model (PCA-Gaussian) |" in md  # the ladder's table
    assert "not the seed's recipe" in report.recipe({"train": {"adam_beta1": 0.5, "ema_kimg": 10}})
    assert "not the seed's" not in report.recipe({"train": {"lr": 1e-4, "adam_beta1": 0.9, "batch_size": 16}})
    for key, value in config.recipe(config.load(config.preset("demo"))).items():  # every recipe key the demo sets
        if value != config.seed_recipe()[key]:
            words = report.recipe({"train": {key.split(".")[1]: value}})
            assert "not the seed's recipe" in words and key in words, key
    for departs in ({"lr": 2e-4}, {"d_dropout_scale": 0.0}, {"batch_size": 8}, {"d_lr_ratio": 2.0},
                    {"lr_rampdown": 0.5}, {"loss": "hinge"}, {"d_spectral_norm": True}, {"augment": "cutout"}):
        assert "not the seed's recipe" in report.recipe({"train": departs}), departs
    assert m["run_complete"] is True


def test_seed_metric_matches_an_independent_recomputation(finished_run, dataset32):
    import tensorflow as tf

    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.prep.reader import ShardReader

    report.postprocess(RunDir(finished_run))
    rd = finished_run / "report"
    sel = json.loads((rd / "metric_batches.json").read_text())
    gen = np.load(finished_run / "samples" / "epoch_0003.npy")
    r = ShardReader(dataset32, sel["split"])
    vals = [tf.image.ssim(gen, to_unit(r.read(b))[..., None], max_val=2.0).numpy() for b in sel["batches"]]
    expected = float(np.max(vals))
    got = json.loads((rd / "metrics.json").read_text())["seed_max_ssim"]["final"]
    assert got == pytest.approx(expected, abs=1e-4)


def test_rerun_reuses_cached_values(finished_run, monkeypatch):
    from oasis_dcgan.post import metrics

    report.postprocess(RunDir(finished_run))
    calls, real = [], metrics.max_ssim_over_batches
    monkeypatch.setattr(metrics, "max_ssim_over_batches", lambda *a, **k: calls.append(1) or real(*a, **k))
    report.postprocess(RunDir(finished_run))
    assert not calls, "no epoch's seed metric was computed again"


def test_running_run_reports_epochs_so_far(finished_run, tmp_path):
    run = tmp_path / "running"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("report", "generator.keras", "state.json"))
    (run / "samples" / "epoch_0003.npy").unlink()
    m = report.postprocess(RunDir(run))
    assert m["epochs_done"] == 2 and m["run_complete"] is False
    assert "in progress" in (run / "report" / "report.md").read_text()
