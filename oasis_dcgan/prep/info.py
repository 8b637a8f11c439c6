"""`oasis-dcgan dataset info`: what a packed dataset holds, and a contact sheet to look at."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..imaging import pyplot, save_figure
from .manifest import load_manifest
from .reader import ShardReader


def summary(dataset: str | os.PathLike) -> list[str]:
    d = Path(dataset)
    m = load_manifest(d)
    lines = [f"dataset    {d}", f"layout     {m['layout']}  (from {', '.join(m['sources'])})",
             f"resolution {m['resolution']}x{m['resolution']} uint8", f"created    {m['created']}"]
    for split, s in m["splits"].items():
        lines.append(f"{split:<10} {s['count']:>7} images in {len(s['shards'])} shard(s)")
    for k, v in m.get("ignored", {}).items():
        lines.append(f"ignored    {k}: {v}")
    for k, v in m.get("converted", {}).items():
        lines.append(f"converted  {k}: {v}")
    lines.append(f"skipped    {len(m['skipped'])} bad file(s)")
    return lines


def contact_sheet(dataset: str | os.PathLike, path: str | os.PathLike, per_split: int = 8, rng_seed: int = 0) -> None:
    """A row of `per_split` random images for each split, as one PNG."""
    splits = list(load_manifest(dataset)["splits"])
    fig, axes = pyplot().subplots(len(splits), per_split, figsize=(per_split * 1.2, len(splits) * 1.35),
                                  squeeze=False)
    for r, split in enumerate(splits):
        reader = ShardReader(dataset, split)
        rng = np.random.default_rng(rng_seed)
        imgs = reader.read(np.sort(rng.choice(len(reader), size=min(per_split, len(reader)), replace=False)))
        reader.close()
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=255)
        axes[r, 0].set_title(split, loc="left", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def info(dataset: str | os.PathLike, sheet: str | os.PathLike | None = None) -> str:
    """The text summary; with `sheet`, also writes the contact sheet there."""
    lines = summary(dataset)
    if sheet is not None:
        contact_sheet(dataset, sheet)
        lines.append(f"sheet      {sheet}")
    return "\n".join(lines)
