"""The report's figures: losses, SSIM per epoch, the progress GIF, notable epochs, comparisons."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import fsutil
from ..imaging import grid_figure, pyplot, save_figure, tile

SEED_REPORTED_SSIM = 0.65  # what the seed project reports after 50 epochs on OASIS


def load_batch(path) -> np.ndarray:
    """A saved fixed-noise batch as [N, H, W] in (-1, 1)."""
    a = np.load(path)
    return a[..., 0] if a.ndim == 4 else a


def _label_epoch_axes(ax, ylabel: str, title: str) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def _finish_epoch_plot(fig, ax, path: Path, ylabel: str, title: str) -> None:
    _label_epoch_axes(ax, ylabel, title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_losses(stats: list[dict], path: Path) -> None:
    ep = [r for r in stats if r.get("kind") == "epoch"]
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    x = [r["epoch"] for r in ep]
    for key, color, label in (("g_loss", "tab:blue", "generator"), ("d_loss", "tab:red", "discriminator")):
        ax.plot(x, [r[key] for r in ep], marker="o", ms=3, color=color, label=f"{label} (epoch mean)")
        lo = [r.get(key + "_min", r[key]) for r in ep]
        hi = [r.get(key + "_max", r[key]) for r in ep]
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, label=f"{label} min-max over steps")
    _finish_epoch_plot(fig, ax, path, "BCE loss", "Losses per epoch")


def plot_ssim(rows: list[dict], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    x = [r["epoch"] for r in rows]
    ax.plot(x, [r["seed_max_ssim"] for r in rows], marker="o", ms=3,
            label="max SSIM vs 50 real batches (seed metric)")
    ax.plot(x, [r["mean_ssim"] for r in rows], marker=".", ms=3, alpha=0.7, label="mean over the same 800 pairs")
    ax.axhline(SEED_REPORTED_SSIM, color="gray", ls="--", lw=1, label=f"seed reported ({SEED_REPORTED_SSIM})")
    _finish_epoch_plot(fig, ax, path, "SSIM", "SSIM per epoch")


def make_gif(samples: list[tuple[int, Path]], path: Path, fps: float = 4.0) -> int:
    """One frame per epoch, in epoch order, each labelled with its epoch."""
    import imageio.v3 as iio

    plt = pyplot()
    frames = []
    for epoch, p in samples:
        fig = grid_figure(load_batch(p), f"epoch {epoch}")
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        plt.close(fig)
    with fsutil.atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=int(1000 / fps), loop=0)
    return len(frames)


def plot_notable(samples: dict, epochs: list[int], path: Path) -> None:
    fig, axes = pyplot().subplots(1, len(epochs), figsize=(2.4 * len(epochs), 2.7), squeeze=False)
    for ax, e in zip(axes[0], epochs):
        ax.imshow(tile(load_batch(samples[e])), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"epoch {e}")
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def plot_side_by_side(generated: np.ndarray, real: np.ndarray, epoch: int, path: Path) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(7, 3.8))
    for ax, imgs, title in ((axes[0], generated, f"generated, epoch {epoch}"), (axes[1], real, "real batch")):
        ax.imshow(tile(imgs), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def plot_nn_pairs(generated: np.ndarray, nearest: np.ndarray, scores: np.ndarray, path: Path, n: int = 8,
                  split: str = "train") -> None:
    n = min(n, len(generated))
    fig, axes = pyplot().subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(generated[i], cmap="gray", vmin=-1, vmax=1)
        axes[0, i].set_title(f"SSIM {scores[i]:.3f}", fontsize=8)
        axes[1, i].imshow(nearest[i], cmap="gray", vmin=-1, vmax=1)
        for r in (0, 1):
            axes[r, i].axis("off")
    for r, label in ((0, "generated"), (1, f"nearest {split}")):
        axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_nn_distributions(generated: np.ndarray, held_out, path: Path, split: str = "train",
                          held_split: str = "validate") -> None:
    """Nearest-neighbour SSIM of generated images beside held-out real ones: the baseline is a
    distribution, so the comparison is too."""
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    bins = np.linspace(min(np.min(generated), np.min(held_out, initial=1.0)), 1.0, 31)
    ax.hist(generated, bins=bins, alpha=0.6, color="tab:blue", label=f"generated (median {np.median(generated):.3f})")
    if len(held_out):
        ax.hist(held_out, bins=bins, alpha=0.6, color="tab:gray",
                label=f"held-out {held_split} (median {np.median(held_out):.3f})")
    ax.set_xlabel(f"SSIM to the nearest {split} image")
    ax.set_ylabel("images")
    ax.set_title("Nearest-neighbour SSIM: right of the held-out images means copying")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_sweep_curves(curves: dict[str, dict], path: Path) -> None:
    """A sweep's runs side by side: the seed metric and G's loss per epoch, one line per run."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4))
    for name, c in curves.items():
        left.plot(c["ssim_epochs"], c["seed_max_ssim"], marker=".", ms=3, label=name)
        right.plot(c["loss_epochs"], c["g_loss"], marker=".", ms=3, label=name)
    left.axhline(SEED_REPORTED_SSIM, color="gray", ls="--", lw=1, label=f"seed reported ({SEED_REPORTED_SSIM})")
    _label_epoch_axes(left, "max SSIM", "Seed metric per epoch")
    _label_epoch_axes(right, "loss", "Generator loss per epoch")
    left.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
