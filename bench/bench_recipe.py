"""What the demo's budget buys: the seed's recipe against the generator average and a recipe option.

Each variant is the whole demo (sample brains, 64x64, 2 Horovod ranks, the same epochs, so the
same time) with a few config overrides, then its report's checks: the median exact
nearest-neighbour SSIM of generated images to the training split beside the held-out images' and
the linear anchor's, the copying verdict, and the diversity ratio with its verdict (all read from
intervals, post/quality.py). There is no seed baseline to divide by here: the seed's own recipe
is the first row, run in the same session.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.common import REPO, WORK, save, table
from oasis_dcgan import config

EPOCHS = int(os.environ.get("OASIS_RECIPE_EPOCHS", config.load(config.preset("demo")).train.epochs))
SEED = config.seed_recipe()
DEMO = config.recipe(config.load(config.preset("demo")))
DCGAN = {"lr": 2e-4, "adam_beta1": 0.5}  # the DCGAN paper's Adam

RESULT = "recipe"   # bench/results/recipe.json

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


def readout(m: dict) -> dict:
    """What a variant's report says: its median against the anchors, and the verdicts."""
    gen, rungs = m["nn_ssim"], m["anchors"]
    return {"nn_median": gen["median"], "nn_ci95": gen["ci95"],
            "held_out_median": rungs["held_out"]["nn_ssim"]["median"],
            "linear_median": rungs["linear"]["nn_ssim"]["median"],
            "gap": gen["median"] - rungs["held_out"]["nn_ssim"]["median"],
            "copying": m["copying"]["verdict"], "diversity_ratio": m["diversity"]["ratio"],
            "diversity_ci95": m["diversity"]["ci95"], "diversity": m["diversity"]["verdict"]}


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
            **readout(m)}


def _cell(r: dict, key: str, spec: str) -> str:
    """One figure, or "-" where the result file (from an earlier version of this bench) lacks it."""
    if key not in r or (not spec and not isinstance(r[key], str)):  # a verdict's key once held a number
        return "-"
    v = r[key]
    return f"{v[0]:{spec}}, {v[1]:{spec}}" if isinstance(v, list) else (f"{v:{spec}}" if spec else str(v))


def show(result: dict) -> None:
    rows = [(name, _cell(r, "minutes", ".1f"), _cell(r, "seed_max_ssim", ".3f"),
             f"{_cell(r, 'nn_median', '.3f')} [{_cell(r, 'nn_ci95', '.3f')}]", _cell(r, "held_out_median", ".3f"),
             _cell(r, "linear_median", ".3f"), _cell(r, "copying", ""),
             f"{_cell(r, 'diversity_ratio', '.2f')} [{_cell(r, 'diversity_ci95', '.2f')}]", _cell(r, "diversity", ""))
            for name, r in result["runs"].items()]
    print(table(rows, ("the demo, 64x64, 2 ranks", "min", "seed metric", "NN-SSIM median [95%]", "held-out",
                       "linear anchor", "copying", "div. ratio [95%]", "variety")))
    print()
    print(f"Each row is the whole demo ({result['epochs']} epochs); the verdicts are its report's.")
    if any("nn_ci95" not in r for r in result["runs"].values()):
        print("This result file is from an earlier version of the bench, which saved fewer fields: \"-\" marks "
              "what it lacks. `make bench SECTION=recipe` measures them all.")


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runs = {name: run_variant(i, o) for i, (name, o) in enumerate(VARIANTS.items())}
    result = save(RESULT, {"epochs": EPOCHS, "runs": runs})
    show(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
