"""Read packed shards: a rank-sharded, resumable tf.data pipeline and a numpy sampler.

Progress is counted in images. An epoch's order is a permutation drawn from (seed, epoch)
alone, so every rank computes the same one without talking to the others. An epoch trains
on its first `budget` positions: the whole split less a remainder smaller than one per-rank
batch, whatever the number of ranks. A step starting at position p takes the next B*W
positions; rank r takes the B-slice [p + r*B, p + (r+1)*B). Past the budget a slot is
empty (-1): the last step of an epoch may leave ranks, or parts of their batch, idle.
So a run resumed at position p with any world size, or another per-rank batch, continues
at exactly the next unseen image, and ranks see disjoint images that together cover it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..imaging import to_unit, to_unit_tf
from .manifest import DataError, load_manifest


class ShardReader:
    """Random access to one split's images (uint8 [N, H, W]) across its shards."""

    def __init__(self, dataset: str | os.PathLike, split: str = "train"):
        self.dataset, self.split = Path(dataset), split
        m = load_manifest(self.dataset)
        if split not in m["splits"] or m["splits"][split]["count"] == 0:
            raise DataError(f"{self.dataset}: split '{split}' has no images (have: {', '.join(m['splits'])})")
        self.resolution = int(m["resolution"])
        shards = m["splits"][split]["shards"]
        self.files = [self.dataset / s["file"] for s in shards]
        self.counts = [int(s["count"]) for s in shards]
        self.block = [s.get("images_offset") for s in shards]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._handles: dict = {}
        self._maps: dict = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _h5(self, i: int):
        h = self._handles.get(i)
        if h is None:
            import h5py

            # A large chunk cache keeps recently read images in memory across batches.
            h = h5py.File(self.files[i], "r", rdcc_nbytes=64 << 20)
            self._handles[i] = h
        return h["images"]

    def _map(self, i: int):
        """The shard's images as a read-only memory map, when they lie in one block (see manifest.py)."""
        if self.block[i] is None:
            return None
        m = self._maps.get(i)
        if m is None:
            m = np.memmap(self.files[i], dtype=np.uint8, mode="r", offset=self.block[i],
                          shape=(self.counts[i], self.resolution, self.resolution))
            self._maps[i] = m
        return m

    def read(self, indices) -> np.ndarray:
        """Images at the given global indices, in the given order."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.resolution, self.resolution), dtype=np.uint8)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range 0..{len(self) - 1}")
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        for s in np.unique(shard):
            pos = np.flatnonzero(shard == s)
            local = idx[pos] - self.offsets[s]
            mm = self._map(int(s))
            if mm is not None:
                out[pos] = mm[local]  # a gather from the page cache; no HDF5 call per image
                continue
            order = np.argsort(local, kind="stable")
            ds = self._h5(int(s))
            for p, li in zip(pos[order], local[order]):
                ds.read_direct(out, np.s_[li], np.s_[p])
        return out

    def metadata(self, indices) -> list[dict]:
        idx = np.asarray(indices, dtype=np.int64)
        out = []
        for i in idx:
            s = int(np.searchsorted(self.offsets, i, side="right") - 1)
            li = int(i - self.offsets[s])
            self._h5(s)
            h = self._handles[s]
            out.append({"index": int(i), "source": h["source"][li].decode(), "case": h["case"][li].decode(),
                        "slice": int(h["slice"][li])})
        return out

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()
        self._maps.clear()


def epoch_permutation(n: int, rng_seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([rng_seed, epoch]).permutation(n)


def epoch_budget(n: int, batch_size: int, max_steps: int = 0, world_size: int = 1) -> int:
    """Images one epoch trains on: all n less a remainder under one per-rank batch (none for the
    seed's 9664 / 16), capped at max_steps global batches when that is set (smoke runs)."""
    budget = (n // batch_size) * batch_size
    return min(budget, max_steps * batch_size * world_size) if max_steps else budget


def steps_left(budget: int, position: int, batch_size: int, world_size: int) -> int:
    """Global steps from `position` to the end of the epoch's budget."""
    return max(0, -(-(budget - position) // (batch_size * world_size)))


def step_slots(perm: np.ndarray, budget: int, position: int, batch_size: int, world_size: int) -> np.ndarray:
    """The indices of one global step as [world_size, batch_size]: row r is rank r's batch; -1 is empty."""
    pos = position + np.arange(world_size * batch_size)
    return np.where(pos < budget, perm[np.minimum(pos, len(perm) - 1)], -1).reshape(world_size, batch_size)


@dataclass(frozen=True)
class Stream:
    """Which of a split's images one rank reads, and in what order: the rest of `epoch` and the
    `epochs - 1` after it. The first epoch resumes at `start_image` with its own `budget` (and
    `first_rng_seed`, when a resumed epoch began under another seed); the later ones start at 0
    with `later_budget`. A budget of 0 is the whole split."""
    rng_seed: int
    batch_size: int
    epoch: int = 0
    rank: int = 0
    world_size: int = 1
    epochs: int = 1
    start_image: int = 0
    budget: int = 0
    later_budget: int = 0
    first_rng_seed: int | None = None

    def epoch_plans(self, n: int) -> list[tuple[int, int, int, int]]:
        """(epoch, budget, first image, order seed) of each epoch, for a split of n images."""
        first = self.rng_seed if self.first_rng_seed is None else self.first_rng_seed
        whole = epoch_budget(n, self.batch_size)
        plans = [(self.epoch, self.budget or whole, self.start_image, first)]
        return plans + [(e, self.later_budget or whole, 0, self.rng_seed)
                        for e in range(self.epoch + 1, self.epoch + self.epochs)]


def train_dataset(dataset, stream: Stream, split: str = "train", scaled: bool = True, block: int = 8,
                  prefetch: int = 8, autotune: bool = False):
    """A tf.data.Dataset of one rank's steps of `stream`, and how many steps that is.

    One stream across epoch ends keeps the prefetch full there, where a new pipeline per epoch
    paused every rank. Each element is (images [B, H, W, 1], slots [W, B] int64): the images of
    this rank's row of `slots` (zeros where a slot is empty), and every rank's indices for that
    step, so the consumer can weight partial batches and record what the epoch visited. Images
    are float32 in (-1, 1) when `scaled`, else the stored uint8, for a consumer that scales inside
    its compiled step (4x fewer bytes through the pipeline). The generator hands over `block`
    steps at a time, so Python's per-element cost is paid once a block.
    """
    import tensorflow as tf

    reader = ShardReader(dataset, split)
    n, batch_size, world_size, rank = len(reader), stream.batch_size, stream.world_size, stream.rank
    plans = stream.epoch_plans(n)
    if min(p[1] for p in plans) < batch_size:
        raise DataError(f"{dataset}: {n} {split} images cannot fill one batch of {batch_size}")
    res, stride = reader.resolution, batch_size * world_size
    total = sum(steps_left(b, s, batch_size, world_size) for _, b, s, _ in plans)

    def blocks():
        for e, b, start, order_seed in plans:
            perm, steps = epoch_permutation(n, order_seed, e), steps_left(b, start, batch_size, world_size)
            for s0 in range(0, steps, block):
                k = min(block, steps - s0)
                slots = np.stack([step_slots(perm, b, start + (s0 + j) * stride, batch_size, world_size)
                                  for j in range(k)])
                mine = slots[:, rank].reshape(-1)
                if mine.min() >= 0:  # full batches (all but an epoch's last step): one copy, not two
                    images = reader.read(mine)
                else:
                    images = np.zeros((len(mine), res, res), np.uint8)
                    images[mine >= 0] = reader.read(mine[mine >= 0])
                yield images.reshape(k, batch_size, res, res, 1), slots

    ds = tf.data.Dataset.from_generator(blocks, output_signature=(
        tf.TensorSpec((None, batch_size, res, res, 1), tf.uint8),
        tf.TensorSpec((None, world_size, batch_size), tf.int64)))
    ds = ds.flat_map(lambda images, slots: tf.data.Dataset.from_tensor_slices((images, slots)))
    if scaled:
        ds = ds.map(lambda images, slots: (to_unit_tf(images), slots), num_parallel_calls=1, deterministic=True)
    # tf.data's autotuner, on small CPUs, can settle for a whole epoch on a setting that
    # slows the training step (bench/bench_train.py measures the job with it on and off:
    # bench/results/train.json). The pipeline is one generator and a fixed prefetch:
    # nothing to tune.
    options = tf.data.Options()
    options.autotune.enabled = autotune
    return ds.prefetch(prefetch).with_options(options), total


def read_batches(dataset, split: str, batches) -> np.ndarray:
    """Images of the given index batches as float32 (-1, 1) [B, batch, H, W]; each image read once."""
    reader = ShardReader(dataset, split)
    flat = np.asarray(batches, dtype=np.int64).reshape(-1)
    uniq, inv = np.unique(flat, return_inverse=True)
    imgs = to_unit(reader.read(uniq))[inv]
    reader.close()
    return imgs.reshape(len(batches), len(batches[0]), reader.resolution, reader.resolution)


def sample_batches(dataset, n_batches: int, batch_size: int, rng_seed: int, split: str = "train"):
    """Indices and float images of `n_batches` seeded random batches, reading only those images."""
    n = len(ShardReader(dataset, split))
    rng = np.random.default_rng(rng_seed)
    batches = [rng.choice(n, size=batch_size, replace=n < batch_size).tolist() for _ in range(n_batches)]
    return batches, read_batches(dataset, split, batches)
