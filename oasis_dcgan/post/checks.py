"""The checks beside the seed metric. Each is one function registered with @register_check under
its name, with its rows in the report's metrics table and its reading in words beside it, and
its own random stream named after it (Context.seed). metrics.json holds each check's result under
its name; the report, the tables and the readings all come from CHECKS, in the order they are
registered here.

The seed metric alone says one generated slice resembles one real slice. These say more, each
against what real unseen brains score on the same data: closeness to the training split (the
median nearest-neighbour SSIM, whole slice and brain only), copying (exact copies counted, near
copies tested against held-out subjects: copying.py), variety (MS-SSIM diversity against the
held-out set's own), the distribution metric (can a classifier tell the samples from unseen
brains: distribution.py), a ladder of simple anchors the generator is placed on, and FID/KID with
precision/recall when a local feature extractor is given. Every figure carries a 95% interval, and
every verdict reads it against a margin fixed in advance (verdicts.py), or says "undetermined".
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
from ..imaging import to_uint8
from . import anchors, copying as copies, distribution, features, intervals, metrics, quality
from . import samples as generated_samples
from .baseline import Baseline, case_ids, sample_ids
from .verdicts import (AS_VARIED, CLOSER, COPIES, FURTHER, LESS_VARIED, LEVEL, MORE_VARIED, NEAR_COPIES, NO_SIGN,
                       UNDETERMINED)

log = logging.getLogger(__name__)

__all__ = ["Baseline", "Context", "case_ids", "sample_ids"]

SAMPLES_STREAM = "samples"   # the latents of the judged samples; the raw generator gets the same ones


def samples_seed(m: MetricsConfig) -> int:
    return intervals.stream(m.seed, SAMPLES_STREAM)


@dataclass
class Context:
    """What the checks share: the images they judge, and the held-out side they are read against."""
    generated: np.ndarray           # [N, H, W] on (-1, 1)
    source: str                     # where they came from, in words
    dataset: str
    m: MetricsConfig
    generator: Path | None = None   # the generator they came from, when there is one: FID draws more from it
    raw: Path | None = None         # the raw generator beside an average
    cases: np.ndarray | None = None  # the images' subjects when they are real slices: resampled by case, and a
                                     # held-out subject among them leaves every held-out pool
    base: Baseline | None = None    # the held-out side, when one is already scored for these settings
    results: dict = field(default_factory=dict)

    def __post_init__(self):
        self.cases = None if self.cases is None else np.asarray(self.cases).astype(str)
        self.groups = self.cases if self.cases is not None else sample_ids(len(self.generated))
        if self.base is None or not self.base.fits(self.dataset, self.m, self.cases):
            self.base = Baseline(self.dataset, self.m, self.cases)
        self.k = min(self.m.diversity_samples, len(self.generated))   # images per diversity set

    def seed(self, stream: str) -> int:
        """The seed of a check's random stream, named after the check (and what it draws, after a slash)."""
        return intervals.stream(self.m.seed, stream)

    @functools.cached_property
    def gen(self) -> quality.Profile:
        return self.base.scored(self.generated, "judged images", "judged", self.cases, self.k)

    @functools.cached_property
    def real(self) -> quality.Profile:
        return self.base.real(self.k)

    @property
    def held(self) -> quality.Profile | None:
        return self.base.held

    @functools.cached_property
    def distribution_baseline(self) -> dict:
        return self.base.distribution_baseline(len(self.generated))


# ----------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Check:
    name: str                                               # its key in metrics.json
    compute: typing.Callable[[Context], dict | None]
    rows: typing.Callable[[dict], list[list[str]]] = lambda m: []   # its rows of the report's metrics table
    reading: typing.Callable[[dict], str | None] = lambda m: None   # what it says, read against its baseline
    table: typing.Callable[[dict], tuple | None] = lambda m: None   # a table of its own: (header, rows)


CHECKS: dict[str, Check] = {}   # by name, in the order they run and are reported


def register_check(name: str, **render):
    """Register the decorated function as the check `name`; `render` holds its rows, reading and table."""
    def add(compute):
        CHECKS[name] = Check(name, compute, **render)
        return compute
    return add


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def with_ci(value, ci, digits: int = 3) -> str:
    return fmt(value, digits) + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


# ----------------------------------------------------------------------------- closeness to the training split
NN = "nn_ssim"


