"""The checks beside the seed metric, each one definition in CHECKS: how it is computed, its
rows in the report's metrics table, and its reading in words. metrics.json holds each check's
result under its name; the report, the table and the readings all come from CHECKS.

The seed metric alone says one generated slice resembles one real slice. These say more:
memorisation (nearest-neighbour SSIM, against unseen brains as the baseline), collapse
(MS-SSIM diversity against real slices), and FID/KID with precision/recall when a local
feature extractor is given.
"""
from __future__ import annotations

import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import rundir
from ..config import Config
from ..imaging import to_unit
from ..prep.manifest import load_manifest
from ..prep.reader import ShardReader, sample_batches
from . import features, figures, metrics, samples as generated_samples

# The bands the readings use, the demo's goal's (README, "The demo's recipe"): the nearest-neighbour
# median at most NEAR_BASELINE under the held-out one, and not over it by more than COPYING (that
# would be copying); diversity within DIVERSITY_BAND of the real set's.
NEAR_BASELINE, COPYING, DIVERSITY_BAND = 0.05, 0.02, 0.10


def final_generators(run: rundir.RunDir) -> tuple[Path | None, Path | None]:
    """The final generator and the raw one beside the average, of a finished run only: while a run
    trains or after it stopped, the files there may be an earlier finish's."""
    if not run.finished():
        return None, None
    return run.generator, (run.generator_raw if run.generator_raw.is_file() else None)


@dataclass
class Context:
    """What the checks share: the run, the compared split, and the generated images they judge."""
    run: rundir.RunDir
    last_batch: tuple[int, Path]    # the newest epoch's fixed-noise batch: judged while no final generator exists
    reader: ShardReader             # the compared split (metrics.split)
    dataset: str
    cfg: Config
    log: typing.Callable = print
    results: dict = field(default_factory=dict)

    def __post_init__(self):
        m = self.cfg.metrics
        self.final, self.raw = final_generators(self.run)
        gen = generated_samples.generate(self.final, m.nn_samples, m.seed + 1) if self.final else None
        self.source = self.final.name if self.final else ""
        if gen is None:
            gen = figures.load_batch(self.last_batch[1])
            self.source = f"fixed-noise batch of epoch {self.last_batch[0]} (no final generator yet)"
        self.generated = gen
        self.k = min(m.diversity_samples, len(gen))  # images per diversity set


# ----------------------------------------------------------------------------- computing them

def nearest_neighbours(ctx: Context) -> dict:
    t0 = time.perf_counter()
    nn = metrics.nearest_ssim(ctx.generated, ctx.reader)
    ctx.log(f"[postprocess] exact nearest neighbours of {len(ctx.generated)} generated images among "
            f"{len(ctx.reader)} in {time.perf_counter() - t0:.1f} s")
    return {**metrics.summary(nn["ssim"]), "n": len(ctx.generated), "source": ctx.source,
            "candidates_per_image": len(ctx.reader), "exact": True, "split": ctx.cfg.metrics.split,
            "nearest_index": nn["index"].tolist(), "values": nn["ssim"].tolist()}


def holdout_split(dataset: str, train_split: str) -> str | None:
    """The split whose images stand for unseen brains: validate, else test, never the compared one."""
    splits = load_manifest(dataset)["splits"]
    return next((s for s in ("validate", "test") if s in splits and s != train_split), None)


def held_out_baseline(ctx: Context) -> dict:
    """The same nearest-neighbour SSIM for real images the generator never saw: what 'not copying' looks like."""
    m = ctx.cfg.metrics
    split = holdout_split(ctx.dataset, m.split)
    if split is None:
        return {"note": "no held-out split in the dataset: no baseline"}
    held = ShardReader(ctx.dataset, split)
    idx = np.sort(np.random.default_rng(m.seed + 5).choice(len(held), min(len(ctx.generated), len(held)),
                                                           replace=False))
    nn = metrics.nearest_ssim(to_unit(held.read(idx)), ctx.reader)
    return {**metrics.summary(nn["ssim"]), "n": len(idx), "split": split, "values": nn["ssim"].tolist()}


