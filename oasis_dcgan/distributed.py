"""Horovod ranks without horovodrun: the job environment becomes a gloo rendezvous.

This is the only module that imports Horovod. Every rank derives its numbers from
`submitit.JobEnvironment` (SLURM_* under Slurm, SUBMITIT_LOCAL_* under the local executor),
rank 0 runs Horovod's rendezvous server and publishes `addr:port` in a shared directory,
the others wait for that file, and all of them call `hvd.init()` with the gloo controller.
With no job around (a plain `python -m jobs.train`), it is a world of one.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import fsutil


class RendezvousError(RuntimeError):
    pass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    node: int = 0
    num_nodes: int = 1
    hostnames: tuple = ("localhost",)
    job_id: str = "local"
    attempt: int = 0  # Slurm's restart count: a requeued job gets a fresh rendezvous

    @property
    def hostname(self) -> str:
        return self.hostnames[self.node]

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def job_world() -> World:
    """Read this process's place in the job, through submitit's view of the scheduler."""
    env = os.environ
    if "SUBMITIT_EXECUTOR" in env:
        import submitit

        je = submitit.JobEnvironment()
    elif "SLURM_PROCID" in env and "SLURM_JOB_ID" in env and "SLURM_STEP_ID" in env:
        # Started by plain `srun python -m jobs.train` (slurm/train.sbatch): the same variables
        # submitit reads under Slurm, so its Slurm environment parses them (node lists included).
        from submitit.slurm.slurm import SlurmJobEnvironment

        je = SlurmJobEnvironment()
    else:
        return World()
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
    return World(rank=je.global_rank, size=size, local_rank=je.local_rank, local_size=local_size,
                  node=je.node, num_nodes=nodes, hostnames=hostnames, job_id=str(je.job_id),
                  attempt=int(env.get("SLURM_RESTART_COUNT", "0") or 0))


def horovod_env(world: World, addr: str, port: int, iface: str, timeout_s: int) -> dict:
    """The variables Horovod's gloo controller reads in hvd.init()."""
    return {
        "HOROVOD_RANK": str(world.rank),
        "HOROVOD_SIZE": str(world.size),
        "HOROVOD_LOCAL_RANK": str(world.local_rank),
        "HOROVOD_LOCAL_SIZE": str(world.local_size),
        "HOROVOD_CROSS_RANK": str(world.node),
        "HOROVOD_CROSS_SIZE": str(world.num_nodes),
        # Must be the same string for every rank of a node: gloo groups local ranks by it.
        "HOROVOD_HOSTNAME": world.hostname,
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_IFACE": iface,
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(timeout_s),
    }


def rendezvous_file(directory: str | os.PathLike, world: World) -> Path:
    return Path(directory) / f"rendezvous-{world.job_id}-{world.attempt}.json"


def _iface_and_addr(world: World) -> tuple[str, str]:
    """Pick the network interface gloo binds to, and the address others reach rank 0 at."""
    if world.num_nodes == 1:
        return "lo", "127.0.0.1"
    iface = os.environ.get("HOROVOD_GLOO_IFACE", "")
    import psutil  # a Horovod dependency

    addrs = {name: [a.address for a in lst if a.family == socket.AF_INET]
             for name, lst in psutil.net_if_addrs().items()}
    if not iface:
        try:
            mine = socket.gethostbyname(socket.gethostname())
        except OSError:
            mine = ""
        iface = next((n for n, ips in addrs.items() if mine in ips and not mine.startswith("127.")), "")
    if not iface or not addrs.get(iface):
        raise RendezvousError("cannot tell which network interface connects the nodes; set HOROVOD_GLOO_IFACE "
                              f"(e.g. ib0 or eth0). Interfaces here: {', '.join(sorted(addrs))}")
    return iface, addrs[iface][0]


def _start_server(world: World):
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.http.http_server import RendezvousServer

    server = RendezvousServer(verbose=0)
    port = server.start()
    hosts = parse_hosts(",".join(f"{h}:{world.local_size}" for h in world.hostnames))
    server.init(get_host_assignments(hosts, world.size, world.size))
    return server, port


_server = None  # keeps rank 0's rendezvous server alive for the process's lifetime


def init(rendezvous_dir: str | os.PathLike, timeout_s: float = 300.0, world: World | None = None):
    """Join (or, on rank 0, create) the job's Horovod world. Returns the `horovod.tensorflow` module."""
    global _server
    import horovod.tensorflow as hvd

    world = world or job_world()
    if world.size == 1:
        hvd.init()
        return hvd
    Path(rendezvous_dir).mkdir(parents=True, exist_ok=True)
    path = rendezvous_file(rendezvous_dir, world)
    iface, my_addr = _iface_and_addr(world)
    if world.is_chief:
        for stale in Path(rendezvous_dir).glob("rendezvous-*.json"):
            if stale != path:
                stale.unlink(missing_ok=True)
        _server, port = _start_server(world)
        fsutil.write_json(path, {"addr": my_addr, "port": port, "job_id": world.job_id, "attempt": world.attempt,
                                 "size": world.size, "hosts": list(world.hostnames), "time": time.time()})
        addr = my_addr
    else:
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if time.monotonic() > deadline:
                raise RendezvousError(f"rank {world.rank}: rank 0 did not publish {path} within {timeout_s:.0f} s. "
                                      "Is rank 0 running, and is that directory on storage all nodes share?")
            time.sleep(0.2)
        info = fsutil.read_json(path)
        if info.get("size") != world.size:
            raise RendezvousError(f"{path}: written for {info.get('size')} ranks, this job has {world.size}")
        addr, port = info["addr"], int(info["port"])
    os.environ.update(horovod_env(world, addr, port, iface, int(timeout_s)))
    hvd.init()
    if hvd.size() != world.size or hvd.rank() != world.rank:
        raise RendezvousError(f"Horovod reports rank {hvd.rank()}/{hvd.size()}, the job says "
                              f"{world.rank}/{world.size}")
    return hvd


def describe(world: World) -> dict:
    return asdict(world)


# --- collectives used by training (Keras 3 safe: see ../shared/STACK.md) ---------------------

def allreduce_mean(hvd, tensors, fp16: bool = False):
    """Average a list of tensors across ranks in one grouped call (one fused allreduce)."""
    import tensorflow as tf

    if hvd.size() == 1:
        return list(tensors)
    if fp16:
        dtypes = [t.dtype for t in tensors]
        out = hvd.grouped_allreduce([tf.cast(t, tf.float16) for t in tensors], op=hvd.Average)
        return [tf.cast(t, d) for t, d in zip(out, dtypes)]
    return hvd.grouped_allreduce(list(tensors), op=hvd.Average)


def broadcast_variables(hvd, variables, prefix: str) -> None:
    """Overwrite every variable with rank 0's value, one named broadcast per variable."""
    import tensorflow as tf

    if hvd.size() == 1:
        return
    for i, v in enumerate(variables):
        v.assign(hvd.broadcast(tf.convert_to_tensor(v), root_rank=0, name=f"{prefix}.{i}"))


def allgather_object(hvd, obj):
    if hvd.size() == 1:
        return [obj]
    return hvd.allgather_object(obj)
