"""The run directory: every path a run has, named here and nowhere else.

One training run writes one directory. Its file names, the groups that `--restart` and a
fresh start set aside, that `collect` copies and that may still grow, and the run's state
all live in this module; the jobs read and write runs through it.

    RUN_DIR/
      options.json        what this run is: config, world, versions (rank 0, at every start)
      state.json          new | training | stopped | failed | finished, and why (rank 0)
      log.txt             rank 0's log                                   (grows)
      stats.jsonl         tick, epoch and checkpoint lines               (grows)
      samples/            epoch_NNNN.npy and .png: the fixed noise, each epoch
      snapshots/          generator_epoch_NNNN.keras (train.snapshot_every_epoch)
      tensorboard/        TensorBoard scalars
      checkpoints/        ckpt-<global step>/ (see training/checkpoint.py)
      generator.keras     the final generator (the average, when there is one)
      generator_raw.keras the raw generator beside the average
      ranks/              rank-N.json: each rank's digest at the end
      attempts/           <job>.<attempt>/rank-N.json: how each rank's attempt ended
      requeues.jsonl      each requeue or give-up decision                (grows)
      jobs.json           the jobs submitted for this run
      report/             postprocess's metrics, figures and report.md/html
      slurm/              submitit's scripts and the jobs' logs
      set-aside/<time>/   an earlier record, moved by --restart or a fresh start
      .lock               the writer's claim (training/runlock.py)
      .rendezvous/        rank 0's address for the other ranks
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from . import fsutil
from .errors import RunDirError

OPTIONS = "options.json"
STATE = "state.json"
LOG = "log.txt"
STATS = "stats.jsonl"
SAMPLES = "samples"
SNAPSHOTS = "snapshots"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
GENERATOR = "generator.keras"
GENERATOR_RAW = "generator_raw.keras"
RANKS = "ranks"
ATTEMPTS = "attempts"
REQUEUES = "requeues.jsonl"
JOBS = "jobs.json"
REPORT = "report"
# A sweep's directory (SweepDir), which holds one run directory per combination of values.
SWEEP_RECORD = "sweep.json"
SWEEP_REPORT = "sweep-report"   # the leaderboard, its page and the runs' curves
SWEEP_LEADERBOARD = "leaderboard.json"
SWEEP_LEADERBOARD_MD, SWEEP_LEADERBOARD_HTML = "leaderboard.md", "leaderboard.html"
FIGURE_SWEEP_CURVES = "curves.png"
SWEEP_ARRAY_RUNS = "runs.json"  # in an array's job folder: its tasks' run directories, in task order
JOB_LOGS = "job-logs"  # submitit's folder: each job's scripts, logs and results
SET_ASIDE = "set-aside"
LOCK = ".lock"
RENDEZVOUS = ".rendezvous"
# Inside report/ (REPORT_* and FIGURE_*): what `status`, the demo and the jobs read of
# postprocess's output, the seed metric's real batches, and the figures.
REPORT_METRICS = "metrics.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_BATCHES = "metric_batches.json"
REPORT_PER_EPOCH = "metrics.jsonl"   # the seed metric of each finished epoch, cached by its samples' bytes
FIGURE_LOSS = "loss.png"
FIGURE_SSIM = "ssim.png"
FIGURE_PROGRESS = "progress.gif"
FIGURE_NOTABLE = "notable_epochs.png"
FIGURE_LAST = "last_vs_real.png"
FIGURE_NN_PAIRS = "nn_pairs.png"
FIGURE_NN_SSIM = "nn_ssim.png"

# What one training run's record is: a resume extends it, --restart and a fresh start move it
# aside whole, so two runs never mix in one file.
RECORD = (CHECKPOINTS, STATS, SAMPLES, RANKS, TENSORBOARD, SNAPSHOTS, GENERATOR, GENERATOR_RAW, STATE, REPORT)
# What `collect` takes off scratch (checkpoints only when asked).
RESULTS = (OPTIONS, STATE, LOG, STATS, GENERATOR, GENERATOR_RAW, REQUEUES, JOBS, REPORT, SAMPLES, SNAPSHOTS)
# Files appended to while a run is live: a copy cuts them at their last complete line.
GROWING = (LOG, STATS, REQUEUES)

# The run's states. A run is `new` until its first start writes `training`.
NEW, TRAINING, STOPPED, FAILED, FINISHED = "new", "training", "stopped", "failed", "finished"


class SweepDir:
    """A sweep's directory: its record, its leaderboard, and one run directory per combination of
    values, named by them, so the same combination always lands in the same directory.

        RUN_DIR/
          sweep.json          the grid, every run's values and directory, the arrays submitted
          sweep-report/       leaderboard.json, leaderboard.md, leaderboard.html, curves.png
          job-logs/<array>/   each array's scripts, logs and runs.json (its tasks' runs)
          <key>=<value>,.../  one run directory (above) per combination
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    record = property(lambda self: self.path / SWEEP_RECORD)
    report = property(lambda self: self.path / SWEEP_REPORT)

    def array_folder(self, token: str) -> Path:
        """One array's job folder: submitit's scripts and logs, and SWEEP_ARRAY_RUNS."""
        return self.path / JOB_LOGS / token

    def run(self, name: str) -> RunDir:
        return RunDir(self.path / name)


