"""Running the jobs: one stage, or the chained pipeline, through submitit (Slurm or local) or in-process.

preprocess (an array of packing tasks) -> seal -> train -> postprocess [-> collect], each
queued `afterok` on the one before. With the local executor there are no dependencies to
chain, so each stage waits for the one before; on Slurm everything is queued at once.
Every submitted job is recorded in RUN_DIR/jobs.json for `status`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from .. import fsutil, rundir
from ..claimfile import Liveness
from ..config import Config, ConfigError
from ..prep import datalock, layouts, manifest, pack
from ..training import runlock
from . import jobs
from . import executors
from .environment import in_srun_step

log = logging.getLogger(__name__)

WATCH_EVERY_S = 2.0


def liveness(cfg: Config) -> Liveness:
    """How this submitting process judges a lock's holder: by its jobs' scheduler where one answers, else
    by age."""
    return Liveness(cfg.cluster.lock_stale_after_s, executors.jobs_alive)


def record_job(run: rundir.RunDir, entry: dict) -> None:
    """Append a submitted job to RUN_DIR/jobs.json."""
    path = run.jobs
    recorded = fsutil.read_json(path) if path.is_file() else {"jobs": []}
    recorded["jobs"].append({**entry, "submitted": time.time()})
    fsutil.write_json(path, recorded)


def dataset_ready(cfg: Config, dataset: Path) -> bool:
    """A verified dataset packed from this source (or any, if none is named) as this config says.
    A directory holding a dataset packed otherwise is refused, naming each key that differs:
    packing over it would replace the dataset another run may train on."""
    if not (dataset / manifest.MANIFEST).is_file() or manifest.verify(dataset):
        return False
    m = manifest.load_manifest(dataset)
    differ = layouts.identity_differences(m, cfg.data)
    # The recorded source is the detected layout root, which may sit below the one given.
    src, recorded = Path(cfg.data.source or m["sources"][0]).resolve(), Path(m["sources"][0])
    if not (recorded == src or src in recorded.parents):
        differ.append(f"data.source: packed from {str(recorded)!r}, the config says {str(src)!r}")
    if differ:
        raise ConfigError(f"data.dataset: {dataset} holds a dataset packed otherwise:\n  " + "\n  ".join(differ)
                          + "\nSet data.dataset to a new directory to pack one for this config, or these keys to "
                          "the dataset's values.")
    return True


class Pipeline:
    """Stages queued one after another on one executor; remembers the job ids."""

    def __init__(self, cfg: Config, ex: executors.Executor, folder: Path, record_in: rundir.RunDir | None = None,
                 dry_run: bool = False, wait: bool | None = None, watch=None):
        self.cfg, self.ex, self.folder = cfg, ex, folder
        # Jobs are recorded for `status`; an in-process call is no job.
        self.record_in = record_in if ex.queued else None
        self.dry_run, self.wait = dry_run, not ex.chains if wait is None else wait
        self.watch = watch  # called with the stage's name every few seconds while a waited-for stage runs
        self.after: str | None = None   # the job the next stage waits for
        self.job_ids: dict = {}
        self.scripts: dict = {}

    def stage(self, name: str, role: str, fn, *args, array: int = 0, all_ranks: bool = False):
        """Queue one stage after the previous one (afterok). With wait, returns its result(s)."""
        job_name = f"oasis-{name}"
        if self.dry_run:
            self.scripts[name] = self.ex.script(self.cfg, self.folder, role, job_name, array, self.after)
            return None
        self.ex.check(self.cfg, role)
        submitted, job_id = self.ex.submit(self.cfg, self.folder, role, job_name, fn, args, array, self.after)
        if self.record_in:
            self.record_in.path.mkdir(parents=True, exist_ok=True)
            record_job(self.record_in, {"stage": name, "job_id": job_id, "executor": self.ex.name,
                                        **self.ex.record(submitted, self.folder),
                                        **({"tasks": array} if array else {})})
        self.job_ids[name] = job_id
        if self.ex.queued:
            log.info(f"{name}: {self.ex.name} {'array ' if array else ''}job {job_id}")
        self.after = job_id
        if self.wait or not self.ex.queued:   # an in-process call is done already: its result is here
            while self.watch and not all(j.done() for j in submitted):
                self.watch(name)
                time.sleep(WATCH_EVERY_S)
            return [j.results() if all_ranks else j.result() for j in submitted]
        return None

    def dataset_stages(self, dataset: Path) -> None:
        """Pack and seal cfg.data.source into `dataset`, unless it holds that dataset verified already."""
        cfg = self.cfg
        if dataset_ready(cfg, dataset):
            log.info(f"dataset {dataset} is verified and matches the config; skipping preprocess")
            return
        if not cfg.data.source:
            raise ConfigError(f"data.source is empty and {dataset} holds no verified dataset: nothing to train on")
        # Plan here: a bad input fails now, before anything is queued. A dry run plans only.
        p = (pack.plan(cfg.data.source, cfg.data) if self.dry_run else
             pack.start(cfg.data.source, dataset, cfg.data, queued=True, liveness=liveness(cfg)))
        self.pack_tasks(dataset, pack.tasks_for(p, cfg.cluster.preprocess_tasks), p.token)
        self.stage("seal", "seal", jobs.seal_dataset, str(dataset), p.token)
        self.name_packing_jobs(dataset, p.token, ("preprocess", "seal"))

    def pack_tasks(self, dataset: Path, n: int, token: str) -> None:
        """The pack tasks of a started packing (prep.pack.start) as one array job."""
        self.stage("preprocess", "preprocess", jobs.preprocess_task, [str(dataset)] * n, list(range(n)), [n] * n,
                   [token] * n, array=n)
        self.name_packing_jobs(dataset, token, ("preprocess",))

    def name_packing_jobs(self, dataset: Path, token: str, stages: tuple) -> None:
        """Jobs of a queued packing go into its lock: alive while their scheduler has them, however
        long they wait (a local executor's ids are processes of this host, which no scheduler knows)."""
        if self.ex.owns_job_ids() and not self.dry_run:
            datalock.name_jobs(dataset, token, [self.job_ids[s] for s in stages])


def submit_pipeline(cfg: Config, dry_run: bool = False, collect_dest: str = "", wait: bool | None = None,
                    watch=None) -> dict:
    """The whole chain for one config, on cfg.cluster.executor. Returns the executor, paths, job ids (and
    scripts on a dry run)."""
    ex = executors.get(cfg.cluster.executor, dry_run=dry_run)
    if not cfg.data.dataset:  # Path("") would be the current directory
        raise ConfigError("data.dataset is empty: name the directory the packed dataset is in (or goes to)")
    run, dataset = rundir.RunDir(Path(cfg.run_dir).resolve()), Path(cfg.data.dataset).resolve()
    cfg.run_dir, cfg.data.dataset = str(run), str(dataset)
    chain = Pipeline(cfg, ex, run.job_logs, record_in=run, dry_run=dry_run, wait=wait, watch=watch)
    out: dict = {"executor": ex.name, "run_dir": str(run), "dataset": str(dataset), "jobs": chain.job_ids}
    runlock.check_free(run, liveness(cfg))
    chain.dataset_stages(dataset)
    chain.stage("train", "train", jobs.TrainJob(cfg.to_dict()), all_ranks=True)
    res = chain.stage("postprocess", "postprocess", jobs.postprocess_job, str(run), str(dataset),
                      cfg.metrics.batches)
    if res:
        out["report"] = res[0]["report"]
    if collect_dest:
        chain.stage("collect", "collect", jobs.collect_job, str(run), str(Path(collect_dest).resolve()))
    if dry_run:
        out["scripts"] = chain.scripts
    return out


# ----------------------------------------------------------------------------- single jobs (the CLI's)

def preprocess(cfg: Config, executor: str, tasks: int) -> dict:
    """Pack cfg.data.source into cfg.data.dataset: the tasks in this process, or as an array job."""
    ex = executors.get(executor)
    out = Path(cfg.data.dataset).resolve()
    run_tasks = Pipeline(cfg, ex, out / ".submitit", wait=True).pack_tasks if ex.queued else None
    return pack.preprocess(cfg.data.source, out, cfg.data, tasks, run_tasks=run_tasks, liveness=liveness(cfg))


def train(cfg: Config, executor: str, wait: bool = True, restart: bool = False) -> list[dict]:
    """Train in this process (srun-started ranks are the job already) or submit the ranks as one job.

    restart moves the run's checkpoints and record aside first, here and once: a requeued
    job resumes from what the new run writes.
    """
    ex, run = executors.get(executor, ranks_here=in_srun_step()), rundir.RunDir(cfg.run_dir)
    if restart and in_srun_step():
        raise ConfigError("--restart inside a Slurm job step would restart again on every requeue; restart once "
                         "from the login node (oasis-dcgan train ... --restart --no-wait), or move the run aside")
    if ex.queued or restart:
        # Refuse before queueing; in-process ranks check as they start.
        runlock.check_free(run, liveness(cfg))
    if restart:
        moved = run.set_aside()
        log.info(f"train: moved the previous checkpoints and record to {moved}" if moved else
                 "train: --restart: nothing to move aside")
    chain = Pipeline(cfg, ex, run.job_logs, record_in=run, wait=wait)
    results = chain.stage("train", "train", jobs.TrainJob(cfg.to_dict()), all_ranks=True)
    if ex.queued:
        log.info(f"train: {cfg.world_size} rank(s); run directory {cfg.run_dir}")
    return results[0] if results else []


def postprocess(run_dir: str | Path, dataset: str | None, batches: int | None, executor: str,
                config_file: str | None = None, overrides: tuple = ()) -> str:
    """Postprocess here or as a job, with the run's own config (and any file or overrides on top of
    it: the job's account and partition among them). Returns the report's path."""
    from ..post import report

    ex = executors.get(executor)
    run, overrides = rundir.RunDir(Path(run_dir).resolve()), tuple(overrides)
    _, cfg = report.load_run(run, dataset, batches, config_file, overrides)
    chain = Pipeline(cfg, ex, run.job_logs, wait=True)
    return chain.stage("postprocess", "postprocess", jobs.postprocess_job, str(run), dataset, batches,
                       config_file, overrides)[0]["report"]
