"""The seed's DCGAN, layer for layer (../shared/SEED-FACTS.md), at any of 32/64/128/256.

Layer names are fixed so checkpoints and saved generators read the same across versions.
"""
from __future__ import annotations

import tensorflow as tf

L = tf.keras.layers


def build_generator(resolution: int = 256, noise_dim: int = 100) -> tf.keras.Model:
    s = resolution // 8
    return tf.keras.Sequential([
        L.Input((noise_dim,)),
        L.Dense(s * s * 256, use_bias=False, name="g_dense"),
        L.BatchNormalization(name="g_bn0"),
        L.LeakyReLU(name="g_act0"),
        L.Reshape((s, s, 256), name="g_reshape"),
        L.Conv2DTranspose(128, 3, strides=2, padding="same", use_bias=False, name="g_deconv1"),
        L.BatchNormalization(name="g_bn1"),
        L.LeakyReLU(name="g_act1"),
        L.Conv2DTranspose(64, 3, strides=2, padding="same", use_bias=False, name="g_deconv2"),
        L.BatchNormalization(name="g_bn2"),
        L.LeakyReLU(name="g_act2"),
        L.Conv2DTranspose(1, 3, strides=2, padding="same", use_bias=False, activation="tanh", name="g_out"),
    ], name="generator")


def build_discriminator(resolution: int = 256) -> tf.keras.Model:
    return tf.keras.Sequential([
        L.Input((resolution, resolution, 1)),
        L.Conv2D(64, 3, strides=2, padding="same", name="d_conv1"),
        L.LeakyReLU(name="d_act1"),
        L.Dropout(0.4, name="d_drop1"),
        L.Conv2D(128, 3, strides=2, padding="same", name="d_conv2"),
        L.LeakyReLU(name="d_act2"),
        L.Dropout(0.2, name="d_drop2"),
        L.Conv2D(256, 3, strides=2, padding="same", name="d_conv3"),
        L.LeakyReLU(name="d_act3"),
        L.Dropout(0.2, name="d_drop3"),
        L.Flatten(name="d_flatten"),
        L.Dense(1, name="d_logit"),
    ], name="discriminator")


_bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)


def discriminator_loss(real_logits, fake_logits):
    return _bce(tf.ones_like(real_logits), real_logits) + _bce(tf.zeros_like(fake_logits), fake_logits)


def generator_loss(fake_logits):
    return _bce(tf.ones_like(fake_logits), fake_logits)
