"""Copy a run's results off scratch: resumable, verified, never silently overwriting.

Every file is copied to a temp name, fsynced, renamed, then re-hashed at the destination.
A destination file that already matches is skipped (so an interrupted collect resumes);
one that differs is an error, not an overwrite. DEST/SHA256SUMS lists what was collected.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .. import fsutil


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


def collect(run_dir: str | os.PathLike, dest: str | os.PathLike, include_checkpoints: bool = False,
            log=print) -> dict:
    run_dir, dest = Path(run_dir).resolve(), Path(dest).resolve()
    if not (run_dir / "options.json").is_file():
        raise CollectError(f"{run_dir}: not a run directory (no options.json)")
    dest.mkdir(parents=True, exist_ok=True)
    files = files_to_collect(run_dir, include_checkpoints)
    # The dataset manifest travels with the results: it says what the model was trained on.
    extra = {}
    opts = fsutil.read_json(run_dir / "options.json")
    manifest = Path(opts["config"]["data"]["dataset"]) / "manifest.json"
    if manifest.is_file():
        extra[Path("dataset_manifest.json")] = manifest
    sums, copied, skipped = {}, 0, 0
    conflicts = []
    for rel, src in [(f, run_dir / f) for f in files] + list(extra.items()):
        digest = fsutil.sha256_file(src)
        target = dest / rel
        if target.exists():
            if fsutil.sha256_file(target) == digest:
                skipped += 1
                sums[str(rel)] = digest
                continue
            conflicts.append(str(target))
            continue
        with fsutil.atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        if fsutil.sha256_file(target) != digest:
            raise CollectError(f"{target}: copy does not match its source {src} (storage error?)")
        sums[str(rel)] = digest
        copied += 1
    if conflicts:
        raise CollectError(f"{len(conflicts)} file(s) in {dest} differ from the run's and were left as they are "
                           "(collect never overwrites; move them away or pick another DEST):\n"
                           + "\n".join(f"  {c}" for c in conflicts))
    fsutil.write_text(dest / "SHA256SUMS", "".join(f"{d}  {r}\n" for r, d in sorted(sums.items())))
    log(f"collected {copied} new file(s), {skipped} already there, into {dest}")
    return {"dest": str(dest), "copied": copied, "skipped": skipped, "files": len(sums)}
