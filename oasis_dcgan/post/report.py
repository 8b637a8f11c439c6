"""The postprocess job: the reference metric per epoch, the checks beside it, figures, GIF, report.

Works on a finished run or a running one (it reports the epochs done so far). Results are
cached in RUN_DIR/report/: the real batches the metric draws (metric_batches.json) and the
per-epoch values (metrics.jsonl), so running it again only computes what is new.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from .. import config as config_mod
from .. import fsutil, rundir
from ..config import Config
from ..imaging import to_unit
from ..prep.manifest import load_manifest, manifest_hash
from ..prep.reader import ShardReader, read_batches, sample_batches
from . import features, figures, metrics, samples as generated_samples
from .document import Bold, Code, Document

NOTABLE_EPOCHS = (1, 2, 3, 10, 25, 50)  # the reference's table of epochs, for a 50-epoch run
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.npy$")


def epoch_samples(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, file) for every finished epoch's fixed-noise batch, in epoch order (not string order)."""
    d = rundir.RunDir(run_dir).samples
    found = [(int(m.group(1)), p) for p in d.glob("epoch_*.npy") if (m := EPOCH_FILE.match(p.name))] \
        if d.is_dir() else []
    return sorted(found)


def notable_epochs(n_epochs: int) -> list[int]:
    """The reference's table (1, 2, 3, 10, 25, 50) scaled to a run of n_epochs."""
    if n_epochs >= 50:
        picks = [e if e <= 3 else round(e * n_epochs / 50) for e in NOTABLE_EPOCHS]
    else:
        picks = [min(e, n_epochs) if e <= 3 else max(1, round(e * n_epochs / 50)) for e in NOTABLE_EPOCHS]
    return sorted(set(max(1, min(n_epochs, p)) for p in picks))


# ----------------------------------------------------------------------------- metrics

def metric_batches(report_dir: Path, dataset: str, cfg: Config) -> dict:
    """The seeded selection of real batches; cached so every epoch and every rerun uses the same."""
    path = report_dir / "metric_batches.json"
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


def per_epoch_metrics(run_dir: Path, report_dir: Path, dataset: str, cfg: Config, log=print) -> list[dict]:
    """The reference max-SSIM for every finished epoch; reuses values already in metrics.jsonl."""
    sel = metric_batches(report_dir, dataset, cfg)
    key = _digest([sel["batches"], cfg.metrics.real_batches])
    path = report_dir / "metrics.jsonl"
    done = {r["epoch"]: r for r in fsutil.read_jsonl(path) if r.get("batches_sha") == key}
    # An epoch rewritten after a resume has new samples: the cache is keyed on their bytes too.
    todo = [(e, p, fsutil.sha256_file(p)[:16]) for e, p in epoch_samples(run_dir)]
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
        log(f"[postprocess] seed metric for {len(todo)} epoch(s) in {time.perf_counter() - t0:.2f} s")
    rows = [done[e] for e in sorted(done)]
    fsutil.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def final_generators(run: rundir.RunDir) -> tuple[Path | None, Path | None]:
    """The final generator and the raw one beside the average, of a finished run only: while a run
    trains or after it stopped, the files there may be an earlier finish's."""
    if not run.finished():
        return None, None
    return run.generator, (run.generator_raw if run.generator_raw.is_file() else None)