def nn_rows(m: dict) -> list[list[str]]:
    nn = m[NN]
    held = m.get(ANCHORS, {}).get("held_out", {}).get(NN, {})
    rows = [[f"nearest-neighbour SSIM to the {nn.get('split', 'train')} split, median [95%] (n={nn.get('n', 0)}, "
             "exact)", with_ci(nn.get("median"), nn.get("ci95")), "-"],
            ["the same over the brain only", with_ci(nn.get("brain_median"), nn.get("brain_ci95")), "-"],
            [f"held-out images' median (n={held.get('n', 0)}, by case)", with_ci(held.get("median"), held.get("ci95")),
             "-"]]
    if nn.get("closeness"):
        c = nn["closeness"]
        rows.append([f"difference [95%] (margin +-{c['margin']:g})", with_ci(c["difference"], c["ci95"]), c["verdict"]])
    return rows


def nn_reading(m: dict) -> str | None:
    nn, held = m[NN], m.get(ANCHORS, {}).get("held_out", {}).get(NN)
    c = nn.get("closeness")
    if not held or not c:
        return None
    head = (f"Closeness to the training split: median NN-SSIM {with_ci(nn['median'], nn['ci95'])} against "
            f"{with_ci(held['median'], held['ci95'])} for unseen brains, a difference of "
            f"{with_ci(c['difference'], c['ci95'])} (margin +-{c['margin']:g}): ")
    return head + {
        CLOSER: "closer to the training images than unseen brains are. That is not better: read the copying check "
                "and the distribution metric.",
        LEVEL: "level with unseen brains.",
        FURTHER: "further from the training images than unseen brains are: not yet as brain-like as real slices.",
        UNDETERMINED: "undetermined: the interval straddles the margin (raise metrics.nn_samples)."}[c["verdict"]]


@register_check(NN, rows=nn_rows, reading=nn_reading)
def nearest_neighbours(ctx: Context) -> dict:
    p = ctx.gen
    out = {**quality.nn_summary(p, ctx.seed(NN)), "source": ctx.source, "split": ctx.m.split, "exact": True,
           "candidates_per_image": len(ctx.base.train), "nearest_index": p.nearest.tolist(), "values": p.nn.tolist()}
    if ctx.held is not None:
        out["closeness"] = quality.closeness(p, ctx.held, ctx.seed(NN))
    return out


# ----------------------------------------------------------------------------- copying
COPYING = "copying"


def copying_rows(m: dict) -> list[list[str]]:
    c = m[COPYING]
    dup, near = c["duplicates"], c["near_copies"]
    rows = [[f"exact copies ({dup['rule']})", f"{dup['count']} of {dup['n']}", "-"]]
    if near.get("share") is not None:
        rows.append([f"near copies: share above the held-out source gaps' {near['tail']:.0%} point",
                     f"{near['share']:.3f} (unseen brains {near['held_out']['share']:.3f}, at most "
                     f"{near['held_out']['upper']:.3f}; p = {near['p_value']:.3g})", "-"])
    rows.append(["copying verdict", c["verdict"], "-"])
    return rows


def copying_reading(m: dict) -> str | None:
    c = m[COPYING]
    dup, near = c["duplicates"], c["near_copies"]
    words = [f"Copying: {dup['count']} of {dup['n']} images are exact copies ({dup['rule']})"
             + (f"; {dup['held_out_count']} unseen brains meet the same rule" if dup.get("held_out_count") else "")
             + "."]
    if near.get("share") is not None:
        words.append(f"Near copies: {near['count']} of {near['n']} ({near['share']:.3f}) stand out from every training "
                     f"subject but one more than {1 - near['tail']:.0%} of unseen brains do (threshold "
                     f"{near['threshold']:.3f}); unseen brains reach {near['held_out']['share']:.3f}, at most "
                     f"{near['held_out']['upper']:.3f} over {near['held_out']['subjects']} subjects (p = "
                     f"{near['p_value']:.3g}).")
    else:
        words.append(f"Near copies: undetermined ({near['why']}).")
    verdict = {COPIES: "copies: the generator reproduces training slices.",
               NEAR_COPIES: "near copies: more samples stand out from all training subjects but their source than "
                            "unseen brains do.",
               NO_SIGN: "no sign of copying.",
               UNDETERMINED: "undetermined: " + near.get("why", "")}[c["verdict"]]
    return " ".join(words) + " Verdict: " + verdict


@register_check(COPYING, rows=copying_rows, reading=copying_reading)
def copying(ctx: Context) -> dict:
    """Exact copies counted, near copies tested; one copy of either kind is enough."""
    held = [p.nn for p in (ctx.held, ctx.base.test) if p is not None]
    held_nn = np.concatenate(held) if held else None
    dup = copies.duplicates(ctx.gen.nn, to_uint8(ctx.generated), ctx.base.train_hashes, held_nn)
    near = ctx.base.near_copies(ctx.generated, "judged images")
    return {"verdict": copies.verdict(dup, near), "duplicates": dup, "near_copies": near}


