"""Where a job runs: the executors, each named and described once here, and submitit executors
sized for each job (Slurm when a controller answers, local otherwise).

The config (cluster.executor) and the CLI's --executor take their choices and help from
EXECUTORS; every other module names an executor through the constants below. config.py
reads this module, so it imports nothing of the suite: `cfg` below is a config.Config.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from ..errors import ConfigError, PartitionError

AUTO, LOCAL, SLURM, INPROCESS = "auto", "local", "slurm", "inprocess"
EXECUTORS = {
    AUTO: "Slurm when a controller answers, else local",
    LOCAL: "jobs on this machine, through submitit",
    SLURM: "sbatch jobs, through submitit",
    INPROCESS: "this process, no job; what srun-started ranks use",
}
QUEUED = (AUTO, LOCAL, SLURM)  # the executors that submit jobs (a pipeline's stages must be jobs)


def describe(names: typing.Iterable[str] = tuple(EXECUTORS)) -> str:
    """The executors in words, for help texts."""
    return ", ".join(f"{n} ({EXECUTORS[n]})" for n in names)


SUBMITIT_TIMEOUTS = 1_000_000



def slurm_available() -> bool:
    """sbatch is installed and a controller answers (installed-but-down counts as no Slurm)."""
    if not shutil.which("sbatch") or not shutil.which("scontrol"):
        return False
    try:
        r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and "UP" in r.stdout


def resolve_executor(kind: str) -> str:
    if kind == AUTO:
        return SLURM if slurm_available() else LOCAL
    return kind


def partitions() -> dict[str, dict]:
    """What the controller says of each partition: {name: its fields}; {} when it does not answer."""
    try:
        r = subprocess.run(["scontrol", "show", "partition", "-o"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in r.stdout.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "PartitionName" in fields:
            out[fields["PartitionName"]] = fields
    return out


def check_partition(cfg, role: str = "train") -> None:
    """Refuse, before queueing, a job its partition can never run: it would pend for good
    (PartitionNodeLimit) while the command waited without a word."""
    nodes = _resources(cfg, role)[0]
    known = partitions()
    if not known:
        return
    name = cfg.cluster.partition or next((n for n, f in known.items() if f.get("Default") == "YES"), "")
    if name not in known:
        raise PartitionError(f"cluster.partition = {name!r}: Slurm has no such partition (it has: "
                          f"{', '.join(sorted(known))})")
    part = known[name]
    total = int(part.get("TotalNodes", "0") or 0)
    limit = part.get("MaxNodes", "UNLIMITED")
    can = min(total, int(limit)) if limit.isdigit() else total
    if nodes > can:
        fits = [f"{n} ({f.get('TotalNodes')} nodes)" for n, f in sorted(known.items())
                if int(f.get("TotalNodes", "0") or 0) >= nodes]
        raise PartitionError(f"cluster.nodes = {nodes}: partition {name!r} has {total} node(s) (MaxNodes={limit}); "
                          "set cluster.nodes to at most that, or cluster.partition to "
                          + (f"one that has {nodes}: {', '.join(fits)}" if fits else f"one with {nodes} nodes"))


def _resources(cfg, role: str) -> tuple[int, int, int, int]:
    """(nodes, tasks per node, GPUs per node, CPUs per task) for a role."""
    c = cfg.cluster
    if role == "train":
        return c.nodes, c.tasks_per_node, c.gpus_per_node, c.cpus_per_task
    if role == "postprocess":
        return 1, 1, 0, c.postprocess_cpus
    return 1, 1, 0, 1


def _train_job_parameters(cfg) -> dict:
    """A dead rank ends the step at once; the batch script then requeues or fails the job (launch/retry.py)."""
    retry = [sys.executable, "-m", "oasis_dcgan.launch.retry", str(Path(cfg.run_dir).resolve()),
             "--max-requeues", str(cfg.cluster.max_requeues)]
    return dict(slurm_srun_args=[f"--cpus-per-task={cfg.cluster.cpus_per_task}", "--kill-on-bad-exit=1"],
                # The first teardown line runs right after srun, so $? is the step's exit code.
                slurm_teardown=[f"{shlex.join(retry)} --rc $?"])


def _slurm_parameters(cfg, dependency: str | None, array: int) -> dict:
    c = cfg.cluster
    extra = {}
    if dependency:
        extra["dependency"] = dependency
        extra["kill-on-invalid-dep"] = "yes"
    if c.account:
        extra["account"] = c.account
    if c.qos:
        extra["qos"] = c.qos
    if c.constraint:
        extra["constraint"] = c.constraint
    params = dict(slurm_signal_delay_s=c.signal_delay_s, slurm_additional_parameters=extra)
    if c.partition:
        params["slurm_partition"] = c.partition
    if c.setup:
        params["slurm_setup"] = list(c.setup)
    if array:
        params["slurm_array_parallelism"] = array
    return params


def make_executor(cfg, folder: str | os.PathLike, kind: str, role: str, name: str,
                  dependency: str | None = None, array: int = 0):
    """A submitit executor for a role: train (the ranks), postprocess (its CPUs), any other (1 CPU)."""
    import submitit

    kind = resolve_executor(kind)
    if kind == SLURM:
        # submitit stops requeueing after this many time-limit stops. A stop is never what limits a
        # run here (cluster.max_requeues counts failures, in launch/retry.py), so the count is
        # set past any run's needs.
        ex = submitit.AutoExecutor(folder=str(folder), cluster=SLURM, slurm_max_num_timeout=SUBMITIT_TIMEOUTS)
    else:
        ex = submitit.AutoExecutor(folder=str(folder), cluster=LOCAL)
    nodes, tasks, gpus, cpus = _resources(cfg, role)
    if kind == LOCAL and nodes > 1:
        raise ConfigError(f"cluster.nodes = {nodes}: the local executor runs on one machine; use 1 node "
                         "or run on Slurm")
    params = dict(name=name, timeout_min=cfg.cluster.timeout_min, nodes=nodes, tasks_per_node=tasks,
                  cpus_per_task=cpus)
    if kind == SLURM:
        # srun does not inherit sbatch's --cpus-per-task on Slurm 22.05 to 23.02.
        params["slurm_srun_args"] = [f"--cpus-per-task={cpus}"]
    if gpus:
        params["gpus_per_node"] = gpus
    if cfg.cluster.mem_gb:
        params["mem_gb"] = cfg.cluster.mem_gb
    if kind == SLURM:
        params.update(_slurm_parameters(cfg, dependency, array))
        if role == "train":
            params.update(_train_job_parameters(cfg))
            # Requeueable even where the site's JobRequeue default says no.
            params["slurm_additional_parameters"]["requeue"] = True
    ex.update_parameters(**params)
    return ex


def sbatch_text(ex, array: int = 0) -> str:
    """The sbatch script submitit would submit with this executor (for --dry-run); `array` tasks."""
    inner = getattr(ex, "_executor", ex)
    make = getattr(inner, "_make_submission_file_text", None)
    if make is None or getattr(ex, "cluster", SLURM) != SLURM:
        # submitit renders Slurm's scripts only where srun is installed.
        return "(not rendered: this machine has no srun, and the local executor submits no sbatch script)"
    saved = dict(inner.parameters)
    if array:  # what submitit sets when it submits an array
        inner.parameters["map_count"] = array
    try:
        return make(inner._submitit_command_str, "DRYRUN")
    finally:
        inner.parameters.clear()
        inner.parameters.update(saved)
