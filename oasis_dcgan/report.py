"""Post-processing: the seed's metric per epoch, the honest metrics, figures, GIF and report.

Works on a finished run or a running one (it reports the epochs done so far). Results are
cached in RUN_DIR/report/: the real batches the metric draws (metric_batches.json) and the
per-epoch values (metrics.jsonl), so running it again only computes what is new.
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from . import fsutil, metrics
from .config import Config
from .logs import read_stats

SEED_REPORTED_SSIM = 0.65
SEED_NOTABLE_EPOCHS = (1, 2, 3, 10, 25, 50)
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.npy$")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path, dpi: int = 100) -> None:
    with fsutil.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _plt().close(fig)


def epoch_samples(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, file) for every finished epoch's fixed-noise batch, in epoch order (not string order)."""
    d = run_dir / "samples"
    found = [(int(m.group(1)), p) for p in d.glob("epoch_*.npy") if (m := EPOCH_FILE.match(p.name))] \
        if d.is_dir() else []
    return sorted(found)


def load_batch(path) -> np.ndarray:
    """A saved fixed-noise batch as [N, H, W] in (-1, 1)."""
    a = np.load(path)
    return a[..., 0] if a.ndim == 4 else a


def notable_epochs(n_epochs: int) -> list[int]:
    """The seed's table (1, 2, 3, 10, 25, 50) scaled to a run of n_epochs."""
    if n_epochs >= 50:
        picks = [e if e <= 3 else round(e * n_epochs / 50) for e in SEED_NOTABLE_EPOCHS]
    else:
        picks = [min(e, n_epochs) if e <= 3 else max(1, round(e * n_epochs / 50)) for e in SEED_NOTABLE_EPOCHS]
    return sorted(set(max(1, min(n_epochs, p)) for p in picks))


# ----------------------------------------------------------------------------- metrics

def metric_batches(report_dir: Path, dataset: str, cfg: Config) -> dict:
    """The seeded selection of real batches; cached so every epoch and every rerun uses the same."""
    from .data import manifest_hash
    from .reader import ShardReader

    path = report_dir / "metric_batches.json"
    want = {"split": cfg.metrics.split, "seed": cfg.metrics.seed, "batch_size": cfg.metrics.batch_size,
            "n_batches": cfg.metrics.batches, "dataset_manifest_sha256": manifest_hash(dataset)}
    if path.is_file():
        cached = fsutil.read_json(path)
        if all(cached.get(k) == v for k, v in want.items()):
            return cached
    n = len(ShardReader(dataset, cfg.metrics.split))
    rng = np.random.default_rng(cfg.metrics.seed)
    batches = [sorted(rng.choice(n, size=cfg.metrics.batch_size, replace=n < cfg.metrics.batch_size).tolist())
               for _ in range(cfg.metrics.batches)]
    out = {**want, "batches": batches}
    fsutil.write_json(path, out)
    return out


def _load_real(dataset: str, split: str, batches: list) -> np.ndarray:
    from .reader import ShardReader, to_float

    r = ShardReader(dataset, split)
    flat = np.asarray(batches, dtype=np.int64).reshape(-1)
    uniq, inv = np.unique(flat, return_inverse=True)
    imgs = to_float(r.read(uniq))[inv]
    r.close()
    return imgs.reshape(len(batches), len(batches[0]), r.resolution, r.resolution)


def per_epoch_metrics(run_dir: Path, report_dir: Path, dataset: str, cfg: Config, log=print) -> list[dict]:
    """The seed's max-SSIM for every finished epoch; reuses values already in metrics.jsonl."""
    sel = metric_batches(report_dir, dataset, cfg)
    path = report_dir / "metrics.jsonl"
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("batches_sha") == _sha(sel["batches"]):
                done[r["epoch"]] = r
    todo = [(e, p) for e, p in epoch_samples(run_dir) if e not in done]
    if todo:
        real = _load_real(dataset, sel["split"], sel["batches"])
        t0 = time.perf_counter()
        for e, p in todo:
            gen = load_batch(p)
            m = metrics.seed_max_ssim(gen, real, max_val=2.0)
            done[e] = {"epoch": e, "seed_max_ssim": m["max"], "best_batch": m["batch"],
                       "best_position": m["position"], "mean_ssim": float(np.mean(m["values"])),
                       "batches_sha": _sha(sel["batches"])}
        log(f"[postprocess] seed metric for {len(todo)} epoch(s) in {time.perf_counter() - t0:.2f} s")
    rows = [done[e] for e in sorted(done)]
    fsutil.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _sha(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def _generate(run_dir: Path, n: int, noise_dim: int, seed: int) -> np.ndarray | None:
    gpath = run_dir / "generator.keras"
    if not gpath.is_file():
        return None
    import tensorflow as tf

    G = tf.keras.models.load_model(str(gpath), compile=False)
    noise = np.random.default_rng(seed).normal(size=(n, noise_dim)).astype(np.float32)
    return np.concatenate([G(noise[s:s + 64], training=False).numpy() for s in range(0, n, 64)])[..., 0]


# ----------------------------------------------------------------------------- figures

def _finish_epoch_plot(fig, ax, path: Path, ylabel: str, title: str) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, path)


