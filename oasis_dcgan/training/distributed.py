"""Horovod ranks without horovodrun: a World from the launch layer becomes a gloo rendezvous.

This is the only module that imports Horovod. The launch layer reads the job environment
and hands over a `World` (rank, size, local rank, nodes, hostnames, job step, rendezvous
directory). Rank 0 runs Horovod's rendezvous server; through files in the rendezvous
directory the ranks agree which of rank 0's addresses the other nodes reach and which
interface each node uses; then all of them call `hvd.init()` with the gloo controller.
A world of one runs without Horovod's runtime (OneRank). `init` returns the collectives the step
and the Trainer use (`allreduce_mean`, `barrier`, `broadcast`, `rank`, `size`), for one rank or
Horovod's. TensorFlow and Horovod are imported where they are used: the launch layer imports
`World` from here and must not pay for them.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import typing
from dataclasses import dataclass
from pathlib import Path

from .. import fsutil
from ..errors import RendezvousError

log = logging.getLogger(__name__)

NO_JOB = "none"  # the job id of a process that no scheduler started



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
    job_id: str = NO_JOB
    attempt: int = 0            # how often the scheduler restarted the job: each gets a fresh rendezvous
    step: str = "0"             # the Slurm job step: a second srun step in one job gets its own rendezvous
    rendezvous_dir: str = ""    # shared by all nodes; rank 0 publishes its address here
    # The scheduler's word on whether jobs live ([job ids] -> True, False, or None: no answer);
    # None outside a scheduler. A lock naming a live job is never taken over, whatever its age.
    jobs_alive: typing.Callable[[list], bool | None] | None = None

    @property
    def hostname(self) -> str:
        return self.hostnames[self.node]

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def horovod_env(world: World, addr: str, port: int, link: tuple, timeout_s: int) -> dict:
    """The variables Horovod's gloo controller reads in hvd.init(); link is this node's (interface, address)."""
    return {
        "HOROVOD_RANK": str(world.rank),
        "HOROVOD_SIZE": str(world.size),
        "HOROVOD_LOCAL_RANK": str(world.local_rank),
        "HOROVOD_LOCAL_SIZE": str(world.local_size),
        "HOROVOD_CROSS_RANK": str(world.node),
        "HOROVOD_CROSS_SIZE": str(world.num_nodes),
        # The same string for every rank of a node (gloo groups local ranks by it), and the
        # node's name in rank 0's rendezvous plan: its link's address.
        "HOROVOD_HOSTNAME": link[1],
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_IFACE": link[0],
        # A rank that stops answering ends the job within timeout_s: gloo gives up on the
        # collective, and Horovod's stall inspector shuts down if a rank never submits.
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(timeout_s),
        "HOROVOD_STALL_CHECK_TIME_SECONDS": str(max(1, min(60, timeout_s // 2))),
        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": str(timeout_s),
    }


def rendezvous_file(directory: str | os.PathLike, world: World, part: str = "") -> Path:
    """Where the ranks of one job step and attempt exchange addresses (a requeue or a second srun
    step gets fresh files). Without `part`, rank 0's final word: the address to reach it at."""
    key = f"{world.job_id}-{world.step}-{world.attempt}"
    return Path(directory) / (f"rendezvous-{key}.{part}.json" if part else f"rendezvous-{key}.json")


# --- which network connects the nodes -----------------------------------------------------------
# The hostname often names the management network, which may not reach the other nodes (or is
# slow). Rank 0 publishes every address it has; the first rank of each other node connects to
# rank 0's rendezvous server at each in turn and keeps the first that answers; its interface is
# the one the kernel routes that address through. Rank 0 then takes the interface holding the
# address the nodes reached. HOROVOD_GLOO_IFACE, when set, decides on every rank instead.

def _ipv4_interfaces() -> list[tuple[str, str]]:
    """(interface, address) for every interface that is up, loopback left out."""
    import psutil  # a Horovod dependency

    up = {name for name, st in psutil.net_if_stats().items() if st.isup}
    return [(name, a.address) for name, addrs in psutil.net_if_addrs().items() if name in up
            for a in addrs if a.family == socket.AF_INET and not a.address.startswith("127.")]


def _forced_interface() -> tuple[str, str] | None:
    iface = os.environ.get("HOROVOD_GLOO_IFACE", "")
    if not iface:
        return None
    mine = [c for c in _ipv4_interfaces() if c[0] == iface]
    if not mine:
        names = ", ".join(sorted({n for n, _ in _ipv4_interfaces()}))
        raise RendezvousError(f"HOROVOD_GLOO_IFACE={iface}: no such interface with an IPv4 address on "
                              f"{socket.gethostname()}; it has: {names}")
    return mine[0]


