"""What rank 0 shows and writes as the run goes: the progress bar, tick lines, each epoch's stats
line, samples and TensorBoard scalars, and the line for each checkpoint. Every other rank holds
`NoOutputs`, which does nothing, so the loop never asks which rank it is on."""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .. import fsutil, rundir
from ..config import Config
from ..errors import LeaseLostError
from ..imaging import save_grid
from ..logs import Progress, Stats, format_seconds
from .checkpoint import SaveRecord
from .distributed import World
from .model import save_model
from .runlock import RunLock
from .step import TrainState

log = logging.getLogger(__name__)


@dataclass
class EpochClock:
    """The epoch's timings, as its stats line records them: the calls of the compiled step, the
    time inside them (the rest is the loop's own), the last call's seconds a step, and the
    seconds the steps waited for input and for the allreduce (train.step_split)."""
    start: float = 0.0
    calls: int = 0
    in_step_s: float = 0.0
    step_s: float | None = None
    loop_end: float = 0.0
    input_s: float = 0.0
    allreduce_s: float = 0.0

    def begin(self) -> int:
        """A new epoch's clock; returns the steps run so far in it (none)."""
        self.start, self.calls, self.in_step_s, self.input_s, self.allreduce_s = time.monotonic(), 0, 0.0, 0.0, 0.0
        return 0

    def call(self, seconds: float, steps: int, waits=(0.0, 0.0)) -> None:
        """One compiled call: its wall seconds, its steps, and their (input, allreduce) waits."""
        self.calls, self.in_step_s, self.step_s = self.calls + 1, self.in_step_s + seconds, seconds / max(steps, 1)
        self.input_s += float(waits[0])
        self.allreduce_s += float(waits[1])

    def split(self, steps: int) -> dict:
        """Milliseconds a step: in the compiled computation, waiting for the allreduce (the peers and
        the wire), waiting for input. Their sum is the time inside the calls."""
        per = 1000 / max(steps, 1)
        return {"compute_ms": max(self.in_step_s - self.input_s - self.allreduce_s, 0.0) * per,
                "allreduce_ms": self.allreduce_s * per, "input_ms": self.input_s * per}

    def end(self) -> float:
        """The loop's last step is done: the epoch's seconds."""
        self.loop_end = time.time()
        return time.monotonic() - self.start

    def record(self, steps: int, seconds: float, global_batch: int) -> dict:
        return dict(images_per_s=steps * global_batch / max(seconds, 1e-9), step_time=seconds / max(steps, 1),
                    epoch_time=seconds, host_s_per_step=(seconds - self.in_step_s) / max(steps, 1), calls=self.calls,
                    loop_end_time=self.loop_end, step_split=self.split(steps))


# What a "resume" line of stats.jsonl copies from the checkpoint's meta and the restore.
RESUME_FIELDS = ("checkpoint", "epoch", "step_in_epoch", "global_step", "skipped", "started_afresh", "config_changes",
                 "epoch_rng_seed")


