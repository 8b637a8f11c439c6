"""Training: our job's images/s against the seed's step, weak scaling, and the allreduce's cost.

Ours is the real job (the Trainer: reader, Horovod step, stats, per-epoch samples, TensorBoard,
checkpoints at the default cadence), timed from its own stats.jsonl over the whole run; the
seed's is its bare compiled step on random tensors. Same machine, same run, same resolution and batch.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from oasis_dcgan.rundir import RunDir

from bench.common import REPO, WORK, seed_baseline, epoch_gaps, sample_release, save, table
from oasis_dcgan.config import DataConfig

SEED_STEPS_PER_EPOCH = 604  # 9664 / 16: the seed's epoch, for the overhead projection
ROUNDS = 3


def dataset(res: int) -> Path:
    from oasis_dcgan.prep import pack

    out = WORK / f"train-ds-{res}"
    if not (out / "manifest.json").is_file():
        pack.preprocess(sample_release(), out, DataConfig(resolution=res, shard_size=2048))
    return out


def our_run(res: int, steps: int, epochs: int, ranks: int = 1, threads: int = 0, autotune: bool = False,
            checkpoint_every_epoch: bool = False) -> dict:
    """Run the training job; return its images/s over the whole run after the first epoch.

    The rate is the images of epochs 2..N over the wall time from the end of epoch 1 to the end
    of epoch N, so every epoch end (stats, log, samples, TensorBoard, and any checkpoint) is
    inside it, not only the steps. The checkpoint cadence is the job's default (every 10 minutes,
    so none inside so short a window) unless `checkpoint_every_epoch`: that run prices a
    checkpoint, and its epoch-end figure is an upper bound.
    `autotune` runs the job as it was before tf.data's autotuner was turned off (the "before").
    """
    run = WORK / f"run-{res}-{ranks}"
    shutil.rmtree(run, ignore_errors=True)
    job = ["-m", "bench.bench_train", "--job-with-autotune"] if autotune else ["-m", "jobs.train"]
    cmd = [sys.executable, *job, str(dataset(res)), str(run), "--epochs", str(epochs),
           "--set", f"train.max_steps_per_epoch={steps}", "--set", f"train.intra_op_threads={threads}",
           "--set", "train.tick_seconds=5"]
    if checkpoint_every_epoch:
        cmd += ["--set", "train.checkpoint_every_epochs=1"]
    cmd += ["--executor", "inprocess"] if ranks == 1 else ["--executor", "local", "--ranks", str(ranks)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    stats = RunDir(run).read_stats()
    every = [r for r in stats if r["kind"] == "epoch"]
    ep = every[1:]  # the first epoch pays tracing and warm-up
    window = every[-1]["loop_end_time"] - every[0]["loop_end_time"]
    images = sum(r["images_per_s"] * r["epoch_time"] for r in ep)
    step_time = float(np.median([r["step_time"] for r in ep]))
    end_cost = float(np.median(epoch_gaps(every)[1:] or epoch_gaps(every)))
    return {"images_per_s": images / window, "steps_only_img_s": float(np.median([r["images_per_s"] for r in ep])),
            "step_time_s": step_time, "epoch_end_s": end_cost,
            "overhead_pct_seed_epoch": 100 * end_cost / (SEED_STEPS_PER_EPOCH * step_time),
            "overhead_pct_this_run": 100 * end_cost / (steps * step_time)}


def seed_run(res: int, steps: int) -> float:
    return seed_baseline("train", "--res", str(res), "--steps", str(steps))["images_per_s"]


def allreduce_cost(res: int) -> dict:
    """Time the grouped allreduce of the full model's gradients across 2 gloo ranks."""
    import submitit

    ex = submitit.AutoExecutor(folder=str(WORK / "allreduce-jobs"), cluster="local")
    ex.update_parameters(tasks_per_node=2, nodes=1, timeout_min=10)
    job = ex.submit(_allreduce_worker, res, str(WORK / "allreduce-rdv"))
    return job.results()[0]


def _allreduce_worker(res: int, rdv: str) -> dict:
    import time

    import tensorflow as tf

    from oasis_dcgan.launch.environment import job_world
    from oasis_dcgan.training import distributed, model

    ranks = distributed.init(job_world(rdv), timeout_s=120)
    G, D = model.build_generator(res), model.build_discriminator(res)
    grads = [tf.random.normal(v.shape) for v in G.trainable_variables + D.trainable_variables]
    nbytes = sum(int(np.prod(g.shape)) * 4 for g in grads)
    out = {"gradient_bytes": nbytes, "tensors": len(grads)}
    for fp16 in (False, True):
        f = tf.function(lambda gs: ranks.allreduce_mean(gs, wire="fp16" if fp16 else "fp32"))
        f(grads)
        t = time.perf_counter()
        for _ in range(5):
            r = f(grads)
        float(r[0][(0,) * len(r[0].shape)])
        out["fp16_s" if fp16 else "fp32_s"] = (time.perf_counter() - t) / 5
    return out


