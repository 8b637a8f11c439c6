"""Atomic, verifiable TensorFlow checkpoints with fallback to an older one.

A checkpoint is a directory `checkpoints/ckpt-<global step, 9 digits>/` holding a
tf.train.Checkpoint (`ckpt.index`, `ckpt.data-*`) and `meta.json` with the counters and
the sha256 of each file. It is written under a temp name and renamed whole, so a reader
never sees half of one.

Saving blocks the training loop only for a snapshot: every variable is copied into a shadow
variable in host memory (a device-to-host copy on a GPU, tens of milliseconds for the 256
model), and a background thread writes, hashes, fsyncs and renames from the shadows while the
steps go on. One write is in flight at a time; the next save and the end of training wait
for it. A stop writes its own checkpoint at once, from the live variables with the loop paused,
and waits for the write in flight before the ranks meet. Variables are keyed by their Keras path under `generator/`,
`discriminator/`, `g_optimizer/`, `d_optimizer/` and `state/`, so `tf.train.load_checkpoint`
reads them by name.

A run never starts afresh by accident: when checkpoints exist and none loads, resuming is
an error that names each one and why; `rundir.RunDir.set_aside` moves them (and the run's record)
out of the way, for a deliberate restart. A checkpoint is never removed before its successor
is complete.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from .. import fsutil
from ..errors import CheckpointError, LeaseLostError

log = logging.getLogger(__name__)

PREFIX = "ckpt"
META = "meta.json"
REPLACED = ".replaced.tmp"
def _test_delay(global_step: int) -> None:
    """Tests only: hold a finished-but-unpublished checkpoint, so a kill can land mid-write.

    OASIS_TEST_CHECKPOINT_DELAY="STEP:SECONDS" pauses the save of that global step.
    """
    spec = os.environ.get("OASIS_TEST_CHECKPOINT_DELAY", "")
    if spec and int(spec.split(":")[0]) == global_step:
        time.sleep(float(spec.split(":")[1]))



def _keyed(variables) -> dict:
    """Stable checkpoint keys: position plus the path without its first part.

    The first part is the owner's name, which Keras numbers per process ("adam_3",
    "seed_generator_2"), so it differs between a run and its resume in another process.
    """
    return {f"{i:03d}.{v.path.split('/', 1)[-1].replace('/', '.')}": v for i, v in enumerate(variables)}


# Groups a checkpoint may lack: restoring one leaves their variables at their start values.
OPTIONAL_GROUPS = ("loss_scale", "generator_ema")  # absent from checkpoints of runs without them


def variable_groups(nets, state: dict) -> dict:
    """The checkpoint's layout of `nets` (model.Networks) and the run state's variables. Adam's
    slots are keyed the same whatever the precision, so a run may resume under another
    train.precision; fp16's loss-scale state is a group of its own."""
    generator, discriminator, g_opt, d_opt = nets.generator, nets.discriminator, nets.g_opt, nets.d_opt
    groups = {
        "generator": _keyed(generator.variables),
        "discriminator": _keyed(discriminator.variables),
        "g_optimizer": _keyed(getattr(g_opt, "inner_optimizer", g_opt).variables),
        "d_optimizer": _keyed(getattr(d_opt, "inner_optimizer", d_opt).variables),
        "state": dict(state),
    }
    if nets.average is not None:
        groups["generator_ema"] = _keyed(nets.average.variables)
    if hasattr(g_opt, "dynamic_scale"):
        groups["loss_scale"] = {"g_scale": g_opt.dynamic_scale, "g_steps": g_opt.step_counter,
                                "d_scale": d_opt.dynamic_scale, "d_steps": d_opt.step_counter}
    return groups


@dataclass
class SaveRecord:
    """One save, as the training loop reports it once the write has ended."""
    global_step: int
    reason: str
    blocking_s: float = 0.0     # how long the training loop waited: the previous write, the snapshot
    write_s: float = 0.0        # the whole write: checkpoint files, hashes, fsync, rename
    path: Path | None = None
    error: BaseException | None = None


