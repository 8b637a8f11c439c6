"""A sweep's leaderboard: one row per run, whatever its state, and the runs that differ only by
seed grouped with their spread.

A row holds the run's values, state (a failed run with its reason), epochs and kimg, every
registered check's result and reading from the run's report/metrics.json, and its cost. The
checks come from post/checks.py's registry: a check added there appears here with no change.
"""
from __future__ import annotations

import logging
import statistics
import time

from .. import fsutil, rundir
from ..rundir import SweepDir
from . import checks, figures, report, speed
from .document import Code, Document

log = logging.getLogger(__name__)

SEED_KEY = "train.seed"


def report_runs(sweep: SweepDir, batches: int | None = None) -> dict[str, str]:
    """Postprocess every finished run whose report is missing or older than its finish. Returns the
    runs whose postprocess failed, with why: the leaderboard is written all the same."""
    failed = {}
    for entry in fsutil.read_json(sweep.record)["runs"]:
        run = sweep.run(entry["run_dir"])
        metrics = run.report_file(rundir.REPORT_METRICS)
        if not run.finished() or (metrics.is_file() and fsutil.read_json(metrics).get("run_complete")):
            continue
        try:
            report.postprocess(run, batches=batches)
        except Exception as e:  # noqa: BLE001 -- one run's report must not cost the others theirs
            failed[entry["run_dir"]] = f"postprocess: {type(e).__name__}: {e}"[:400]
            log.warning(f"{run}: {failed[entry['run_dir']]}")
    return failed


def write(sweep: SweepDir, report_errors: dict[str, str] | None = None) -> dict:
    """leaderboard.json, its page (Markdown and standalone HTML) and the runs' curves, in sweep-report/."""
    board = build(sweep)
    for r in board["runs"]:
        r["report_error"] = (report_errors or {}).get(r["name"], "")
    sweep.report.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(sweep.report / rundir.SWEEP_LEADERBOARD, board)
    curves = {r["name"]: c for r in board["runs"] if (c := _curves(sweep.run(r["name"])))}
    if curves:
        figures.plot_sweep_curves(curves, sweep.report / rundir.FIGURE_SWEEP_CURVES)
    doc = page(board, bool(curves))
    fsutil.write_text(sweep.report / rundir.SWEEP_LEADERBOARD_MD, doc.markdown())
    fsutil.write_text(sweep.report / rundir.SWEEP_LEADERBOARD_HTML, doc.html(sweep.report))
    return board


def page(board: dict, with_curves: bool) -> Document:
    doc = Document("OASIS brain DCGAN: sweep leaderboard")
    doc.lines([["Sweep directory: ", Code(board["sweep_dir"])],
               time.strftime("Written %Y-%m-%d %H:%M:%S UTC", time.gmtime(board["written"]))])
    verdicts = [k for k in checks.CHECKS if any("verdict" in (r["metrics"].get(k) or {}) for r in board["runs"])]
    doc.table(["run", "state", "epochs", "kimg", "seed max SSIM", *verdicts, "images/s", "rank-hours"],
              [[r["name"], r["state"] + (f": {r['why']}" if r["why"] else ""), str(r["epochs_done"]), f"{r['kimg']:g}",
                checks.fmt(_final(r)), *[(r["metrics"].get(k) or {}).get("verdict", "-") for k in verdicts],
                checks.fmt(r["cost"]["images_per_s"], 1), f"{r['cost']['gpu_hours']:.3f}"] for r in board["runs"]])
    doc.heading("Where each run's step time goes")
    doc.table(["run", *speed.HEADER], [[r["name"], *speed.row(r["step_split"])] for r in board["runs"]])
    doc.heading("Across seeds")
    doc.table(["values", "runs", "seed max SSIM mean", "sd", "min", "max"],
              [[", ".join(f"{k}={v}" for k, v in g["values"].items()) or "(all)", str(g["seed_max_ssim"]["n"]),
                *(checks.fmt(g["seed_max_ssim"][k]) for k in ("mean", "sd", "min", "max"))] for g in board["groups"]])
    if with_curves:
        doc.image("Every run's curves", rundir.FIGURE_SWEEP_CURVES)
    doc.heading("Each run's checks, with their intervals, readings and anchors")
    for r in board["runs"]:
        if set(checks.CHECKS) <= set(r["metrics"]):  # reported by this version: every check is there
            doc.heading(r["name"], level=3)
            checks.add_section(doc, r["metrics"], [["seed max SSIM (final epoch)", checks.fmt(_final(r)), "-"]])
    return doc


