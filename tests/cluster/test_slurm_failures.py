"""Ranks that die or hang on the real dev Slurm cluster: the job ends, requeues, resumes exactly, or gives up."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oasis_dcgan.launch import retry, status
from oasis_dcgan.rundir import RunDir

from tests.conftest import REPO, rank_digests, resumes, train_cmd
from tests.slurmkit import (assert_continuous, checkpoint_steps, kill, sh, submit_train, top_states, train_cfg,
                           wait_for_checkpoint, wait_for_ranks, wait_gone)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.fault]


def sbatch_train(tmp_path, dataset, run, ranks, *args, env=None):
    env = {**os.environ, "OASIS_PYTHON": sys.executable, "PYTHONPATH": str(REPO), **(env or {})}
    return sh("sbatch", "--parsable", f"--chdir={tmp_path}", f"--ntasks-per-node={ranks}",
              str(REPO / "slurm/train.sbatch"), str(dataset), str(run), *args, env=env)


def wait_for_temp_checkpoint(run: Path, step: int, timeout: float = 300) -> Path:
    """A save of `step` that has written everything but is not yet published."""
    end = time.time() + timeout
    while time.time() < end:
        for tmp in (run / "checkpoints").glob(f".ckpt-{step:09d}.*.tmp"):
            if (tmp / "meta.json").exists():
                return tmp
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of step {step} being written in {run}")


def test_sigkill_mid_checkpoint_and_mid_run_then_requeued_resume_is_bit_identical(dataset32, tmp_path):
    ref, run, ranks = tmp_path / "ref", tmp_path / "run", 2
    r = subprocess.run(train_cmd(dataset32, ref, ranks, 2), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rng = random.Random(ranks)
    mid_write, later = rng.randint(2, 6), rng.randint(7, 8)  # of 12 steps, 6 an epoch
    args = train_cmd(dataset32, run, 1, 2)[5:]  # the same options; srun starts the ranks
    job = sbatch_train(tmp_path, dataset32, run, ranks, *args, env={"OASIS_TEST_CHECKPOINT_DELAY": f"{mid_write}:8"})
    # 1. every rank SIGKILLed while rank 0 has the checkpoint of `mid_write` written but not published
    pids = wait_for_ranks(job, ranks, attempt=0)
    wait_for_temp_checkpoint(run, mid_write)
    kill(pids.values())
    assert checkpoint_steps(run)[-1] == mid_write - 1, "a half-written checkpoint is never visible"
    # 2. the requeued job, SIGKILLed again between steps further on
    pids = wait_for_ranks(job, ranks, attempt=1)
    wait_for_checkpoint(run, after_step=later - 1, timeout=300)
    kill(pids.values())
    assert not RunDir(run).finished(), "killed before the end"
    wait_gone(job)
    assert top_states(job)[-1] == "COMPLETED", top_states(job)
    decisions = retry.read_decisions(RunDir(run))
    assert [d["action"] for d in decisions] == ["requeue", "requeue"] and all(d["counted"] for d in decisions)
    assert "no rank left a note" in decisions[0]["reason"]
    assert resumes(run)[0]["global_step"] == mid_write - 1, "the first resume starts at the last published checkpoint"
    assert rank_digests(run, ranks) == rank_digests(ref, ranks), "weights bit-identical to the uninterrupted run"
    run_ep = [x for x in RunDir(run).read_stats() if x["kind"] == "epoch"]
    ref_ep = [x for x in RunDir(ref).read_stats() if x["kind"] == "epoch"]
    assert [x["epoch"] for x in run_ep] == [1, 2]
    for key in ("g_loss", "d_loss", "images", "images_sha256"):
        assert [x[key] for x in run_ep] == [x[key] for x in ref_ep], key
    assert not list((run / "checkpoints").glob(".*.tmp")), "the killed save's leftovers are cleared"


def test_a_hung_then_a_killed_rank_end_the_job_in_time_and_it_requeues_and_finishes(dataset32, tmp_path):
    """Under submitit: rank 1 stops answering (SIGSTOP), later it is SIGKILLed; each ends the attempt."""
    run, timeout = tmp_path / "run", 15
    cfg = train_cfg(dataset32, run)
    cfg.train.peer_timeout_s = timeout
    job = submit_train(cfg)
    hung = wait_for_ranks(job.job_id, 2, attempt=0)[1]
    wait_for_checkpoint(run, after_step=5)
    os.kill(hung, signal.SIGSTOP)
    t0 = time.time()
    while not retry.read_decisions(RunDir(run)) and time.time() - t0 < 120:
        time.sleep(0.2)
    elapsed = time.time() - t0
    # gloo gives up after the timeout; srun then ends the step; KillWait (10 s) bounds the rest.
    assert timeout <= elapsed < timeout + 25, f"the hung attempt took {elapsed:.0f} s to end"
    first = retry.read_decisions(RunDir(run))[0]
    assert first["action"] == "requeue" and first["counted"] and "rank 0" in first["reason"], first
    pids = wait_for_ranks(job.job_id, 2, attempt=1)
    resumed_at = checkpoint_steps(run)[-1]
    wait_for_checkpoint(run, after_step=resumed_at + 5)
    kill([pids[1]])
    wait_gone(job.job_id)
    states = top_states(job.job_id)
    decisions = retry.read_decisions(RunDir(run))
    second = decisions[1]
    assert "rank 1 ended without a note" in second["reason"] and "requeue 2 of 5" in second["reason"]
    # The two failures are the only counted requeues. On a starved 2-core host slurmd can miss a
    # ping and Slurm cancel a healthy attempt: the job must then checkpoint and requeue uncounted.
    extra = decisions[2:]
    assert all(not d["counted"] and "with a checkpoint on disk" in d["reason"] for d in extra), extra
    assert states.count("REQUEUED") == 2 + len(extra) and states[-1] == "COMPLETED", states
    assert_continuous(run)
    text = status.status(RunDir(run))
    assert f"COMPLETED, requeued {2 + len(extra)}x (2 after a failure)" in text, text


def test_past_max_requeues_a_dead_rank_fails_the_job_with_the_reason(dataset32, tmp_path):
    run = tmp_path / "run"
    job = sbatch_train(tmp_path, dataset32, run, 2, "--epochs", "30", "--batch-size", "8",
                       "--checkpoint-every-steps", "5", "--set", "train.intra_op_threads=1",
                       "--set", "cluster.max_requeues=0")
    pids = wait_for_ranks(job, 2, attempt=0)
    wait_for_checkpoint(run, after_step=5)
    kill([pids[1]])
    wait_gone(job)
    assert top_states(job)[-1] == "FAILED", top_states(job)
    [d] = retry.read_decisions(RunDir(run))
    assert d["action"] == "fail" and "gave up after 0 requeue(s) (cluster.max_requeues = 0)" in d["reason"]
    assert f"job {job}" in status.status(RunDir(run)) and "gave up" in status.status(RunDir(run))
    assert json.loads((run / "options.json").read_text())["config"]["cluster"]["max_requeues"] == 0
    assert checkpoint_steps(run), "the checkpoints stay for a manual resume"
