"""The postprocess job: the seed metric per epoch, the checks beside it, figures, GIF, report.

Works on a finished run or a running one (it reports the epochs done so far). Results are
cached in RUN_DIR/report/: the real batches the metric draws (metric_batches.json) and the
per-epoch values (metrics.jsonl), so running it again only computes what is new.
"""
from __future__ import annotations

import logging
import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np

from .. import config as config_mod
from .. import fsutil, rundir
from ..config import Config
from ..errors import RunDirError
from ..imaging import to_unit
from ..prep.manifest import load_manifest, manifest_hash
from ..prep.reader import ShardReader, read_batches, sample_batches
from . import checks, figures, metrics, samples as generated_samples, speed
from .document import Bold, Code, Document

log = logging.getLogger(__name__)

NOTABLE_EPOCHS = (1, 2, 3, 10, 25, 50)  # the seed's table of epochs, for a 50-epoch run
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.npy$")


def epoch_samples(run: rundir.RunDir) -> list[tuple[int, Path]]:
    """(epoch, file) for every finished epoch's fixed-noise batch, in epoch order (not string order)."""
    d = run.samples
    found = [(int(m.group(1)), p) for p in d.glob("epoch_*.npy") if (m := EPOCH_FILE.match(p.name))] \
        if d.is_dir() else []
    return sorted(found)


def notable_epochs(n_epochs: int) -> list[int]:
    """The seed's table (1, 2, 3, 10, 25, 50) scaled to a run of n_epochs."""
    if n_epochs >= 50:
        picks = [e if e <= 3 else round(e * n_epochs / 50) for e in NOTABLE_EPOCHS]
    else:
        picks = [min(e, n_epochs) if e <= 3 else max(1, round(e * n_epochs / 50)) for e in NOTABLE_EPOCHS]
    return sorted(set(max(1, min(n_epochs, p)) for p in picks))


# ----------------------------------------------------------------------------- metrics

def metric_batches(report_dir: Path, dataset: str, cfg: Config) -> dict:
    """The seeded selection of real batches; cached so every epoch and every rerun uses the same."""
    path = report_dir / rundir.REPORT_BATCHES
    want = {"order": "as drawn", "split": cfg.metrics.split, "seed": cfg.metrics.seed,
            "batch_size": cfg.metrics.batch_size,
            "n_batches": cfg.metrics.batches, "dataset_manifest_sha256": manifest_hash(dataset)}
    if path.is_file():
        cached = fsutil.read_json(path)
        if all(cached.get(k) == v for k, v in want.items()):
            return cached
    n = len(ShardReader(dataset, cfg.metrics.split))
    rng = np.random.default_rng(cfg.metrics.seed)
    # In the order drawn: images are paired by position, and sorting would pair low indices
    # (early cases) with the first positions every time.
    batches = [rng.choice(n, size=cfg.metrics.batch_size, replace=n < cfg.metrics.batch_size).tolist()
               for _ in range(cfg.metrics.batches)]
    out = {**want, "batches": batches}
    fsutil.write_json(path, out)
    return out


