"""The held-out side of every check: what unseen brains score on the same data, computed once.

A `Baseline` belongs to a dataset and the metrics settings, and to the subjects it must leave
out (those of real slices being judged). Every set judged against it, a run's samples, an
anchor, each draw of a bench, reuses its scored held-out images, their source gaps and features.
"""
from __future__ import annotations

import functools
import logging
import time

import numpy as np

from ..config import MetricsConfig
from ..imaging import to_unit
from ..prep.manifest import load_manifest
from ..prep.reader import ShardReader
from . import copying, distribution, intervals, quality
from .verdicts import UNDETERMINED

log = logging.getLogger(__name__)

HELD_OUT_SPLITS = ("validate", "test")   # in order: the first is read for tuning, the second is the final holdout


def case_ids(split: str, reader: ShardReader, idx: np.ndarray) -> np.ndarray:
    """The subjects of a split's images, named "split/case": the same names wherever they are compared."""
    return np.array([f"{split}/{m['case']}" for m in reader.metadata(idx)])


def sample_ids(n: int) -> np.ndarray:
    """Generated images: each its own subject."""
    return np.array([f"sample/{i}" for i in range(n)])


class Baseline:
    def __init__(self, dataset: str, m: MetricsConfig, exclude: np.ndarray | None = None):
        self.dataset, self.m = str(dataset), m
        self.exclude = None if exclude is None else np.unique(np.asarray(exclude).astype(str))
        self.train = ShardReader(self.dataset, m.split)
        splits = load_manifest(self.dataset)["splits"]
        held = [s for s in HELD_OUT_SPLITS if s in splits and s != m.split and splits[s]["count"]]
        self.held_split, self.test_split = (held + [None, None])[:2]
        self._real, self._distribution = {}, {}

    def fits(self, dataset: str, m: MetricsConfig, exclude) -> bool:
        """Whether images of these subjects may be judged against this baseline: same data and settings, and
        none of their subjects in its pools (leaving out more subjects than needed is allowed)."""
        left_out = exclude is None or (self.exclude is not None and np.isin(np.asarray(exclude).astype(str),
                                                                            self.exclude).all())
        return self.dataset == str(dataset) and self.m == m and left_out

    def seed(self, name: str) -> int:
        """The seed of the random stream `name` (intervals.stream) under metrics.seed."""
        return intervals.stream(self.m.seed, name)

    def scored(self, images: np.ndarray, what: str, stream: str, cases=None, k: int | None = None):
        """The images' nearest neighbours in the training split, and k of them for diversity pairs drawn from
        `stream`."""
        t0 = time.perf_counter()
        k = self.m.diversity_samples if k is None else k
        p = quality.profile(images, self.train, k, self.seed(stream), cases)
        log.info(f"[postprocess] {what}: {len(images)} images against {len(self.train)} {self.m.split} images "
                 f"in {time.perf_counter() - t0:.1f} s")
        return p

    def split_images(self, split: str, n: int = 0, stream: str = "") -> tuple[np.ndarray, np.ndarray]:
        """A split's images on (-1, 1) with their cases, none of the left-out subjects: all, or n at random."""
        reader = ShardReader(self.dataset, split)
        idx = np.arange(len(reader))
        if self.exclude is not None:
            idx = idx[~np.isin(case_ids(split, reader, idx), self.exclude)]
        if n and n < len(idx):
            idx = np.sort(np.random.default_rng(self.seed(stream)).choice(idx, n, replace=False))
        return to_unit(reader.read(idx)), case_ids(split, reader, idx)

    # ---- nearest neighbours and diversity
    @functools.cached_property
    def held_images(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The held-out split's images and cases, read once: the baseline and the blurred anchor share them."""
        if not self.held_split:
            return None
        images, cases = self.split_images(self.held_split)
        return (images, cases) if len(np.unique(cases)) >= 2 else None

    @functools.cached_property
    def held(self) -> quality.Profile | None:
        """The whole held-out split, resampled by case: the baseline a generator is read against."""
        if self.held_images is None:
            return None
        images, cases = self.held_images
        return self.scored(images, f"held-out {self.held_split} split", "held_out", cases)

    def real(self, k: int) -> quality.Profile:
        """k real training slices: the diversity every other set is divided by."""
        if k not in self._real:
            images, cases = self.split_images(self.m.split, k, "real")
            self._real[k] = quality.pairs_only(images, k, self.seed("real"), cases)
        return self._real[k]

    @functools.cached_property
    def test(self) -> quality.Profile | None:
        """The final holdout: shown in the report beside the held-out baseline, never tuned on."""
        if self.held is None or not self.test_split:
            return None
        images, cases = self.split_images(self.test_split)
        return (self.scored(images, f"final holdout ({self.test_split} split)", "final_holdout", cases, k=0)
                if len(cases) else None)

    @functools.cached_property
    def unseen(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Every held-out image (both splits) with its case: the more subjects, the steadier each null."""
        parts = [self.split_images(s) for s in (self.held_split, self.test_split) if s]
        if not parts or not sum(len(p[1]) for p in parts):
            return None
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    # ---- copying
    @functools.cached_property
    def _train_scan(self) -> tuple[np.ndarray, np.ndarray, set[str]]:
        """One pass over the training split, in blocks: its images at the near-copy comparison size, their cases,
        and the digest of each image's pixels (the exact-copy rule)."""
        small, hashes = [], set()
        for s in range(0, len(self.train), 512):
            pixels = self.train.read(np.arange(s, min(s + 512, len(self.train))))
            small.append(copying.comparison_images(to_unit(pixels)))
            hashes.update(copying.pixel_hashes(pixels))
        return np.concatenate(small), case_ids(self.m.split, self.train, np.arange(len(self.train))), hashes

    @property
    def train_small(self) -> tuple[np.ndarray, np.ndarray]:
        """The training split at the near-copy comparison size, with its cases."""
        return self._train_scan[:2]

    @property
    def train_hashes(self) -> set[str]:
        return self._train_scan[2]

    def gaps(self, images: np.ndarray, what: str) -> np.ndarray:
        t0 = time.perf_counter()
        train, cases = self.train_small
        g = copying.source_gaps(copying.subject_closeness(images, train, cases))
        log.info(f"[postprocess] source gaps of {len(images)} {what} against {len(np.unique(cases))} training "
                 f"subjects in {time.perf_counter() - t0:.1f} s")
        return g

    @functools.cached_property
    def unseen_gaps(self) -> np.ndarray | None:
        return None if self.unseen is None else self.gaps(self.unseen[0], "held-out images")

    def near_copies(self, images: np.ndarray, what: str) -> dict:
        held = None if self.unseen is None else self.unseen[1]
        return copying.near_copies(self.gaps(images, what), self.unseen_gaps, held)

    # ---- the distribution metric
    @functools.cached_property
    def train_features(self) -> np.ndarray:
        return distribution.describe(self.split_images(self.m.split, distribution.TRAIN_IMAGES, "train_features")[0])

    @functools.cached_property
    def unseen_features(self) -> np.ndarray | None:
        return None if self.unseen is None else distribution.describe(self.unseen[0])

    def two_sample(self, images: np.ndarray, groups: np.ndarray, stream: str, real: np.ndarray | None = None) -> dict:
        """The distribution metric of `images` against unseen brains (`real`: which held-out images, all by default)."""
        if self.unseen is None:
            return {"accuracy": None, "verdict": UNDETERMINED, "why": "no held-out split"}
        real = np.ones(len(self.unseen[1]), bool) if real is None else real
        return distribution.two_sample(distribution.describe(images), groups, self.train_features,
                                       self.unseen_features[real], self.unseen[1][real], self.seed(stream))

    def distribution_baseline(self, n: int) -> dict:
        """Held-out slices through the same test at n images: half the held-out subjects judged, the other half
        the unseen brains they are told from."""
        if n not in self._distribution:
            self._distribution[n] = self._split_halves(n)
        return self._distribution[n]

    def _split_halves(self, n: int) -> dict:
        if self.unseen is None or len(np.unique(self.unseen[1])) < 4:
            return {"accuracy": None, "verdict": UNDETERMINED, "why": "fewer than 4 held-out subjects"}
        images, cases = self.unseen
        rng = np.random.default_rng(self.seed("held_out_halves"))
        subjects = rng.permutation(np.unique(cases))
        judged = np.isin(cases, subjects[:len(subjects) // 2])
        pick = np.flatnonzero(judged)
        pick = np.sort(rng.choice(pick, min(len(pick), n), replace=False))
        return {**self.two_sample(images[pick], cases[pick], "held_out_halves", ~judged),
                "subjects": int(len(subjects) // 2)}
