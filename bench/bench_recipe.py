"""What the demo's budget buys: the seed's recipe against the generator average and a recipe option.

Each variant is the whole demo (sample brains, 64x64, 2 Horovod ranks, the same epochs, so the
same time) with a few config overrides, then its report's checks: the median exact
nearest-neighbour SSIM of generated images to the training split beside the same statistic for
held-out real images, and the MS-SSIM diversity beside the real set's. The demo's goal: the
generated median within 0.05 of the held-out one and not above it by more than 0.02 (copying),
and diversity within 10% of the real set's. There is no seed baseline to divide by here: the
seed's own recipe is the first row, run in the same session.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.common import REPO, WORK, save, table
from oasis_dcgan import config
from oasis_dcgan.post.checks import COPYING, DIVERSITY_BAND, NEAR_BASELINE

EPOCHS = int(os.environ.get("OASIS_RECIPE_EPOCHS", config.load(config.preset("demo")).train.epochs))
SEED = config.seed_recipe()
DEMO = config.recipe(config.load(config.preset("demo")))
DCGAN = {"lr": 2e-4, "adam_beta1": 0.5}  # the DCGAN paper's Adam


def recipe_of(base: dict = SEED, **changes) -> list[str]:
    """Every recipe key spelled out, so no variant inherits the demo preset's own choice."""
    return config.as_overrides({**base, **{f"train.{k}": v for k, v in changes.items()}})


VARIANTS = {  # name: overrides on top of the demo's settings
    "seed recipe (Adam 1e-4, betas 0.9/0.999), no average": [*recipe_of(), "train.ema_kimg=0"],
    "seed recipe + generator average": recipe_of(),
    "Adam beta_1 0.5 + generator average": recipe_of(adam_beta1=0.5),
    "DCGAN paper (Adam 2e-4, beta_1 0.5) + generator average": recipe_of(**DCGAN),
    "the same, D without dropout": recipe_of(**DCGAN, d_dropout_scale=0.0),
    "the same, batch 8 per rank": recipe_of(**DCGAN, d_dropout_scale=0.0, batch_size=8),
    "the same, Adam 4e-4 (the demo's recipe)": recipe_of(DEMO),
    "the same, Adam 8e-4": recipe_of(DEMO, lr=8e-4),
    "Adam 4e-4, falling over the last half": recipe_of(DEMO, lr_rampdown=0.5),
}


def goal(m: dict) -> dict:
    gen, held = m["nn_ssim"]["median"], m["nn_ssim_held_out"].get("median")
    div, real = m["ms_ssim_diversity"]["generated"], m["ms_ssim_diversity"]["real"]
    gap = None if held is None else gen - held
    return {"nn_median": gen, "held_out_median": held, "gap": gap, "diversity": div, "real_diversity": real,
            "diversity_ratio": div / real,
            "met": gap is not None and -NEAR_BASELINE <= gap <= COPYING and abs(div / real - 1) <= DIVERSITY_BAND}


def run_variant(i: int, overrides: list[str]) -> dict:
    shared = WORK / "recipe" / "oasis"
    out = WORK / "recipe" / f"v{i}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    if shared.is_dir():
        (out / "oasis").symlink_to(shared)
    args = [sys.executable, "-m", "oasis_dcgan.cli", "demo", "--out", str(out), "--epochs", str(EPOCHS)]
    for o in overrides:
        args += ["--set", o]
    t0 = time.time()
    subprocess.run(args, cwd=REPO, check=True, capture_output=True)
    if not shared.is_dir():  # the first variant wrote the sample brains: the others reuse them
        (out / "oasis").rename(shared)
        (out / "oasis").symlink_to(shared)
    m = json.loads((out / "run" / "report" / "metrics.json").read_text())
    return {"minutes": (time.time() - t0) / 60, "overrides": overrides, "seed_max_ssim": m["seed_max_ssim"]["final"],
            **goal(m)}


def show(result: dict) -> None:
    rows = [(name, f"{r['minutes']:.1f}", f"{r['seed_max_ssim']:.3f}", f"{r['nn_median']:.3f}",
             f"{r['held_out_median']:.3f}", f"{r['gap']:+.3f}", f"{r['diversity']:.3f}", f"{r['real_diversity']:.3f}",
             f"{r['diversity_ratio']:.2f}", "yes" if r["met"] else "no") for name, r in result["runs"].items()]
    print(table(rows, ("the demo, 64x64, 2 ranks", "min", "seed metric", "NN-SSIM median", "held-out median",
                       "gap", "MS-SSIM div.", "real div.", "div. ratio", "goal met")))
    print()
    print(f"Each row is the whole demo ({result['epochs']} epochs). Goal: gap in [-{NEAR_BASELINE}, +{COPYING}] "
          f"(above +{COPYING} would be copying) and a diversity ratio within 1 +- {DIVERSITY_BAND}.")


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runs = {name: run_variant(i, o) for i, (name, o) in enumerate(VARIANTS.items())}
    result = save("recipe", {"epochs": EPOCHS, "runs": runs})
    show(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
