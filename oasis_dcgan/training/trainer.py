"""The training job: the seed project's DCGAN, data-parallel over ranks, resumable at any step.

A `Trainer` is built once per process from the config and the `World` the launch layer read
from the scheduler; `run()` is the table of contents. Beside it, by concern: `runtime` (the
process's set-up), `outputs` (rank 0's), `saving` (when to checkpoint; a stop), `resume`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from pathlib import Path

import tensorflow as tf

from .. import rundir
from ..claimfile import Liveness
from ..config import Config
from ..errors import CheckpointError
from ..prep.reader import train_dataset
from . import distributed, model, resume, runtime
from .checkpoint import CheckpointManager, variable_groups
from .distributed import World
from .outputs import ChiefOutputs, EpochClock, NoOutputs
from .plan import Plan
from .runlock import RunLock
from .saving import NoSaver, SavePolicy, Saver, StopRequest
from .step import TrainState, build_train_step, set_dropout_rng

log = logging.getLogger(__name__)

# Below this a step is short enough to run train.steps_per_call of them a call. Ranks may
# choose differently: their steps and allreduces pair up in order all the same.
FAST_STEP_S = 0.1


class Trainer:
    def __init__(self, cfg: Config, world: World | None = None, log_to_stdout: bool = True, before_barrier=None,
                 run: rundir.RunDir | None = None):
        self.cfg, self.world = cfg, world or World()
        self.run_files = run or rundir.RunDir(Path(cfg.run_dir).resolve())   # unless the job built it already
        self.chief, self.log_to_stdout = self.world.is_chief, log_to_stdout
        # Called on every rank at an agreed stop, before the ranks meet: what a rank must have on
        # disk before any rank may exit (its note), since srun may end the others at the first exit.
        self.before_barrier = before_barrier
        self.lock = RunLock(self.run_files, self.world.job_id, self.world.attempt,
                            Liveness(cfg.cluster.lock_stale_after_s, self.world.jobs_alive)) if self.chief else None
        self.outputs = ChiefOutputs(cfg, self.run_files, self.lock, self.world) if self.chief else NoOutputs()
        self.stop, self.policy, self.saver = StopRequest(), SavePolicy(cfg.train), NoSaver()
        self.run_log = None  # rank 0's, once it holds the run
        self.epoch_lr = 0.0  # the learning rate last set
        self.epoch_rng_seed = cfg.train.seed  # the data order's seed for the epoch under way (a resume may differ)
        self.clock = EpochClock()

    def run(self) -> dict:
        """Train (or resume) the run in cfg.run_dir on this rank. Returns a summary on every rank."""
        try:
            self.open_outputs(self.start())  # take the run, join the ranks, build, restore
            self.train_epochs()
            return self.finish()          # the final generator, and each rank's note
        except BaseException as e:
            with contextlib.suppress(Exception):  # the disk that failed the run may fail these too
                self.outputs.wait(timeout=60)  # each background write removes its own temps when it fails
                self.saver.wait()
            self.outputs.failed(e)  # rank 0's state says why
            ended = self.lock.cause(e) if self.lock else e
            if ended is not e:
                raise ended from e
            raise
        finally:
            self.outputs.close()
            if self.lock:
                runtime.leave_run(self.lock, self.cfg.data.dataset)
            if self.run_log:
                self.run_log.close()

    def start(self) -> dict | None:
        """All before the first step: rank 0 takes the run, the ranks join, each builds, rank 0
        restores and every rank takes its state. Returns the checkpoint's meta if one was resumed."""
        self.ranks = self.setup_process()
        self.plan, self.nets, self.state, self.checkpoints, self.train_steps = self.build()
        if self.chief:
            self.saver = Saver(self.checkpoints, self.state, self.lock, self._checkpoint_meta, self.outputs.saved,
                               background=self.cfg.train.checkpoint_in_background)
        return self.restore_and_broadcast()

    def setup_process(self) -> distributed.OneRank | distributed.HorovodRanks:
        self.run_files.path.mkdir(parents=True, exist_ok=True)
        if self.chief:  # before the rendezvous, which clears the run's old rendezvous files
            self.run_log = runtime.take_run(self.lock, self.run_files, self.cfg.data.dataset, self.log_to_stdout)
        ranks = distributed.init(self.world, timeout_s=self.cfg.train.peer_timeout_s)
        gpus = runtime.configure_tensorflow(self.cfg, ranks.local_rank)
        if self.world.local_rank == 0:
            distributed.check_gpu_build(ranks, len(gpus))
        return ranks

    def build(self) -> tuple[Plan, model.Networks, TrainState, CheckpointManager, object]:
        """The plan on the checked dataset, the networks, the run state, its checkpoints, the compiled step."""
        t = self.cfg.train
        plan = Plan.make(self.cfg, self.ranks.size)
        nets = model.build_all(self.cfg, plan.lr)
        state = TrainState(t.noise_dim, t.seed, plan.n_train)
        checkpoints = CheckpointManager(self.run_files.checkpoints, variable_groups(nets, state.variables()),
                                        keep=t.keep_checkpoints, guard=self.run_files.guard)
        steps = build_train_step(nets, state, self.ranks, t, sampler=nets.sampler if self.chief else None)
        return plan, nets, state, checkpoints, steps

    epoch = property(lambda self: self.state.now["epoch"], doc="Epochs finished: the run state's counter.")
    global_step = property(lambda self: self.state.now["global_step"], doc="Steps run: the run state's counter.")
    stop_reason = property(lambda self: self.stop.agreed, doc="The stop every rank agreed on, or \"\".")

    def restore_and_broadcast(self) -> dict | None:
        resumed, failure = resume.restore(self.checkpoints, self.cfg, self.plan.dataset_hash, self.state, self.nets,
                                          self.run_files) if self.chief else (None, "")
        # Every rank learns whether rank 0 could resume, so none waits for a rank that gave up.
        if self.ranks.broadcast(int(bool(failure)), "bcast.flag"):
            raise CheckpointError(failure or "rank 0 could not resume from this run's checkpoints (see its log)")
        # Rank 0's variables, restored or fresh, become everyone's: models, optimizer slots,
        # counters and accumulators alike.
        for name, group in self.checkpoints.groups.items():
            self.ranks.broadcast_variables(list(group.values()), prefix=f"bcast.{name}")
        counters = self.state.read_counters()
        self.epoch_rng_seed = self.ranks.broadcast(resume.epoch_rng_seed(self.cfg, resumed, counters),
                                                   "bcast.seed")
        self._set_learning_rates()
        if resumed:
            resumed.update(config_changes=resume.config_changes(resumed, self._checkpoint_meta()),
                           epoch_rng_seed=self.epoch_rng_seed)
        set_dropout_rng(self.nets.discriminator, self.cfg.train.seed, self.ranks.rank, self.global_step)
        self.saver.ready = True
        return resumed

    def _checkpoint_meta(self) -> dict:
        """What each checkpoint's meta.json records beside the counters: what a resume compares."""
        t = self.cfg.train
        return {"world_size": self.ranks.size, "data_seed": self.epoch_rng_seed,  # the key older checkpoints hold
                "resolution": self.cfg.data.resolution, "noise_dim": t.noise_dim, "d_spectral_norm": t.d_spectral_norm,
                "batch_size": t.batch_size, "learning_rate": self.plan.lr,
                "precision": t.precision, "dataset_manifest_sha256": self.plan.dataset_hash}

    def open_outputs(self, resumed: dict | None) -> None:
        self.policy.mark()
        self.outputs.open(resumed, self.options, self.state.read_counters(), self.images_done(), self.plan.total_images)

    def options(self) -> dict:
        """What options.json records: enough to tell later exactly what this run was."""
        return {"config": self.cfg.to_dict(), "world_size": self.ranks.size,
                "ranks": {"nodes": self.world.num_nodes, "tasks_per_node": self.world.local_size},
                "learning_rate": self.plan.lr, "global_batch": self.plan.global_batch,
                "steps_per_epoch": self.plan.steps_per_epoch, "images_per_epoch": self.plan.budget,
                "dataset_manifest_sha256": self.plan.dataset_hash,
                "resolution": self.cfg.data.resolution, **runtime.software(), "started": time.time()}

    def train_epochs(self) -> None:
        """Epochs until done or until a stop is agreed; a stop writes one checkpoint, then every rank meets."""
        stream, budget = None, tf.constant(self.plan.budget, tf.int64)  # a new epoch's images, for the step
        while self.epoch < self.cfg.train.epochs and not self.stop.agreed:
            stream = stream or self.input_stream()
            steps, seconds, closed = self.train_epoch(stream, budget)
            if closed:
                self.end_epoch(steps, seconds, *closed)  # its checkpoint is also the stop's, if one was agreed
            elif self.stop.agreed and not self.stop.saved:
                self.saver.save(self.stop.agreed)
        if self.stop.agreed:  # no rank leaves before rank 0's checkpoint and every rank's note are on disk
            self.saver.wait()
            self.outputs.write_state(rundir.STOPPED, reason=self.stop.agreed, global_step=self.global_step,
                                     epoch=self.epoch)
            if self.before_barrier:
                self.before_barrier(self.stop.agreed)
            self.ranks.barrier(name=f"stop.{self.global_step}")

    def input_stream(self):
        """This rank's batches from the next unseen image to the end of training, as one iterator:
        its prefetch runs on across epoch ends, where a pipeline per epoch left every rank waiting."""
        k = self.cfg.train.steps_per_call
        stream = self.plan.stream(self.ranks.rank, self.epoch, self.state.begin_epoch(self.plan.budget),
                                  self.epoch_rng_seed)
        ds, _ = train_dataset(self.cfg.data.dataset, stream, scaled=False, block=max(8, k), prefetch=max(8, 2 * k))
        return iter(ds)

    def images_done(self) -> int:
        """Images trained on so far, over all epochs (what the progress bar and ETA count)."""
        return self.epoch * self.plan.budget + self.state.now["images_in_epoch"]

    def train_epoch(self, batches, budget) -> tuple[int, float, tuple | None]:
        """The rest of the current epoch, from its next unseen image. Returns (steps run, seconds,
        and the epoch's samples and records if it closed, else None: a stop was agreed first)."""
        c = self.state.now
        self._set_learning_rates()
        n_steps = self.plan.steps_to_epoch_end(c["epoch_images"], c["images_in_epoch"])
        steps = self.clock.begin()
        while True:  # at least one call: an epoch whose last step was checkpointed before it closed closes now
            t_call = time.monotonic()
            want = tf.constant(self._steps_for_call(n_steps - steps))
            g_loss, d_loss, agreed, ran, counters, closed, fake, record, waits = self.train_steps(
                batches, self.stop.flag(), want, budget)
            ran = int(ran)  # waits for the call: every rank's allreduces are in it
            self.outputs.guard()  # a job that lost the run (suspended past takeover) stops here
            self.state.take(counters)
            self.clock.call(time.monotonic() - t_call, ran, waits.numpy())
            steps += ran
            if bool(agreed):
                self.stop.agree()
            if bool(closed) or self.stop.agreed:
                return steps, self.clock.end(), (fake, record) if bool(closed) else None
            if steps >= n_steps:
                raise RuntimeError(f"epoch {self.epoch + 1} trained its {n_steps} steps but did not close: "
                                   f"{self.state.now}")
            if self.outputs.due():
                self.outputs.show(g_loss, d_loss, self.state.now, self.images_done(), self.clock)
            self.saver.poll()
            if steps < n_steps and self.policy.due(self.global_step):  # the epoch end saves anyway
                self.saver.save("periodic", background=True)
                self.policy.mark()

    def _set_learning_rates(self) -> None:
        t = self.cfg.train
        lr = self.plan.lr * model.lr_factor(self.epoch, t.epochs, t.lr_rampdown)
        if lr != self.epoch_lr:  # two eager assigns cost a millisecond between epochs: only on a change
            self.nets.set_learning_rates(lr, t.d_lr_ratio)
        self.epoch_lr = lr

    def _steps_for_call(self, left: int) -> int:
        """train.steps_per_call once steps are short (a GPU's milliseconds), else one: a call
        holds off signals, and the first one traces. Never past the epoch's end or a step
        checkpoint, so those fall between calls, on the same step on every rank."""
        fast = self.clock.step_s is not None and self.clock.step_s < FAST_STEP_S
        n = min(self.cfg.train.steps_per_call if fast else 1, left)
        every = self.cfg.train.checkpoint_every_steps
        if every:
            n = min(n, every - self.global_step % every)
        return n

    def end_epoch(self, steps: int, seconds: float, fake, record: dict) -> None:
        """Every rank ran the same steps; rank 0 writes the epoch's samples and stats in the
        background, and a checkpoint if due."""
        rec = dict(kind="epoch", epoch=self.epoch, global_step=self.global_step, lr=self.epoch_lr,
                   **self.clock.record(steps, seconds, self.plan.global_batch))
        self.outputs.epoch(fake, rec, record, self.state, self.nets.sampler)
        self.epoch_rng_seed = self.cfg.train.seed  # a resumed epoch's own seed ends with it
        reason = self.policy.at_epoch_end(self.epoch, self.global_step, self.stop)
        if reason:
            self.saver.save(reason, background=not self.stop.agreed)
            self.policy.mark()

    def checkpoint_now(self, reason: str) -> bool:
        """What a preemption handler calls: rank 0 saves the state in memory now, running no
        collective, so it cannot hang while other ranks are being stopped. False if nothing was saved."""
        return self.saver.now(reason)

    def request_stop(self, reason: str, urgent: bool = False) -> None:
        """Ask for an agreed stop, safe from a signal handler (saving.StopRequest.ask says how)."""
        self.stop.ask(reason, self.saver if urgent else None)

    def finish(self) -> dict:
        self.saver.wait()  # the last epoch's checkpoint is on disk before anything says "done"
        self.outputs.wait()
        summary = {"rank": self.ranks.rank, "size": self.ranks.size, "epochs": self.cfg.train.epochs,
                   "global_step": self.global_step,
                   "weights_sha256": self.nets.digest(),
                   "host": platform.node(), "pid": os.getpid(), "cross_rank": self.ranks.cross_rank,
                   "cross_size": self.ranks.cross_size, "stopped": self.stop.agreed or None}
        if self.stop.agreed:
            log.info(f"stopped at global step {summary['global_step']}: {self.stop.agreed}")
            return summary
        # Every rank leaves a note: proof it ran, and a digest to compare replicas by.
        self.run_files.write_json(self.run_files.rank_note(self.ranks.rank), summary)
        raw = self.nets.generator if self.nets.average is not None else None  # the raw G beside an average
        self.outputs.finish(summary, self.nets.sampler, raw=raw)
        return summary


def run(cfg: Config, world: World | None = None, log_to_stdout: bool = True) -> dict:
    """Train in this process (a world of one unless `world` says otherwise)."""
    return Trainer(cfg, world, log_to_stdout).run()
