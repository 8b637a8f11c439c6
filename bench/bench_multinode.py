"""Two hosts: the gradient allreduce over the dev cluster's bridge, and 2-node weak scaling at 64x64.

Needs `slurm/devcluster up --nodes 2` (partition `multi`). The two hosts are network
namespaces on this one machine, so "between hosts" means through veth pairs and a Linux
bridge in the kernel: it adds the cost of a real TCP path between separate network stacks,
not the bandwidth limits of a real network. Each figure stands beside the same thing on one
host (loopback), and the training figure beside the seed's bare step, all from this run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np

from oasis_dcgan.rundir import RunDir

from bench.bench_train import _allreduce_worker, dataset, our_run
from bench.common import dev_cluster, REPO, WORK, seed_baseline, save, table

PARTITION = "multi"


def allreduce(res: int, nodes: int) -> dict:
    """The 256 model's gradient allreduce, 2 ranks: on one host (local executor) or one per host (Slurm)."""
    import submitit

    ex = submitit.AutoExecutor(folder=str(WORK / f"allreduce-jobs-{nodes}"), cluster="slurm" if nodes > 1 else "local")
    ex.update_parameters(tasks_per_node=2 // nodes, nodes=nodes, timeout_min=15)
    if nodes > 1:
        ex.update_parameters(slurm_partition=PARTITION, cpus_per_task=1)
    return ex.submit(_allreduce_worker, res, str(WORK / f"allreduce-rdv-{nodes}")).results()[0]


def two_node_run(res: int, steps: int, epochs: int) -> dict:
    """The training job on two hosts, one rank and one thread each, through the Slurm executor."""
    run = WORK / f"run-{res}-2nodes"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "jobs.train", str(dataset(res)), str(run), "--epochs", str(epochs),
           "--executor", "slurm", "--set", f"train.max_steps_per_epoch={steps}", "--set", "train.intra_op_threads=1",
           "--set", "train.tick_seconds=5", "--set", f'cluster.partition="{PARTITION}"', "--set", "cluster.nodes=2",
           "--set", "cluster.tasks_per_node=1", "--set", "cluster.timeout_min=30"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    stats = RunDir(run).read_stats()
    ep = [r for r in stats if r["kind"] == "epoch"][1:]
    hosts = sorted(json.loads(p.read_text())["host"] for p in (run / "ranks").glob("rank-*.json"))
    net = next((x for x in RunDir(run).log.read_text().splitlines() if "network:" in x), "")
    return {"images_per_s": float(np.median([r["images_per_s"] for r in ep])), "hosts": hosts,
            "network": net.split("network:", 1)[-1].strip()}


RESULT = "multinode"


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    dev_cluster(nodes=2)
    loop, bridge = allreduce(256, nodes=1), allreduce(256, nodes=2)
    seed1 = seed_baseline("train", "--res", "64", "--steps", "30", "--threads", "1")
    one = our_run(64, steps=40, epochs=3, ranks=1, threads=1)
    same_host = our_run(64, steps=40, epochs=3, ranks=2, threads=1)
    two_hosts = two_node_run(64, steps=40, epochs=3)
    result = save(RESULT, {
        "allreduce_256": {"loopback": loop, "bridge": bridge},
        "weak_scaling_64": {"seed_1thread_img_s": seed1["images_per_s"], "ranks1_img_s": one["images_per_s"],
                            "one_host_2ranks_img_s": same_host["images_per_s"], "two_hosts": two_hosts,
                            "efficiency_two_hosts": two_hosts["images_per_s"] / (2 * one["images_per_s"]),
                            "efficiency_one_host": same_host["images_per_s"] / (2 * one["images_per_s"])}})
    show(result)
    return result


def show(result: dict) -> None:
    loop, bridge = result["allreduce_256"]["loopback"], result["allreduce_256"]["bridge"]
    s = result["weak_scaling_64"]
    seed1, two_hosts = s["seed_1thread_img_s"], s["two_hosts"]
    mb = loop["gradient_bytes"] / 1e6
    print(table([(f"{name}", f"{r['fp32_s'] * 1000:.0f} ms", f"{r['fp16_s'] * 1000:.0f} ms",
                  f"{r['fp32_s'] / loop['fp32_s']:.2f}x")
                 for name, r in (("one host, loopback", loop), ("two hosts, over the bridge", bridge))],
                (f"allreduce of {mb:.1f} MB (256 model), 2 ranks", "fp32", "fp16 on the wire", "vs loopback")))
    print()
    print(table([("seed's bare step, 1 thread", f"{seed1:.1f}", "", ""),
                 ("1 rank, 1 thread", f"{s['ranks1_img_s']:.1f}", f"{s['ranks1_img_s'] / seed1:.2f}x", "100%"),
                 ("2 ranks on one host", f"{s['one_host_2ranks_img_s']:.1f}",
                  f"{s['one_host_2ranks_img_s'] / seed1:.2f}x", f"{s['efficiency_one_host'] * 100:.0f}%"),
                 ("2 hosts, 1 rank each", f"{two_hosts['images_per_s']:.1f}",
                  f"{two_hosts['images_per_s'] / seed1:.2f}x", f"{s['efficiency_two_hosts'] * 100:.0f}%")],
                ("64x64 weak scaling, 1 thread a rank", "img/s", "vs seed step", "efficiency")))
    print(f"\nhosts: {', '.join(two_hosts['hosts'])}; {two_hosts['network']}")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
