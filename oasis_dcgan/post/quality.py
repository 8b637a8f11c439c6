"""What a set of images scores against the training split, and the verdicts read from intervals.

A set's `Profile` holds the per-image numbers (the exact nearest-neighbour SSIM to the training
split, the same pair's SSIM over the brain only, and the MS-SSIM of every pair of a subset);
every summary, share and ratio is read from it with its 95% interval (intervals.py), and every
verdict follows the intervals, never a fixed band on a point estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..imaging import to_unit
from . import intervals, metrics

# diversity.verdict, from the ratio of mean pairwise MS-SSIM (generated over real): above 1 the
# images are more alike than real slices are
LESS_VARIED, AS_VARIED, MORE_VARIED = "less varied", "as varied", "more varied"
COPYING_P = 0.05   # the one-sided test that flags copying
SIGN_OF_COPYING, NO_SIGN, INCONCLUSIVE = "sign of copying", "no sign of copying", "inconclusive"  # copying.verdict
THRESHOLD_RULE = ("the highest nearest-neighbour SSIM of any held-out image, validate and test pooled (the maximum, "
                  "not a percentile)")


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


def exceeding(p: Profile, threshold: float) -> dict:
    k = int((p.nn > threshold).sum())
    return {"count": k, "n": len(p), "share": k / len(p), "ci95": intervals.share_interval(k, len(p))}


def left_out_share(held: Profile) -> dict | None:
    """With one held-out split: each case against the maximum of the others, so the share is out of sample."""
    if held.cases is None or len(np.unique(held.cases)) < 2:
        return None
    k = sum(int((held.nn[held.cases == c] > held.nn[held.cases != c].max()).sum()) for c in np.unique(held.cases))
    return {"count": k, "n": len(held), "share": k / len(held), "ci95": intervals.share_interval(k, len(held)),
            "from": "each held-out case against the others' maximum"}


def copying(gen: Profile, threshold: float, reference: dict) -> dict:
    """The share of `gen` above the held-out maximum, against the share unseen brains reach.

    Flagged when the generated share is higher beyond chance (one-sided Fisher exact test);
    'no sign' needs, besides, the held-out share inside or above the generated share's interval.
    """
    out = exceeding(gen, threshold)
    table = [[out["count"], out["n"] - out["count"]], [reference["count"], reference["n"] - reference["count"]]]
    p = float(stats.fisher_exact(table, alternative="greater").pvalue)
    flagged = p < COPYING_P
    consistent = out["ci95"][0] <= reference["share"]
    return {"flagged": flagged, "share": out["share"], "ci95": out["ci95"], "count": out["count"], "n": out["n"],
            "held_out_share": reference["share"], "held_out_ci95": reference["ci95"],
            "held_out_count": reference["count"], "held_out_n": reference["n"],
            "held_out_from": reference["from"], "p_value": p, "threshold": threshold,
            "threshold_rule": THRESHOLD_RULE,
            "verdict": SIGN_OF_COPYING if flagged else (NO_SIGN if consistent else INCONCLUSIVE)}


def _pairs_mean(mat: np.ndarray, idx: np.ndarray) -> float:
    """The mean over a resample's pairs; a repeated image's self-pair is nan and left out (a resample of one
    image repeated has no pair: nan, which the percentiles skip)."""
    sub = mat[np.ix_(idx, idx)]
    pairs = sub[~np.isnan(sub)]
    return float(pairs.mean()) if len(pairs) else float("nan")


def diversity(p: Profile, real: Profile, rng_seed: int) -> dict | None:
    """Mean pairwise MS-SSIM of p against the real set's, as a ratio with a bootstrap interval."""
    if p.pairs is None or real.pairs is None:
        return None
    gen_mean, real_mean = float(np.nanmean(p.pairs)), float(np.nanmean(real.pairs))
    rng = np.random.default_rng(rng_seed)
    ratios = [_pairs_mean(p.pairs, a) / _pairs_mean(real.pairs, b) for a, b in zip(
        intervals.resamples(len(p.pairs), rng, p.pair_cases), intervals.resamples(len(real.pairs), rng,
                                                                                   real.pair_cases))]
    ci = intervals.percentiles(ratios)
    side = intervals.relation(ci, [1.0, 1.0])
    return {"generated": gen_mean, "real": real_mean, "ratio": gen_mean / real_mean, "ci95": ci,
            "verdict": {1: LESS_VARIED, 0: AS_VARIED, -1: MORE_VARIED}[side], "n": len(p.pairs),
            "real_n": len(real.pairs)}
