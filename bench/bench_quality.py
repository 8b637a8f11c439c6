"""Quality against images seen: the seed's recipe, the demo's, and the demo's with the small-data
step (spectral norm, hinge, TTUR 4:1, DiffAugment), three training seeds each.

Each run is the real train job (`python -m jobs.train`, one process) on the demo's sample brains
at 64x64, extended epoch point by epoch point (a finished run extended, as a user would); after
each point its generator average is scored by the report's own checks: the distribution metric,
the median nearest-neighbour SSIM with its interval, the share of near copies and the diversity
ratio. The anchors of the ladder are drawn as lines. From the curves: the kimg each recipe takes
to reach the seed recipe's final median, with the seed-to-seed spread (goal: the demo's recipe in
at most half the seed recipe's kimg, every seed of it), and each recipe's distribution accuracy
at the demo's budget of 40 epochs against the blurred and linear anchors' (goal: below both).

One process takes the demo's global batch (8 images a rank on its 2 ranks: 16), so BatchNorm
sees 16 images where the demo's ranks each see 8. Every recipe keeps the suite's generator average.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np

from bench.common import REPO, RESULTS, WORK, save, table
from bench.probe_generator import dataset
from oasis_dcgan import config

EPOCH_POINTS = tuple(int(e) for e in os.environ.get("OASIS_QUALITY_EPOCHS", "5,10,20,30,40,60,80").split(","))
RNG_SEEDS = (0, 1, 2)
SAMPLES = 128   # generated images scored at each point
_DEMO = config.load(config.preset("demo"))
RECIPES = {   # short name (the run's folder): what it sets
    "seed": config.seed_recipe(),
    "demo": {**config.recipe(_DEMO), "train.batch_size": _DEMO.train.batch_size * _DEMO.cluster.tasks_per_node},
}
# The literature's step for small data and short budgets, on top of the demo's recipe.
RECIPES["small-data"] = {**RECIPES["demo"], "train.loss": "hinge", "train.d_spectral_norm": True,
                         "train.d_lr_ratio": 4.0, "train.augment": "translation,cutout,color"}
LABELS = {"seed": "the seed's recipe", "demo": "the demo's recipe",
          "small-data": "the demo's + spectral norm, hinge, TTUR 4:1, DiffAugment"}
COLOURS = {"seed": "tab:blue", "demo": "tab:orange", "small-data": "tab:green"}

BUDGET_EPOCHS = _DEMO.train.epochs   # the distribution goal is read here: what a demo user trains
RESULT = "quality"   # bench/results/quality.json

def train_to(run, data, recipe: dict, rng_seed: int, epochs: int) -> float:
    """Train (or extend) the run to `epochs`; its training seconds."""
    args = [sys.executable, "-m", "jobs.train", str(data), str(run), "--epochs", str(epochs), "--seed", str(rng_seed),
            "--executor", "inprocess", "--set", "train.tick_seconds=600"]
    for o in config.as_overrides(recipe):
        args += ["--set", o]
    t0 = time.time()
    subprocess.run(args, cwd=REPO, check=True, capture_output=True)
    return time.time() - t0


def score(ctx, generator, kimg: float) -> dict:
    """The report's checks on SAMPLES images of the generator, against the held-out side scored once."""
    from oasis_dcgan.post import checks, quality, samples

    at = checks.Context(samples.generate(generator, SAMPLES, 1234), "curve", ctx.dataset, ctx.m, base=ctx.base)
    nn, copy, div = quality.nn_summary(at.gen, 0), checks.copying(at), quality.diversity(at.gen, at.real, 0, at.held)
    dist = checks.distribution_metric(at)
    return {"kimg": kimg, "median": nn["median"], "ci95": nn["ci95"], "brain_median": nn["brain_median"],
            "near_copy_share": copy["near_copies"].get("share"), "copying": copy["verdict"],
            "diversity_ratio": div["ratio"], "diversity_ci95": div["ci95"], "distribution": dist["accuracy"],
            "distribution_ci95": dist["ci95"]}


