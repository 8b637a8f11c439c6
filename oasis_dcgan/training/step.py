"""The compiled training step, and the run state it advances.

Everything a resume needs besides the networks and optimizers lives in TensorFlow
variables that only compiled functions change: the counters, the epoch's loss
accumulators and the fixed noise. A compiled call runs to its end before a Python signal
handler can run, so a checkpoint taken from a handler is always consistent. The step's
noise and dropout masks are stateless functions of (seed, rank, global step), so a resumed
run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

import hashlib

import numpy as np
import tensorflow as tf

from ..config import TrainConfig
from ..imaging import to_unit_tf
from .model import Networks
from .objective import Objective

# epoch_images is the epoch's image budget, fixed when the epoch starts; images_in_epoch
# how many of them are used up; images_seen the run's total (kimg is this / 1000).
COUNTERS = ("epoch", "step_in_epoch", "global_step", "images_in_epoch", "epoch_images", "images_seen")
# The loss accumulators, at the value each epoch starts from.
LOSS_START = {"g_sum": 0.0, "d_sum": 0.0, "count": 0.0,
              "g_min": np.inf, "g_max": -np.inf, "d_min": np.inf, "d_max": -np.inf}
FIXED_NOISE_BATCH = 16   # the seed's per-epoch 4x4 grid, and the batch its metric scores


class TrainState:
    """Counters, the current epoch's loss accumulators and visits, and the fixed noise, as TF variables."""

    def __init__(self, noise_dim: int, rng_seed: int, n_images: int):
        self.counters = {k: tf.Variable(0, dtype=tf.int64, name=k) for k in COUNTERS}
        # The counters as the host last read them (a compiled call returns them): the loop's only
        # view of them, so there is no second count in Python to drift from the variables.
        self.now = dict.fromkeys(COUNTERS, 0)
        self.losses = {k: tf.Variable(v, dtype=tf.float64, name=k) for k, v in LOSS_START.items()}
        # How often each training image was trained on this epoch, by every rank together.
        self.visits = tf.Variable(tf.zeros([n_images], tf.int32), name="visits")
        self.fixed_noise = tf.Variable(tf.random.stateless_normal([FIXED_NOISE_BATCH, noise_dim],
                                                                  seed=[rng_seed, 0x5EED]), name="fixed_noise")

    def variables(self) -> dict:
        """By name, as checkpoints key them."""
        return {**self.counters, **self.losses, "visits": self.visits, "fixed_noise": self.fixed_noise}

    def read_counters(self) -> dict:
        """All counters in one compiled read: each variable read alone costs a host round trip."""
        return self.take(self._read())

    def take(self, stacked) -> dict:
        """Note the counters a compiled call returned (stacked in COUNTERS order) as `now`."""
        self.now = dict(zip(COUNTERS, stacked.numpy().tolist()))
        return dict(self.now)

    def stacked(self):
        """The counters in COUNTERS order, as one tensor (inside a compiled call)."""
        return tf.stack([self.counters[k] for k in COUNTERS])

    @tf.function
    def _read(self):  # eager callers only: compiled code calls stacked(), so this traces once
        return self.stacked()

    @staticmethod
    def epoch_losses(losses: dict) -> dict:
        """The epoch so far, from the loss accumulators' values: mean, min and max of each loss."""
        a = {k: float(v) for k, v in losses.items()}
        n = max(a["count"], 1.0)
        return {"g_loss": a["g_sum"] / n, "d_loss": a["d_sum"] / n, "g_loss_min": a["g_min"],
                "g_loss_max": a["g_max"], "d_loss_min": a["d_min"], "d_loss_max": a["d_max"],
                "steps": int(a["count"])}

    @staticmethod
    def epoch_visits(visits: np.ndarray) -> dict:
        """How many images the epoch trained on, and a digest of which, that any world size reproduces."""
        visited = np.repeat(np.arange(len(visits)), visits)  # sorted, each index as often as it was trained on
        digest = hashlib.sha256(",".join(map(str, visited.tolist())).encode()).hexdigest()
        return {"images": int(visits.sum()), "images_sha256": digest}

    def record_step(self, g_loss, d_loss, slots) -> None:
        """Inside the compiled step: fold in this step's losses and images, count the step."""
        acc = self.losses
        acc["g_sum"].assign_add(g_loss)
        acc["d_sum"].assign_add(d_loss)
        acc["g_min"].assign(tf.minimum(acc["g_min"], g_loss))
        acc["g_max"].assign(tf.maximum(acc["g_max"], g_loss))
        acc["d_min"].assign(tf.minimum(acc["d_min"], d_loss))
        acc["d_max"].assign(tf.maximum(acc["d_max"], d_loss))
        acc["count"].assign_add(1.0)
        used = tf.boolean_mask(slots, slots >= 0)
        self.visits.scatter_nd_add(used[:, None], tf.ones_like(used, tf.int32))
        n_used = tf.size(used, out_type=tf.int64)
        self.counters["images_in_epoch"].assign_add(n_used)
        self.counters["images_seen"].assign_add(n_used)
        self.counters["step_in_epoch"].assign_add(1)
        self.counters["global_step"].assign_add(1)

    def begin_epoch(self, budget: int) -> dict:
        """Fix the epoch's image budget, once (a resumed epoch keeps the one it started with);
        returns the counters."""
        return self.take(self._begin_epoch(budget))

    @tf.function
    def _begin_epoch(self, budget):
        if self.counters["epoch_images"] == 0:
            self.counters["epoch_images"].assign(budget)
        return self.stacked()

    def restart_epoch(self) -> None:
        """The epoch under way starts again from its first image (its data changed under it)."""
        for k, v in self.losses.items():
            v.assign(LOSS_START[k])
        self.visits.assign(tf.zeros_like(self.visits))
        for k in ("step_in_epoch", "images_in_epoch", "epoch_images"):
            self.counters[k].assign(0)

    def epoch_record(self) -> dict:
        """Inside a compiled call: the epoch's loss accumulators, visits and images seen, as they are."""
        return {k: tf.identity(v) for k, v in {**self.losses, "visits": self.visits,
                                               "images_seen": self.counters["images_seen"]}.items()}

    def close_epoch(self):
        """Inside a compiled call: the ended epoch's records, then the next epoch's start. One call,
        so no signal sees it half done, and no host round trip per variable while every rank waits.
        Returns the records and the counters after it."""
        record = self.epoch_record()
        with tf.control_dependencies(list(record.values())):
            for k, v in self.losses.items():
                v.assign(LOSS_START[k])
            self.visits.assign(tf.zeros_like(self.visits))
            for k in ("step_in_epoch", "images_in_epoch", "epoch_images"):
                self.counters[k].assign(0)
            self.counters["epoch"].assign_add(1)
        return record, self.stacked()  # read after the writes: a compiled call orders them


