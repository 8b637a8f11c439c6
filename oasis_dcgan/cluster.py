"""Slurm and submitit: executors, the preemptible training job, the chained pipeline, job states.

The only module that knows about Slurm. Jobs are plain callables pickled by submitit;
`TrainJob` is a submitit Checkpointable: on USR2 (preemption or time limit) submitit calls
its `checkpoint()` on rank 0, which saves from memory without any collective and returns a
DelayedSubmission of a fresh TrainJob pointing at the same run directory.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from . import fsutil
from .config import Config

JOBS_FILE = "jobs.json"


def slurm_available() -> bool:
    """sbatch is installed and a controller answers (installed-but-down counts as no Slurm)."""
    if not shutil.which("sbatch") or not shutil.which("scontrol"):
        return False
    try:
        r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and "UP" in r.stdout


def resolve_executor(kind: str) -> str:
    if kind == "auto":
        return "slurm" if slurm_available() else "local"
    return kind


def make_executor(cfg: Config, folder: str | os.PathLike, kind: str, role: str, name: str,
                  dependency: str | None = None, array: int = 0):
    """A submitit executor sized for a role: train (the ranks), postprocess (its CPUs), any other (1 CPU)."""
    import submitit

    kind = resolve_executor(kind)
    c = cfg.cluster
    if kind == "slurm":
        # How many time-outs submitit requeues before giving up (preemptions do not count).
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=c.max_requeues)
    else:
        ex = submitit.AutoExecutor(folder=str(folder), cluster="local")
    if role == "train":
        nodes, tasks, gpus, cpus = c.nodes, c.tasks_per_node, c.gpus_per_node, c.cpus_per_task
    elif role == "postprocess":
        nodes, tasks, gpus, cpus = 1, 1, 0, c.postprocess_cpus
    else:
        nodes, tasks, gpus, cpus = 1, 1, 0, 1
    if kind == "local" and nodes > 1:
        raise ValueError(f"cluster.nodes = {nodes}: the local executor runs on one machine; use 1 node "
                         "or run on Slurm")
    params = dict(name=name, timeout_min=c.timeout_min, nodes=nodes, tasks_per_node=tasks,
                  cpus_per_task=cpus)
    if gpus:
        params["gpus_per_node"] = gpus
    if c.mem_gb:
        params["mem_gb"] = c.mem_gb
    if kind == "slurm":
        extra = {}
        if dependency:
            extra["dependency"] = dependency
            extra["kill-on-invalid-dep"] = "yes"
        if c.account:
            extra["account"] = c.account
        if c.qos:
            extra["qos"] = c.qos
        params.update(slurm_signal_delay_s=c.signal_delay_s, slurm_additional_parameters=extra)
        if c.partition:
            params["slurm_partition"] = c.partition
        if c.setup:
            params["slurm_setup"] = list(c.setup)
        if array:
            params["slurm_array_parallelism"] = array
    ex.update_parameters(**params)
    return ex


def sbatch_text(ex) -> str:
    """The sbatch script submitit would submit with this executor (for --dry-run)."""
    inner = getattr(ex, "_executor", ex)
    make = getattr(inner, "_make_submission_file_text", None)
    if make is None:
        return "(the local executor submits no sbatch script)"
    return make(inner._submitit_command_str, "DRYRUN")


# ----------------------------------------------------------------------------- job callables

class TrainJob:
    """Train on every rank; requeue-safe. Pickled by submitit, so it holds only plain data."""

    def __init__(self, config: dict):
        self.config = config

    def __call__(self):
        from . import config as config_mod
        from . import train

        return train.run(config_mod.from_dict(self.config), handle_usr2=False)

    def checkpoint(self, *args, **kwargs):
        import submitit

        from . import train

        # Runs in rank 0's signal handler: save what is in memory (no collective), then let
        # submitit requeue the same job, which resumes from the run directory.
        try:
            train.save_now()
        except Exception as e:  # the periodic checkpoints still stand
            print(f"checkpoint on preemption failed: {e}", flush=True)
        return submitit.helpers.DelayedSubmission(TrainJob(self.config))


def preprocess_task(out: str, task: int, ntasks: int) -> dict:
    from . import data

    return data.pack_task(out, task, ntasks)


def seal_dataset(out: str) -> dict:
    from . import data

    m = data.seal(out)
    return {"counts": m["counts"], "dataset": out}


def postprocess_job(run_dir: str, dataset: str | None = None, batches: int | None = None) -> dict:
    from . import report

    m = report.postprocess(run_dir, dataset, batches)
    return {"seed_max_ssim": m["seed_max_ssim"]["final"], "report": str(Path(run_dir) / "report" / "report.html")}


def collect_job(run_dir: str, dest: str, include_checkpoints: bool = False) -> dict:
    from . import collect

    return collect.collect(run_dir, dest, include_checkpoints)


# ----------------------------------------------------------------------------- the pipeline

def _record(run_dir: Path, entry: dict) -> None:
    path = run_dir / JOBS_FILE
    jobs = fsutil.read_json(path) if path.is_file() else {"jobs": []}
    jobs["jobs"].append({**entry, "submitted": time.time()})
    fsutil.write_json(path, jobs)


def _dataset_ready(cfg: Config, dataset: Path) -> bool:
    """A verified dataset at this resolution, packed from this source (or any, if none is named)."""
    from . import data

    if not (dataset / "manifest.json").is_file() or data.verify(dataset):
        return False
    m = data.load_manifest(dataset)
    if m["resolution"] != cfg.data.resolution:
        return False
    if not cfg.data.source:
        return True
    # The recorded source is the detected layout root, which may sit below the one given.
    src, recorded = Path(cfg.data.source).resolve(), Path(m["sources"][0])
    return recorded == src or src in recorded.parents


def submit_pipeline(cfg: Config, executor: str = "auto", dry_run: bool = False, collect_dest: str = "",
                    wait: bool | None = None, log=print) -> dict:
    """preprocess (array) -> seal -> train -> postprocess [-> collect], chained with afterok.

    With the local executor there are no dependencies to chain, so each stage waits for
    the one before (wait=True); on Slurm everything is queued at once and this returns.
    """
    from . import data

    kind = resolve_executor(executor if executor != "auto" else cfg.cluster.executor)
    if wait is None:
        wait = kind == "local"
    run_dir = Path(cfg.run_dir).resolve()
    dataset = Path(cfg.data.dataset).resolve()
    cfg.run_dir, cfg.data.dataset = str(run_dir), str(dataset)
    folder = run_dir / "slurm"
    out: dict = {"executor": kind, "run_dir": str(run_dir), "dataset": str(dataset), "jobs": {}}
    scripts: dict = {}

    need_pack = not _dataset_ready(cfg, dataset)
    if not need_pack:
        log(f"dataset {dataset} is verified and matches the config; skipping preprocess")
    elif not cfg.data.source:
        raise ValueError(f"data.source is empty and {dataset} holds no verified dataset: nothing to train on")

    dep = None

    def stage(name: str, role: str, fn, *args, array: int = 0, wait_all: bool = False):
        """Queue one stage after the previous one (afterok); on the local executor, run it to the end."""
        nonlocal dep
        ex = make_executor(cfg, folder, kind, role, f"oasis-{name}", dependency=dep, array=array)
        if dry_run:
            scripts[name] = sbatch_text(ex)
            return None
        run_dir.mkdir(parents=True, exist_ok=True)
        if array:
            jobs = ex.map_array(fn, *args)
            job_id = jobs[0].job_id.split("_")[0]
        else:
            jobs = [ex.submit(fn, *args)]
            job_id = jobs[0].job_id
        _record(run_dir, {"stage": name, "job_id": job_id, **({"tasks": array} if array else {})})
        out["jobs"][name] = job_id
        log(f"{name}: {'array ' if array else ''}job {job_id}")
        dep = f"afterok:{job_id}"
        if wait:
            return [j.results() if wait_all else j.result() for j in jobs]
        return None

    if need_pack:
        # Plan here: a bad input fails now, before anything is queued or written.
        p = data.plan(cfg.data.source, **cfg.data.plan_kwargs())
        n = min(cfg.cluster.preprocess_tasks, max(1, len(p.shard_list())))
        if not dry_run:
            data.save_plan(p, dataset)
        stage("preprocess", "preprocess", preprocess_task, [str(dataset)] * n, list(range(n)), [n] * n, array=n)
        stage("seal", "seal", seal_dataset, str(dataset))
    stage("train", "train", TrainJob(cfg.to_dict()), wait_all=True)
    res = stage("postprocess", "postprocess", postprocess_job, str(run_dir), str(dataset), cfg.metrics.batches)
    if res:
        out["report"] = res[0]["report"]
    if collect_dest:
        stage("collect", "collect", collect_job, str(run_dir), str(Path(collect_dest).resolve()))
    if dry_run:
        out["scripts"] = scripts
    return out


# ----------------------------------------------------------------------------- status

SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Elapsed", "Start", "End", "NodeList", "Reason")


def sacct(job_ids: list[str]) -> list[dict]:
    """Job and step rows from Slurm accounting; -D keeps the runs a requeue replaced."""
    if not job_ids or not shutil.which("sacct"):
        return []
    cmd = ["sacct", "-D", "--parsable2", "--noheader", "-o", ",".join(SACCT_FIELDS), "-j", ",".join(job_ids)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in res.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == len(SACCT_FIELDS):
            rows.append(dict(zip(SACCT_FIELDS, parts)))
    return rows


def job_states(run_dir: str | os.PathLike) -> list[dict]:
    """Each recorded job's final state: its last accounting row, with how often it was requeued."""
    path = Path(run_dir) / JOBS_FILE
    if not path.is_file():
        return []
    jobs = fsutil.read_json(path)["jobs"]
    rows = sacct([str(j["job_id"]) for j in jobs])
    out = []
    for j in jobs:
        jid = str(j["job_id"])
        mine = [r for r in rows if r["JobID"] == jid or r["JobID"].startswith(jid + "_")]
        top = [r for r in mine if "." not in r["JobID"]]
        states = [r["State"] for r in top]
        out.append({**j, "states": states, "state": states[-1] if states else "UNKNOWN",
                    "requeues": sum(1 for s in states if s.startswith(("REQUEUED", "PREEMPTED", "NODE_FAIL"))),
                    "rows": mine})
    return out