def plot_losses(stats: list[dict], path: Path) -> None:
    ep = [r for r in stats if r.get("kind") == "epoch"]
    fig, ax = _plt().subplots(figsize=(6, 3.5))
    x = [r["epoch"] for r in ep]
    for key, color, label in (("g_loss", "tab:blue", "generator"), ("d_loss", "tab:red", "discriminator")):
        ax.plot(x, [r[key] for r in ep], marker="o", ms=3, color=color, label=f"{label} (epoch mean)")
        lo = [r.get(key + "_min", r[key]) for r in ep]
        hi = [r.get(key + "_max", r[key]) for r in ep]
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, label=f"{label} min-max over steps")
    _finish_epoch_plot(fig, ax, path, "BCE loss", "Losses per epoch")


def plot_ssim(rows: list[dict], path: Path) -> None:
    fig, ax = _plt().subplots(figsize=(6, 3.5))
    x = [r["epoch"] for r in rows]
    ax.plot(x, [r["seed_max_ssim"] for r in rows], marker="o", ms=3, label="max SSIM vs 50 real batches (seed metric)")
    ax.plot(x, [r["mean_ssim"] for r in rows], marker=".", ms=3, alpha=0.7, label="mean over the same 800 pairs")
    ax.axhline(SEED_REPORTED_SSIM, color="gray", ls="--", lw=1, label=f"seed reported ({SEED_REPORTED_SSIM})")
    _finish_epoch_plot(fig, ax, path, "SSIM", "SSIM per epoch")


def _grid(images: np.ndarray, cols: int = 4) -> np.ndarray:
    n, h, w = images.shape
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + 2), cols * (w + 2)), -1.0, np.float32)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 2) + 1:r * (h + 2) + 1 + h, c * (w + 2) + 1:c * (w + 2) + 1 + w] = im
    return out


def make_gif(samples: list[tuple[int, Path]], path: Path, fps: float = 4.0) -> int:
    """One frame per epoch, in epoch order, each labelled with its epoch."""
    import imageio.v3 as iio

    plt = _plt()
    frames = []
    for e, p in samples:
        fig, ax = plt.subplots(figsize=(4, 4.3))
        ax.imshow(_grid(load_batch(p)), cmap="gray", vmin=-1, vmax=1)
        ax.axis("off")
        ax.set_title(f"epoch {e}", fontsize=12)
        fig.tight_layout()
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        plt.close(fig)
    with fsutil.atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=int(1000 / fps), loop=0)
    return len(frames)


def plot_notable(samples: dict, epochs: list[int], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(epochs), figsize=(2.4 * len(epochs), 2.7), squeeze=False)
    for ax, e in zip(axes[0], epochs):
        ax.imshow(_grid(load_batch(samples[e])), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"epoch {e}")
        ax.axis("off")
    fig.tight_layout()
    _savefig(fig, path)