class ChiefOutputs:
    """Rank 0's outputs. `open` before the first step; `close` once the run is done."""

    def __init__(self, cfg: Config, run_files: rundir.RunDir, lock: RunLock, world: World):
        self.cfg, self.run_files, self.lock, self.world = cfg, run_files, lock, world
        self.stats: Stats | None = None
        self.tensorboard = None
        self.progress: Progress | None = None
        self._epochs = Publisher(self._write_records)
        self._t_run = self._last_tick = time.monotonic()
        self._done_at_start = 0

    def open(self, resumed: dict | None, options, counters: dict, done: int, total: int) -> None:
        """options.json (`options()`), the run's state, the resume notes, stats.jsonl, TensorBoard and the bar."""
        options = options()
        self.guard()
        if not resumed and (moved := self.run_files.set_aside()):
            # A record without a checkpoint: an earlier start died before its first one. A new
            # run must not append to it (its epochs would repeat in stats.jsonl and the plots).
            log.info(f"new run: moved the earlier record without a checkpoint to {moved}")
        self.run_files.write_json(self.run_files.options, options)
        self.write_state(rundir.TRAINING, epochs=self.cfg.train.epochs)
        if resumed:
            log.info(f"continuing epoch {counters['epoch'] + 1} at image {counters['images_in_epoch']} of "
                     f"{counters['epoch_images']} on {options['world_size']} rank(s) (the checkpoint was written "
                     f"by {resumed.get('world_size', '?')})")
            dropped = Stats.truncate_after(self.run_files.stats, resumed["global_step"], resumed["epoch"])
            if dropped:
                log.info(f"dropped {dropped} stats line(s) logged after that checkpoint")
        else:
            t = self.cfg.train
            log.info(f"new run: {options['resolution']}x{options['resolution']}, {options['world_size']} rank(s), "
                     f"global batch {options['global_batch']}, {options['steps_per_epoch']} steps/epoch, "
                     f"{t.epochs} epochs, lr {options['learning_rate']:g}, {t.precision}")
        self.stats = Stats(self.run_files.stats, guard=self.guard)
        if resumed:  # for machines what the log says in words: from where, and what changed
            self.stats.write(kind="resume", **{k: resumed.get(k) for k in RESUME_FIELDS},
                             world_size=options["world_size"], written_by=resumed.get("world_size"))
        self.tensorboard = tf.summary.create_file_writer(str(self.run_files.tensorboard))
        self.run_files.samples.mkdir(exist_ok=True)
        self._epochs.start()
        self.progress = Progress(total, done=done, unit="img")
        self._t_run = self._last_tick = time.monotonic()
        self._done_at_start = done

    def guard(self) -> None:
        """Raise LeaseLostError once this job no longer holds the run: it writes nothing more."""
        self.run_files.guard()

    def due(self) -> bool:
        """Whether `show` has anything to show: reading the losses waits for the step to finish."""
        return self.progress.due() or time.monotonic() - self._last_tick >= self.cfg.train.tick_seconds

    def show(self, g_loss, d_loss, counters: dict, done: int, clock: EpochClock) -> None:
        """The bar on a terminal, and every tick_seconds a tick line in stats.jsonl (and the log)."""
        now = time.monotonic()
        g, d = float(g_loss), float(d_loss)
        epoch, epochs, kimg = counters["epoch"] + 1, self.cfg.train.epochs, counters["images_seen"] / 1000
        ips = counters["images_in_epoch"] / max(now - clock.start, 1e-9)
        self.progress.update(done, f"epoch {epoch}/{epochs} kimg {kimg:.1f} g {g:.3f} d {d:.3f} {ips:.1f} img/s")
        if now - self._last_tick < self.cfg.train.tick_seconds:
            return
        self._last_tick = now
        self.lock.touch()
        rate = (done - self._done_at_start) / max(now - self._t_run, 1e-9)
        eta = (self.progress.total - done) / rate if rate > 0 else None
        self.stats.write(kind="tick", epoch=epoch, global_step=counters["global_step"], kimg=kimg, g_loss=g,
                         d_loss=d, images_per_s=rate, step_time=clock.step_s, eta_s=eta)
        if not self.progress.active:
            log.info(f"tick epoch {epoch}/{epochs} step {counters['global_step']} kimg {kimg:.1f} g {g:.4f} "
                     f"d {d:.4f} {rate:.1f} img/s ETA {format_seconds(eta or float('inf'))}")

    def epoch(self, fake, rec: dict, record: dict, state: TrainState, sampler) -> None:
        """The epoch's samples, stats line, log line and TensorBoard scalars, written by a thread from
        what the epoch's close handed over, while the next epoch trains."""
        self._epochs.put(fake, rec, record, state)
        if self.cfg.train.snapshot_every_epoch:
            self.guard()
            save_model(sampler, self.run_files.snapshot(rec["epoch"]))

    def _write_records(self, fake, rec: dict, record: dict, state: TrainState) -> None:
        self.guard()  # queued before the run was lost, written after: not into another job's run
        number = rec["epoch"]
        losses = {k: v.numpy() for k, v in record.items() if k not in ("visits", "images_seen")}
        rec.update(kimg=int(record["images_seen"]) / 1000, **state.epoch_losses(losses),
                   **state.epoch_visits(record["visits"].numpy()), wall_time=time.time())
        self.stats.write(**rec)
        log.info(f"epoch {number}/{self.cfg.train.epochs} g_loss {rec['g_loss']:.4f} d_loss {rec['d_loss']:.4f} "
                 f"{rec['images_per_s']:.1f} img/s ({format_seconds(rec['epoch_time'])})")
        fake = fake.numpy()
        with fsutil.atomic_path(self.run_files.sample(number, "npy")) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, fake)
        save_grid(fake, self.run_files.sample(number, "png"))
        with self.tensorboard.as_default():
            for k in ("g_loss", "d_loss", "images_per_s"):
                tf.summary.scalar(k, rec[k], step=number)
        self.tensorboard.flush()

    def saved(self, rec: SaveRecord) -> None:
        # (Not waiting for the epoch's thread here: this may run in a signal handler that
        # interrupted the loop while it held the stats file's lock the thread needs.)
        if self.stats:
            self.stats.write(kind="checkpoint", global_step=rec.global_step, reason=rec.reason,
                             blocking_s=rec.blocking_s, write_s=rec.write_s, seconds=rec.write_s)
            self.stats.sync()
        log.info(f"checkpoint {rec.path.name} ({rec.reason})")

    def write_state(self, state: str, **fields) -> None:
        self.run_files.write_state(state, **fields, job_id=self.world.job_id, attempt=self.world.attempt)

    def failed(self, e: BaseException) -> None:
        """The state says failed, and why; never over another holder's, and never hiding the error."""
        if self.lock.valid():
            with contextlib.suppress(OSError, ValueError):  # the disk that failed the run; the log has the error
                # The step and epoch reached stay on record: they say a checkpoint exists (resume.py).
                before = {k: v for k, v in self.run_files.read_state().items() if k in ("global_step", "epoch")}
                self.write_state(rundir.FAILED, reason=f"{type(e).__name__}: {str(e)[:300]}", **before)

    def finish(self, summary: dict, sampler, raw) -> None:
        """The final generator (and the raw one beside an average), and the state that says finished."""
        self.guard()
        save_model(sampler, self.run_files.generator)
        if raw is not None:
            save_model(raw, self.run_files.generator_raw)
        else:  # a raw generator left by an earlier run with an average is not this run's
            self.run_files.generator_raw.unlink(missing_ok=True)
        epochs = self.cfg.train.epochs
        self.write_state(rundir.FINISHED, epochs=epochs, global_step=summary["global_step"],
                         weights_sha256=summary["weights_sha256"])
        log.info(f"done: {epochs} epochs, {summary['global_step']} steps. Run directory: {self.run_files.path}")

    def wait(self, timeout: float | None = None) -> None:
        """The epoch in the background is written; its full disk, if it met one, is raised here."""
        self._epochs.wait(timeout)

    def close(self) -> None:
        self._epochs.stop()
        if self.progress:
            self.progress.close()
        if self.stats:
            self.stats, stats = None, self.stats  # a late signal's checkpoint line finds no closed file
            stats.close()


