"""`oasis-dcgan status`: where a run stands, from Slurm accounting and the run directory itself."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from .. import fsutil, rundir
from ..logs import format_seconds
from ..fsutil import pid_alive
from .executors import LOCAL
from .retry import read_decisions

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


def local_state(job: dict) -> tuple[str, str]:
    """A job of submitit's local executor, from its result files: (state, why it failed).

    Each task leaves <job id>_<task>_result.pkl holding ("success", value) or ("error", traceback);
    a job with none is running while its process lives, and ended without a result after."""
    import pickle

    folder, states, why = Path(job["submitit_folder"]), [], ""
    for jid in job.get("job_ids") or [job["job_id"]]:
        results = sorted(folder.glob(f"{jid}_*_result.pkl"))
        if not results:
            states.append("RUNNING" if pid_alive(int(jid)) else "FAILED")
            why = why or f"job {jid} ended without a result (killed?); see {folder}/{jid}_0_log.err"
        for r in results:
            try:
                outcome, value = pickle.loads(r.read_bytes())
            except Exception:  # noqa: BLE001 -- a result being written, or of another version
                outcome, value = "error", f"{r}: unreadable"
            states.append("COMPLETED" if outcome == "success" else "FAILED")
            if outcome != "success" and not why:
                why = [x for x in str(value).strip().splitlines() if x.strip()][-1][:300]
    order = ("FAILED", "RUNNING", "COMPLETED")
    return next(s for s in order if s in states), why


def job_states(run_dir: str | os.PathLike) -> list[dict]:
    """Each recorded job's final state: its last accounting row, with how often it was requeued;
    for local jobs, what their result files say."""
    path = rundir.RunDir(run_dir).jobs
    if not path.is_file():
        return []
    jobs = fsutil.read_json(path)["jobs"]
    rows = sacct([str(j["job_id"]) for j in jobs if j.get("executor") != LOCAL])
    out = []
    for j in jobs:
        if j.get("executor") == LOCAL:
            state, why = local_state(j)
            out.append({**j, "states": [state], "state": state, "requeues": 0, "rows": [], "why": why})
            continue
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
    run_dir = Path(run_dir)
    run = rundir.RunDir(run_dir)
    lines = [f"run {run_dir}"]
    lines += _job_lines(run_dir)
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


def _job_lines(run_dir: Path) -> list[str]:
    """Each job's state, with its requeues after failures (launch/retry.py) and why it failed."""
    decisions, lines = read_decisions(run_dir), []
    jobs = job_states(run_dir)
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
            lines.append(f"    reason: {gave_up[-1] if gave_up else _failure_reason(run_dir, j)}")
    # Jobs submitted with slurm/train.sbatch are known only from their decisions.
    known = {str(j["job_id"]) for j in jobs}
    last = {d["job_id"]: d for d in decisions if d["job_id"] not in known}
    for d in last.values():
        lines.append(f"  train        job {d['job_id']:<10} attempt {d['attempt']}: {d['action']}: {d['reason']}")
    return lines


def _failure_reason(run_dir: Path, job: dict) -> str:
    if job.get("why"):
        return job["why"]
    for r in job.get("rows", []):
        if r.get("Reason") and r["Reason"] not in ("None", ""):
            return f"{r['State']} ({r['Reason']}), exit {r['ExitCode']}"
    # submitit keeps each job's stderr in the run's slurm/ folder: its last line is the error.
    for f in sorted(rundir.RunDir(run_dir).job_logs.glob(f"{job['job_id']}*_log.err")):
        tail = [x for x in f.read_text(errors="replace").splitlines() if x.strip()]
        if tail:
            return tail[-1][:300]
    return "see sacct -j " + str(job["job_id"])


