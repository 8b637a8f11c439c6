"""Rendezvous: unit tests of the environment mapping, then real 2-rank Horovod over gloo."""

import pytest

from oasis_dcgan.launch import environment
from oasis_dcgan.training import distributed
from oasis_dcgan.training.distributed import RendezvousError, World

from tests.conftest import log_lines


def slurm_env(procid, nodeid, localid, ntasks=4, nodes=2, nodelist="gpu[07-08]", restart=None):
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": str(procid), "SLURM_NODEID": str(nodeid),
           "SLURM_LOCALID": str(localid), "SLURM_NTASKS": str(ntasks), "SLURM_JOB_NUM_NODES": str(nodes),
           "SLURM_JOB_NODELIST": nodelist, "SLURMD_NODENAME": f"gpu0{7 + nodeid}"}
    if restart is not None:
        env["SLURM_RESTART_COUNT"] = str(restart)
    return env


def test_world_from_slurm_variables(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith(("SLURM", "SUBMITIT")):
            monkeypatch.delenv(k)
    env = slurm_env(procid=3, nodeid=1, localid=1, restart=2)
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    w = environment.job_world()
    assert (w.rank, w.size, w.local_rank, w.local_size, w.node, w.num_nodes) == (3, 4, 1, 2, 1, 2)
    assert w.hostnames == ("gpu07", "gpu08") and w.hostname == "gpu08"
    assert (w.job_id, w.attempt) == ("4242", 2)


def test_world_from_local_executor_variables(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith(("SLURM", "SUBMITIT")):
            monkeypatch.delenv(k)
    for k, v in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "777", "SUBMITIT_LOCAL_NTASKS": "2",
                 "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0",
                 "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1"}.items():
        monkeypatch.setenv(k, v)
    w = environment.job_world()
    assert (w.rank, w.size, w.local_rank, w.local_size, w.num_nodes, w.job_id) == (1, 2, 1, 2, 1, "777")


def test_no_job_is_a_world_of_one(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith(("SLURM", "SUBMITIT")):
            monkeypatch.delenv(k)
    w = environment.job_world()
    assert (w.rank, w.size) == (0, 1)


def test_uneven_tasks_are_refused(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith(("SLURM", "SUBMITIT")):
            monkeypatch.delenv(k)
    for k, v in slurm_env(procid=0, nodeid=0, localid=0, ntasks=3, nodes=2).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RendezvousError, match="evenly"):
        environment.job_world()


def test_horovod_env_mapping():
    w = World(rank=3, size=4, local_rank=1, local_size=2, node=1, num_nodes=2, hostnames=("a", "b"),
              job_id="9", attempt=1)
    env = distributed.horovod_env(w, "10.0.0.1", 5555, ("ib0", "10.0.0.2"), 120)
    assert env["HOROVOD_RANK"] == "3" and env["HOROVOD_SIZE"] == "4"
    assert env["HOROVOD_LOCAL_RANK"] == "1" and env["HOROVOD_LOCAL_SIZE"] == "2"
    assert env["HOROVOD_CROSS_RANK"] == "1" and env["HOROVOD_CROSS_SIZE"] == "2"
    assert env["HOROVOD_HOSTNAME"] == "10.0.0.2", "a node is named by its link's address, not its hostname"
    assert env["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "10.0.0.1" and env["HOROVOD_GLOO_RENDEZVOUS_PORT"] == "5555"
    assert env["HOROVOD_CONTROLLER"] == env["HOROVOD_CPU_OPERATIONS"] == "gloo"
    assert env["HOROVOD_GLOO_IFACE"] == "ib0" and env["HOROVOD_GLOO_TIMEOUT_SECONDS"] == "120"
    assert env["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] == "120" and env["HOROVOD_STALL_CHECK_TIME_SECONDS"] == "60"


class _FakeHorovod:
    def __init__(self, nccl: bool):
        self.nccl = nccl

    def nccl_built(self):
        return self.nccl


@pytest.mark.parametrize("gpus,nccl,warned", [(0, False, False), (2, True, False), (2, False, True)])
def test_gpus_without_an_nccl_horovod_are_warned_about_with_the_fix(gpus, nccl, warned):
    with log_lines() as lines:
        ok = distributed.check_gpu_build(_FakeHorovod(nccl), gpus)
    assert ok is not warned and len(lines) == int(warned)
    if warned:
        assert "without NCCL" in lines[0] and "make setup-gpu" in lines[0]


def test_requeued_attempt_gets_its_own_rendezvous_file(tmp_path):
    a = distributed.rendezvous_file(tmp_path, World(job_id="5", attempt=0))
    b = distributed.rendezvous_file(tmp_path, World(job_id="5", attempt=1))
    assert a != b


def test_a_second_job_step_gets_its_own_rendezvous_file(tmp_path):
    a = distributed.rendezvous_file(tmp_path, World(job_id="5", step="0"))
    assert a != distributed.rendezvous_file(tmp_path, World(job_id="5", step="1"))
    assert distributed.rendezvous_file(tmp_path, World(job_id="5"), "node-1").name == "rendezvous-5-0-0.node-1.json"


def test_rank_0_is_reached_at_the_first_address_that_answers_and_the_route_names_the_interface():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # 127.0.0.2 is loopback too, but nothing listens there on that port: refused at once.
        cands = [("mgmt0", "127.0.0.2"), ("eth0", "127.0.0.1")]
        assert distributed.first_reachable(cands, port) == "127.0.0.1"
        assert distributed.first_reachable(cands[:1], port) is None
    assert distributed.route_to("127.0.0.1") == ("lo", "127.0.0.1")


def test_an_unknown_gloo_interface_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("HOROVOD_GLOO_IFACE", "ib7")
    with pytest.raises(RendezvousError, match="HOROVOD_GLOO_IFACE=ib7: no such interface"):
        distributed._forced_interface()


def test_waiting_rank_times_out_with_a_clear_error(tmp_path):
    w = World(rank=1, size=2, local_rank=1, local_size=2, job_id="x", rendezvous_dir=str(tmp_path))
    with pytest.raises(RendezvousError, match="did not publish"):
        distributed.init(w, rendezvous_timeout_s=1.0)
