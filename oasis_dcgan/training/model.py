"""The seed project's DCGAN, layer for layer, at 32, 64, 128 or 256 pixels.

Generator: Dense to (res/8)^2 x 256 (no bias), BatchNorm, LeakyReLU, reshape, then three
stride-2 3x3 transposed convolutions (128, 64, then 1 channel with tanh), the first two
followed by BatchNorm and LeakyReLU. Discriminator: three stride-2 3x3 convolutions (64,
128, 256) each with LeakyReLU and dropout (0.4, 0.2, 0.2), then one logit; no BatchNorm.
Layer names are fixed so checkpoints and saved generators read the same across versions.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from .. import fsutil
from ..config import Config, TrainConfig

L = tf.keras.layers
# train.precision -> the Keras dtype policy of the hidden layers. Mixed policies keep every
# variable in fp32 and compute in half precision.
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


# The seed's discriminator dropout, layer by layer; train.d_dropout_scale multiplies it.
SEED_D_DROPOUT = (0.4, 0.2, 0.2)


def build_generator(resolution: int = 256, noise_dim: int = 100, precision: str = "fp32") -> tf.keras.Model:
    s, p = resolution // 8, POLICIES[precision]
    return tf.keras.Sequential([
        L.Input((noise_dim,)),
        L.Dense(s * s * 256, use_bias=False, name="g_dense", dtype=p),
        L.BatchNormalization(name="g_bn0", dtype=p),
        L.LeakyReLU(name="g_act0", dtype=p),
        L.Reshape((s, s, 256), name="g_reshape", dtype=p),
        L.Conv2DTranspose(128, 3, strides=2, padding="same", use_bias=False, name="g_deconv1", dtype=p),
        L.BatchNormalization(name="g_bn1", dtype=p),
        L.LeakyReLU(name="g_act1", dtype=p),
        L.Conv2DTranspose(64, 3, strides=2, padding="same", use_bias=False, name="g_deconv2", dtype=p),
        L.BatchNormalization(name="g_bn2", dtype=p),
        L.LeakyReLU(name="g_act2", dtype=p),
        # fp32 out: images keep more than bf16's 8 bits near +-1, and every consumer
        # (samples, the metric, a saved generator) gets float32 whatever the precision.
        L.Conv2DTranspose(1, 3, strides=2, padding="same", use_bias=False, activation="tanh", name="g_out",
                          dtype="float32"),
    ], name="generator")


def build_discriminator(resolution: int = 256, precision: str = "fp32", dropout_scale: float = 1.0,
                        spectral_norm: bool = False) -> tf.keras.Model:
    """`dropout_scale` multiplies the seed's rates (a recipe option; 0 keeps the layers, weightless, at rate 0,
    so checkpoints stay interchangeable). `spectral_norm` wraps the weighted layers in Keras's spectral
    normalisation, whose power-iteration vectors are D's only non-trainable variables."""
    p = POLICIES[precision]
    r1, r2, r3 = (rate * dropout_scale for rate in SEED_D_DROPOUT)

    def weighted(layer):
        return L.SpectralNormalization(layer, power_iterations=1, name=f"{layer.name}_sn", dtype=layer.dtype_policy) \
            if spectral_norm else layer

    return tf.keras.Sequential([
        L.Input((resolution, resolution, 1)),
        weighted(L.Conv2D(64, 3, strides=2, padding="same", name="d_conv1", dtype=p)),
        L.LeakyReLU(name="d_act1", dtype=p),
        L.Dropout(r1, name="d_drop1", dtype=p),
        weighted(L.Conv2D(128, 3, strides=2, padding="same", name="d_conv2", dtype=p)),
        L.LeakyReLU(name="d_act2", dtype=p),
        L.Dropout(r2, name="d_drop2", dtype=p),
        weighted(L.Conv2D(256, 3, strides=2, padding="same", name="d_conv3", dtype=p)),
        L.LeakyReLU(name="d_act3", dtype=p),
        L.Dropout(r3, name="d_drop3", dtype=p),
        L.Flatten(name="d_flatten", dtype=p),
        weighted(L.Dense(1, name="d_logit", dtype="float32")),  # fp32 logits: the losses' log-sigmoid needs the range
    ], name="discriminator")