def status(run_dir: str | os.PathLike) -> str:
    """A human summary of where a run stands: jobs, progress, ETA, losses, metrics, checkpoint."""
    from .logs import format_seconds, read_stats

    run_dir = Path(run_dir)
    lines = [f"run {run_dir}"]
    for j in job_states(run_dir):
        extra = f", requeued {j['requeues']}x" if j["requeues"] else ""
        lines.append(f"  {j['stage']:<12} job {j['job_id']:<10} {j['state']}{extra}")
        if j["state"].startswith(("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")):
            lines.append(f"    reason: {_failure_reason(run_dir, j)}")
    opts = run_dir / "options.json"
    stats = read_stats(run_dir / "stats.jsonl")
    if opts.is_file():
        o = fsutil.read_json(opts)
        total = o["steps_per_epoch"] * o["config"]["train"]["epochs"]
        progress = [r for r in stats if r.get("kind") in ("tick", "epoch")]
        last = progress[-1] if progress else None
        if last:
            eta = last.get("eta_s")
            lines.append(f"  progress     epoch {last.get('epoch')}/{o['config']['train']['epochs']}, step "
                         f"{last.get('global_step')}/{total}, {last.get('images_per_s', 0):.1f} img/s"
                         + (f", ETA {format_seconds(eta)}" if eta else ""))
        ep = [r for r in stats if r.get("kind") == "epoch"]
        if ep:
            lines.append(f"  losses       g {ep[-1]['g_loss']:.4f}  d {ep[-1]['d_loss']:.4f} (epoch {ep[-1]['epoch']})")
    mpath = run_dir / "report" / "metrics.json"
    if mpath.is_file():
        m = fsutil.read_json(mpath)
        lines.append(f"  seed metric  max SSIM {m['seed_max_ssim']['final']:.4f} (epoch {m['epochs_done']})")
    ck = sorted((run_dir / "checkpoints").glob("ckpt-*")) if (run_dir / "checkpoints").is_dir() else []
    if ck:
        lines.append(f"  checkpoint   {ck[-1].name} ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ck[-1].stat().st_mtime))})")
    if (run_dir / "train_done.json").is_file():
        lines.append("  training     finished")
    if (run_dir / "report" / "report.html").is_file():
        lines.append(f"  report       {run_dir / 'report' / 'report.html'}")
    return "\n".join(lines)


def _failure_reason(run_dir: Path, job: dict) -> str:
    for r in job.get("rows", []):
        if r.get("Reason") and r["Reason"] not in ("None", ""):
            return f"{r['State']} ({r['Reason']}), exit {r['ExitCode']}"
    # submitit keeps each job's stderr in the run's slurm/ folder: its last line is the error.
    for f in sorted((run_dir / "slurm").glob(f"{job['job_id']}*_log.err")):
        tail = [x for x in f.read_text(errors="replace").splitlines() if x.strip()]
        if tail:
            return tail[-1][:300]
    return "see sacct -j " + str(job["job_id"])


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
