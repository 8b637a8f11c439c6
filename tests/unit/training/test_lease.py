"""The run's lock as a fenced lease, against adversaries rather than chance: another user of the
group (a real second uid), bytes that do not decode, a host clock skewed against the file
server, another taker's side files, a storage that fails the heartbeat, and a holder that comes
back after losing the run. Each was reproduced against the lock before it became a lease."""

import json
import logging
import os
import platform
import stat
import subprocess
import tempfile
import time

import pytest

from bench.common import AsUser
from oasis_dcgan import claimfile, rundir
from oasis_dcgan.errors import LeaseLostError, RunLockError
from oasis_dcgan.logs import RunLog, Stats
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.training import runlock
from oasis_dcgan.training.runlock import RunLock

pytestmark = pytest.mark.fault

GROUP, ALICE, BOB = 47110, 47111, 47112  # uids and a gid no one on this machine has; real ones to the kernel

def hold(run: str) -> str:
    lock = RunLock(RunDir(run), "alice-job", 0)
    lock.acquire()
    return "held"


def take_as_bob(run: str) -> str:
    try:
        RunLock(RunDir(run), "bob-job", 0).acquire()
        return "TOOK IT"
    except RunLockError as e:
        return f"refused: {e}"


@pytest.fixture
def shared_run():
    """A run directory a group shares (setgid, group-writable), where both users can reach it."""
    if os.getuid() != 0:
        pytest.skip("making another user's processes needs root")
    top = tempfile.mkdtemp(prefix="oasis-shared-", dir="/tmp")
    os.chmod(top, 0o755)
    run = os.path.join(top, "run")
    os.mkdir(run)
    os.chown(run, 0, GROUP)
    os.chmod(run, 0o2775)
    yield run
    subprocess.run(["rm", "-rf", top], check=False)


def test_another_user_of_the_group_never_takes_a_live_lock(shared_run):
    alice = AsUser(ALICE, GROUP, hold, shared_run, linger_s=120)  # a live holder of another uid
    try:
        assert alice.line() == "held"
        lock = RunDir(shared_run).lock
        assert lock.stat().st_uid == ALICE
        assert stat.S_IMODE(lock.stat().st_mode) == 0o664, "the lock takes the umask's mode: the group reads it"
        bob = AsUser(BOB, GROUP, take_as_bob, shared_run)
        out = bob.line()
        bob.end()
        assert "TOOK IT" not in out and "refused" in out and "alice-job" in out, out
        assert json.loads(lock.read_text())["job_id"] == "alice-job"
    finally:
        alice.end()


def test_a_lock_the_group_cannot_read_refuses_the_start_naming_its_owner(shared_run):
    lock = RunDir(shared_run).lock
    lock.write_text(json.dumps({"job_id": "alice-job", "host": platform.node(), "pid": 1}))
    os.chown(lock, ALICE, GROUP)
    os.chmod(lock, 0o600)  # a lock written under umask 077, or by an older release
    bob = AsUser(BOB, GROUP, take_as_bob, shared_run)
    out = bob.line()
    bob.end()
    assert "TOOK IT" not in out, out
    assert "refused" in out and str(lock) in out and f"uid {ALICE}" in out and "0600" in out, out
    assert json.loads(lock.read_text())["job_id"] == "alice-job", "the lock is left as it was"


def test_bytes_that_do_not_decode_are_unparsable_at_start_and_lose_the_lease_in_the_heartbeat(tmp_path):
    path = RunDir(tmp_path).lock
    path.write_bytes(b"\xff\xfe{\x00")
    lock = RunLock(RunDir(tmp_path), "10", 0, heartbeat_s=0.05)
    lock.acquire()  # was a raw UnicodeDecodeError
    assert "do not parse" in lock.taken_from
    path.write_bytes(b"\xff\xfe{\x00")  # the same bytes under a holder: its heartbeat must not die on them
    deadline = time.time() + 10
    while not lock.lost and time.time() < deadline:
        time.sleep(0.05)
    assert lock.lost and lock._beat.is_alive(), "the heartbeat noticed, and lives on"
    lock.release()
    assert path.read_bytes() == b"\xff\xfe{\x00", "release leaves a lock that is not its own"


def test_a_heartbeat_that_cannot_refresh_gives_the_lease_up_after_its_misses(tmp_path, monkeypatch):
    lock = RunLock(RunDir(tmp_path), "10", 0, heartbeat_s=0.05)
    lock.acquire()
    real = claimfile.read
    fails = {"n": 0}

    def flaky(path, **kw):
        if fails["n"] < runlock.MISSED_BEATS - 1:
            fails["n"] += 1
            raise RuntimeError("not an OSError at all")
        return real(path, **kw)

    monkeypatch.setattr(claimfile, "read", flaky)
    time.sleep(1.0)
    assert not lock.lost and lock._beat.is_alive(), "fewer misses than the limit: it survives and refreshes"
    monkeypatch.setattr(claimfile, "read", lambda path, **kw: (_ for _ in ()).throw(OSError(5, "I/O error")))
    deadline = time.time() + 10
    while not lock.lost and time.time() < deadline:
        time.sleep(0.05)
    assert "could not be refreshed" in lock.lost and lock._beat.is_alive()
    with pytest.raises(LeaseLostError):
        lock.check()
    monkeypatch.setattr(claimfile, "read", real)
    lock.release()


