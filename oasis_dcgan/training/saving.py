"""When the run is checkpointed, and the stop a signal asks for; beside checkpoint.py, which writes.

`SavePolicy` reads the train.checkpoint_* keys. `StopRequest` carries a signal's wish to stop
into the next step's allreduce, so every rank stops after the same step. `Saver` is rank 0's:
it checkpoints the state in memory now, runs no collective, and reports each write once it
has ended; every other rank holds `NoSaver`.
"""
from __future__ import annotations

import logging
import time

import tensorflow as tf

from ..config import TrainConfig
from .checkpoint import CheckpointManager, SaveRecord
from .runlock import RunLock
from .step import TrainState

log = logging.getLogger(__name__)


class StopRequest:
    """A stop asked of this rank (`wanted`), and the stop every rank agreed on (`agreed`)."""

    def __init__(self):
        self.wanted = ""    # what this rank was asked (a signal); rides in the next step
        self.agreed = ""    # a stop every rank agreed on, in the step's allreduce
        self.saved = False  # rank 0 already checkpointed for it (an urgent one)
        self._flags = None  # made once, not each step; not before the runtime is set up

    def flag(self):
        """The step's input: above zero on average over the ranks means some rank asked."""
        if self._flags is None:
            self._flags = (tf.constant(0.0), tf.constant(1.0))
        return self._flags[bool(self.wanted)]

    def ask(self, reason: str, saver=None) -> None:
        """The request rides in the next step's allreduce, so every rank stops after the same
        step; rank 0 then writes one checkpoint, all ranks meet, and the run returns `stopped`.
        With `saver` (a signal that SIGKILL follows within seconds: SIGTERM from a requeue or
        scancel, where srun may end the tasks at once) rank 0 checkpoints the state in memory
        right away instead, and the agreed stop only ends the ranks together."""
        if self.wanted:
            return
        self.wanted = reason
        if saver is not None:
            self.saved = saver.now(reason)

    def agree(self) -> None:
        self.agreed = self.wanted or "a stop another rank was asked for"


class SavePolicy:
    """Whether a checkpoint is due: every N steps, N minutes, N epochs, and at a stop and the end."""

    def __init__(self, t: TrainConfig):
        self.t = t
        self.last = time.monotonic()

    def due(self, global_step: int) -> bool:
        t = self.t
        return bool((t.checkpoint_every_steps and global_step % t.checkpoint_every_steps == 0)
                    or (t.checkpoint_every_minutes and time.monotonic() - self.last >= 60 * t.checkpoint_every_minutes))

    def at_epoch_end(self, epochs_done: int, global_step: int, stop: StopRequest) -> str:
        """Why to checkpoint at this epoch end, or "" not to. A stop and the last epoch always do."""
        if stop.agreed:
            return "epoch end" if stop.saved else f"{stop.agreed} at the epoch end"
        if epochs_done >= self.t.epochs:
            return "end of training"
        if self.t.checkpoint_every_epochs and epochs_done % self.t.checkpoint_every_epochs == 0:
            return "epoch end"
        return "periodic" if self.due(global_step) else ""

    def mark(self) -> None:
        """A checkpoint was written (or the run began): train.checkpoint_every_minutes counts from now."""
        self.last = time.monotonic()


class Saver:
    """Rank 0: checkpoints of the state in memory, written now or in the background."""

    def __init__(self, checkpoints: CheckpointManager, state: TrainState, lock: RunLock, meta, on_saved,
                 background: bool):
        self.checkpoints, self.state, self.lock = checkpoints, state, lock
        self.meta = meta                # () -> what meta.json records beside the counters
        self.on_saved = on_saved        # (SaveRecord) -> None: the outputs' stats line and log line
        self.background = background    # train.checkpoint_in_background
        self.ready = False              # models built and restored: a checkpoint now means something
        self._saving = False

    def save(self, reason: str, background: bool = False) -> None:
        """Checkpoint the state in memory now. Runs no collective. `background` returns after the
        snapshot and leaves the write to a thread; a stop's checkpoint is written before this returns."""
        if self._saving:  # a signal arrived mid-save: the save in progress (or the one before) stands
            log.info(f"checkpoint for '{reason}' skipped: a checkpoint is being written")
            return
        self.lock.check()  # another holder has the run: write nothing more into it
        self._saving = True
        try:
            counters = self.state.read_counters()
            background = background and self.background
            rec = self.checkpoints.save(counters["global_step"], {**counters, "reason": reason, **self.meta()},
                                        reason=reason, background=background)
            self.report([] if background else [rec])
        finally:
            self._saving = False

    def report(self, done: list[SaveRecord]) -> None:
        """Report the saves whose write has ended (a background write's failure raises here)."""
        for rec in self.checkpoints.ended() + done:
            self.on_saved(rec)
            self.lock.touch()

    def poll(self) -> None:
        """Between two calls: report a background write that has ended since the last one."""
        if not self._saving:
            self.report([])

    def wait(self) -> None:
        if self.ready:
            self.checkpoints.wait()
            self.report([])

    def now(self, reason: str) -> bool:
        """Save from between two steps (a signal handler): False when there is nothing to save or it failed."""
        if not self.ready:
            return False
        try:
            # A signal can land while TensorFlow traces a function; init_scope steps out of that
            # graph, so the save reads the variables' values rather than building symbolic reads.
            with tf.init_scope():
                self.save(reason)
        except Exception as e:  # a failed save must not hide the signal; the periodic checkpoints stand
            log.warning(f"could not checkpoint ({reason}): {e}")
            return False
        return True


class NoSaver:
    """Every rank but 0: the checkpoints are rank 0's."""
    ready = False

    def save(self, reason: str, background: bool = False) -> None:
        pass

    def poll(self) -> None:
        pass

    def wait(self) -> None:
        pass

    def now(self, reason: str) -> bool:
        return False
