"""The distribution metric: can a classifier tell a set of images from unseen brains?

No downloaded weights: each image is described by what distinguishes brain slices from their
imitations on any data: its layout (the image at 16x16, area-averaged), its sharpness and noise
(the radial power spectrum at its own resolution), its edges (a histogram of gradient
magnitudes over the brain) and its contrast (a histogram of brain intensities). Blur empties the
spectrum's upper bins and noise fills them, so neither fools it as they fool SSIM.

The test is trained on one half of the set against as many training slices, and scored on the
other half against held-out slices: real brains the classifier never saw, of subjects none of
its training images come from. Cross-validating by subject within one pool biases the accuracy
below chance when subjects are few (each left-out subject drags its class's mean away from
itself); training on the training split and testing on the held-out split does not. Balanced
accuracy 0.5: the set cannot be told from unseen brains; 1: always. The halves are drawn
ROUNDS times, and the interval resamples subjects (held-out slices) and images (samples).
"""
from __future__ import annotations

import numpy as np

from . import intervals
from .verdicts import DISTINGUISHABLE, DISTRIBUTION_MARGIN, INDISTINGUISHABLE, UNDETERMINED

LAYOUT_SIZE = 16      # the layout feature's side, pixels
BINS = 16             # bins of each histogram and of the spectrum
BRAIN_LEVEL = -0.8    # on (-1, 1): where a slice's brain begins, as the brain-only SSIM reads it
ROUNDS = 4
TRAIN_IMAGES = 1024   # training slices the classifier may learn real brains from
C = 0.1               # the logistic regression's inverse regularisation


def _area(x: np.ndarray, size: int) -> np.ndarray:
    import tensorflow as tf

    return tf.image.resize(x[..., None], (size, size), method="area").numpy()[..., 0]


def _spectrum(x: np.ndarray) -> np.ndarray:
    """The log power in BINS rings of spatial frequency, 0 to Nyquist: [N, BINS]."""
    power = np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(1, 2))) ** 2
    h, w = x.shape[1:]
    yy, xx = np.indices((h, w))
    radius = np.hypot(yy - h / 2, xx - w / 2) / (min(h, w) / 2)
    edges = np.linspace(0, 1, BINS + 1)
    return np.stack([np.log(power[:, (radius >= a) & (radius < b)].mean(axis=1) + 1e-8)
                     for a, b in zip(edges[:-1], edges[1:])], axis=1)


def _brain_histograms(x: np.ndarray) -> np.ndarray:
    """Gradient magnitudes (per 1/64 of the width, so sizes compare) and intensities over the brain."""
    gy, gx = np.gradient(x, axis=(1, 2))
    grad = np.hypot(gx, gy) * (x.shape[2] / 64)
    out = []
    for img, g in zip(x, grad):
        brain = img > BRAIN_LEVEL
        count = max(1, int(brain.sum()))
        out.append(np.concatenate([np.histogram(g[brain], BINS, (0.0, 0.5))[0],
                                   np.histogram(img[brain], BINS, (BRAIN_LEVEL, 1.0))[0]]) / count)
    return np.asarray(out)


def describe(images: np.ndarray) -> np.ndarray:
    """[N, H, W] on (-1, 1) -> [N, LAYOUT_SIZE**2 + 3 * BINS] features."""
    x = np.asarray(images, np.float32)
    layout = (_area(x, LAYOUT_SIZE) if x.shape[1] != LAYOUT_SIZE else x).reshape(len(x), -1)
    return np.concatenate([layout, _spectrum(x), _brain_histograms(x)], axis=1)


def _classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, class_weight="balanced"))


def _balanced(cand_right: np.ndarray, real_right: np.ndarray) -> float:
    """The mean of the two classes' hit rates: a set of any size against the held-out slices."""
    return 0.5 * (float(np.mean(cand_right)) + float(np.mean(real_right)))


def two_sample(cand: np.ndarray, cand_groups: np.ndarray, train: np.ndarray, real: np.ndarray,
               real_groups: np.ndarray, rng_seed: int) -> dict:
    """The classifier two-sample test on features: `cand` against unseen `real` features.

    cand_groups: the candidates' subjects (each image its own for generated images); the halves
    never split a subject. train: training-split features the classifier learns real brains from.
    """
    rng = np.random.default_rng(rng_seed)
    groups = np.unique(cand_groups)
    if len(groups) < 2 or len(np.unique(real_groups)) < 2:
        return {"accuracy": None, "verdict": UNDETERMINED, "why": "fewer than 2 subjects or images a side"}
    right_c, seen_c = np.zeros(len(cand)), np.zeros(len(cand))
    right_r = np.zeros(len(real))
    for _ in range(ROUNDS):
        fit = np.isin(cand_groups, rng.permutation(groups)[:len(groups) // 2])
        ref = rng.choice(len(train), min(int(fit.sum()), len(train)), replace=False)
        clf = _classifier().fit(np.concatenate([cand[fit], train[ref]]), np.r_[np.ones(fit.sum()), np.zeros(len(ref))])
        right_c[~fit] += clf.predict(cand[~fit]) == 1
        seen_c[~fit] += 1
        right_r += clf.predict(real) == 0
    scored = seen_c > 0
    rc, gc = right_c[scored] / seen_c[scored], np.asarray(cand_groups)[scored]
    rr, gr = right_r / ROUNDS, np.asarray(real_groups)
    ci = intervals.percentiles([_balanced(rc[a], rr[b]) for a, b in zip(
        intervals.resamples(len(rc), rng, gc), intervals.resamples(len(rr), rng, gr))])
    return {"accuracy": _balanced(rc, rr), "ci95": ci, "n": int(len(cand)), "real_n": int(len(real)),
            "real_subjects": int(len(np.unique(gr))), "rounds": ROUNDS, "verdict": read(ci)}


def read(ci: list[float]) -> str:
    """Indistinguishable when the interval stays below chance + the margin; distinguishable wholly above it."""
    if ci[1] <= 0.5 + DISTRIBUTION_MARGIN:
        return INDISTINGUISHABLE
    if ci[0] > 0.5 + DISTRIBUTION_MARGIN:
        return DISTINGUISHABLE
    return UNDETERMINED
