"""Slurm knows who is alive: a lock naming a Slurm job that is pending, running or suspended is never
taken over, however old; once the job has ended it is, at once. Asked of the real dev cluster."""

import json
import os
import time

import pytest

from oasis_dcgan import config
from oasis_dcgan.errors import RunLockError
from oasis_dcgan.launch import pipeline
from oasis_dcgan.launch.executors import Slurm
from oasis_dcgan.prep import datalock, pack
from oasis_dcgan.prep.manifest import DataError
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.training import runlock
from oasis_dcgan.training.runlock import RunLock

from tests.slurmkit import sh, wait_gone

pytestmark = [pytest.mark.cluster, pytest.mark.fault]


@pytest.fixture
def held_job(devcluster, tmp_path):
    """A real Slurm job that waits in the queue (held), as a busy queue keeps one for hours."""
    job = sh("sbatch", "--parsable", "--hold", f"--chdir={tmp_path}", "--wrap", "sleep 600")
    yield job
    sh("scancel", job)
    wait_gone(job, timeout=120)


def make_old(path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_run_lock_naming_a_pending_slurm_job_is_never_taken_over_however_old(held_job, tmp_path):
    assert Slurm.jobs_alive([held_job]) is True
    liveness = pipeline.liveness(config.Config())
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.lock.write_text(json.dumps({"job_id": held_job, "attempt": 0, "host": "elsewhere", "pid": 1,
                                    "token": "queued-holder", "jobs": [held_job]}))
    make_old(run.lock, 10 * liveness.stale_after_s)
    with pytest.raises(RunLockError, match=f"job {held_job}"):
        runlock.check_free(run, liveness)
    with pytest.raises(RunLockError):
        RunLock(run, "another-job", 0, liveness).acquire()
    sh("scancel", held_job)
    wait_gone(held_job, timeout=120)
    assert Slurm.jobs_alive([held_job]) is False
    lock = RunLock(run, "another-job", 0, liveness)
    lock.acquire()
    assert f"Slurm job(s) {held_job} have ended" in lock.taken_from
    lock.release()


def test_a_queued_packing_waits_in_the_queue_past_the_age_limit_and_keeps_its_lock(held_job, png_release,
                                                                                   tmp_path):
    out, data = tmp_path / "ds", config.DataConfig(resolution=32, shard_size=200)
    liveness = pipeline.liveness(config.Config())
    pack.start(png_release, out, data, token="queued", queued=True, liveness=liveness)
    datalock.name_jobs(out, "queued", [held_job])
    make_old(out / datalock.LOCK, 10 * liveness.stale_after_s)
    with pytest.raises(DataError, match="being packed by packing queued"):
        pack.preprocess(png_release, out, data, liveness=liveness)
    sh("scancel", held_job)
    wait_gone(held_job, timeout=120)
    assert pack.preprocess(png_release, out, data, liveness=liveness)["counts"]["train"] == 192
