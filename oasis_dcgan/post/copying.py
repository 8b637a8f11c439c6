"""Copying, in two parts: exact copies counted with zero tolerance, and near copies tested by subject.

Exact copies (`duplicates`): a sample whose pixels equal a training slice's, or whose exact
nearest-neighbour SSIM is at least DUPLICATE_SSIM. One is enough to say the generator copies.

Near copies (`near_copies`): a copy that was blurred, shifted, flipped or noised is no longer
equal to its source, nor even much closer to it than an unseen brain is to the training set.
What gives it away is that one training subject, its source, stands out: it is far closer to
that subject than to any other. An unseen brain is about as close to its best training subject
as to its second best. So each image's `source gap` is the SSIM to its closest training subject
minus the SSIM to the next closest, each subject's best slice taken over the image, its mirror
image and its shifts by up to SHIFT_PX comparison pixels, all at COMPARE_SIZE pixels (where a
shift of 2 pixels at 64 is one pixel). The training subjects play the unseen brains of the
comparison, so the statistic is the same for a generated image and a held-out one, and the
held-out subjects give its null: which gaps unseen brains reach, estimated subject by subject.

The test: the share of samples above the held-out gaps' upper percentile, against the share
unseen brains reach there, each held-out subject against a threshold set by the others (its
slices are never independent draws). The null share's upper 95% bound over subjects is what the
samples must beat (one-sided binomial test): a conservative test, whose false-flag rate the
bench measures on fresh brains.
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy import stats

from . import metrics
from .verdicts import COPIES, NEAR_COPIES, NO_SIGN, UNDETERMINED

DUPLICATE_SSIM = 0.99      # at or above: a copy, whatever else differs
COMPARE_SIZE = 32          # pixels a side where near copies are looked for
SHIFT_PX = 1               # shifts of up to this many comparison pixels, both axes (2 px at 64, 8 at 256)
TAIL = 0.95                # the held-out gaps' percentile a sample must exceed
MIN_SUBJECTS = 4           # held-out subjects needed for a null
NULL_P = 0.05              # the one-sided test's level
MAX_NULL_SHARE = 0.5       # above this, the null share is too uncertain for any verdict


# ----------------------------------------------------------------------------- exact copies

def pixel_hashes(pixels: np.ndarray) -> list[str]:
    """One digest per uint8 image: equal pixels, equal digest."""
    return [hashlib.sha1(np.ascontiguousarray(p).tobytes()).hexdigest() for p in pixels]


def duplicates(nn_ssim: np.ndarray, sample_pixels: np.ndarray, train_hashes: set[str],
               held_nn_ssim: np.ndarray | None) -> dict:
    """The samples equal to a training slice or within DUPLICATE_SSIM of one, and how many unseen
    brains the same rule catches (none, on any data where the rule means what it says)."""
    equal = np.array([h in train_hashes for h in pixel_hashes(sample_pixels)], bool)
    close = np.asarray(nn_ssim) >= DUPLICATE_SSIM
    which = np.flatnonzero(equal | close)
    held = None if held_nn_ssim is None else int((np.asarray(held_nn_ssim) >= DUPLICATE_SSIM).sum())
    return {"count": int(len(which)), "n": int(len(close)), "indices": which.tolist(),
            "equal_pixels": int(equal.sum()), "rule": f"equal pixels, or nearest-neighbour SSIM >= {DUPLICATE_SSIM}",
            "held_out_count": held}


# ----------------------------------------------------------------------------- near copies

def comparison_images(images: np.ndarray) -> np.ndarray:
    """[N, H, W] on (-1, 1) at COMPARE_SIZE (area-averaged), float32."""
    x = np.asarray(images, np.float32)
    if x.shape[1] <= COMPARE_SIZE:
        return x
    import tensorflow as tf

    return tf.image.resize(x[..., None], (COMPARE_SIZE, COMPARE_SIZE), method="area").numpy()[..., 0]


def variants(x: np.ndarray, shift: int = SHIFT_PX) -> list[np.ndarray]:
    """The images, and their mirror images, shifted by every offset up to `shift` pixels (edges repeated)."""
    out, h, w = [], x.shape[1], x.shape[2]
    for m in (x, x[:, :, ::-1]):
        padded = np.pad(m, ((0, 0), (shift, shift), (shift, shift)), mode="edge")
        out += [np.ascontiguousarray(padded[:, shift + dy:shift + dy + h, shift + dx:shift + dx + w])
                for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)]
    return out


def subject_closeness(images: np.ndarray, train: np.ndarray, train_cases: np.ndarray) -> np.ndarray:
    """[N, S]: each image's highest SSIM to each training subject's slices, over its variants."""
    q = comparison_images(images)
    subjects = np.unique(train_cases)
    best = np.full((len(q), len(subjects)), -np.inf, np.float32)
    for v in variants(q):
        for j, s in enumerate(subjects):
            best[:, j] = np.maximum(best[:, j], metrics.cross_ssim(v, train[train_cases == s]).max(axis=1))
    return best


def source_gaps(closeness: np.ndarray) -> np.ndarray:
    """Closest training subject minus the next closest: large for a copy of any kind."""
    top = np.sort(closeness, axis=1)[:, -2:]
    return (top[:, 1] - top[:, 0]).astype(np.float64)


def null_share(gaps: np.ndarray, cases: np.ndarray) -> dict | None:
    """How often an unseen brain's gap exceeds the threshold, each subject against the others' threshold."""
    subjects = np.unique(cases)
    if len(subjects) < MIN_SUBJECTS:
        return None
    rates = np.array([np.mean(gaps[cases == s] > np.quantile(gaps[cases != s], TAIL)) for s in subjects])
    se = rates.std(ddof=1) / np.sqrt(len(rates))
    upper = float(min(1.0, rates.mean() + stats.t.ppf(1 - NULL_P, len(rates) - 1) * se))
    return {"share": float(rates.mean()), "upper": upper, "subjects": int(len(subjects)),
            "per_subject": rates.round(4).tolist()}


def near_copies(gaps: np.ndarray, held_gaps: np.ndarray | None, held_cases: np.ndarray | None) -> dict:
    """The near-copy test: samples above the held-out gaps' TAIL percentile, against unseen brains' share."""
    out = {"gap_median": float(np.median(gaps)), "n": int(len(gaps)), "compare_size": COMPARE_SIZE,
           "shift_px": SHIFT_PX, "tail": TAIL}
    null = None if held_gaps is None else null_share(held_gaps, held_cases)
    if null is None:
        subjects = 0 if held_cases is None else len(np.unique(held_cases))
        plural = "" if subjects == 1 else "s"
        return {**out, "verdict": UNDETERMINED, "flagged": None,
                "why": f"{subjects} held-out subject{plural}; the null needs at least {MIN_SUBJECTS}"}
    threshold = float(np.quantile(held_gaps, TAIL))
    k = int((gaps > threshold).sum())
    p = float(stats.binomtest(k, len(gaps), null["upper"], alternative="greater").pvalue)
    out.update({"threshold": threshold, "count": k, "share": k / len(gaps), "held_out": null, "p_value": p,
                "held_out_gap_median": float(np.median(held_gaps))})
    if p < NULL_P:
        return {**out, "verdict": NEAR_COPIES, "flagged": True}
    if null["upper"] > MAX_NULL_SHARE:
        return {**out, "verdict": UNDETERMINED, "flagged": None,
                "why": f"unseen brains' share above the threshold may reach {null['upper']:.2f}: the held-out "
                       "subjects disagree too much to say"}
    return {**out, "verdict": NO_SIGN, "flagged": False}


def verdict(dup: dict, near: dict) -> str:
    """One copy is enough: "no sign" only with no duplicate and no sign of near copies."""
    return COPIES if dup["count"] else near["verdict"]