# ----------------------------------------------------------------------------- diversity
DIVERSITY = "diversity"


def diversity_rows(m: dict) -> list[list[str]]:
    d = m[DIVERSITY]
    if "ratio" not in d:
        return []
    rows = [[f"MS-SSIM diversity, generated / real ({d.get('n', 0)} images each)",
             f"{fmt(d.get('generated'))} / {fmt(d.get('real'))}", "-"],
            ["diversity ratio to training slices [95%]", with_ci(d.get("ratio"), d.get("ci95"), 2), "-"]]
    if "relative" in d:
        rows.append([f"the same over held-out slices' [95%] (margin +-{d['margin']:g})",
                     with_ci(d["relative"], d["relative_ci95"], 2), d["verdict"]])
    return rows


def diversity_reading(m: dict) -> str | None:
    d = m[DIVERSITY]
    if "ratio" not in d:
        return None
    head = (f"MS-SSIM diversity over {d['scales']} scales, {d['n']} images: generated {d['generated']:.3f}, real "
            f"{d['real_split']} slices {d['real']:.3f}")
    if "relative" not in d:
        return head + f" (ratio {with_ci(d['ratio'], d['ci95'], 2)}); {d['verdict']}: {d.get('why', '')}."
    return (head + f", held-out slices {d['held_out']:.3f}; over held-out slices' "
            f"{with_ci(d['relative'], d['relative_ci95'], 2)} (margin +-{d['margin']:g}): " + {
                AS_VARIED: "as varied as unseen brains.", LESS_VARIED: "less varied than unseen brains.",
                MORE_VARIED: "more varied than unseen brains (noise or inconsistent anatomy).",
                UNDETERMINED: "undetermined: the interval straddles the margin."}[d["verdict"]])


@register_check(DIVERSITY, rows=diversity_rows, reading=diversity_reading)
def diversity(ctx: Context) -> dict:
    out = quality.diversity(ctx.gen, ctx.real, ctx.seed(DIVERSITY), ctx.held)
    if out is None:
        return {"note": "fewer than 2 images: no diversity"}
    return {**out, "scales": metrics.ms_ssim_scales(min(ctx.generated.shape[1:])), "real_split": ctx.m.split,
            "held_out_split": ctx.base.held_split}


# ----------------------------------------------------------------------------- the distribution metric
DISTRIBUTION = "distribution"


def distribution_rows(m: dict) -> list[list[str]]:
    d = m[DISTRIBUTION]
    if d.get("accuracy") is None:
        return []
    h = d["held_out"]
    return [["distribution: a classifier's balanced accuracy telling the images from unseen brains [95%]",
             with_ci(d["accuracy"], d["ci95"]), d["verdict"]],
            [f"the same for held-out slices, n={h.get('n', 0)}", with_ci(h.get("accuracy"), h.get("ci95")),
             h.get("verdict", "-")]]


def distribution_reading(m: dict) -> str | None:
    d = m[DISTRIBUTION]
    if d.get("accuracy") is None:
        return f"Distribution metric: undetermined ({d.get('why', '')})."
    h = d["held_out"]
    base = (f"held-out slices score {with_ci(h['accuracy'], h['ci95'])}" if h.get("accuracy") is not None
            else f"no held-out baseline ({h.get('why', '')})")
    return (f"Distribution: a classifier tells the images from unseen brains with balanced accuracy "
            f"{with_ci(d['accuracy'], d['ci95'])} (0.5: chance; margin {d['margin']:g}); {base}. "
            f"Verdict: {d['verdict']}.")


@register_check(DISTRIBUTION, rows=distribution_rows, reading=distribution_reading)
def distribution_metric(ctx: Context) -> dict:
    """The classifier two-sample test of the judged images, beside held-out slices' own at equal n."""
    t0 = time.perf_counter()
    out = {**ctx.base.two_sample(ctx.generated, ctx.groups, DISTRIBUTION), "held_out": ctx.distribution_baseline,
           "margin": distribution.DISTRIBUTION_MARGIN}
    log.info(f"[postprocess] distribution metric in {time.perf_counter() - t0:.1f} s")
    return out


# ----------------------------------------------------------------------------- the ladder of anchors
ANCHORS = "anchors"
ANCHOR_NAMES = {"held_out": "held-out slices", "final_holdout": "final holdout slices",
                "blurred": "held-out slices, blurred 1 px", "linear": "linear model (PCA-Gaussian)"}