class RunDir:
    """Paths of one run directory, its typed readers, and its writes, fenced by the writer's lease."""

    def __init__(self, path: str | os.PathLike, lease=None):
        self.path = Path(path)
        self.lease = lease  # rank 0's run lock (training/runlock.py), once it holds one

    def guard(self) -> None:
        """Before any write into the run: raise LeaseLostError if the writer no longer holds it."""
        if self.lease is not None:
            self.lease.check()

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # -- paths
    options = property(lambda self: self.path / OPTIONS)
    state_file = property(lambda self: self.path / STATE)
    log = property(lambda self: self.path / LOG)
    stats = property(lambda self: self.path / STATS)
    samples = property(lambda self: self.path / SAMPLES)
    snapshots = property(lambda self: self.path / SNAPSHOTS)
    tensorboard = property(lambda self: self.path / TENSORBOARD)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    generator = property(lambda self: self.path / GENERATOR)
    generator_raw = property(lambda self: self.path / GENERATOR_RAW)
    ranks = property(lambda self: self.path / RANKS)
    attempts = property(lambda self: self.path / ATTEMPTS)
    requeues = property(lambda self: self.path / REQUEUES)
    jobs = property(lambda self: self.path / JOBS)
    report = property(lambda self: self.path / REPORT)
    job_logs = property(lambda self: self.path / JOB_LOGS)
    lock = property(lambda self: self.path / LOCK)
    rendezvous = property(lambda self: self.path / RENDEZVOUS)

    def sample(self, epoch: int, suffix: str) -> Path:
        """The fixed-noise batch of a finished epoch: .npy (values) or .png (grid)."""
        return self.samples / f"epoch_{epoch:04d}.{suffix}"

    def snapshot(self, epoch: int) -> Path:
        return self.snapshots / f"generator_epoch_{epoch:04d}.keras"

    def rank_note(self, rank: int) -> Path:
        return self.ranks / f"rank-{rank}.json"

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        return self.attempts / f"{job_id}.{attempt}"

    def attempt_note(self, job_id: str, attempt: int, rank: int) -> Path:
        """How one rank's attempt ended (launch/retry.py)."""
        return self.attempt_dir(job_id, attempt) / f"rank-{rank}.json"

    def attempt_notes(self, job_id: str, attempt: int) -> list[Path]:
        folder = self.attempt_dir(job_id, attempt)
        return sorted(folder.glob("rank-*.json")) if folder.is_dir() else []

    def report_file(self, name: str) -> Path:
        return self.report / name

    # -- readers
    def read_options(self) -> dict:
        """options.json; a RunDirError that says this is not a run directory."""
        if not self.options.is_file():
            raise RunDirError(f"{self.options}: not found; is {self.path} a training run directory?")
        return fsutil.read_json(self.options)

    def read_stats(self, kind: str | None = None) -> list[dict]:
        rows = fsutil.read_jsonl(self.stats)
        return rows if kind is None else [r for r in rows if r.get("kind") == kind]

    def read_state(self) -> dict:
        """The run's state: {"state": new|training|stopped|failed|finished, ...}."""
        if not self.state_file.is_file():
            return {"state": NEW}
        return fsutil.read_json(self.state_file)

    def write_state(self, state: str, **fields) -> dict:
        rec = {"state": state, **fields, "time": time.time()}
        self.write_json(self.state_file, rec)
        return rec

    def write_json(self, path: Path, obj) -> None:
        """A file of the run, whole or not at all, by its writer only."""
        self.guard()
        fsutil.write_json(path, obj)

    def finished(self) -> bool:
        return self.read_state()["state"] == FINISHED

    def sweep_temps(self) -> int:
        """Remove the temps killed writers left where training writes; only for the lock's holder."""
        return sum(fsutil.remove_stale_temps(d) for d in (self.path, self.samples, self.snapshots, self.ranks))

    def record_present(self) -> list[str]:
        """The names of RECORD this directory holds (an empty folder holds no record: it stays,
        which keeps a checkpoints/ symlinked to other storage in place)."""
        return [name for name in RECORD if (p := self.path / name).exists() and not (p.is_dir() and
                                                                                     not any(p.iterdir()))]

    def set_aside(self) -> Path | None:
        """Move the run's record (checkpoints included) into set-aside/<time>/; nothing is deleted."""
        present = self.record_present()
        if not present:
            return None
        dest = self.path / SET_ASIDE / time.strftime("%Y%m%d-%H%M%S")
        n = 1
        while dest.exists():  # two set-asides in one second
            dest, n = dest.with_name(f"{dest.name.split('.')[0]}.{n}"), n + 1
        dest.mkdir(parents=True)
        for name in present:
            os.rename(self.path / name, dest / name)
        fsutil.fsync_path(self.path)
        return dest
