"""Rendezvous: unit tests of the environment mapping, then real 2-rank Horovod over gloo."""

import json


def _allreduce_and_broadcast(rdv_dir):
    import tensorflow as tf

    from oasis_dcgan.launch.environment import job_world
    from oasis_dcgan.training import distributed as d

    ranks = d.init(job_world(rdv_dir), timeout_s=60)
    mean = ranks.allreduce_mean([tf.constant([float(ranks.rank), 10.0 * ranks.rank])])[0].numpy().tolist()
    v = tf.Variable([float(ranks.rank + 1)] * 3)
    ranks.broadcast_variables([v], prefix="t")
    return {"rank": ranks.rank, "size": ranks.size, "mean": mean, "bcast": v.numpy().tolist(),
            "seed": ranks.broadcast(7 + ranks.rank, "t.int")}


def test_two_real_ranks_through_submitit_local_executor(tmp_path):
    import submitit

    ex = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="local")
    ex.update_parameters(tasks_per_node=2, nodes=1, timeout_min=5)
    job = ex.submit(_allreduce_and_broadcast, str(tmp_path / "rdv"))
    res = sorted(job.results(), key=lambda r: r["rank"])
    assert [r["rank"] for r in res] == [0, 1] and all(r["size"] == 2 for r in res)
    assert all(r["mean"] == [0.5, 5.0] for r in res)
    assert all(r["bcast"] == [1.0, 1.0, 1.0] and r["seed"] == 7 for r in res)  # rank 0's values everywhere
    published = list((tmp_path / "rdv").glob("rendezvous-*.json"))
    assert len(published) == 1 and json.loads(published[0].read_text())["size"] == 2


def test_a_world_of_one_trains_without_horovods_runtime():
    """One rank: collectives are the identity, and Horovod's polling thread never starts (a fresh
    process, so no earlier test's hvd.init() can hide it)."""
    import subprocess
    import sys

    code = ("import tensorflow as tf, horovod.tensorflow as hvd, json\n"
            "from oasis_dcgan.training import distributed\n"
            "one = distributed.init(distributed.World(local_rank=0))\n"
            "x = tf.constant([1.0, 2.0])\n"
            "v = tf.Variable(x)\n"
            "one.broadcast_variables([v], prefix='p')\n"
            "one.barrier('b')\n"
            "same = [one.allreduce_mean([x])[0] is x, one.broadcast(5, 'i') == 5, v.numpy().tolist() == [1.0, 2.0]]\n"
            "print(json.dumps({'same': same, 'size': one.size, 'rank': one.rank,\n"
            "                  'horovod_started': bool(hvd.is_initialized()),\n"
            "                  'nccl': one.nccl_built() == bool(hvd.nccl_built())}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {"same": [True, True, True], "size": 1, "rank": 0, "horovod_started": False, "nccl": True}