def _curves(run: rundir.RunDir) -> dict | None:
    epochs = run.read_stats("epoch") if run.stats.is_file() else []
    per_epoch = run.report_file(rundir.REPORT_PER_EPOCH)
    rows = fsutil.read_jsonl(per_epoch) if per_epoch.is_file() else []
    if not epochs:
        return None
    return {"loss_epochs": [e["epoch"] for e in epochs], "g_loss": [e["g_loss"] for e in epochs],
            "ssim_epochs": [r["epoch"] for r in rows], "seed_max_ssim": [r["seed_max_ssim"] for r in rows]}


def build(sweep: SweepDir) -> dict:
    """The leaderboard of every run sweep.json records, as it stands on disk now."""
    rec = fsutil.read_json(sweep.record)
    rows = [run_row(sweep.run(r["run_dir"]), r["values"]) for r in rec["runs"]]
    return {"sweep_dir": str(sweep.path), "written": time.time(), "runs": rows, "groups": groups(rows)}


def run_row(run: rundir.RunDir, values: dict) -> dict:
    state = run.read_state()
    stats = run.read_stats() if run.stats.is_file() else []
    epochs = [r for r in stats if r.get("kind") == "epoch"]
    options = run.read_options() if run.options.is_file() else {}
    fp16 = options.get("config", {}).get("train", {}).get("fp16_allreduce", False)
    row = {"name": run.path.name, "values": values, "run_dir": str(run.path), "state": state["state"],
           "why": state.get("reason") or _last_failure(run), "epochs_done": len(epochs),
           "kimg": sum(e.get("images", 0) for e in epochs) / 1000, "cost": cost(options, stats),
           "step_split": speed.step_split(epochs, options.get("world_size", 1), fp16), "metrics": {}, "readings": [],
           "verdicts": []}
    metrics_file = run.report_file(rundir.REPORT_METRICS)
    if metrics_file.is_file():
        m = fsutil.read_json(metrics_file)
        row["metrics"] = {k: m[k] for k in ("seed_max_ssim", *checks.CHECKS) if k in m}
        row["readings"] = checks.table_rows(m)
        row["verdicts"] = checks.readings(m)
    return row


def _last_failure(run: rundir.RunDir) -> str:
    """The retry step's reason for the last give-up, when the run's own state says none."""
    if not run.requeues.is_file():
        return ""
    failed = [d for d in fsutil.read_jsonl(run.requeues) if d.get("action") == "fail"]
    return failed[-1]["reason"] if failed else ""


def cost(options: dict, stats: list[dict]) -> dict:
    """Images a second over the epochs trained, and rank-hours (GPU-hours on GPU nodes): ranks x the
    wall time of every attempt, from its first record to its last (so a preempted attempt's lost
    part of an epoch counts; the start-up before its first record does not)."""
    ranks = options.get("world_size", 1)
    epochs = [r for r in stats if r.get("kind") == "epoch"]
    seconds = sum(e.get("epoch_time", 0.0) for e in epochs)
    images = sum(e.get("images", 0) for e in epochs)
    attempts: list[list[float]] = []
    for r in stats:
        if r.get("kind") == "resume" or not attempts:
            attempts.append([])
        attempts[-1].append(r.get("time", 0.0))
    wall = sum(max(a) - min(a) for a in attempts)
    return {"images_per_s": images / seconds if seconds else None, "ranks": ranks, "attempts": len(attempts),
            "wall_s": wall, "gpu_hours": ranks * wall / 3600}


def groups(rows: list[dict]) -> list[dict]:
    """Runs sharing every value but the seed, with the seed metric's and each numbered check's spread."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        key = ",".join(f"{k}={v}" for k, v in r["values"].items() if k != SEED_KEY)
        by.setdefault(key, []).append(r)
    return [{"values": {k: v for k, v in rs[0]["values"].items() if k != SEED_KEY},
             "runs": [r["run_dir"] for r in rs], "seed_max_ssim": _spread([_final(r) for r in rs])}
            for rs in by.values()]


def _final(row: dict) -> float | None:
    return row["metrics"].get("seed_max_ssim", {}).get("final")


def _spread(values: list) -> dict:
    """The mean, the seed-to-seed standard deviation and the range of the runs that have a value."""
    got = [v for v in values if v is not None]
    return {"n": len(got), "mean": statistics.fmean(got) if got else None,
            "sd": statistics.stdev(got) if len(got) > 1 else None,
            "min": min(got, default=None), "max": max(got, default=None)}