def checks_beyond_reference(run: rundir.RunDir, last_batch: tuple[int, Path], reader: ShardReader, dataset: str,
                            cfg: Config, log=print) -> tuple[dict, np.ndarray, dict]:
    """Memorisation, collapse, and FID/KID when an extractor is at hand: (results, images, nn)."""
    m = cfg.metrics
    final, raw = final_generators(run)
    gen = generated_samples.generate(final, m.nn_samples, m.seed + 1) if final else None
    source = final.name if final else ""
    if gen is None:
        gen = figures.load_batch(last_batch[1])
        source = f"fixed-noise batch of epoch {last_batch[0]} (no final generator yet)"
    t0 = time.perf_counter()
    nn = metrics.nearest_ssim(gen, reader)
    held_out = holdout_baseline(dataset, reader, m, len(gen))
    log(f"[postprocess] exact nearest neighbours of {len(gen)} generated and {held_out.get('n', 0)} held-out "
        f"images among {len(reader)} in {time.perf_counter() - t0:.1f} s")
    k = min(m.diversity_samples, len(gen))
    _, real_div = sample_batches(dataset, 1, k, m.seed + 2, m.split)
    gen_div = metrics.diversity(gen[:k], seed=m.seed) if k >= 2 else {}
    real_div = metrics.diversity(real_div[0], seed=m.seed) if k >= 2 else {}
    diversity = {"generated": gen_div.get("mean"), "real": real_div.get("mean"), "n": k,
                 "generated_ci95": gen_div.get("ci95"), "real_ci95": real_div.get("ci95"),
                 "scales": gen_div.get("scales"), "real_split": m.split}
    fid = feature_checks(final, dataset, cfg, log) if m.fid_weights else {
        "fid": None, "kid": None, "note": "not computed: no feature-extractor weights were given "
        "(set metrics.fid_weights to a local .keras file). Nothing is ever downloaded."}
    results = {"nn_ssim": {**metrics.summary(nn["ssim"]), "n": len(gen), "source": source,
                           "candidates_per_image": len(reader), "exact": True, "split": m.split,
                           "nearest_index": nn["index"].tolist(), "values": nn["ssim"].tolist()},
               "nn_ssim_held_out": held_out,
               "raw_generator": raw_generator_checks(raw, reader, m, k),
               "ms_ssim_diversity": diversity, "fid": fid}
    return results, gen, nn


def raw_generator_checks(path: Path | None, reader: ShardReader, m, k: int) -> dict | None:
    """With a generator average, the same checks for the raw generator saved beside it."""
    if path is None:
        return None
    raw = generated_samples.generate(path, m.nn_samples, m.seed + 1)
    nn = metrics.nearest_ssim(raw, reader)
    return {"nn_ssim": metrics.summary(nn["ssim"]),
            "ms_ssim_diversity": metrics.diversity(raw[:k], seed=m.seed)["mean"] if k >= 2 else None,
            "note": "the generator's own weights; everything else in this file uses the generator average"}


def holdout_split(dataset: str, train_split: str) -> str | None:
    """The split whose images stand for unseen brains: validate, else test, never the compared one."""
    splits = load_manifest(dataset)["splits"]
    return next((s for s in ("validate", "test") if s in splits and s != train_split), None)


def holdout_baseline(dataset: str, reader: ShardReader, m, n: int) -> dict:
    """The same nearest-neighbour SSIM for real images the generator never saw: what 'not copying' looks like."""
    split = holdout_split(dataset, m.split)
    if split is None:
        return {"note": "no held-out split in the dataset: no baseline"}
    held = ShardReader(dataset, split)
    idx = np.sort(np.random.default_rng(m.seed + 5).choice(len(held), min(n, len(held)), replace=False))
    nn = metrics.nearest_ssim(to_unit(held.read(idx)), reader)
    return {**metrics.summary(nn["ssim"]), "n": len(idx), "split": split, "values": nn["ssim"].tolist()}


def feature_checks(final: Path | None, dataset: str, cfg: Config, log=print) -> dict:
    """FID, KID and precision/recall: the split's real images against at least as many generated ones."""
    m = cfg.metrics
    reader = ShardReader(dataset, m.split)
    n_real = min(len(reader), m.fid_real_images) if m.fid_real_images else len(reader)
    idx = np.sort(np.random.default_rng(m.seed + 3).choice(len(reader), n_real, replace=False))
    gen = generated_samples.generate(final, max(n_real, m.fid_generated_images), m.seed + 4) if final else None
    if gen is None:
        return {"fid": None, "kid": None, "note": "not computed: the run has no final generator yet"}
    t0 = time.perf_counter()
    net = features.load_extractor(m.fid_weights)
    f_real = features.features(net, to_unit(reader.read(idx)), m.fid_preprocessing)
    f_gen = features.features(net, gen, m.fid_preprocessing)
    out = {**features.frechet_distance(f_gen, f_real), **features.kid(f_gen, f_real, m.kid_subsets, m.kid_subset_size,
                                                                         m.seed),
           **features.precision_recall(f_real, f_gen, m.pr_neighbours),
           "extractor": m.fid_weights, "input_size": list(features.input_size(net)), "features": int(f_real.shape[1]),
           "preprocessing": m.fid_preprocessing, "n_real": n_real, "n_generated": len(gen), "split": m.split}
    out["kid"] = out["kid_mean"]  # the key metrics.json has always had
    log(f"[postprocess] FID {out['fid']:.2f}, KID {out['kid_mean']:.4f} +- {out['kid_std']:.4f}, precision "
        f"{out['precision']:.2f}, recall {out['recall']:.2f} ({n_real} real, {len(gen)} generated, "
        f"{time.perf_counter() - t0:.1f} s)")
    return out


