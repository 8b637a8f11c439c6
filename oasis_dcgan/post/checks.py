"""The checks beside the seed metric, each one definition in CHECKS: how it is computed, its
rows in the report's tables, and its reading in words. metrics.json holds each check's result
under its name; the report, the tables and the readings all come from CHECKS.

The seed metric alone says one generated slice resembles one real slice. These say more, each
against what real unseen brains score on the same data: copying (the share of samples closer to
a training slice than any held-out slice is), quality (the median nearest-neighbour SSIM, whole
slice and brain only), variety (MS-SSIM diversity against real slices), a ladder of simple
anchors the generator is placed on, and FID/KID with precision/recall when a local feature
extractor is given. Every figure carries a 95% interval and every verdict follows the intervals.
"""
from __future__ import annotations

import logging
import functools
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import MetricsConfig
from ..imaging import to_unit
from ..prep.manifest import load_manifest
from ..prep.reader import ShardReader
from . import anchors, features, intervals, metrics, quality, samples as generated_samples

log = logging.getLogger(__name__)

HELD_OUT_SPLITS = ("validate", "test")   # in order: the first is read for tuning, the second is the final holdout


def _cases(reader: ShardReader, idx: np.ndarray) -> np.ndarray:
    return np.array([m["case"] for m in reader.metadata(idx)])


