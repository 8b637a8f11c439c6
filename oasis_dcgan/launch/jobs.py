"""The callables a job runs: plain data in, pickled by submitit, or called in-process under srun.

`TrainJob` is submitit's Checkpointable: on USR2 (preemption or the time limit) submitit
calls `checkpoint()` on global rank 0 of the running job, on the very object it is running.
That asks the Trainer to save from memory (no collective, so nothing can hang) and returns
a DelayedSubmission of a fresh TrainJob on the same run directory, which submitit requeues.
"""
from __future__ import annotations

import signal
from pathlib import Path

from .. import config as config_mod
from . import environment


class TrainJob:
    """Train on every rank of the job; requeue-safe."""

    def __init__(self, config: dict, log_to_stdout: bool = True):
        self.config = config
        self.log_to_stdout = log_to_stdout
        self._trainer = None

    def __getstate__(self):  # what submitit pickles: the config, never a live trainer
        return {"config": self.config, "log_to_stdout": self.log_to_stdout, "_trainer": None}

    def __call__(self) -> dict:
        from ..training.trainer import Trainer

        cfg = config_mod.from_dict(self.config)
        world = environment.job_world(Path(cfg.run_dir).resolve() / ".rendezvous")
        self._trainer = Trainer(cfg, world, log_to_stdout=self.log_to_stdout)
        install_stop_handlers(self._trainer, usr2=not environment.under_submitit())
        return self._trainer.run()

    def checkpoint(self, *args, **kwargs):
        import submitit

        if self._trainer is not None:
            self._trainer.checkpoint_now("preemption (USR2)")
        return submitit.helpers.DelayedSubmission(TrainJob(self.config, self.log_to_stdout))


def install_stop_handlers(trainer, usr2: bool) -> None:
    """SIGTERM (scontrol requeue, scancel, the time limit) and, unless submitit owns it, USR2.

    Slurm signals every task, so every rank exits; rank 0 checkpoints first. submitit's own
    SIGTERM handler only logs, so this one replaces it.
    """
    def stop(signum, frame):
        trainer.request_stop(f"signal {signal.Signals(signum).name}")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    if usr2:
        signal.signal(signal.SIGUSR2, stop)


def preprocess_task(out: str, task: int, ntasks: int) -> dict:
    from ..prep import pack

    return pack.pack_task(out, task, ntasks)


def seal_dataset(out: str) -> dict:
    from ..prep import pack

    return {"counts": pack.seal(out)["counts"], "dataset": out}


def postprocess_job(run_dir: str, dataset: str | None = None, batches: int | None = None) -> dict:
    from ..post import report

    m = report.postprocess(run_dir, dataset, batches)
    return {"max_ssim": m["seed_max_ssim"]["final"], "report": str(Path(run_dir) / "report" / "report.html")}


def collect_job(run_dir: str, dest: str, include_checkpoints: bool = False) -> dict:
    from . import collect

    return collect.collect(run_dir, dest, include_checkpoints)
