"""One packing at a time in a dataset directory: DATASET/.packing.lock names the packing that writes it.

A packing is one plan, its pack tasks and its seal, which may be jobs on other hosts that start
hours after the plan: the lock therefore names the packing (a token saved in the plan), not a
process. Planning takes it; every task and the seal check that it still names their packing
before they write, and refresh its time as they go; the seal removes it.

Another packing is refused while the lock is live, naming its holder. A lock is given up:
- by an in-process packing on this host, as soon as its process is gone;
- by a packing of queued Slurm jobs (their ids are written into the lock once submitted), as
  soon as Slurm has none of them pending, running or suspended: never while they wait in a
  busy queue, however long;
- by any other, once nothing refreshed it for cluster.lock_stale_after_s. Should its tasks
  start after all, they find the lock names another packing and write nothing.
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import secrets
import time
from pathlib import Path

from .. import claimfile, fsutil
from ..config import ClusterConfig
from .manifest import DataError

log = logging.getLogger(__name__)

LOCK = ".packing.lock"
BY_AGE = claimfile.Liveness(ClusterConfig.lock_stale_after_s)  # where no scheduler can be asked


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


def read(path: Path, aged: bool = True) -> tuple[dict, float] | None:
    """The holding packing and the lock's age; None: no lock. One that cannot be read is refused."""
    try:
        return claimfile.read(path, aged)
    except claimfile.ClaimAccessError as e:
        raise DataError(f"{e.strerror}: which packing holds the dataset cannot be known, so nothing was "
                        "written. Ask its owner, or have it made readable by the group.") from None


def take(out: Path, token: str, queued: bool, liveness: claimfile.Liveness = BY_AGE) -> None:
    """Hold `out` for the packing `token` (already its holder: nothing to do), or raise naming the live one."""
    path = out / LOCK
    for _ in range(5):  # another taker may win a race for a stale lock: look again
        try:
            if claimfile.take(path, _holder(token, queued)):
                return
        except OSError as e:  # a full disk: the storage's fault, worth another try once space is freed
            raise fsutil.storage_error(path, "take the dataset's lock", e, "nothing was written",
                                       "Free space, then run preprocess again") from e
        found = read(path)
        if found is None:
            continue
        holder, age = found
        if holder.get("token") == token:
            return
        why = liveness.why_stale(holder, age)
        if not why:
            raise DataError(f"{out} is being packed by {describe(holder)}; nothing was written. Wait for it to "
                            f"finish, or set data.dataset to another directory. (If its jobs are gone, the lock "
                            f"is given up once Slurm says so, or {liveness.stale_after_s / 60:.0f} min after its "
                            f"last sign of life; or remove {path}.)")
        log.info(f"[preprocess] taking over {path} from {describe(holder)}: {why}")
        claimfile.break_stale(path, holder)
    raise DataError(f"{path}: could not take the dataset's lock (other packings kept taking it)")


def name_jobs(out: Path, token: str, job_ids: list[str]) -> None:
    """Write the Slurm jobs of a queued packing into its lock: while Slurm has any of them, the
    packing is alive, however long they wait in the queue."""
    path = out / LOCK
    found = read(path, aged=False)
    if found is not None and found[0].get("token") == token:
        claimfile.rewrite(path, {**found[0], "jobs": [str(j) for j in job_ids]})


def check(out: Path, token: str) -> None:
    """Before a task or the seal writes: the lock must still name its packing. Refreshes it."""
    path = out / LOCK
    found = read(path, aged=False)
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
    found = read(path, aged=False)
    if found is not None and found[0].get("token") == token:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- runs reading the dataset
# A training run names itself in DATASET/.readers/ while it holds its run's lock: a packing into
# a sealed dataset that a live run reads would change that run's data under it, so it is refused.

READERS = ".readers"


def add_reader(dataset, run_lock: Path, token: str) -> None:
    """Name the run whose lock is `run_lock` (held with `token`) as reading `dataset`. A dataset this
    user may not write (a group's, read-only) cannot be repacked by the user either: nothing to do."""
    try:
        fsutil.write_json(Path(dataset) / READERS / f"{token}.json", {"run_lock": str(run_lock), "token": token})
    except OSError as e:
        log.info(f"{dataset}: not named as read by this run ({fsutil.io_reason(e)})")


def remove_reader(dataset, token: str) -> None:
    with contextlib.suppress(OSError):
        (Path(dataset) / READERS / f"{token}.json").unlink()


def live_readers(dataset: Path, liveness: claimfile.Liveness = BY_AGE) -> list[str]:
    """The live runs reading `dataset`, described; the notes of runs that are over are removed."""
    live = []
    for note in sorted((dataset / READERS).glob("*.json")) if (dataset / READERS).is_dir() else []:
        try:
            reader = fsutil.read_json(note)
            found = claimfile.read(Path(reader["run_lock"]))
        except (OSError, ValueError, KeyError):
            continue  # unreadable: leave it, and do not count it
        if found is not None and found[0].get("token") == reader["token"] and not liveness.why_stale(*found):
            live.append(f"{Path(reader['run_lock']).parent} (job {found[0].get('job_id')} on {found[0].get('host')})")
        else:
            with contextlib.suppress(OSError):
                note.unlink()
    return live