def summarise(rows: list[dict], checks: dict, cfg: Config, epochs_done: int, run_complete: bool) -> dict:
    """metrics.json: the reference metric over epochs, and the checks beside it."""
    per_epoch = [r["seed_max_ssim"] for r in rows]
    return {
        "seed_max_ssim": {"per_epoch": per_epoch, "epochs": [r["epoch"] for r in rows],
                          "final": per_epoch[-1], "best": max(per_epoch),
                          "definition": "max over 50x16 position-paired tf.image.ssim values, max_val=2",
                          "batches": cfg.metrics.batches, "batch_size": cfg.metrics.batch_size,
                          "split": cfg.metrics.split, "seed_reported": figures.REFERENCE_SSIM},
        **checks,
        "epochs_done": epochs_done,
        "run_complete": run_complete,
    }


# ----------------------------------------------------------------------------- figures

def render_figures(report_dir: Path, stats: list[dict], rows: list[dict], samples: list, real_batch: np.ndarray,
                   gen: np.ndarray, nn: dict, reader: ShardReader, held: dict) -> list[tuple[str, str]]:
    """Every figure of the report; returns (title, file name) in report order."""
    out = []
    if any(r.get("kind") == "epoch" for r in stats):
        figures.plot_losses(stats, report_dir / "loss.png")
        out.append(("Loss per epoch", "loss.png"))
    figures.plot_ssim(rows, report_dir / "ssim.png")
    out.append(("SSIM per epoch", "ssim.png"))
    figures.make_gif(samples, report_dir / "progress.gif")
    out.append(("Progress over epochs", "progress.gif"))
    by_epoch, last = dict(samples), samples[-1][0]
    figures.plot_notable(by_epoch, [e for e in notable_epochs(last) if e in by_epoch],
                         report_dir / "notable_epochs.png")
    out.append(("Notable epochs", "notable_epochs.png"))
    figures.plot_side_by_side(figures.load_batch(samples[-1][1]), real_batch, last, report_dir / "last_vs_real.png")
    out.append((f"Epoch {last} beside a real batch", "last_vs_real.png"))
    closest = np.argsort(-nn["ssim"])[:8]  # the pairs most like copies, not the first samples
    nearest = to_unit(reader.read(nn["index"][closest]))
    figures.plot_nn_pairs(gen[closest], nearest, nn["ssim"][closest], report_dir / "nn_pairs.png", split=reader.split)
    out.append((f"The 8 generated images closest to a {reader.split} image, and that image", "nn_pairs.png"))
    figures.plot_nn_distributions(nn["ssim"], np.asarray(held.get("values", [])), report_dir / "nn_ssim.png",
                                  reader.split, held.get("split", "-"))
    out.append(("Nearest-neighbour SSIM, generated and held-out", "nn_ssim.png"))
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

# The bands the readings use, the demo's goal's (README, "The demo's recipe"): the nearest-neighbour
# median at most NEAR_BASELINE under the held-out one, and not over it by more than COPYING (that
# would be copying); diversity within DIVERSITY_BAND of the real set's.
NEAR_BASELINE, COPYING, DIVERSITY_BAND = 0.05, 0.02, 0.10


def _nn_reading(m: dict) -> str | None:
    gen, held = m["nn_ssim"].get("median"), m.get("nn_ssim_held_out", {}).get("median")
    if gen is None or held is None:
        return None
    gap = gen - held
    head = f"Nearest-neighbour SSIM: median {gen:.3f} against {held:.3f} for unseen real slices (gap {gap:+.3f}). "
    if gap > COPYING:
        return head + "The samples are closer to training images than unseen brains are: a sign of copying."
    if gap >= -NEAR_BASELINE:
        return head + "The samples are as close to the training images as unseen brains are, and no closer."
    return head + ("A typical sample is further from its nearest training image than an unseen brain is: no sign "
                   "of copying, and not yet as brain-like as real slices.")


