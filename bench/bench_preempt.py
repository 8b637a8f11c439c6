"""Preemption: the time and the work a USR2 stop costs, on the dev Slurm cluster, at 256x256.

The real job (slurm/train.sbatch, 2 ranks) is preempted with `scancel --signal=USR2` mid-epoch,
stops, requeues itself and resumes. Measured from the run's own records:
- signal -> the stop's checkpoint on disk (the ranks agree, rank 0 writes ~335 MB);
- -> the requeued job's start (Slurm), -> the checkpoint restored, -> the first new step;
- the work redone: steps between the checkpoint resumed from and the last step begun
  before the signal (zero for an agreed stop).
The seed's script keeps no checkpoint, so a preempted seed run starts again from step 0: it
redoes every step taken before the signal, at the seed's own step time measured in this run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from oasis_dcgan.rundir import RunDir
from bench.bench_train import dataset
from bench.common import REPO, WORK, seed_baseline, dev_cluster, save, table

RES, BATCH, STEPS_BEFORE, STEPS = 256, 4, 6, 12
H200_STEP_S, SEED_STEPS_PER_EPOCH, SEED_EPOCHS = 0.0058, 604, 50


def _sh(*cmd, **kw) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=True, **kw).stdout.strip()


def _stats(run: Path) -> list[dict]:
    return RunDir(run).read_stats()


def _wait(cond, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def preempt_once(run: Path) -> dict:
    """Submit, preempt after STEPS_BEFORE steps, wait for the end; return the timeline."""
    env = {**os.environ, "OASIS_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    sets = [f"train.batch_size={BATCH}", f"train.max_steps_per_epoch={STEPS}", "train.epochs=1",
            "train.checkpoint_every_steps=0", "train.checkpoint_every_minutes=0", "train.tick_seconds=0.001",
            "train.intra_op_threads=1"]
    job = _sh("sbatch", "--parsable", f"--chdir={run.parent}", str(REPO / "slurm/train.sbatch"), str(dataset(RES)),
              str(run), *[x for s in sets for x in ("--set", s)], env=env)
    ticks = lambda: [r for r in _stats(run) if r["kind"] == "tick"]  # noqa: E731
    before = _wait(lambda: [t for t in ticks() if t["global_step"] >= STEPS_BEFORE], 900, "the first steps")
    t_signal = time.time()
    _sh("scancel", "--signal=USR2", job)
    step_at_signal = max(t["global_step"] for t in ticks())
    _wait(lambda: not _sh("squeue", "-h", "-j", job, "-o", "%i"), 1800, "the job to finish")
    stats = _stats(run)
    stop = next(r for r in stats if r["kind"] == "checkpoint" and r["reason"].startswith("signal SIGUSR2"))
    first_new = next(r for r in stats if r["kind"] == "tick" and r["time"] > stop["time"])
    starts = _sh("sacct", "-X", "-D", "-n", "-P", "-o", "Start", "-j", job).splitlines()
    restart = time.mktime(time.strptime(starts[-1], "%Y-%m-%dT%H:%M:%S"))
    resumed = _resumed_at(run)
    return {"job": job, "steps_before_signal": step_at_signal, "first_ticks": len(before),
            "stop_step": stop["global_step"], "save_s": stop["seconds"],
            "signal_to_saved_s": stop["time"] - t_signal, "signal_to_restart_s": restart - t_signal,
            "signal_to_resumed_s": resumed - t_signal, "signal_to_first_new_step_s": first_new["time"] - t_signal,
            "redone_steps": max(0, step_at_signal - stop["global_step"]),
            "checkpoint_mb": _size_mb(run / "checkpoints" / f"ckpt-{stop['global_step']:09d}")}


def _resumed_at(run: Path) -> float:
    line = next(x for x in RunDir(run).log.read_text().splitlines() if " resumed from " in x)
    return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir()) / 1e6 if path.is_dir() else float("nan")


RESULT = "preempt"


def main():
    import shutil

    dev_cluster()
    run = WORK / "preempt" / "run"
    shutil.rmtree(run.parent, ignore_errors=True)
    run.parent.mkdir(parents=True)
    seed = seed_baseline("train", "--res", str(RES), "--steps", "4")
    ours = preempt_once(run)
    # The seed redoes every image trained before the signal, at its own rate on this machine.
    images_before = ours["steps_before_signal"] * BATCH * 2
    seed_step_s = 16 / seed["images_per_s"]
    seed_lost = images_before / seed["images_per_s"]
    mid_run_h200 = SEED_EPOCHS // 2 * SEED_STEPS_PER_EPOCH * H200_STEP_S
    result = save(RESULT, {**ours, "seed_step_s": seed_step_s, "seed_redone_images": images_before,
                           "seed_redone_s": seed_lost, "seed_mid_run_h200_redone_s": mid_run_h200,
                           "lost_vs_seed_here": ours["signal_to_first_new_step_s"] / seed_lost,
                           "lost_vs_seed_mid_run_h200": ours["signal_to_first_new_step_s"] / mid_run_h200})
    show(result)
    return result


def show(r: dict) -> None:
    print(table([
        ("signal -> stop checkpoint on disk", f"{r['signal_to_saved_s']:.1f} s",
         f"save {r['save_s']:.1f} s, {r['checkpoint_mb']:.0f} MB"),
        ("signal -> requeued job starts", f"{r['signal_to_restart_s']:.1f} s", "Slurm's requeue"),
        ("signal -> checkpoint restored", f"{r['signal_to_resumed_s']:.1f} s", "start-up, TensorFlow, restore"),
        ("signal -> first new step", f"{r['signal_to_first_new_step_s']:.1f} s", "the time lost per preemption"),
        ("work redone", f"{r['redone_steps']} steps", f"seed: all {r['seed_redone_images']} images so far, "
         f"{r['seed_redone_s']:.0f} s here (no checkpoint: it starts again)"),
    ], (f"USR2 at {RES}x{RES}, 2 ranks, batch {BATCH}", "ours", "note")))
    print(f"\nseed step here: {r['seed_step_s']:.2f} s (batch 16). A seed run preempted half-way on an H200 "
          f"redoes {SEED_EPOCHS // 2 * SEED_STEPS_PER_EPOCH} steps, {r['seed_mid_run_h200_redone_s']:.0f} s at "
          f"5.8 ms a step; ours redoes {r['redone_steps']} and loses {r['signal_to_first_new_step_s']:.0f} s "
          f"(ratio {r['lost_vs_seed_mid_run_h200']:.2f}x the seed's loss).")
    print(json.dumps({k: r[k] for k in ("job", "stop_step", "steps_before_signal")}))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
