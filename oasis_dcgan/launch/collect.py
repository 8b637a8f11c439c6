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

import logging
import hashlib
import os
import stat
from pathlib import Path

from .. import fsutil, rundir
from ..prep.manifest import MANIFEST
from ..errors import CollectError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
SUMS = "SHA256SUMS"



def files_to_collect(run_dir: Path, include_checkpoints: bool) -> list[Path]:
    """Relative paths of the results group's regular files; temps (dot names) left out."""
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


def _collectable(run_dir: Path, path: Path) -> Path | None:
    """The path relative to the run, if it is a regular file that stays inside the run directory."""
    if path.is_symlink():
        target = path.resolve()
        if run_dir not in target.parents:
            log.warning(f"collect: skipped {path}: a symlink to {target}, outside the run directory")
            return None
        if not target.is_file():
            return None
    elif not path.exists() or not stat.S_ISREG(path.lstat().st_mode):
        return None
    return path.relative_to(run_dir)


def _snapshot_size(src: Path) -> int:
    """How much of a growing file to take: its size now, back to the end of its last full line."""
    size = src.stat().st_size
    with open(src, "rb") as f:
        back = min(size, 1 << 16)
        f.seek(size - back)
        tail = f.read(back)
    cut = tail.rfind(b"\n")
    return size - back + cut + 1 if cut >= 0 else size


def copy_hashed(src: Path, dest: Path, limit: int | None = None) -> str:
    """Copy `src` (its first `limit` bytes) to `dest` atomically; return the sha256 of what was copied."""
    h = hashlib.sha256()
    left = src.stat().st_size if limit is None else limit
    with fsutil.atomic_path(dest) as tmp, open(src, "rb") as fin, open(tmp, "wb") as fout:
        os.fchmod(fout.fileno(), stat.S_IMODE(os.fstat(fin.fileno()).st_mode))  # a private file stays private
        while left > 0:
            chunk = fin.read(min(CHUNK, left))
            if not chunk:
                raise CollectError(f"{src}: shrank while it was copied")
            h.update(chunk)
            fout.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def _copy_one(src: Path, target: Path, growing: bool) -> str:
    """Copy and check; a file other than the log and stats that changes mid-copy is copied again."""
    for _ in range(3):
        before = src.stat()
        digest = copy_hashed(src, target, _snapshot_size(src) if growing else None)
        after = src.stat()
        if growing or (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
            break
    else:
        raise CollectError(f"{src}: kept changing while it was copied; collect again once the job has ended")
    if fsutil.sha256_file(target) != digest:
        raise CollectError(f"{target}: reads back different from what was copied from {src} (storage error?)")
    return digest


def _sources(run_dir: Path, include_checkpoints: bool) -> list[tuple[Path, Path]]:
    """(relative destination, source) pairs; the dataset manifest travels with the results."""
    pairs = [(f, run_dir / f) for f in files_to_collect(run_dir, include_checkpoints)]
    opts = rundir.RunDir(run_dir).read_options()
    manifest = Path(opts["config"]["data"]["dataset"]) / MANIFEST
    if manifest.is_file():
        pairs.append((Path("dataset_" + MANIFEST), manifest))
    return pairs


def _matches(target: Path, src: Path, growing: bool) -> str | None:
    """The target's hash when it already holds what would be copied now, else None."""
    limit = _snapshot_size(src) if growing else None
    if growing and target.stat().st_size != limit:
        return None
    have = fsutil.sha256_file(target)
    return have if fsutil.sha256_file(src, limit=limit) == have else None


def collect(run_dir: str | os.PathLike, dest: str | os.PathLike, include_checkpoints: bool = False,
            update: bool = False) -> dict:
    run_dir, dest = Path(run_dir).resolve(), Path(dest).resolve()
    if not rundir.RunDir(run_dir).options.is_file():
        raise CollectError(f"{run_dir}: not a run directory (no {rundir.OPTIONS})")
    state = rundir.RunDir(run_dir).read_state()
    if state["state"] != rundir.FINISHED:  # the results of a run that goes on, or may: collect --update later
        log.info(f"collect: the run is {state['state']}, not finished: collecting its results as they stand")
    dest.mkdir(parents=True, exist_ok=True)
    before = _listed(dest)
    sums, counts, conflicts = {}, {"copied": 0, "skipped": 0, "updated": 0}, []
    for rel, src in _sources(run_dir, include_checkpoints):
        target, growing = dest / rel, str(rel) in rundir.GROWING
        if target.exists():
            same = _matches(target, src, growing)
            if same:
                counts["skipped"] += 1
                sums[str(rel)] = same
                continue
            if not update:
                conflicts.append(str(target))
                continue
        existed = target.exists()
        try:
            sums[str(rel)] = _copy_one(src, target, growing)
        except OSError as e:
            _write_sums(dest, sums, quiet=True)
            raise CollectError(f"{target}: cannot copy {src} ({fsutil.io_reason(e)}); the partial copy was "
                               f"removed. Intact in {dest}: the {len(sums)} file(s) listed in SHA256SUMS. Free "
                               "space and collect again: it copies only what is missing.") from e
        counts["updated" if existed else "copied"] += 1
    if conflicts:
        _write_sums(dest, sums, quiet=True)
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
