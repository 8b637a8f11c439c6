"""Copies found, unseen brains left alone: the injection suite's power table and the null's false-flag rate.

The data is the demo's own: its sample brains (24 training, 4 validate, 4 test subjects) at 64x64,
and fresh brains of another `sample-data` seed that no split holds. Each set holds 128 images:
either test-split slices of the demo (judged as real slices with their subjects, who then leave
the held-out pool) or fresh-brain slices (judged as a generator's samples would be), with a share
of them replaced by training slices: verbatim, blurred (sigma 1 px), shifted (2 px), flipped
left-right or noised (sigma 0.1 on (-1, 1)). Each configuration is drawn DRAWS times; the null,
fresh-brain sets with no copy at all, NULL_DRAWS times. A set is flagged when the report's
copying verdict is "copies" or "near copies".

Beside each rate, in the same run on the same sets: the rule this project used before (a sample
is a copy above the highest held-out nearest-neighbour SSIM, tested with held-out slices as
independent draws), so the table shows what the by-subject test changed.
"""
from __future__ import annotations

import os
import sys
import time
import zlib

import numpy as np

from bench.common import WORK, save, table
from bench.probe_generator import dataset as demo_dataset
from oasis_dcgan import config

N = 128
DRAWS = int(os.environ.get("OASIS_COPYING_DRAWS", "5"))
NULL_DRAWS = int(os.environ.get("OASIS_COPYING_NULL_DRAWS", "48"))
SHARES = (0.05, 0.10, 0.25, 0.50, 1.00)
KINDS = ("verbatim", "blurred", "shifted", "flipped", "noised")
BASES = {"fresh": "fresh brains (another sample-data seed)", "test": "the demo's test-split slices, by subject"}

RESULT = "copying"   # bench/results/copying.json


def fresh_dataset():
    """Brains of another sample-data seed, packed at 64 (made once, then reused)."""
    from oasis_dcgan.config import DataConfig
    from oasis_dcgan.prep import pack, sample_data

    src, out = WORK / "copying" / "fresh-src", WORK / "copying" / "fresh-64"
    if not (out / "manifest.json").is_file():
        sample_data.write_png_release(src, cases=(40, 1, 1), rng_seed=7)
        pack.preprocess(src, out, DataConfig(resolution=64, shard_size=256))
    return out