def _diversity_reading(d: dict) -> str | None:
    gen, real = d.get("generated"), d.get("real")
    if gen is None or not real:
        return None

    def ci(key):
        lo_hi = d.get(key)
        return f" (95% bootstrap interval {lo_hi[0]:.3f}-{lo_hi[1]:.3f})" if lo_hi else ""

    ratio = gen / real
    head = (f"MS-SSIM diversity over {d.get('scales', '?')} scales, {d.get('n', '?')} images each: generated "
            f"{gen:.3f}{ci('generated_ci95')}, real {d.get('real_split', 'train')} slices {real:.3f}"
            f"{ci('real_ci95')}, ratio {ratio:.2f}. ")
    if ratio > 1 + DIVERSITY_BAND:
        return head + "The samples are more alike than real slices are: too little variety (collapse at the extreme)."
    if ratio < 1 - DIVERSITY_BAND:
        return head + "The samples are less alike than real slices are: noise or inconsistent anatomy."
    return head + "The samples vary as much as real slices do."


def readings(m: dict) -> list[str]:
    """This run's checks read against their baselines, in words: what a reviewer asks first."""
    return [r for r in (_nn_reading(m), _diversity_reading(m.get("ms_ssim_diversity", {}))) if r]


def _fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def _metrics_section(doc: Document, m: dict, manifest: dict) -> None:
    ref = m["seed_max_ssim"]
    res = manifest.get("resolution")
    doc.heading("Metrics")
    doc.paragraph(Bold("Data: "), f"{manifest.get('origin', 'as given')}, {res}x{res}. The seed README's figure is "
                  "for real OASIS slices at 256x256: set beside a run on other data or another size, the two "
                  "numbers measure different things.")
    doc.table(["metric", f"this run ({res} px)", "seed README (OASIS, 256 px)"], [
        [f"max SSIM vs {ref.get('batches', 50)} real {ref.get('split', 'train')} batches (final epoch)",
         _fmt(ref["final"]), str(figures.REFERENCE_SSIM)],
        ["best max SSIM over epochs (picked on these same batches, so optimistic)", _fmt(ref.get("best")), "-"],
        [f"nearest-neighbour SSIM to the {m['nn_ssim'].get('split', 'train')} split, median "
         f"(n={m['nn_ssim'].get('n', 0)}, exact)", _fmt(m["nn_ssim"].get("median")), "-"],
        [f"the same for held-out {m.get('nn_ssim_held_out', {}).get('split', '-')} images (baseline: no copying)",
         _fmt(m.get("nn_ssim_held_out", {}).get("median")), "-"],
        ["MS-SSIM diversity, generated / real", f"{_fmt(m['ms_ssim_diversity'].get('generated'))} / "
                                                f"{_fmt(m['ms_ssim_diversity'].get('real'))}", "-"],
        ["FID / KID", f"{_fmt(m['fid'].get('fid'))} / {_fmt(m['fid'].get('kid'))}", "-"],
        ["precision / recall (k-NN, extractor features)",
         f"{_fmt(m['fid'].get('precision'))} / {_fmt(m['fid'].get('recall'))}", "-"],
    ])
    said = readings(m)
    if said:
        doc.bullets(said)
    doc.paragraph(Bold("What the seed metric means, and what it does not."), " " + METRIC_MEANING)
    if m["fid"].get("note"):
        doc.paragraph(f"FID/KID: {m['fid']['note']}")