def build_optimizer(lr: float, t: TrainConfig):
    """The seed's Adam with train.*'s settings (train.adam_beta1 0.9 is Keras's default; the DCGAN
    paper's is 0.5); under fp16, wrapped in dynamic loss scaling (fp16 gradients underflow)."""
    opt = tf.keras.optimizers.Adam(lr, beta_1=t.adam_beta1)
    return tf.keras.optimizers.LossScaleOptimizer(opt) if t.precision == "fp16" else opt


def lr_for(cfg: Config, world_size: int) -> float:
    """train.lr scaled for the world size by train.lr_scaling."""
    scale = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[cfg.train.lr_scaling]
    return cfg.train.lr * scale


def lr_factor(epoch: int, epochs: int, rampdown: float) -> float:
    """The learning rates' factor in 0-based `epoch`: 1, then falling linearly over the last
    rampdown x epochs to 1/(rampdown x epochs) in the last one. By epoch, so a resumed epoch
    trains at the rate it began with."""
    span = rampdown * epochs
    return 1.0 if span <= 0 else min(1.0, (epochs - epoch) / span)


@dataclass(frozen=True)
class Networks:
    """What a run trains: G and D with their optimizers, and G's average (G_ema) or None."""
    generator: tf.keras.Model
    discriminator: tf.keras.Model
    average: tf.keras.Model | None
    g_opt: tf.keras.optimizers.Optimizer
    d_opt: tf.keras.optimizers.Optimizer

    @property
    def sampler(self) -> tf.keras.Model:
        """The generator that samples, reports and exports: the average when there is one."""
        return self.generator if self.average is None else self.average

    def set_learning_rates(self, lr: float, d_lr_ratio: float) -> None:
        """G's rate `lr`, D's `lr` x train.d_lr_ratio."""
        self.g_opt.learning_rate = lr
        self.d_opt.learning_rate = lr * d_lr_ratio

    def digest(self) -> str:
        return weights_digest(self.generator, self.discriminator, self.average)


def build_all(cfg: Config, lr: float) -> Networks:
    """The networks train.* asks for, at data.resolution. The average is G's architecture in
    fp32, starting from G's weights."""
    t, res = cfg.train, cfg.data.resolution
    generator = build_generator(res, t.noise_dim, t.precision)
    discriminator = build_discriminator(res, t.precision, t.d_dropout_scale, t.d_spectral_norm)
    average = None
    if t.ema_kimg > 0:
        average = build_generator(res, t.noise_dim, "fp32")
        average.set_weights(generator.get_weights())
    g_opt, d_opt = build_optimizer(lr, t), build_optimizer(lr * t.d_lr_ratio, t)
    # Adam's slots are created lazily; build them now so they are checkpointed and broadcast.
    g_opt.build(generator.trainable_variables)
    d_opt.build(discriminator.trainable_variables)
    return Networks(generator, discriminator, average, g_opt, d_opt)


def save_model(model, dest: str | os.PathLike) -> None:
    """Save atomically. Keras insists on a .keras suffix, so the model is written inside a private
    temp directory of an unpredictable name (made 0700 by mkdtemp: no one can plant a symlink in
    it), then renamed over `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        tmp = tmp_dir / dest.name
        model.save(str(tmp))
        os.chmod(tmp, 0o666 & ~fsutil.umask())
        fsutil.publish(tmp, dest)
    except OSError as e:
        raise fsutil.storage_error(dest, "save the model", e, f"the previous {dest.name}, if any, is intact",
                                   "Free space and run the job again: it resumes from the last checkpoint") from e
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def load_generator(path: str | os.PathLike) -> tf.keras.Model:
    return tf.keras.models.load_model(str(path), compile=False)


def generate(generator, n: int, rng_seed: int, chunk: int = 64) -> np.ndarray:
    """n images [N, H, W] in (-1, 1) from seeded standard-normal noise (the same seed, the same images)."""
    noise = np.random.default_rng(rng_seed).normal(size=(n, generator.input_shape[-1])).astype(np.float32)
    out = [generator(noise[s:s + chunk], training=False).numpy() for s in range(0, n, chunk)]
    return np.concatenate(out)[..., 0]


def weights_digest(*models) -> str:
    """sha256 of the models' weights and statistics (None for a model a run has not); dropout seed
    states, which are per rank, left out."""
    h = hashlib.sha256()
    for m in models:
        for v in (m.variables if m is not None else ()):
            if "seed_generator" not in v.path:
                h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()
