"""What the Slurm executor (executors.Slurm) asks of Slurm's commands: whether a controller answers,
its partitions, the sbatch parameters of a job, the script submitit would submit, which jobs are
alive, a job's state and requeue, and the accounting rows of recorded jobs."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import PartitionError

# A job in one of these states holds its claims, whatever their age: it runs, or will.
ALIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Elapsed", "Start", "End", "NodeList", "Reason")
REQUEUE_STATES = ("REQUEUED", "PREEMPTED", "NODE_FAIL")


def ask(cmd: list[str], timeout: float) -> subprocess.CompletedProcess | None:
    """A Slurm command's answer; None when it cannot be asked."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def available() -> bool:
    """sbatch is installed and a controller answers (installed-but-down counts as no Slurm)."""
    if not shutil.which("sbatch") or not shutil.which("scontrol"):
        return False
    r = ask(["scontrol", "ping"], 15)
    return r is not None and r.returncode == 0 and "UP" in r.stdout


def jobs_alive(job_ids: list[str]) -> bool | None:
    """Whether Slurm still has any of these jobs pending, running or suspended (an array's tasks
    included); None when no controller answers, so the caller falls back on the lock's age."""
    ids = [j for j in job_ids if j and j.replace("_", "").isdigit()]
    if not ids or not shutil.which("squeue"):
        return None
    r = ask(["squeue", "-h", "-j", ",".join(ids), "-o", "%T"], 30)
    if r is None:
        return None
    if r.returncode != 0:
        # Jobs long gone from the controller's memory are an error of their own; anything else is no answer.
        return False if "Invalid job id" in r.stderr else None
    return any(state.strip() in ALIVE_STATES for state in r.stdout.splitlines())


def job_state(job_id: str) -> str:
    r = ask(["scontrol", "show", "job", "-o", job_id], 30)
    fields = dict(kv.split("=", 1) for kv in (r.stdout if r else "").split() if "=" in kv)
    return fields.get("JobState", "UNKNOWN")


def requeue(job_id: str) -> None:
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)


def retry_command(run_dir: str | os.PathLike, max_requeues: int, executor: str,
                  array_runs: Path | None = None) -> list[str]:
    """What a train job runs after its step ends (launch/retry.py): requeue, or fail with the reason."""
    runs = ["--array-runs", str(array_runs)] if array_runs else []
    return [sys.executable, "-m", "oasis_dcgan.launch.retry", str(Path(run_dir).resolve()),
            "--max-requeues", str(max_requeues), "--executor", executor, *runs]


def max_array_size() -> int:
    """The controller's MaxArraySize: an array's task ids run from 0 to one less. 1001, Slurm's
    default, when the controller does not say."""
    r = ask(["scontrol", "show", "config"], 30)
    for line in (r.stdout if r else "").splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return 1001


def partitions() -> dict[str, dict]:
    """What the controller says of each partition: {name: its fields}; {} when it does not answer."""
    r = ask(["scontrol", "show", "partition", "-o"], 30)
    out = {}
    for line in (r.stdout if r else "").splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "PartitionName" in fields:
            out[fields["PartitionName"]] = fields
    return out


def check_partition(cfg, nodes: int) -> None:
    """Refuse, before queueing, a job its partition can never run: it would pend for good
    (PartitionNodeLimit) while the command waited without a word."""
    known = partitions()
    if not known:
        return
    name = cfg.cluster.partition or next((n for n, f in known.items() if f.get("Default") == "YES"), "")
    if name not in known:
        raise PartitionError(f"cluster.partition = {name!r}: Slurm has no such partition (it has: "
                             f"{', '.join(sorted(known))})")
    part = known[name]
    total = int(part.get("TotalNodes", "0") or 0)
    limit = part.get("MaxNodes", "UNLIMITED")
    can = min(total, int(limit)) if limit.isdigit() else total
    if nodes > can:
        fits = [f"{n} ({f.get('TotalNodes')} nodes)" for n, f in sorted(known.items())
                if int(f.get("TotalNodes", "0") or 0) >= nodes]
        raise PartitionError(f"cluster.nodes = {nodes}: partition {name!r} has {total} node(s) (MaxNodes={limit}); "
                             "set cluster.nodes to at most that, or cluster.partition to "
                             + (f"one that has {nodes}: {', '.join(fits)}" if fits else f"one with {nodes} nodes"))


