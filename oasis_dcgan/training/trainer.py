"""The training job: the reference DCGAN, data-parallel over Horovod ranks, resumable at any step.

A `Trainer` is built once per process from the config and the `World` the launch layer
read from the scheduler. `run()` is the table of contents. `checkpoint_now()` and
`request_stop()` are what a preemption handler calls: they write the state in memory from
rank 0 and run no collective, so they cannot hang while other ranks are being stopped.
"""
from __future__ import annotations

import hashlib
import math
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from .. import __version__, fsutil, rundir
from ..config import Config, ConfigError
from ..imaging import save_grid
from ..logs import Progress, RunLog, Stats, format_seconds
from ..prep.layouts import identity, identity_differences
from ..prep.manifest import check_before_training, load_manifest, manifest_hash
from ..prep.reader import ShardReader, epoch_budget, steps_left, train_dataset
from .distributed import World
from .step import seed_dropout


# Below this a step is short enough to run train.steps_per_call of them a call. Ranks may
# choose differently: their steps and allreduces pair up in order all the same.
FAST_STEP_S = 0.1


def lr_for(cfg: Config, world_size: int) -> float:
    scale = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[cfg.train.lr_scaling]
    return cfg.train.lr * scale


def lr_factor(epoch: int, epochs: int, rampdown: float) -> float:
    """The learning rates' factor in 0-based `epoch`: 1, then falling linearly over the last
    rampdown x epochs to 1/(rampdown x epochs) in the last one. By epoch, so a resumed epoch
    trains at the rate it began with."""
    span = rampdown * epochs
    return 1.0 if span <= 0 else min(1.0, (epochs - epoch) / span)


