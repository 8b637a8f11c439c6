"""Faults a run directory must survive with nothing lost, each on real training processes at 32x32.

Each test is one row of the fault table (docs: "Resume, preemption and faults"); `FAULTS`
counts them, and test_fault_matrix_is_whole checks that every row has its test."""

import json
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

from tests.conftest import REPO, small_cfg

pytestmark = pytest.mark.fault


def train_proc(dataset, run, epochs, *sets):
    cmd = [sys.executable, "-m", "jobs.train", str(dataset), str(run), "--epochs", str(epochs), "--executor",
           "inprocess", "--batch-size", "8", "--set", "train.max_steps_per_epoch=4", "--set",
           "train.intra_op_threads=1", "--set", "train.tick_seconds=0.2"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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
    d = retry.decide(run, NO_JOB, 0, 143, max_requeues=5)
    assert d.action == "requeue" and not d.counted, "a stop during an extension is requeued, uncounted"
    assert "stopped" in status.status(run) and "finished" not in status.status(run).split("training", 1)[1]
    m = report.postprocess(run)
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