def epoch_batches(dataset: str, cfg: Config, epoch: int) -> np.ndarray:
    """The seed's way (metrics.real_batches = "per_epoch"): new random batches every epoch, in random order."""
    m = cfg.metrics
    return sample_batches(dataset, m.batches, m.batch_size, m.seed * 100_003 + epoch, m.split)[1]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def per_epoch_metrics(run: rundir.RunDir, report_dir: Path, dataset: str, cfg: Config) -> list[dict]:
    """The seed's max-SSIM for every finished epoch; reuses values already in metrics.jsonl."""
    sel = metric_batches(report_dir, dataset, cfg)
    key = _digest([sel["batches"], cfg.metrics.real_batches])
    path = report_dir / rundir.REPORT_PER_EPOCH
    done = {r["epoch"]: r for r in fsutil.read_jsonl(path) if r.get("batches_sha") == key}
    # An epoch rewritten after a resume has new samples: the cache is keyed on their bytes too.
    todo = [(e, p, fsutil.sha256_file(p)[:16]) for e, p in epoch_samples(run)]
    todo = [(e, p, h) for e, p, h in todo if done.get(e, {}).get("samples_sha") != h]
    if todo:
        fixed = read_batches(dataset, sel["split"], sel["batches"]) if cfg.metrics.real_batches == "fixed" else None
        t0 = time.perf_counter()
        for e, p, h in todo:
            real = fixed if fixed is not None else epoch_batches(dataset, cfg, e)
            m = metrics.max_ssim_over_batches(figures.load_batch(p), real, max_val=2.0)
            done[e] = {"epoch": e, "seed_max_ssim": m["max"], "best_batch": m["batch"],
                       "best_position": m["position"], "mean_ssim": float(np.mean(m["values"])),
                       "batches_sha": key, "samples_sha": h}
        log.info(f"[postprocess] seed metric for {len(todo)} epoch(s) in {time.perf_counter() - t0:.2f} s")
    rows = [done[e] for e in sorted(done)]
    fsutil.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def summarise(rows: list[dict], results: dict, cfg: Config, epochs_done: int, run_complete: bool) -> dict:
    """metrics.json: the seed metric over epochs, and the checks beside it."""
    per_epoch = [r["seed_max_ssim"] for r in rows]
    return {
        "seed_max_ssim": {"per_epoch": per_epoch, "epochs": [r["epoch"] for r in rows],
                          "final": per_epoch[-1], "best": max(per_epoch),
                          "definition": "max over 50x16 position-paired tf.image.ssim values, max_val=2",
                          "batches": cfg.metrics.batches, "batch_size": cfg.metrics.batch_size,
                          "split": cfg.metrics.split, "seed_reported": figures.SEED_REPORTED_SSIM},
        **results,
        "epochs_done": epochs_done,
        "run_complete": run_complete,
    }


def final_generators(run: rundir.RunDir) -> tuple[Path | None, Path | None]:
    """The final generator and the raw one beside the average, of a finished run only: while a run
    trains or after it stopped, the files there may be an earlier finish's."""
    if not run.finished():
        return None, None
    return run.generator, (run.generator_raw if run.generator_raw.is_file() else None)


def judged(run: rundir.RunDir, last_batch: tuple[int, Path], dataset: str, cfg: Config) -> checks.Context:
    """What the checks judge: the final generator's samples, else the newest epoch's fixed-noise batch."""
    m = cfg.metrics
    final, raw = final_generators(run)
    if final is not None:
        images = generated_samples.generate(final, m.nn_samples, checks.samples_seed(m))
        return checks.Context(images, final.name, dataset, m, generator=final, raw=raw)
    return checks.Context(figures.load_batch(last_batch[1]), f"fixed-noise batch of epoch {last_batch[0]} (no final "
                          "generator yet)", dataset, m)


# ----------------------------------------------------------------------------- figures

def render_figures(report_dir: Path, stats: list[dict], rows: list[dict], samples: list, real_batch: np.ndarray,
                   ctx: checks.Context) -> list[tuple[str, str]]:
    """Every figure of the report; returns (title, file name) in report order."""
    nn, reader = {"ssim": ctx.gen.nn, "index": ctx.gen.nearest}, ctx.base.train
    out = []
    if any(r.get("kind") == "epoch" for r in stats):
        figures.plot_losses(stats, report_dir / rundir.FIGURE_LOSS)
        out.append(("Loss per epoch", rundir.FIGURE_LOSS))
    figures.plot_ssim(rows, report_dir / rundir.FIGURE_SSIM)
    out.append(("SSIM per epoch", rundir.FIGURE_SSIM))
    figures.make_gif(samples, report_dir / rundir.FIGURE_PROGRESS)
    out.append(("Progress over epochs", rundir.FIGURE_PROGRESS))
    by_epoch, last = dict(samples), samples[-1][0]
    figures.plot_notable(by_epoch, [e for e in notable_epochs(last) if e in by_epoch],
                         report_dir / rundir.FIGURE_NOTABLE)
    out.append(("Notable epochs", rundir.FIGURE_NOTABLE))
    figures.plot_side_by_side(figures.load_batch(samples[-1][1]), real_batch, last, report_dir / rundir.FIGURE_LAST)
    out.append((f"Epoch {last} beside a real batch", rundir.FIGURE_LAST))
    closest = np.argsort(-nn["ssim"])[:8]  # the pairs most like copies, not the first samples
    nearest = to_unit(reader.read(nn["index"][closest]))
    figures.plot_nn_pairs(ctx.generated[closest], nearest, nn["ssim"][closest], report_dir / rundir.FIGURE_NN_PAIRS,
                          split=reader.split)
    out.append((f"The 8 generated images closest to a {reader.split} image, and that image", rundir.FIGURE_NN_PAIRS))
    figures.plot_nn_distributions(nn["ssim"], ctx.held.nn if ctx.held is not None else np.zeros(0),
                                  report_dir / rundir.FIGURE_NN_SSIM, reader.split, ctx.base.held_split or "-")
    out.append(("Nearest-neighbour SSIM, generated and held-out", rundir.FIGURE_NN_SSIM))
    return out


