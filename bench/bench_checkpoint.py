"""Checkpoints off the critical path: what a save costs the training loop at 256x256.

The real job (1 rank, batch 16, the seed's model) saves after every step, once with the write in
a background thread (the default) and once in the loop (`train.checkpoint_in_background=false`),
and once not at all. From its own stats.jsonl: the mean time the loop waited per save
(`blocking_s`), the mean write (`write_s`, ~335 MB: files, sha256, fsync, rename), and images/s
against the seed's bare compiled step measured in the same run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np

from oasis_dcgan.rundir import RunDir

from bench.bench_train import dataset
from bench.common import REPO, WORK, seed_baseline, save, table

RES, BATCH, STEPS = 256, 16, 6


def run_job(name: str, *sets: str) -> dict:
    run = WORK / f"ckpt-{name}"
    shutil.rmtree(run, ignore_errors=True)
    opts = [f"train.max_steps_per_epoch={STEPS}", "train.checkpoint_every_minutes=0", "train.tick_seconds=1000",
            "train.keep_checkpoints=2", *sets]
    cmd = [sys.executable, "-m", "jobs.train", str(dataset(RES)), str(run), "--epochs", "2", "--batch-size",
           str(BATCH), "--executor", "inprocess", *[x for o in opts for x in ("--set", o)]]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    stats = RunDir(run).read_stats()
    # The first epoch pays tracing and the shadows' allocation; the second is the steady state.
    saves = [r for r in stats if r["kind"] == "checkpoint" and r["global_step"] > STEPS]
    ep = [r for r in stats if r["kind"] == "epoch"][-1]
    out = {"images_per_s": ep["images_per_s"], "saves": len(saves)}
    if saves:
        out.update(blocking_s=float(np.mean([r["blocking_s"] for r in saves])),
                   write_s=float(np.mean([r["write_s"] for r in saves])))
    return out


RESULT = "checkpoint"


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    seed = seed_baseline("train", "--res", str(RES), "--steps", "4")["images_per_s"]
    none = run_job("none", "train.checkpoint_every_steps=0")
    inline = run_job("inline", "train.checkpoint_every_steps=1", "train.checkpoint_in_background=false")
    background = run_job("background", "train.checkpoint_every_steps=1")
    result = save(RESULT, {"res": RES, "batch": BATCH, "seed_img_s": seed, "no_checkpoints": none,
                           "every_step_inline": inline, "every_step_background": background})
    show(result)
    return result


def show(result: dict) -> None:
    seed, inline, background = result["seed_img_s"], result["every_step_inline"], result["every_step_background"]
    rows = [("seed's bare step (no checkpoints)", f"{seed:.2f}", "", "", "1.00x")]
    for name, r in (("our job, no checkpoint", result["no_checkpoints"]),
                    ("our job, a checkpoint every step, in the loop", inline),
                    ("our job, a checkpoint every step, in the background", background)):
        rows.append((name, f"{r['images_per_s']:.2f}", f"{r['blocking_s']:.3f} s" if "blocking_s" in r else "",
                     f"{r['write_s']:.3f} s" if "write_s" in r else "", f"{r['images_per_s'] / seed:.2f}x"))
    print(table(rows, (f"{result['res']}x{result['res']}, batch {result['batch']}, 1 rank", "img/s",
                       "loop waits per save", "write per save", "vs seed step")))
    print(f"\nin the background the loop waits {background['blocking_s'] / background['write_s']:.2f} of the write "
          f"(in the loop: {inline['blocking_s'] / inline['write_s']:.2f})")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
