"""Why the demo's recipe stalls: the demo's training, in one process, under changes no config key makes.

bench_recipe scans what the config offers, and every setting stops about 0.16 below the held-out baseline.
This probe asks whether the seed's generator or the missing regulariser is what holds it
back. One process trains the demo's recipe (Adam 4e-4, beta_1 0.5, D without dropout, a
batch of 16, the generator average) on the demo's sample brains at 64x64, for the demo's
1,920 steps, under each variant:
- the seed's generator: stride-2 3x3 transposed convolutions, as the suite trains it;
- 4x4 transposed convolutions (kernel divisible by the stride: no uneven overlap);
- bilinear upsampling then a 3x3 convolution, at each of the three stages;
- an R1 penalty on D's gradient at real images (gamma 1 and 10), with the seed's generator;
- the seed's generator for 4x the steps: what more time alone buys.
Every quarter it prints the median exact nearest-neighbour SSIM of 64 samples to the training
split and their MS-SSIM diversity over the real set's.
It is a probe, not the demo: one process with BatchNorm over 16 images, where the demo's two
ranks each see 8, so its rows compare with one another, and with the demo's only roughly.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from bench.common import WORK, save, table
from oasis_dcgan import config
from oasis_dcgan.config import DataConfig

STEPS = int(os.environ.get("OASIS_PROBE_STEPS", "1920"))  # the demo's 40 epochs of 48 steps
_DEMO = config.load(config.preset("demo"))  # one process takes the demo's global batch (its ranks' together)
BATCH, LR, BETA_1 = _DEMO.train.batch_size * _DEMO.cluster.tasks_per_node, _DEMO.train.lr, _DEMO.train.adam_beta1
EMA_KIMG, EMA_RAMPUP, NOISE, D_DROPOUT = (_DEMO.train.ema_kimg, _DEMO.train.ema_rampup, _DEMO.train.noise_dim,
                                          _DEMO.train.d_dropout_scale)
VARIANTS = {  # name: (upsampling, R1 gamma, steps x)
    "the seed's generator (3x3 transposed convolutions)": ("transpose3", 0.0, 1),
    "4x4 transposed convolutions": ("transpose4", 0.0, 1),
    "bilinear upsampling + 3x3 convolution": ("bilinear", 0.0, 1),
    "the seed's generator, R1 gamma 1": ("transpose3", 1.0, 1),
    "the seed's generator, R1 gamma 10": ("transpose3", 10.0, 1),
    "the seed's generator, 4x the steps": ("transpose3", 0.0, 4),
}

RESULT = "probe_generator"   # bench/results/probe_generator.json

def dataset(work):
    """The demo's sample brains, packed at 64 (made once, then reused)."""
    from oasis_dcgan.prep import pack, sample_data

    src, out = work / "oasis", work / "dataset-64"
    if not (out / "manifest.json").is_file():
        if not (src / "keras_png_slices_data").is_dir():
            sample_data.write_png_release(src, cases=(24, 4, 4), rng_seed=0)
        pack.preprocess(src, out, DataConfig(resolution=64, shard_size=256))
    return out


def generator(upsampling: str):
    """The seed's generator at 64 with its three upsampling stages built as `upsampling` says."""
    import tensorflow as tf

    from oasis_dcgan.training import model

    if upsampling == "transpose3":
        return model.build_generator(64, NOISE)
    L = tf.keras.layers

    def stage(channels, last=False):
        kw = dict(padding="same", use_bias=False, activation="tanh" if last else None)
        if upsampling == "transpose4":
            return [L.Conv2DTranspose(channels, 4, strides=2, **kw)]
        return [L.UpSampling2D(interpolation="bilinear"), L.Conv2D(channels, 3, **kw)]

    layers = [L.Input((NOISE,)), L.Dense(8 * 8 * 256, use_bias=False), L.BatchNormalization(), L.LeakyReLU(),
              L.Reshape((8, 8, 256))]
    for channels in (128, 64):
        layers += [*stage(channels), L.BatchNormalization(), L.LeakyReLU()]
    return tf.keras.Sequential(layers + stage(1, last=True))


