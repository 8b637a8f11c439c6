"""The run's lock: never empty, never stolen from a live holder, never leaked, never released for another.

Holders are real processes on this host (their pid and start time are what liveness is read
from); a holder on another host is a lock file naming that host."""

import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time

import pytest

from oasis_dcgan.rundir import RunDir
from oasis_dcgan.training import runlock
from oasis_dcgan.errors import LeaseLostError
from oasis_dcgan.training.runlock import RunLock, RunLockError


pytestmark = pytest.mark.fault


@pytest.fixture
def sleeper():
    """A live process on this host, to stand as another holder."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield p
    p.kill()
    p.wait()


def plant(run, *, job_id="9", attempt=0, host=None, pid=None, age_s=0.0, start=None):
    holder = {"job_id": job_id, "attempt": attempt, "host": host or platform.node(), "pid": pid,
              "pid_start": start if start is not None else (runlock.start_time(pid) if pid else None),
              "token": "planted", "since": time.time() - age_s}
    path = RunDir(run).lock
    path.write_text(json.dumps(holder))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return holder


def take(run, job_id="10", attempt=0, **kw):
    """The lock taken, and what its holder says it took over (the trainer logs it)."""
    lock = RunLock(RunDir(run), job_id, attempt, **kw)
    lock.acquire()
    return lock, [lock.taken_from]


def test_an_empty_lock_is_taken_over_and_says_why(tmp_path):
    RunDir(tmp_path).lock.write_text("")
    lock, logs = take(tmp_path)
    assert json.loads(RunDir(tmp_path).lock.read_text())["token"] == lock.holder["token"]
    assert "do not parse" in logs[0] and "1970" not in logs[0]
    lock.release()
    assert not RunDir(tmp_path).lock.exists()


def test_a_live_process_on_this_host_is_never_taken_over_however_old(tmp_path, sleeper):
    plant(tmp_path, pid=sleeper.pid, age_s=10 * 3600)
    with pytest.raises(RunLockError, match=f"pid {sleeper.pid}"):
        take(tmp_path)
    with pytest.raises(RunLockError):  # the submit-time check agrees
        runlock.check_free(RunDir(tmp_path))


def test_the_same_job_takes_over_only_an_earlier_attempt_or_a_dead_process(tmp_path, sleeper):
    plant(tmp_path, job_id="10", attempt=0, pid=sleeper.pid)
    with pytest.raises(RunLockError):  # a second srun step of the same attempt, alive
        take(tmp_path, job_id="10", attempt=0)
    lock, logs = take(tmp_path, job_id="10", attempt=1)
    assert "attempt 0 of this job" in logs[0]
    lock.release()
    sleeper.kill()
    sleeper.wait()
    plant(tmp_path, job_id="10", attempt=1, pid=sleeper.pid)
    lock, logs = take(tmp_path, job_id="10", attempt=1)
    assert f"process {sleeper.pid} on this host is gone" in logs[0]
    lock.release()


def test_a_reused_pid_is_not_the_holder(tmp_path, sleeper):
    plant(tmp_path, pid=sleeper.pid, start="1")  # the pid is alive, but started at another time
    lock, logs = take(tmp_path)
    assert "gone" in logs[0]
    lock.release()


def test_another_hosts_holder_is_taken_over_only_once_silent_past_the_limit(tmp_path):
    plant(tmp_path, host="elsewhere", pid=1, age_s=60)
    with pytest.raises(RunLockError, match="elsewhere"):
        take(tmp_path)
    plant(tmp_path, host="elsewhere", pid=1, age_s=runlock.STALE_AFTER_S + 60)
    lock, logs = take(tmp_path)
    assert "nothing refreshed it" in logs[0]
    lock.release()


def test_the_heartbeat_refreshes_the_lock_and_notices_when_it_is_lost(tmp_path):
    lock, _ = take(tmp_path, heartbeat_s=0.05)
    path = RunDir(tmp_path).lock
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 5, "refreshed by the heartbeat, with no tick or checkpoint"
    lock.check()
    plant(tmp_path, job_id="11", host="elsewhere", pid=1)  # someone broke it and took the run
    time.sleep(0.5)
    with pytest.raises(LeaseLostError, match="no longer holds"):
        lock.check()
    lock.release()
    assert json.loads(path.read_text())["job_id"] == "11", "release leaves another holder's lock in place"


def _contend(run, job_id, results):
    try:
        lock = RunLock(RunDir(run), job_id, 0)
        lock.acquire()
        results.put(job_id)
        time.sleep(1.0)  # hold it while the others try
    except RunLockError:
        pass


def test_of_many_takers_of_a_stale_lock_exactly_one_wins(tmp_path):
    plant(tmp_path, host="elsewhere", pid=1, age_s=runlock.STALE_AFTER_S + 60)
    results = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_contend, args=(tmp_path, str(j), results))
             for j in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    winners = []
    while not results.empty():
        winners.append(results.get())
    assert len(winners) == 1, winners
    assert not list(tmp_path.glob(".lock.*")), "no claim or broken-lock file is left behind"


def test_a_lock_on_a_full_disk_is_one_line_naming_it(small_disk):
    from oasis_dcgan import fsutil

    disk = small_disk(64)
    with open(disk / "filler", "wb") as f:
        with pytest.raises(OSError):
            f.write(b"\0" * 10_000_000)
            f.flush()
            os.fsync(f.fileno())
    with pytest.raises(fsutil.StorageError) as err:
        take(disk)
    assert str(RunDir(disk).lock) in str(err.value) and "No space left" in str(err.value)
    assert "\n" not in str(err.value) and not RunDir(disk).lock.exists()