class Trainer:
    def __init__(self, cfg: Config, world: World | None = None, log_to_stdout: bool = True, before_barrier=None):
        self.cfg = cfg
        self.world = world or World()
        self.run_dir = Path(cfg.run_dir).resolve()
        self.run_files = rundir.RunDir(self.run_dir)
        # Called on every rank at an agreed stop, before the ranks meet: what a rank must have on
        # disk before any rank may exit (its note), since srun may end the others at the first exit.
        self.before_barrier = before_barrier
        self.chief = self.world.is_chief
        self.log = RunLog(self.run_dir, enabled=self.chief, echo=log_to_stdout)
        self.stop_reason = ""        # a stop every rank agreed on, in the step's allreduce
        self._wanted_stop = ""       # what this rank was asked (a signal); rides in the next step
        self._stop_saved = False     # rank 0 already checkpointed for this stop (an urgent one)
        self.stats = self.tensorboard = None   # rank 0's, once open_outputs has run
        self._saving = False
        self._ready = False          # models built and restored: a checkpoint now means something
        self._rendezvous = None      # rank 0's rendezvous server, alive while the ranks run
        self._publishing = []        # the thread writing the last epoch's records and samples (rank 0)
        self._publish_error = None   # a full disk met by that thread, raised in the loop
        self._in_step_s = 0.0        # this epoch's time inside the compiled step
        self._step_s = None          # the last call's seconds a step
        self.lock = None             # rank 0's hold on the run directory
        self.epoch_seed = cfg.train.seed  # the data order's seed for the epoch under way (a resume may differ)

    def run(self) -> dict:
        """Train (or resume) the run in cfg.run_dir on this rank. Returns a summary on every rank."""
        try:
            # ---- Take the run (rank 0), join the job's Horovod world; one GPU per rank
            self.setup_process()
            # ---- Data plan, networks, optimizers, run state, the compiled step
            self.build()
            # ---- Resume: rank 0 restores the newest good checkpoint, every rank takes rank 0's state
            resumed = self.restore_and_broadcast()
            self.open_outputs(resumed)
            # ---- Train, one epoch at a time
            self.train_epochs()
            # ---- Finish: the final generator, and each rank's note
            return self.finish()
        except BaseException as e:
            self._record_failure(e)
            raise
        finally:
            if self.lock:
                self.lock.release()

    def _record_failure(self, e: BaseException) -> None:
        """Rank 0, holding the run: the background writes end (each removes its own temps when it
        fails), and the state says failed, and why (never over another holder's)."""
        if not (self.lock and self.lock.held and not self.lock.lost):
            return
        for t in self._publishing:
            t.join(timeout=60)
        if getattr(self, "checkpoints", None) is not None:
            self.checkpoints.wait()
        try:
            self.run_files.write_state(rundir.FAILED, reason=f"{type(e).__name__}: {str(e)[:300]}",
                                       job_id=self.world.job_id, attempt=self.world.attempt)
        except OSError:
            pass  # the disk that failed the run may fail this too; the job's log has the error

    # ------------------------------------------------------------------ set-up

    def setup_process(self) -> None:
        from . import distributed
        from .runlock import RunLock

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.chief:  # before the rendezvous, which clears the run's old rendezvous files
            self.lock = RunLock(self.run_dir, self.world.job_id, self.world.attempt, log=self.log)
            self.lock.acquire()
            self.run_files.sweep_temps()  # what killed writers left: no one else writes here now
        self.hvd, self._rendezvous = distributed.init(self.world, timeout_s=self.cfg.train.peer_timeout_s, log=self.log)
        self.rank, self.size = self.hvd.rank(), self.hvd.size()
        gpus = configure_tensorflow(self.cfg, self.hvd.local_rank())
        if self.world.local_rank == 0:
            distributed.check_gpu_build(self.hvd, len(gpus), self.log if self.chief else print)

    def build(self) -> None:
        import tensorflow as tf

        from . import model
        from .checkpoint import CheckpointManager, variable_groups
        from .step import TrainState, build_train_step

        t = self.cfg.train
        # Every rank checks: they all read the same files and reach the same verdict, so none
        # is left waiting in a collective for a rank that stopped.
        check_before_training(self.cfg.data.dataset, full=t.verify_data)
        self._take_dataset_identity(load_manifest(self.cfg.data.dataset))
        self.resolution = self.cfg.data.resolution
        self.dataset_hash = manifest_hash(self.cfg.data.dataset)
        n_train = len(ShardReader(self.cfg.data.dataset, "train"))
        # A new epoch's image budget; an epoch in progress keeps the budget it started with.
        self.budget = epoch_budget(n_train, t.batch_size, t.max_steps_per_epoch, self.size)
        if self.budget == 0:
            raise ValueError(f"{self.cfg.data.dataset}: {n_train} training images cannot fill one batch "
                             f"of {t.batch_size}")
        self.steps_per_epoch = steps_left(self.budget, 0, t.batch_size, self.size)
        self.total_images = self.budget * t.epochs
        self.lr = lr_for(self.cfg, self.size)
        self.generator = model.build_generator(self.resolution, t.noise_dim, t.precision)
        self.discriminator = model.build_discriminator(self.resolution, t.precision, t.d_dropout_scale)
        self.generator_ema = self._build_average(model, t)
        self.g_opt = model.build_optimizer(self.lr, t.precision, t.adam_beta1)
        self.d_opt = model.build_optimizer(self.lr * t.d_lr_ratio, t.precision, t.adam_beta1)
        # Adam's slots are created lazily; build them now so they are checkpointed and broadcast.
        self.g_opt.build(self.generator.trainable_variables)
        self.d_opt.build(self.discriminator.trainable_variables)
        self.state = TrainState(t.noise_dim, t.seed, n_train)
        self.groups = variable_groups(self.generator, self.discriminator, self.g_opt, self.d_opt,
                                      self.state.variables(), self.generator_ema)
        self.checkpoints = CheckpointManager(self.run_files.checkpoints, self.groups, keep=t.keep_checkpoints,
                                             log=self.log)
        self._flags = (tf.constant(0.0), tf.constant(1.0))  # the step's stop flag: made once, not each step
        self.close_epoch = tf.function(self._close_epoch)
        self.train_steps = build_train_step(self.generator, self.discriminator, self.g_opt, self.d_opt, self.state,
                                           self.hvd, t.batch_size, t.noise_dim, seed=t.seed,
                                           fp16_allreduce=t.fp16_allreduce, generator_ema=self.generator_ema,
                                           ema_kimg=t.ema_kimg, ema_rampup=t.ema_rampup)

    def _take_dataset_identity(self, manifest: dict) -> None:
        """The config's data section takes the dataset's identity, so options.json records what the
        run trains on. A key the config sets away from its default, to another value than the
        dataset was packed with, is an error naming it: the config asks for other data."""
        default = Config().data
        differ = identity_differences(manifest, self.cfg.data,
                                      only=lambda key: _field(key, self.cfg.data) != _field(key, default))
        if differ:
            raise ConfigError(f"data.dataset: {self.cfg.data.dataset} was packed otherwise than the config asks:\n  "
                              + "\n  ".join(differ) + "\nPack a dataset for this config, or drop these keys.")
        for key, value in identity(manifest).items():
            setattr(self.cfg.data, key.removeprefix("data."), value)

    def models(self) -> list:
        return [m for m in (self.generator, self.discriminator, self.generator_ema) if m is not None]

    def _build_average(self, model, t):
        """The generator average (G_ema): G's architecture in fp32, starting from G's weights. None when off."""
        if t.ema_kimg <= 0:
            return None
        average = model.build_generator(self.resolution, t.noise_dim, "fp32")
        average.set_weights(self.generator.get_weights())
        return average

    @property
    def sampler(self):
        """The generator that samples, reports and exports: the average when there is one."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def restore_and_broadcast(self) -> dict | None:
        from . import distributed
        from .checkpoint import CheckpointError

        resumed, failure = None, ""
        if self.chief:
            self.checkpoints.recover()
            try:
                resumed = self.checkpoints.restore_latest(check=self._check_compatible)
            except CheckpointError as e:
                failure = str(e)
            if resumed and self.generator_ema is not None and "generator_ema" in self.checkpoints.absent:
                self.generator_ema.set_weights(self.generator.get_weights())  # an average starts from G
            self._restart_epoch_on_new_data(resumed)
        # Every rank learns whether rank 0 could resume, so none waits for a rank that gave up.
        if distributed.broadcast_flag(self.hvd, bool(failure)):
            raise CheckpointError(failure or "rank 0 could not resume from this run's checkpoints (see its log)")
        # Rank 0's variables, restored or fresh, become everyone's: models, optimizer slots,
        # counters and accumulators alike.
        for name, group in self.groups.items():
            distributed.broadcast_variables(self.hvd, list(group.values()), prefix=f"bcast.{name}")
        counters = self.state.read_counters()
        self.epoch, self.global_step = counters["epoch"], counters["global_step"]
        self.epoch_seed = distributed.broadcast_int(self.hvd, self._resumed_epoch_seed(resumed, counters), "bcast.seed")
        self._apply_config(resumed)
        seed_dropout(self.discriminator, self.cfg.train.seed, self.rank, self.global_step)
        self._ready = True
        return resumed

    def _resumed_epoch_seed(self, resumed: dict | None, counters: dict) -> int:
        """Rank 0: the data order's seed for the epoch under way. An epoch begun under another
        train.seed finishes in the order it began, so no image repeats or is skipped in it."""
        theirs, ours = (resumed or {}).get("data_seed"), self.cfg.train.seed
        if theirs is None or theirs == ours or not counters["images_in_epoch"]:
            return ours
        self.log(f"resume: train.seed is {ours}, but epoch {counters['epoch'] + 1} began under {theirs}: it "
                 f"finishes in the order of seed {theirs}, and seed {ours} applies from the next epoch")
        return int(theirs)

    def _restart_epoch_on_new_data(self, resumed: dict | None) -> None:
        """Rank 0, after a resume onto another dataset (train.allow_dataset_change): the epoch under
        way starts again from its first image on the new data, since its image order and visit
        counts were the old dataset's."""
        if not resumed or resumed.get("dataset_manifest_sha256") in (None, self.dataset_hash):
            return
        c = self.state.read_counters()
        self.state.restart_epoch()
        self.log(f"resume: the dataset changed (train.allow_dataset_change): epoch {c['epoch'] + 1} starts again "
                 f"from its first image on {self.cfg.data.dataset} (it was at image {c['images_in_epoch']})")

    def _check_compatible(self, meta: dict, ckpt_dir) -> dict:
        """A checkpoint of another model or, unless allowed, another dataset is an error, not a resume.
        Returns what to leave out of the restore: the per-image state, when the dataset changed."""
        from .checkpoint import CheckpointError

        for key, theirs, ours in (("data.resolution", meta.get("resolution"), self.resolution),
                                  ("train.noise_dim", meta.get("noise_dim"), self.cfg.train.noise_dim)):
            if theirs is not None and theirs != ours:
                raise CheckpointError(f"{key} = {ours}, but {ckpt_dir} was written with {theirs}: it cannot be "
                                      "resumed. Use another run directory, or train with --restart")
        theirs = meta.get("dataset_manifest_sha256")
        if theirs and theirs != self.dataset_hash and not self.cfg.train.allow_dataset_change:
            raise CheckpointError(f"data.dataset: {self.cfg.data.dataset} is not the dataset {ckpt_dir} was trained "
                                  "on (its manifest hash differs). Set train.allow_dataset_change=true to go on "
                                  "with the new data, or use another run directory")
        return {"state": ("visits",)} if theirs and theirs != self.dataset_hash else {}

    def _apply_config(self, resumed: dict | None) -> None:
        """The config, not the checkpoint, decides what is not learned state: the learning rate above all."""
        self._set_learning_rates()
        if not (resumed and self.chief):
            return
        for key, theirs, ours in (("learning rate", resumed.get("learning_rate"), self.lr),
                                  ("train.batch_size", resumed.get("batch_size"), self.cfg.train.batch_size),
                                  ("ranks", resumed.get("world_size"), self.size),
                                  ("train.precision", resumed.get("precision", "fp32"), self.cfg.train.precision),
                                  ("dataset", resumed.get("dataset_manifest_sha256"), self.dataset_hash)):
            if theirs is not None and theirs != ours:
                self.log(f"resume: {key} was {theirs} when the checkpoint was written, now {ours}; the config wins")

    def open_outputs(self, resumed: dict | None) -> None:
        """Rank 0: options.json, the resume notes, stats.jsonl and TensorBoard."""
        self._last_tick = self._last_checkpoint = self._t_run = time.monotonic()
        self._images_at_start = self.images_done()
        if not self.chief:
            return
        import tensorflow as tf

        if not resumed and (moved := self.run_files.set_aside()):
            # A record without a checkpoint: an earlier start died before its first one. A new
            # run must not append to it (its epochs would repeat in stats.jsonl and the plots).
            self.log(f"new run: moved the earlier record without a checkpoint to {moved}")
        fsutil.write_json(self.run_files.options, self.options())
        self.run_files.write_state(rundir.TRAINING, epochs=self.cfg.train.epochs, job_id=self.world.job_id,
                                   attempt=self.world.attempt)
        if resumed:
            c = self.state.read_counters()
            self.log(f"continuing epoch {c['epoch'] + 1} at image {c['images_in_epoch']} of {c['epoch_images']} "
                     f"on {self.size} rank(s) (the checkpoint was written by {resumed.get('world_size', '?')})")
            dropped = Stats.truncate_after(self.run_files.stats, resumed["global_step"], resumed["epoch"])
            if dropped:
                self.log(f"dropped {dropped} stats line(s) logged after that checkpoint")
        else:
            self.log(f"new run: {self.resolution}x{self.resolution}, {self.size} rank(s), global batch "
                     f"{self.global_batch}, {self.steps_per_epoch} steps/epoch, {self.cfg.train.epochs} epochs, "
                     f"lr {self.lr:g}, {self.cfg.train.precision}")
        self.stats = Stats(self.run_files.stats)
        self.tensorboard = tf.summary.create_file_writer(str(self.run_files.tensorboard))
        self.run_files.samples.mkdir(exist_ok=True)

    def options(self) -> dict:
        """What options.json records: enough to tell later exactly what this run was."""
        return {
            "config": self.cfg.to_dict(),
            "world_size": self.size,
            "ranks": {"nodes": self.world.num_nodes, "tasks_per_node": self.world.local_size},
            "learning_rate": self.lr,
            "global_batch": self.global_batch,
            "steps_per_epoch": self.steps_per_epoch,
            "images_per_epoch": self.budget,
            "dataset_manifest_sha256": self.dataset_hash,
            "resolution": self.resolution,
            "versions": package_versions(),
            "git_revision": git_revision(),
            "host": platform.node(),
            "started": time.time(),
        }

    @property
    def global_batch(self) -> int:
        return self.cfg.train.batch_size * self.size

    # ------------------------------------------------------------------ the loop

    def train_epochs(self) -> None:
        """Epochs until done or until a stop is agreed; a stop writes one checkpoint, then every rank meets."""
        from . import distributed

        progress = Progress(self.total_images, done=self.images_done(), unit="img") if self.chief else None
        stream = None
        try:
            while self.epoch < self.cfg.train.epochs and not self.stop_reason:
                stream = stream or self.input_stream()
                steps, seconds, complete = self.train_epoch(stream, progress)
                if complete:
                    self.end_epoch(steps, seconds)  # its checkpoint is also the stop's, if one was agreed
                elif self.stop_reason and self.chief and not self._stop_saved:
                    self.save(self.stop_reason)
        finally:
            if progress:
                progress.close()
        if self.stop_reason:  # no rank leaves before rank 0's checkpoint and every rank's note are on disk
            self._wait_for_saves()
            if self.chief:
                self.run_files.write_state(rundir.STOPPED, reason=self.stop_reason, global_step=self.global_step,
                                           epoch=self.epoch, job_id=self.world.job_id, attempt=self.world.attempt)
            if self.before_barrier:
                self.before_barrier(self.stop_reason)
            distributed.barrier(self.hvd, name=f"stop.{self.global_step}")

    def input_stream(self):
        """This rank's batches from the next unseen image to the end of training, as one iterator:
        its prefetch runs on across epoch ends, where a pipeline per epoch left every rank waiting."""
        t = self.cfg.train
        c = self.state.begin_epoch(self.budget)
        ds, _ = train_dataset(self.cfg.data.dataset, t.seed, self.epoch, t.batch_size, self.rank, self.size,
                              first_seed=self.epoch_seed,
                              start_image=c["images_in_epoch"], budget=c["epoch_images"], scaled=False,
                              epochs=max(t.epochs - self.epoch, 1), later_budget=self.budget,
                              block=max(8, t.steps_per_call), prefetch=max(8, 2 * t.steps_per_call))
        return iter(ds)

    def images_done(self) -> int:
        """Images trained on so far, over all epochs (what the progress bar and ETA count)."""
        c = self.state.read_counters()
        return c["epoch"] * self.budget + c["images_in_epoch"]

    def train_epoch(self, batches, progress) -> tuple[int, float, bool]:
        """The rest of the current epoch, from its next unseen image.
        Returns (steps run, seconds, whether the epoch is complete)."""
        import tensorflow as tf

        c = self.state.begin_epoch(self.budget)
        self._set_learning_rates()
        n_steps = steps_left(c["epoch_images"], c["images_in_epoch"], self.cfg.train.batch_size, self.size)
        t_epoch, steps, self._calls = time.monotonic(), 0, 0
        self._in_step_s = 0.0  # the epoch's time inside the compiled calls; the rest is the loop's own
        while steps < n_steps:
            t_call = time.monotonic()
            want = self._steps_for_call(n_steps - steps)
            g_loss, d_loss, agreed, ran = self.train_steps(batches, self._stop_flag(), tf.constant(want))
            ran = int(ran)  # waits for the call: every rank's allreduces are in it
            took = time.monotonic() - t_call
            self._calls += 1
            self._step_s = took / max(ran, 1)
            self._in_step_s += took
            steps += ran
            self.global_step += ran
            if bool(agreed):
                self._agree_stop()
                break
            if self.chief:
                self._show_progress(progress, g_loss, d_loss, t_epoch, self._step_s)
                if steps < n_steps:  # the epoch end saves anyway
                    self._periodic_checkpoint()
        self._loop_end = time.time()
        return steps, time.monotonic() - t_epoch, steps >= n_steps

    def _set_learning_rates(self) -> None:
        t = self.cfg.train
        self.epoch_lr = self.lr * lr_factor(self.epoch, t.epochs, t.lr_rampdown)
        self.g_opt.learning_rate = self.epoch_lr
        self.d_opt.learning_rate = self.epoch_lr * t.d_lr_ratio

    def _steps_for_call(self, left: int) -> int:
        """train.steps_per_call once steps are short (a GPU's milliseconds), else one: a call
        holds off signals, and the first one traces. Never past the epoch's end or a step
        checkpoint, so those fall between calls, on the same step on every rank."""
        fast = self._step_s is not None and self._step_s < FAST_STEP_S
        n = min(self.cfg.train.steps_per_call if fast else 1, left)
        every = self.cfg.train.checkpoint_every_steps
        if every:
            n = min(n, every - self.global_step % every)
        return n

    def _stop_flag(self):
        return self._flags[bool(self._wanted_stop)]

    def _agree_stop(self) -> None:
        self.stop_reason = self._wanted_stop or "a stop another rank was asked for"

    def _show_progress(self, progress, g_loss, d_loss, t_epoch: float, step_time: float) -> None:
        """The bar on a terminal, and every tick_seconds a tick line in stats.jsonl (and the log)."""
        now = time.monotonic()
        tick = now - self._last_tick >= self.cfg.train.tick_seconds
        if not (progress.due() or tick):
            return  # reading the losses waits for the step to finish: only when they are shown
        g, d = float(g_loss), float(d_loss)
        c = self.state.read_counters()
        done, kimg = self.images_done(), c["images_seen"] / 1000
        ips = c["images_in_epoch"] / max(now - t_epoch, 1e-9) if c["images_in_epoch"] else 0.0
        epochs = self.cfg.train.epochs
        progress.update(done, f"epoch {self.epoch + 1}/{epochs} kimg {kimg:.1f} g {g:.3f} d {d:.3f} {ips:.1f} img/s")
        if not tick:
            return
        self._last_tick = now
        self.lock.touch()
        rate = (done - self._images_at_start) / max(now - self._t_run, 1e-9)
        eta = (self.total_images - done) / rate if rate > 0 else None
        self.stats.write(kind="tick", epoch=self.epoch + 1, global_step=self.global_step, kimg=kimg, g_loss=g,
                         d_loss=d, images_per_s=rate, step_time=step_time, eta_s=eta)
        if not progress.active:
            self.log(f"tick epoch {self.epoch + 1}/{epochs} step {self.global_step} kimg {kimg:.1f} "
                     f"g {g:.4f} d {d:.4f} {rate:.1f} img/s ETA {format_seconds(eta or float('inf'))}")

    def _periodic_checkpoint(self) -> None:
        if not self._saving:
            self._report_saves([])  # a background write that has ended since the last step
        if self._checkpoint_due():
            self.save("periodic", background=True)
            self._last_checkpoint = time.monotonic()

    def _checkpoint_due(self) -> bool:
        t = self.cfg.train
        return bool((t.checkpoint_every_steps and self.global_step % t.checkpoint_every_steps == 0)
                    or (t.checkpoint_every_minutes
                        and time.monotonic() - self._last_checkpoint >= 60 * t.checkpoint_every_minutes))

    def end_epoch(self, steps: int, seconds: float) -> None:
        """Every rank ran the same steps; rank 0 writes the epoch's samples and stats, and a checkpoint if due."""
        fake, record = self.close_epoch(self.chief)
        if self.chief:
            self._write_epoch(fake, record, steps, seconds)
        self.epoch += 1
        self.epoch_seed = self.cfg.train.seed  # a resumed epoch's own seed ends with it
        reason = self._epoch_end_reason()
        if self.chief and reason:
            self.save(reason, background=not self.stop_reason)
            self._last_checkpoint = time.monotonic()

    def _close_epoch(self, with_samples: bool):
        """Compiled: rank 0's samples of the fixed noise and every rank's epoch records, then the next
        epoch's start. (Eagerly the samples alone took ~30 ms of Python, every rank waiting.)"""
        fake = self.sampler(self.state.fixed_noise, training=False) if with_samples else None
        return fake, self.state.close_epoch()

    def _epoch_end_reason(self) -> str:
        """Why to checkpoint at this epoch end, or "" not to. A stop and the last epoch always do."""
        t = self.cfg.train
        if self.stop_reason:
            return "epoch end" if self._stop_saved else f"{self.stop_reason} at the epoch end"
        if self.epoch >= t.epochs:
            return "end of training"
        if t.checkpoint_every_epochs and self.epoch % t.checkpoint_every_epochs == 0:
            return "epoch end"
        return "periodic" if self._checkpoint_due() else ""

    def _write_epoch(self, fake, record: dict, steps: int, seconds: float) -> None:
        """Rank 0: the epoch's samples, stats line, log line and TensorBoard scalars, written by a
        background thread from what the epoch's close handed over, while the next epoch trains."""
        rec = dict(kind="epoch", epoch=self.epoch + 1, global_step=self.global_step,
                   images_per_s=steps * self.global_batch / max(seconds, 1e-9),
                   step_time=seconds / max(steps, 1), epoch_time=seconds,
                   host_s_per_step=(seconds - self._in_step_s) / max(steps, 1), calls=self._calls, lr=self.epoch_lr,
                   loop_end_time=self._loop_end)
        self._wait_for_publishing()  # one at a time: a slow disk must not pile them up
        t = threading.Thread(target=self._publish_epoch, args=(fake, rec, record), name="epoch-publish", daemon=True)
        t.start()
        self._publishing.append(t)
        if self.cfg.train.snapshot_every_epoch:
            from .model import save_model

            save_model(self.sampler, self.run_files.snapshot(self.epoch + 1))

    def _publish_epoch(self, fake, rec: dict, record: dict) -> None:
        """In a thread: matplotlib takes ~0.2 s a grid and an fsync may take longer, while a GPU
        epoch lasts ~3 s. Samples are not worth the run: a failure is logged, not raised."""
        try:
            self._write_epoch_records(fake, rec, record)
        except fsutil.StorageError as e:  # the next checkpoint would fail the same way: end the run
            self._publish_error = e
        except Exception as e:
            self.log(f"WARNING: epoch {rec['epoch']}'s records or samples were not all written: "
                     f"{type(e).__name__}: {e}")

    def _write_epoch_records(self, fake, rec: dict, record: dict) -> None:
        import tensorflow as tf

        number = rec["epoch"]
        losses = {k: v.numpy() for k, v in record.items() if k not in ("visits", "images_seen")}
        rec.update(kimg=int(record["images_seen"]) / 1000, **self.state.epoch_losses(losses),
                   **self.state.epoch_visits(record["visits"].numpy()), wall_time=time.time())
        self.stats.write(**rec)
        self.log(f"epoch {number}/{self.cfg.train.epochs} g_loss {rec['g_loss']:.4f} d_loss {rec['d_loss']:.4f} "
                 f"{rec['images_per_s']:.1f} img/s ({format_seconds(rec['epoch_time'])})")
        fake = fake.numpy()
        with fsutil.atomic_path(self.run_files.sample(number, "npy")) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, fake)
        save_grid(fake, self.run_files.sample(number, "png"), f"epoch {number}")
        with self.tensorboard.as_default():
            for k in ("g_loss", "d_loss", "images_per_s"):
                tf.summary.scalar(k, rec[k], step=number)
        self.tensorboard.flush()

    def _wait_for_publishing(self) -> None:
        for t in self._publishing:
            t.join()
        self._publishing = []
        if self._publish_error:
            raise self._publish_error

    # ------------------------------------------------------------------ saving and stopping

    def save(self, reason: str, background: bool = False) -> None:
        """Rank 0: checkpoint the state in memory now. Runs no collective.

        `background` returns after the snapshot and leaves the write to a thread; a stop's
        checkpoint is always written before this returns.
        """
        if self._saving:  # a signal arrived mid-save: the save in progress (or the one before) stands
            self.log(f"checkpoint for '{reason}' skipped: a checkpoint is being written")
            return
        self.lock.check()  # another holder has the run: write nothing more into it
        self._saving = True
        try:
            counters = self.state.read_counters()
            background = background and self.cfg.train.checkpoint_in_background
            rec = self.checkpoints.save(counters["global_step"], {
                **counters, "reason": reason, "world_size": self.size, "data_seed": self.epoch_seed,
                "resolution": self.resolution, "noise_dim": self.cfg.train.noise_dim,
                "batch_size": self.cfg.train.batch_size, "learning_rate": self.lr,
                "precision": self.cfg.train.precision,
                "dataset_manifest_sha256": self.dataset_hash}, reason=reason, background=background)
            self._report_saves([] if background else [rec])
        finally:
            self._saving = False

    def _report_saves(self, done: list) -> None:
        """Log the saves whose write has ended (a background write's failure raises here)."""
        # (Not waiting for the epoch's writer thread here: this may run in a signal handler that
        # interrupted the loop while it held the stats file's lock the writer needs.)
        for rec in self.checkpoints.ended() + done:
            if self.stats:
                self.stats.write(kind="checkpoint", global_step=rec.global_step, reason=rec.reason,
                                 blocking_s=rec.blocking_s, write_s=rec.write_s, seconds=rec.write_s)
                self.stats.sync()
            self.log(f"checkpoint {rec.path.name} ({rec.reason})")
            self.lock.touch()

    def _wait_for_saves(self) -> None:
        if self.chief and self._ready:
            self.checkpoints.wait()
            self._report_saves([])

    def checkpoint_now(self, reason: str) -> bool:
        """Rank 0 saves the state in memory now, from between two steps, without any collective.

        For a caller that cannot wait for an agreed stop. False when there is nothing to save.
        """
        import tensorflow as tf

        if not (self.chief and self._ready):
            return False
        try:
            # A signal can land while TensorFlow traces a function; init_scope steps out of that
            # graph, so the save reads the variables' values rather than building symbolic reads.
            with tf.init_scope():
                self.save(reason)
        except Exception as e:  # a failed save must not hide the signal; the periodic checkpoints stand
            self.log(f"could not checkpoint ({reason}): {e}")
            return False
        return True

    def request_stop(self, reason: str, urgent: bool = False) -> None:
        """Ask for a stop (safe from a signal handler).

        The request rides in the next step's allreduce, so every rank stops after the same
        step; rank 0 then writes one checkpoint, all ranks meet, and run() returns with
        `stopped`. `urgent` is for a signal that SIGKILL follows within seconds (SIGTERM from a
        requeue or scancel, where srun may end the tasks at once): rank 0 checkpoints the
        state in memory right away instead, and the agreed stop only ends the ranks together.
        """
        if self._wanted_stop:
            return
        self._wanted_stop = reason
        if urgent:
            self._stop_saved = self.checkpoint_now(reason)

    # ------------------------------------------------------------------ the end

    def finish(self) -> dict:
        from .model import save_model

        self._wait_for_saves()  # the last epoch's checkpoint is on disk before anything says "done"
        self._wait_for_publishing()
        summary = {"rank": self.rank, "size": self.size, "epochs": self.cfg.train.epochs,
                   "global_step": self.state.read_counters()["global_step"],
                   "weights_sha256": weights_digest(*self.models()), "host": platform.node(),
                   "pid": os.getpid(), "cross_rank": self.hvd.cross_rank(), "cross_size": self.hvd.cross_size(),
                   "stopped": self.stop_reason or None}
        if self.stop_reason:
            self.log(f"stopped at global step {summary['global_step']}: {self.stop_reason}")
            return summary
        # Every rank leaves a note: proof it ran, and a digest to compare replicas by.
        fsutil.write_json(self.run_files.rank_note(self.rank), summary)
        if self.chief:
            self.lock.check()
            save_model(self.sampler, self.run_files.generator)
            if self.generator_ema is not None:  # the raw generator, beside the average
                save_model(self.generator, self.run_files.generator_raw)
            else:  # a raw generator left by an earlier run with an average is not this run's
                self.run_files.generator_raw.unlink(missing_ok=True)
            self.run_files.write_state(rundir.FINISHED, epochs=self.cfg.train.epochs,
                                       global_step=summary["global_step"], weights_sha256=summary["weights_sha256"],
                                       job_id=self.world.job_id, attempt=self.world.attempt)
            self.log(f"done: {self.cfg.train.epochs} epochs, {summary['global_step']} steps. "
                     f"Run directory: {self.run_dir}")
            self.stats.close()
            self.log.close()
        return summary