DROPOUT_DRAWS_PER_STEP = 2  # D runs twice a step (real, fake); each Dropout draws one seed a run


def set_dropout_rng(discriminator, rng_seed: int, rank: int, global_step: int) -> None:
    """Point every Dropout's seed at (seed, rank, layer), at the draw the given step makes.

    Called eagerly once a process starts, after rank 0's variables were broadcast: ranks
    then draw different masks, and a resumed run continues each rank's sequence exactly.
    (Assigning the seeds inside the compiled step instead made the masks depend on how
    the runtime ordered the assignment against Keras's own seed updates.)
    """
    layers = [layer for layer in discriminator.layers if hasattr(layer, "seed_generator")]
    for i, layer in enumerate(layers):
        state = layer.seed_generator.state
        state.assign(tf.constant([(rng_seed * 1000 + rank) * 16 + i, global_step * DROPOUT_DRAWS_PER_STEP],
                                 dtype=state.dtype))


def update_average(average, generator, beta: float) -> None:
    """One step of the generator average: weights move a (1 - beta) part of the way to G's,
    batch-norm statistics are copied. After G's update (and its statistics' allreduce), so it
    is the same on every rank."""
    for a, w in zip(average.trainable_variables, generator.trainable_variables):
        a.assign(w + (a - w) * beta)
    for a, w in zip(average.non_trainable_variables, generator.non_trainable_variables):
        a.assign(tf.cast(w, a.dtype))


