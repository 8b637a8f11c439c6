"""Copy a run's results off scratch: resumable, verified, never silently overwriting.

What is copied is the run directory's results group (rundir.RESULTS, checkpoints when
asked): regular files only, never a temp, never through a symlink that leaves the run
directory (skipped, with a warning naming it), each with its permission bits. Every file is
copied to a temp name while its bytes are hashed, fsynced, renamed, then re-read at the
destination and compared with the hash of what was copied. The files that grow while a run
is live (rundir.GROWING) are copied as they stood when the copy began, cut at their last
complete line. A destination file that already matches is skipped (so an interrupted
collect resumes); one that differs is an error unless `update` (collecting again after the
run went on), which also lists what DEST holds that the run no longer has. DEST/SHA256SUMS
lists what was collected.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from pathlib import Path

from .. import fsutil, rundir
from ..prep.manifest import MANIFEST
from ..errors import CollectError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
SUMS = "SHA256SUMS"



def files_to_collect(run_dir: Path, include_checkpoints: bool) -> list[tuple[Path, Path]]:
    """(relative destination, relative source) of the results group's regular files; temps (dot
    names) left out. A symlink is listed as the file it points to, if that stays inside the run."""
    wanted = []
    for name in rundir.RESULTS + ((rundir.CHECKPOINTS,) if include_checkpoints else ()):
        top = run_dir / name
        if top.is_dir() and not top.is_symlink():
            for here, dirs, files in os.walk(top):  # does not descend into symlinked folders
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                wanted += [p for f in sorted(files) if not f.startswith(".")
                           and (p := _collectable(run_dir, Path(here) / f))]
        elif (p := _collectable(run_dir, top)) is not None:
            wanted.append(p)
    return wanted


def _collectable(run_dir: Path, path: Path) -> tuple[Path, Path] | None:
    """(where it goes, what to read), relative to the run, if it is a regular file inside the run directory."""
    rel = path.relative_to(run_dir)
    if path.is_symlink():
        target = path.resolve()
        if run_dir not in target.parents:
            log.warning(f"collect: skipped {path}: a symlink to {target}, outside the run directory")
            return None
        return (rel, target.relative_to(run_dir)) if target.is_file() else None
    if not path.exists() or not stat.S_ISREG(path.lstat().st_mode):
        return None
    return rel, rel


class Swapped(Exception):
    """A file listed as regular that is now something else (a symlink planted mid-collect)."""


def open_regular(base: Path, rel: Path) -> int:
    """A read descriptor of base/rel, opened one name at a time from base's descriptor, following
    no symlink on the way, and checked to be a regular file on the descriptor itself: what is
    read is what was checked, whatever is swapped in between. Raises Swapped otherwise."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in rel.parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        nxt = os.open(rel.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Swapped(f"{base / rel}: no longer a regular file ({os.strerror(e.errno)})") from None
        raise
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(nxt).st_mode):
        os.close(nxt)
        raise Swapped(f"{base / rel}: no longer a regular file")
    return nxt


def _snapshot_size(fd: int) -> int:
    """How much of a growing file to take: its size now, back to the end of its last full line."""
    size = os.fstat(fd).st_size
    back = min(size, 1 << 16)
    tail = os.pread(fd, back, size - back)
    cut = tail.rfind(b"\n")
    return size - back + cut + 1 if cut >= 0 else size