class Publisher:
    """One thread for the whole run that writes each epoch's records while the next one trains.
    Handing an epoch over is a queue put: a thread started each epoch made the loop wait until
    the OS ran it, milliseconds when the ranks keep every core busy. One epoch at a time, so a
    slow disk does not pile them up. Samples are not worth the run: a failure is logged, not
    raised, except a full disk (StorageError), which the next checkpoint would meet as well."""

    def __init__(self, write):
        self._write = write
        self._jobs: queue.Queue = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="epoch-publish", daemon=True)
            self._thread.start()

    def put(self, *job) -> None:
        self.wait()
        self._idle.clear()
        self._jobs.put(job)

    def wait(self, timeout: float | None = None) -> None:
        self._idle.wait(timeout)
        if self._error:
            raise self._error

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._write(*job)
            except (fsutil.StorageError, LeaseLostError) as e:  # the run cannot go on: the loop raises it
                self._error = e
            except Exception as e:
                log.warning(f"epoch {job[1]['epoch']}'s records or samples were not all written: "
                            f"{type(e).__name__}: {e}")
            finally:
                self._idle.set()


class NoOutputs:
    """Every rank but 0: the run's outputs are rank 0's."""

    def open(self, resumed: dict | None, options, counters: dict, done: int, total: int) -> None:
        pass

    def write_state(self, state: str, **fields) -> None:
        pass

    def guard(self) -> None:
        pass

    def finish(self, summary: dict, sampler, raw) -> None:
        pass

    def failed(self, e: BaseException) -> None:
        pass

    def due(self) -> bool:
        return False

    def epoch(self, fake, rec: dict, record: dict, state: TrainState, sampler) -> None:
        pass

    def saved(self, rec: SaveRecord) -> None:
        pass

    def wait(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass
