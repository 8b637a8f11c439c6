"""What the scheduler tells a process: its place in the job.

With executors.py (which answers whose job this is), the only code that reads SLURM_* and
SUBMITIT_* variables. Every rank derives its numbers through `submitit.JobEnvironment` (SLURM_*
under Slurm, SUBMITIT_LOCAL_* under submitit's local executor), and hands training a plain `World`.
"""
from __future__ import annotations

import os

from ..training.distributed import RendezvousError, World
from . import executors


def under_submitit() -> bool:
    """Started by submitit, which owns USR2 (it calls the job's checkpoint() on rank 0)."""
    return "SUBMITIT_EXECUTOR" in os.environ


def in_srun_step() -> bool:
    """A task of a Slurm job step: with plain sbatch + srun, the ranks are the job already."""
    return "SLURM_STEP_ID" in os.environ and "SLURM_PROCID" in os.environ


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
    scheduler = executors.running_here()
    return World(rank=je.global_rank, size=size, local_rank=je.local_rank, local_size=local_size,
                 node=je.node, num_nodes=nodes, hostnames=hostnames, job_id=str(je.job_id),
                 jobs_alive=scheduler.jobs_alive if scheduler else None,
                 attempt=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                 step=os.environ.get("SLURM_STEP_ID", "0"), rendezvous_dir=str(rendezvous_dir))