def _hash_fd(fd: int, src: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    for chunk in _chunks(fd, src, limit):
        h.update(chunk)
    return h.hexdigest()


def _chunks(fd: int, src: Path, limit: int | None):
    """The open file `src`'s bytes (its first `limit`), read by offset from its descriptor."""
    size, offset = os.fstat(fd).st_size if limit is None else limit, 0
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        if not chunk:
            raise CollectError(f"{src}: shrank while it was copied")
        offset += len(chunk)
        yield chunk


def copy_hashed(fd: int, src: Path, dest: Path, limit: int | None = None) -> str:
    """Copy the open file `src` (its first `limit` bytes) to `dest` atomically; return the sha256 of what was copied."""
    h = hashlib.sha256()
    with fsutil.atomic_path(dest) as tmp, open(tmp, "wb") as fout:
        os.fchmod(fout.fileno(), stat.S_IMODE(os.fstat(fd).st_mode))  # a private file stays private
        for chunk in _chunks(fd, src, limit):
            h.update(chunk)
            fout.write(chunk)
    return h.hexdigest()


def _copy_one(fd: int, src: Path, target: Path, growing: bool) -> str:
    """Copy and check; a file other than the log and stats that changes mid-copy is copied again."""
    for _ in range(3):
        before = os.fstat(fd)
        digest = copy_hashed(fd, src, target, _snapshot_size(fd) if growing else None)
        after = os.fstat(fd)
        if growing or (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
            break
    else:
        raise CollectError(f"{src}: kept changing while it was copied; collect again once the job has ended")
    if fsutil.sha256_file(target) != digest:
        raise CollectError(f"{target}: reads back different from what was copied from {src} (storage error?)")
    return digest


def _sources(run: rundir.RunDir, include_checkpoints: bool) -> list[tuple[Path, Path, Path]]:
    """(relative destination, base folder, source relative to it); the dataset manifest travels with the results."""
    run_dir = run.path.resolve()
    triples = [(rel, run_dir, src) for rel, src in files_to_collect(run_dir, include_checkpoints)]
    opts = run.read_options()
    dataset = Path(opts["config"]["data"]["dataset"])
    if (dataset / MANIFEST).is_file():
        triples.append((Path("dataset_" + MANIFEST), dataset, Path(MANIFEST)))
    return triples


def _matches(target: Path, fd: int, src: Path, growing: bool) -> str | None:
    """The target's hash when it already holds what would be copied now, else None."""
    limit = _snapshot_size(fd) if growing else None
    if growing and target.stat().st_size != limit:
        return None
    have = fsutil.sha256_file(target)
    return have if _hash_fd(fd, src, limit) == have else None


def collect(run: rundir.RunDir, dest: str | os.PathLike, include_checkpoints: bool = False,
            update: bool = False) -> dict:
    dest = Path(dest).resolve()
    if not run.options.is_file():
        raise CollectError(f"{run}: not a run directory (no {rundir.OPTIONS})")
    state = run.read_state()
    if state["state"] != rundir.FINISHED:  # the results of a run that goes on, or may: collect --update later
        log.info(f"collect: the run is {state['state']}, not finished: collecting its results as they stand")
    return bring(_sources(run, include_checkpoints), dest, update)


def collect_sweep(sweep: rundir.SweepDir, dest: str | os.PathLike, include_checkpoints: bool = False,
                  update: bool = False) -> dict:
    """Every run of a sweep that has started into DEST/<run>/ (each as `collect` takes one), then
    sweep.json and the leaderboard into DEST, each with its SHA256SUMS."""
    dest = Path(dest).resolve()
    names = [r["run_dir"] for r in fsutil.read_json(sweep.record)["runs"]]
    runs = {n: collect(sweep.run(n), dest / n, include_checkpoints, update) for n in names
            if sweep.run(n).options.is_file()}
    if len(runs) < len(names):
        log.info(f"collect: {len(names) - len(runs)} run(s) of the sweep never started; nothing of theirs to take")
    top = sweep.path.resolve()
    own = [Path(rundir.SWEEP_RECORD)] + sorted(p.relative_to(top) for p in (top / rundir.SWEEP_REPORT).glob("*")
                                               if p.is_file() and not p.name.startswith("."))
    return {"runs": runs, **bring([(rel, top, rel) for rel in own], dest, update)}


def bring(sources: list[tuple[Path, Path, Path]], dest: Path, update: bool) -> dict:
    """Copy each (relative destination, base folder, source relative to it) into DEST, verified,
    keeping DEST/SHA256SUMS whatever fails; a file that differs is a conflict unless `update`."""
    dest.mkdir(parents=True, exist_ok=True)
    before = _listed(dest)
    sums, counts, conflicts = {}, {"copied": 0, "skipped": 0, "updated": 0}, []
    try:
        for rel, base, src in sources:
            try:
                fd = open_regular(base, src)
            except Swapped as e:
                log.warning(f"collect: skipped {e}")
                continue
            try:
                outcome, digest = _take(fd, base / src, dest / rel, str(rel) in rundir.GROWING, update)
            finally:
                os.close(fd)
            if outcome == "conflict":
                conflicts.append(str(dest / rel))
                continue
            sums[str(rel)] = digest
            counts[outcome] += 1
    finally:  # whatever fails, DEST/SHA256SUMS keeps every entry it had, updated by what was copied
        _write_sums(dest, {**before, **sums}, quiet=True)
    if conflicts:
        raise CollectError(f"{len(conflicts)} file(s) in {dest} differ from the run's and were left as they are "
                           "(a run that went on: collect --update refreshes them; otherwise move them away or "
                           "pick another DEST):\n" + "\n".join(f"  {c}" for c in conflicts))
    gone = sorted(set(before) - set(sums))
    if gone:  # kept, not deleted: DEST is the user's
        log.info(f"collect: {len(gone)} file(s) in {dest} are no longer in the run (kept): " + ", ".join(gone[:10])
                 + (" ..." if len(gone) > 10 else ""))
    _write_sums(dest, {**{r: before[r] for r in gone}, **sums})
    log.info(f"collected {counts['copied']} new file(s), refreshed {counts['updated']}, {counts['skipped']} already "
             f"there, into {dest}")
    return {"dest": str(dest), **counts, "files": len(sums), "no_longer_in_run": gone}


def _take(fd: int, src: Path, target: Path, growing: bool, update: bool) -> tuple[str, str]:
    """Bring one file to DEST: (copied | updated | skipped | conflict, its sha256)."""
    existed = target.exists()
    if existed:
        same = _matches(target, fd, src, growing)
        if same:
            return "skipped", same
        if not update:
            return "conflict", ""
    try:
        return ("updated" if existed else "copied"), _copy_one(fd, src, target, growing)
    except OSError as e:
        text = (f"{target}: cannot copy {src} ({fsutil.io_reason(e)}); the partial copy was removed. Intact "
                f"in {target.parent}: every file listed in SHA256SUMS. Free space and collect again: it copies "
                "only what is missing.")
        raise fsutil.io_failure(text, e, CollectError) from e  # a full disk is worth another try


def _listed(dest: Path) -> dict:
    """What an earlier collect into DEST listed in SHA256SUMS: {relative path: sha256}."""
    path = dest / SUMS
    if not path.is_file():
        return {}
    pairs = (line.split("  ", 1) for line in path.read_text(encoding="utf-8").splitlines() if "  " in line)
    return {rel: digest for digest, rel in pairs}


def _write_sums(dest: Path, sums: dict, quiet: bool = False) -> None:
    try:
        fsutil.write_text(dest / SUMS, "".join(f"{d}  {r}\n" for r, d in sorted(sums.items())))
    except OSError:
        if not quiet:
            raise
