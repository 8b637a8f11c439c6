"""Post-processing: metrics files, figures that are not blank, GIF order, the report, idempotence."""
import json
import shutil

import numpy as np
import pytest

from oasis_dcgan import config
from oasis_dcgan.post import checks, figures, report

FIGS = ("loss.png", "ssim.png", "progress.gif", "notable_epochs.png", "last_vs_real.png", "nn_pairs.png",
        "nn_ssim.png")


@pytest.fixture
def finished_run(tiny_run):
    return tiny_run


def test_postprocess_outputs(finished_run):
    import imageio.v3 as iio

    m = report.postprocess(finished_run, log=lambda *a: None)
    rd = finished_run / "report"
    metrics = json.loads((rd / "metrics.json").read_text())
    assert len(metrics["seed_max_ssim"]["per_epoch"]) == 3
    assert metrics["seed_max_ssim"]["final"] == metrics["seed_max_ssim"]["per_epoch"][-1]
    assert {"mean", "median"} <= set(metrics["nn_ssim"])
    assert {"generated", "real"} <= set(metrics["ms_ssim_diversity"])
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

    report.postprocess(finished_run, log=lambda *a: None)
    rd = finished_run / "report"
    sel = json.loads((rd / "metric_batches.json").read_text())
    gen = np.load(finished_run / "samples" / "epoch_0003.npy")
    r = ShardReader(dataset32, sel["split"])
    vals = [tf.image.ssim(gen, to_unit(r.read(b))[..., None], max_val=2.0).numpy() for b in sel["batches"]]
    expected = float(np.max(vals))
    got = json.loads((rd / "metrics.json").read_text())["seed_max_ssim"]["final"]
    assert got == pytest.approx(expected, abs=1e-4)


def test_rerun_reuses_cached_values(finished_run):
    report.postprocess(finished_run, log=lambda *a: None)
    logs = []
    report.postprocess(finished_run, log=logs.append)
    assert not any("seed metric for" in x for x in logs), "nothing recomputed"


def test_running_run_reports_epochs_so_far(finished_run, tmp_path):
    run = tmp_path / "running"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("report", "generator.keras", "state.json"))
    (run / "samples" / "epoch_0003.npy").unlink()
    m = report.postprocess(run, log=lambda *a: None)
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


def _checks(gen, held, div_gen, div_real):
    return {"nn_ssim": {"median": gen}, "nn_ssim_held_out": {"median": held},
            "ms_ssim_diversity": {"generated": div_gen, "real": div_real, "scales": 3, "n": 64, "real_split": "train",
                                  "generated_ci95": [div_gen - 0.01, div_gen + 0.01], "real_ci95": [0.45, 0.52]}}


def test_readings_say_which_way_each_check_points():
    copying, alike = checks.readings(_checks(0.95, 0.87, 0.50, 0.50))
    assert "sign of copying" in copying and "no sign" not in copying and "+0.080" in copying
    assert "vary as much" in alike and "ratio 1.00" in alike
    near, collapsed = checks.readings(_checks(0.84, 0.87, 0.60, 0.50))
    assert "as close to the training images as unseen brains are" in near
    assert "more alike" in collapsed and "ratio 1.20" in collapsed
    far, noisy = checks.readings(_checks(0.70, 0.87, 0.40, 0.50))
    assert "no sign of copying" in far and "-0.170" in far
    assert "less alike" in noisy and "3 scales" in noisy and "0.450-0.520" in noisy and "0.390-0.410" in noisy
    only_diversity = _checks(0.70, None, 0.40, 0.50)
    assert len(checks.readings(only_diversity)) == 1  # no held-out split: no baseline to read against


def test_markdown_markers_keep_spaces_outside():
    from oasis_dcgan.post.document import Bold, Code, _md_inline

    assert _md_inline([Bold("Data: "), "sample brains"]) == "**Data:** sample brains"
    assert _md_inline(["a", Code(" x "), "b"]) == "a `x` b"
