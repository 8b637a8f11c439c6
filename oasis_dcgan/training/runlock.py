"""One run, one writer: RUN_DIR/.lock names the job whose rank 0 is training into the directory.

Run directories sit on shared storage, often NFS or Lustre, where O_EXCL is not atomic. The
lock is therefore taken the NFS-safe way: the holder's record is written and fsynced to a
file of its own, then link()ed to `.lock`, which either succeeds whole or fails because a
lock exists. A lock is never empty or half-written, and it carries its holder: job, attempt,
host, pid, the pid's start time and a random token.

Why not flufl.lock, which takes locks the same way: it breaks a lock only when its lifetime
has run out. This lock must also decide by who holds it: a requeued job takes over its own
earlier attempt at once, a dead process on this host is replaced at once, and a live process
on this host is never replaced however old its lock is. Age decides only for a holder on
another host, whose liveness cannot be asked.

While held, a heartbeat thread refreshes the lock's time every HEARTBEAT_S and checks that
it still names this holder; if it no longer does, `check()` raises and the trainer stops
writing. `release()` removes the lock only if it is still this holder's.
"""
from __future__ import annotations

import logging
import os
import platform
import secrets
import threading
import time

from .. import fsutil, rundir
from ..fsutil import pid_alive, start_time
from .distributed import NO_JOB
from ..errors import RunLockError

log = logging.getLogger(__name__)

HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * 60.0  # another host's holder, silent this long, is gone (allows for clock skew)



def describe(holder: dict) -> str:
    if not holder:
        return "an unreadable lock (empty or corrupt)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return (f"job {holder.get('job_id')} (attempt {holder.get('attempt')}), pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {since}")


def read(run_dir: str | os.PathLike) -> tuple[dict, float] | None:
    """The holder ({} when unreadable) and the seconds since its last heartbeat; None: no lock."""
    return fsutil.read_claim(rundir.RunDir(run_dir).lock)


def why_stale(holder: dict, age_s: float, me: dict | None = None, stale_after_s: float = STALE_AFTER_S) -> str:
    """Why this lock's holder cannot be writing any more (empty: it may well be)."""
    if not holder:
        # Every lock this suite takes is complete before it exists (written, then linked).
        return "it is unreadable (empty or corrupt), which no live holder leaves"
    if me and me["job_id"] != NO_JOB and holder.get("job_id") == me["job_id"] \
            and int(holder.get("attempt", 0)) < int(me["attempt"]):
        return f"it is attempt {holder.get('attempt')} of this job, and this is attempt {me['attempt']}"
    if holder.get("host") == platform.node():
        pid = int(holder.get("pid") or 0)
        if pid and not pid_alive(pid, holder.get("pid_start")):
            return f"process {pid} on this host is gone"
        return ""  # alive on this host: never taken over, however old the lock
    if age_s > stale_after_s:
        return f"it was last refreshed {age_s / 60:.0f} min ago (a live holder refreshes it every {HEARTBEAT_S:.0f} s)"
    return ""


def check_free(run_dir: str | os.PathLike, stale_after_s: float = STALE_AFTER_S) -> None:
    """Before submitting: refuse when a live job holds the run."""
    found = read(run_dir)
    if found is not None and not why_stale(*found, stale_after_s=stale_after_s):
        raise RunLockError(f"{run_dir} is being trained by {describe(found[0])}; wait for it, cancel it, or use "
                           f"another run directory (a lock left by a dead job on another host is taken over "
                           f"after {stale_after_s / 60:.0f} min)")


class RunLock:
    def __init__(self, run_dir: str | os.PathLike, job_id: str, attempt: int,
                 stale_after_s: float = STALE_AFTER_S, heartbeat_s: float = HEARTBEAT_S):
        self.path = rundir.RunDir(run_dir).lock
        pid = os.getpid()
        self.holder = {"job_id": str(job_id), "attempt": int(attempt), "host": platform.node(), "pid": pid,
                       "pid_start": start_time(pid), "token": secrets.token_hex(8), "since": time.time()}
        self.stale_after_s, self.heartbeat_s = stale_after_s, heartbeat_s
        self.held = False
        self.lost = ""  # why this holder no longer holds the lock it took
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._io = threading.Lock()  # the heartbeat and the loop's touch() never interleave

    # -------------------------------------------------------------- taking it

    def acquire(self) -> None:
        for _ in range(5):  # another taker may win a race for a stale lock: look again
            if self._link():
                self.held = True
                self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
                self._beat.start()
                return
            self._take_over_if_stale()
        raise RunLockError(f"{self.path}: could not take the run's lock (other jobs kept taking it)")

    def _link(self) -> bool:
        try:
            return fsutil.link_claim(self.path, self.holder)
        except OSError as e:
            raise fsutil.storage_error(self.path, "take the run's lock", e, "nothing in the run was changed",
                                       "Free space, then start the job again") from e

    def _take_over_if_stale(self) -> None:
        found = read(self.path.parent)
        if found is None:
            return
        why = why_stale(*found, me=self.holder, stale_after_s=self.stale_after_s)
        if not why:
            raise RunLockError(f"{self.path.parent} is being trained by {describe(found[0])}; this job "
                               f"({self.holder['job_id']}, attempt {self.holder['attempt']}) will not write into it")
        log.info(f"taking over the run's lock from {describe(found[0])}: {why}")
        self._break(found[0])

    def _break(self, stale: dict) -> None:
        fsutil.break_claim(self.path, stale)

    # -------------------------------------------------------------- holding it

    def _mine(self) -> bool:
        found = read(self.path.parent)
        return found is not None and found[0].get("token") == self.holder["token"]

    def touch(self) -> None:
        """Refresh the lock's time, once it is checked to still be this holder's."""
        if not self.held or self.lost:
            return
        with self._io:
            try:
                if not self._mine():
                    found = read(self.path.parent)
                    self.lost = f"the lock now names {describe(found[0])}" if found else "the lock was removed"
                    log.warning(f"lost the run's lock: {self.lost}")
                    return
                os.utime(self.path)
            except OSError as e:  # a storage hiccup: the next heartbeat tries again
                log.warning(f"could not refresh the run's lock {self.path}: {fsutil.io_reason(e)}")

    def check(self) -> None:
        """Raise if another holder has the run: this job must not write into it any more."""
        if self.lost:
            raise RunLockError(f"{self.path.parent}: this job ({self.holder['job_id']}) no longer holds the run's "
                               f"lock ({self.lost}); it stopped writing")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.touch()

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=5)
        self.held = False
        with self._io:
            if self._mine():
                self.path.unlink(missing_ok=True)
            else:
                found = read(self.path.parent)
                if found:
                    log.info(f"the run's lock is held by {describe(found[0])}; left in place")