def route_to(addr: str) -> tuple[str, str]:
    """The local (interface, address) the kernel uses to reach addr."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((addr, 9))  # a UDP connect sends nothing: it only picks the route
        local = s.getsockname()[0]
    return next(((n, a) for n, a in _ipv4_interfaces() if a == local), ("lo", local))


def first_reachable(candidates: list, port: int, timeout_s: float = 2.0) -> str | None:
    for _iface, addr in candidates:
        try:
            with socket.create_connection((addr, port), timeout=timeout_s):
                return addr
        except OSError:
            continue
    return None


def _wait_json(path: Path, what: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RendezvousError(f"{what} did not publish {path} within {timeout_s:.0f} s. Is it running, "
                                  "and is that directory on storage all nodes share?")
        time.sleep(0.2)
    return fsutil.read_json(path)


def _chief(world: World, timeout_s: float):
    """Rank 0: serve the rendezvous, learn every node's link, publish them with the address to use."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.http.http_server import RendezvousServer

    final = rendezvous_file(world.rendezvous_dir, world)
    for stale in final.parent.glob("rendezvous-*.json"):
        stale.unlink(missing_ok=True)
    server = RendezvousServer(verbose=0)
    port = server.start()  # listens on every interface: the other nodes probe it
    info = {"port": port, "size": world.size, "job_id": world.job_id, "step": world.step,
            "attempt": world.attempt, "hosts": list(world.hostnames), "time": time.time()}
    links = _chief_links(world, info, timeout_s)
    # Nodes are named by their link's address, not their hostname: Horovod resolves the name
    # again for some of its connections, and a hostname may resolve to another network.
    plan = parse_hosts(",".join(f"{addr}:{world.local_size}" for _iface, addr in links))
    server.init(get_host_assignments(plan, world.size, world.size))
    fsutil.write_json(final, {**info, "addr": links[0][1], "links": links})
    return server


def _chief_links(world: World, info: dict, timeout_s: float) -> list:
    if world.num_nodes == 1:
        return [("lo", "127.0.0.1")]
    fsutil.write_json(rendezvous_file(world.rendezvous_dir, world, "candidates"),
                      {**info, "candidates": _ipv4_interfaces()})
    nodes = [_wait_json(rendezvous_file(world.rendezvous_dir, world, f"node-{k}"),
                        f"the first rank on node {k} ({world.hostnames[k]})", timeout_s)
             for k in range(1, world.num_nodes)]
    mine = _forced_interface()
    if mine is None:
        reached = nodes[0]["reached"]  # node 1's choice, should the nodes disagree
        mine = next((c for c in _ipv4_interfaces() if c[1] == reached), None)
        if mine is None:
            raise RendezvousError(f"node 1 reached rank 0 at {reached}, which {world.hostnames[0]} does not have")
    return [tuple(mine)] + [tuple(n["link"]) for n in nodes]


def _node_leader(world: World, timeout_s: float) -> None:
    """The first rank of another node: find the route to rank 0 and say which interface it takes."""
    cand = _wait_json(rendezvous_file(world.rendezvous_dir, world, "candidates"), "rank 0", timeout_s)
    link, reached = _forced_interface(), None
    if link is None:
        reached = first_reachable(cand["candidates"], cand["port"])
        if reached is None:
            tried = ", ".join(f"{a} ({n})" for n, a in cand["candidates"])
            raise RendezvousError(f"{world.hostname} reaches none of rank 0's addresses on {world.hostnames[0]}: "
                                  f"{tried}. Set HOROVOD_GLOO_IFACE to the interface that connects the nodes.")
        link = route_to(reached)
    fsutil.write_json(rendezvous_file(world.rendezvous_dir, world, f"node-{world.node}"),
                      {"reached": reached, "link": list(link), "host": world.hostname})


def _address_and_link(world: World, timeout_s: float) -> tuple:
    """(rank 0's rendezvous address and port, every node's (interface, address), rank 0's server)."""
    server = _chief(world, timeout_s) if world.is_chief else None
    if not world.is_chief and world.local_rank == 0 and world.num_nodes > 1:
        _node_leader(world, timeout_s)
    path = rendezvous_file(world.rendezvous_dir, world)
    info = _wait_json(path, "rank 0", timeout_s)
    if info.get("size") != world.size:
        raise RendezvousError(f"{path}: written for {info.get('size')} ranks, this job has {world.size}")
    return info["addr"], int(info["port"]), [tuple(x) for x in info["links"]], server


def describe_links(world: World, links: list) -> str:
    return "; ".join(f"node {k} ({world.hostnames[k]}): {iface} {addr}" for k, (iface, addr) in enumerate(links))


class OneRank:
    """The collectives of a world of one rank: each is the identity, so Horovod's runtime, whose
    background thread would poll for work on the step's cores, is never started
    (bench/results/overhead.json measures what it costs)."""
    rank, size, cross_rank, cross_size = 0, 1, 0, 1

    def __init__(self, local_rank: int = 0):
        self.local_rank = local_rank

    def allreduce_mean(self, tensors, half: int = 0) -> list:
        return list(tensors)

    def barrier(self, name: str) -> None:
        pass

    def broadcast(self, value: int, name: str) -> int:
        return value

    def broadcast_variables(self, variables, prefix: str) -> None:
        pass

    def nccl_built(self) -> bool:
        import horovod.tensorflow as hvd

        return bool(hvd.nccl_built())