def job_against_seed(res: int, steps: int, epochs: int) -> dict:
    """Three rounds of the seed's step beside our whole job, at the default checkpoint cadence.

    On a shared 2-core machine the speed drifts between runs, so the seed runs before and after
    each of ours and ours is compared with the mean of the two beside it: a drift during a round
    cancels to first order. The seed runs as many steps as our measured window holds, so both
    average over the same stretch of time. Then, once each, the job as it was before (tf.data
    autotuning on) and the job checkpointing at every epoch end, against the seed's median.
    One short run of the job comes first and is discarded: in earlier runs the first round was
    the slowest at both resolutions (cold page cache for the shards, first-touch memory).
    """
    seed_steps = steps * (epochs - 1)
    our_run(res, steps=steps, epochs=2)
    seeds, rounds = [seed_run(res, seed_steps)], []
    for _ in range(ROUNDS):
        ours = our_run(res, steps=steps, epochs=epochs)
        seeds.append(seed_run(res, seed_steps))
        seed = (seeds[-2] + seeds[-1]) / 2
        rounds.append({"seed_img_s": seed, "seed_runs_img_s": seeds[-2:], **ours,
                       "x_vs_seed": ours["images_per_s"] / seed})
    seed_median = float(np.median(seeds))
    before = our_run(res, steps=steps, epochs=epochs, autotune=True)
    ckpt = our_run(res, steps=steps, epochs=epochs, checkpoint_every_epoch=True)
    ratios = [r["x_vs_seed"] for r in rounds]
    return {"res": res, "steps_per_epoch": steps, "epochs": epochs, "seed_steps": seed_steps, "rounds": rounds,
            **{k: float(np.median([r[k] for r in rounds])) for k in (
                "seed_img_s", "images_per_s", "steps_only_img_s", "epoch_end_s", "overhead_pct_seed_epoch",
                "x_vs_seed")},
            "ratio_spread": (max(ratios) - min(ratios)) / float(np.median(ratios)),
            "before_img_s": before["images_per_s"], "before_x_vs_seed": before["images_per_s"] / seed_median,
            "with_checkpoints": {**ckpt, "x_vs_seed": ckpt["images_per_s"] / seed_median}}


RESULT = "train"


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    res_rows = []
    for res, steps, epochs in ((64, 60, 4), (256, 8, 3)):
        res_rows.append(job_against_seed(res, steps, epochs))
    # Weak scaling: global batch grows with ranks; each rank gets one thread (2 cores).
    seed1 = seed_baseline("train", "--res", "64", "--steps", "30", "--threads", "1")
    one = our_run(64, steps=40, epochs=3, ranks=1, threads=1)
    two = our_run(64, steps=40, epochs=3, ranks=2, threads=1)
    scaling = {"seed_1thread_img_s": seed1["images_per_s"], "ranks1_img_s": one["images_per_s"],
               "ranks2_img_s": two["images_per_s"], "efficiency": two["images_per_s"] / (2 * one["images_per_s"])}
    ar = allreduce_cost(256)
    result = save(RESULT, {"rows": res_rows, "weak_scaling_64": scaling, "allreduce_256_2ranks": ar})
    show(result)
    return result


def show(result: dict) -> None:
    scaling, ar = result["weak_scaling_64"], result["allreduce_256_2ranks"]
    print(table([(r["res"], f"{r['seed_img_s']:.1f}", f"{r['images_per_s']:.1f}",
                  " / ".join(f"{x['x_vs_seed']:.2f}x" for x in r["rounds"]), f"{r['ratio_spread'] * 100:.0f}%",
                  f"{r['before_x_vs_seed']:.2f}x", f"{r['epoch_end_s']:.2f} s",
                  f"{r['with_checkpoints']['x_vs_seed']:.2f}x, {r['with_checkpoints']['epoch_end_s']:.2f} s")
                 for r in result["rows"]],
                ("res", "seed step img/s", "our job img/s", "job / seed, 3 rounds", "spread",
                 "before (tf.data autotune on)", "epoch end", "checkpoint every epoch: job / seed, epoch end")))
    print()
    print(table([("1 rank, 1 thread", f"{scaling['ranks1_img_s']:.1f}",
                  f"seed step, 1 thread: {scaling['seed_1thread_img_s']:.1f}"),
                 ("2 ranks, 1 thread each", f"{scaling['ranks2_img_s']:.1f}",
                  f"efficiency {scaling['efficiency'] * 100:.0f}%")],
                ("64x64 weak scaling", "img/s", "")))
    print()
    print(f"allreduce of the 256 model's gradients, 2 gloo ranks on one host: {ar['gradient_bytes'] / 1e6:.1f} MB "
          f"in {ar['tensors']} tensors; fp32 {ar['fp32_s'] * 1000:.0f} ms, fp16 {ar['fp16_s'] * 1000:.0f} ms per step")


def _job_with_autotune(args: list[str]) -> int:
    """The train job with tf.data's autotuner on, as the reader had it before (the "before" runs)."""
    import functools

    from oasis_dcgan.cli import main as cli_main
    from oasis_dcgan.prep.reader import train_dataset
    from oasis_dcgan.training import trainer

    trainer.train_dataset = functools.partial(train_dataset, autotune=True)
    return cli_main(["train", *args])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--job-with-autotune"]:
        sys.exit(_job_with_autotune(sys.argv[2:]))
    sys.exit(0 if main() else 1)
