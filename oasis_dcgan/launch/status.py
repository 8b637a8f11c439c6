"""`oasis-dcgan status`: where a run or a sweep stands, from the scheduler and the directories themselves.

A sweep's status asks the scheduler once for all its arrays (one sacct call on Slurm) and reads
the rest from each run's own files; `watch` polls it with back-off, so a sweep of hundreds of
runs watched for a day costs the scheduler a few hundred queries, not one per run per poll.
"""
from __future__ import annotations

import time
from collections.abc import Callable

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


def run_status(run: rundir.RunDir) -> tuple[str, bool]:
    """`status` as `watch` polls it: the text, and whether training has ended."""
    return status(run), run.read_state()["state"] in ENDED


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




# ----------------------------------------------------------------------------- a sweep

ENDED = (rundir.FINISHED, rundir.FAILED)


def sweep_status(sweep: rundir.SweepDir) -> tuple[str, bool]:
    """One line per run (state, epoch, ETA, directory) and the leaderboard; and whether every run
    has ended (finished or failed) with its array gone from the queue."""
    rec = fsutil.read_json(sweep.record)
    tasks = task_states(rec)
    lines, ended = [f"sweep {sweep.path}: {len(rec['runs'])} runs"], True
    for entry in rec["runs"]:
        line, over = _run_line(sweep.run(entry["run_dir"]), tasks.get(entry["run_dir"], ""))
        lines.append(line)
        ended = ended and over
    board = sweep.report / rundir.SWEEP_LEADERBOARD_HTML
    lines.append(f"leaderboard {board}" if board.is_file() else "leaderboard not written yet")
    return "\n".join(lines), ended


def task_states(rec: dict) -> dict[str, str]:
    """{run: its array task's scheduler state}, from one query per executor for every array the
    sweep submitted; a run in several submissions takes its latest task's state."""
    arrays = [a for sub in rec["submissions"] for a in sub.get("arrays", [])]
    by_executor: dict = {}
    for a in arrays:
        by_executor.setdefault(a.get("executor"), []).append(a)
    out = {}
    for name, mine in by_executor.items():
        cls = executors.EXECUTORS.get(name, executors.Executor)
        for a, row in zip(mine, cls.states([{"job_id": a["job_id"]} for a in mine])):
            for i, run in enumerate(a["runs"]):
                task = [r["State"] for r in row["rows"] if r.get("JobID") == f"{a['job_id']}_{i}"]
                out[run] = task[-1] if task else row["state"]
    return out


ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "CONFIGURING", "COMPLETING", "RESIZING")


def _run_line(run: rundir.RunDir, task: str) -> tuple[str, bool]:
    """The run's line, and whether it has ended: by its own state, or by its task's end when it
    never wrote one (it failed before training, say: the retry step's reason is then its why)."""
    state = run.read_state()
    gave_up = [d["reason"] for d in read_decisions(run) if d["action"] == "fail"] if run.requeues.is_file() else []
    stats = run.read_stats() if run.stats.is_file() else []
    last = next((r for r in reversed(stats) if r.get("kind") in ("tick", "epoch")), None)
    epochs = run.read_options()["config"]["train"]["epochs"] if run.options.is_file() else "?"
    where = f"epoch {last['epoch'] if last else 0}/{epochs}"
    eta = last.get("eta_s") if last and state["state"] == rundir.TRAINING else None
    where += f", ETA {format_seconds(eta)}" if eta else ""
    queue = f" [{task}]" if task and state["state"] not in ENDED else ""
    why = state.get("reason") if state["state"] == rundir.FAILED else (gave_up[-1] if gave_up else "")
    line = f"  {state['state'] + queue:<24} {where:<28} {run.path.name}" + (f": {why[:200]}" if why else "")
    return line, (state["state"] in ENDED or bool(task)) and not task.startswith(ACTIVE)


def watch(poll: Callable[[], tuple[str, bool]], show: Callable[[str], None], first_s: float = 30.0,
          most_s: float = 600.0, timeout_s: float | None = None, sleep=time.sleep) -> bool:
    """Poll until `poll` says everything ended: show each new text; the interval doubles while
    nothing changes (up to `most_s`) and starts again at `first_s` on a change. Returns whether it
    ended (False: timed out)."""
    interval, shown, start = first_s, None, time.monotonic()
    while True:
        text, ended = poll()
        if text != shown:
            show(text)
            interval = first_s if shown is not None else interval
            shown = text
        else:
            interval = min(interval * 2, most_s)
        if ended:
            return True
        if timeout_s is not None and time.monotonic() - start + interval > timeout_s:
            return False
        sleep(interval)
