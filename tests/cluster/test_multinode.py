"""Two hosts for real: the dev cluster's namespaced nodes (partition `multi`), Horovod across them.

Each host's hostname resolves to an address on a second interface (mgmt0) that reaches no other
host; training must still find the bridge (eth0) by the route to rank 0."""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oasis_dcgan import config
from oasis_dcgan.launch import retry, status
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.prep import manifest

from tests.slurmkit import kill, sacct_rows, sh, top_states, wait_for_checkpoint, wait_for_ranks, wait_gone
from tests.slurmkit import submit_train
from tests.conftest import REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


N_TRAIN = 192  # dataset32's training images


EPOCHS = 8


ENV = {**os.environ, "OASIS_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="session")
def twohost(devcluster):
    subprocess.run([str(REPO / "slurm" / "devcluster"), "up", "--nodes", "2"], check=True)
    return "multi"


def node_of(pid: int) -> str:
    env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    return next(kv.split(b"=", 1)[1].decode() for kv in env if kv.startswith(b"SLURMD_NODENAME="))


def assert_trained_across_two_hosts(run: Path, ranks: int) -> None:
    notes = [json.loads((run / "ranks" / f"rank-{r}.json").read_text()) for r in range(ranks)]
    assert {n["host"] for n in notes} == {"node1", "node2"}, "ranks ran on both hosts"
    assert all(n["cross_size"] == 2 for n in notes) and {n["cross_rank"] for n in notes} == {0, 1}
    assert len({n["weights_sha256"] for n in notes}) == 1, "every rank ends with the same weights"
    log = (run / "log.txt").read_text()
    assert "network: node 0 (node1): eth0 10.77.0.11; node 1 (node2): eth0 10.77.0.12" in log, \
        "the route to rank 0 picked the bridge, not the interface the hostname names"
    every_image_once = hashlib.sha256(",".join(map(str, range(N_TRAIN))).encode()).hexdigest()
    epochs = [r for r in RunDir(run).read_stats() if r["kind"] == "epoch"]
    assert [ep["epoch"] for ep in epochs] == list(range(1, EPOCHS + 1)), "every epoch logged exactly once"
    for ep in epochs:
        assert ep["images"] == N_TRAIN and ep["images_sha256"] == every_image_once, "disjoint shards cover the epoch"


def sbatch_train(tmp_path, dataset, run, tasks_per_node, *opts):
    sets = [x for o in ("train.intra_op_threads=1", *opts) for x in ("--set", o)]
    return sh("sbatch", "--parsable", f"--chdir={tmp_path}", "--partition=multi", "--nodes=2",
              f"--ntasks-per-node={tasks_per_node}", str(REPO / "slurm/train.sbatch"), str(dataset), str(run),
              "--epochs", str(EPOCHS), "--batch-size", "8", "--checkpoint-every-steps", "5", *sets, env=ENV)


@pytest.mark.fault
def test_submitit_on_two_hosts_one_rank_each_survives_usr2(twohost, dataset32, tmp_path):
    run = tmp_path / "run"
    cfg = config.load(None, [f'run_dir="{run}"', f'data.dataset="{dataset32}"', f"train.epochs={EPOCHS}",
                             "train.batch_size=8", "train.checkpoint_every_steps=5", "train.intra_op_threads=1",
                             f'cluster.partition="{twohost}"', "cluster.nodes=2", "cluster.tasks_per_node=1",
                             "cluster.timeout_min=20"])
    job = submit_train(cfg)
    wait_for_checkpoint(run, after_step=5)
    sh("scancel", "--signal=USR2", job.job_id)
    assert len(job.results()) == 2, "submitit saw both ranks of the requeued job finish"
    wait_gone(job.job_id)
    states = top_states(job.job_id)
    assert states.count("REQUEUED") == 1 and states[-1] == "COMPLETED", states
    assert (run / "log.txt").read_text().count("(signal SIGUSR2") == 1
    notes = {n["rank"]: n for n in retry.read_notes(RunDir(run), job.job_id, 0)}
    assert notes[0]["requeued_by"] == "submitit" and notes[1]["outcome"] == "stopped", notes
    assert not retry.read_decisions(RunDir(run)), "submitit requeued the stop: the retry step did nothing more"
    assert_trained_across_two_hosts(run, 2)


@pytest.mark.fault
def test_sbatch_template_on_two_hosts_two_ranks_each_survives_scontrol_requeue(twohost, dataset32, tmp_path):
    run = tmp_path / "run"
    job = sbatch_train(tmp_path, dataset32, run, 2)
    wait_for_checkpoint(run, after_step=5)
    sh("scontrol", "requeue", job)
    wait_gone(job)
    states = top_states(job)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", (tmp_path / f"oasis-train-{job}.out").read_text()
    assert "resumed from" in (run / "log.txt").read_text()
    assert_trained_across_two_hosts(run, 4)


@pytest.mark.fault
def test_a_rank_killed_on_the_second_host_ends_the_attempt_in_time_and_requeues(twohost, dataset32, tmp_path):
    run, timeout = tmp_path / "run", 15
    job = sbatch_train(tmp_path, dataset32, run, 1, f"train.peer_timeout_s={timeout}")
    pids = wait_for_ranks(job, 2, attempt=0)
    assert node_of(pids[1]) == "node2"
    wait_for_checkpoint(run, after_step=5)
    kill([pids[1]])
    t0 = time.time()
    while not retry.read_decisions(RunDir(run)) and time.time() - t0 < 120:
        time.sleep(0.2)
    assert time.time() - t0 < timeout + 25, f"the attempt took {time.time() - t0:.0f} s to end"
    [d] = retry.read_decisions(RunDir(run))
    assert d["action"] == "requeue" and d["counted"] and "rank 1 ended without a note" in d["reason"], d
    again = wait_for_ranks(job, 2, attempt=1)
    assert sorted(map(node_of, again.values())) == ["node1", "node2"], "the requeued job runs on both hosts"
    assert re.search(rf"job {job} +attempt 0: requeue: .*rank 1 ended without a note", status.status(RunDir(run)))
    # Finishing after a requeue across hosts is the other tests' business: end it here.
    sh("scancel", job)
    wait_gone(job)


def test_preprocess_array_runs_on_both_hosts_and_the_seal_sees_every_shard(twohost, png_release, tmp_path):
    ds = tmp_path / "ds"
    # Two CPUs a task is a whole dev node, so the scheduler has to put the tasks on different hosts.
    arr = sh("sbatch", "--parsable", "--array=0-1", "--partition=multi", "--cpus-per-task=2", f"--chdir={tmp_path}",
             str(REPO / "slurm/preprocess.sbatch"), str(png_release), str(ds), "--resolution", "32",
             "--shard-size", "40", env=ENV)
    wait_gone(arr)
    end = time.time() + 120
    while not (ds / "manifest.json").exists() and time.time() < end:
        time.sleep(1)
    rows = sacct_rows(arr, "JobID,NodeList,State", count=2)
    assert sorted(r.split("|")[1] for r in rows) == ["node1", "node2"], rows
    assert manifest.verify(ds) == []
    m = manifest.load_manifest(ds)
    shards = [sh["file"] for split in m["splits"].values() for sh in split["shards"]]
    assert m["counts"]["train"] == 192 and sorted(shards) == sorted(p.name for p in ds.glob("*.h5"))
    seal = sh("sacct", "-n", "-X", "-P", "-S", "now-1hour", "--name=oasis-seal", "--format=JobID,Partition,State")
    assert f"|{twohost}|COMPLETED" in seal.splitlines()[-1], "the seal runs where the array ran"