# ----------------------------------------------------------------------------- the report

METRIC_MEANING = (
    "For each of 50 random batches of 16 real training images, generated image k is compared with real image k "
    "(tf.image.ssim defaults, max_val=2 on (-1, 1) data), and the largest of the 800 values is reported. It says "
    "that at least one generated slice resembles at least one real slice in local structure. It does not measure "
    "diversity (a generator that collapses to one good slice scores well), nor novelty (a generator that memorises "
    "training slices scores best), and its value depends on max_val, the pairing and the reference split, so "
    "published figures measured differently are not comparable. The nearest-neighbour SSIM (memorisation: close "
    "to 1 means copies of training images) and the MS-SSIM diversity (generated far above real: the images are "
    "more alike than brains are, too little variety; far below: less alike than brains are, noise or inconsistent "
    "anatomy) are the checks that say more.")

def _metrics_section(doc: Document, m: dict, manifest: dict) -> None:
    ref = m["seed_max_ssim"]
    res = manifest.get("resolution")
    doc.heading("Metrics")
    doc.paragraph(Bold("Data: "), f"{manifest.get('origin', 'as given')}, {res}x{res}. The seed README's figure is "
                  "for real OASIS slices at 256x256: set beside a run on other data or another size, the two "
                  "numbers measure different things.")
    checks.add_section(doc, m, [
        [f"max SSIM vs {ref.get('batches', 50)} real {ref.get('split', 'train')} batches (final epoch)",
         checks.fmt(ref["final"], 4), str(figures.SEED_REPORTED_SSIM)],
        ["best max SSIM over epochs (picked on these same batches, so optimistic)", checks.fmt(ref.get("best"), 4),
         "-"],
    ], ["metric", f"this run ({res} px)", "seed README (OASIS, 256 px)"])
    doc.paragraph(Bold("What the seed metric means, and what it does not."), " " + METRIC_MEANING)


def _speed_section(doc: Document, split: dict | None, options: dict) -> None:
    doc.heading("Where a step's time goes")
    doc.paragraph(f"{options.get('world_size', 1)} rank(s), global batch {options.get('global_batch', '?')}; "
                  "per step, the median over the epochs after the first (which traces the step):")
    doc.table(speed.HEADER, [speed.row(split)])


def _said(v) -> str:
    """A recipe value as the config spells it: numbers short, strings quoted, booleans lower-case."""
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, (int, float)) else f'"{v}"'


def recipe(cfg: dict) -> str:
    """The training recipe in words, saying where it departs from the seed's (config.seed_recipe())."""
    seed = config_mod.seed_recipe()
    train = cfg.get("train", {})
    ours = {k: train.get(k.split(".", 1)[1], v) for k, v in seed.items()}  # a key an older run lacked: the seed's
    differs = [f"{k} {_said(seed[k])}" for k in seed if ours[k] != seed[k]]
    words = (f"Adam, {', '.join(config_mod.recipe_words(ours))}: "
             + ("the seed's recipe" if not differs else f"not the seed's recipe (the seed's: {', '.join(differs)})"))
    ema = train.get("ema_kimg", 0)
    if ema:
        words += (f"; samples and metrics come from the generator average (half-life {ema:g} kimg, ramp-up "
                  f"{train.get('ema_rampup', 0):g}), which the seed did not have")
    return words + "."


