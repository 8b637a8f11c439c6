"""The callables a job runs: plain data in, pickled by submitit, or called in-process under srun.

Stops are agreed. USR2 (preemption, the time limit) and SIGTERM (scontrol requeue, scancel)
ask the Trainer to stop; the request rides in the next step's allreduce, every rank stops
after the same step, rank 0 writes one checkpoint and all ranks meet before any exits. On
SIGTERM rank 0 writes that checkpoint at once, from the handler: SIGKILL follows within
KillWait, and srun can force the step down sooner than a step takes. Then every rank exits
with STOP_EXIT, which slurm/train.sbatch requeues on; under submitit, rank 0 hands the stop
to submitit's own USR2 handling, which calls `TrainJob.checkpoint()` (a DelayedSubmission of a
fresh TrainJob on the same run directory; the checkpoint is already on disk) and requeues the job.
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path

from .. import config as config_mod, logs, rundir
from ..errors import RunLockError
from . import environment, retry

STOP_EXIT = 143  # stopped on a signal with a checkpoint on disk: requeue me


class TrainJob:
    """Train on every rank of the job; requeue-safe. Called with a config (a sweep's array task:
    one callable, a config a task), it trains that one instead of its own."""

    def __init__(self, config: dict, log_to_stdout: bool = True):
        self.config = config
        self.log_to_stdout = log_to_stdout
        self._trainer = None

    def __getstate__(self):  # what submitit pickles: the config, never a live trainer
        return {"config": self.config, "log_to_stdout": self.log_to_stdout, "_trainer": None}

    def __call__(self, config: dict | None = None) -> dict:
        submitit_usr2 = signal.getsignal(signal.SIGUSR2) if environment.under_submitit() else None
        early = install_stop_handlers(None)  # before anything slow: a stop now is held, not fatal
        from ..training import without_keras_extras

        with without_keras_extras():  # the Trainer's modules import TensorFlow
            from ..training.trainer import Trainer

        cfg = config_mod.from_dict(config or self.config)
        run = rundir.RunDir(Path(cfg.run_dir).resolve())
        world = environment.job_world(run.rendezvous)
        if not world.is_chief:  # the run's progress is rank 0's; another rank's console shows its warnings
            logs.to_console(logging.WARNING)

        def note_stop(reason: str) -> None:  # before the ranks meet: no rank's exit can cut it short
            retry.note_attempt(run, world, "stopped", reason)

        try:
            self._trainer = Trainer(cfg, world, log_to_stdout=self.log_to_stdout, before_barrier=note_stop, run=run)
            install_stop_handlers(self._trainer, early)
            summary = self._trainer.run()
        except Exception as e:  # the batch script's retry step reads this rank's note
            if not isinstance(e, RunLockError):  # the run is another job's: this one writes nothing into it
                retry.note_failure(run, world, e)
            raise
        if not summary.get("stopped"):
            return summary
        if world.is_chief and callable(submitit_usr2) and "SIGUSR2" in summary["stopped"]:
            hand_stop_to_submitit(submitit_usr2, run, world, summary["stopped"])
        raise SystemExit(STOP_EXIT)

    def checkpoint(self, *args, **kwargs):
        import submitit

        trainer = self._trainer
        if trainer is not None and not trainer.stop_reason:  # called mid-step by submitit itself
            trainer.checkpoint_now("preemption (USR2)")
        return submitit.helpers.DelayedSubmission(TrainJob(self.config, self.log_to_stdout), *args, **kwargs)


def hand_stop_to_submitit(handler, run: rundir.RunDir, world, reason: str) -> None:
    """submitit's own USR2 handling: checkpoint() (the checkpoint is on disk already), requeue,
    exit. The note says "requeued by submitit" only once submitit has requeued; when it did not
    (or was cut short), the retry step requeues the stop itself, uncounted."""
    # The requeue signals every process of the job, `scontrol requeue` itself among them, which it
    # then killed before it could report success. Ignored here, and so in scontrol (an ignored signal
    # is inherited), it cuts nothing short: the stop's checkpoint and notes are on disk already.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        handler(signal.SIGUSR2, None)
    except SystemExit:  # submitit requeued the job, and exits
        retry.note_attempt(run, world, "stopped", reason, requeued_by="submitit")
        raise
    except Exception as e:  # noqa: BLE001 -- its reason goes in the log; the retry step requeues
        print(f"[train] submitit did not requeue the stop ({type(e).__name__}: {e}); the retry step will",
              flush=True)


def install_stop_handlers(trainer, early: list | None = None) -> list:
    """USR2 and SIGTERM ask the Trainer for an agreed stop (SIGTERM also has rank 0 save at once).

    This replaces submitit's handlers for the run of the Trainer (its SIGTERM handler only
    logs; its USR2 handler is called once the agreed stop's checkpoint is on disk). With no
    Trainer yet (the job is importing TensorFlow), a signal is held in the returned list;
    installing them for the Trainer then hands it the first one held.
    """
    held: list = []

    def stop(signum, frame):
        # SIGKILL follows SIGTERM within KillWait, or at once when srun forces the step down.
        reason, urgent = f"signal {signal.Signals(signum).name}", signum == signal.SIGTERM
        if trainer is None:
            held.append((reason, urgent))
        else:
            trainer.request_stop(reason, urgent=urgent)

    for signum in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, stop)
    if trainer is not None and early:
        trainer.request_stop(early[0][0], urgent=False)  # nothing to save yet: the stop rides in the first step
    return held


def preprocess_task(out: str, task: int, ntasks: int, token: str) -> dict:
    from ..prep import pack

    logs.to_console()  # the job's log is its stdout
    return pack.pack_task(out, task, ntasks, token)


def seal_dataset(out: str, token: str) -> dict:
    from ..prep import pack

    logs.to_console()
    return {"counts": pack.seal(out, token)["counts"], "dataset": out}


def postprocess_job(run_dir: str, dataset: str | None = None, batches: int | None = None,
                    config_file: str | None = None, overrides: tuple = ()) -> dict:
    from ..post import report

    logs.to_console()
    m = report.postprocess(rundir.RunDir(Path(run_dir).resolve()), dataset, batches, config_file=config_file,
                           overrides=overrides)
    return {"max_ssim": m["seed_max_ssim"]["final"], "report": m["report"]}


def sweep_report_job(sweep_dir: str, batches: int | None = None) -> dict:
    """After a sweep's arrays, however they ended: each finished run's report, then the leaderboard."""
    from ..post import leaderboard

    logs.to_console()
    sweep = rundir.SweepDir(Path(sweep_dir).resolve())
    board = leaderboard.write(sweep, leaderboard.report_runs(sweep, batches))
    return {"runs": len(board["runs"]), "leaderboard": str(sweep.report / rundir.SWEEP_LEADERBOARD_HTML)}


def collect_job(run_dir: str, dest: str, include_checkpoints: bool = False) -> dict:
    from . import collect

    logs.to_console()
    return collect.collect(rundir.RunDir(run_dir), dest, include_checkpoints)
