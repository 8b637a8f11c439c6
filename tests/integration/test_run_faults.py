"""Faults a run directory must survive with nothing lost, each on real training processes at 32x32.

Each test is one row of the fault table (docs: "Resume, preemption and faults"); `FAULTS`
counts them, and test_fault_matrix_is_whole checks that every row has its test."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from oasis_dcgan import rundir
from oasis_dcgan.launch import retry, status
from oasis_dcgan.training.distributed import NO_JOB
from oasis_dcgan.post import report
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.training import trainer
from oasis_dcgan.config import DataConfig

from tests.conftest import REPO, SMALL_METRICS, small_cfg

pytestmark = pytest.mark.fault


def train_proc(dataset, run, epochs, *sets):
    return subprocess.Popen(train_args(dataset, run, epochs, *sets), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def train_args(dataset, run, epochs, *sets) -> list[str]:
    cmd = [sys.executable, "-m", "jobs.train", str(dataset), str(run), "--epochs", str(epochs), "--executor",
           "inprocess", "--batch-size", "8", "--set", "train.max_steps_per_epoch=4", "--set",
           "train.intra_op_threads=1", "--set", "train.tick_seconds=0.2"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def wait_for(cond, proc, what, timeout=300):
    end = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"ended before {what}: {proc.stderr.read()[-2000:]}"
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def epochs_logged(run) -> list[int]:
    return [r["epoch"] for r in RunDir(run).read_stats("epoch")]


def keep_checkpoints_up_to(run, step: int) -> None:
    """What a kill after `step` leaves: the checkpoints up to it and nothing of the final output."""
    for c in RunDir(run).checkpoints.glob("ckpt-*"):
        if int(c.name.split("-")[1]) > step:
            shutil.rmtree(c)


def test_extending_a_finished_run_then_a_stop_is_a_stop_not_a_finish(dataset32, tmp_path):
    run = tmp_path / "run"
    trainer.run(small_cfg(dataset32, run, "train.epochs=1"), log_to_stdout=False)
    assert RunDir(run).finished()
    proc = train_proc(dataset32, run, 40)
    wait_for(lambda: RunDir(run).read_state()["state"] == "training" and len(epochs_logged(run)) >= 2, proc,
             "the extension's first epoch")
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(300) == 143
    state = RunDir(run).read_state()
    assert state["state"] == "stopped" and "SIGUSR2" in state["reason"]
    d = retry.decide(RunDir(run), NO_JOB, 0, 143, max_requeues=5)
    assert d.action == "requeue" and not d.counted, "a stop during an extension is requeued, uncounted"
    text = status.status(RunDir(run))
    assert "stopped" in text and "finished" not in text.split("training", 1)[1]
    m = report.postprocess(RunDir(run), overrides=SMALL_METRICS)
    assert m["run_complete"] is False and "no final generator" in m["nn_ssim"]["source"], \
        "the earlier finish's generator is not scored as this run's"


def test_a_fresh_start_after_a_death_before_any_checkpoint_sets_the_record_aside(dataset32, tmp_path):
    run = tmp_path / "run"
    proc = train_proc(dataset32, run, 40)  # the default cadence: no checkpoint in the first 10 minutes
    wait_for(lambda: len(epochs_logged(run)) >= 2, proc, "two epochs")
    proc.kill()
    proc.wait()
    assert not list(RunDir(run).checkpoints.glob("ckpt-*"))
    trainer.run(small_cfg(dataset32, run, "train.epochs=2"), log_to_stdout=False)
    assert epochs_logged(run) == [1, 2], "every epoch once: nothing appended to the dead start's record"
    (aside,) = (run / rundir.SET_ASIDE).iterdir()
    assert len(RunDir(aside).read_stats("epoch")) >= 2 and (aside / rundir.SAMPLES).is_dir()
    assert "moved the earlier record" in RunDir(run).log.read_text()


def test_resume_under_another_seed_finishes_the_epoch_under_way_in_its_own_order(dataset32, tmp_path):
    run = tmp_path / "run"
    steps = ["train.checkpoint_every_steps=1", "train.keep_checkpoints=10"]
    trainer.run(small_cfg(dataset32, run, "train.epochs=1", "train.seed=3", *steps), log_to_stdout=False)
    first = RunDir(run).read_stats("epoch")[0]
    keep_checkpoints_up_to(run, 2)  # killed half-way through epoch 1
    trainer.run(small_cfg(dataset32, run, "train.epochs=2", "train.seed=4", *steps), log_to_stdout=False)
    again = RunDir(run).read_stats("epoch")
    assert [r["epoch"] for r in again] == [1, 2]
    assert again[0]["images_sha256"] == first["images_sha256"], "no image of epoch 1 repeated or skipped"
    assert "finishes in the order of seed 3" in RunDir(run).log.read_text()
    last = sorted(RunDir(run).checkpoints.glob("ckpt-*"))[-1]
    assert json.loads((last / "meta.json").read_text())["data_seed"] == 4, "the new seed from the next epoch"


def test_a_dataset_of_another_size_is_taken_on_when_allowed(dataset32, png_release, tmp_path):
    from oasis_dcgan.prep import pack, sample_data

    src, other = tmp_path / "src", tmp_path / "ds-other"
    sample_data.write_png_release(src, cases=(5, 2, 2), slices=32, resolution=64, rng_seed=2)
    pack.preprocess(src, other, DataConfig(resolution=32, shard_size=64))
    run = tmp_path / "run"
    steps = ["train.checkpoint_every_steps=1", "train.keep_checkpoints=10"]
    trainer.run(small_cfg(dataset32, run, "train.epochs=1", *steps), log_to_stdout=False)
    keep_checkpoints_up_to(run, 2)
    s = trainer.run(small_cfg(other, run, "train.epochs=1", "train.allow_dataset_change=true", *steps),
                    log_to_stdout=False)
    assert s["global_step"] == 6, "2 steps on the old data, then epoch 1 again from its first image"
    ep = RunDir(run).read_stats("epoch")
    assert [r["epoch"] for r in ep] == [1] and ep[0]["images"] == 32
    assert "starts again from its first image" in RunDir(run).log.read_text()


def test_a_stop_puts_the_state_and_every_note_on_disk_before_the_ranks_meet(dataset32, tmp_path):
    run, seen = tmp_path / "run", {}

    def before_barrier(reason):
        seen["reason"], seen["state"] = reason, RunDir(run).read_state()["state"]
        seen["checkpoints"] = len(list(RunDir(run).checkpoints.glob("ckpt-*")))

    t = trainer.Trainer(small_cfg(dataset32, run, "train.epochs=40"), log_to_stdout=False,
                        before_barrier=before_barrier)

    def stop_soon():
        while getattr(t, "global_step", 0) < 2:
            time.sleep(0.01)
        t.request_stop("test stop")

    threading.Thread(target=stop_soon, daemon=True).start()
    s = t.run()
    assert s["stopped"] == "test stop" == seen["reason"]
    assert seen["state"] == "stopped" and seen["checkpoints"] == 1, "checkpoint and state before the meeting"


def test_a_full_disk_during_training_is_one_line_and_the_run_resumes(dataset32, tmp_path, small_disk):
    disk = small_disk(4096)
    run = disk / "run"
    shutil.copytree(dataset32, disk / "ds")
    r = subprocess.run([sys.executable, "-m", "jobs.train", str(disk / "ds"), str(run), "--epochs", "200",
                        "--executor", "inprocess", "--batch-size", "8", "--set", "train.max_steps_per_epoch=4",
                        "--set", "train.intra_op_threads=1", "--set", "train.checkpoint_every_epochs=1",
                        "--set", "train.keep_checkpoints=1"],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    err = [x for x in r.stderr.splitlines() if x.strip() and "WARNING" not in x and not x.startswith("20")]
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "No space left on device" in err[-1] and str(disk) in err[-1], err[-5:]
    assert not list(run.rglob(".*.tmp")), "no temp is left behind"
    small_disk.resize(disk, 65536)
    s = trainer.run(small_cfg(disk / "ds", run, "train.epochs=" + str(len(epochs_logged(run)) + 1),
                            "train.checkpoint_every_epochs=1", "train.keep_checkpoints=1"), log_to_stdout=False)
    assert RunDir(run).finished() and s["global_step"] >= 4
    assert epochs_logged(run) == list(range(1, len(epochs_logged(run)) + 1)), "every epoch once, in order"


def test_a_run_whose_checkpoints_are_gone_is_refused_not_trained_again(dataset32, tmp_path):
    """Scratch purged, or checkpoint storage not mounted (a link to nowhere): the record says a
    checkpoint exists, so starting afresh would train the whole run again and end COMPLETED."""
    run = tmp_path / "run"
    trainer.run(small_cfg(dataset32, run, "train.epochs=1"), log_to_stdout=False)
    before = RunDir(run).stats.read_text()
    shutil.rmtree(RunDir(run).checkpoints)
    RunDir(run).checkpoints.symlink_to(tmp_path / "unmounted" / "checkpoints")
    r = subprocess.run(train_args(dataset32, run, 2), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()[-1]
    assert "global step" in err and "is its storage mounted?" in err and "--restart" in err, err
    assert str(tmp_path / "unmounted") in err, "it says where the checkpoints were"
    assert RunDir(run).stats.read_text() == before, "nothing trained, nothing logged"


UTS_HOST = 'hostname "$OASIS_TEST_HOST" && exec "$@"'


def test_a_holder_suspended_past_takeover_writes_nothing_once_it_resumes(dataset32, tmp_path):
    """The holder runs as another host (a UTS namespace of its own), so age decides; it is
    SIGSTOPped past cluster.lock_stale_after_s, another job takes the run over and trains, and the
    holder is SIGCONTed mid-way: it must stop within one compiled call, writing nothing more. It is
    stopped while epoch 4's checkpoint waits for epoch 3's, held unpublished, so the first thing it
    meets on waking is a write the new holder broke: it must still end as a lost lease."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "--uts", "true"]).returncode != 0:
        pytest.skip("needs unshare --uts (root)")
    run = tmp_path / "run"
    sets = ("cluster.lock_stale_after_s=3", "train.checkpoint_every_epochs=1")
    a = subprocess.Popen(["unshare", "--uts", "sh", "-c", UTS_HOST, "sh", *train_args(dataset32, run, 400, *sets)],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OASIS_TEST_HOST": "suspended-node",
                              "OASIS_TEST_CHECKPOINT_DELAY": "12:6"})  # 4 steps an epoch: epoch 3's end
    try:
        wait_for(lambda: any(RunDir(run).checkpoints.glob(".ckpt-000000012*.tmp")), a, "epoch 3's checkpoint mid-write")
        wait_for(lambda: 4 in epochs_logged(run), a, "epoch 4, whose checkpoint waits for epoch 3's")
        time.sleep(0.3)
        a.send_signal(signal.SIGSTOP)
        reached = max(epochs_logged(run))
        time.sleep(4.5)  # past the takeover limit, with no heartbeat
        b = train_proc(dataset32, run, reached + 12, *sets)
        wait_for(lambda: max(epochs_logged(run)) >= reached + 3, b, "the new holder's epochs")
        a.send_signal(signal.SIGCONT)
        a_rc = a.wait(timeout=120)
        a_err = a.stderr.read()
        assert a_rc == 3, f"a distinct outcome, the lease was lost; got {a_rc}:\n{a_err[-3000:]}"
        assert "no longer holds the run's lock" in a_err, a_err[-2000:]
        assert b.wait(timeout=300) == 0, b.stderr.read()[-2000:]
    finally:
        if a.poll() is None:
            a.send_signal(signal.SIGCONT)
            a.kill()
    epochs = epochs_logged(run)
    assert epochs == list(range(1, reached + 13)), "every epoch logged once: nothing of the old holder's after"
    state = RunDir(run).read_state()
    assert state["state"] == rundir.FINISHED
    log_text = RunDir(run).log.read_text()
    assert "lost the run's lock" not in log_text and "suspended-node" in log_text, \
        "the new holder logged the takeover; the old one's last lines went to its own log only"


