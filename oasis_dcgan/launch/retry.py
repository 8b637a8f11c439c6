"""After the train step ends: requeue the job, or let it fail with the reason on record.

Every rank leaves a note of how its attempt ended, in RUN_DIR/attempts/: `stopped` (a
signal; the checkpoint is on disk) or `failed`, with whether a retry can help. A rank that
was killed outright (SIGKILL, the out-of-memory killer, a lost node) leaves none. When srun
returns, the batch script (slurm/train.sbatch, or submitit's teardown lines) runs

    python -m oasis_dcgan.launch.retry RUN_DIR --rc $?

which reads the notes and decides:
- training finished, or the job is no longer running (cancelled, requeued by Slurm): nothing;
- a stop whose requeue submitit already asked for: nothing;
- a stop: requeue; preemptions are never counted;
- a failure a retry cannot fix (bad config, bad data, an unloadable run, a busy run): fail;
- any other failure, or a rank gone without a note: requeue, up to cluster.max_requeues for
  this job; past that, fail.
Each decision is appended to RUN_DIR/requeues.jsonl, which `oasis-dcgan status` reads.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import fsutil, rundir
from ..config import ClusterConfig
from ..errors import LEASE_LOST_EXIT, RunLockError, is_user_error
from ..training import runlock
from ..logs import Stats
from . import executors


def note_attempt(run: rundir.RunDir, world, outcome: str, reason: str, retry: bool = True,
                 requeued_by: str = "") -> None:
    """This rank's word on how its attempt ended (stopped or failed)."""
    fsutil.write_json(run.attempt_note(world.job_id, world.attempt, world.rank), {
        "outcome": outcome, "reason": reason[-600:], "retry": retry, "requeued_by": requeued_by,
        "rank": world.rank, "size": world.size, "host": world.hostname, "time": time.time()})


def note_failure(run: rundir.RunDir, world, error: BaseException) -> None:
    """A failed rank's note; if even that cannot be written, the job's log keeps the error."""
    try:
        note_attempt(run, world, "failed", f"{type(error).__name__}: {_why(error)}",
                     retry=not is_user_error(error))
    except OSError as e:
        print(f"[train] could not write this rank's note: {fsutil.io_reason(e)}", flush=True)


def _why(error: BaseException) -> str:
    """The line that says what went wrong. TensorFlow wraps an op's error in a header, the
    op's Python traceback and the node name; only the op's own message is kept."""
    lines = [x.strip() for x in str(error).splitlines()
             if x.strip() and not x[:1].isspace() and not x.startswith(("Graph execution error", "Detected at node"))]
    return (lines[0] if lines else "")[:240]


def read_notes(run: rundir.RunDir, job_id: str, attempt: int) -> list[dict]:
    return [fsutil.read_json(p) for p in run.attempt_notes(job_id, attempt)]


def read_decisions(run: rundir.RunDir) -> list[dict]:
    return fsutil.read_jsonl(run.requeues)


def _record(run: rundir.RunDir, **decision) -> None:
    log = Stats(run.requeues)
    log.write(**decision)
    log.sync()
    log.close()


@dataclass
class Decision:
    action: str        # requeue | fail | none
    reason: str
    counted: bool = False   # a requeue after a failure, which max_requeues limits


