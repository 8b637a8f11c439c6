"""A sweep: the product of a few grids of config values (and seeds), one run directory per
combination under the config's run_dir, recorded in sweep.json.

A run's directory is named by its values, never by a job id, so a requeue, a resubmission or a
crash finds the same directory again and no combination is ever trained twice.
"""
from __future__ import annotations

import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .. import config, fsutil, rundir
from ..config import Config
from ..errors import ConfigError
from ..rundir import SweepDir
from . import executors, jobs
from .pipeline import WATCH_EVERY_S, Pipeline

log = logging.getLogger(__name__)

SEED_KEY = "train.seed"
NAME_MAX = 255  # bytes in one path component on the file systems clusters use


@dataclass(frozen=True)
class Run:
    values: dict  # {dotted key: value}, in the grid's order

    @property
    def name(self) -> str:
        """The directory name: `key=value,...` in the grid's order (floats as Python writes them)."""
        return ",".join(f"{k}={_word(v)}" for k, v in self.values.items())

    def config(self, base: Config, sweep: SweepDir) -> Config:
        """The base config with this run's values and its own run directory."""
        cfg = config.from_dict(base.to_dict())
        for k, v in self.values.items():
            config.set_key(cfg, k, v)
        cfg.run_dir = str(sweep.run(self.name))
        return cfg.validate()


def _word(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)