def raw_generator(ctx: Context) -> dict | None:
    """With a generator average, the nearest-neighbour and diversity checks for the raw generator saved beside it."""
    if ctx.raw is None:
        return None
    m = ctx.cfg.metrics
    raw = generated_samples.generate(ctx.raw, m.nn_samples, m.seed + 1)
    nn = metrics.nearest_ssim(raw, ctx.reader)
    return {"nn_ssim": metrics.summary(nn["ssim"]),
            "ms_ssim_diversity": metrics.diversity(raw[:ctx.k], seed=m.seed)["mean"] if ctx.k >= 2 else None,
            "note": "the generator's own weights; everything else in this file uses the generator average"}


def diversity(ctx: Context) -> dict:
    m, k = ctx.cfg.metrics, ctx.k
    _, real = sample_batches(ctx.dataset, 1, k, m.seed + 2, m.split)
    gen_div = metrics.diversity(ctx.generated[:k], seed=m.seed) if k >= 2 else {}
    real_div = metrics.diversity(real[0], seed=m.seed) if k >= 2 else {}
    return {"generated": gen_div.get("mean"), "real": real_div.get("mean"), "n": k,
            "generated_ci95": gen_div.get("ci95"), "real_ci95": real_div.get("ci95"),
            "scales": gen_div.get("scales"), "real_split": m.split}


def feature_distances(ctx: Context) -> dict:
    """FID, KID and precision/recall: the split's real images against at least as many generated ones."""
    m = ctx.cfg.metrics
    if not m.fid_weights:
        return {"fid": None, "kid": None, "note": "not computed: no feature-extractor weights were given "
                "(set metrics.fid_weights to a local .keras file). Nothing is ever downloaded."}
    if ctx.final is None:
        return {"fid": None, "kid": None, "note": "not computed: the run has no final generator yet"}
    reader = ShardReader(ctx.dataset, m.split)
    n_real = min(len(reader), m.fid_real_images) if m.fid_real_images else len(reader)
    idx = np.sort(np.random.default_rng(m.seed + 3).choice(len(reader), n_real, replace=False))
    gen = generated_samples.generate(ctx.final, max(n_real, m.fid_generated_images), m.seed + 4)
    t0 = time.perf_counter()
    net = features.load_extractor(m.fid_weights)
    f_real = features.features(net, to_unit(reader.read(idx)), m.fid_preprocessing)
    f_gen = features.features(net, gen, m.fid_preprocessing)
    out = {**features.frechet_distance(f_gen, f_real),
           **features.kid(f_gen, f_real, m.kid_subsets, m.kid_subset_size, m.seed),
           **features.precision_recall(f_real, f_gen, m.pr_neighbours),
           "extractor": m.fid_weights, "input_size": list(features.input_size(net)), "features": int(f_real.shape[1]),
           "preprocessing": m.fid_preprocessing, "n_real": n_real, "n_generated": len(gen), "split": m.split}
    out["kid"] = out["kid_mean"]  # the key metrics.json has always had
    ctx.log(f"[postprocess] FID {out['fid']:.2f}, KID {out['kid_mean']:.4f} +- {out['kid_std']:.4f}, precision "
            f"{out['precision']:.2f}, recall {out['recall']:.2f} ({n_real} real, {len(gen)} generated, "
            f"{time.perf_counter() - t0:.1f} s)")
    return out


# ----------------------------------------------------------------------------- reading them

def fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def nn_rows(m: dict) -> list[list[str]]:
    nn = m["nn_ssim"]
    return [[f"nearest-neighbour SSIM to the {nn.get('split', 'train')} split, median (n={nn.get('n', 0)}, exact)",
             fmt(nn.get("median")), "-"]]


def held_out_rows(m: dict) -> list[list[str]]:
    held = m.get("nn_ssim_held_out", {})
    return [[f"the same for held-out {held.get('split', '-')} images (baseline: no copying)",
             fmt(held.get("median")), "-"]]


