"""train.fp16_allreduce: does sending the gradients in fp16 cost the model anything?

The projection (bench/projection.py) counts what fp16 gradients save on the wire: half of
the 111 MB a step at 256. This measures what they cost. The whole job on 2 Horovod ranks
at 64x64 (the sample brains), with and without fp16 gradients, for three rng seeds each,
then postprocess. Both arms share each seed's weights, noise, dropout and data order, so
they differ only by the rounding on the wire.

It holds if the fp16 runs' mean seed metric and MS-SSIM diversity fall inside the spread of
the fp32 runs, and if each fp16 run's epoch losses stay as close to its fp32 twin as the
fp32 runs stay to one another (both measured at equal steps, epoch by epoch).
"""
from __future__ import annotations

import itertools
import os
import sys

import numpy as np

from bench.bench_train import dataset
from bench.common import save, table, train_and_score

RES, RANKS, STEPS, EPOCHS = 64, 2, 16, 24
RNG_SEEDS = (0, 1, 2)
WIRES = {"fp32": "train.fp16_allreduce=false", "fp16": "train.fp16_allreduce=true"}


def loss_gap(a: dict, b: dict) -> float:
    """Mean absolute difference of two runs' epoch losses (G and D), epoch by epoch."""
    return float(np.mean([np.abs(np.subtract(a[k], b[k])).mean() for k in ("g_loss", "d_loss")]))


def verdict(runs: dict) -> dict:
    def values(w, k):
        return [r[k] for r in runs[w]]

    within = {k: min(values("fp32", k)) <= float(np.mean(values("fp16", k))) <= max(values("fp32", k))
              for k in ("seed_max_ssim", "diversity")}
    twins = [loss_gap(a, b) for a, b in zip(runs["fp32"], runs["fp16"])]
    strangers = [loss_gap(a, b) for a, b in itertools.combinations(runs["fp32"], 2)]
    return {"within_fp32_spread": within, "loss_gap_fp16_vs_its_fp32_twin": twins,
            "loss_gap_between_fp32_seeds": strangers,
            "losses_hold": max(twins) <= max(strangers),
            "holds": all(within.values()) and max(twins) <= max(strangers)}


RESULT = "wire"


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runs = {w: [train_and_score(f"wire-{w}-{s}", dataset(RES), s, EPOCHS, STEPS, flag, ranks=RANKS)
                for s in RNG_SEEDS] for w, flag in WIRES.items()}
    result = save(RESULT, {"res": RES, "ranks": RANKS, "epochs": EPOCHS, "steps_per_epoch": STEPS,
                           "rng_seeds": list(RNG_SEEDS), "runs": runs, **verdict(runs)})
    show(result)
    return result


def show(r: dict) -> None:
    runs, within = r["runs"], r["within_fp32_spread"]
    rows = [(w, s, f"{x['seed_max_ssim']:.4f}", f"{x['diversity']:.4f}", f"{x['nn_ssim_mean']:.4f}",
             f"{x['g_loss'][-1]:.3f} / {x['d_loss'][-1]:.3f}")
            for w in runs for s, x in zip(r["rng_seeds"], runs[w])]
    print(table(rows, ("gradients on the wire", "rng seed", "seed metric (max SSIM)",
                       "MS-SSIM diversity (lower: more diverse)", "mean NN-SSIM", "last epoch's G / D loss")))
    print()
    print(f"The whole job on {r['ranks']} ranks, {r['epochs']} epochs of {r['steps_per_epoch']} steps at "
          f"{r['res']}x{r['res']}, then postprocess.")
    print(f"fp16's mean inside the fp32 runs' range: seed metric {'yes' if within['seed_max_ssim'] else 'NO'}, "
          f"diversity {'yes' if within['diversity'] else 'NO'}.")
    print("Epoch losses, mean |difference| epoch by epoch: each fp16 run against its fp32 twin "
          + ", ".join(f"{x:.4f}" for x in r["loss_gap_fp16_vs_its_fp32_twin"]) + "; the fp32 runs against each other "
          + ", ".join(f"{x:.4f}" for x in r["loss_gap_between_fp32_seeds"]) + ".")
    print(f"fp16 gradients {'hold' if r['holds'] else 'do NOT hold'} at this scale.")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
