"""Where a job runs: one class per executor, each answering the same questions.

The pipeline, the single-job commands, `submit --dry-run`, `status` and `retry` ask an executor,
never compare its name: what to refuse before anything is queued, how to submit a stage after
another, what jobs.json keeps of it, what state a recorded job is in, the script it would submit,
and inside a job, which job and attempt this is and how it is requeued. A new executor is one
subclass with @register; the config's choices, the CLI's and their help derive from EXECUTORS.

config.py reads this module, so it imports nothing of the suite but errors.py and slurmctl.py:
`cfg` below is a config.Config.
"""
from __future__ import annotations

import os
import shutil
import typing
from pathlib import Path

from .. import rundir
from ..errors import ConfigError
from . import slurmctl

EXECUTORS: dict[str, type[Executor]] = {}   # by name, in the order they are offered
SUBMITIT_TIMEOUTS = 1_000_000


def register(cls: type[Executor]) -> type[Executor]:
    EXECUTORS[cls.name] = cls
    return cls


def get(name: str, dry_run: bool = False, ranks_here: bool = False) -> Executor:
    """The executor a user named, resolved (auto picks one: `dry_run` for a script to show, `ranks_here`
    when this process is a task of a job step already); a clear error for a name not registered."""
    if name not in EXECUTORS:
        raise ConfigError(f"executor {name!r}: not one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]().resolve(dry_run, ranks_here)


def queued() -> tuple[str, ...]:
    """The executors that submit jobs: a pipeline's stages must be jobs."""
    return tuple(n for n, cls in EXECUTORS.items() if cls.queued)


def describe(names: typing.Iterable[str] | None = None) -> str:
    """The executors in words, for help texts."""
    return ", ".join(f"{n} ({EXECUTORS[n].help})" for n in (EXECUTORS if names is None else names))


def jobs_alive(job_ids: list[str]) -> bool | None:
    """Whether the first executor that can answer for these jobs still has one waiting or running;
    None when none can (the caller judges by age)."""
    return next((a for cls in EXECUTORS.values() if (a := cls.jobs_alive(job_ids)) is not None), None)


def running_here() -> Executor | None:
    """The executor whose job this process is, if any."""
    return next((cls() for cls in EXECUTORS.values() if cls.detect()), None)


def resources(cfg, role: str) -> tuple[int, int, int, int]:
    """(nodes, tasks per node, GPUs per node, CPUs per task) for a role."""
    c = cfg.cluster
    if role == "train":
        return c.nodes, c.tasks_per_node, c.gpus_per_node, c.cpus_per_task
    if role == "postprocess":
        return 1, 1, 0, c.postprocess_cpus
    return 1, 1, 0, 1


class Executor:
    """What every executor answers. The defaults are an executor's that knows no scheduler."""
    name: typing.ClassVar[str]
    help: typing.ClassVar[str]
    queued: typing.ClassVar[bool] = True   # it submits jobs
    chains: typing.ClassVar[bool] = False  # its scheduler starts a stage once the one before succeeded; else
                                           # the pipeline waits for each stage before it submits the next

    def resolve(self, dry_run: bool = False, ranks_here: bool = False) -> Executor:
        """The executor that actually runs the jobs (auto's choice; itself for every other)."""
        return self

    def check(self, cfg, role: str) -> None:
        """Refuse, before anything is queued, a request this executor can never run."""

    def submit(self, cfg, folder: Path, role: str, name: str, fn, args: tuple, array: int = 0,
               after: str | None = None) -> tuple[list, str]:
        """Submit fn(*args) (or, with `array`, one task per element of the args' lists) after the job
        `after` succeeded. Returns the submitit-like jobs (job_id, done(), result(), results()) and the id
        recorded for the stage."""
        raise NotImplementedError

    def script(self, cfg, folder: Path, role: str, name: str, array: int = 0, after: str | None = None) -> str:
        """The script a submission would run, for --dry-run."""
        return f"(not rendered: the {self.name} executor submits no batch script)"

    def record(self, jobs: list, folder: Path) -> dict:
        """What jobs.json keeps of a submitted stage beside its id, for `status`."""
        return {}

    @classmethod
    def states(cls, recorded: list[dict]) -> list[dict]:
        """Each recorded job of this executor with its state: state, states, requeues, rows, why."""
        return [{**j, "states": [], "state": "UNKNOWN", "requeues": 0, "rows": [], "why": ""} for j in recorded]

    def hints(self, out: dict) -> list[str]:
        """How to watch a submitted pipeline, beyond `oasis-dcgan status`."""
        return []

    def owns_job_ids(self) -> bool:
        """Its job ids are ones `jobs_alive` can answer for (a packing's lock names them)."""
        return False

    def array_size(self) -> int:
        """The most tasks one array may hold, for a sweep's runs; 0: none, the runs go through a queue."""
        return 0

    @staticmethod
    def jobs_alive(job_ids: list[str]) -> bool | None:
        """Whether any of these jobs still waits or runs; None when nobody can say (judge by age)."""
        return None

    @staticmethod
    def detect() -> bool:
        """This process is a job of this executor."""
        return False

    def this_job(self) -> tuple[str, int]:
        """Inside a job: its id and attempt."""
        raise ConfigError(f"the {self.name} executor has no job to requeue")

    def job_state(self, job_id: str) -> str:
        return "UNKNOWN"

    def requeue(self, job_id: str) -> None:
        raise ConfigError(f"the {self.name} executor cannot requeue job {job_id}")


@register
class Auto(Executor):
    name, help = "auto", "Slurm when a controller answers, else local"

    def resolve(self, dry_run: bool = False, ranks_here: bool = False) -> Executor:
        if ranks_here:   # srun started this process among the job's ranks (slurm/train.sbatch): train here
            return InProcess()
        # A dry run renders Slurm's scripts wherever srun is installed, even with no controller up.
        return Slurm() if Slurm.available() or (dry_run and shutil.which("srun")) else Local()


class _Submitit(Executor):
    """An executor through submitit: its AutoExecutor sized for each role."""
    cluster: typing.ClassVar[str]   # submitit's name for it

    def parameters(self, cfg, role: str, name: str, array: int, after: str | None, folder: Path) -> dict:
        nodes, tasks, gpus, cpus = resources(cfg, role)
        params = dict(name=name, timeout_min=cfg.cluster.timeout_min, nodes=nodes, tasks_per_node=tasks,
                      cpus_per_task=cpus)
        if gpus:
            params["gpus_per_node"] = gpus
        if cfg.cluster.mem_gb:
            params["mem_gb"] = cfg.cluster.mem_gb
        return params

    def make(self, cfg, folder: Path, role: str, name: str, array: int = 0, after: str | None = None):
        import submitit

        ex = submitit.AutoExecutor(folder=str(folder), cluster=self.cluster, **self.options())
        ex.update_parameters(**self.parameters(cfg, role, name, array, after, folder))
        return ex

    def options(self) -> dict:
        return {}

    def submit(self, cfg, folder, role, name, fn, args, array=0, after=None):
        ex = self.make(cfg, folder, role, name, array, after)
        if array:
            jobs = ex.map_array(fn, *args)
            return jobs, jobs[0].job_id.split("_")[0]
        job = ex.submit(fn, *args)
        return [job], job.job_id


@register
class Local(_Submitit):
    name, help, cluster = "local", "jobs on this machine, through submitit", "local"

    def check(self, cfg, role):
        nodes = resources(cfg, role)[0]
        if nodes > 1:
            raise ConfigError(f"cluster.nodes = {nodes}: the local executor runs on one machine; use 1 node "
                              "or run on Slurm")

    def record(self, jobs, folder):
        # A local array is one job per task: status reads each one's result in the folder.
        return {"submitit_folder": str(folder), "job_ids": [j.job_id for j in jobs]}

    @classmethod
    def states(cls, recorded):
        out = []
        for j in recorded:
            state, why = _local_state(j)
            out.append({**j, "states": [state], "state": state, "requeues": 0, "rows": [], "why": why})
        return out

    @staticmethod
    def detect() -> bool:
        return os.environ.get("SUBMITIT_EXECUTOR") == Local.cluster


def _local_state(job: dict) -> tuple[str, str]:
    """A job of submitit's local executor, from its result files: (state, why it failed).

    Each task leaves <job id>_<task>_result.pkl holding ("success", value) or ("error", traceback);
    a job with none is running while its process lives, and ended without a result after."""
    import pickle

    from ..fsutil import pid_alive

    folder, states, why = Path(job["submitit_folder"]), [], ""
    for jid in job.get("job_ids") or [job["job_id"]]:
        results = sorted(folder.glob(f"{jid}_*_result.pkl"))
        if not results:
            states.append("RUNNING" if pid_alive(int(jid)) else "FAILED")
            why = why or f"job {jid} ended without a result (killed?); see {folder}/{jid}_0_log.err"
        for r in results:
            try:
                outcome, value = pickle.loads(r.read_bytes())
            except Exception:  # noqa: BLE001 -- a result being written, or of another version
                outcome, value = "error", f"{r}: unreadable"
            states.append("COMPLETED" if outcome == "success" else "FAILED")
            if outcome != "success" and not why:
                why = [x for x in str(value).strip().splitlines() if x.strip()][-1][:300]
    order = ("FAILED", "RUNNING", "COMPLETED")
    return next(s for s in order if s in states), why


@register
class Slurm(_Submitit):
    name, help, cluster = "slurm", "sbatch jobs, through submitit", "slurm"
    chains = True

    @staticmethod
    def available() -> bool:
        return slurmctl.available()

    def options(self) -> dict:
        # submitit stops requeueing after this many time-limit stops. A stop is never what limits a
        # run here (cluster.max_requeues counts failures, in launch/retry.py), so the count is set
        # past any run's needs.
        return {"slurm_max_num_timeout": SUBMITIT_TIMEOUTS}

    def check(self, cfg, role):
        slurmctl.check_partition(cfg, resources(cfg, role)[0])

    def parameters(self, cfg, role, name, array, after, folder):
        params = super().parameters(cfg, role, name, array, after, folder)
        # A train array's tasks share one script: each finds its run in the folder's list by its task id.
        runs = folder / rundir.SWEEP_ARRAY_RUNS if role == "train" and array else None
        return {**params, **slurmctl.batch_parameters(cfg, role, params["cpus_per_task"], array, after, self.name,
                                                      runs)}

    def script(self, cfg, folder, role, name, array=0, after=None):
        return slurmctl.sbatch_text(self.make(cfg, folder, role, name, array, after), array)

    @classmethod
    def states(cls, recorded):
        return slurmctl.job_rows(recorded)

    def hints(self, out):
        return [f"squeue -j {','.join(out['jobs'].values())}", f"tail -f {out['run_dir']}/log.txt"]

    def owns_job_ids(self) -> bool:
        return True

    def array_size(self) -> int:
        return slurmctl.max_array_size()

    @staticmethod
    def jobs_alive(job_ids):
        return slurmctl.jobs_alive(job_ids)

    @staticmethod
    def detect() -> bool:
        return "SLURM_JOB_ID" in os.environ and os.environ.get("SUBMITIT_EXECUTOR", Slurm.cluster) == Slurm.cluster

    def this_job(self):
        env, job = os.environ, os.environ["SLURM_JOB_ID"]
        if env.get("SLURM_ARRAY_TASK_ID"):  # an array's task, named as submitit names it to the ranks
            job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
        return job, int(env.get("SLURM_RESTART_COUNT", "0") or 0)

    def job_state(self, job_id):
        return slurmctl.job_state(job_id)

    def requeue(self, job_id):
        slurmctl.requeue(job_id)


@register
class InProcess(Executor):
    name, help = "inprocess", "this process, no job; what srun-started ranks use"
    queued = False

    def submit(self, cfg, folder, role, name, fn, args, array=0, after=None):
        calls = zip(*args) if array else [args]
        jobs = [_Done(fn(*a), f"{os.getpid()}_{i}") for i, a in enumerate(calls)]
        return jobs, str(os.getpid())


class _Done:
    """A call made already, answering as a submitit job does."""

    def __init__(self, value, job_id: str):
        self.value, self.job_id = value, job_id

    def done(self) -> bool:
        return True

    def result(self):
        return self.value

    def results(self) -> list:
        return [self.value]