def _rung_row(name: str, s: dict) -> list[str]:
    nn, d, dist = s[NN], s.get(DIVERSITY) or {}, s.get(DISTRIBUTION) or {}
    near = (s.get(COPYING) or {}).get("near_copies") or {}
    return [name, str(nn.get("n")), with_ci(nn.get("median"), nn.get("ci95")),
            with_ci(nn.get("brain_median"), nn.get("brain_ci95")), fmt(near.get("share")),
            with_ci(d.get("relative"), d.get("relative_ci95"), 2) + (f" ({d['verdict']})" if d.get("verdict") else ""),
            with_ci(dist.get("accuracy"), dist.get("ci95"))]


def ladder_table(m: dict) -> tuple[list, list] | None:
    rungs = m.get(ANCHORS, {})
    if "held_out" not in rungs:
        return None
    sets = [("generated", {NN: m[NN], COPYING: m[COPYING], DIVERSITY: m[DIVERSITY], DISTRIBUTION: m[DISTRIBUTION]})]
    sets += [(ANCHOR_NAMES[k], v) for k, v in rungs.items() if k in ANCHOR_NAMES]
    return (["set", "n", "NN-SSIM median [95%]", "brain only", "share above the near-copy threshold",
             "diversity over held-out's", "distribution accuracy [95%]"], [_rung_row(name, s) for name, s in sets])


def ladder_reading(m: dict) -> str | None:
    """Where the generator sits among the anchors on the distribution metric, with both intervals."""
    rungs = {k: r[DISTRIBUTION] for k, r in m.get(ANCHORS, {}).items()
             if k in ANCHOR_NAMES and (r.get(DISTRIBUTION) or {}).get("accuracy") is not None}
    gen = m[DISTRIBUTION]
    if not rungs or gen.get("accuracy") is None:
        return None
    words = {1: "worse than", 0: "level with", -1: "better than"}
    placed = [f"{words[intervals.relation(gen['ci95'], r['ci95'])]} {ANCHOR_NAMES[k]} ({r['accuracy']:.2f})"
              for k, r in sorted(rungs.items(), key=lambda kv: kv[1]["accuracy"])]
    return (f"On the ladder of anchors, by the distribution metric (lower is closer to real brains), the images "
            f"({gen['accuracy']:.2f}) sit " + ", ".join(placed) + ".")


def _anchor(ctx: Context, p: quality.Profile, images: np.ndarray, what: str, distribution_result: dict) -> dict:
    return {NN: quality.nn_summary(p, ctx.seed(ANCHORS)), COPYING: {"near_copies": ctx.base.near_copies(images, what)},
            DIVERSITY: quality.diversity(p, ctx.real, ctx.seed(ANCHORS), ctx.held), DISTRIBUTION: distribution_result}


@register_check(ANCHORS, reading=ladder_reading, table=ladder_table)
def ladder(ctx: Context) -> dict:
    """Held-out slices, the same blurred, and a linear model: where simple sources land on every check."""
    if ctx.held is None:
        return {"note": "no held-out split in the dataset: no anchors"}
    t0 = time.perf_counter()
    n = min(ctx.m.nn_samples, len(ctx.held))
    pick = np.sort(np.random.default_rng(ctx.seed(ANCHORS + "/pick")).choice(len(ctx.held), n, replace=False))
    held_images, cases = ctx.base.held_images
    linear = anchors.fit_linear(ctx.base.split_images(ctx.m.split, anchors.FIT_IMAGES, ANCHORS + "/linear_fit")[0])
    log.info(f"[postprocess] linear anchor: {len(linear.scales)} components fitted in {time.perf_counter() - t0:.1f} s")
    blur_images = anchors.blurred(held_images[pick])
    blurred = ctx.base.scored(blur_images, "blurred held-out anchor", ANCHORS + "/blurred", cases[pick])
    lin_images = linear.sample(ctx.m.nn_samples, ctx.seed(ANCHORS + "/linear"))
    lin = ctx.base.scored(lin_images, "linear anchor", ANCHORS + "/linear")
    in_pick = ~np.isin(ctx.base.unseen[1], cases[pick])
    out = {"held_out": {NN: quality.nn_summary(ctx.held, ctx.seed(ANCHORS)), DISTRIBUTION: ctx.distribution_baseline,
                        COPYING: {"near_copies": copies.null_share(ctx.base.unseen_gaps, ctx.base.unseen[1]) or {}},
                        "split": ctx.base.held_split},
           "blurred": {**_anchor(ctx, blurred, blur_images, "blurred held-out slices",
                                 ctx.base.two_sample(blur_images, cases[pick], ANCHORS + "/blurred", in_pick)),
                       "sigma_px": anchors.BLUR_SIGMA},
           "linear": {**_anchor(ctx, lin, lin_images, "linear-anchor images",
                                ctx.base.two_sample(lin_images, sample_ids(len(lin_images)), ANCHORS + "/linear")),
                      "components": len(linear.scales), "fitted_on": linear.fitted_on}}
    if ctx.base.test is not None:
        out["final_holdout"] = {NN: quality.nn_summary(ctx.base.test, ctx.seed(ANCHORS)), "split": ctx.base.test_split}
    return out


