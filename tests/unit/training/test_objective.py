"""The recipe's objective: hinge loss, DiffAugment's three augmentations, spectral normalisation,
each against a computation done here by other means."""

import numpy as np
import pytest
import tensorflow as tf

from oasis_dcgan import config
from oasis_dcgan.errors import CheckpointError, ConfigError
from oasis_dcgan.training import model, objective, resume
from oasis_dcgan.training.objective import Objective


def _images(n=4, size=16, rng_seed=0):
    return tf.constant(np.tanh(np.random.default_rng(rng_seed).normal(size=(n, size, size, 1))), tf.float32)


def test_translation_moves_each_image_by_its_own_offsets_and_fills_with_background():
    x, seed = _images(), tf.constant([3, 7], tf.int64)
    got = objective.translate(x, seed).numpy()
    limit = int(16 * objective.TRANSLATION)
    dy = tf.random.stateless_uniform([4], seed, -limit, limit + 1, dtype=tf.int32).numpy()
    dx = tf.random.stateless_uniform([4], seed + [0, 1], -limit, limit + 1, dtype=tf.int32).numpy()
    for i in range(4):
        want = np.full((16, 16), objective.BACKGROUND, np.float32)
        src = x.numpy()[i, ..., 0]
        for r in range(16):
            for c in range(16):
                if 0 <= r - dy[i] < 16 and 0 <= c - dx[i] < 16:
                    want[r, c] = src[r - dy[i], c - dx[i]]
        np.testing.assert_allclose(got[i, ..., 0], want, atol=1e-6)
    assert len({(a, b) for a, b in zip(dy, dx)}) > 1, "the images move differently"


def test_cutout_blanks_one_square_of_half_the_side_and_nothing_else():
    x = _images(8, 16) * 0.5 + 0.2           # no pixel is background before
    got = objective.cutout(x, tf.constant([1, 2], tf.int64)).numpy()
    blank = got == objective.BACKGROUND
    for i in range(8):
        rows, cols = np.flatnonzero(blank[i].any(axis=(1, 2))), np.flatnonzero(blank[i].any(axis=(0, 2)))
        assert blank[i].sum() == len(rows) * len(cols) and max(len(rows), len(cols)) <= 8
        np.testing.assert_array_equal(got[i][~blank[i]], x.numpy()[i][~blank[i]])


def test_color_is_an_affine_map_of_each_image():
    x = _images()
    got = objective.color(x, tf.constant([5, 5], tf.int64)).numpy()
    for i in range(4):
        a, b = np.polyfit(x.numpy()[i].ravel(), got[i].ravel(), 1)
        assert 0.5 <= a <= 1.5 and np.abs(np.polyval([a, b], x.numpy()[i].ravel()) - got[i].ravel()).max() < 1e-5


def test_augmentations_are_seeded_and_pass_gradients_to_the_generator():
    goal = Objective(augment=config.augmentations("translation,cutout,color"))
    x, seed = tf.Variable(_images()), tf.constant([4, 9], tf.int64)
    np.testing.assert_array_equal(goal.seen(x, seed).numpy(), goal.seen(x, seed).numpy())
    assert not np.array_equal(goal.seen(x, seed).numpy(), goal.seen(x, seed + [0, 1]).numpy())
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(goal.seen(x, seed) ** 2)
    grad = tape.gradient(y, x).numpy()
    assert np.isfinite(grad).all() and (np.abs(grad) > 0).mean() > 0.3
    np.testing.assert_array_equal(Objective().seen(x, seed).numpy(), x.numpy()), "no augmentation: as it is"


def test_every_augmentation_the_config_accepts_is_applied():
    assert tuple(objective.APPLY) == config.AUGMENTATIONS   # config cannot import TensorFlow: the test joins them
    for name in config.AUGMENTATIONS:
        x = _images()
        assert not np.allclose(Objective(augment=(name,)).seen(x, tf.constant([1, 2], tf.int64)).numpy(), x.numpy())


def test_hinge_and_the_seeds_losses():
    real, fake = tf.constant([[2.0], [0.5]]), tf.constant([[-2.0], [0.5]])
    hinge = Objective(loss="hinge")
    np.testing.assert_allclose(hinge.d_loss_per_image(real, fake).numpy(), [0.0, 0.5 + 1.5])
    np.testing.assert_allclose(hinge.g_loss_per_image(fake).numpy(), [2.0, -0.5])
    softplus = lambda z: np.log1p(np.exp(z))  # noqa: E731
    np.testing.assert_allclose(Objective().d_loss_per_image(real, fake).numpy(),
                               softplus(-np.array([2.0, 0.5])) + softplus(np.array([-2.0, 0.5])), rtol=1e-6)


def test_spectral_normalisation_bounds_the_discriminators_layers():
    d = model.build_discriminator(32, dropout_scale=0, spectral_norm=True)
    assert len(d.non_trainable_variables) == 4, "one power-iteration vector a weighted layer"
    x = _images(2, 32)
    for _ in range(20):   # power iterations converge over calls
        d(x, training=True)
    kernel = d.get_layer("d_logit_sn").layer.kernel.numpy()
    assert np.linalg.norm(kernel, 2) == pytest.approx(1.0, abs=0.05)
    assert len(d.weights) != len(model.build_discriminator(32).weights)


def test_a_checkpoint_of_the_other_discriminator_is_refused_and_a_bad_augment_named():
    cfg = config.load(None, ["train.d_spectral_norm=true"])
    with pytest.raises(CheckpointError, match="train.d_spectral_norm"):
        resume.check_compatible(cfg, "h", {"resolution": cfg.data.resolution, "noise_dim": 100}, "ckpt-1")
    with pytest.raises(ConfigError, match="train.augment"):
        config.load(None, ['train.augment="translation,zoom"'])
    assert config.augmentations("cutout, color") == ("cutout", "color")
    assert config.augmentations("color,color") is None
