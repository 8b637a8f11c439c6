"""One packing at a time in a dataset directory: DATASET/.packing.lock names the packing that writes it.

A packing is one plan, its pack tasks and its seal, which may be jobs on other hosts that start
hours after the plan: the lock therefore names the packing (a token saved in the plan), not a
process. Planning takes it; every task and the seal check that it still names their packing
before they write, and refresh its time as they go; the seal removes it.

Another packing is refused while the lock is live, naming its holder. A lock is given up:
- by an in-process packing on this host, as soon as its process is gone;
- by a packing of queued jobs, or one on another host, once nothing refreshed it for
  STALE_AFTER_S (its jobs were cancelled or died). Should its tasks start after all, they find
  the lock names another packing and write nothing.
"""
from __future__ import annotations

import logging
import os
import platform
import secrets
import time
from pathlib import Path

from .. import fsutil
from .manifest import DataError

log = logging.getLogger(__name__)

LOCK = ".packing.lock"
STALE_AFTER_S = 15 * 60.0


def new_token() -> str:
    return secrets.token_hex(8)


def _holder(token: str, queued: bool) -> dict:
    pid = os.getpid()
    return {"token": token, "queued": queued, "host": platform.node(), "pid": pid, "pid_start": fsutil.start_time(pid),
            "since": time.time()}


def describe(holder: dict) -> str:
    if not holder:
        return "an unreadable lock"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    how = "queued jobs" if holder.get("queued") else f"pid {holder.get('pid')} on {holder.get('host')}"
    return f"packing {holder.get('token')} ({how}, since {since})"


def why_stale(holder: dict, age_s: float) -> str:
    """Why the holding packing cannot be writing any more (empty: it may well be)."""
    if not holder:
        return "the lock is unreadable, which no live packing leaves (it is written whole, then linked)"
    if not holder.get("queued") and holder.get("host") == platform.node():
        pid = int(holder.get("pid") or 0)
        return f"its process {pid} on this host is gone" if not fsutil.pid_alive(pid, holder.get("pid_start")) else ""
    if age_s > STALE_AFTER_S:
        return f"nothing refreshed it for {age_s / 60:.0f} min"
    return ""


def take(out: Path, token: str, queued: bool) -> None:
    """Hold `out` for the packing `token` (already its holder: nothing to do), or raise naming the live one."""
    path = out / LOCK
    for _ in range(5):  # another taker may win a race for a stale lock: look again
        try:
            if fsutil.link_claim(path, _holder(token, queued)):
                return
        except OSError as e:
            raise DataError(f"{path}: cannot take the dataset's lock ({fsutil.io_reason(e)}); nothing was "
                            "written. Free space, then run preprocess again.") from e
        found = fsutil.read_claim(path)
        if found is None:
            continue
        holder, age = found
        if holder.get("token") == token:
            return
        why = why_stale(holder, age)
        if not why:
            raise DataError(f"{out} is being packed by {describe(holder)}; nothing was written. Wait for it to "
                            f"finish, or set data.dataset to another directory. (If its jobs are gone, the lock "
                            f"is given up {STALE_AFTER_S / 60:.0f} min after its last sign of life, or remove "
                            f"{path}.)")
        log.info(f"[preprocess] taking over {path} from {describe(holder)}: {why}")
        fsutil.break_claim(path, holder)
    raise DataError(f"{path}: could not take the dataset's lock (other packings kept taking it)")


def check(out: Path, token: str) -> None:
    """Before a task or the seal writes: the lock must still name its packing. Refreshes it."""
    path = out / LOCK
    found = fsutil.read_claim(path)
    if found is None or found[0].get("token") != token:
        now = describe(found[0]) if found else "no packing"
        raise DataError(f"{out}: this packing ({token}) no longer holds the dataset's lock, which names {now}; "
                        "it wrote nothing. Run preprocess again if the dataset is still wanted.")
    try:
        os.utime(path)
    except OSError:  # a storage hiccup: the next check refreshes it
        pass


def release(out: Path, token: str) -> None:
    """Remove the lock if it still names this packing."""
    path = out / LOCK
    found = fsutil.read_claim(path)
    if found is not None and found[0].get("token") == token:
        path.unlink(missing_ok=True)
