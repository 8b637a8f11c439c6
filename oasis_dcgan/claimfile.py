"""Lock files on shared storage: taken whole, read honestly, aged on the file server's clock.

The run's lock (training/runlock.py) and the dataset's (prep/datalock.py) are both a small JSON
record at a fixed name. This module owns what they share:

- `take` writes the record to a claim file of its own, fsyncs it, gives it the umask's mode
  (a group that shares the directory must be able to read who holds it), then link()s it to
  the lock's name: that succeeds whole or fails because a lock exists. O_EXCL is not atomic
  on NFS; link() is.
- `read` tells three things apart: no lock (None), a record that was read but does not parse
  (`{}`: unreadable, which no holder leaves, since a lock is complete before it exists), and a
  lock that could not be read at all (permission, I/O, a stale handle), which raises
  `ClaimAccessError`: nothing can be concluded about its holder, so a caller refuses.
- The lock's age is measured on the file server's clock: its mtime against the mtime of a probe
  file made now in the same directory. This host's clock may be skewed against the server's.
- `break_stale` moves a stale lock away by rename (one taker wins) and puts back a lock that
  turned out to be a new holder's.

The side files (claims, probes, broken locks) are named `<lock>.<random>.<kind>` and never end
in `.tmp`, so the sweeps that remove a killed writer's temps never remove another taker's.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import pwd
import secrets
import time
import typing
from dataclasses import dataclass
from pathlib import Path

from .fsutil import pid_alive, umask


@dataclass(frozen=True)
class Liveness:
    """How a holder on another host is judged: by the scheduler where its jobs are named and it
    answers (the launch layer's `jobs_alive`: a pending, running or suspended job is alive
    whatever its age), else by the lock's age against `stale_after_s` (cluster.lock_stale_after_s)."""
    stale_after_s: float
    jobs_alive: typing.Callable[[list], bool | None] | None = None

    def why_stale(self, holder: dict, age_s: float) -> str:
        """Why a lock's holder cannot be writing any more ("" when it may be): bytes that do not
        parse; on this host, its process; elsewhere (or a holder that is queued jobs), its jobs or its age."""
        if not holder:
            return "its bytes do not parse, which no live holder leaves (a lock is written whole, then linked)"
        if not holder.get("queued") and holder.get("host") == platform.node():
            pid = int(holder.get("pid") or 0)
            if pid and not pid_alive(pid, holder.get("pid_start")):
                return f"process {pid} on this host is gone"
            return ""  # alive on this host: never taken over, however old the lock
        return self.why_gone(holder.get("jobs", []), age_s)

    def why_gone(self, job_ids: list[str], age_s: float) -> str:
        """Why the holder is gone, or "" when it may be alive."""
        if job_ids and self.jobs_alive is not None:
            alive = self.jobs_alive(job_ids)
            if alive is not None:
                return "" if alive else f"its Slurm job(s) {', '.join(job_ids)} have ended"
        if age_s > self.stale_after_s:
            return (f"nothing refreshed it for {age_s / 60:.1f} min (cluster.lock_stale_after_s is "
                    f"{self.stale_after_s:g} s)")
        return ""


class ClaimAccessError(OSError):
    """A lock file exists but cannot be read: who holds it cannot be known."""

    def __init__(self, path: Path, e: OSError):
        super().__init__(e.errno, f"{path}: cannot read the lock ({e.strerror or e}); it belongs to "
                                  f"{owner(path)}")
        self.path = path


def owner(path: Path) -> str:
    """The file's owner, by name where the system knows it, and its mode ("alice (uid 1001), mode 0600")."""
    try:
        st = os.lstat(path)
    except OSError:
        return "an owner that cannot be looked up"
    try:
        name = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        name = "a user with no name here"
    return f"{name} (uid {st.st_uid}), mode {oct(st.st_mode & 0o777)[2:].zfill(4)}"


def _side(path: Path, kind: str) -> Path:
    return path.with_name(f"{path.name}.{secrets.token_hex(6)}.{kind}")


def _write_side(path: Path, record: dict) -> Path:
    """The record, written and fsynced to a side file of its own, with the umask's mode (the group
    that shares the directory must be able to read who holds it)."""
    side = _side(path, "claim")
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(side)
        raise
    return side


def take(path: Path, record: dict) -> bool:
    """Take the lock `path` holding `record`. True: taken; False: a lock exists.
    An OSError from writing the claim (a full disk) is the caller's to word."""
    claim = _write_side(path, record)
    try:
        try:
            os.link(claim, path)
            return True
        except FileExistsError:
            # On NFS a link() whose reply was lost reports failure after it succeeded.
            return os.stat(claim).st_nlink == 2
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(claim)


def rewrite(path: Path, record: dict) -> None:
    """Replace the lock's record whole (rename over it), keeping it held: for a holder that learns
    more about itself (a packing's job ids once they are queued)."""
    side = _write_side(path, record)
    try:
        os.replace(side, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(side)


def server_now(directory: Path) -> float:
    """The file server's time now, as the mtime of a probe made in `directory`; this host's
    clock where no probe can be made (a directory this user may not write)."""
    probe = _side(directory / ".clock", "probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:
        return time.time()
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)


def read(path: Path, aged: bool = True) -> tuple[dict, float] | None:
    """The lock's record ({} when its bytes do not parse) and its age in seconds on the file
    server's clock (0 unless `aged`: the clock costs a probe file, which a holder checking its
    own token does not need); None: no lock. Raises ClaimAccessError when it exists but cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ClaimAccessError(path, e) from e
    try:
        mtime = os.fstat(fd).st_mtime
        data = os.read(fd, 1 << 16)
    except OSError as e:
        raise ClaimAccessError(path, e) from e
    finally:
        os.close(fd)
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        record = {}
    age = max(server_now(path.parent) - mtime, 0.0) if aged else 0.0
    return (record if isinstance(record, dict) else {}), age


def break_stale(path: Path, stale: dict) -> None:
    """Move a stale lock away by rename (one taker wins); if what moved was not the stale lock
    but a new holder's, put it back."""
    moved = _side(path, "broken")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return
    try:
        try:
            taken = (read(moved, aged=False) or ({}, 0))[0]
        except ClaimAccessError:
            taken = None  # cannot tell whose it is: put it back
        if taken is None or (taken and taken != stale):
            with contextlib.suppress(FileExistsError):
                os.link(moved, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(moved)
