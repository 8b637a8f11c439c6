"""Running the jobs: one stage, or the chained pipeline, through submitit (Slurm or local) or in-process.

preprocess (an array of packing tasks) -> seal -> train -> postprocess [-> collect], each
queued `afterok` on the one before. With the local executor there are no dependencies to
chain, so each stage waits for the one before; on Slurm everything is queued at once.
Every submitted job is recorded in RUN_DIR/jobs.json for `status`.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .. import fsutil, rundir
from ..config import Config
from ..prep import manifest, pack
from ..training import runlock
from . import jobs
from .environment import in_srun_step
from .executors import make_executor, resolve_executor, sbatch_text

WATCH_EVERY_S = 2.0


def record_job(run_dir: str | Path, entry: dict) -> None:
    """Append a submitted job to RUN_DIR/jobs.json."""
    path = rundir.RunDir(run_dir).jobs
    recorded = fsutil.read_json(path) if path.is_file() else {"jobs": []}
    recorded["jobs"].append({**entry, "submitted": time.time()})
    fsutil.write_json(path, recorded)


def dataset_ready(cfg: Config, dataset: Path) -> bool:
    """A verified dataset at this resolution, packed from this source (or any, if none is named)."""
    if not (dataset / manifest.MANIFEST).is_file() or manifest.verify(dataset):
        return False
    m = manifest.load_manifest(dataset)
    if m["resolution"] != cfg.data.resolution:
        return False
    if not cfg.data.source:
        return True
    # The recorded source is the detected layout root, which may sit below the one given.
    src, recorded = Path(cfg.data.source).resolve(), Path(m["sources"][0])
    return recorded == src or src in recorded.parents


class Pipeline:
    """Stages queued one after another on one executor kind; remembers the job ids."""

    def __init__(self, cfg: Config, kind: str, folder: Path, record_in: Path | None = None,
                 dry_run: bool = False, wait: bool = False, log=print, watch=None):
        self.cfg, self.kind, self.folder = cfg, kind, folder
        self.record_in, self.dry_run, self.wait, self.log = record_in, dry_run, wait, log
        self.watch = watch  # called with the stage's name every few seconds while a waited-for stage runs
        self.dependency: str | None = None
        self.job_ids: dict = {}
        self.scripts: dict = {}

    def stage(self, name: str, role: str, fn, *args, array: int = 0, all_ranks: bool = False):
        """Queue one stage after the previous one (afterok). With wait, returns its result(s)."""
        ex = make_executor(self.cfg, self.folder, self.kind, role, f"oasis-{name}", dependency=self.dependency,
                           array=array)
        if self.dry_run:
            self.scripts[name] = sbatch_text(ex, array)
            return None
        if array:
            submitted = ex.map_array(fn, *args)
            job_id = submitted[0].job_id.split("_")[0]
        else:
            submitted = [ex.submit(fn, *args)]
            job_id = submitted[0].job_id
        if self.record_in:
            self.record_in.mkdir(parents=True, exist_ok=True)
            record_job(self.record_in, {"stage": name, "job_id": job_id, **({"tasks": array} if array else {})})
        self.job_ids[name] = job_id
        self.log(f"{name}: {self.kind} {'array ' if array else ''}job {job_id}")
        self.dependency = f"afterok:{job_id}"
        if self.wait:
            while self.watch and not all(j.done() for j in submitted):
                self.watch(name)
                time.sleep(WATCH_EVERY_S)
            return [j.results() if all_ranks else j.result() for j in submitted]
        return None

    def pack_array(self, dataset: Path, tasks: int) -> None:
        """Plan here (a bad input fails now, before anything is queued), then queue the packing array."""
        p = pack.plan(self.cfg.data.source, **self.cfg.data.plan_kwargs())
        n = max(1, min(tasks, len(p.shard_list())))
        if not self.dry_run:
            pack.save_plan(p, dataset)
        self.stage("preprocess", "preprocess", jobs.preprocess_task, [str(dataset)] * n, list(range(n)), [n] * n,
                   array=n)


def submit_pipeline(cfg: Config, executor: str = "auto", dry_run: bool = False, collect_dest: str = "",
                    wait: bool | None = None, log=print, watch=None) -> dict:
    """The whole chain for one config. Returns the executor, paths, job ids (and scripts on a dry run)."""
    kind = resolve_executor(executor if executor != "auto" else cfg.cluster.executor)
    run_dir, dataset = Path(cfg.run_dir).resolve(), Path(cfg.data.dataset).resolve()
    cfg.run_dir, cfg.data.dataset = str(run_dir), str(dataset)
    # A dry run renders the sbatch scripts even where no controller answers (srun must be installed).
    render = "slurm" if dry_run and shutil.which("srun") else kind
    chain = Pipeline(cfg, render, rundir.RunDir(run_dir).slurm, record_in=run_dir, dry_run=dry_run,
                     wait=kind == "local" if wait is None else wait, log=log, watch=watch)
    out: dict = {"executor": kind, "run_dir": str(run_dir), "dataset": str(dataset), "jobs": chain.job_ids}
    runlock.check_free(run_dir)
    if dataset_ready(cfg, dataset):
        log(f"dataset {dataset} is verified and matches the config; skipping preprocess")
    elif not cfg.data.source:
        raise ValueError(f"data.source is empty and {dataset} holds no verified dataset: nothing to train on")
    else:
        chain.pack_array(dataset, cfg.cluster.preprocess_tasks)
        chain.stage("seal", "seal", jobs.seal_dataset, str(dataset))
    chain.stage("train", "train", jobs.TrainJob(cfg.to_dict()), all_ranks=True)
    res = chain.stage("postprocess", "postprocess", jobs.postprocess_job, str(run_dir), str(dataset),
                      cfg.metrics.batches)
    if res:
        out["report"] = res[0]["report"]
    if collect_dest:
        chain.stage("collect", "collect", jobs.collect_job, str(run_dir), str(Path(collect_dest).resolve()))
    if dry_run:
        out["scripts"] = chain.scripts
    return out


# ----------------------------------------------------------------------------- single jobs (the CLI's)

def preprocess(cfg: Config, executor: str, tasks: int, log=print) -> dict:
    """Pack cfg.data.source into cfg.data.dataset: in this process, or as an array job, then seal."""
    kind = resolve_executor(executor)
    out = Path(cfg.data.dataset).resolve()
    if kind == "inprocess":
        if tasks <= 1:
            return pack.preprocess(cfg.data.source, out, log=log, **cfg.data.plan_kwargs())
        p = pack.plan(cfg.data.source, **cfg.data.plan_kwargs())
        pack.save_plan(p, out)
        n = max(1, min(tasks, len(p.shard_list())))
        for t in range(n):
            pack.pack_task(out, t, n, log=log)
        return pack.seal(out)
    Pipeline(cfg, kind, out / ".submitit", wait=True, log=log).pack_array(out, tasks)
    return pack.seal(out)  # every task has finished: sealing is a few hashes, here


def train(cfg: Config, executor: str, wait: bool = True, restart: bool = False, log=print) -> list[dict]:
    """Train in this process (srun-started ranks are the job already) or submit the ranks as one job.

    restart moves the run's checkpoints and record aside first, here and once: a requeued
    job resumes from what the new run writes.
    """
    # Ranks started by srun (slurm/train.sbatch) are the job already: train here.
    kind = "inprocess" if executor == "auto" and in_srun_step() else resolve_executor(executor)
    if restart and in_srun_step():
        raise ValueError("--restart inside a Slurm job step would restart again on every requeue; restart once "
                         "from the login node (oasis-dcgan train ... --restart --no-wait), or move the run aside")
    if kind != "inprocess" or restart:
        runlock.check_free(cfg.run_dir)  # refuse before queueing; in-process ranks check as they start
    if restart:
        moved = rundir.RunDir(cfg.run_dir).set_aside()
        log(f"train: moved the previous checkpoints and record to {moved}" if moved else
            "train: --restart: nothing to move aside")
    if kind == "inprocess":
        return [jobs.TrainJob(cfg.to_dict())()]
    chain = Pipeline(cfg, kind, rundir.RunDir(cfg.run_dir).slurm, record_in=Path(cfg.run_dir), wait=wait, log=log)
    results = chain.stage("train", "train", jobs.TrainJob(cfg.to_dict()), all_ranks=True)
    log(f"train: {cfg.world_size} rank(s); run directory {cfg.run_dir}")
    return results[0] if results else []


def postprocess(run_dir: str | Path, dataset: str | None, batches: int | None, executor: str, log=print) -> str:
    """Postprocess here or as a job. Returns the report's path."""
    kind = resolve_executor(executor)
    run_dir = Path(run_dir).resolve()
    if kind == "inprocess":
        from ..post import report

        return report.postprocess(run_dir, dataset, batches, log=log)["report"]
    chain = Pipeline(Config(), kind, rundir.RunDir(run_dir).slurm, wait=True, log=log)
    return chain.stage("postprocess", "postprocess", jobs.postprocess_job, str(run_dir), dataset, batches)[0]["report"]