# ----------------------------------------------------------------------------- the raw generator
RAW = "raw_generator"


@register_check(RAW)
def raw_generator(ctx: Context) -> dict | None:
    """With a generator average, the nearest-neighbour and diversity checks for the raw generator saved beside it."""
    if ctx.raw is None:
        return None
    images = generated_samples.generate(ctx.raw, len(ctx.generated), samples_seed(ctx.m))
    raw = ctx.base.scored(images, "raw generator", RAW)
    return {NN: quality.nn_summary(raw, ctx.seed(RAW)), DIVERSITY: quality.diversity(raw, ctx.real, ctx.seed(RAW),
                                                                                     ctx.held),
            "note": "the generator's own weights; everything else in this file uses the generator average"}


# ----------------------------------------------------------------------------- FID, KID, precision and recall
FEATURES = "feature_distances"


def _kid(f: dict) -> str:
    return fmt(f.get("kid_mean"), 4) + (f" +- {f['kid_std']:.4f}" if f.get("kid_std") is not None else
                                       " (no spread: too few images)")


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


@register_check(FEATURES, rows=feature_rows)
def feature_distances(ctx: Context) -> dict:
    """FID, KID and precision/recall against an equal-sized training subset, beside held-out images' own."""
    m = ctx.m
    if not m.fid_weights:
        return {"fid": None, "kid": None, "note": "not computed: no feature-extractor weights were given "
                "(set metrics.fid_weights to a local .keras file). Nothing is ever downloaded."}
    if ctx.held is None:
        return {"fid": None, "kid": None, "note": "not computed: no held-out split to give the baseline"}
    n = min(len(ctx.held), len(ctx.base.train), m.fid_real_images or len(ctx.base.train))
    gen = generated_samples.generate(ctx.generator, n, ctx.seed(FEATURES)) if ctx.generator else ctx.generated[:n]
    n = min(n, len(gen))
    t0 = time.perf_counter()
    net = features.load_extractor(m.fid_weights)
    f_train = features.features(net, ctx.base.split_images(m.split, n, FEATURES + "/train")[0], m.fid_preprocessing)

    def against_train(images) -> dict:
        f = features.features(net, images[:n], m.fid_preprocessing)
        return {**features.frechet_distance(f, f_train), **features.kid(f, f_train, m.kid_subsets, m.kid_subset_size,
                                                                       ctx.seed(FEATURES)),
                **features.precision_recall(f_train, f, m.pr_neighbours)}

    held = ctx.base.split_images(ctx.base.held_split, n, FEATURES + "/held_out")[0]
    out = {**against_train(gen), "held_out": against_train(held),
           "extractor": m.fid_weights, "input_size": list(features.input_size(net)), "features": int(f_train.shape[1]),
           "preprocessing": m.fid_preprocessing, "n": n, "split": m.split, "held_out_split": ctx.base.held_split}
    out["kid"] = out["kid_mean"]
    log.info(f"[postprocess] FID {out['fid']:.2f} (held-out {out['held_out']['fid']:.2f}), KID {out['kid_mean']:.4f}, "
             f"precision {out['precision']:.2f}, recall {out['recall']:.2f}; {n} images a set, "
             f"{time.perf_counter() - t0:.1f} s")
    return out


# ----------------------------------------------------------------------------- all of them

def run_all(ctx: Context) -> dict:
    """Every check's result, by name (metrics.json holds them beside the seed metric)."""
    for check in CHECKS.values():
        ctx.results[check.name] = check.compute(ctx)
    return ctx.results


def table_rows(m: dict) -> list[list[str]]:
    return [row for check in CHECKS.values() for row in check.rows(m)]


def tables(m: dict) -> list[tuple]:
    return [t for check in CHECKS.values() if (t := check.table(m))]


def readings(m: dict) -> list[str]:
    """The checks read against their baselines, in words: what a reviewer asks first."""
    return [r for check in CHECKS.values() if (r := check.reading(m))]


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
