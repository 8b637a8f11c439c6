"""What a set of images scores against the training split, and the verdicts read from intervals.

A set's `Profile` holds the per-image numbers (the exact nearest-neighbour SSIM to the training
split, the same pair's SSIM over the brain only, and the MS-SSIM of every pair of a subset);
every summary and ratio is read from it with its 95% interval (intervals.py), and every verdict
reads the interval against a margin fixed in advance (verdicts.py), never a point estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..imaging import to_unit
from . import intervals, metrics, verdicts


@dataclass
class Profile:
    """One set of images, scored against the training split."""
    nn: np.ndarray             # each image's highest SSIM to any training image
    nearest: np.ndarray        # the index of that training image
    brain: np.ndarray          # the same pair's SSIM over brain windows only
    pairs: np.ndarray | None   # MS-SSIM of every pair of a random subset (nan diagonal)
    cases: np.ndarray | None = None        # real images' subjects: intervals resample brains, not slices
    pair_cases: np.ndarray | None = None   # the subset's subjects

    def __len__(self) -> int:
        return len(self.nn)


def profile(images: np.ndarray, train, k: int, rng_seed: int, cases=None) -> Profile:
    """Score `images` ([N, H, W] on (-1, 1)) against the training split's reader; k images for diversity."""
    nn = metrics.nearest_ssim(images, train)
    order = np.argsort(nn["index"], kind="stable")   # read the neighbours in index order, then put them back
    neighbours = np.empty_like(images)
    neighbours[order] = to_unit(train.read(nn["index"][order]))
    k = min(k, len(images))
    pick = np.sort(np.random.default_rng(rng_seed).choice(len(images), k, replace=False)) if k >= 2 else None
    cases = None if cases is None else np.asarray(cases)
    return Profile(nn=nn["ssim"].astype(np.float64), nearest=nn["index"],
                   brain=metrics.brain_ssim(images, neighbours).astype(np.float64),
                   pairs=metrics.pair_matrix(images[pick]) if pick is not None else None,
                   cases=cases, pair_cases=None if cases is None or pick is None else cases[pick])


def pairs_only(images: np.ndarray, k: int, rng_seed: int, cases=None) -> Profile:
    """A real training set for the diversity baseline: its nearest neighbours would be itself."""
    pick = np.sort(np.random.default_rng(rng_seed).choice(len(images), min(k, len(images)), replace=False))
    empty = np.zeros(0)
    return Profile(nn=empty, nearest=empty.astype(np.int64), brain=empty, pairs=metrics.pair_matrix(images[pick]),
                   pair_cases=None if cases is None else np.asarray(cases)[pick])


def nn_summary(p: Profile, rng_seed: int) -> dict:
    """The median nearest-neighbour SSIM (the quality reading), whole slice and brain only, with intervals."""
    brain = p.brain[np.isfinite(p.brain)]
    return {"median": float(np.median(p.nn)), "ci95": intervals.bootstrap(p.nn, groups=p.cases, rng_seed=rng_seed),
            "brain_median": float(np.median(brain)) if len(brain) else None,
            "brain_ci95": intervals.bootstrap(p.brain, np.nanmedian, p.cases, rng_seed) if len(brain) else None,
            **{k: v for k, v in metrics.summary(p.nn).items() if k != "median"}, "n": len(p),
            "resampled": "by case" if p.cases is not None else "by image"}


def closeness(gen: Profile, held: Profile, rng_seed: int) -> dict:
    """The samples' median NN-SSIM minus unseen brains' (resampled by image and by case), read with its margin."""
    rng = np.random.default_rng(rng_seed)
    diffs = [np.median(gen.nn[a]) - np.median(held.nn[b]) for a, b in zip(
        intervals.resamples(len(gen), rng, gen.cases), intervals.resamples(len(held), rng, held.cases))]
    ci = intervals.percentiles(diffs)
    return {"difference": float(np.median(gen.nn) - np.median(held.nn)), "ci95": ci,
            "margin": verdicts.CLOSENESS_MARGIN,
            "verdict": verdicts.against(ci, 0.0, verdicts.CLOSENESS_MARGIN, verdicts.FURTHER, verdicts.LEVEL,
                                        verdicts.CLOSER)}


def _pairs_mean(mat: np.ndarray, idx: np.ndarray) -> float:
    """The mean over a resample's pairs; a repeated image's self-pair is nan and left out (a resample of one
    image repeated has no pair: nan, which the percentiles skip)."""
    sub = mat[np.ix_(idx, idx)]
    pairs = sub[~np.isnan(sub)]
    return float(pairs.mean()) if len(pairs) else float("nan")


def _ratio(a: float, b: float) -> float:
    """a / b, or nan when b is 0: pairs that share nothing (MS-SSIM 0) give no scale to read a set against."""
    return a / b if b else float("nan")


def diversity(p: Profile, real: Profile, rng_seed: int, held: Profile | None = None) -> dict | None:
    """Mean pairwise MS-SSIM of p over the real training set's (`ratio`), and over the held-out set's
    (`relative`): the verdict reads the samples against unseen brains, not against 1."""
    if p.pairs is None or real.pairs is None:
        return None
    gen_mean, real_mean = float(np.nanmean(p.pairs)), float(np.nanmean(real.pairs))
    rng = np.random.default_rng(rng_seed)
    ratios = [_ratio(_pairs_mean(p.pairs, a), _pairs_mean(real.pairs, b)) for a, b in zip(
        intervals.resamples(len(p.pairs), rng, p.pair_cases), intervals.resamples(len(real.pairs), rng,
                                                                                   real.pair_cases))]
    out = {"generated": gen_mean, "real": real_mean, "ratio": _ratio(gen_mean, real_mean),
           "ci95": intervals.percentiles(ratios), "n": len(p.pairs), "real_n": len(real.pairs),
           "verdict": verdicts.UNDETERMINED, "why": "no held-out set to read it against"}
    if held is None or held.pairs is None:
        return out
    held_mean = float(np.nanmean(held.pairs))
    rel = [_ratio(_pairs_mean(p.pairs, a), _pairs_mean(held.pairs, b)) for a, b in zip(
        intervals.resamples(len(p.pairs), rng, p.pair_cases), intervals.resamples(len(held.pairs), rng,
                                                                                   held.pair_cases))]
    ci = intervals.percentiles(rel)
    out.pop("why")
    return {**out, "held_out": held_mean, "relative": _ratio(gen_mean, held_mean), "relative_ci95": ci,
            "margin": verdicts.DIVERSITY_MARGIN,
            "verdict": verdicts.against(ci, 1.0, verdicts.DIVERSITY_MARGIN, verdicts.MORE_VARIED,
                                        verdicts.AS_VARIED, verdicts.LESS_VARIED)}
