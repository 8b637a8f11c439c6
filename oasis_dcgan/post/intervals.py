"""Uncertainty for the quality checks: bootstrap intervals and binomial intervals on shares.

Generated images are independent draws, so they are resampled one by one. Real images are
not: slices of one brain resemble each other, so held-out images are resampled by case
(subject), which is what makes their interval honest with only a few brains in a split.
"""
from __future__ import annotations

import typing
import zlib

import numpy as np
from scipy import stats

LEVEL = 0.95
ROUNDS = 1000


def percentiles(values) -> list[float]:
    """The central 95% of bootstrap values; a nan round (a resample with nothing to measure) is skipped."""
    lo, hi = np.nanpercentile(values, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return [float(lo), float(hi)]


def resamples(n: int, rng: np.random.Generator, groups=None) -> typing.Iterator[np.ndarray]:
    """ROUNDS index sets of a bootstrap: n items drawn with replacement, or whole groups when given."""
    if groups is None:
        for _ in range(ROUNDS):
            yield rng.integers(0, n, n)
        return
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for _ in range(ROUNDS):
        yield np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])


def stream(seed: int, name: str) -> int:
    """The seed of the random stream called `name` under metrics.seed: every draw names its stream, so a new
    one never shifts another's numbers, as adding an offset to a count would."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def bootstrap(values, statistic: typing.Callable = np.median, groups=None, rng_seed: int = 0) -> list[float]:
    """The 95% percentile-bootstrap interval of `statistic` over `values` (by group when `groups` is given)."""
    v = np.asarray(values, np.float64)
    g = None if groups is None else np.asarray(groups)
    rng = np.random.default_rng(rng_seed)
    return percentiles([statistic(v[idx]) for idx in resamples(len(v), rng, g)])


def share_interval(k: int, n: int) -> list[float]:
    """The exact (Clopper-Pearson) 95% interval of a share of k in n: never narrower than its coverage."""
    if n == 0:
        return [0.0, 1.0]
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=LEVEL, method="exact")
    return [float(ci.low), float(ci.high)]


def relation(a: list[float], b: list[float]) -> int:
    """-1 when interval a lies wholly below b, +1 wholly above, 0 when they overlap."""
    return -1 if a[1] < b[0] else (1 if a[0] > b[1] else 0)
