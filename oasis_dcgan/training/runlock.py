"""One run, one writer: RUN_DIR/.lock is a lease naming the job whose rank 0 trains into the directory.

The lock file is taken the NFS-safe way (claimfile.py): complete before it exists, readable by
the group, aged on the file server's clock. It carries its holder: job, attempt, host, pid, the
pid's start time, uid and a random token.

Why not flufl.lock, which takes locks the same way: it breaks a lock only when its lifetime
has run out. This lock must also decide by who holds it: a requeued job takes over its own
earlier attempt at once, a dead process on this host is replaced at once, and a live process
on this host is never replaced however old its lock is. A holder on another host that names
a Slurm job is alive while Slurm has that job pending, running or suspended; age decides only
where no scheduler answers, past cluster.lock_stale_after_s.

Holding it is a lease, fenced. A heartbeat thread confirms every `heartbeat_s` that the lock
still names this holder and refreshes its time. A confirmation is good for `term_s`; every
write into the run (rundir.RunDir.guard) and every compiled call of the loop asks `valid()`,
which costs an attribute read while the lease is fresh and re-reads the lock when it is not.
So a holder that was suspended (SIGSTOP, scontrol suspend, gang scheduling) or cut off past
takeover finds out before its next write, not at its next checkpoint. A lease that is lost
(another holder, or the heartbeat unable to refresh it for MISSED_BEATS periods) stays lost:
the job writes nothing more and ends with LeaseLostError. `release()` removes the lock only if
it is still this holder's.
"""
from __future__ import annotations

import logging
import os
import platform
import secrets
import threading
import time

from .. import claimfile, rundir
from ..config import ClusterConfig
from ..errors import LeaseLostError, RunLockError
from ..fsutil import start_time, storage_error
from .distributed import NO_JOB

log = logging.getLogger(__name__)

HEARTBEAT_S = 60.0
STALE_AFTER_S = ClusterConfig.lock_stale_after_s  # the key's default
BY_AGE = claimfile.Liveness(STALE_AFTER_S)  # where no scheduler can be asked
MISSED_BEATS = 3  # a lease the heartbeat could not refresh this many periods in a row is given up


def describe(holder: dict) -> str:
    if not holder:
        return "an unreadable lock (its bytes do not parse)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    uid = f" (uid {holder['uid']})" if "uid" in holder else ""
    return (f"job {holder.get('job_id')} (attempt {holder.get('attempt')}), pid {holder.get('pid')}{uid} on "
            f"{holder.get('host')}, since {since}")


def read(run: rundir.RunDir) -> tuple[dict, float] | None:
    """The holder ({} when its bytes do not parse) and the seconds since its last heartbeat; None:
    no lock. A lock that cannot be read at all is a RunLockError naming the file and its owner."""
    path = run.lock
    try:
        return claimfile.read(path)
    except claimfile.ClaimAccessError as e:
        raise RunLockError(f"{e.strerror}: who holds the run cannot be known, so nothing was written. Ask its owner, "
                           f"or have it made readable by the group") from None


def why_stale(holder: dict, age_s: float, me: dict | None = None, liveness: claimfile.Liveness = BY_AGE) -> str:
    """Why this lock's holder cannot be writing any more (empty: it may well be). On this host its
    process decides; elsewhere the scheduler, where the holder names a Slurm job and it answers;
    age only where nothing can be asked."""
    if me and me["job_id"] != NO_JOB and holder.get("job_id") == me["job_id"] \
            and int(holder.get("attempt", 0)) < int(me["attempt"]):
        return f"it is attempt {holder.get('attempt')} of this job, and this is attempt {me['attempt']}"
    return liveness.why_stale(holder, age_s)


def check_free(run: rundir.RunDir, liveness: claimfile.Liveness = BY_AGE) -> None:
    """Before submitting: refuse when a live job holds the run."""
    found = read(run)
    if found is not None and not why_stale(*found, liveness=liveness):
        raise RunLockError(f"{run} is being trained by {describe(found[0])}; wait for it, cancel it, or use "
                           "another run directory (a lock left by a dead job on another host is taken over once "
                           f"Slurm says it ended, or {liveness.stale_after_s / 60:.1f} min after its last heartbeat)")


