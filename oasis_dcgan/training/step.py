"""The compiled training step, and the run state it advances.

Everything a resume needs besides the networks and optimizers lives in TensorFlow
variables that only compiled functions change: the counters, the epoch's loss
accumulators and the fixed noise. A compiled call runs to its end before a Python signal
handler can run, so a checkpoint taken from a handler is always consistent. The step's
noise is a stateless function of (seed, rank, global step), so a resumed run draws exactly
the noise an uninterrupted one would.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..imaging import to_unit_tf
from . import distributed, model

COUNTERS = ("epoch", "step_in_epoch", "global_step")
# The loss accumulators, at the value each epoch starts from.
LOSS_START = {"g_sum": 0.0, "d_sum": 0.0, "count": 0.0,
              "g_min": np.inf, "g_max": -np.inf, "d_min": np.inf, "d_max": -np.inf}
FIXED_NOISE_BATCH = 16   # the reference's per-epoch 4x4 grid, and the batch its metric scores


class TrainState:
    """Counters, the current epoch's loss accumulators and the fixed noise, as TF variables."""

    def __init__(self, noise_dim: int, seed: int):
        self.counters = {k: tf.Variable(0, dtype=tf.int64, name=k) for k in COUNTERS}
        self.losses = {k: tf.Variable(v, dtype=tf.float64, name=k) for k, v in LOSS_START.items()}
        self.fixed_noise = tf.Variable(tf.random.stateless_normal([FIXED_NOISE_BATCH, noise_dim],
                                                                  seed=[seed, 0x5EED]), name="fixed_noise")

    def variables(self) -> dict:
        """By name, as checkpoints key them."""
        return {**self.counters, **self.losses, "fixed_noise": self.fixed_noise}

    def read_counters(self) -> dict:
        return {k: int(v.numpy()) for k, v in self.counters.items()}

    def epoch_losses(self) -> dict:
        """The epoch so far: mean, min and max of each loss over its steps."""
        a = {k: float(v.numpy()) for k, v in self.losses.items()}
        n = max(a["count"], 1.0)
        return {"g_loss": a["g_sum"] / n, "d_loss": a["d_sum"] / n, "g_loss_min": a["g_min"],
                "g_loss_max": a["g_max"], "d_loss_min": a["d_min"], "d_loss_max": a["d_max"],
                "steps": int(a["count"])}

    def record_step(self, g_loss, d_loss) -> None:
        """Inside the compiled step: fold this step's (rank-averaged) losses in, count the step."""
        acc = self.losses
        acc["g_sum"].assign_add(g_loss)
        acc["d_sum"].assign_add(d_loss)
        acc["g_min"].assign(tf.minimum(acc["g_min"], g_loss))
        acc["g_max"].assign(tf.maximum(acc["g_max"], g_loss))
        acc["d_min"].assign(tf.minimum(acc["d_min"], d_loss))
        acc["d_max"].assign(tf.maximum(acc["d_max"], d_loss))
        acc["count"].assign_add(1.0)
        self.counters["step_in_epoch"].assign_add(1)
        self.counters["global_step"].assign_add(1)

    @tf.function
    def advance_epoch(self):
        """Start the next epoch: one compiled call, so no signal can see it half done."""
        for k, v in self.losses.items():
            v.assign(LOSS_START[k])
        self.counters["epoch"].assign_add(1)
        self.counters["step_in_epoch"].assign(0)


def build_train_step(generator, discriminator, g_opt, d_opt, state: TrainState, hvd, batch_size: int,
                     noise_dim: int, noise_seed: int, fp16_allreduce: bool = False):
    """The reference's two-tape step, data-parallel: one fused allreduce, identical state on all ranks."""
    world_size = hvd.size()

    @tf.function
    def train_step(images_uint8):
        images = to_unit_tf(images_uint8)
        noise = tf.random.stateless_normal(
            [batch_size, noise_dim], seed=tf.stack([tf.cast(noise_seed, tf.int64), state.counters["global_step"]]))
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = generator(noise, training=True)
            real_logits = discriminator(images, training=True)
            fake_logits = discriminator(fake, training=True)
            g_loss = model.generator_loss(fake_logits)
            d_loss = model.discriminator_loss(real_logits, fake_logits)
        g_grads = g_tape.gradient(g_loss, generator.trainable_variables)
        d_grads = d_tape.gradient(d_loss, discriminator.trainable_variables)
        # The forward pass moved G's BatchNorm statistics by this rank's batch; averaging them
        # with the gradients keeps every rank's whole state identical, so any rank's
        # checkpoint is the run's, and a resume is exact for any number of ranks.
        bn_stats = [tf.convert_to_tensor(v) for v in generator.non_trainable_variables]
        n_grads = len(g_grads) + len(d_grads)
        if fp16_allreduce:  # only gradients travel in fp16; statistics and losses stay fp32
            grads = distributed.allreduce_mean(hvd, g_grads + d_grads, fp16=True)
            rest = distributed.allreduce_mean(hvd, bn_stats + [g_loss, d_loss])
        else:  # one fused allreduce for everything
            both = distributed.allreduce_mean(hvd, g_grads + d_grads + bn_stats + [g_loss, d_loss])
            grads, rest = both[:n_grads], both[n_grads:]
        g_opt.apply_gradients(zip(grads[:len(g_grads)], generator.trainable_variables))
        d_opt.apply_gradients(zip(grads[len(g_grads):], discriminator.trainable_variables))
        if world_size > 1:
            for v, mean in zip(generator.non_trainable_variables, rest[:len(bn_stats)]):
                v.assign(mean)
        g_mean, d_mean = tf.cast(rest[-2], tf.float64), tf.cast(rest[-1], tf.float64)
        state.record_step(g_mean, d_mean)
        return g_mean, d_mean

    return train_step