def plot_side_by_side(generated: np.ndarray, real: np.ndarray, epoch: int, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    for ax, imgs, title in ((axes[0], generated, f"generated, epoch {epoch}"), (axes[1], real, "real batch")):
        ax.imshow(_grid(imgs), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    _savefig(fig, path)


def plot_nn_pairs(generated: np.ndarray, nearest: np.ndarray, scores: np.ndarray, path: Path, n: int = 8) -> None:
    plt = _plt()
    n = min(n, len(generated))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(generated[i], cmap="gray", vmin=-1, vmax=1)
        axes[0, i].set_title(f"SSIM {scores[i]:.3f}", fontsize=8)
        axes[1, i].imshow(nearest[i], cmap="gray", vmin=-1, vmax=1)
        for r in (0, 1):
            axes[r, i].axis("off")
    axes[0, 0].text(-0.1, 0.5, "generated", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.1, 0.5, "nearest train", transform=axes[1, 0].transAxes, rotation=90, va="center",
                    ha="right")
    fig.tight_layout()
    _savefig(fig, path)


# ----------------------------------------------------------------------------- report

def _fmt(x, nd=4):
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def write_report(report_dir: Path, run_dir: Path, options: dict, manifest: dict, m: dict,
                 figures: list[tuple[str, str]]) -> None:
    cfg = options.get("config", {})
    seed_m = m["seed_max_ssim"]
    lines = [
        f"# OASIS brain DCGAN: run report",
        "",
        f"Run directory: `{run_dir}`  ",
        f"Generated: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}  ",
        f"Epochs done: {m['epochs_done']} of {cfg.get('train', {}).get('epochs', '?')}"
        + ("" if m["run_complete"] else " (run still in progress; figures show the epochs so far)"),
        "",
        "## Metrics",
        "",
        "| metric | this run | seed README |",
        "|---|---|---|",
        f"| max SSIM vs 50 real batches (final epoch) | {_fmt(seed_m['final'])} | {SEED_REPORTED_SSIM} |",
        f"| best max SSIM over epochs | {_fmt(seed_m.get('best'))} | - |",
        f"| nearest-neighbour SSIM, median (n={m['nn_ssim'].get('n', 0)}) | {_fmt(m['nn_ssim'].get('median'))} | - |",
        f"| MS-SSIM diversity, generated / real | {_fmt(m['ms_ssim_diversity'].get('generated'))} / "
        f"{_fmt(m['ms_ssim_diversity'].get('real'))} | - |",
        f"| FID / KID | {_fmt(m['fid'].get('fid'))} / {_fmt(m['fid'].get('kid'))} | - |",
        "",
        "**What the seed metric means, and what it does not.** For each of 50 random batches of 16 real "
        "training images, generated image k is compared with real image k (tf.image.ssim defaults, "
        "max_val=2 on (-1, 1) data), and the largest of the 800 values is reported. It says that at least "
        "one generated slice resembles at least one real slice in local structure. It does not measure "
        "diversity (a generator that collapses to one good slice scores well), nor novelty (a generator "
        "that memorises training slices scores best), and its value depends on max_val, the pairing and "
        "the reference split, so published figures measured differently are not comparable. The "
        "nearest-neighbour SSIM (memorisation: close to 1 means copies of training images) and the "
        "MS-SSIM diversity (collapse: generated far above real means too little variety) are the checks "
        "that say more.",
        "",
    ]
    if m["fid"].get("note"):
        lines += [f"FID/KID: {m['fid']['note']}", ""]
    lines += ["## Dataset", "",
              f"- layout `{manifest.get('layout')}`, {manifest.get('resolution')}x{manifest.get('resolution')}, "
              f"from {', '.join(manifest.get('sources', []))}",
              "- images: " + ", ".join(f"{k} {v}" for k, v in manifest.get("counts", {}).items()),
              f"- skipped bad files: {len(manifest.get('skipped', []))}; ignored: "
              + ", ".join(f"{k} {v}" for k, v in manifest.get("ignored", {}).items()), ""]
    lines += ["## Figures", ""]
    for title, fname in figures:
        lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    lines += ["## Per-epoch seed metric", "", "| epoch | max SSIM | mean SSIM |", "|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['seed_max_ssim']:.4f} | {r['mean_ssim']:.4f} |" for r in m["per_epoch_rows"]]
    lines += ["", "## Run options", "", "```json", json.dumps({k: options.get(k) for k in (
        "config", "world_size", "learning_rate", "global_batch", "steps_per_epoch", "dataset_manifest_sha256",
        "versions", "git_revision")}, indent=2), "```", ""]
    md = "\n".join(lines)
    fsutil.write_text(report_dir / "report.md", md)
    fsutil.write_text(report_dir / "report.html", _to_html(md, report_dir))


def _to_html(md: str, report_dir: Path) -> str:
    """A small Markdown subset to HTML, images inlined, so the file stands alone."""
    out, in_code, in_table = [], False, False
    for line in md.splitlines():
        if line.startswith("```"):
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            out.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        m = re.match(r"!\[(.*)\]\((.*)\)", line)
        if m:
            data = base64.b64encode((report_dir / m.group(2)).read_bytes()).decode()
            mime = "image/gif" if m.group(2).endswith(".gif") else "image/png"
            out.append(f'<p><img alt="{html.escape(m.group(1))}" src="data:{mime};base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if in_table:
        out.append("</table>")
    style = ("body{font-family:sans-serif;max-width:900px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
             "img{max-width:100%}pre{background:#f4f4f4;padding:1em;overflow:auto}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>OASIS DCGAN report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def _inline(s: str) -> str:
    s = html.escape(s)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


# ----------------------------------------------------------------------------- entry point

def postprocess(run_dir: str | os.PathLike, dataset: str | None = None, batches: int | None = None,
                log=print) -> dict:
    from . import config as config_mod
    from .data import load_manifest
    from .reader import ShardReader, sample_batches, to_float

    run_dir = Path(run_dir).resolve()
    opt_path = run_dir / "options.json"
    if not opt_path.is_file():
        raise FileNotFoundError(f"{opt_path}: not found; is {run_dir} a training run directory?")
    options = fsutil.read_json(opt_path)
    cfg = config_mod.from_dict(options["config"])
    if dataset:
        cfg.data.dataset = str(dataset)
    if batches:
        cfg.metrics.batches = int(batches)
    cfg.validate()
    ds = cfg.data.dataset
    manifest = load_manifest(ds)
    report_dir = run_dir / "report"
    report_dir.mkdir(exist_ok=True)
    samples = epoch_samples(run_dir)
    if not samples:
        raise ValueError(f"{run_dir}/samples: no finished epoch yet; nothing to report")

    rows = per_epoch_metrics(run_dir, report_dir, ds, cfg, log=log)
    stats = read_stats(run_dir / "stats.jsonl")
    run_complete = (run_dir / "train_done.json").is_file()
    reader = ShardReader(ds, cfg.metrics.split)

    # Beyond the seed: memorisation, collapse, and FID/KID when weights are at hand.
    gen = _generate(run_dir, cfg.metrics.nn_samples, cfg.train.noise_dim, cfg.metrics.seed + 1)
    gen_source = "generator.keras"
    if gen is None:
        gen = load_batch(samples[-1][1])
        gen_source = f"fixed-noise batch of epoch {samples[-1][0]} (no final generator yet)"
    t0 = time.perf_counter()
    nn = metrics.nearest_neighbours(gen, reader)
    log(f"[postprocess] nearest neighbours of {len(gen)} images among {len(reader)} in "
        f"{time.perf_counter() - t0:.1f} s")
    k = min(cfg.metrics.diversity_samples, len(gen))
    _, real_div = sample_batches(ds, 1, k, cfg.metrics.seed + 2, cfg.metrics.split)
    diversity = {"generated": metrics.pairwise_diversity(gen[:k]) if k >= 2 else None,
                 "real": metrics.pairwise_diversity(real_div[0]) if k >= 2 else None, "n": k}
    if cfg.metrics.fid_weights:
        _, real_fid = sample_batches(ds, 1, len(gen), cfg.metrics.seed + 3, cfg.metrics.split)
        fid = metrics.fid_kid(cfg.metrics.fid_weights, gen, real_fid[0])
    else:
        fid = {"fid": None, "kid": None, "note": "not computed: no feature-extractor weights were given "
               "(set metrics.fid_weights to a local .keras file). Nothing is ever downloaded."}

    per_epoch = [r["seed_max_ssim"] for r in rows]
    m = {
        "seed_max_ssim": {"per_epoch": per_epoch, "epochs": [r["epoch"] for r in rows],
                          "final": per_epoch[-1], "best": max(per_epoch),
                          "definition": "max over 50x16 position-paired tf.image.ssim values, max_val=2",
                          "batches": cfg.metrics.batches, "batch_size": cfg.metrics.batch_size,
                          "split": cfg.metrics.split, "seed_reported": SEED_REPORTED_SSIM},
        "nn_ssim": {**metrics.summary(nn["ssim"]), "n": len(gen), "source": gen_source,
                    "candidates_per_image": nn["candidates"], "exact": bool(nn["exact"]),
                    "nearest_index": nn["index"].tolist()},
        "ms_ssim_diversity": diversity,
        "fid": fid,
        "epochs_done": samples[-1][0],
        "run_complete": run_complete,
    }
    fsutil.write_json(report_dir / "metrics.json", m)

    figures = []
    if any(r.get("kind") == "epoch" for r in stats):
        plot_losses(stats, report_dir / "loss.png")
        figures.append(("Loss per epoch", "loss.png"))
    plot_ssim(rows, report_dir / "ssim.png")
    figures.append(("SSIM per epoch", "ssim.png"))
    make_gif(samples, report_dir / "progress.gif")
    figures.append(("Progress over epochs", "progress.gif"))
    by_epoch = dict(samples)
    n_epochs = samples[-1][0]
    plot_notable(by_epoch, [e for e in notable_epochs(n_epochs) if e in by_epoch], report_dir / "notable_epochs.png")
    figures.append(("Notable epochs", "notable_epochs.png"))
    sel = fsutil.read_json(report_dir / "metric_batches.json")
    real_batch = to_float(reader.read(sel["batches"][0]))
    plot_side_by_side(load_batch(samples[-1][1]), real_batch, n_epochs,
                      report_dir / "last_vs_real.png")
    figures.append((f"Epoch {n_epochs} beside a real batch", "last_vs_real.png"))
    nearest = to_float(reader.read(nn["index"][:8]))
    plot_nn_pairs(gen[:8], nearest, nn["ssim"][:8], report_dir / "nn_pairs.png")
    figures.append(("Generated images and their nearest training images", "nn_pairs.png"))
    m["per_epoch_rows"] = rows
    write_report(report_dir, run_dir, options, manifest, m, figures)
    reader.close()
    log(f"[postprocess] report: {report_dir / 'report.html'}")
    return m