class RunLock:
    def __init__(self, run: rundir.RunDir, job_id: str, attempt: int, liveness: claimfile.Liveness = BY_AGE,
                 heartbeat_s: float | None = None):
        self.run, self.path = run, run.lock
        pid = os.getpid()
        self.holder = {"job_id": str(job_id), "attempt": int(attempt), "host": platform.node(), "pid": pid,
                       "pid_start": start_time(pid), "uid": os.getuid(), "token": secrets.token_hex(8),
                       "since": time.time(),
                       # the jobs a scheduler can vouch for: this one, where one runs it
                       "jobs": [str(job_id)] if liveness.jobs_alive and job_id != NO_JOB else []}
        self.liveness = liveness
        stale_after_s = self.stale_after_s = liveness.stale_after_s
        # Several heartbeats fit in the takeover limit, so a live holder is never silent that long.
        self.heartbeat_s = heartbeat_s or min(HEARTBEAT_S, stale_after_s / (2 * MISSED_BEATS))
        self.term_s = 2 * self.heartbeat_s
        self.held = False
        self.taken_from = ""  # whose stale lock this holder took over, and why (the trainer logs it)
        self.lost = ""  # why this holder no longer holds the lease it took; once set, never cleared
        self._confirmed = 0.0  # time.monotonic() of the last confirmation (it advances while stopped)
        self._missed = 0
        self._touching = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._io = threading.RLock()  # the heartbeat and the loop never interleave; a signal handler may re-enter

    # -------------------------------------------------------------- taking it

    def acquire(self) -> None:
        for _ in range(5):  # another taker may win a race for a stale lock: look again
            if self._link():
                self.held, self._confirmed = True, time.monotonic()
                self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
                self._beat.start()
                return
            self._take_over_if_stale()
        raise RunLockError(f"{self.path}: could not take the run's lock (other jobs kept taking it)")

    def _link(self) -> bool:
        try:
            return claimfile.take(self.path, self.holder)
        except OSError as e:
            raise storage_error(self.path, "take the run's lock", e, "nothing in the run was changed",
                                "Free space, then start the job again") from e

    def _take_over_if_stale(self) -> None:
        found = read(self.run)
        if found is None:
            return
        why = why_stale(*found, me=self.holder, liveness=self.liveness)
        if not why:
            raise RunLockError(f"{self.path.parent} is being trained by {describe(found[0])}; this job "
                               f"({self.holder['job_id']}, attempt {self.holder['attempt']}) will not write into it")
        self.taken_from = f"took over the run's lock from {describe(found[0])}: {why}"
        claimfile.break_stale(self.path, found[0])

    # -------------------------------------------------------------- holding it

    def touch(self) -> None:
        """Confirm the lease still names this holder and refresh its time. A failure to tell counts
        as a missed beat; MISSED_BEATS in a row lose the lease. What it has to say is logged once
        the lease's own lock is let go: a log line asks valid() under the logging handler's lock,
        so logging under this one could deadlock against a thread that logs."""
        if not self.held or self.lost:
            return
        with self._io:
            if self._touching:  # re-entered (a signal handler, a log line of the refresh itself)
                return
            self._touching = True
            try:
                said = self._refresh()
            finally:
                self._touching = False
        if said:
            log.warning(said)

    def _refresh(self) -> str:
        try:
            found = claimfile.read(self.path, aged=False)
            if found is None or found[0].get("token") != self.holder["token"]:
                return self._lose(f"the lock now names {describe(found[0])}" if found else "the lock was removed")
            os.utime(self.path)
            self._confirmed, self._missed = time.monotonic(), 0
            return ""
        except Exception as e:  # noqa: BLE001 -- a storage hiccup: the next beat tries again, up to a limit
            self._missed += 1
            if self._missed >= MISSED_BEATS:
                return self._lose(f"it could not be refreshed for {self._missed} heartbeats ({type(e).__name__}: {e})")
            return f"could not refresh the run's lock {self.path}: {type(e).__name__}: {e}" if self._missed == 1 else ""

    def _lose(self, why: str) -> str:
        self.lost = why
        return f"lost the run's lock: {why}; this job writes nothing more into {self.path.parent}"

    def valid(self) -> bool:
        """Whether this holder may write now: free while the last confirmation is fresh, a re-read when not."""
        if self.lost or not self.held:
            return False
        if time.monotonic() - self._confirmed > self.term_s:
            self.touch()
        # Unconfirmed (a storage hiccup), the lease still holds while no one else could have taken
        # it: until half the takeover limit after the last refresh that was made.
        return not self.lost and time.monotonic() - self._confirmed < max(self.term_s, self.stale_after_s / 2)

    def check(self) -> None:
        """Raise LeaseLostError unless this holder may write into the run now."""
        if not self.valid():
            why = self.lost or "the lease could not be confirmed"
            raise LeaseLostError(f"{self.path.parent}: this job ({self.holder['job_id']}, attempt "
                                 f"{self.holder['attempt']}) no longer holds the run's lock ({why}); it stopped "
                                 "writing and leaves the run to its holder")

    def cause(self, e: BaseException) -> BaseException:
        """The error a job that failed ends with: the lost lease when it was lost, whatever write it
        broke first (a checkpoint whose temp files the new holder swept, say), so the job exits as
        a lost lease, which is never requeued, rather than as a full disk."""
        if isinstance(e, LeaseLostError) or not isinstance(e, Exception) or not self.held or self.valid():
            return e
        try:
            self.check()
        except LeaseLostError as lost:
            return lost
        return e

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.touch()
            except BaseException as e:  # noqa: BLE001 -- the heartbeat must not die silently
                log.warning(f"the run lock's heartbeat: {type(e).__name__}: {e}")

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=5)
        self.held = False
        with self._io:
            said = self._remove_if_mine()
        if said:
            log.info(said)

    def _remove_if_mine(self) -> str:
        try:
            found = claimfile.read(self.path, aged=False)
        except OSError as e:
            return f"left the run's lock in place: {e}"
        if found is not None and found[0].get("token") == self.holder["token"]:
            self.path.unlink(missing_ok=True)
        elif found:
            return f"the run's lock is held by {describe(found[0])}; left in place"
        return ""
