"""Training: artefacts, checkpoint format, fallback, stops, resume rules.

SIGKILL and requeue: tests/cluster/test_slurm_failures.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from oasis_dcgan.training import model, trainer
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.config import DataConfig

from tests.conftest import REPO, rank_digests, resumes, small_cfg, small_overrides, stop_checkpoints, train_cmd


def test_one_rank_run_directory_and_checkpoint_format(dataset32, tmp_path):
    import tensorflow as tf

    run = tmp_path / "run"
    s = trainer.run(small_cfg(dataset32, run, "train.epochs=2"), log_to_stdout=False)
    assert s["global_step"] == 8
    assert RunDir(run).read_state()["state"] == "finished" and RunDir(run).read_state()["epochs"] == 2
    for rel in ("options.json", "stats.jsonl", "generator.keras", "state.json", "samples/epoch_0001.npy",
                "samples/epoch_0002.png", "tensorboard"):
        assert (run / rel).exists(), rel
    opts = json.loads((run / "options.json").read_text())
    assert opts["world_size"] == 1 and opts["config"]["train"]["epochs"] == 2 and opts["steps_per_epoch"] == 4
    data = opts["config"]["data"]
    assert (data["resolution"], data["layout"]) == (32, "oasis-png"), "options.json records the data trained on"
    assert len(opts["dataset_manifest_sha256"]) == 64 and "tensorflow-cpu" in opts["versions"]
    epochs = [r for r in RunDir(run).read_stats() if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for r in epochs:
        assert {"g_loss", "d_loss", "images_per_s", "wall_time", "global_step", "step_time"} <= set(r)
        assert r["g_loss_min"] <= r["g_loss"] <= r["g_loss_max"], "the epoch mean lies within its steps"
    assert np.load(run / "samples" / "epoch_0002.npy").shape == (16, 32, 32, 1)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["ckpt-000000008"], \
        "by default an epoch end writes no checkpoint (10 minutes had not passed); the end of training does"
    assert json.loads((run / "checkpoints" / "ckpt-000000008" / "meta.json").read_text())["reason"] == "end of training"
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    keys = tf.train.load_checkpoint(str(ckpt / "ckpt")).get_variable_to_shape_map()
    assert any("generator" in k and "g_dense" in k for k in keys)
    assert any("discriminator" in k and "d_conv1" in k for k in keys)
    assert any("g_optimizer" in k for k in keys) and any("state" in k and "global_step" in k for k in keys)


def test_checkpoints_are_written_in_the_background_and_each_is_logged_once(dataset32, tmp_path, monkeypatch):
    run = tmp_path / "run"
    # The write of step 3 is held for 1.5 s: the loop must go on meanwhile, and step 4's save waits for it.
    # (Not step 2: the first write, which can take a second on a loaded host, is still in flight then.)
    monkeypatch.setenv("OASIS_TEST_CHECKPOINT_DELAY", "3:1.5")
    s = trainer.run(small_cfg(dataset32, run, "train.epochs=2", "train.checkpoint_every_steps=1",
                            "train.keep_checkpoints=8"), log_to_stdout=False)
    saves = [r for r in RunDir(run).read_stats() if r["kind"] == "checkpoint"]
    assert [r["global_step"] for r in saves] == list(range(1, s["global_step"] + 1)), "every step's save, once"
    held, after = saves[2], saves[3]
    # A save the loop waits out blocks for at least its whole write; in the background, for the write
    # before it and the snapshot only, whatever their length on a loaded host.
    assert held["write_s"] >= 1.5 and held["blocking_s"] < held["write_s"], "the loop did not wait for it"
    assert after["blocking_s"] > 0.5, "the next save waited for the write in flight"
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [f"ckpt-{k:09d}" for k in range(1, 9)]
    assert not list((run / "checkpoints").glob(".*")), "no temp left"
    last = json.loads((run / "checkpoints" / "ckpt-000000008" / "meta.json").read_text())
    assert last["global_step"] == 8 and last["epoch"] == 2, "the final save holds the final state"


def _run_until_killed(cmd, run_dir, kill_at_step, timeout=300):
    """Start training in its own session and SIGKILL every process of it after `kill_at_step`."""
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    end = time.time() + timeout
    ck = Path(run_dir) / "checkpoints"
    while time.time() < end and proc.poll() is None:
        steps = [int(p.name.split("-")[1]) for p in ck.glob("ckpt-*")] if ck.is_dir() else []
        if steps and max(steps) >= kill_at_step:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return max(int(p.name.split("-")[1]) for p in ck.glob("ckpt-*"))


def test_corrupt_newest_checkpoint_falls_back(dataset32, tmp_path):
    run = tmp_path / "run"
    trainer.run(small_cfg(dataset32, run, "train.epochs=1", "train.checkpoint_every_steps=1",
                      "train.keep_checkpoints=3"), log_to_stdout=False)
    ckpts = sorted((run / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["ckpt-000000002", "ckpt-000000003", "ckpt-000000004"]
    data_file = next(ckpts[-1].glob("ckpt.data-*"))
    with open(data_file, "r+b") as f:  # truncate the newest, as a crash mid-copy would
        f.truncate(data_file.stat().st_size // 2)
    half_written = run / "checkpoints" / ".ckpt-000000005.4242.tmp"  # a save killed half-way
    half_written.mkdir()
    (half_written / "ckpt.index").write_bytes(b"partial")
    s = trainer.run(small_cfg(dataset32, run, "train.epochs=2", "train.checkpoint_every_steps=1",
                          "train.keep_checkpoints=3"))
    [back] = resumes(run)
    assert back["checkpoint"] == "ckpt-000000003" and back["global_step"] == 3
    assert [x["checkpoint"] for x in back["skipped"]] == ["ckpt-000000004"] and "sha256" in back["skipped"][0]["why"]
    assert s["global_step"] == 8
    epochs = [x["epoch"] for x in RunDir(run).read_stats() if x["kind"] == "epoch"]
    assert epochs == [1, 2]
    assert not half_written.exists()


def test_a_signal_stops_with_one_checkpoint_and_a_rerun_finishes_identically(dataset32, tmp_path):
    """USR2 to a training process: it stops after an agreed step with one save and exit 143; a rerun resumes.

    In fresh processes with one intra-op thread each: with more, TensorFlow's CPU kernels do
    not add up partial sums in a fixed order, and no run is bit-reproducible.
    """
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = subprocess.run(train_cmd(dataset32, ref, 1, 2), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    proc = subprocess.Popen(train_cmd(dataset32, run, 1, 2), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    end = time.time() + 300
    while len(list((run / "checkpoints").glob("ckpt-*"))) < 3 and time.time() < end and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    [stopped_at] = stop_checkpoints(run, "SIGUSR2")  # the stop wrote one checkpoint
    state = RunDir(run).read_state()
    assert 3 <= stopped_at < 12 and state["state"] == "stopped" and "SIGUSR2" in state["reason"]
    r = subprocess.run(train_cmd(dataset32, run, 1, 2), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x["global_step"] for x in resumes(run)] == [stopped_at]
    assert rank_digests(run, 1) == rank_digests(ref, 1), "weights bit-identical to the uninterrupted run"


def test_unloadable_checkpoints_stop_the_run_and_restart_moves_them_aside(dataset32, tmp_path):
    from oasis_dcgan.training.checkpoint import CheckpointError

    run = tmp_path / "run"
    trainer.run(small_cfg(dataset32, run, "train.epochs=1", "train.checkpoint_every_steps=2"), log_to_stdout=False)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    for data_file in (run / "checkpoints").glob("ckpt-*/ckpt.data-*"):
        data_file.write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as err:
        trainer.run(small_cfg(dataset32, run, "train.epochs=2"), log_to_stdout=False)
    for name in before:
        assert name in str(err.value), "the error names every checkpoint"
    assert "sha256" in str(err.value) and "--restart" in str(err.value)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before, "nothing was deleted"
    r = subprocess.run(train_cmd(dataset32, run, 1, 1, "--restart"), cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (aside,) = (run / "set-aside").iterdir()
    assert sorted(p.name for p in (aside / "checkpoints").iterdir()) == before
    assert (aside / "stats.jsonl").is_file() and RunDir(run).finished()
    assert "moved the previous checkpoints" in r.stdout
    assert [x["epoch"] for x in RunDir(run).read_stats() if x["kind"] == "epoch"] == [1], "a fresh record"


def test_a_checkpoint_of_another_model_or_dataset_is_refused_naming_the_key(dataset32, png_release, tmp_path):
    from oasis_dcgan.prep import pack
    from oasis_dcgan.training.checkpoint import CheckpointError

    run = tmp_path / "run"
    trainer.run(small_cfg(dataset32, run, "train.epochs=1"), log_to_stdout=False)
    with pytest.raises(CheckpointError, match="train.noise_dim = 64"):
        trainer.run(small_cfg(dataset32, run, "train.epochs=2", "train.noise_dim=64"), log_to_stdout=False)
    other = tmp_path / "other"
    pack.preprocess(png_release, other, DataConfig(resolution=32, shard_size=50))
    with pytest.raises(CheckpointError, match="allow_dataset_change"):
        trainer.run(small_cfg(other, run, "train.epochs=2"), log_to_stdout=False)
    s = trainer.run(small_cfg(other, run, "train.epochs=2", "train.allow_dataset_change=true"), log_to_stdout=False)
    assert s["global_step"] == 8
    assert "dataset was" in (run / "log.txt").read_text()


def test_the_config_sets_the_learning_rate_on_resume_and_the_rampdown_lowers_it_by_epoch(dataset32, tmp_path):
    import tensorflow as tf

    run = tmp_path / "run"
    trainer.run(small_cfg(dataset32, run, "train.epochs=1"), log_to_stdout=False)
    # Resumed with a new lr and a ramp-down over all (2) epochs: epoch 2 trains at half the new lr.
    trainer.run(small_cfg(dataset32, run, "train.epochs=2", "train.lr=5e-4", "train.lr_rampdown=1.0"),
                log_to_stdout=False)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    reader = tf.train.load_checkpoint(str(ckpt / "ckpt"))
    rates = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
             if "optimizer" in k and k.split("/")[1].endswith("learning_rate")]
    assert len(rates) == 2 and all(r == pytest.approx(2.5e-4) for r in rates), rates
    assert json.loads((ckpt / "meta.json").read_text())["learning_rate"] == pytest.approx(5e-4)
    assert "learning rate was 0.0001" in (run / "log.txt").read_text()
    lrs = [r["lr"] for r in RunDir(run).read_stats() if r["kind"] == "epoch"]
    assert lrs == [pytest.approx(1e-4), pytest.approx(2.5e-4)]


@pytest.mark.parametrize("first,then", [("bf16", "bf16"), ("fp32", "fp16")])
def test_half_precision_trains_resumes_and_is_recorded(dataset32, tmp_path, first, then):
    import tensorflow as tf


    g = model.build_generator(32, 100, then)
    assert g.get_layer("g_deconv1").compute_dtype == {"bf16": "bfloat16", "fp16": "float16"}[then]
    assert all(v.dtype == "float32" for v in g.trainable_variables), "variables stay fp32"
    run = tmp_path / "run"
    trainer.run(small_cfg(dataset32, run, "train.epochs=1", f'train.precision="{first}"'), log_to_stdout=False)
    s = trainer.run(small_cfg(dataset32, run, "train.epochs=2", f'train.precision="{then}"'), log_to_stdout=False)
    assert s["global_step"] == 8
    [back] = resumes(run)
    assert back["checkpoint"] == "ckpt-000000004"
    if first != then:
        assert back["config_changes"] == {"precision": [first, then]} and back["started_afresh"] == ["loss_scale"]
    else:
        assert back["config_changes"] == {} and back["started_afresh"] == []
    assert json.loads((run / "options.json").read_text())["config"]["train"]["precision"] == then
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    assert json.loads((ckpt / "meta.json").read_text())["precision"] == then
    epochs = [r for r in RunDir(run).read_stats() if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(np.isfinite(r["g_loss"]) for r in epochs)
    assert np.load(run / "samples" / "epoch_0002.npy").dtype == np.float32
    reader = tf.train.load_checkpoint(str(ckpt / "ckpt"))
    scales = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("loss_scale/g_scale")]
    assert (len(scales) == 1 and 0 < scales[0] < np.inf) if then == "fp16" else not scales
    images = model.generate(model.load_generator(run / "generator.keras"), 4, rng_seed=0)
    assert images.dtype == np.float32 and np.isfinite(images).all() and images.shape == (4, 32, 32)


def test_a_second_train_on_a_live_run_is_refused_naming_the_first(dataset32, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd(dataset32, run, 1, 200), cwd=REPO, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 300
        while not list(run.glob("checkpoints/ckpt-*")) and time.time() < end and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None and (run / ".lock").is_file()
        second = subprocess.run(train_cmd(dataset32, run, 1, 200), cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]  # a user error: never retried
        assert f"pid {first.pid}" in second.stderr and "is being trained by" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    third = subprocess.run(train_cmd(dataset32, run, 1, 1), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"process {first.pid} on this host is gone" in (run / "log.txt").read_text()
    assert not (run / ".lock").exists(), "released when the run ends"


@pytest.mark.slow
def test_world_size_2_then_1_then_2_visits_every_image_once_an_epoch(dataset32, tmp_path):
    """Preempted twice and resumed on another number of ranks: each epoch still trains on exactly its images."""
    full = ("--set", "train.max_steps_per_epoch=0")  # a cap in steps would depend on the world size
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = subprocess.run(train_cmd(dataset32, ref, 2, 2, *full), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    first = _run_until_killed(train_cmd(dataset32, run, 2, 2, *full), run, kill_at_step=5)      # mid epoch 1
    second = _run_until_killed(train_cmd(dataset32, run, 1, 2, *full), run, kill_at_step=first + 14)  # into epoch 2
    r = subprocess.run(train_cmd(dataset32, run, 2, 2, *full), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [(x["global_step"], x["written_by"], x["world_size"]) for x in resumes(run)] == [(first, 2, 1),
                                                                                           (second, 1, 2)]

    def epochs(d):
        return [(x["epoch"], x["images"], x["images_sha256"]) for x in RunDir(d).read_stats() if x["kind"] == "epoch"]

    assert epochs(run) == epochs(ref) and [e[1] for e in epochs(ref)] == [192, 192]
    last = [x for x in RunDir(run).read_stats() if x["kind"] == "epoch"][-1]
    assert last["kimg"] == pytest.approx(0.384)


def test_several_steps_a_call_train_exactly_as_one_a_call(dataset32, tmp_path):
    """Steps run in one compiled call must be the same steps: epoch ends, step checkpoints and the
    weights fall exactly where one step a call puts them.

    Each run gets a fresh process: bit-identical CPU runs need one thread, and TensorFlow takes
    thread settings only before it first runs (earlier tests in this process have run it)."""
    runs = {}
    for k in (1, 4):
        run = tmp_path / f"k{k}"
        overrides = small_overrides(dataset32, run, "train.epochs=2", "train.max_steps_per_epoch=7",
                                  "train.deterministic=true", "train.checkpoint_every_steps=5",
                                  "train.keep_checkpoints=8", f"train.steps_per_call={k}")
        script = ("import json, sys\n"
                  "from oasis_dcgan import config\n"
                  "from oasis_dcgan.training import trainer\n"
                  "trainer.FAST_STEP_S = 60.0  # whatever this CPU's speed: several steps a call\n"
                  "s = trainer.run(config.load(None, json.loads(sys.argv[1])), log_to_stdout=False)\n"
                  "print(json.dumps({k: s[k] for k in ('weights_sha256', 'global_step')}))\n")
        r = subprocess.run([sys.executable, "-c", script, json.dumps(overrides)], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "intra_op_threads ignored" not in r.stdout + r.stderr
        s = json.loads(r.stdout.strip().splitlines()[-1])
        stats = RunDir(run).read_stats()
        runs[k] = (s, [r for r in stats if r["kind"] == "epoch"], [r["global_step"] for r in stats
                                                                    if r["kind"] == "checkpoint"])
    (one, ep1, ck1), (four, ep4, ck4) = runs[1], runs[4]
    assert one["weights_sha256"] == four["weights_sha256"] and one["global_step"] == four["global_step"] == 14
    assert ck1 == ck4 == [5, 10, 14], "step checkpoints land on their steps, the last at the end"
    assert [r["calls"] for r in ep1] == [7, 7] and [r["calls"] for r in ep4] == [3, 2], \
        "k=4: 1 step (the first call, timed) + 4 (to the step-5 checkpoint) + 2 (to the epoch end), then 3 + 4"
    for a, b in zip(ep1, ep4):
        assert (a["g_loss"], a["d_loss"], a["images_sha256"]) == (b["g_loss"], b["d_loss"], b["images_sha256"])


def test_the_generator_average_follows_its_formula_and_is_exported_beside_the_raw_generator(dataset32, tmp_path):
    import tensorflow as tf

    from oasis_dcgan.training.step import ema_beta, update_average

    assert ema_beta(10.0, 16) == pytest.approx(0.5 ** (16 / 10_000))
    assert ema_beta(0.0, 16) == 0.0
    # Ramp-up: the half-life is at most 5% of the images seen, this step's included.
    assert float(ema_beta(10.0, 16, tf.constant(984, tf.int64), 0.05)) == pytest.approx(0.5 ** (16 / 50), rel=1e-6)
    assert float(ema_beta(10.0, 16, tf.constant(10 ** 6, tf.int64), 0.05)) == pytest.approx(0.5 ** (16 / 10_000))
    g, avg = model.build_generator(32), model.build_generator(32)
    before = [v.numpy() for v in avg.variables]
    update_average(avg, g, 0.9)
    for a, w, b0, tv in zip(avg.variables, g.variables, before, [v.trainable for v in avg.variables]):
        want = w.numpy() + (b0 - w.numpy()) * 0.9 if tv else w.numpy()
        np.testing.assert_allclose(a.numpy(), want, rtol=1e-6, atol=1e-7)
    run = tmp_path / "run"
    trainer.run(small_cfg(dataset32, run, "train.epochs=2", "train.ema_kimg=0.05"), log_to_stdout=False)
    avg_g, raw_g = model.load_generator(run / "generator.keras"), model.load_generator(run / "generator_raw.keras")
    z = tf.random.normal([4, 100], seed=1)
    assert not np.allclose(avg_g(z, training=False), raw_g(z, training=False)), "the average is not G itself"
    # An older run's checkpoints hold no average: it starts from G's restored weights.
    old = tmp_path / "old"
    trainer.run(small_cfg(dataset32, old, "train.epochs=1", "train.ema_kimg=0"), log_to_stdout=False)
    assert not (old / "generator_raw.keras").exists()
    trainer.run(small_cfg(dataset32, old, "train.epochs=2"), log_to_stdout=False)
    assert "holds no generator_ema" in (old / "log.txt").read_text()


def test_the_small_data_recipe_trains_identically_on_every_rank_and_resumes_exactly(dataset32, tmp_path):
    """Spectral normalisation, hinge loss, TTUR and DiffAugment on 2 ranks: every rank ends with the same
    weights, and a run stopped after its first epoch and extended ends bit-identical to one that was not."""
    recipe = ["--set", "train.loss=\"hinge\"", "--set", "train.d_spectral_norm=true", "--set", "train.d_lr_ratio=4",
              "--set", "train.augment=\"translation,cutout,color\""]
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = subprocess.run(train_cmd(dataset32, ref, 2, 2, *recipe), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    for epochs in (1, 2):
        r = subprocess.run(train_cmd(dataset32, run, 2, epochs, *recipe), cwd=REPO, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
    digests = rank_digests(run, 2)
    assert digests[0] == digests[1] and digests == rank_digests(ref, 2)
    options = RunDir(run).read_options()["config"]["train"]
    assert options["loss"] == "hinge" and options["d_spectral_norm"] is True


def _timed_step(cfg, ranks, pause_input_s: float):
    """The job's compiled steps over a 32x32 stream whose every batch arrives `pause_input_s` late."""
    import tensorflow as tf

    from oasis_dcgan.training import model, step

    nets = model.build_all(cfg, cfg.train.lr)
    state = step.TrainState(cfg.train.noise_dim, cfg.train.seed, 64)
    steps = step.build_train_step(nets, state, ranks, cfg.train)
    slots = tf.constant(np.arange(cfg.train.batch_size)[None], tf.int64)

    def late(x):
        time.sleep(pause_input_s)
        return x

    shape = [cfg.train.batch_size, 32, 32, 1]
    batches = tf.data.Dataset.from_tensors(tf.zeros(shape, tf.uint8)).repeat()
    batches = batches.map(lambda x: (tf.ensure_shape(tf.numpy_function(late, [x], tf.uint8), shape), slots))
    unbuffered = tf.data.Options()  # no batch made ahead while the step runs: each one is waited for
    unbuffered.experimental_optimization.inject_prefetch = False
    unbuffered.autotune.enabled = False
    batches = iter(batches.with_options(unbuffered))
    want = lambda n: (batches, tf.constant(0.0), tf.constant(n), tf.constant(2 ** 40, tf.int64))  # noqa: E731
    steps(*want(1))  # traced
    return lambda n: steps(*want(n))[-1].numpy() / n * 1000


