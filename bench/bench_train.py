"""Training: our job's images/s against the seed's step, weak scaling, and the allreduce's cost.

Ours is the real job (the Trainer: reader, Horovod step, stats, per-epoch samples and
checkpoints all on), timed from its own stats.jsonl; the seed's is its bare compiled step on
random tensors. Same machine, same run, same resolution and batch.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.common import REPO, WORK, anchor, epoch_gaps, sample_release, save, table

REFERENCE_STEPS_PER_EPOCH = 604  # 9664 / 16: the seed's epoch, for the overhead projection
ROUNDS = 3


def dataset(res: int) -> Path:
    from oasis_dcgan.prep import pack

    out = WORK / f"train-ds-{res}"
    if not (out / "manifest.json").is_file():
        pack.preprocess(sample_release(), out, resolution=res, shard_size=2048, log=lambda *a: None)
    return out


def our_run(res: int, steps: int, epochs: int, ranks: int = 1, threads: int = 0, autotune: bool = False) -> dict:
    """Run the training job; return steady-state images/s and the epoch-end overhead.

    `autotune` runs the job as it was before tf.data's autotuner was turned off (the "before").
    Every epoch end checkpoints, as the job did before the time-based default: the epoch-end
    figure is then an upper bound.
    """
    run = WORK / f"run-{res}-{ranks}"
    shutil.rmtree(run, ignore_errors=True)
    job = ["-m", "bench.bench_train", "--job-with-autotune"] if autotune else ["-m", "jobs.train"]
    cmd = [sys.executable, *job, str(dataset(res)), str(run), "--epochs", str(epochs),
           "--set", f"train.max_steps_per_epoch={steps}", "--set", f"train.intra_op_threads={threads}",
           "--set", "train.tick_seconds=5", "--set", "train.checkpoint_every_epochs=1"]
    cmd += ["--executor", "inprocess"] if ranks == 1 else ["--executor", "local", "--ranks", str(ranks)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    every = [r for r in stats if r["kind"] == "epoch"]
    ep = every[1:]  # the first epoch pays tracing and warm-up
    step_time = float(np.median([r["step_time"] for r in ep]))
    end_cost = float(np.median(epoch_gaps(every)[1:]))  # with a checkpoint at every epoch end
    return {"images_per_s": float(np.median([r["images_per_s"] for r in ep])), "step_time_s": step_time,
            "epoch_end_s": end_cost,
            "overhead_pct_seed_epoch": 100 * end_cost / (REFERENCE_STEPS_PER_EPOCH * step_time),
            "overhead_pct_this_run": 100 * end_cost / (steps * step_time)}


def seed_run(res: int, steps: int) -> float:
    return anchor("train", "--res", str(res), "--steps", str(steps))["images_per_s"]


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

    hvd, _server = distributed.init(job_world(rdv), timeout_s=120)
    G, D = model.build_generator(res), model.build_discriminator(res)
    grads = [tf.random.normal(v.shape) for v in G.trainable_variables + D.trainable_variables]
    nbytes = sum(int(np.prod(g.shape)) * 4 for g in grads)
    out = {"gradient_bytes": nbytes, "tensors": len(grads)}
    for fp16 in (False, True):
        f = tf.function(lambda gs: distributed.allreduce_mean(hvd, gs, fp16=fp16))
        f(grads)
        t = time.perf_counter()
        for _ in range(5):
            r = f(grads)
        float(r[0][(0,) * len(r[0].shape)])
        out["fp16_s" if fp16 else "fp32_s"] = (time.perf_counter() - t) / 5
    return out


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    res_rows = []
    for res, steps in ((64, 60), (256, 8)):
        # Three rounds, each the seed's step, then our job, then our job as it was before
        # (tf.data autotuning on): on a shared 2-core machine figures drift between runs, so
        # each ratio is against the seed measured right beside it.
        # The seed runs before and after each of ours, and ours is against the mean of the two
        # beside it, so a drift of the machine's speed during a round cancels to first order.
        rounds = []
        seed_next = seed_run(res, steps)
        for _ in range(ROUNDS):
            seed_a = seed_next
            ours = our_run(res, steps=steps, epochs=3)
            seed_b = seed_run(res, steps)
            before = our_run(res, steps=steps, epochs=3, autotune=True)
            seed_next = seed_run(res, steps)
            seed, seed_before = (seed_a + seed_b) / 2, (seed_b + seed_next) / 2
            rounds.append({"seed_img_s": seed, "seed_runs_img_s": [seed_a, seed_b, seed_next], **ours,
                           "before_img_s": before["images_per_s"], "x_vs_seed": ours["images_per_s"] / seed,
                           "before_x_vs_seed": before["images_per_s"] / seed_before})
        ratios = [r["x_vs_seed"] for r in rounds]
        res_rows.append({"res": res, "rounds": rounds, **{k: float(np.median([r[k] for r in rounds])) for k in (
            "seed_img_s", "images_per_s", "before_img_s", "epoch_end_s", "overhead_pct_seed_epoch", "x_vs_seed",
            "before_x_vs_seed")}, "ratio_spread": (max(ratios) - min(ratios)) / float(np.median(ratios))})
    # Weak scaling: global batch grows with ranks; each rank gets one thread (2 cores).
    seed1 = anchor("train", "--res", "64", "--steps", "30", "--threads", "1")
    one = our_run(64, steps=40, epochs=3, ranks=1, threads=1)
    two = our_run(64, steps=40, epochs=3, ranks=2, threads=1)
    scaling = {"seed_1thread_img_s": seed1["images_per_s"], "ranks1_img_s": one["images_per_s"],
               "ranks2_img_s": two["images_per_s"], "efficiency": two["images_per_s"] / (2 * one["images_per_s"])}
    ar = allreduce_cost(256)
    result = save("train", {"rows": res_rows, "weak_scaling_64": scaling, "allreduce_256_2ranks": ar})
    print(table([(r["res"], f"{r['seed_img_s']:.1f}", f"{r['images_per_s']:.1f}",
                  " / ".join(f"{x['x_vs_seed']:.2f}x" for x in r["rounds"]), f"{r['ratio_spread'] * 100:.0f}%",
                  " / ".join(f"{x['before_x_vs_seed']:.2f}x" for x in r["rounds"]), f"{r['epoch_end_s']:.2f} s")
                 for r in res_rows],
                ("res", "seed step img/s", "our job img/s", "job / seed, 3 rounds", "spread",
                 "before (tf.data autotune on)", "epoch-end work (samples + a checkpoint)")))
    print()
    print(table([("1 rank, 1 thread", f"{one['images_per_s']:.1f}", f"seed step, 1 thread: {seed1['images_per_s']:.1f}"),
                 ("2 ranks, 1 thread each", f"{two['images_per_s']:.1f}",
                  f"efficiency {scaling['efficiency'] * 100:.0f}%")],
                ("64x64 weak scaling", "img/s", "")))
    print()
    print(f"allreduce of the 256 model's gradients, 2 gloo ranks on one host: {ar['gradient_bytes'] / 1e6:.1f} MB "
          f"in {ar['tensors']} tensors; fp32 {ar['fp32_s'] * 1000:.0f} ms, fp16 {ar['fp16_s'] * 1000:.0f} ms per step")
    return result


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