def run_curve(ctx, data, name: str, recipe: dict, rng_seed: int) -> dict:
    run = WORK / "quality" / f"{name}-{rng_seed}"
    shutil.rmtree(run, ignore_errors=True)
    batch, images = recipe["train.batch_size"], len(ctx.base.train)
    points, train_s = [], 0.0
    for epochs in EPOCH_POINTS:
        train_s += train_to(run, data, recipe, rng_seed, epochs)
        kimg = epochs * (images // batch) * batch / 1000
        points.append({**score(ctx, run / "generator.keras", kimg), "epochs": epochs, "train_s": train_s})
        print(f"  {LABELS[name]}, seed {rng_seed}: {kimg:.1f} kimg  median {points[-1]['median']:.3f}  "
              f"diversity {points[-1]['diversity_ratio']:.2f}", file=sys.stderr, flush=True)
    return {"rng_seed": rng_seed, "points": points}


def kimg_to_reach(points: list[dict], level: float) -> float | None:
    """Where the curve first reaches `level`, between measured points by straight lines; None if never."""
    prev = None
    for p in points:
        if p["median"] >= level:
            if prev is None:
                return p["kimg"]
            f = (level - prev["median"]) / (p["median"] - prev["median"])
            return prev["kimg"] + f * (p["kimg"] - prev["kimg"])
        prev = p
    return None


def at_budget(points: list[dict]) -> dict:
    """The point at the demo's epoch budget, or the last one short of it."""
    within = [p for p in points if p.get("epochs", 0) <= BUDGET_EPOCHS]
    return within[-1] if within else points[-1]


def anchor_value(a, key: str):
    """An anchor's figure: result files before the distribution metric hold the median alone."""
    return (a if key == "median" else None) if isinstance(a, float) else a.get(key)


def summarise(curves: dict, anchors: dict) -> dict:
    seed_name, demo_name = "seed", "demo"
    level = float(np.mean([c["points"][-1]["median"] for c in curves[seed_name]]))
    final_kimg = curves[seed_name][0]["points"][-1]["kimg"]
    reach = {name: [kimg_to_reach(c["points"], level) for c in runs] for name, runs in curves.items()}
    demo = reach[demo_name]
    met = all(k is not None and k <= final_kimg / 2 for k in demo)
    # The distribution goal: at the demo's budget, every seed's accuracy below both the blurred and the linear
    # anchor's.
    bar = min(anchor_value(anchors[k], "distribution") for k in ("blurred", "linear"))
    finals = {name: [at_budget(c["points"])["distribution"] for c in runs] for name, runs in curves.items()}
    return {"level": level, "seed_final_kimg": final_kimg, "kimg_to_level": reach, "goal_met": met,
            "budget_epochs": BUDGET_EPOCHS, "distribution_bar": bar, "budget_distribution": finals,
            "beats_anchors": {name: all(a < bar for a in v) for name, v in finals.items()}}


def plot(result: dict) -> None:
    from oasis_dcgan.imaging import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    panels = (("distribution", "distribution accuracy (0.5: as unseen brains)"), ("median", "NN-SSIM median"),
              ("near_copy_share", "share of near copies"),
              ("diversity_ratio", "diversity ratio (1: as varied as real)"))
    for (key, label), ax in zip(panels, axes):
        for name, runs in result["curves"].items():
            for i, c in enumerate(runs):
                ax.plot([p["kimg"] for p in c["points"]], [p.get(key) for p in c["points"]], color=COLOURS[name],
                        alpha=0.8, label=LABELS[name] if i == 0 else None, marker="o", markersize=3)
        ax.set_xlabel("kimg (thousands of training images seen)")
        ax.set_title(label)
    for ax, key in ((axes[0], "distribution"), (axes[1], "median")):   # the ladder: a dashed line each
        for name, a in result["anchors"].items():
            if (v := anchor_value(a, key)) is not None:
                ax.axhline(v, linestyle="--", color="grey", linewidth=0.8)
                ax.text(0.99, v, name.replace("_", "-"), transform=ax.get_yaxis_transform(), ha="right",
                        va="bottom", fontsize=7, color="dimgrey")
    axes[3].axhline(1.0, linestyle="--", color="grey", linewidth=0.8)
    axes[0].legend(fontsize=8)
    save_figure(fig, RESULTS / "quality_curves.png")


def _finals(points: list[dict], key: str, spec: str) -> str:
    return " / ".join("-" if p.get(key) is None else f"{p[key]:{spec}}" for p in points)


def show(result: dict) -> None:
    s = result["summary"]
    rows = []
    for name, runs in result["curves"].items():
        finals = [{**c["points"][-1], "near": c["points"][-1].get("near_copy_share", c["points"][-1].get(
            "copying_share"))} for c in runs]
        reach = s["kimg_to_level"][name]
        rows.append((LABELS[name], _finals(finals, "distribution", ".2f"), _finals(finals, "median", ".3f"),
                     _finals(finals, "diversity_ratio", ".2f"), _finals(finals, "near", ".3f"),
                     " / ".join("never" if k is None else f"{k:.1f}" for k in reach)))
    print(table(rows, ("one process, 64x64, seeds 0 / 1 / 2", f"distribution accuracy at {s['seed_final_kimg']:.1f} "
                       "kimg", "NN-SSIM median", "diversity ratio", "copying share",
                       f"kimg to reach {s['level']:.3f}")))
    anchors = ", ".join(f"{k} {anchor_value(v, 'median'):.3f}" + (
        f" (distribution {anchor_value(v, 'distribution'):.2f})" if anchor_value(v, "distribution") is not None
        else "") for k, v in result["anchors"].items())
    print(f"\nThe level is the seed recipe's final median (mean of its seeds). Anchors: {anchors}. Goal (the demo's "
          f"recipe reaches it in at most {s['seed_final_kimg'] / 2:.1f} kimg, every seed): "
          f"{'met' if s['goal_met'] else 'not met'}. Curves: bench/results/quality_curves.png.")
    if "beats_anchors" in s:
        won = [LABELS[n] for n, ok in s["beats_anchors"].items() if ok]
        at = {n: " / ".join(f"{a:.2f}" for a in v) for n, v in s["budget_distribution"].items()}
        print(f"Distribution goal at the demo's budget of {s['budget_epochs']} epochs (every seed's accuracy below "
              f"the blurred and linear anchors' {s['distribution_bar']:.2f}): " + "; ".join(
                  f"{LABELS[n]} {a}" for n, a in at.items()) + ". Beaten by: " + (", ".join(won) or "none") + ".")
    else:
        print("This result file predates the distribution metric (\"-\"): `make bench SECTION=quality` measures it.")


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.post import checks
    from oasis_dcgan.prep.reader import ShardReader

    data = dataset(WORK / "probe")
    m = config.load(None, [f"metrics.nn_samples={SAMPLES}", f"metrics.diversity_samples={SAMPLES}"]).metrics
    held = ShardReader(data, "validate")
    ctx = checks.Context(to_unit(held.read(np.arange(SAMPLES))), "anchors", str(data), m)
    ladder = checks.ladder(ctx)
    anchors = {k: {"median": ladder[k][checks.NN]["median"], "distribution": ladder[k][checks.DISTRIBUTION]["accuracy"]}
               for k in ("held_out", "blurred", "linear")}
    curves = {name: [] for name in RECIPES}
    for rng_seed in RNG_SEEDS:   # seeds outermost: a drift in the machine's speed touches both recipes alike
        for name, recipe in RECIPES.items():
            curves[name].append(run_curve(ctx, data, name, recipe, rng_seed))
    result = {"epochs": list(EPOCH_POINTS), "samples": SAMPLES, "anchors": anchors, "curves": curves,
              "recipes": RECIPES}
    result["summary"] = summarise(curves, anchors)
    result = save(RESULT, result)
    plot(result)
    show(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
