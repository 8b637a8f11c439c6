"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Everything the suite publishes (shards, manifests, checkpoints' index, reports) goes
through here: write to a temp name in the same directory, fsync, rename, fsync the dir.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from .errors import BadFileError, PlantedLinkError, StorageError


def umask() -> int:
    """This process's umask, read without changing it (os.umask can only swap it, and a swap
    would briefly apply to every other thread's new files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def io_reason(e: BaseException) -> str:
    """An I/O failure in a few words ("No space left on device"), not a page of library text.

    h5py and TensorFlow report a full disk in their own words, with the errno inside.
    """
    errno_ = getattr(e, "errno", None)
    if isinstance(errno_, int) and errno_ > 0:
        return os.strerror(errno_)
    text = str(e)
    for known in (os.strerror(28), os.strerror(122), os.strerror(5), os.strerror(30)):  # ENOSPC EDQUOT EIO EROFS
        if known.lower() in text.lower():
            return known
    return f"{type(e).__name__}: {text.strip().splitlines()[0] if text.strip() else 'no detail'}"


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory by name (a directory's fsync makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Make a finished temp file durable, then rename it over `dest` and make the rename durable."""
    fsync_path(tmp)
    os.replace(tmp, dest)
    fsync_path(Path(dest).parent)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike):
    """Yield a temp path next to `dest`; on clean exit fsync it and rename it over `dest`.

    The temp name starts with '.' and ends in '.tmp' so globs for finished files skip it,
    and a crash leaves only an obviously stale file behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    # mkstemp makes 0600 whatever the umask; on shared storage the group must be able to read
    # what the suite publishes, as it could a file made with open().
    os.fchmod(fd, 0o666 & ~umask())
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, StorageError) and e.errno in STORAGE_ERRNOS:
            raise storage_error(dest, "write", e, f"the previous {dest.name}, if there was one, is intact") from e
        raise


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, obj) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def open_append(path: str | os.PathLike):
    """A text file to append lines to, line-buffered, made with the umask's mode; never through a
    symlink planted at its name (a PlantedLinkError naming it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PlantedLinkError(f"{path}: is a symbolic link; the suite never writes through one (move it "
                                   "away, then run again)") from None
        raise storage_error(path, "open", e) from e
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


def read_json(path: str | os.PathLike):
    """Read JSON, naming the file in the error when it is not valid."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise BadFileError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete line of a JSONL file. A torn line (a kill mid-write) is skipped, and a
    missing file is empty: these files are appended to by runs that may die at any moment."""
    return follow_jsonl(path, 0)[0]


def follow_jsonl(path: str | os.PathLike, offset: int) -> tuple[list[dict], int]:
    """The complete lines after byte `offset`, and the offset after them (for a file that grows:
    a line still being written waits for the next call)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    done = data[:data.rfind(b"\n") + 1]
    rows = []
    for line in done.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, offset + len(done)



# A full disk, a quota, an I/O error, a read-only file system: the storage's fault, not the data's.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)


def is_storage_fault(e: BaseException) -> bool:
    """A full disk, a quota, an I/O error, a read-only mount: also when a library words it its own way."""
    return getattr(e, "errno", None) in STORAGE_ERRNOS or io_reason(e) in map(os.strerror, STORAGE_ERRNOS)


def io_failure(text: str, e: BaseException, user_error=None) -> Exception:
    """The error for an I/O failure worded `text`: retryable (StorageError) when the storage is at
    fault, else `user_error` (the input's; a DataError, a CollectError). Same text either way."""
    if is_storage_fault(e) or user_error is None:
        err = StorageError(text)
        err.errno = getattr(e, "errno", None)
    else:
        err = user_error(text)
    err.__cause__ = e
    return err


def storage_error(path, what: str, e: BaseException, intact: str = "", then: str = "") -> StorageError:
    msg = f"{path}: cannot {what} ({io_reason(e)})"
    if intact:
        msg += f"; {intact}"
    msg += f". {then or 'Free space and run the command again'}"
    err = StorageError(msg if msg.endswith(".") else msg + ".")
    err.errno = getattr(e, "errno", None)  # io_reason() of it is still the short reason
    err.__cause__ = e
    return err


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20, limit: int | None = None) -> str:
    """sha256 of the file, or of its first `limit` bytes."""
    h = hashlib.sha256()
    left = float("inf") if limit is None else limit
    with open(path, "rb") as f:
        while left > 0 and (chunk := f.read(int(min(bufsize, left)))):
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def remove_stale_temps(directory: str | os.PathLike, name: str = "") -> int:
    """Delete temp files (or directories) a killed writer left, for `name` or for every name.

    Only call it where no other process may be writing the same names right now: a writer's
    own names before it rewrites them, or a whole directory once its writers have finished.
    Returns how many were removed.
    """
    n = 0
    d = Path(directory)
    if d.is_dir():
        for p in d.glob(f".{name}*.tmp" if name else ".*.tmp"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            n += 1
    return n


# ----------------------------------------------------------------------------- lock holders

def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, started: str | None = None) -> bool:
    """The process is running, and is the one that took the lock (not a reuse of its pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    if fields[0] in ("Z", "X"):  # killed, not yet reaped
        return False
    return started is None or fields[19] == started
