"""train.precision on this CPU: speed against the seed's fp32 step, and whether bf16 trains as well.

Speed: our compiled step under each precision at 64x64, batch 16, beside the seed's bare
step, all on a constant batch in fresh processes. Half precision pays on GPUs (tensor
cores); on a CPU without AVX512_BF16 or AMX it is emulated and slow, and the table says so
with the CPU's flags. Quality: the whole job at 64x64 (the sample brains) for fp32 and
bf16 over three seeds each, then postprocess; bf16's seed metric and MS-SSIM diversity
should fall within the spread of the fp32 runs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np

from bench.bench_train import dataset
from bench.common import REPO, WORK, seed_baseline, save, table, train_and_score

RES = 64
SEEDS = (0, 1, 2)
STEPS = 16
# Each quality run trains as many images as the slower half precision covers in RUN_BUDGET_S on
# this CPU (bf16 is emulated without AVX512_BF16), within these bounds: 768 images a run where
# bf16 crawls, up to 8,192 where it is native and the runs can get past the first blobs.
RUN_BUDGET_S, MIN_EPOCHS, MAX_EPOCHS = 150, 3, 32


def epochs_for(img_s: float) -> int:
    return int(np.clip(img_s * RUN_BUDGET_S // (16 * STEPS), MIN_EPOCHS, MAX_EPOCHS))


def step_speed(precision: str, steps: int) -> float:
    """Images/s of our compiled step under `precision`, in a fresh process."""
    code = f"""
import json, time, numpy as np, tensorflow as tf
from oasis_dcgan import config
from oasis_dcgan.training.trainer import Trainer
cfg = config.load(None, ['data.dataset="{dataset(RES)}"', 'run_dir="{WORK / 'precision-speed'}"',
                         'train.precision="{precision}"'])
t = Trainer(cfg, log_to_stdout=False); t.start()
from bench.common import our_step_ms
ms = our_step_ms(t, {RES}, 16, {steps}, {min(8, steps)})
print(json.dumps({{"images_per_s": 16 / ms * 1000}}))
"""
    shutil.rmtree(WORK / "precision-speed", ignore_errors=True)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["images_per_s"]


def quality_run(precision: str, rng_seed: int, epochs: int) -> dict:
    return train_and_score(f"precision-{precision}-{rng_seed}", dataset(RES), rng_seed, epochs, STEPS,
                           f'train.precision="{precision}"')


RESULT = "precision"


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    seed_step = seed_baseline("train", "--res", str(RES), "--steps", "20")["images_per_s"]
    speeds = {p: step_speed(p, 20 if p == "fp32" else 4) for p in ("fp32", "bf16", "fp16")}
    epochs = epochs_for(speeds["bf16"])
    runs = {p: [quality_run(p, s, epochs) for s in SEEDS] for p in ("fp32", "bf16")}

    def values(p, k):
        return [r[k] for r in runs[p]]

    # bf16's mean inside the range of the fp32 runs: as close to fp32 as fp32 is to itself.
    within = {k: min(values("fp32", k)) <= float(np.mean(values("bf16", k))) <= max(values("fp32", k))
              for k in ("seed_max_ssim", "diversity")}
    result = save(RESULT, {"res": RES, "seed_step_img_s": seed_step, "step_img_s": speeds, "runs": runs,
                           "epochs": epochs, "steps_per_epoch": STEPS, "bf16_within_fp32_spread": within})
    show(result)
    return result


def show(result: dict) -> None:
    seed_step, runs, within, epochs = (result["seed_step_img_s"], result["runs"], result["bf16_within_fp32_spread"],
                                       result["epochs"])
    print(f"CPU flags that matter here: {result['machine'].get('simd')} (bf16 and fp16 are emulated without "
          "avx512_bf16 or amx; on GPUs they run on tensor cores)")
    print()
    print(table([("seed step (fp32)", f"{seed_step:.1f}", "1.00x")]
                + [(f"our step, {p}", f"{v:.1f}", f"{v / seed_step:.2f}x") for p, v in result["step_img_s"].items()],
                (f"{RES}x{RES}, batch 16, constant batch", "img/s", "vs seed")))
    print()
    rows = [(p, s, f"{r['seed_max_ssim']:.4f}", f"{r['diversity']:.4f}", f"{r['nn_ssim_mean']:.4f}")
            for p in runs for s, r in zip(SEEDS, runs[p])]
    print(table(rows, ("precision", "seed", "seed metric (max SSIM)", "MS-SSIM diversity (lower: more diverse)",
                       "mean NN-SSIM")))
    print()
    print(f"The whole job, {epochs} epochs of {result['steps_per_epoch']} steps (as many as bf16 trains in about "
          f"{RUN_BUDGET_S} s here) at {RES}x{RES}, then postprocess. Is the mean of the bf16 "
          f"runs inside the range of the fp32 runs? seed metric: {'yes' if within['seed_max_ssim'] else 'NO'}; "
          f"diversity: {'yes' if within['diversity'] else 'NO'}.")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
