"""Atomic, verifiable TensorFlow checkpoints with fallback to an older one.

A checkpoint is a directory `checkpoints/ckpt-<global step, 9 digits>/` holding a
tf.train.Checkpoint (`ckpt.index`, `ckpt.data-*`) and `meta.json` with the counters and
the sha256 of each file. It is written under a temp name and renamed whole, so a reader
never sees half of one. Variables are keyed by their Keras path under `generator/`,
`discriminator/`, `g_optimizer/`, `d_optimizer/` and `state/`, so `tf.train.load_checkpoint`
reads them by name.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .. import fsutil

PREFIX = "ckpt"


def _keyed(variables) -> dict:
    """Stable checkpoint keys: position plus the path without its first part.

    The first part is the owner's name, which Keras numbers per process ("adam_3",
    "seed_generator_2"), so it differs between a run and its resume in another process.
    """
    return {f"{i:03d}.{v.path.split('/', 1)[-1].replace('/', '.')}": v for i, v in enumerate(variables)}


def variable_groups(generator, discriminator, g_opt, d_opt, state: dict) -> dict:
    return {
        "generator": _keyed(generator.variables),
        "discriminator": _keyed(discriminator.variables),
        "g_optimizer": _keyed(g_opt.variables),
        "d_optimizer": _keyed(d_opt.variables),
        "state": dict(state),
    }


class CheckpointManager:
    """Save, list, verify and restore the run's checkpoints; keeps the newest `keep`."""

    def __init__(self, directory: str | os.PathLike, groups: dict, keep: int = 3, log=print):
        import tensorflow as tf

        self.dir = Path(directory)
        self.keep = keep
        self.log = log
        self._ckpt = tf.train.Checkpoint(**groups)

    def list(self) -> list[Path]:
        """Finished checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX + "-"))

    def save(self, global_step: int, meta: dict) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"{PREFIX}-{global_step:09d}"
        tmp = self.dir / f".{final.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self._ckpt.write(str(tmp / PREFIX))
        files = {}
        for f in sorted(tmp.iterdir()):
            files[f.name] = fsutil.sha256_file(f)
            fsutil.fsync_path(f)
        fsutil.write_json(tmp / "meta.json", {**meta, "global_step": global_step, "files": files,
                                              "saved_at": time.time()})
        if final.exists():  # same step saved twice (e.g. signal right after an epoch-end save)
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsutil.fsync_path(self.dir)
        for old in self.list()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def verify(self, ckpt_dir: Path) -> str | None:
        """Why this checkpoint cannot be trusted, or None."""
        meta_path = ckpt_dir / "meta.json"
        if not meta_path.is_file():
            return "no meta.json"
        try:
            meta = fsutil.read_json(meta_path)
        except ValueError as e:
            return str(e)
        for name, digest in meta.get("files", {}).items():
            f = ckpt_dir / name
            if not f.is_file():
                return f"{name} missing"
            if fsutil.sha256_file(f) != digest:
                return f"{name} does not match its recorded sha256 (corrupt or truncated)"
        return None

    def restore_latest(self) -> dict | None:
        """Restore the newest checkpoint that verifies and loads; log and skip the others."""
        for ckpt_dir in reversed(self.list()):
            why = self.verify(ckpt_dir)
            if why is None:
                try:
                    self._ckpt.read(str(ckpt_dir / PREFIX)).assert_existing_objects_matched()
                    meta = fsutil.read_json(ckpt_dir / "meta.json")
                    self.log(f"resumed from {ckpt_dir} (epoch {meta['epoch']}, step {meta['step_in_epoch']}, "
                             f"global step {meta['global_step']})")
                    return meta
                except Exception as e:  # DataLossError, NotFoundError, mismatched graph, ...
                    why = f"does not load ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            self.log(f"WARNING: skipping checkpoint {ckpt_dir}: {why}; trying the one before")
        return None
