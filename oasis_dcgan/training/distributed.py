"""Horovod ranks without horovodrun: a World from the launch layer becomes a gloo rendezvous.

This is the only module that imports Horovod. The launch layer reads the job environment
and hands over a `World` (rank, size, local rank, nodes, hostnames, rendezvous directory).
Rank 0 runs Horovod's rendezvous server and publishes `addr:port` in the rendezvous
directory; the others wait for that file; all of them call `hvd.init()` with the gloo
controller. A world of one is a plain `hvd.init()`.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .. import fsutil


class RendezvousError(RuntimeError):
    pass


@dataclass(frozen=True)
class World:
    """This process's place in the job, as the launch layer read it from the scheduler."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    node: int = 0
    num_nodes: int = 1
    hostnames: tuple = ("localhost",)
    job_id: str = "local"
    attempt: int = 0            # how often the scheduler restarted the job: each gets a fresh rendezvous
    rendezvous_dir: str = ""    # shared by all nodes; rank 0 publishes its address here

    @property
    def hostname(self) -> str:
        return self.hostnames[self.node]

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


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
        # A rank that stops answering ends the job within timeout_s: gloo gives up on the
        # collective, and Horovod's stall inspector shuts down if a rank never submits.
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(timeout_s),
        "HOROVOD_STALL_CHECK_TIME_SECONDS": str(max(1, min(60, timeout_s // 2))),
        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": str(timeout_s),
    }


def rendezvous_file(directory: str | os.PathLike, world: World) -> Path:
    """Where rank 0 publishes its address: one file per job and attempt."""
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


def _publish(world: World, path: Path, addr: str):
    """Rank 0: start the rendezvous server and write its address where the others look."""
    for stale in path.parent.glob("rendezvous-*.json"):
        if stale != path:
            stale.unlink(missing_ok=True)
    server, port = _start_server(world)
    fsutil.write_json(path, {"addr": addr, "port": port, "job_id": world.job_id, "attempt": world.attempt,
                             "size": world.size, "hosts": list(world.hostnames), "time": time.time()})
    return server, port


def _wait_for_address(world: World, path: Path, timeout_s: float) -> tuple[str, int]:
    """Any other rank: wait for rank 0's file, and check it was written for a world of this size."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RendezvousError(f"rank {world.rank}: rank 0 did not publish {path} within {timeout_s:.0f} s. "
                                  "Is rank 0 running, and is that directory on storage all nodes share?")
        time.sleep(0.2)
    info = fsutil.read_json(path)
    if info.get("size") != world.size:
        raise RendezvousError(f"{path}: written for {info.get('size')} ranks, this job has {world.size}")
    return info["addr"], int(info["port"])


def init(world: World, timeout_s: float = 300.0, rendezvous_timeout_s: float | None = None):
    """Join (or, on rank 0, create) the job's Horovod world.

    timeout_s bounds every collective (a peer that stops answering ends the job). Waiting
    for rank 0's address allows at least five minutes unless told otherwise: rank 0 may be
    slow to start (a cold file system, the lock of a previous attempt).
    Returns (the `horovod.tensorflow` module, rank 0's rendezvous server or None); the caller
    keeps the server referenced for as long as the ranks may need it.
    """
    import horovod.tensorflow as hvd

    if world.size == 1:
        hvd.init()
        return hvd, None
    if not world.rendezvous_dir:
        raise RendezvousError(f"a world of {world.size} ranks needs a rendezvous directory on shared storage")
    path = rendezvous_file(world.rendezvous_dir, world)
    path.parent.mkdir(parents=True, exist_ok=True)
    iface, my_addr = _iface_and_addr(world)
    server = None
    if world.is_chief:
        server, port = _publish(world, path, my_addr)
        addr = my_addr
    else:
        addr, port = _wait_for_address(world, path, rendezvous_timeout_s or max(timeout_s, 300.0))
    os.environ.update(horovod_env(world, addr, port, iface, int(timeout_s)))
    hvd.init()
    if hvd.size() != world.size or hvd.rank() != world.rank:
        raise RendezvousError(f"Horovod reports rank {hvd.rank()}/{hvd.size()}, the job says "
                              f"{world.rank}/{world.size}")
    return hvd, server


# --- collectives used by training --------------------------------------------------------------
# With Keras 3 variables, hvd.DistributedGradientTape and hvd.broadcast_variables fail; a
# grouped allreduce of plain tensors and one named broadcast per variable work.

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


def barrier(hvd, name: str) -> None:
    """Return once every rank got here."""
    import tensorflow as tf

    if hvd.size() > 1:
        hvd.allreduce(tf.constant(0.0), name=name).numpy()


def broadcast_flag(hvd, flag: bool) -> bool:
    """Rank 0's flag, on every rank."""
    import tensorflow as tf

    if hvd.size() == 1:
        return flag
    return bool(hvd.broadcast(tf.constant(int(flag)), root_rank=0, name="bcast.flag").numpy())


def broadcast_variables(hvd, variables, prefix: str) -> None:
    """Overwrite every variable with rank 0's value, one named broadcast per variable."""
    import tensorflow as tf

    if hvd.size() == 1:
        return
    for i, v in enumerate(variables):
        v.assign(hvd.broadcast(tf.convert_to_tensor(v), root_rank=0, name=f"{prefix}.{i}"))

