"""Copy a run's results off scratch: resumable, verified, never silently overwriting.

Every file is copied to a temp name while its bytes are hashed, fsynced, renamed, then
re-read at the destination and compared with the hash of what was copied. The log and
stats.jsonl may still be growing (a run in progress, or one requeued): they are copied as
they stood when the copy began, cut at their last complete line. A destination file that
already matches is skipped (so an interrupted collect resumes); one that differs is an error
unless `update` (collecting again after the run went on). DEST/SHA256SUMS lists what was
collected.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .. import fsutil

GROWING = ("log.txt", "stats.jsonl")  # append-only while a run is live
CHUNK = 1 << 20


class CollectError(RuntimeError):
    pass


def files_to_collect(run_dir: Path, include_checkpoints: bool) -> list[Path]:
    """Relative paths: report, figures, GIF, metrics, options, stats, samples, final generator."""
    wanted = []
    for rel in ("options.json", "stats.jsonl", "log.txt", "generator.keras", "train_done.json", "jobs.json"):
        if (run_dir / rel).is_file():
            wanted.append(Path(rel))
    for sub in ("report", "samples", "snapshots") + (("checkpoints",) if include_checkpoints else ()):
        d = run_dir / sub
        if d.is_dir():
            wanted += sorted(p.relative_to(run_dir) for p in d.rglob("*")
                             if p.is_file() and not p.name.startswith("."))
    return wanted


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
    opts = fsutil.read_json(run_dir / "options.json")
    manifest = Path(opts["config"]["data"]["dataset"]) / "manifest.json"
    if manifest.is_file():
        pairs.append((Path("dataset_manifest.json"), manifest))
    return pairs


def _matches(target: Path, src: Path, growing: bool) -> str | None:
    """The target's hash when it already holds what would be copied now, else None."""
    limit = _snapshot_size(src) if growing else None
    if growing and target.stat().st_size != limit:
        return None
    have = fsutil.sha256_file(target)
    return have if fsutil.sha256_file(src, limit=limit) == have else None


def collect(run_dir: str | os.PathLike, dest: str | os.PathLike, include_checkpoints: bool = False,
            update: bool = False, log=print) -> dict:
    run_dir, dest = Path(run_dir).resolve(), Path(dest).resolve()
    if not (run_dir / "options.json").is_file():
        raise CollectError(f"{run_dir}: not a run directory (no options.json)")
    dest.mkdir(parents=True, exist_ok=True)
    sums, counts, conflicts = {}, {"copied": 0, "skipped": 0, "updated": 0}, []
    for rel, src in _sources(run_dir, include_checkpoints):
        target, growing = dest / rel, str(rel) in GROWING
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
    _write_sums(dest, sums)
    log(f"collected {counts['copied']} new file(s), refreshed {counts['updated']}, {counts['skipped']} already "
        f"there, into {dest}")
    return {"dest": str(dest), **counts, "files": len(sums)}


def _write_sums(dest: Path, sums: dict, quiet: bool = False) -> None:
    try:
        fsutil.write_text(dest / "SHA256SUMS", "".join(f"{d}  {r}\n" for r, d in sorted(sums.items())))
    except OSError:
        if not quiet:
            raise
