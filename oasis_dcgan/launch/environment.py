"""What the scheduler tells a process: its place in the job, and which Slurm to talk to.

The only code that reads SLURM_* and SUBMITIT_* variables. Every rank derives its numbers
through `submitit.JobEnvironment` (SLURM_* under Slurm, SUBMITIT_LOCAL_* under submitit's
local executor), and hands training a plain `World`.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ..training.distributed import RendezvousError, World
from .executors import SLURM

# A job in one of these states holds its claims, whatever their age: it runs, or will.
ALIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}

def under_submitit() -> bool:
    """Started by submitit, which owns USR2 (it calls the job's checkpoint() on rank 0)."""
    return "SUBMITIT_EXECUTOR" in os.environ


def in_srun_step() -> bool:
    """A task of a Slurm job step: with plain sbatch + srun, the ranks are the job already."""
    return "SLURM_STEP_ID" in os.environ and "SLURM_PROCID" in os.environ


def slurm_jobs_alive(job_ids: list[str]) -> bool | None:
    """Whether Slurm still has any of these jobs pending, running or suspended (an array's tasks
    included); None when no controller answers, so the caller falls back on the lock's age."""
    ids = [j for j in job_ids if j and j.replace("_", "").isdigit()]
    if not ids or not shutil.which("squeue"):
        return None
    try:
        r = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%T"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        # Jobs long gone from the controller's memory are an error of their own; anything else is no answer.
        return False if "Invalid job id" in r.stderr else None
    return any(state.strip() in ALIVE_STATES for state in r.stdout.splitlines())


def _job_environment():
    if under_submitit():
        import submitit

        return submitit.JobEnvironment()
    if in_srun_step() and "SLURM_JOB_ID" in os.environ:
        # Plain `srun python -m jobs.train` (slurm/train.sbatch): the same variables submitit
        # reads under Slurm, so its Slurm environment parses them (node lists included).
        from submitit.slurm.slurm import SlurmJobEnvironment

        return SlurmJobEnvironment()
    return None


def job_world(rendezvous_dir: str | os.PathLike = "") -> World:
    """This process's place in the job; a world of one outside any job."""
    je = _job_environment()
    if je is None:
        return World(rendezvous_dir=str(rendezvous_dir))
    size, nodes = je.num_tasks, je.num_nodes
    if size % nodes:
        raise RendezvousError(f"{size} tasks do not spread evenly over {nodes} nodes; "
                              "use --ntasks-per-node so every node runs the same number of ranks")
    local_size = size // nodes
    hostnames = tuple(je.hostnames) if nodes > 1 else (je.hostname,)
    if len(hostnames) != nodes:
        raise RendezvousError(f"job has {nodes} nodes but the node list names {len(hostnames)}: {hostnames}")
    if je.global_rank != je.node * local_size + je.local_rank:
        raise RendezvousError(f"rank {je.global_rank} on node {je.node} (local {je.local_rank}) is not in block "
                              "order; submit with the default (block) task distribution")
    on_slurm = "SLURM_JOB_ID" in os.environ and os.environ.get("SUBMITIT_EXECUTOR", SLURM) == SLURM
    return World(rank=je.global_rank, size=size, local_rank=je.local_rank, local_size=local_size,
                 node=je.node, num_nodes=nodes, hostnames=hostnames, job_id=str(je.job_id),
                 jobs_alive=slurm_jobs_alive if on_slurm else None,
                 attempt=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                 step=os.environ.get("SLURM_STEP_ID", "0"), rendezvous_dir=str(rendezvous_dir))