def test_age_is_read_on_the_file_servers_clock_not_this_hosts(tmp_path, monkeypatch):
    holder = {"job_id": "9", "attempt": 0, "host": "elsewhere", "pid": 1, "token": "t", "since": time.time()}
    RunDir(tmp_path).lock.write_text(json.dumps(holder))  # refreshed just now by the file server's clock
    skewed = time.time() + 2 * runlock.STALE_AFTER_S
    monkeypatch.setattr(time, "time", lambda: skewed)  # this host's clock runs far ahead
    with pytest.raises(RunLockError, match="elsewhere"):
        RunLock(RunDir(tmp_path), "10", 0).acquire()


def test_the_start_sweep_never_removes_another_takers_side_files(tmp_path):
    run = RunDir(tmp_path)
    taker = [run.lock.with_name(f"{rundir.LOCK}.{x}") for x in ("0a1b2c3d4e5f.claim", "a1b2c3d4e5f6.broken")]
    killed = tmp_path / ".options.json.x1y2.tmp"
    for p in [*taker, killed]:
        p.write_text("{}")
    run.sweep_temps()
    assert all(p.exists() for p in taker) and not killed.exists()


def _taken_by_another(tmp_path) -> tuple[RunLock, RunDir]:
    lock = RunLock(RunDir(tmp_path), "10", 0, heartbeat_s=3600)  # no heartbeat in the test's time
    lock.acquire()
    run = RunDir(tmp_path, lease=lock)
    other = {"job_id": "11", "attempt": 0, "host": "elsewhere", "pid": 1, "token": "new-holder"}
    run.lock.write_text(json.dumps(other))
    lock._confirmed -= 10 * lock.term_s  # what a SIGSTOP past takeover leaves: an old confirmation
    return lock, run


def test_a_holder_back_from_suspension_writes_nothing_before_any_heartbeat(tmp_path, capsys):
    lock, run = _taken_by_another(tmp_path)
    stats = Stats(run.stats, guard=run.guard)
    with pytest.raises(LeaseLostError, match="new-holder|job 11"):
        stats.write(kind="tick")
    assert "job 11" in lock.lost
    for write in (lambda: run.write_state(rundir.TRAINING), lambda: run.write_json(run.rank_note(0), {})):
        with pytest.raises(LeaseLostError):
            write()
    log = RunLog(run, echo=False).attach()
    logging.getLogger("oasis_dcgan.test").info("a line after the run was lost")
    log.close()
    assert "a line after the run was lost" in capsys.readouterr().err, "its last lines go to the job's own log"
    assert not run.stats.exists() or "tick" not in run.stats.read_text()
    assert "after the run was lost" not in (run.log.read_text() if run.log.exists() else "")
    assert not run.state_file.exists() and not run.rank_note(0).exists()
    lock.release()
    assert json.loads(run.lock.read_text())["token"] == "new-holder"


def test_a_write_broken_by_the_new_holder_ends_the_job_as_a_lost_lease(tmp_path):
    """Back from a SIGSTOP, the old holder's first failure may be any write (its checkpoint's temp
    files swept by the new holder): the job must still end as a lost lease, never requeued."""
    from oasis_dcgan.errors import StorageError, exit_code

    fresh = RunLock(RunDir(tmp_path / "fresh"), "12", 0, heartbeat_s=3600)
    (tmp_path / "fresh").mkdir()
    fresh.acquire()
    broke = StorageError("cannot write the checkpoint: No such file or directory")
    assert fresh.cause(broke) is broke, "a holder that still holds the run ends with its own error"
    fresh.release()
    lock, _ = _taken_by_another(tmp_path)
    ended = lock.cause(broke)
    assert isinstance(ended, LeaseLostError) and "job 11" in str(ended), ended
    assert exit_code(ended) == 3 and exit_code(broke) == 1
    assert lock.cause(KeyboardInterrupt()).__class__ is KeyboardInterrupt


def test_appends_never_go_through_a_planted_symlink(tmp_path):
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("someone else's file\n")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    for name in (rundir.LOG, rundir.STATS, rundir.REQUEUES):
        (run.path / name).symlink_to(secret)
    from oasis_dcgan.errors import PlantedLinkError
    from oasis_dcgan.launch import retry
    with pytest.raises(PlantedLinkError, match="symbolic link"):
        Stats(run.stats)
    with pytest.raises(PlantedLinkError, match=rundir.LOG):
        RunLog(run, echo=False)
    with pytest.raises(PlantedLinkError):
        retry._record(run, job_id="1", action="fail")
    assert secret.read_text() == "someone else's file\n"