def ema_beta(half_life_kimg: float, global_batch: int, images_seen=None, rampup: float = 0.0):
    """The per-step decay that halves an image's weight in the average every half_life_kimg x 1000 images.

    With a ramp-up, the half-life is at most rampup x the images seen so far: a short run's
    average then forgets its first, noise-like generators instead of carrying them for the
    whole run. images_seen may be a tensor (inside the compiled step)."""
    if half_life_kimg <= 0:
        return 0.0
    half_life = half_life_kimg * 1000.0
    if rampup > 0 and images_seen is not None:
        seen = tf.cast(images_seen, tf.float64) + global_batch  # this step's images count too
        half_life = tf.minimum(tf.constant(half_life, tf.float64), rampup * seen)
        return tf.cast(0.5 ** (global_batch / half_life), tf.float32)
    return 0.5 ** (global_batch / half_life)


def _epoch_end(state: TrainState, sampler):
    """The two branches of a call's end: `close` the epoch its last step completed (its records,
    and rank 0's fixed-noise samples, come out of the call, so the loop does not pause between
    epochs for them), or `keep` it going (its records so far, no samples)."""
    no_samples = tf.zeros([0, 1, 1, 1])

    def close():
        fake = no_samples if sampler is None else tf.cast(sampler(state.fixed_noise, training=False), tf.float32)
        return fake, state.close_epoch()[0]

    def keep():
        return no_samples, state.epoch_record()

    return close, keep


def timer(on: bool):
    """`timed(fn, after)` runs fn() inside a compiled step and returns (its result, the seconds it
    took): two host timestamps, the first once `after` exists, the second once the result does.
    The `after` tensors go through a host copy first: on a GPU a kernel counts as done when it is
    queued, so without it the wait would take in the computation still running. Off: 0 seconds."""

    def timed(fn, after):
        if not on:
            return fn(), tf.constant(0.0, tf.float64)
        with tf.device("/cpu:0"):
            ready = [tf.identity(tf.reshape(a, [-1])[:1]) for a in after]
        with tf.control_dependencies(ready):
            t0 = tf.timestamp()
        with tf.control_dependencies([t0]):
            out = fn()
        with tf.control_dependencies(tf.nest.flatten(out)):
            return out, tf.timestamp() - t0

    return timed


def _steps(next_batch, train_step, want_stop, n):
    """Inside a compiled call: up to n steps, one at a time, until a stop is agreed. Returns the
    steps run, the last losses, the agreement, and the seconds waited for input and the allreduce."""

    def body(i, g, d, agreed, waits):
        (images, slots), input_s = next_batch()
        g, d, agreed, reduce_s = train_step(images, slots, want_stop)
        return i + 1, g, d, agreed, waits + tf.stack([input_s, reduce_s])

    zero = tf.constant(0.0, tf.float64)
    return tf.while_loop(lambda i, g, d, agreed, w: tf.logical_and(i < n, tf.logical_not(agreed)), body,
                         (tf.constant(0), zero, zero, tf.constant(False), tf.zeros([2], tf.float64)),
                         parallel_iterations=1)