class CheckpointManager:
    """Save, list, verify and restore the run's checkpoints; keeps the newest `keep`."""

    def __init__(self, directory: str | os.PathLike, groups: dict, keep: int = 3, guard=None):
        self.dir = Path(directory)
        self.keep = keep
        self.guard = guard or (lambda: None)  # the run's fence: raises once this job lost the run
        self.groups = groups
        self._ckpt = tf.train.Checkpoint(**groups)
        self._shadows = None        # (live, shadow) pairs, made at the first save
        self._shadow_ckpt = None
        self._thread: threading.Thread | None = None
        self._inflight: SaveRecord | None = None
        self._ended: list[SaveRecord] = []
        self.absent: list[str] = []  # optional groups the restored checkpoint did not hold

    def list(self) -> list[Path]:
        """Finished checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX + "-"))

    def save(self, global_step: int, meta: dict, reason: str = "", background: bool = False) -> SaveRecord:
        """Checkpoint the variables as they are now.

        With `background`, return once they are snapshotted; the record comes back from
        `ended()` when the write is over. Without (a stop, or background writes turned off),
        return after the write, which raises if it failed.
        """
        t0 = time.perf_counter()
        rec = SaveRecord(global_step, reason)
        if background:
            self.wait()  # one write in flight: its shadows are about to be overwritten
            self._snapshot()
            rec.blocking_s = time.perf_counter() - t0
            self._inflight = rec
            self._thread = threading.Thread(target=self._write_in_background, args=(rec, meta),
                                            name="checkpoint-writer", daemon=True)
            self._thread.start()
            return rec
        if self._thread is not None and self._inflight.global_step == global_step:
            same = self._inflight  # this very state is being written: let that write be the one
            self.wait()
            if same.error is None:
                rec.path, rec.write_s = same.path, same.write_s
                rec.reason = f"{reason}; written by the {same.reason} save of this step"
                rec.blocking_s = time.perf_counter() - t0
                return rec
        # A stop does not wait for an older write in flight (SIGKILL may follow within a second):
        # the loop is paused, so it writes from the live variables, beside the other write.
        self._write(rec, meta, self._ckpt)
        rec.blocking_s = time.perf_counter() - t0
        if rec.error:
            raise rec.error
        return rec

    def wait(self) -> None:
        """Until the write in flight, if any, has ended."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def ended(self) -> list[SaveRecord]:
        """Background saves whose write ended since the last call; raises the first that failed."""
        done, self._ended = self._ended, []
        failed = next((r for r in done if r.error), None)
        if failed:
            raise failed.error
        return done

    def _snapshot(self) -> None:
        if self._shadows is None:
            with tf.device("CPU:0"):
                shadow_groups = {g: {k: tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"shadow.{k}")
                                     for k, v in vs.items()} for g, vs in self.groups.items()}
            # Same groups, same keys: the checkpoint reads back into the live variables.
            self._shadow_ckpt = tf.train.Checkpoint(**shadow_groups)
            self._shadows = [(v, shadow_groups[g][k]) for g, vs in self.groups.items() for k, v in vs.items()]
            return
        for live, shadow in self._shadows:
            shadow.assign(tf.convert_to_tensor(live))

    def _write_in_background(self, rec: SaveRecord, meta: dict) -> None:
        self._write(rec, meta, self._shadow_ckpt)
        self._ended.append(rec)

    def _write(self, rec: SaveRecord, meta: dict, ckpt) -> None:
        t0 = time.perf_counter()
        try:
            rec.path = self._write_files(rec.global_step, meta, ckpt)
        except LeaseLostError as e:  # the new holder's run: not a storage fault to free space for
            rec.error = e
        except Exception as e:  # noqa: BLE001 -- handed to the training loop, which raises it
            rec.error = self._write_failed(rec.global_step, e)
        except BaseException as e:  # noqa: BLE001
            rec.error = e
        rec.write_s = time.perf_counter() - t0

    def _write_failed(self, global_step: int, e: Exception) -> fsutil.StorageError:
        """One line for a failed write (a full disk, most often): what failed and what is intact. A
        storage fault, so a requeue may get past it once space is freed."""
        good = [c for c in self.list() if self.verify(c) is None]
        err = fsutil.StorageError(
            f"{self.dir / f'{PREFIX}-{global_step:09d}'}: cannot write the checkpoint of step {global_step} "
            f"({fsutil.io_reason(e)}); its temp files were removed. Newest intact checkpoint: "
            f"{good[-1] if good else 'none'}. Free space, then run train again to "
            f"{'resume from it' if good else 'start afresh'}.")
        err.__cause__ = e
        return err

    def _write_files(self, global_step: int, meta: dict, ckpt) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"{PREFIX}-{global_step:09d}"
        # A name no one can guess, made by mkdtemp (0700, so nothing can be planted in it while it
        # is written), then opened to the group as a directory made by mkdir would be.
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.dir))
        try:
            os.chmod(tmp, 0o777 & ~fsutil.umask())
            self._publish(tmp, final, global_step, meta, ckpt)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
            raise
        return final

    def _publish(self, tmp: Path, final: Path, global_step: int, meta: dict, ckpt) -> None:
        ckpt.write(str(tmp / PREFIX))
        files = {}
        for f in sorted(tmp.iterdir()):
            files[f.name] = fsutil.sha256_file(f)
            fsutil.fsync_path(f)
        fsutil.write_json(tmp / META, {**meta, "global_step": global_step, "files": files,
                                              "saved_at": time.time()})
        _test_delay(global_step)
        self.guard()  # a writer that lost the run while this was written publishes nothing
        replaced = final.with_name(f".{final.name}{REPLACED}")
        if final.exists():  # the same step again (a stop right after an epoch end): the new one is complete first
            shutil.rmtree(replaced, ignore_errors=True)
            os.rename(final, replaced)
        os.rename(tmp, final)
        fsutil.fsync_path(self.dir)
        shutil.rmtree(replaced, ignore_errors=True)
        self.guard()
        for old in self.list()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def verify(self, ckpt_dir: Path) -> str | None:
        """Why this checkpoint cannot be trusted, or None."""
        meta_path = ckpt_dir / META
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

    def recover(self) -> None:
        """Undo what a kill between the two renames of a same-step save left, then drop stale temps."""
        if not self.dir.is_dir():
            return
        for old in self.dir.glob(f".{PREFIX}-*{REPLACED}"):
            final = self.dir / old.name[1:-len(REPLACED)]
            if not final.exists():
                os.rename(old, final)
        fsutil.remove_stale_temps(self.dir)

    def _reader_for(self, ckpt_dir: Path, leave_out: dict | None = None):
        """A checkpoint object for the groups this checkpoint holds (optional ones may be absent),
        without the variables `leave_out` names ({group: keys}), which keep their start values."""
        held = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(str(ckpt_dir / PREFIX))}
        self.absent = [g for g in OPTIONAL_GROUPS if g in self.groups and g not in held]
        if not self.absent and not leave_out:
            return self._ckpt
        if self.absent:
            log.info(f"{ckpt_dir.name} holds no {', '.join(self.absent)} state (written under another "
                 "train.precision or before the generator average): starting it afresh")
        skip = leave_out or {}
        return tf.train.Checkpoint(**{g: {k: v for k, v in vs.items() if k not in skip.get(g, ())}
                                      for g, vs in self.groups.items() if g not in self.absent})

    def restore_latest(self, check=None) -> dict | None:
        """Restore the newest checkpoint that verifies and loads; log and skip the others.

        `check(meta, dir)` may raise CheckpointError for a checkpoint of another kind of run, and
        returns the variables to leave out of the restore ({group: keys}) or nothing. None
        when there are no checkpoints; CheckpointError when there are and none can be used.
        """
        failures, skipped = [], []
        for ckpt_dir in reversed(self.list()):
            why = self.verify(ckpt_dir)
            if why is None:
                meta = fsutil.read_json(ckpt_dir / META)
                leave_out = check(meta, ckpt_dir) if check else None
                try:
                    self._reader_for(ckpt_dir, leave_out).read(str(ckpt_dir / PREFIX)).assert_existing_objects_matched()
                    log.info(f"resumed from {ckpt_dir} (epoch {meta['epoch']}, step {meta['step_in_epoch']}, "
                             f"global step {meta['global_step']})")
                    # What the run's resume line records: the checkpoint, those passed over and why,
                    # and the state it did not hold.
                    return {**meta, "checkpoint": ckpt_dir.name, "skipped": skipped, "started_afresh": self.absent}
                except Exception as e:  # DataLossError, NotFoundError, mismatched graph, ...
                    why = f"does not load ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            log.warning(f"skipping checkpoint {ckpt_dir}: {why}; trying the one before")
            skipped.append({"checkpoint": ckpt_dir.name, "why": why})
            failures.append(f"  {ckpt_dir}: {why}")
        if failures:
            raise CheckpointError(f"{self.dir}: no checkpoint can be resumed from, and starting afresh here would "
                                  "mix two runs:\n" + "\n".join(failures) + "\nTo start again, run train with "
                                  "--restart, which moves them and the run's stats aside (nothing is deleted).")
        return None