def run(cfg: Config, world: World | None = None, log_to_stdout: bool = True) -> dict:
    """Train in this process (a world of one unless `world` says otherwise)."""
    return Trainer(cfg, world, log_to_stdout).run()


# ---------------------------------------------------------------------- helpers

def configure_tensorflow(cfg: Config, local_rank: int) -> list:
    """One GPU per rank by local rank, thread counts, determinism and the global seed. Returns the GPUs."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        # Memory growth, so ranks sharing a GPU (if asked to) do not each grab all of it.
        for g in gpus:
            tf.config.experimental.set_memory_growth(g, True)
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
    threads = cfg.train.intra_op_threads
    if cfg.train.deterministic and not gpus and not threads:
        # Several CPU threads split a kernel's sums differently from run to run: measured,
        # bit-identical runs need one.
        threads = 1
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TF already ran something in this process; a job's fresh process never has
            print("warning: train.intra_op_threads ignored: TensorFlow is already initialised"
                  + (" (so --deterministic cannot promise bit-identical runs)" if cfg.train.deterministic else ""),
                  flush=True)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.keras.utils.set_random_seed(cfg.train.seed)
    return gpus


def weights_digest(*models) -> str:
    """sha256 of the models' weights and statistics; dropout seed states, which are per rank, left out."""
    h = hashlib.sha256()
    for m in models:
        for v in m.variables:
            if "seed_generator" not in v.path:
                h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


def git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "oasis_dcgan": __version__}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "horovod", "numpy", "h5py", "submitit"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _field(key: str, data):
    """data.X of a DataConfig, by its dotted key."""
    return getattr(data, key.removeprefix("data."))