def batch_parameters(cfg, role: str, cpus: int, array: int, after: str | None, executor: str,
                     array_runs: Path | None = None) -> dict:
    """submitit's Slurm parameters beyond the resources: the site's keys, the dependency, the array,
    and for a train job its retry teardown (for a train array's task, on the run `array_runs` lists
    at its task id)."""
    c = cfg.cluster
    extra = {k: v for k, v in (("account", c.account), ("qos", c.qos), ("constraint", c.constraint)) if v}
    if after:  # a job id (to start once it succeeded), or a whole dependency ("afterany:12:13")
        extra.update({"dependency": after if after.startswith("after") else f"afterok:{after}",
                      "kill-on-invalid-dep": "yes"})
    # srun does not inherit sbatch's --cpus-per-task on Slurm 22.05 to 23.02.
    params = dict(slurm_srun_args=[f"--cpus-per-task={cpus}"], slurm_signal_delay_s=c.signal_delay_s,
                  slurm_additional_parameters=extra)
    if c.partition:
        params["slurm_partition"] = c.partition
    if c.setup:
        params["slurm_setup"] = list(c.setup)
    if array:
        # cluster.max_parallel is a sweep's limit (its train arrays); a packing's tasks all run at once.
        limit = c.max_parallel if role == "train" and c.max_parallel else array
        params["slurm_array_parallelism"] = min(array, limit)
    if role == "train":
        # A dead rank ends the step at once; the batch script then requeues or fails the job (launch/retry.py).
        # The first teardown line runs right after srun, so $? is the step's exit code.
        retry = retry_command(cfg.run_dir, c.max_requeues, executor, array_runs)
        task = " --array-task $SLURM_ARRAY_TASK_ID" if array_runs else ""
        params.update(slurm_srun_args=[f"--cpus-per-task={cpus}", "--kill-on-bad-exit=1"],
                      slurm_teardown=[f"{shlex.join(retry)} --rc $?{task}"])
        extra["requeue"] = True   # requeueable even where the site's JobRequeue default says no
    return params


def sbatch_text(ex, array: int = 0) -> str:
    """The sbatch script submitit would submit with this executor (for --dry-run); `array` tasks."""
    inner = getattr(ex, "_executor", ex)
    make = getattr(inner, "_make_submission_file_text", None)
    if make is None or not shutil.which("srun"):
        # submitit renders Slurm's scripts only where srun is installed.
        return "(not rendered: this machine has no srun)"
    saved = dict(inner.parameters)
    if array:  # what submitit sets when it submits an array
        inner.parameters["map_count"] = array
    try:
        return make(inner._submitit_command_str, "DRYRUN")
    finally:
        inner.parameters.clear()
        inner.parameters.update(saved)


def sacct(job_ids: list[str]) -> list[dict]:
    """Job and step rows from Slurm accounting; -D keeps the runs a requeue replaced."""
    if not job_ids or not shutil.which("sacct"):
        return []
    r = ask(["sacct", "-D", "--parsable2", "--noheader", "-o", ",".join(SACCT_FIELDS), "-j", ",".join(job_ids)], 30)
    rows = []
    for line in (r.stdout if r else "").splitlines():
        parts = line.split("|")
        if len(parts) == len(SACCT_FIELDS):
            rows.append(dict(zip(SACCT_FIELDS, parts)))
    return rows


def job_rows(recorded: list[dict]) -> list[dict]:
    """Each recorded job's final state: its last accounting row, with how often it was requeued."""
    rows = sacct([str(j["job_id"]) for j in recorded])
    out = []
    for j in recorded:
        jid = str(j["job_id"])
        mine = [r for r in rows if r["JobID"] == jid or r["JobID"].startswith(jid + "_")]
        states = [r["State"] for r in mine if "." not in r["JobID"]]
        why = next((f"{r['State']} ({r['Reason']}), exit {r['ExitCode']}" for r in mine
                    if r.get("Reason") and r["Reason"] not in ("None", "")), "")
        out.append({**j, "states": states, "state": states[-1] if states else "UNKNOWN",
                    "requeues": sum(1 for s in states if s.startswith(REQUEUE_STATES)), "rows": mine, "why": why})
    return out