def diversity_rows(m: dict) -> list[list[str]]:
    d = m["ms_ssim_diversity"]
    return [["MS-SSIM diversity, generated / real", f"{fmt(d.get('generated'))} / {fmt(d.get('real'))}", "-"]]


def feature_rows(m: dict) -> list[list[str]]:
    f = m[FEATURES]
    return [["FID / KID", f"{fmt(f.get('fid'))} / {fmt(f.get('kid'))}", "-"],
            ["precision / recall (k-NN, extractor features)", f"{fmt(f.get('precision'))} / {fmt(f.get('recall'))}",
             "-"]]


def nn_reading(m: dict) -> str | None:
    gen, held = m["nn_ssim"].get("median"), m.get("nn_ssim_held_out", {}).get("median")
    if gen is None or held is None:
        return None
    gap = gen - held
    head = f"Nearest-neighbour SSIM: median {gen:.3f} against {held:.3f} for unseen real slices (gap {gap:+.3f}). "
    if gap > COPYING:
        return head + "The samples are closer to training images than unseen brains are: a sign of copying."
    if gap >= -NEAR_BASELINE:
        return head + "The samples are as close to the training images as unseen brains are, and no closer."
    return head + ("A typical sample is further from its nearest training image than an unseen brain is: no sign "
                   "of copying, and not yet as brain-like as real slices.")


def diversity_reading(m: dict) -> str | None:
    d = m.get("ms_ssim_diversity", {})
    gen, real = d.get("generated"), d.get("real")
    if gen is None or not real:
        return None

    def ci(key):
        lo_hi = d.get(key)
        return f" (95% bootstrap interval {lo_hi[0]:.3f}-{lo_hi[1]:.3f})" if lo_hi else ""

    ratio = gen / real
    head = (f"MS-SSIM diversity over {d.get('scales', '?')} scales, {d.get('n', '?')} images each: generated "
            f"{gen:.3f}{ci('generated_ci95')}, real {d.get('real_split', 'train')} slices {real:.3f}"
            f"{ci('real_ci95')}, ratio {ratio:.2f}. ")
    if ratio > 1 + DIVERSITY_BAND:
        return head + "The samples are more alike than real slices are: too little variety (collapse at the extreme)."
    if ratio < 1 - DIVERSITY_BAND:
        return head + "The samples are less alike than real slices are: noise or inconsistent anatomy."
    return head + "The samples vary as much as real slices do."


# ----------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Check:
    name: str                                               # its key in metrics.json
    compute: typing.Callable[[Context], dict | None]
    rows: typing.Callable[[dict], list[list[str]]] = lambda m: []   # its rows of the report's metrics table
    reading: typing.Callable[[dict], str | None] = lambda m: None   # what it says, read against its baseline


# In the order they run and are reported: the held-out baseline after the check it is a baseline for.
CHECKS = (
    Check("nn_ssim", nearest_neighbours, nn_rows, nn_reading),
    Check("nn_ssim_held_out", held_out_baseline, held_out_rows),
    Check("raw_generator", raw_generator),
    Check("ms_ssim_diversity", diversity, diversity_rows, diversity_reading),
    Check("feature_distances", feature_distances, feature_rows),
)
NN, HELD_OUT, FEATURES = CHECKS[0].name, CHECKS[1].name, CHECKS[4].name  # what the report's figures read


def run_all(ctx: Context) -> dict:
    """Every check's result, by name (metrics.json holds them beside the seed metric)."""
    for check in CHECKS:
        ctx.results[check.name] = check.compute(ctx)
    return ctx.results


def table_rows(m: dict) -> list[list[str]]:
    return [row for check in CHECKS for row in check.rows(m)]


def readings(m: dict) -> list[str]:
    """This run's checks read against their baselines, in words: what a reviewer asks first."""
    return [r for check in CHECKS if (r := check.reading(m))]
