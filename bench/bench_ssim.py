"""The seed metric: our vectorised SSIM against the seed's loop and a skimage loop, same run.

The seed baseline's own functions (bench/seed_style.py) make the data (real slices, a noisy
"generated" batch, 50 real batches); our implementation scores exactly the same arrays, so
the values sit side by side.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from bench import seed_style
from bench.common import sample_release, save, seed_baseline, table

REPEATS = 5


def matmul_gflops() -> float:
    """This CPU's float32 matmul throughput: the machine's practical compute peak."""
    import tensorflow as tf

    a = tf.random.normal([2048, 2048])
    tf.linalg.matmul(a, a).numpy()
    t = time.perf_counter()
    for _ in range(5):
        tf.linalg.matmul(a, a).numpy()
    return 5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9


def bench(res: int, folder: str) -> dict:
    from oasis_dcgan.post import metrics

    seed_run = seed_baseline("ssim", folder, "--res", str(res), "--skimage", "--rng-seed", "0")
    fixed, batches = seed_style.draws(seed_style.reals(folder, res), 0, 50)  # the pairs the baseline scored
    t = time.perf_counter()
    first = metrics.max_ssim_over_batches(fixed, batches)
    first_s = time.perf_counter() - t
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        out = metrics.max_ssim_over_batches(fixed, batches)
        times.append(time.perf_counter() - t)
    ours = float(np.median(times))
    px = (res - 10) ** 2
    # The limit: 5 filtered maps x 2 passes x 11 taps per output pixel, for each of 800 pairs.
    limit_macs = 800 * 5 * 2 * 11 * px
    # What this implementation filters: E[xy], E[y], E[y^2] per pair; the generated maps once.
    our_macs = (800 * 3 + 16 * 2) * 2 * 11 * px
    return {"res": res, "pairs": 800, "ours_s": ours, "ours_first_call_s": first_s,
            "seed_loop_s": seed_run["seed_loop_s"], "skimage_loop_s": seed_run["skimage_loop_s"],
            "x_vs_seed": seed_run["seed_loop_s"] / ours, "x_vs_skimage": seed_run["skimage_loop_s"] / ours,
            "value_ours": out["max"], "value_seed": seed_run["max_ssim"], "value_skimage": seed_run["max_ssim_skimage"],
            "abs_diff_vs_seed": abs(out["max"] - seed_run["max_ssim"]),
            "limit_gmac": limit_macs / 1e9, "ours_gmac": our_macs / 1e9, "first_value": first["max"]}


class _Head:
    """The first n images of a reader: a small warm-up that compiles the same block shapes."""

    def __init__(self, reader, n):
        self.reader, self.n = reader, n

    def __len__(self):
        return self.n

    def read(self, idx):
        return self.reader.read(idx)


def nearest(res: int, seed_pair_s: float, queries: int = 16) -> dict:
    """Exact nearest-neighbour SSIM: pairs a second, and the projected time for the metric's default
    256 generated images against OASIS's 9,664 training slices, beside the seed's per-pair SSIM."""
    from bench.bench_train import dataset
    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.post import metrics
    from oasis_dcgan.prep.reader import ShardReader

    reader = ShardReader(dataset(res), "train")
    q = to_unit(reader.read(np.arange(queries))) + np.random.default_rng(0).normal(0, 0.1, (queries, res, res))
    q = np.clip(q, -1, 1).astype(np.float32)
    metrics.nearest_ssim(q[:8], _Head(reader, 64))
    t = time.perf_counter()
    out = metrics.nearest_ssim(q, reader)
    secs = time.perf_counter() - t
    pairs = queries * len(reader)
    full = 256 * 9664
    return {"res": res, "pairs": pairs, "seconds": secs, "pairs_per_s": pairs / secs,
            "seed_pairs_per_s": 1 / seed_pair_s, "x_vs_seed": pairs / secs * seed_pair_s,
            "projected_s_256x9664": full / (pairs / secs), "seed_projected_s_256x9664": full * seed_pair_s,
            "found_own_source": float(np.mean(out["index"] == np.arange(queries)))}


RESULT = "ssim"


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folder = str(sample_release() / "keras_png_slices_data" / "keras_png_slices_train")
    peak = matmul_gflops()
    rows = [bench(res, folder) for res in (64, 256)]
    for r in rows:
        r["limit_s_at_peak"] = r["limit_gmac"] * 2 / peak
        r["ours_gmac_per_s"] = r["ours_gmac"] / r["ours_s"]
        r["fraction_of_peak"] = r["ours_gmac"] * 2 / r["ours_s"] / peak
    nn = nearest(256, rows[1]["seed_loop_s"] / 800)
    result = save(RESULT, {"matmul_gflops": peak, "rows": rows, "nearest": nn})
    show(result)
    return result


def show(result: dict) -> None:
    rows, nn = result["rows"], result["nearest"]
    print(table([(r["res"], f"{r['seed_loop_s']:.2f}", f"{r['skimage_loop_s']:.2f}", f"{r['ours_s']:.3f}",
                  f"{r['x_vs_seed']:.0f}x", f"{r['x_vs_skimage']:.1f}x",
                  f"{r['value_seed']:.5f} / {r['value_skimage']:.5f} / {r['value_ours']:.5f}",
                  f"{r['limit_s_at_peak']:.3f}", f"{r['fraction_of_peak'] * 100:.0f}%") for r in rows],
                ("res", "seed loop s", "skimage loop s", "ours s", "vs seed", "vs skimage",
                 "max SSIM seed / skimage / ours", "limit s (5 maps at matmul peak)", "ours, % of peak")))
    print(f"matmul peak on this machine: {result['matmul_gflops']:.0f} GFLOP/s")
    print()
    print(table([(f"{nn['res']}x{nn['res']}", f"{nn['seed_pairs_per_s']:.0f}", f"{nn['pairs_per_s']:.0f}",
                  f"{nn['x_vs_seed']:.1f}x", f"{nn['seed_projected_s_256x9664'] / 60:.0f} min",
                  f"{nn['projected_s_256x9664'] / 60:.1f} min")],
                ("exact nearest-neighbour SSIM", "seed way (tf.image.ssim, 16 pairs a call) pairs/s", "ours pairs/s",
                 "vs seed", "256 x 9,664 the seed way", "256 x 9,664 ours")))
    print(f"Measured on {nn['pairs']} pairs (16 noisy training images against the whole packed sample set); the "
          f"nearest was the image's own source for {nn['found_own_source'] * 100:.0f}% of them. Every pair is scored: "
          "no shortlist.")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