def build_step(g, d, g_ema, r1_gamma: float):
    import tensorflow as tf

    from oasis_dcgan.config import TrainConfig
    from oasis_dcgan.training import model, step
    from oasis_dcgan.training.objective import Objective

    g_opt, d_opt = (model.build_optimizer(LR, TrainConfig(adam_beta1=BETA_1)) for _ in range(2))

    @tf.function
    def train_step(real, noise, images_seen):
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = g(noise, training=True)
            with tf.GradientTape() as r_tape:  # R1: D's input gradient at real images, itself differentiated
                r_tape.watch(real)
                real_logits = d(real, training=True)
                real_sum = tf.reduce_sum(real_logits)
            fake_logits = d(fake, training=True)
            g_loss = tf.reduce_mean(Objective().g_loss_per_image(fake_logits))
            d_loss = tf.reduce_mean(Objective().d_loss_per_image(real_logits, fake_logits))
            if r1_gamma > 0:
                grad = r_tape.gradient(real_sum, real)
                d_loss += r1_gamma / 2 * tf.reduce_mean(tf.reduce_sum(tf.square(grad), [1, 2, 3]))
        g_opt.apply_gradients(zip(g_tape.gradient(g_loss, g.trainable_variables), g.trainable_variables))
        d_opt.apply_gradients(zip(d_tape.gradient(d_loss, d.trainable_variables), d.trainable_variables))
        step.update_average(g_ema, g, step.ema_beta(EMA_KIMG, BATCH, images_seen, EMA_RAMPUP))

    return train_step


def score(images, reader, real_diversity: float) -> dict:
    from oasis_dcgan.post import metrics

    nn = float(np.median(metrics.nearest_ssim(images, reader)["ssim"]))
    return {"nn_median": nn, "diversity_ratio": metrics.pairwise_diversity(images) / real_diversity}


def run_variant(name, upsampling, r1_gamma, times, train, reader, baseline) -> dict:
    import tensorflow as tf

    from oasis_dcgan.training import model

    tf.keras.utils.set_random_seed(0)
    g, g_ema = generator(upsampling), generator(upsampling)
    g_ema.set_weights(g.get_weights())
    d = model.build_discriminator(64, dropout_scale=D_DROPOUT)
    train_step = build_step(g, d, g_ema, r1_gamma)
    rng, fixed = np.random.default_rng(0), np.random.default_rng(7).normal(size=(64, NOISE)).astype(np.float32)
    steps, per_epoch = STEPS * times, len(train) // BATCH
    points, t0 = [], time.time()
    for i in range(steps):
        if i % per_epoch == 0:
            order = rng.permutation(len(train))
        batch = train[order[(i % per_epoch) * BATCH:(i % per_epoch + 1) * BATCH]]
        train_step(tf.constant(batch), tf.constant(rng.normal(size=(BATCH, NOISE)).astype(np.float32)),
                   tf.constant((i + 1) * BATCH, tf.int64))
        if (i + 1) % (steps // 4) == 0:
            point = {"step": i + 1, "train_s": time.time() - t0, **score(g_ema(fixed, training=False).numpy(), reader,
                                                                          baseline["real_diversity"])}
            points.append(point)
            print(f"  {name}: step {i + 1}  NN-SSIM {point['nn_median']:.3f}  "
                  f"diversity ratio {point['diversity_ratio']:.2f}", file=sys.stderr, flush=True)
            t0 += time.time() - t0 - point["train_s"]  # scoring time is not training time
    return {"upsampling": upsampling, "r1_gamma": r1_gamma, "steps": steps, "points": points}


def baseline_of(reader, held) -> dict:
    """The demo report's references: held-out slices against the training split, and the real diversity."""
    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.post import metrics

    pick = np.sort(np.random.default_rng(0).choice(len(held), min(64, len(held)), replace=False))
    real = np.sort(np.random.default_rng(1).choice(len(reader), 64, replace=False))
    return {"held_out_median": float(np.median(metrics.nearest_ssim(to_unit(held.read(pick)), reader)["ssim"])),
            "real_diversity": metrics.pairwise_diversity(to_unit(reader.read(real)))}


def show(result: dict) -> None:
    held = result["baseline"]["held_out_median"]
    rows = []
    for name, r in result["runs"].items():
        last = r["points"][-1]
        trail = " / ".join(f"{p['nn_median']:.3f}" for p in r["points"])
        rows.append((name, r["steps"], f"{last['train_s'] / 60:.1f}", trail,
                     f"{last['nn_median'] - held:+.3f}", f"{last['diversity_ratio']:.2f}"))
    print(table(rows, ("one process, the demo's recipe", "steps", "training min", "NN-SSIM median at each quarter",
                       "gap at the end", "div. ratio")))
    print(f"\nHeld-out median {held:.3f}, real diversity {result['baseline']['real_diversity']:.3f}.")


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.prep.reader import ShardReader

    data = dataset(WORK / "probe")
    reader, held = ShardReader(data, "train"), ShardReader(data, "validate")
    train = to_unit(reader.read(np.arange(len(reader)))).astype(np.float32)[..., None]
    baseline = baseline_of(reader, held)
    print(f"baseline: {json.dumps(baseline)}", file=sys.stderr, flush=True)
    runs = {name: run_variant(name, *v, train, reader, baseline) for name, v in VARIANTS.items()}
    result = save(RESULT, {"steps": STEPS, "batch": BATCH, "lr": LR, "baseline": baseline, "runs": runs})
    show(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