class HorovodRanks:
    """The collectives of a world of several ranks, over Horovod (gloo on CPUs, NCCL on GPUs when built).

    With Keras 3 variables, hvd.DistributedGradientTape and hvd.broadcast_variables fail; a
    grouped allreduce of plain tensors and one named broadcast per variable work.
    """

    def __init__(self, hvd, server=None):
        self._hvd = hvd
        self._server = server  # rank 0's rendezvous server: alive while the ranks run
        self.rank, self.size = hvd.rank(), hvd.size()
        self.local_rank, self.cross_rank, self.cross_size = hvd.local_rank(), hvd.cross_rank(), hvd.cross_size()

    def allreduce_mean(self, tensors, half: int = 0) -> list:
        """The mean over ranks of every tensor, in one grouped call: one negotiation cycle, one
        fused buffer. The first `half` tensors travel as fp16 (half the bytes) and come back in
        their own dtype; Horovod's grouped op takes one dtype, so the rest go in a second group,
        enqueued with the first so that both are usually negotiated in the same cycle."""
        import tensorflow as tf

        tensors = list(tensors)
        if not half:
            return self._hvd.grouped_allreduce(tensors, op=self._hvd.Average)
        dtypes = [t.dtype for t in tensors[:half]]
        sent = [tf.cast(t, tf.float16) for t in tensors[:half]]
        with tf.control_dependencies(sent):  # the rest is ready long before the gradients: wait for them
            rest = [tf.identity(t) for t in tensors[half:]]
        out = self._hvd.grouped_allreduce(sent, op=self._hvd.Average)
        return ([tf.cast(t, d) for t, d in zip(out, dtypes)]
                + list(self._hvd.grouped_allreduce(rest, op=self._hvd.Average)))

    def barrier(self, name: str) -> None:
        """Return once every rank got here."""
        import tensorflow as tf

        self._hvd.allreduce(tf.constant(0.0), name=name).numpy()

    def broadcast(self, value: int, name: str) -> int:
        """Rank 0's integer, on every rank."""
        import tensorflow as tf

        return int(self._hvd.broadcast(tf.constant(value, tf.int64), root_rank=0, name=name).numpy())

    def broadcast_variables(self, variables, prefix: str) -> None:
        """Overwrite every variable with rank 0's value, one named broadcast per variable."""
        import tensorflow as tf

        for i, v in enumerate(variables):
            v.assign(self._hvd.broadcast(tf.convert_to_tensor(v), root_rank=0, name=f"{prefix}.{i}"))

    def nccl_built(self) -> bool:
        return bool(self._hvd.nccl_built())


def init(world: World, timeout_s: float = 300.0, rendezvous_timeout_s: float | None = None) -> OneRank | HorovodRanks:
    """Join (or, on rank 0, create) the job's Horovod world.

    timeout_s bounds every collective (a peer that stops answering ends the job). Waiting
    for rank 0's address allows at least five minutes unless told otherwise: rank 0 may be
    slow to start (a cold file system, the lock of a previous attempt). Rank 0 logs which
    interface and address each node uses. Returns the world's collectives.
    """
    if world.size == 1:
        return OneRank(world.local_rank)
    import horovod.tensorflow as hvd

    if not world.rendezvous_dir:
        raise RendezvousError(f"a world of {world.size} ranks needs a rendezvous directory on shared storage")
    Path(world.rendezvous_dir).mkdir(parents=True, exist_ok=True)
    addr, port, links, server = _address_and_link(world, rendezvous_timeout_s or max(timeout_s, 300.0))
    os.environ.update(horovod_env(world, addr, port, links[world.node], int(timeout_s)))
    hvd.init()
    if hvd.size() != world.size or hvd.rank() != world.rank:
        raise RendezvousError(f"Horovod reports rank {hvd.rank()}/{hvd.size()}, the job says "
                              f"{world.rank}/{world.size}")
    if world.is_chief:
        log.info(f"network: {describe_links(world, links)}; rendezvous at {addr}:{port}")
    return HorovodRanks(hvd, server)


def check_gpu_build(ranks: OneRank | HorovodRanks, n_gpus: int) -> bool:
    """Warn when this rank has GPUs but Horovod cannot reduce on them. True when all is well.

    A gloo-only Horovod still trains on GPUs, but every step's gradients (111 MB at 256)
    go to host memory and back, which costs more than the step itself on a fast GPU.
    """
    if not n_gpus or ranks.nccl_built():
        return True
    log.warning(f"{n_gpus} GPU(s) visible, but Horovod was built without NCCL: gradients will cross host memory "
                "through gloo. On GPU nodes run `make setup-gpu` (HOROVOD_GPU_OPERATIONS=NCCL, TensorFlow with CUDA)")
    return False
