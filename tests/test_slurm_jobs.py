"""Preemption, requeue and the plain sbatch templates, on the real dev Slurm cluster."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oasis_dcgan import config
from oasis_dcgan.launch import executors, jobs, pipeline, status
from oasis_dcgan.prep import manifest
from oasis_dcgan.logs import read_stats

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
EPOCHS = 30


def sh(*cmd, **kw):
    return subprocess.run(list(cmd), capture_output=True, text=True, check=True, **kw).stdout.strip()


def wait_gone(job_id: str, timeout: float = 600) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if not sh("squeue", "-h", "-j", job_id, "-o", "%i"):
            return
        time.sleep(1)
    raise AssertionError(f"job {job_id} still queued after {timeout} s")


def wait_for_checkpoint(run: Path, timeout: float = 300, after_step: int = 0) -> int:
    end = time.time() + timeout
    while time.time() < end:
        ck = run / "checkpoints"
        steps = [int(p.name.split("-")[1]) for p in ck.glob("ckpt-*")] if ck.is_dir() else []
        if steps and max(steps) > after_step:
            return max(steps)
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint in {run} after {timeout} s")


def top_states(job_id: str, timeout: float = 60) -> list[str]:
    """The job's states from accounting, once it records the last run as ended (it lags the queue)."""
    end = time.time() + timeout
    while True:
        states = [r["State"] for r in status.sacct([job_id]) if r["JobID"] == job_id]
        if (states and states[-1] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")) or time.time() > end:
            return states
        time.sleep(1)


def assert_continuous(run: Path) -> None:
    epochs = [r["epoch"] for r in read_stats(run / "stats.jsonl") if r["kind"] == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1)), "every epoch logged exactly once"
    ranks = [json.loads((run / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert json.loads((run / "train_done.json").read_text())["global_step"] == EPOCHS * 12


def train_cfg(dataset, run):
    return config.load(None, [f'run_dir="{run}"', f'data.dataset="{dataset}"', f"train.epochs={EPOCHS}",
                              "train.batch_size=8", "train.checkpoint_every_steps=5", "train.intra_op_threads=1",
                              "cluster.tasks_per_node=2", "cluster.timeout_min=30"])


def submit_train(cfg):
    ex = executors.make_executor(cfg, Path(cfg.run_dir) / "slurm", "slurm", "train", "oasis-train")
    job = ex.submit(jobs.TrainJob(cfg.to_dict()))
    pipeline.record_job(Path(cfg.run_dir), {"stage": "train", "job_id": job.job_id})
    return job


def test_submitit_train_survives_scontrol_requeue(devcluster, dataset32, tmp_path):
    run = tmp_path / "run"
    job = submit_train(train_cfg(dataset32, run))
    wait_for_checkpoint(run, after_step=5)
    sh("scontrol", "requeue", job.job_id)
    wait_gone(job.job_id)
    states = top_states(job.job_id)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and log.count("(signal SIGTERM") == 1, "one agreed stop, one checkpoint"
    assert_continuous(run)
    text = status.status(run)
    assert "COMPLETED, requeued 1x" in text and "training     finished" in text


def test_submitit_train_survives_usr2_preemption(devcluster, dataset32, tmp_path):
    run = tmp_path / "run"
    job = submit_train(train_cfg(dataset32, run))
    wait_for_checkpoint(run, after_step=5)
    sh("scancel", "--signal=USR2", job.job_id)
    wait_gone(job.job_id)
    states = top_states(job.job_id)
    assert "REQUEUED" in states[:-1] and states[-1] == "COMPLETED", states
    log = (run / "log.txt").read_text()
    assert log.count("(signal SIGUSR2") == 1, "every rank stopped after the same step; rank 0 saved once"
    assert "resumed from" in log
    assert_continuous(run)
    assert len(job.results()) == 2


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
    assert "requeueing" in out and "restart 1" in out
    assert_continuous(run)
    # postprocess
    pp = sh("sbatch", "--parsable", f"--chdir={tmp_path}", str(REPO / "slurm/postprocess.sbatch"), str(run),
            "--batches", "5", env=env)
    wait_gone(pp)
    assert top_states(pp)[-1] == "COMPLETED"
    assert (run / "report" / "report.html").is_file()
