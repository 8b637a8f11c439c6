"""The seed project's approach, as the baseline every benchmark's ratio is taken against.

Written in this project from the seed's description (see docs/metrics.md and the model in
the README): nothing here imports the suite, so a change to the suite never moves its own
baseline. Three measurements, each printed as one JSON line:

    python -m bench.seed_style train --res 256 --steps 10 [--threads N]
        the seed's model and two-tape step, one compiled call a step, on a batch already in memory
    python -m bench.seed_style png FOLDER --limit 1000 --res 256
        the seed's input: read, decode, resize and scale each PNG, every epoch
    python -m bench.seed_style ssim FOLDER --res 256 --batches 50 [--skimage] [--rng-seed 0]
        the seed's metric: an eager tf.image.ssim per real batch, then the maximum
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

BATCH, NOISE_DIM = 16, 100


def seed_models(res: int):
    """The seed's generator and discriminator at `res` (a multiple of 8)."""
    import tensorflow as tf

    layers = tf.keras.layers
    s = res // 8
    generator = tf.keras.Sequential([
        layers.Input((NOISE_DIM,)), layers.Dense(s * s * 256, use_bias=False), layers.BatchNormalization(),
        layers.LeakyReLU(), layers.Reshape((s, s, 256)),
        layers.Conv2DTranspose(128, 3, strides=2, padding="same", use_bias=False), layers.BatchNormalization(),
        layers.LeakyReLU(),
        layers.Conv2DTranspose(64, 3, strides=2, padding="same", use_bias=False), layers.BatchNormalization(),
        layers.LeakyReLU(),
        layers.Conv2DTranspose(1, 3, strides=2, padding="same", use_bias=False, activation="tanh")])
    discriminator = tf.keras.Sequential([
        layers.Input((res, res, 1)),
        layers.Conv2D(64, 3, strides=2, padding="same"), layers.LeakyReLU(), layers.Dropout(0.4),
        layers.Conv2D(128, 3, strides=2, padding="same"), layers.LeakyReLU(), layers.Dropout(0.2),
        layers.Conv2D(256, 3, strides=2, padding="same"), layers.LeakyReLU(), layers.Dropout(0.2),
        layers.Flatten(), layers.Dense(1)])
    return generator, discriminator


def train(res: int, steps: int, threads: int = 0) -> dict:
    """Images a second of the seed's step: fresh noise, both tapes, both Adam updates."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    generator, discriminator = seed_models(res)
    g_opt, d_opt = tf.keras.optimizers.Adam(1e-4), tf.keras.optimizers.Adam(1e-4)
    bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(images):
        noise = tf.random.normal([BATCH, NOISE_DIM])
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = generator(noise, training=True)
            real_out, fake_out = discriminator(images, training=True), discriminator(fake, training=True)
            g_loss = bce(tf.ones_like(fake_out), fake_out)
            d_loss = bce(tf.ones_like(real_out), real_out) + bce(tf.zeros_like(fake_out), fake_out)
        g_opt.apply_gradients(zip(g_tape.gradient(g_loss, generator.trainable_variables),
                                  generator.trainable_variables))
        d_opt.apply_gradients(zip(d_tape.gradient(d_loss, discriminator.trainable_variables),
                                  discriminator.trainable_variables))
        return g_loss, d_loss

    images = tf.random.uniform([BATCH, res, res, 1], -1, 1)
    for _ in range(2):   # tracing, and the first step's allocations
        step(images)
    t = time.perf_counter()
    for _ in range(steps):
        out = step(images)
    float(out[0])
    seconds = time.perf_counter() - t
    return {"bench": "seed_train", "res": res, "batch": BATCH, "steps": steps, "threads": threads,
            "images_per_s": steps * BATCH / seconds, "ms_per_step": seconds / steps * 1000}


def png_files(folder: str, limit: int) -> list[Path]:
    """The folder's PNGs in the seed's order (numbers compared as numbers), at most `limit`."""
    def key(p: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    files = sorted(Path(folder).glob("*.png"), key=key)[:limit]
    if not files:
        raise SystemExit(f"{folder}: no PNG files")
    return files


def png(folder: str, limit: int, res: int) -> dict:
    """Images a second of the seed's input path, one file at a time, eagerly."""
    import tensorflow as tf

    files = png_files(folder, limit)
    t = time.perf_counter()
    for f in files:
        image = tf.image.resize(tf.io.decode_png(tf.io.read_file(str(f)), channels=1), [res, res])
        image = (tf.cast(image, tf.float32) - 127.5) / 127.5
    seconds = time.perf_counter() - t
    return {"bench": "seed_png", "res": res, "files": len(files), "images_per_s": len(files) / seconds}


def reals(folder: str, res: int, limit: int = 4000) -> np.ndarray:
    """The folder's images in (-1, 1) at `res`, float32 [N, res, res]."""
    import imageio.v3 as iio
    from skimage.transform import resize

    out = []
    for f in png_files(folder, limit):
        a = iio.imread(f).astype(np.float32)
        a = a[..., :3].mean(-1) if a.ndim == 3 else a
        if a.shape != (res, res):
            a = resize(a, (res, res), preserve_range=True, anti_aliasing=True)
        out.append(a / 127.5 - 1)
    return np.stack(out).astype(np.float32)


def draws(images: np.ndarray, rng_seed: int, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for the fixed-noise samples (16 real images plus noise) and the real batches,
    drawn in this order from one generator, so any implementation can score the same pairs."""
    rng = np.random.default_rng(rng_seed)
    n, res = len(images), images.shape[-1]
    fixed = np.clip(images[rng.choice(n, BATCH)] + rng.normal(0, 0.2, (BATCH, res, res)), -1, 1).astype(np.float32)
    return fixed, np.stack([images[rng.choice(n, BATCH)] for _ in range(batches)])


def ssim(folder: str, res: int, batches: int, with_skimage: bool, rng_seed: int) -> dict:
    """The seed's metric as the seed computes it: image k against real image k, batch by batch, eagerly."""
    import tensorflow as tf

    fixed, real = draws(reals(folder, res), rng_seed, batches)
    t = time.perf_counter()
    values = [tf.image.ssim(fixed[..., None], b[..., None], max_val=2.0) for b in real]
    best = float(tf.reduce_max(tf.stack(values)).numpy())
    out = {"bench": "seed_ssim", "res": res, "batches": batches, "pairs": BATCH * batches,
           "seed_loop_s": time.perf_counter() - t, "max_ssim": best}
    if with_skimage:
        from skimage.metrics import structural_similarity

        t = time.perf_counter()
        best_sk = max(structural_similarity(g, r, data_range=2.0, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False) for b in real for g, r in zip(fixed, b))
        out.update(skimage_loop_s=time.perf_counter() - t, max_ssim_skimage=float(best_sk))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--res", type=int, default=256)
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--threads", type=int, default=0, help="TensorFlow's intra- and inter-op threads (0: its default)")
    p = sub.add_parser("png")
    p.add_argument("folder")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--res", type=int, default=256)
    s = sub.add_parser("ssim")
    s.add_argument("folder")
    s.add_argument("--res", type=int, default=256)
    s.add_argument("--batches", type=int, default=50)
    s.add_argument("--skimage", action="store_true")
    s.add_argument("--rng-seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.cmd == "train":
        r = train(a.res, a.steps, a.threads)
    elif a.cmd == "png":
        r = png(a.folder, a.limit, a.res)
    else:
        r = ssim(a.folder, a.res, a.batches, a.skimage, a.rng_seed)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