def transform(kind: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from oasis_dcgan.post import anchors

    if kind == "blurred":
        return anchors.blurred(x)
    if kind == "shifted":
        return np.pad(x, ((0, 0), (2, 0), (2, 0)), mode="edge")[:, :-2, :-2]
    if kind == "flipped":
        return x[:, :, ::-1].copy()
    if kind == "noised":
        return np.clip(x + rng.normal(0, 0.1, x.shape), -1, 1).astype(np.float32)
    return x


def previous_rule(gen_nn: np.ndarray, held_nn: np.ndarray, held_cases: np.ndarray) -> bool:
    """The rule before: the share above the held-out maximum against unseen brains' (each case against
    the others' maximum), one-sided Fisher exact test on slices as independent draws."""
    from scipy import stats

    k = int((gen_nn > held_nn.max()).sum())
    ref = sum(int((held_nn[held_cases == c] > held_nn[held_cases != c].max()).sum()) for c in np.unique(held_cases))
    table_ = [[k, len(gen_nn) - k], [ref, len(held_nn) - ref]]
    return bool(stats.fisher_exact(table_, alternative="greater").pvalue < 0.05)


class Judge:
    """The report's checks on one set, against a held-out side scored once per base."""

    def __init__(self, data, m, exclude=None):
        from oasis_dcgan.post import checks

        self.base = checks.Baseline(str(data), m, exclude)
        self.data, self.m = str(data), m
        held = [p for p in (self.base.held, self.base.test) if p is not None]
        self.held_nn = np.concatenate([p.nn for p in held])
        self.held_cases = np.concatenate([p.cases for p in held])

    def __call__(self, images: np.ndarray, cases=None) -> dict:
        from oasis_dcgan.post import checks, quality

        ctx = checks.Context(images, "bench", self.data, self.m, cases=cases, base=self.base)
        ctx.gen = self.base.scored(images, "set", "judged", cases, k=0)   # no diversity pairs: not read here
        copy, dist = checks.copying(ctx), checks.distribution_metric(ctx)
        return {"flagged": copy["verdict"] in ("copies", "near copies"), "verdict": copy["verdict"],
                "duplicates": copy["duplicates"]["count"], "near_share": copy["near_copies"].get("share"),
                "previous": previous_rule(ctx.gen.nn, self.held_nn, self.held_cases),
                "closeness": quality.closeness(ctx.gen, self.base.held, 0)["verdict"],
                "distribution": dist["accuracy"], "distribution_verdict": dist["verdict"]}


def base_set(name: str, fresh, demo, rng: np.random.Generator):
    """N base images and their subjects (None: judged as samples)."""
    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.post.baseline import case_ids
    from oasis_dcgan.prep.reader import ShardReader

    reader = ShardReader(fresh if name == "fresh" else demo, "train" if name == "fresh" else "test")
    idx = np.sort(rng.choice(len(reader), min(N, len(reader)), replace=False))
    return to_unit(reader.read(idx)), (None if name == "fresh" else case_ids("test", reader, idx))


def injected(images: np.ndarray, train: np.ndarray, kind: str, share: float, rng: np.random.Generator):
    out = images.copy()
    k = int(round(share * len(images)))
    where = rng.choice(len(images), k, replace=False)
    out[where] = transform(kind, train[rng.choice(len(train), k, replace=False)], rng)
    return out


def configurations():
    for kind in KINDS:
        for share in (SHARES[:2] if kind == "verbatim" else SHARES):
            yield kind, share


def rate(flags: list[bool]) -> dict:
    from oasis_dcgan.post import intervals

    k = int(sum(flags))
    return {"flagged": k, "draws": len(flags), "rate": k / len(flags), "ci95": intervals.share_interval(k, len(flags))}


def run_base(name: str, judge, fresh, demo, train: np.ndarray) -> list[dict]:
    rows = []
    for kind, share in configurations():
        t0 = time.time()
        rng = np.random.default_rng(zlib.crc32(f"{name} {kind} {share}".encode()))
        draws = []
        for _ in range(DRAWS):
            images, cases = base_set(name, fresh, demo, rng)
            draws.append(judge(injected(images, train, kind, share, rng), cases))
        rows.append({"base": name, "kind": kind, "share": share, **rate([d["flagged"] for d in draws]),
                     "previous": rate([d["previous"] for d in draws]),
                     "verdicts": sorted({d["verdict"] for d in draws}),
                     "closeness": sorted({d["closeness"] for d in draws}),
                     "distribution": float(np.mean([d["distribution"] for d in draws])),
                     "distribution_verdicts": sorted({d["distribution_verdict"] for d in draws})})
        print(f"  {name} {kind} {share:.0%}: {rows[-1]['rate']:.2f} ({time.time() - t0:.0f} s)", file=sys.stderr,
              flush=True)
    return rows


def run_null(judge, fresh, demo) -> dict:
    rng = np.random.default_rng(2026)
    draws = [judge(*base_set("fresh", fresh, demo, rng)) for _ in range(NULL_DRAWS)]
    return {**rate([d["flagged"] for d in draws]), "previous": rate([d["previous"] for d in draws]),
            "distribution": [d["distribution"] for d in draws],
            "distribution_flagged": rate([d["distribution_verdict"] == "distinguishable from unseen brains"
                                          for d in draws]),
            "closeness": {v: sum(d["closeness"] == v for d in draws) for v in {d["closeness"] for d in draws}}}


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.post.baseline import case_ids
    from oasis_dcgan.prep.reader import ShardReader

    t0 = time.time()
    demo, fresh = demo_dataset(WORK / "probe"), fresh_dataset()
    m = config.load(None, [f"metrics.nn_samples={N}", f"metrics.diversity_samples={N}"]).metrics
    reader = ShardReader(demo, "train")
    train = to_unit(reader.read(np.arange(len(reader))))
    judges = {"fresh": Judge(demo, m)}
    test = ShardReader(demo, "test")
    judges["test"] = Judge(demo, m, case_ids("test", test, np.arange(len(test))))
    null = run_null(judges["fresh"], fresh, demo)
    rows = [r for name in BASES for r in run_base(name, judges[name], fresh, demo, train)]
    result = save(RESULT, {"n": N, "draws": DRAWS, "null_draws": NULL_DRAWS, "null": null, "power": rows,
                           "minutes": (time.time() - t0) / 60})
    show(result)
    return result


def _rate(r: dict) -> str:
    return f"{r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"


def smallest_share(rows: list[dict], base: str, kind: str) -> str:
    """The smallest share flagged in every draw, as the table measured it."""
    shares = [r["share"] for r in rows if r["base"] == base and r["kind"] == kind and r["rate"] == 1.0]
    return f"{min(shares):.0%}" if shares else "none"


def show(result: dict) -> None:
    null = result["null"]
    print(f"Null: {result['null_draws']} sets of {result['n']} fresh-brain slices, no copy among them.\n")
    print(table([("by-subject test (this report)", _rate(null)), ("the rule before (held-out maximum, slices as "
                                                                   "independent)", _rate(null["previous"])),
                 ("distribution metric: distinguishable", _rate(null["distribution_flagged"]))],
                ("false-flag rate on unseen brains", "rate [95%]")))
    print(f"\nPower: the share of {result['draws']} draws flagged, each set {result['n']} images.\n")
    rows = [(BASES[r["base"]], r["kind"], f"{r['share']:.0%}", _rate(r), _rate(r["previous"]),
             ", ".join(r["verdicts"]), f"{r['distribution']:.2f}") for r in result["power"]]
    print(table(rows, ("base set", "copies", "share", "flagged [95%]", "rule before", "verdicts",
                       "distribution accuracy")))
    smallest = "; ".join(f"{kind} {smallest_share(result['power'], base, kind)}" for base in BASES
                         for kind in KINDS if base == "fresh")
    print(f"\nSmallest share flagged in every draw (fresh brains): {smallest}. The seed has no copying check: its "
          f"metric scores a verbatim copy highest of all, so the column beside is the rule this project used before. "
          f"Measured in {result['minutes']:.0f} min.")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