def build_document(run: rundir.RunDir, options: dict, manifest: dict, m: dict, rows: list[dict],
                   figure_list: list[tuple[str, str]]) -> Document:
    cfg = options.get("config", {})
    doc = Document("OASIS brain DCGAN: run report")
    doc.lines([["Run directory: ", Code(str(run))],
               f"Generated: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
               f"Epochs done: {m['epochs_done']} of {cfg.get('train', {}).get('epochs', '?')}"
               + ("" if m["run_complete"] else " (run still in progress; figures show the epochs so far)")])
    doc.paragraph(Bold("Training recipe: "), recipe(cfg))
    _metrics_section(doc, m, manifest)
    _speed_section(doc, m.get("step_split"), options)
    doc.heading("Dataset")
    doc.bullets([
        ["layout ", Code(str(manifest.get("layout"))), f", {manifest.get('resolution')}x{manifest.get('resolution')}, "
         f"from {', '.join(manifest.get('sources', []))}"],
        "images: " + ", ".join(f"{k} {v}" for k, v in manifest.get("counts", {}).items()),
        f"skipped bad files: {len(manifest.get('skipped', []))}; ignored: "
        + ", ".join(f"{k} {v}" for k, v in manifest.get("ignored", {}).items())])
    doc.heading("Figures")
    for title, fname in figure_list:
        doc.heading(title, level=3)
        doc.image(title, fname)
    doc.heading("Per-epoch seed metric")
    doc.table(["epoch", "max SSIM", "mean SSIM"],
              [[str(r["epoch"]), f"{r['seed_max_ssim']:.4f}", f"{r['mean_ssim']:.4f}"] for r in rows])
    doc.heading("Run options")
    doc.code(json.dumps({k: options.get(k) for k in (
        "config", "world_size", "learning_rate", "global_batch", "steps_per_epoch", "dataset_manifest_sha256",
        "versions", "git_revision")}, indent=2))
    return doc


# ----------------------------------------------------------------------------- the job

def load_run(run: rundir.RunDir, dataset: str | None = None, batches: int | None = None, config_file: str | None = None,
             overrides: tuple = ()) -> tuple[dict, Config]:
    """options.json and the run's own config, with a config file, overrides, the dataset and the
    batch count on top of it when given."""
    options = run.read_options()
    cfg = config_mod.load(config_file, overrides, base=options["config"])
    if dataset:
        cfg.data.dataset = str(dataset)
    if batches:
        cfg.metrics.batches = int(batches)
    return options, cfg.validate()


def postprocess(run: rundir.RunDir, dataset: str | None = None, batches: int | None = None,
                config_file: str | None = None, overrides: tuple = ()) -> dict:
    options, cfg = load_run(run, dataset, batches, config_file, tuple(overrides))
    ds = cfg.data.dataset
    manifest = load_manifest(ds)
    report_dir = run.report
    report_dir.mkdir(exist_ok=True)
    samples = epoch_samples(run)
    if not samples:
        raise RunDirError(f"{run.samples}: no finished epoch yet; nothing to report")
    # ---- The seed metric, every finished epoch (cached)
    rows = per_epoch_metrics(run, report_dir, ds, cfg)
    # ---- Copying, quality, variety, the anchors, FID/KID on the final generator
    ctx = judged(run, samples[-1], ds, cfg)
    results = checks.run_all(ctx)
    m = summarise(rows, results, cfg, samples[-1][0], run.finished())
    m["step_split"] = speed.step_split(run.read_stats("epoch"), options.get("world_size", 1), cfg.train.fp16_allreduce)
    fsutil.write_json(run.report_file(rundir.REPORT_METRICS), m)
    # ---- Figures and the report, Markdown and standalone HTML from the same document
    real_batch = to_unit(ctx.base.train.read(metric_batches(report_dir, ds, cfg)["batches"][0]))
    figure_list = render_figures(report_dir, run.read_stats(), rows, samples, real_batch, ctx)
    doc = build_document(run, options, manifest, m, rows, figure_list)
    fsutil.write_text(run.report_file(rundir.REPORT_MD), doc.markdown())
    fsutil.write_text(run.report_file(rundir.REPORT_HTML), doc.html(report_dir))
    log.info(f"[postprocess] report: {run.report_file(rundir.REPORT_HTML)}")
    m["per_epoch_rows"], m["report"] = rows, str(run.report_file(rundir.REPORT_HTML))
    return m