def recipe(cfg: dict) -> str:
    """The training recipe in words, saying where it departs from the seed's (config.seed_recipe())."""
    seed = config_mod.seed_recipe()
    train = cfg.get("train", {})
    ours = {k: train.get(k.split(".", 1)[1], v) for k, v in seed.items()}  # a key an older run lacked: the seed's
    lr, beta1, ratio = ours["train.lr"], ours["train.adam_beta1"], ours["train.d_lr_ratio"]
    dropout, batch, rampdown = ours["train.d_dropout_scale"], ours["train.batch_size"], ours["train.lr_rampdown"]
    differs = [f"{k} {seed[k]:g}" for k in seed if ours[k] != seed[k]]
    falling = f" falling linearly over the last {rampdown:.0%} of the epochs" if rampdown else ""
    words = (f"Adam, learning rate {lr:g}{falling}, beta_1 {beta1:g}, discriminator learning rate x{ratio:g}, "
             f"discriminator dropout x{dropout:g}, batch {batch} per rank: "
             + ("the seed's recipe" if not differs else f"not the seed's recipe (the seed's: {', '.join(differs)})"))
    ema = train.get("ema_kimg", 0)
    if ema:
        words += (f"; samples and metrics come from the generator average (half-life {ema:g} kimg, ramp-up "
                  f"{train.get('ema_rampup', 0):g}), which the seed did not have")
    return words + "."


def build_document(run_dir: Path, options: dict, manifest: dict, m: dict, rows: list[dict],
                   figure_list: list[tuple[str, str]]) -> Document:
    cfg = options.get("config", {})
    doc = Document("OASIS brain DCGAN: run report")
    doc.lines([["Run directory: ", Code(str(run_dir))],
               f"Generated: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
               f"Epochs done: {m['epochs_done']} of {cfg.get('train', {}).get('epochs', '?')}"
               + ("" if m["run_complete"] else " (run still in progress; figures show the epochs so far)")])
    doc.paragraph(Bold("Training recipe: "), recipe(cfg))
    _metrics_section(doc, m, manifest)
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

def load_run(run_dir: Path, dataset: str | None = None, batches: int | None = None, config_file: str | None = None,
             overrides: tuple = ()) -> tuple[dict, Config]:
    """options.json and the run's own config, with a config file, overrides, the dataset and the
    batch count on top of it when given."""
    options = rundir.RunDir(run_dir).read_options()
    cfg = config_mod.load(config_file, overrides, base=options["config"])
    if dataset:
        cfg.data.dataset = str(dataset)
    if batches:
        cfg.metrics.batches = int(batches)
    return options, cfg.validate()


def postprocess(run_dir: str | os.PathLike, dataset: str | None = None, batches: int | None = None,
                log=print, config_file: str | None = None, overrides: tuple = ()) -> dict:
    run_dir = Path(run_dir).resolve()
    run = rundir.RunDir(run_dir)
    options, cfg = load_run(run_dir, dataset, batches, config_file, tuple(overrides))
    ds = cfg.data.dataset
    manifest = load_manifest(ds)
    report_dir = run.report
    report_dir.mkdir(exist_ok=True)
    samples = epoch_samples(run_dir)
    if not samples:
        raise ValueError(f"{run_dir}/samples: no finished epoch yet; nothing to report")
    # ---- The reference metric, every finished epoch (cached)
    rows = per_epoch_metrics(run_dir, report_dir, ds, cfg, log=log)
    # ---- Memorisation, collapse, FID/KID on the final generator
    reader = ShardReader(ds, cfg.metrics.split)
    checks, gen, nn = checks_beyond_reference(run, samples[-1], reader, ds, cfg, log=log)
    m = summarise(rows, checks, cfg, samples[-1][0], run.finished())
    fsutil.write_json(run.report_file(rundir.REPORT_METRICS), m)
    # ---- Figures and the report, Markdown and standalone HTML from the same document
    real_batch = to_unit(reader.read(metric_batches(report_dir, ds, cfg)["batches"][0]))
    figure_list = render_figures(report_dir, run.read_stats(), rows, samples, real_batch, gen,
                                 nn, reader, checks["nn_ssim_held_out"])
    reader.close()
    doc = build_document(run_dir, options, manifest, m, rows, figure_list)
    fsutil.write_text(run.report_file(rundir.REPORT_MD), doc.markdown())
    fsutil.write_text(run.report_file(rundir.REPORT_HTML), doc.html(report_dir))
    log(f"[postprocess] report: {run.report_file(rundir.REPORT_HTML)}")
    m["per_epoch_rows"], m["report"] = rows, str(run.report_file(rundir.REPORT_HTML))
    return m