def plan(grids: list[str], seeds: int = 0) -> list[Run]:
    """Every combination of the `--grid` texts' values, then `seeds` seeds (train.seed 0..N-1)
    each. A ConfigError names a bad key or value, and a value no directory can be named by."""
    axes = dict(config.grid_axis(g) for g in grids)
    if len(axes) != len(grids):
        raise ConfigError("--grid: a key is given twice; give each key once, with all its values")
    if seeds:
        if SEED_KEY in axes:
            raise ConfigError(f"--seeds {seeds} and --grid {SEED_KEY}: give the seeds one way")
        axes[SEED_KEY] = list(range(seeds))
    if not axes:
        raise ConfigError("a sweep needs at least one --grid KEY=V1,V2,... or --seeds N")
    runs = [Run(dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]
    for r in runs:
        _check_name(r)
    return runs


def _check_name(run: Run) -> None:
    name = run.name
    if "/" in name or "\0" in name or name.startswith(".") or len(name.encode()) > NAME_MAX:
        raise ConfigError(f"sweep run {name!r}: cannot name a directory (no '/', no leading '.', at most "
                          f"{NAME_MAX} bytes); give shorter values or fewer grid keys")


def record(sweep: SweepDir, grids: list[str], seeds: int, runs: list[Run]) -> dict:
    """Merge this submission's runs into sweep.json: runs already recorded keep their entry, so a
    wider grid adds only its new runs. Returns the record written."""
    old = fsutil.read_json(sweep.record) if sweep.record.is_file() else {"runs": [], "submissions": []}
    known = {r["run_dir"] for r in old["runs"]}
    new = [{"values": r.values, "run_dir": r.name} for r in runs if r.name not in known]
    rec = {"runs": old["runs"] + new,
           "submissions": old["submissions"] + [{"grids": grids, "seeds": seeds, "time": time.time(),
                                                  "runs": [r.name for r in runs]}]}
    sweep.path.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(sweep.record, rec)
    return rec


def unfinished(sweep: SweepDir, runs: list[Run]) -> list[Run]:
    """The runs a submission still has to train: not finished in their directories."""
    return [r for r in runs if not sweep.run(r.name).finished()]


def describe(runs: list[Run], todo: list[Run], root: Path) -> str:
    """The runs as `--dry-run` lists them: each directory, and whether it is to train."""
    lines = [f"{len(runs)} runs under {root}, {len(todo)} to train:"]
    names = {r.name for r in todo}
    lines += [f"  {'train' if r.name in names else 'done '}  {r.name}" for r in runs]
    return "\n".join(lines)


def submit(base: Config, grids: list[str], seeds: int = 0, dry_run: bool = False) -> dict:
    """Pack once, then train every run not finished: one array per MaxArraySize tasks on a scheduler
    (at most cluster.max_parallel at once), else a queue of cluster.max_parallel runs (1 when 0)."""
    ex = executors.get(base.cluster.executor, dry_run=dry_run)
    if not base.data.dataset:
        raise ConfigError("data.dataset is empty: name the directory the sweep's packed dataset is in (or goes to)")
    root = SweepDir(Path(base.run_dir).resolve())
    base.run_dir, base.data.dataset = str(root.path), str(Path(base.data.dataset).resolve())
    runs = plan(grids, seeds)
    configs = {r.name: r.config(base, root).to_dict() for r in runs}  # every run checked before anything queues
    todo = unfinished(root, runs)
    out = {"executor": ex.name, "sweep_dir": str(root.path), "runs": [r.name for r in runs],
           "to_train": [r.name for r in todo], "arrays": [], "listing": describe(runs, todo, root.path)}
    if not todo and not dry_run:  # a resubmission of a finished sweep queues nothing
        return out
    chain = Pipeline(base, ex, root.array_folder("dataset"), dry_run=dry_run)
    chain.dataset_stages(Path(base.data.dataset))
    if dry_run:
        train = ex.script(base, root.array_folder("DRYRUN"), "train", "oasis-sweep", len(todo), chain.after)
        ids = ["ARRAY_JOB_ID"]
    else:
        record(root, grids, seeds, runs)
        out["arrays"] = _train(ex, base, root, [configs[r.name] for r in todo], chain.after)
        ids = [a["job_id"] for a in out["arrays"]]
    # However the runs end: a failed run is a row of the leaderboard, with its reason.
    chain.after = "afterany:" + ":".join(ids) if ids else chain.after
    chain.folder = root.array_folder("report")
    res = chain.stage("sweep-report", "postprocess", jobs.sweep_report_job, str(root.path), base.metrics.batches)
    if dry_run:
        report = chain.scripts.pop("sweep-report")
        out["scripts"] = {**chain.scripts, "train": train, "sweep-report": report}
        return out
    out["leaderboard"] = res[0]["leaderboard"] if res else str(root.report / rundir.SWEEP_LEADERBOARD_HTML)
    out["jobs"] = chain.job_ids
    return out


def _train(ex, base: Config, root: SweepDir, todo: list[dict], after: str | None) -> list[dict]:
    """Queue the unfinished runs' configs: arrays of at most MaxArraySize tasks on a scheduler, else
    a queue of cluster.max_parallel (1 when 0) on this machine. Returns the arrays."""
    size = ex.array_size()
    if not size:
        _queue(ex, base, root, todo, base.cluster.max_parallel or 1)
        return []
    arrays = [_array(ex, base, root, todo[i:i + size], after) for i in range(0, len(todo), size)]
    _record_arrays(root, arrays)
    return arrays


def _array(ex, base: Config, root: SweepDir, configs: list[dict], after: str | None) -> dict:
    """One array of train tasks. Its run list is on disk before it is queued: a task's retry step reads it."""
    token = uuid.uuid4().hex[:12]
    folder = root.array_folder(token)
    folder.mkdir(parents=True, exist_ok=True)
    names = [Path(c["run_dir"]).name for c in configs]
    fsutil.write_json(folder / rundir.SWEEP_ARRAY_RUNS, {"runs": names})
    _, job_id = ex.submit(base, folder, "train", "oasis-sweep", jobs.TrainJob(base.to_dict()), (configs,),
                          array=len(configs), after=after)
    log.info(f"sweep: {ex.name} array {job_id}, {len(configs)} runs")
    return {"job_id": job_id, "executor": ex.name, "job_folder": token, "runs": names}


def _record_arrays(root: SweepDir, arrays: list[dict]) -> None:
    rec = fsutil.read_json(root.record)
    rec["submissions"][-1]["arrays"] = arrays
    fsutil.write_json(root.record, rec)


def _queue(ex, base: Config, root: SweepDir, configs: list[dict], parallel: int) -> None:
    """Run each config as its own job, `parallel` at a time, until all have ended."""
    waiting, running = list(configs), []
    while waiting or running:
        running = [j for j in running if not j.done()]
        while waiting and len(running) < parallel:
            c = waiting.pop(0)
            submitted, job_id = ex.submit(base, root.run(Path(c["run_dir"]).name).job_logs, "train", "oasis-sweep",
                                          jobs.TrainJob(c), ())
            log.info(f"sweep: {Path(c['run_dir']).name}: {ex.name} job {job_id}")
            running += submitted
        time.sleep(WATCH_EVERY_S if running else 0)
