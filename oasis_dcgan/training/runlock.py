"""One run, one writer: RUN_DIR/.lock names the job whose rank 0 is training into the directory.

The lock is created with O_EXCL and holds the holder's job id, attempt, host and pid; the
holder touches it at every tick and checkpoint. A lock is taken over (and the take-over
logged) when its holder is a previous attempt of the same job, a process on this host that
no longer exists, or silent for longer than `stale_after_s`; otherwise training is refused
with the holder named.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

LOCK = ".lock"
STALE_AFTER_S = 15 * 60.0


class RunLockError(RuntimeError):
    """Another live job is training into this run directory."""


def _pid_alive(pid: int) -> bool:
    """A running process (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def describe(holder: dict) -> str:
    return (f"job {holder.get('job_id')} (attempt {holder.get('attempt')}), pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('time', 0)))}")


def read(run_dir: str | os.PathLike) -> tuple[dict, float] | None:
    """The holder and the lock's age in seconds, or None when there is no lock."""
    path = Path(run_dir) / LOCK
    try:
        holder = json.loads(path.read_text())
        return holder, time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        return {}, 0.0  # a lock being written this instant: treat it as live


def why_stale(holder: dict, age_s: float, job_id: str = "", stale_after_s: float = STALE_AFTER_S) -> str:
    """Why this lock's holder can no longer be writing (empty: it may well be)."""
    if job_id and holder.get("job_id") == job_id and job_id != "local":
        return "it is an earlier attempt of this job"
    if holder.get("host") == platform.node() and holder.get("pid") and not _pid_alive(int(holder["pid"])):
        return f"process {holder['pid']} on this host is gone"
    if age_s > stale_after_s:
        return f"it was last touched {age_s / 60:.0f} min ago"
    return ""


def check_free(run_dir: str | os.PathLike, stale_after_s: float = STALE_AFTER_S) -> None:
    """Before submitting: refuse when a live job holds the run."""
    found = read(run_dir)
    if found is not None and not why_stale(*found, stale_after_s=stale_after_s):
        raise RunLockError(f"{run_dir} is being trained by {describe(found[0])}; wait for it, cancel it, or use "
                           f"another run directory (a lock left by a dead job is taken over after "
                           f"{stale_after_s / 60:.0f} min)")


class RunLock:
    def __init__(self, run_dir: str | os.PathLike, job_id: str, attempt: int, log=print,
                 stale_after_s: float = STALE_AFTER_S):
        self.path = Path(run_dir) / LOCK
        self.holder = {"job_id": job_id, "attempt": attempt, "host": platform.node(), "pid": os.getpid(),
                       "time": time.time()}
        self.log, self.stale_after_s = log, stale_after_s
        self.held = False

    def acquire(self) -> None:
        for _ in range(3):  # another taker may win a race for a stale lock: look again
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.holder, f)
            self.held = True
            return
        raise RunLockError(f"{self.path}: could not take the run's lock")

    def _take_over_if_stale(self) -> None:
        found = read(self.path.parent)
        if found is None:
            return
        why = why_stale(*found, job_id=self.holder["job_id"], stale_after_s=self.stale_after_s)
        if not why:
            raise RunLockError(f"{self.path.parent} is being trained by {describe(found[0])}; this job "
                               f"({self.holder['job_id']}) will not write into it")
        self.log(f"taking over the run's lock from {describe(found[0])}: {why}")
        self.path.unlink(missing_ok=True)

    def touch(self) -> None:
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
