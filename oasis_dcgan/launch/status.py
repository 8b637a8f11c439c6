"""`oasis-dcgan status`: where a run stands, from Slurm accounting and the run directory itself."""
from __future__ import annotations

import time

from .. import fsutil, rundir
from ..logs import format_seconds
from . import executors
from .retry import read_decisions

def job_states(run: rundir.RunDir) -> list[dict]:
    """Each recorded job with its state, as its executor reads it (Slurm's accounting, a local job's
    result files); a job of an executor this version does not know is UNKNOWN."""
    path = run.jobs
    if not path.is_file():
        return []
    recorded = fsutil.read_json(path)["jobs"]
    by_executor: dict = {}
    for i, j in enumerate(recorded):
        by_executor.setdefault(j.get("executor"), []).append(i)
    out: list = [None] * len(recorded)
    for name, idx in by_executor.items():
        cls = executors.EXECUTORS.get(name, executors.Executor)
        for i, row in zip(idx, cls.states([recorded[i] for i in idx])):
            out[i] = row
    return out


def status(run: rundir.RunDir) -> str:
    """A human summary of where a run stands: jobs, progress, ETA, losses, metrics, checkpoint."""
    lines = [f"run {run}"]
    lines += _job_lines(run)
    stats = run.read_stats()
    if run.options.is_file():
        o = run.read_options()
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
    mpath = run.report_file(rundir.REPORT_METRICS)
    if mpath.is_file():
        m = fsutil.read_json(mpath)
        lines.append(f"  seed metric  max SSIM {m['seed_max_ssim']['final']:.4f} (epoch {m['epochs_done']})")
    ck = sorted(run.checkpoints.glob("ckpt-*")) if run.checkpoints.is_dir() else []
    if ck:
        when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ck[-1].stat().st_mtime))
        lines.append(f"  checkpoint   {ck[-1].name} ({when})")
    lines.append(f"  training     {describe_state(run.read_state())}")
    if run.report_file(rundir.REPORT_HTML).is_file():
        lines.append(f"  report       {run.report_file(rundir.REPORT_HTML)}")
    return "\n".join(lines)


def describe_state(state: dict) -> str:
    """The run's state in words: what it is, and why when it stopped or failed."""
    s = state["state"]
    if s == rundir.FINISHED:
        return f"finished ({state.get('epochs')} epochs, global step {state.get('global_step')})"
    if s in (rundir.STOPPED, rundir.FAILED):
        return f"{s} (job {state.get('job_id')}, attempt {state.get('attempt')}): {state.get('reason')}"
    if s == rundir.TRAINING:
        return f"training (job {state.get('job_id')}, attempt {state.get('attempt')}, {state.get('epochs')} epochs)"
    return "not started"


def _job_lines(run: rundir.RunDir) -> list[str]:
    """Each job's state, with its requeues after failures (launch/retry.py) and why it failed."""
    decisions, lines = read_decisions(run), []
    jobs = job_states(run)
    for j in jobs:
        mine = [d for d in decisions if d["job_id"] == str(j["job_id"])]
        retried = sum(1 for d in mine if d.get("counted"))
        extra = f", requeued {j['requeues']}x" if j["requeues"] else ""
        extra += f" ({retried} after a failure)" if retried else ""
        lines.append(f"  {j['stage']:<12} job {j['job_id']:<10} {j['state']}{extra}")
        if retried and mine[-1]["action"] == "requeue":
            lines.append(f"    last failure: {mine[-1]['reason']}")
        if j["state"].startswith(("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")):
            gave_up = [d["reason"] for d in mine if d["action"] == "fail"]
            lines.append(f"    reason: {gave_up[-1] if gave_up else _failure_reason(run, j)}")
    # Jobs submitted with slurm/train.sbatch are known only from their decisions.
    known = {str(j["job_id"]) for j in jobs}
    last = {d["job_id"]: d for d in decisions if d["job_id"] not in known}
    for d in last.values():
        lines.append(f"  train        job {d['job_id']:<10} attempt {d['attempt']}: {d['action']}: {d['reason']}")
    return lines


def _failure_reason(run: rundir.RunDir, job: dict) -> str:
    if job.get("why"):
        return job["why"]
    # submitit keeps each job's stderr in the run's slurm/ folder: its last line is the error.
    for f in sorted(run.job_logs.glob(f"{job['job_id']}*_log.err")):
        tail = [x for x in f.read_text(errors="replace").splitlines() if x.strip()]
        if tail:
            return tail[-1][:300]
    return "see sacct -j " + str(job["job_id"])