def build_train_step(nets: Networks, state: TrainState, ranks, t: TrainConfig, sampler=None):
    """The seed's two-tape step as train.* sets it, data-parallel: one allreduce, identical ranks.

    Each rank's losses are sums over its own images times world_size / (images in the step), so
    the allreduce's average is the mean over every image of the step, however the last, partial
    step of an epoch is spread over the ranks (with full batches: the seed's per-batch mean).
    `sampler` (rank 0's) draws the fixed-noise samples as an epoch closes."""
    generator, discriminator, g_opt, d_opt = nets.generator, nets.discriminator, nets.g_opt, nets.d_opt
    goal, batch_size, world_size, rank = Objective.from_config(t), t.batch_size, ranks.size, ranks.rank

    # TensorFlow refuses a timestamp under op determinism: a deterministic run has no split.
    split = t.step_split and not t.deterministic
    timed = timer(split)
    # One rank has no allreduce to wait for; timing it would hold its updates until every gradient exists.
    timed_reduce = timer(split and world_size > 1)

    def train_step(images_uint8, slots, want_stop):
        images = to_unit_tf(images_uint8)
        weights = tf.cast(slots[rank] >= 0, tf.float32)
        scale = world_size / tf.cast(tf.math.count_nonzero(slots >= 0), tf.float32)
        # Noise and D's augmentations come from (seed, rank, global step): ranks differ, and a resumed
        # run draws exactly what an uninterrupted one would (dropout: see set_dropout_rng).
        seed = tf.stack([tf.constant(t.seed * 1000 + rank, tf.int64), state.counters["global_step"]])
        noise = tf.random.stateless_normal([batch_size, t.noise_dim], seed=seed)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = generator(noise, training=True)
            real_logits = discriminator(goal.seen(images, seed + [1 << 20, 0]), training=True)
            fake_logits = discriminator(goal.seen(fake, seed + [1 << 21, 0]), training=True)
            g_loss = tf.reduce_sum(goal.g_loss_per_image(fake_logits) * weights) * scale
            d_loss = tf.reduce_sum(goal.d_loss_per_image(real_logits, fake_logits) * weights) * scale
            # fp16: the optimizers scale the losses up (the gradients back down, skipping overflows).
            g_scaled, d_scaled = g_opt.scale_loss(g_loss), d_opt.scale_loss(d_loss)
        g_grads = g_tape.gradient(g_scaled, generator.trainable_variables)
        d_grads = d_tape.gradient(d_scaled, discriminator.trainable_variables)
        # The forward pass moved G's BatchNorm statistics by this rank's batch; averaging them
        # with the gradients keeps every rank's whole state identical, so any rank's
        # checkpoint is the run's, and a resume is exact for any number of ranks.
        bn_stats = [tf.convert_to_tensor(v) for v in generator.non_trainable_variables]
        n_grads = len(g_grads) + len(d_grads)
        # A rank's wish to stop rides along: above zero on average means some rank asked.
        extra = bn_stats + [g_loss, d_loss, want_stop]
        # One grouped allreduce a step (train.fp16_allreduce: the gradients travel in fp16).
        sent, half = g_grads + d_grads + extra, n_grads if t.fp16_allreduce else 0
        # Timed from the input layers' gradients, about the last each backward pass makes.
        both, reduce_s = timed_reduce(lambda: ranks.allreduce_mean(sent, half=half), [g_grads[0], d_grads[0]])
        grads, rest = both[:n_grads], both[n_grads:]
        g_opt.apply_gradients(zip(grads[:len(g_grads)], generator.trainable_variables))
        d_opt.apply_gradients(zip(grads[len(g_grads):], discriminator.trainable_variables))
        for v, mean in zip(generator.non_trainable_variables, rest[:len(bn_stats)]):
            v.assign(mean)
        if nets.average is not None:
            beta = ema_beta(t.ema_kimg, batch_size * world_size, state.counters["images_seen"], t.ema_rampup)
            update_average(nets.average, generator, beta)
        g_mean, d_mean = tf.cast(rest[-3], tf.float64), tf.cast(rest[-2], tf.float64)
        state.record_step(g_mean, d_mean, slots)
        return g_mean, d_mean, rest[-1] > 0, reduce_s

    close, keep = _epoch_end(state, sampler)

    @tf.function(autograph=False)  # tf.while_loop and tf.cond already: autograph cost 2 s of each start
    def train_steps(iterator, want_stop, n, budget):
        """Up to n steps from the iterator in one call, fewer if a stop is agreed on the way.

        A call's fixed host cost is a sizeable share of a GPU step (bench/results/overhead.json):
        several steps a call pay it once. One iteration at a time, so each step sees the last
        one's variables and every rank's allreduces pair up in order. An epoch begins (with
        `budget` images) in the call of its first step and closes in the call of its last.
        Returns the last step's losses, whether a stop was agreed, the steps run, the counters
        after them, whether the epoch closed, its samples and its records (see _epoch_end).
        """
        epoch_images = state.counters["epoch_images"]
        epoch_images.assign(tf.where(epoch_images == 0, budget, epoch_images))

        i, g, d, agreed, waits = _steps(lambda: timed(iterator.get_next, []), train_step, want_stop, n)
        closed = state.counters["images_in_epoch"] >= state.counters["epoch_images"]
        fake, record = tf.cond(closed, close, keep)
        return g, d, agreed, i, state.stacked(), closed, fake, record, waits

    return train_steps