def decide(run: rundir.RunDir, job_id: str, attempt: int, rc: int, max_requeues: int) -> Decision:
    """What to do with a job whose train step just ended with exit code rc."""
    if rc == LEASE_LOST_EXIT:
        return Decision("none", "another job took the run's lock (this one was suspended or cut off past the "
                                "takeover limit); this job stopped writing, and the run is the holder's")
    state = run.read_state()
    if state["state"] == rundir.FINISHED and str(state.get("job_id")) == str(job_id):
        return Decision("none", f"training finished ({state.get('epochs')} epochs)")
    notes = read_notes(run, job_id, attempt)
    fatal = [n for n in notes if n["outcome"] == "failed" and not n["retry"]]
    if fatal:
        return Decision("fail", f"rank {fatal[0]['rank']}: {fatal[0]['reason']} (a retry would fail the same way)")
    if not notes and rc == 2:
        return Decision("fail", "train step exit 2: a usage or configuration error (see the job's log)")
    stops = [n for n in notes if n["outcome"] == "stopped"]
    if any(n["requeued_by"] for n in stops):
        return Decision("none", f"stopped ({stops[0]['reason']}); {stops[0]['requeued_by']} requeued it")
    if stops and len(stops) == max(n["size"] for n in notes):
        return Decision("requeue", f"stopped ({stops[0]['reason']}) with a checkpoint on disk")
    reason = _failure(notes, rc)
    used = sum(1 for d in read_decisions(run) if d["job_id"] == job_id and d.get("counted"))
    if used >= max_requeues:
        return Decision("fail", f"{reason}; gave up after {used} requeue(s) (cluster.max_requeues = {max_requeues})")
    return Decision("requeue", f"{reason}; requeue {used + 1} of {max_requeues}", counted=True)


def _failure(notes: list[dict], rc: int) -> str:
    failed = [n for n in notes if n["outcome"] == "failed"]
    size = max((n["size"] for n in notes), default=0)
    silent = sorted(set(range(size)) - {n["rank"] for n in notes})
    parts = []
    if silent:
        parts.append(f"rank {', '.join(map(str, silent))} ended without a note (killed, out of memory, or its "
                     "node failed)")
    elif not notes:
        parts.append("no rank left a note (killed, out of memory, or the node failed)")
    if failed:
        parts.append(f"rank {failed[0]['rank']}: {failed[0]['reason']}")
    return f"train step exit {rc}: " + "; ".join(parts)


def _held_by_another(run: rundir.RunDir, job_id: str) -> str:
    """The run's lock's holder when it is another job (whose run this job must not write into), else ""."""
    try:
        found = runlock.read(run)
    except RunLockError as e:
        return str(e)
    if found is None or not found[0] or str(found[0].get("job_id")) == str(job_id):
        return ""
    return runlock.describe(found[0])


def _max_requeues(run: rundir.RunDir) -> int:
    if run.options.is_file():
        return int(run.read_options()["config"]["cluster"]["max_requeues"])
    return ClusterConfig().max_requeues


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m oasis_dcgan.launch.retry", description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--rc", type=int, required=True, help="the train step's exit code")
    p.add_argument("--max-requeues", type=int, default=None, help="default: the run's cluster.max_requeues")
    p.add_argument("--executor", default=executors.Slurm.name, choices=tuple(executors.EXECUTORS),
                   help="whose job this is (default: Slurm's, as for slurm/train.sbatch)")
    p.add_argument("--array-runs", help="a sweep's train array: the file listing its tasks' runs (RUN_DIR is the "
                   "sweep's)")
    p.add_argument("--array-task", type=int, help="with --array-runs: this task's id")
    a = p.parse_args(argv)
    run, ex = rundir.RunDir(Path(a.run_dir).resolve()), executors.get(a.executor)
    if a.array_runs:
        run = rundir.SweepDir(run.path).run(fsutil.read_json(a.array_runs)["runs"][a.array_task])
    job_id, attempt = ex.this_job()
    limit = a.max_requeues if a.max_requeues is not None else _max_requeues(run)
    d = decide(run, job_id, attempt, a.rc, limit)
    state = ex.job_state(job_id) if d.action == "requeue" else ""
    if d.action == "requeue" and state != "RUNNING":
        d = Decision("none", f"job is {state}, not running: its scheduler has it in hand")
    print(f"[retry] job {job_id} attempt {attempt}: {d.action}: {d.reason}", flush=True)
    if d.action != "none" and (other := _held_by_another(run, job_id)):
        print(f"[retry] not recorded in {run}: it is held by {other}", flush=True)
    elif d.action != "none":
        _record(run, job_id=job_id, attempt=attempt, rc=a.rc, action=d.action, reason=d.reason,
                counted=d.counted)
    if d.action == "requeue":
        ex.requeue(job_id)
        return 0
    return (a.rc or 1) if d.action == "fail" else 0


if __name__ == "__main__":
    sys.exit(main())