def test_the_step_split_puts_a_late_input_and_a_slow_allreduce_where_they_belong(dataset32, tmp_path):
    """What train.step_split times, against known delays: a batch that arrives 40 ms late is
    input wait, an allreduce held 60 ms (a slow peer) is allreduce wait, and neither leaks into
    the other; switched off, both read 0."""
    import tensorflow as tf

    from oasis_dcgan.training import distributed

    class SlowPeer(distributed.OneRank):
        size = 2  # a world of two, as the step sees it: there is an allreduce to wait for

        def allreduce_mean(self, tensors, half=0):
            held = tf.numpy_function(lambda: np.float32(time.sleep(0.06) or 0), [], tf.float32)
            with tf.control_dependencies([held]):
                return [tf.identity(x) for x in tensors]

    cfg = small_cfg(dataset32, tmp_path / "run", "data.resolution=32")
    input_ms, reduce_ms = _timed_step(cfg, SlowPeer(), 0.04)(5)
    # Each bound below the other's delay plus its own: a leak of one into the other would show.
    assert 38 <= input_ms < 80 and 58 <= reduce_ms < 95, (input_ms, reduce_ms)
    input_ms, reduce_ms = _timed_step(cfg, distributed.OneRank(), 0.0)(5)
    assert input_ms < 20 and reduce_ms == 0, "no delay: well under the 40 ms one; one rank: no allreduce timed"
    cfg.train.step_split = False
    assert list(_timed_step(cfg, SlowPeer(), 0.04)(3)) == [0.0, 0.0]
    cfg.train.step_split, cfg.train.deterministic = True, True  # op determinism refuses timestamps: none taken
    assert list(_timed_step(cfg, SlowPeer(), 0.04)(3)) == [0.0, 0.0]


def test_a_rank_imports_tensorflow_without_keras_extras_and_they_import_afterwards(dataset32, tmp_path):
    """Keras imports scikit-learn and pyplot when they are installed; the train job's import of the
    Trainer hides them (a rank starts faster), it trains, and both import as usual afterwards."""
    args = [str(a) for a in train_cmd(dataset32, tmp_path / "run", 1, 1)[3:]]
    code = ("import sys\n"
            "from oasis_dcgan.cli import main\n"
            "from oasis_dcgan.training import KERAS_EXTRAS\n"
            f"assert main(['train', *{args!r}]) == 0\n"
            "print(sorted(m for m in KERAS_EXTRAS if m in sys.modules))\n"
            "import sklearn.linear_model, matplotlib.pyplot\n"
            "print(sys.modules['sklearn'] is not None and sys.modules['matplotlib'] is not None)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["[]", "True"], out.stdout
    assert rank_digests(tmp_path / "run", 1)[0], "it trained"
