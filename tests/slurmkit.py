"""Helpers for the tests that drive the real dev Slurm cluster: wait, read accounting, find ranks."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import json

from oasis_dcgan import config
from oasis_dcgan.launch import executors, jobs, pipeline, slurmctl
from oasis_dcgan.rundir import RunDir

EPOCHS = 16  # a submitted training run's epochs: long enough to interrupt (12 steps each, some 8 s on 2 cores)


def sh(*cmd, **kw):
    return subprocess.run(list(cmd), capture_output=True, text=True, check=True, **kw).stdout.strip()


def wait_gone(job_id: str, timeout: float = 600) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if not sh("squeue", "-h", "-j", job_id, "-o", "%i"):
            return
        time.sleep(1)
    raise AssertionError(f"job {job_id} still queued after {timeout} s")


def sacct_rows(job_id: str, fields: str, count: int, timeout: float = 60) -> list[str]:
    """The job's accounting rows (-X: one per job or array task), once `count` are recorded:
    slurmdbd can record one array task seconds after the other."""
    end = time.time() + timeout
    while True:
        rows = sh("sacct", "-n", "-X", "-P", "-j", job_id, f"--format={fields}").splitlines()
        if len(rows) >= count or time.time() > end:
            return rows
        time.sleep(1)


def checkpoint_steps(run: Path) -> list[int]:
    ck = Path(run) / "checkpoints"
    return sorted(int(p.name.split("-")[1]) for p in ck.glob("ckpt-*")) if ck.is_dir() else []


def wait_for_checkpoint(run: Path, timeout: float = 300, after_step: int = 0) -> int:
    end = time.time() + timeout
    while time.time() < end:
        steps = checkpoint_steps(run)
        if steps and steps[-1] > after_step:
            return steps[-1]
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint after step {after_step} in {run} after {timeout} s")


def top_states(job_id: str, timeout: float = 60) -> list[str]:
    """The job's states from accounting, once it records the last run as ended (it lags the queue)."""
    end = time.time() + timeout
    while True:
        states = [r["State"] for r in slurmctl.sacct([job_id]) if r["JobID"] == job_id]
        if (states and states[-1] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")) or time.time() > end:
            return states
        time.sleep(1)


def rank_pids(job_id: str, attempt: int | None = None) -> dict[int, int]:
    """{rank: pid} of the job's Python ranks on this machine (its single node), from /proc."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_text().split("\0") if "=" in kv)
            argv0 = (d / "cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, ValueError):
            continue
        if (env.get("SLURM_JOB_ID") == job_id and "SLURM_STEP_ID" in env and "python" in Path(argv0).name
                and (attempt is None or int(env.get("SLURM_RESTART_COUNT", "0") or 0) == attempt)):
            found[int(env["SLURM_PROCID"])] = int(d.name)
    return found


def wait_for_ranks(job_id: str, n: int, attempt: int, timeout: float = 300) -> dict[int, int]:
    end = time.time() + timeout
    while time.time() < end:
        pids = rank_pids(job_id, attempt)
        if len(pids) == n:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} attempt {attempt}: {n} ranks did not start in {timeout} s")


def kill(pids, sig=signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def assert_continuous(run: Path) -> None:
    epochs = [r["epoch"] for r in RunDir(run).read_stats() if r["kind"] == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1)), "every epoch logged exactly once"
    ranks = [json.loads((run / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    state = RunDir(run).read_state()
    assert state["state"] == "finished" and state["global_step"] == EPOCHS * 12


def train_cfg(dataset, run):
    return config.load(None, [f'run_dir="{run}"', f'data.dataset="{dataset}"', f"train.epochs={EPOCHS}",
                              "train.batch_size=8", "train.checkpoint_every_steps=5", "train.intra_op_threads=1",
                              "cluster.tasks_per_node=2", "cluster.timeout_min=30"])


def submit_train(cfg):
    ex = executors.Slurm().make(cfg, Path(cfg.run_dir) / "slurm", "train", "oasis-train")
    job = ex.submit(jobs.TrainJob(cfg.to_dict()))
    entry = {"stage": "train", "job_id": job.job_id, "executor": executors.Slurm.name}
    pipeline.record_job(RunDir(Path(cfg.run_dir)), entry)
    return job