def test_a_refused_start_writes_nothing_into_the_live_run(dataset32, tmp_path):
    """Another job's start is refused by the live holder's lock: not a log line, not a note in
    attempts/, not a line in requeues.jsonl from its retry step."""
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        from oasis_dcgan import claimfile, fsutil
        claimfile.take(RunDir(run).lock, {"job_id": "77", "attempt": 0, "host": __import__("platform").node(),
                                          "pid": holder.pid, "pid_start": fsutil.start_time(holder.pid),
                                          "token": "live"})
        before = sorted(p.name for p in run.iterdir())
        env = {**os.environ, "SLURM_JOB_ID": "78"}
        r = subprocess.run(train_args(dataset32, run, 1), cwd=REPO, capture_output=True, text=True, timeout=300,
                           env=env)
        assert r.returncode == 2 and "job 77" in r.stderr, r.stderr[-2000:]
        d = subprocess.run([sys.executable, "-m", "oasis_dcgan.launch.retry", str(run), "--rc", "2"], cwd=REPO,
                           capture_output=True, text=True, timeout=60, env=env)
        assert "not recorded" in d.stdout, d.stdout + d.stderr
        assert sorted(p.name for p in run.iterdir()) == before == [rundir.LOCK]
    finally:
        holder.kill()
        holder.wait()


