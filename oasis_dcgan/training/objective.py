"""What the two networks are trained to do: the loss, and what the discriminator sees.

The seed's objective is binary cross-entropy on the discriminator's logits, every image seen as
it is. The recipe keys offer what the GAN literature uses for small data and short budgets:
- `train.loss = "hinge"`: D pushes real logits above 1 and generated ones below -1, G raises
  its logits (usually with `train.d_spectral_norm`, which keeps D 1-Lipschitz);
- `train.augment`: differentiable augmentations applied alike to every image D sees, real and
  generated (DiffAugment), so D cannot memorise a small training set while G's gradients pass
  through the same transformation:
    translation  each image shifted by up to 1/8 of its size, the border filled with background;
    cutout       a square of half the image's side set to background, at a random place;
    color        brightness shifted by up to +-0.5 and contrast scaled by 0.5 to 1.5 (on (-1, 1)).
Each augmentation draws from stateless seeds (the run's seed, the rank, the global step and
which call), so a resumed run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from ..config import BCE, HINGE, augmentations

BACKGROUND = -1.0        # black, on (-1, 1)
TRANSLATION = 1 / 8      # of the image's side, at most, either way
CUTOUT = 1 / 2           # of the image's side


def _bce(label: float, logits):
    """Binary cross-entropy from logits, one value per image."""
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), label), logits=logits)[:, 0]


def _shift_matrices(offsets, size: int):
    """[B, size, size] matrices that move a row vector by `offsets` places, zero where nothing arrives."""
    i = tf.range(size)
    source = i[None, :] - tf.cast(offsets, tf.int32)[:, None]            # [B, size]: where each place reads from
    return tf.one_hot(source, size, dtype=tf.float32)                    # out of range: an all-zero row


def translate(x, seed):
    """Each image of x [B, H, W, 1] moved by its own integer offsets; the uncovered border is background."""
    b, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    limit_h, limit_w = int(h * TRANSLATION), int(w * TRANSLATION)
    dy = tf.random.stateless_uniform([b], seed, -limit_h, limit_h + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([b], seed + [0, 1], -limit_w, limit_w + 1, dtype=tf.int32)
    rows, cols = _shift_matrices(dy, h), _shift_matrices(dx, w)       # [B, H, H], [B, W, W]
    moved = tf.einsum("bij,bjk,blk->bil", rows, x[..., 0] - BACKGROUND, cols)
    return moved[..., None] + BACKGROUND


def cutout(x, seed):
    """A square of half the side, per image at a random centre, set to background."""
    b, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    cy = tf.random.stateless_uniform([b, 1, 1], seed, 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([b, 1, 1], seed + [0, 1], 0, w, dtype=tf.int32)
    yy, xx = tf.range(h)[None, :, None], tf.range(w)[None, None, :]
    inside = (tf.abs(yy - cy) < int(h * CUTOUT) // 2) & (tf.abs(xx - cx) < int(w * CUTOUT) // 2)
    return tf.where(inside[..., None], tf.cast(BACKGROUND, x.dtype), x)


def color(x, seed):
    """Brightness shifted and contrast scaled, per image."""
    b = tf.shape(x)[0]
    shift = tf.random.stateless_uniform([b, 1, 1, 1], seed, -0.5, 0.5)
    scale = tf.random.stateless_uniform([b, 1, 1, 1], seed + [0, 1], 0.5, 1.5)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x + shift - mean) * scale + mean


APPLY = {"translation": translate, "cutout": cutout, "color": color}


@dataclass(frozen=True)
class Objective:
    loss: str = BCE
    augment: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, train) -> "Objective":
        return cls(train.loss, augmentations(train.augment))

    def d_loss_per_image(self, real_logits, fake_logits):
        """The discriminator's loss, one value per image, before the batch mean."""
        if self.loss == HINGE:
            return tf.nn.relu(1.0 - real_logits)[:, 0] + tf.nn.relu(1.0 + fake_logits)[:, 0]
        return _bce(1.0, real_logits) + _bce(0.0, fake_logits)   # the seed's

    def g_loss_per_image(self, fake_logits):
        if self.loss == HINGE:
            return -fake_logits[:, 0]
        return _bce(1.0, fake_logits)   # the seed's

    def seen(self, x, seed):
        """What D sees of images x [B, H, W, 1] on (-1, 1): x itself, or x augmented from stateless `seed` [2]."""
        for k, name in enumerate(self.augment):
            x = APPLY[name](x, seed + tf.constant([0, 2 * k + 2], seed.dtype))
        return x
