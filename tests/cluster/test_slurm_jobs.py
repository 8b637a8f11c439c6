"""Preemption, requeue and the plain sbatch templates, on the real dev Slurm cluster."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from oasis_dcgan import fsutil
from oasis_dcgan.launch import status
from oasis_dcgan.prep import manifest
from oasis_dcgan.rundir import RunDir

from tests.conftest import SMALL_METRICS, resumes, stop_checkpoints
from tests.slurmkit import (EPOCHS, assert_continuous, sh, submit_train, top_states, train_cfg, wait_for_checkpoint,
                           wait_gone)
from tests.conftest import REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.mark.fault
def test_submitit_train_survives_scontrol_requeue(devcluster, dataset32, tmp_path):
    run = tmp_path / "run"
    job = submit_train(train_cfg(dataset32, run))
    wait_for_checkpoint(run, after_step=5)
    sh("scontrol", "requeue", job.job_id)
    wait_gone(job.job_id)
    states = top_states(job.job_id)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    assert len(stop_checkpoints(run, "SIGTERM")) == 1, "one agreed stop, one checkpoint"
    assert len(resumes(run)) == 1, "the requeued job resumed"
    assert_continuous(run)
    text = status.status(RunDir(run))
    assert "COMPLETED, requeued 1x" in text and "training     finished" in text


def test_sbatch_templates_end_to_end(devcluster, png_release, tmp_path):
    env = {**os.environ, "OASIS_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    ds, run = tmp_path / "data set", tmp_path / "run"
    # preprocess: a 2-task array whose task 0 queues the seal step
    arr = sh("sbatch", "--parsable", "--array=0-1", f"--chdir={tmp_path}", str(REPO / "slurm/preprocess.sbatch"),
             str(png_release), str(ds), "--resolution", "32", "--shard-size", "40", env=env)
    wait_gone(arr)
    end = time.time() + 120
    while not (ds / "manifest.json").exists() and time.time() < end:
        time.sleep(1)
    assert manifest.verify(ds) == [] and manifest.load_manifest(ds)["counts"]["train"] == 192
    # train: srun-launched ranks, preempted with USR2 mid-run, requeued by the script itself
    tr = sh("sbatch", "--parsable", f"--chdir={tmp_path}", str(REPO / "slurm/train.sbatch"), str(ds), str(run),
            "--epochs", str(EPOCHS), "--batch-size", "8", "--checkpoint-every-steps", "5",
            "--set", "train.intra_op_threads=1", env=env)
    wait_for_checkpoint(run, after_step=5)
    sh("scancel", "--signal=USR2", tr)
    wait_gone(tr)
    assert top_states(tr)[-1] == "COMPLETED", top_states(tr)
    out = (tmp_path / f"oasis-train-{tr}.out").read_text()
    assert "requeue: stopped (signal SIGUSR2)" in out and "restart 1" in out
    assert_continuous(run)
    # postprocess
    pp = sh("sbatch", "--parsable", f"--chdir={tmp_path}", str(REPO / "slurm/postprocess.sbatch"), str(run),
            *[a for kv in SMALL_METRICS for a in ("--set", kv)], env=env)
    wait_gone(pp)
    assert top_states(pp)[-1] == "COMPLETED"
    assert (run / "report" / "report.html").is_file()


def _wait_for_tick(run: Path, timeout: float = 600) -> None:
    end = time.time() + timeout
    while not any(r["kind"] == "tick" for r in RunDir(run).read_stats()):
        assert time.time() < end, f"training in {run} did not start within {timeout} s"
        time.sleep(0.5)


def _assert_complete_checkpoint(ckpt: Path) -> None:
    import tensorflow as tf

    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["resolution"] == 256 and meta["reason"].startswith("signal SIGUSR2")
    for name, digest in meta["files"].items():
        assert fsutil.sha256_file(ckpt / name) == digest, f"{name} is complete"
    shapes = tf.train.load_checkpoint(str(ckpt / "ckpt")).get_variable_to_shape_map()
    assert sum(1 for k in shapes if k.startswith("generator/")) > 0 and meta["world_size"] == 2


@pytest.mark.fault
def test_usr2_at_256_with_2_ranks_saves_one_complete_checkpoint(devcluster, dataset256, tmp_path):
    """The seed's full-size model (a checkpoint of ~335 MB) through train.sbatch: stop, requeue,
    resume. (submitit's USR2 path is test_multinode's, at 32x32: what differs at 256 is the size.)"""
    run = tmp_path / "run"
    opts = ["train.epochs=1", "train.batch_size=2", "train.max_steps_per_epoch=12", "train.checkpoint_every_steps=0",
            "train.checkpoint_every_minutes=0", "train.tick_seconds=1", "train.intra_op_threads=1"]
    env = {**os.environ, "OASIS_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    job = sh("sbatch", "--parsable", f"--chdir={tmp_path}", str(REPO / "slurm/train.sbatch"), str(dataset256),
             str(run), *[x for o in opts for x in ("--set", o)], env=env)
    _wait_for_tick(run)
    sh("scancel", "--signal=USR2", job)
    wait_gone(job, timeout=900)
    assert top_states(job)[-1] == "COMPLETED", top_states(job)
    [stop_step] = stop_checkpoints(run, "SIGUSR2")  # exactly one save for the stop
    assert [(x["checkpoint"], x["epoch"]) for x in resumes(run)] == [(f"ckpt-{stop_step:09d}", 0)], \
        "the requeued job loaded it"
    assert 0 < stop_step < 12
    _assert_complete_checkpoint(run / "checkpoints" / f"ckpt-{stop_step:09d}")
    ranks = [json.loads((run / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"] and ranks[0]["global_step"] == 12


def test_a_job_the_partition_cannot_hold_is_refused_at_submit(devcluster, dataset32, tmp_path):
    """It pended for good as PartitionNodeLimit while the command waited without a word."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "oasis_dcgan.cli", "train", str(dataset32), str(tmp_path / "run"),
                        "--executor", "slurm", "--set", "cluster.nodes=2"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cluster.nodes = 2" in r.stderr and "'debug' has 1 node" in r.stderr, r.stderr
    assert "multi (2 nodes)" in r.stderr, "it names a partition that fits"
    assert not (tmp_path / "run" / "jobs.json").exists(), "nothing was queued"