def test_repacking_a_dataset_a_live_run_trains_on_is_refused_naming_the_run(png_release, tmp_path):
    from oasis_dcgan.prep import pack
    from oasis_dcgan.prep.manifest import DataError

    ds, run, data = tmp_path / "ds", tmp_path / "run", DataConfig(resolution=32, shard_size=64)
    pack.preprocess(png_release, ds, data)
    a = train_proc(ds, run, 400)
    try:
        wait_for(lambda: len(epochs_logged(run)) >= 1, a, "the run's first epoch")
        shards = {p.name: p.stat().st_mtime_ns for p in ds.glob("*.h5")}
        with pytest.raises(DataError, match=f"live run.*{run}"):
            pack.preprocess(png_release, ds, data)
        assert {p.name: p.stat().st_mtime_ns for p in ds.glob("*.h5")} == shards, "nothing was written"
    finally:
        a.kill()
        a.wait()
    pack.preprocess(png_release, ds, data)  # the run is gone: its note is stale, and the packing goes on


def test_a_stop_while_the_job_still_imports_tensorflow_is_held_not_fatal(dataset32, tmp_path):
    """USR2 before the Trainer exists (the job is importing TensorFlow, seconds): held, then the
    run stops with one checkpoint and its note, exit 143, instead of dying on the signal (140)."""
    run = tmp_path / "run"
    a = train_proc(dataset32, run, 50)
    time.sleep(1.5)  # the CLI is up (a quarter second); TensorFlow is loading (several seconds)
    assert a.poll() is None and not RunDir(run).lock.exists(), "still starting"
    a.send_signal(signal.SIGUSR2)
    assert a.wait(timeout=300) == 143, a.stderr.read()[-2000:]
    assert RunDir(run).read_state()["state"] == rundir.STOPPED
    notes = list(RunDir(run).attempts.glob("*/rank-0.json"))
    assert notes and json.loads(notes[0].read_text())["outcome"] == "stopped"
    assert list(RunDir(run).checkpoints.glob("ckpt-*")), "the stop's checkpoint"