@dataclass
class Context:
    """What the checks share: the generated images they judge, the dataset, and the sets scored once."""
    generated: np.ndarray           # [N, H, W] on (-1, 1)
    source: str                     # where they came from, in words
    dataset: str
    m: MetricsConfig
    generator: Path | None = None   # the generator they came from, when there is one: FID draws more from it
    raw: Path | None = None         # the raw generator beside an average
    results: dict = field(default_factory=dict)

    def __post_init__(self):
        self.train = ShardReader(self.dataset, self.m.split)
        splits = load_manifest(self.dataset)["splits"]
        held = [s for s in HELD_OUT_SPLITS if s in splits and s != self.m.split and splits[s]["count"]]
        self.held_split, self.test_split = (held + [None, None])[:2]
        self.k = min(self.m.diversity_samples, len(self.generated))   # images per diversity set

    def scored(self, images: np.ndarray, what: str, rng_offset: int, cases=None, k: int | None = None):
        t0 = time.perf_counter()
        p = quality.profile(images, self.train, self.k if k is None else k, self.m.seed + rng_offset, cases)
        log.info(f"[postprocess] {what}: {len(images)} images against {len(self.train)} {self.m.split} images "
                 f"in {time.perf_counter() - t0:.1f} s")
        return p

    def split_images(self, split: str, n: int = 0, rng_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A split's images on (-1, 1) with their cases: all of them, or n drawn at random."""
        reader = ShardReader(self.dataset, split)
        idx = np.arange(len(reader)) if not n or n >= len(reader) else \
            np.sort(np.random.default_rng(self.m.seed + rng_offset).choice(len(reader), n, replace=False))
        return to_unit(reader.read(idx)), _cases(reader, idx)

    @functools.cached_property
    def gen(self) -> quality.Profile:
        return self.scored(self.generated, "generated images", 1)

    @functools.cached_property
    def held(self) -> quality.Profile | None:
        """The whole held-out split, resampled by case: the baseline a generator is read against."""
        if not self.held_split:
            return None
        images, cases = self.held_images
        return self.scored(images, f"held-out {self.held_split} split", 2, cases)

    @functools.cached_property
    def held_images(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out split's images and cases, read once: the baseline and the blurred anchor share them."""
        return self.split_images(self.held_split)

    @functools.cached_property
    def real(self) -> quality.Profile:
        """Real training slices: the diversity every other set is divided by."""
        images, cases = self.split_images(self.m.split, self.k, 3)
        return quality.pairs_only(images, self.k, self.m.seed + 3, cases)

    @functools.cached_property
    def test(self) -> quality.Profile | None:
        """The final holdout: shown in the report beside the held-out baseline, never tuned on."""
        if self.held is None or not self.test_split:
            return None
        images, cases = self.split_images(self.test_split)
        return self.scored(images, f"final holdout ({self.test_split} split)", 4, cases, k=0)

    @functools.cached_property
    def unseen(self) -> quality.Profile | None:
        """Every held-out image (both splits): the more brains, the steadier the copying threshold."""
        parts = [(p, s) for p, s in ((self.held, self.held_split), (self.test, self.test_split)) if p is not None]
        if not parts:
            return None
        return quality.Profile(nn=np.concatenate([p.nn for p, _ in parts]),
                               nearest=np.concatenate([p.nearest for p, _ in parts]),
                               brain=np.concatenate([p.brain for p, _ in parts]), pairs=None,
                               cases=np.concatenate([[f"{s}/{c}" for c in p.cases] for p, s in parts]))

    @functools.cached_property
    def threshold(self) -> float | None:
        return float(self.unseen.nn.max()) if self.unseen is not None else None

    @functools.cached_property
    def reference_share(self) -> dict | None:
        """The share of unseen brains above such a threshold, each held-out case against the others' maximum."""
        return quality.left_out_share(self.unseen) if self.unseen is not None else None


# ----------------------------------------------------------------------------- computing them

def nearest_neighbours(ctx: Context) -> dict:
    p = ctx.gen
    return {**quality.nn_summary(p, ctx.m.seed), "source": ctx.source, "split": ctx.m.split, "exact": True,
            "candidates_per_image": len(ctx.train), "nearest_index": p.nearest.tolist(), "values": p.nn.tolist()}


def copying(ctx: Context) -> dict:
    ref = ctx.reference_share
    if ref is None:
        return {"flagged": None, "note": "fewer than two held-out cases in the dataset: nothing to compare with"}
    return quality.copying(ctx.gen, ctx.threshold, ref)


def diversity(ctx: Context) -> dict:
    out = quality.diversity(ctx.gen, ctx.real, ctx.m.seed)
    if out is None:
        return {"note": "fewer than 2 images: no diversity"}
    return {**out, "scales": metrics.ms_ssim_scales(min(ctx.generated.shape[1:])), "real_split": ctx.m.split}


def _anchor(ctx: Context, p: quality.Profile, share: dict | None) -> dict:
    return {NN: quality.nn_summary(p, ctx.m.seed), COPYING: share,
            DIVERSITY: quality.diversity(p, ctx.real, ctx.m.seed)}


def ladder(ctx: Context) -> dict:
    """Held-out slices, the same blurred, and a linear model: where simple sources land on every check."""
    if ctx.held is None:
        return {"note": "no held-out split in the dataset: no anchors"}
    t0 = time.perf_counter()
    n = min(ctx.m.nn_samples, len(ctx.held))
    pick = np.sort(np.random.default_rng(ctx.m.seed + 6).choice(len(ctx.held), n, replace=False))
    held_images, cases = ctx.held_images
    linear = anchors.fit_linear(ctx.split_images(ctx.m.split, anchors.FIT_IMAGES, 7)[0])
    log.info(f"[postprocess] linear anchor: {len(linear.scales)} components fitted in {time.perf_counter() - t0:.1f} s")
    blurred = ctx.scored(anchors.blurred(held_images[pick]), "blurred held-out anchor", 8, cases[pick])
    lin = ctx.scored(linear.sample(ctx.m.nn_samples, ctx.m.seed + 9), "linear anchor", 9)
    out = {"held_out": {**_anchor(ctx, ctx.held, ctx.reference_share), "split": ctx.held_split},
           "blurred": {**_anchor(ctx, blurred, quality.exceeding(blurred, ctx.threshold)),
                       "sigma_px": anchors.BLUR_SIGMA},
           "linear": {**_anchor(ctx, lin, quality.exceeding(lin, ctx.threshold)),
                      "components": len(linear.scales), "fitted_on": linear.fitted_on}}
    if ctx.test is not None:
        out["final_holdout"] = {NN: quality.nn_summary(ctx.test, ctx.m.seed), "split": ctx.test_split, COPYING: None}
    return out


def raw_generator(ctx: Context) -> dict | None:
    """With a generator average, the nearest-neighbour and diversity checks for the raw generator saved beside it."""
    if ctx.raw is None:
        return None
    raw = ctx.scored(generated_samples.generate(ctx.raw, len(ctx.generated), ctx.m.seed + 1), "raw generator", 1)
    return {NN: quality.nn_summary(raw, ctx.m.seed), DIVERSITY: quality.diversity(raw, ctx.real, ctx.m.seed),
            "note": "the generator's own weights; everything else in this file uses the generator average"}


def feature_distances(ctx: Context) -> dict:
    """FID, KID and precision/recall against an equal-sized training subset, beside held-out images' own."""
    m = ctx.m
    if not m.fid_weights:
        return {"fid": None, "kid": None, "note": "not computed: no feature-extractor weights were given "
                "(set metrics.fid_weights to a local .keras file). Nothing is ever downloaded."}
    if ctx.held is None:
        return {"fid": None, "kid": None, "note": "not computed: no held-out split to give the baseline"}
    n = min(len(ctx.held), len(ctx.train), m.fid_real_images or len(ctx.train))
    gen = generated_samples.generate(ctx.generator, n, m.seed + 4) if ctx.generator else ctx.generated[:n]
    n = min(n, len(gen))
    t0 = time.perf_counter()
    net = features.load_extractor(m.fid_weights)
    f_train = features.features(net, ctx.split_images(m.split, n, 10)[0], m.fid_preprocessing)

    def against_train(images) -> dict:
        f = features.features(net, images[:n], m.fid_preprocessing)
        return {**features.frechet_distance(f, f_train), **features.kid(f, f_train, m.kid_subsets, m.kid_subset_size,
                                                                       m.seed),
                **features.precision_recall(f_train, f, m.pr_neighbours)}

    out = {**against_train(gen), "held_out": against_train(ctx.split_images(ctx.held_split, n, 11)[0]),
           "extractor": m.fid_weights, "input_size": list(features.input_size(net)), "features": int(f_train.shape[1]),
           "preprocessing": m.fid_preprocessing, "n": n, "split": m.split, "held_out_split": ctx.held_split}
    out["kid"] = out["kid_mean"]
    log.info(f"[postprocess] FID {out['fid']:.2f} (held-out {out['held_out']['fid']:.2f}), KID {out['kid_mean']:.4f}, "
             f"precision {out['precision']:.2f}, recall {out['recall']:.2f}; {n} images a set, "
             f"{time.perf_counter() - t0:.1f} s")
    return out


# ----------------------------------------------------------------------------- reading them

def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def with_ci(value, ci, digits: int = 3) -> str:
    return fmt(value, digits) + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _kid(f: dict) -> str:
    return fmt(f.get("kid_mean"), 4) + (f" +- {f['kid_std']:.4f}" if f.get("kid_std") is not None else
                                       " (no spread: too few images)")


def nn_rows(m: dict) -> list[list[str]]:
    nn = m[NN]
    held = m.get(ANCHORS, {}).get("held_out", {}).get(NN, {})
    return [[f"nearest-neighbour SSIM to the {nn.get('split', 'train')} split, median [95%] (n={nn.get('n', 0)}, "
             "exact)", with_ci(nn.get("median"), nn.get("ci95")), "-"],
            ["the same over the brain only", with_ci(nn.get("brain_median"), nn.get("brain_ci95")), "-"],
            [f"held-out images' median (n={held.get('n', 0)}, by case)", with_ci(held.get("median"), held.get("ci95")),
             "-"]]


def copying_rows(m: dict) -> list[list[str]]:
    c = m[COPYING]
    if c.get("flagged") is None:
        return []
    return [["share of samples above the held-out maximum [95%]", with_ci(c["share"], c["ci95"]), "-"],
            ["the same for unseen brains", with_ci(c["held_out_share"], c["held_out_ci95"]), "-"]]


def diversity_rows(m: dict) -> list[list[str]]:
    d = m[DIVERSITY]
    return [[f"MS-SSIM diversity, generated / real ({d.get('n', 0)} images each)",
             f"{fmt(d.get('generated'))} / {fmt(d.get('real'))}", "-"],
            ["diversity ratio [95%]", with_ci(d.get("ratio"), d.get("ci95"), 2), "-"]] if "ratio" in d else []


def feature_rows(m: dict) -> list[list[str]]:
    f = m[FEATURES]
    if f.get("fid") is None:
        return []
    h = f["held_out"]
    return [[f"FID against the {f['split']} split (held-out images' own), n={f['n']}",
             f"{fmt(f['fid'], 2)} ({fmt(h['fid'], 2)})", "-"],
            ["KID (held-out)", f"{_kid(f)} ({_kid(h)})", "-"],
            ["precision / recall, k-NN (held-out)",
             f"{fmt(f['precision'], 2)} / {fmt(f['recall'], 2)} ({fmt(h['precision'], 2)} / {fmt(h['recall'], 2)})",
             "-"]]


ANCHOR_NAMES = {"held_out": "held-out slices", "final_holdout": "final holdout slices",
                "blurred": "held-out slices, blurred 1 px", "linear": "linear model (PCA-Gaussian)"}


def ladder_table(m: dict) -> tuple[list, list] | None:
    rungs = m.get(ANCHORS, {})
    if "held_out" not in rungs:
        return None
    sets = [("generated", {NN: m[NN], COPYING: m[COPYING], DIVERSITY: m[DIVERSITY]})]
    sets += [(ANCHOR_NAMES[k], v) for k, v in rungs.items() if k in ANCHOR_NAMES]
    rows = []
    for name, s in sets:
        nn, c, d = s[NN], s.get(COPYING) or {}, s.get(DIVERSITY) or {}
        rows.append([name, str(nn.get("n")), with_ci(nn.get("median"), nn.get("ci95")),
                     with_ci(nn.get("brain_median"), nn.get("brain_ci95")), with_ci(c.get("share"), c.get("ci95"), 3),
                     with_ci(d.get("ratio"), d.get("ci95"), 2) + (f" ({d['verdict']})" if d.get("verdict") else "")])
    return (["set", "n", "NN-SSIM median [95%]", "brain only", "above held-out max", "diversity ratio"], rows)


def nn_reading(m: dict) -> str | None:
    nn, held = m[NN], m.get(ANCHORS, {}).get("held_out", {}).get(NN)
    if not held:
        return None
    side = intervals.relation(nn["ci95"], held["ci95"])
    head = (f"Nearest-neighbour SSIM: median {with_ci(nn['median'], nn['ci95'])} against "
            f"{with_ci(held['median'], held['ci95'])} for unseen real slices. ")
    return head + {
        1: "The samples sit closer to training images than unseen brains do: read the copying check.",
        0: "The samples are as close to the training images as unseen brains are.",
        -1: "A typical sample is further from its nearest training image than an unseen brain is: not yet as "
            "brain-like as real slices."}[side]


def copying_reading(m: dict) -> str | None:
    c = m[COPYING]
    if c.get("flagged") is None:
        return None
    head = (f"Copying: {c['count']} of {c['n']} samples ({with_ci(c['share'], c['ci95'])}) score above the highest "
            f"held-out value ({c['threshold']:.3f}); unseen brains reach "
            f"{with_ci(c['held_out_share'], c['held_out_ci95'])} ({c['held_out_from']}). ")
    return head + {
        quality.SIGN_OF_COPYING: f"More than unseen brains, beyond chance (p = {c['p_value']:.3g}): a sign of copying.",
        quality.NO_SIGN: "No sign of copying.",
        quality.INCONCLUSIVE: "More than unseen brains, but not beyond chance at this n: inconclusive (raise "
                              "metrics.nn_samples)."}[c["verdict"]]


def diversity_reading(m: dict) -> str | None:
    d = m[DIVERSITY]
    if "ratio" not in d:
        return None
    than = "as varied as" if d["verdict"] == quality.AS_VARIED else f"{d['verdict']} than"
    return (f"MS-SSIM diversity over {d['scales']} scales, {d['n']} images: generated {d['generated']:.3f}, real "
            f"{d['real_split']} slices {d['real']:.3f}, ratio {with_ci(d['ratio'], d['ci95'], 2)}: the samples are "
            f"{than} real slices.")


def ladder_reading(m: dict) -> str | None:
    """Where the generator sits among the anchors, by median NN-SSIM with both intervals."""
    rungs = {k: r[NN] for k, r in m.get(ANCHORS, {}).items() if k in ANCHOR_NAMES and k != "final_holdout"}
    if not rungs:
        return None
    gen = m[NN]
    words = {1: "above", 0: "level with", -1: "below"}
    placed = [f"{words[intervals.relation(gen['ci95'], r['ci95'])]} {ANCHOR_NAMES[k]} ({r['median']:.3f})"
              for k, r in sorted(rungs.items(), key=lambda kv: -kv[1]["median"])]
    return f"On the ladder of anchors, the generator ({gen['median']:.3f}) sits " + ", ".join(placed) + "."


# ----------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Check:
    name: str                                               # its key in metrics.json
    compute: typing.Callable[[Context], dict | None]
    rows: typing.Callable[[dict], list[list[str]]] = lambda m: []   # its rows of the report's metrics table
    reading: typing.Callable[[dict], str | None] = lambda m: None   # what it says, read against its baseline
    table: typing.Callable[[dict], tuple | None] = lambda m: None   # a table of its own: (header, rows)


# In the order they run and are reported.
CHECKS = (
    Check("nn_ssim", nearest_neighbours, nn_rows, nn_reading),
    Check("copying", copying, copying_rows, copying_reading),
    Check("diversity", diversity, diversity_rows, diversity_reading),
    Check("anchors", ladder, reading=ladder_reading, table=ladder_table),
    Check("raw_generator", raw_generator),
    Check("feature_distances", feature_distances, feature_rows),
)
NN, COPYING, DIVERSITY, ANCHORS, RAW, FEATURES = (c.name for c in CHECKS)


def run_all(ctx: Context) -> dict:
    """Every check's result, by name (metrics.json holds them beside the seed metric)."""
    for check in CHECKS:
        ctx.results[check.name] = check.compute(ctx)
    return ctx.results


def table_rows(m: dict) -> list[list[str]]:
    return [row for check in CHECKS for row in check.rows(m)]


def tables(m: dict) -> list[tuple]:
    return [t for check in CHECKS if (t := check.table(m))]


def readings(m: dict) -> list[str]:
    """The checks read against their baselines, in words: what a reviewer asks first."""
    return [r for check in CHECKS if (r := check.reading(m))]


def add_section(doc, m: dict, first_rows: list[list[str]], header: list[str] | None = None) -> None:
    """The checks in a document: the metrics table (after `first_rows`), the readings, their own tables."""
    doc.table(header or ["metric", "value", "-"], [*first_rows, *table_rows(m)])
    said = readings(m)
    if said:
        doc.bullets(said)
    for head, rows in tables(m):
        doc.table(head, rows)
    if m[FEATURES].get("note"):
        doc.paragraph(f"FID/KID: {m[FEATURES]['note']}")
