"""A seeded fault soak: real training processes at 32x32, faults drawn at random, nothing lost.

`run(work, rng_seed, faults)` trains runs of EPOCHS epochs (deterministic, a checkpoint a step)
and, while each trains, injects faults drawn by a seeded random generator until the run
finishes, run after run, until `faults` have been tried:
- SIGKILL, SIGUSR2 and SIGTERM at a random moment, and SIGKILL right after a checkpoint line;
- a second writer: this user (another process) and another user of the group (a real uid);
- a symlink to a private file swapped in for a run file mid-collect; a collect onto a full disk;
- the holder suspended (SIGSTOP, as another host) past takeover, another job taking the run
  over, and the holder continued while that job trains;
- in a 2-rank run (`ranks=2`), one rank killed.
Each fault is checked where it lands (a refusal, an exit code, DEST intact), and each run at its
end against an uninterrupted reference run: every epoch logged once, every epoch's images the
same (each image once), the final weights bit-identical, and nothing outside the run touched.
A fault survived when both hold. The seed's script keeps no checkpoint: a kill costs it every
step taken before it, which the result sets beside the steps this suite trained again.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import AsUser
from oasis_dcgan import fsutil
from oasis_dcgan.config import DataConfig
from oasis_dcgan.errors import RunLockError, StorageError
from oasis_dcgan.launch import collect
from oasis_dcgan.prep import pack, sample_data
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.training.runlock import RunLock

REPO = Path(__file__).resolve().parent.parent
EPOCHS, STEPS, STALE_S = 12, 4, 3
GROUP, OTHER_UID = 47110, 47111  # another user of the group: ids no one on this machine has
LOCK_FAULTS = ("second_writer", "other_user", "collect_swap", "full_disk")
SIGNALS = {"sigkill": signal.SIGKILL, "sigusr2": signal.SIGUSR2, "sigterm": signal.SIGTERM}
KINDS = {1: (*SIGNALS, "kill_after_checkpoint", *LOCK_FAULTS, "suspend"), 2: ("sigkill", "sigusr2", "rank_kill")}
WEIGHTS = {"suspend": 0.3, "rank_kill": 1.0, "full_disk": 0.5}
PER_RUN_OF_RANKS = 3


def train_args(ds: Path, run: Path, ranks: int) -> list[str]:
    executor = ["--executor", "inprocess"] if ranks == 1 else ["--executor", "local", "--ranks", str(ranks)]
    return [sys.executable, "-m", "jobs.train", str(ds), str(run), "--epochs", str(EPOCHS), "--deterministic",
            "--seed", "3", "--checkpoint-every-steps", "1", "--batch-size", "8", *executor,
            "--set", f"train.max_steps_per_epoch={STEPS}", "--set", "train.intra_op_threads=1",
            "--set", "train.tick_seconds=0.5", "--set", f"cluster.lock_stale_after_s={STALE_S}",
            "--set", "cluster.timeout_min=10", "--set", "train.peer_timeout_s=5"]


class Soak:
    """One soak's state: its data, its reference, its random draws, and what each fault did."""

    def __init__(self, work: Path, rng_seed: int):
        self.work, self.rng = work, random.Random(rng_seed)
        self.outside = work / "outside"  # what no fault may touch: a private file and the dataset
        self.outside.mkdir(parents=True, exist_ok=True)
        self.secret = self.outside / "id_rsa"
        self.secret.write_text("PRIVATE KEY\n")
        os.chmod(self.secret, 0o600)
        self.ds = work / "ds"
        if not (self.ds / "manifest.json").is_file():
            src = work / "release"
            sample_data.write_png_release(src, cases=(8, 2, 2), resolution=32, rng_seed=5)
            pack.preprocess(src, self.ds, DataConfig(resolution=32, shard_size=64))
        self.refs = {}

    def reference(self, ranks: int) -> dict:
        """An uninterrupted run's epochs and weights, for runs of `ranks` ranks."""
        if ranks not in self.refs:
            run = self.work / f"reference-{ranks}"
            subprocess.run(["rm", "-rf", str(run)], check=True)
            subprocess.run(train_args(self.ds, run, ranks), cwd=REPO, check=True, capture_output=True, timeout=600)
            self.refs[ranks] = record_of(run)
        return self.refs[ranks]

    def start(self, run: Path, ranks: int, host: str = "") -> subprocess.Popen:
        args = train_args(self.ds, run, ranks)
        if host:  # a holder on "another host": a UTS namespace of its own, so age decides, not its pid
            args = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *args]
        err = open(self.work / "stderr.log", "a")
        return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                preexec_fn=lambda: os.umask(0o002))

    def outside_digest(self) -> str:
        h = hashlib.sha256()
        for p in sorted(self.outside.rglob("*")) + sorted(self.ds.glob("*.h5")) + [self.ds / "manifest.json"]:
            if p.is_file() and not p.is_symlink():
                h.update(p.name.encode() + fsutil.sha256_file(p).encode())
        return h.hexdigest()


def record_of(run: Path) -> dict:
    r = RunDir(run)
    epochs = r.read_stats("epoch")
    note = json.loads(r.rank_note(0).read_text()) if r.rank_note(0).is_file() else {}
    return {"epochs": [e["epoch"] for e in epochs], "images": [e.get("images_sha256") for e in epochs],
            "weights": note.get("weights_sha256"), "state": r.read_state()["state"]}


def stats_lines(run: Path) -> int:
    return len(fsutil.read_jsonl(RunDir(run).stats))


def wait_until(cond, proc, timeout: float = 300) -> bool:
    """True once cond() holds; False if the process ended first."""
    end = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            return False
        if time.time() > end:
            raise TimeoutError("the soak waited too long for a run to move")
        time.sleep(0.02)
    return True


def training(run: Path, proc) -> bool:
    """Wait for the process to train (a line of its own in stats.jsonl); False if it ended first."""
    n = stats_lines(run)
    return wait_until(lambda: stats_lines(run) > n or RunDir(run).finished(), proc) and not RunDir(run).finished()


# ----------------------------------------------------------------------------- the faults

def ranks_of(proc) -> list[int]:
    """The processes a scheduler signals: the job itself (1 rank, in process), or each rank of a
    local 2-rank job (the submitting process only waits for them)."""
    found = [p for p in descendants(proc.pid) if b"SUBMITIT_LOCAL_GLOBALID=" in environ(p)]
    return found or [proc.pid]


def send(proc, sig) -> int:
    """Signal every rank, as Slurm signals every task of the step; the job's exit code."""
    for pid in ranks_of(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return proc.wait(timeout=300)


def f_signal(s: Soak, run: Path, proc, kind: str):
    time.sleep(s.rng.uniform(0.0, 1.5))
    steps = max([c["global_step"] for c in RunDir(run).read_stats("checkpoint")], default=0)  # the seed would lose
    several = len(ranks_of(proc)) > 1
    rc = send(proc, SIGNALS[kind])
    # one rank in process: the signal's own code; a local job of ranks: its submitter says it failed
    ok = True if several else rc in ((-9,) if kind == "sigkill" else (143, 0))
    return None, ok, f"exit {rc}", steps


def f_kill_after_checkpoint(s: Soak, run: Path, proc, kind: str):
    n = len(RunDir(run).read_stats("checkpoint"))
    if not wait_until(lambda: len(RunDir(run).read_stats("checkpoint")) > n, proc):
        return None, None, "ended first", None
    rc = send(proc, signal.SIGKILL)
    return None, rc == -9 or len(ranks_of(proc)) > 1, "killed right after a checkpoint line", None


def f_second_writer(s: Soak, run: Path, proc, kind: str):
    intruder = RunLock(RunDir(run), "intruder", 0)
    try:
        intruder.acquire()
    except RunLockError:
        return proc, True, "refused", None
    intruder.release()
    return proc, None if proc.poll() is not None else False, "took the lock of a live run", None


def f_other_user(s: Soak, run: Path, proc, kind: str):
    def take() -> str:
        try:
            RunLock(RunDir(run), "other-user", 0).acquire()
            return "took"
        except RunLockError:
            return "refused"

    other = AsUser(OTHER_UID, GROUP, take)
    said = other.line()
    other.end()
    return proc, True if said == "refused" else (None if proc.poll() is not None else False), said, None


def f_collect_swap(s: Soak, run: Path, proc, kind: str):
    """A finished epoch's sample swapped for a link to a private file while collect runs; put back after."""
    done = sorted(RunDir(run).samples.glob("epoch_*.npy"))[:-1]
    if not done:
        return proc, None, "no finished sample yet", None
    victim = s.rng.choice(done)
    dest, real = Path(tempfile.mkdtemp(prefix="collected-", dir=s.work)), collect.open_regular

    def swap(base, rel):
        if base / rel == victim:
            os.rename(victim, victim.with_name(victim.name + ".aside"))
            victim.symlink_to(s.secret)
        return real(base, rel)

    collect.open_regular = swap
    try:
        collect.collect(RunDir(run), dest)
    finally:
        collect.open_regular = real
        if victim.is_symlink():
            victim.unlink()
            os.rename(victim.with_name(victim.name + ".aside"), victim)
    leaked = any(p.is_file() and "PRIVATE KEY" in p.read_text(errors="replace") for p in dest.rglob("*"))
    return proc, not leaked, f"swapped {victim.name}", None


def f_full_disk(s: Soak, run: Path, proc, kind: str):
    disk = Path(tempfile.mkdtemp(prefix="disk-", dir=s.work))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], check=True)
    try:
        try:
            collect.collect(RunDir(run), disk / "home")
            return proc, None, "it fitted", None
        except StorageError:
            temps = [p for p in disk.rglob(".*.tmp")]
            return proc, not temps, "a full disk: one line, no temp left", None
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def f_suspend(s: Soak, run: Path, proc, kind: str):
    """Stop the holder, restart it as another host, SIGSTOP it past takeover, let a new job take the run
    over, continue the old holder while the new one trains: the old one must exit 3, writing nothing."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    old = s.start(run, 1, host="suspended-node")
    if not training(run, old):
        old.wait(timeout=300)
        return None, None, "finished first", None
    old.send_signal(signal.SIGSTOP)
    time.sleep(STALE_S + 1.5)
    new = s.start(run, 1)
    moved = training(run, new)
    old.send_signal(signal.SIGCONT)
    rc = old.wait(timeout=120)
    return new, (rc == 3) if moved else None, f"the suspended holder exited {rc}", None


def f_rank_kill(s: Soak, run: Path, proc, kind: str):
    ranks = [p for p in descendants(proc.pid) if b"SUBMITIT_LOCAL_GLOBALID=1\n" in environ(p)]
    if not ranks:
        return proc, None, "rank 1 not found", None
    os.kill(ranks[0], signal.SIGKILL)
    rc = proc.wait(timeout=300)
    return None, rc != 0, f"rank 1 killed; the job exited {rc}", None


FAULTS = {"sigkill": f_signal, "sigusr2": f_signal, "sigterm": f_signal,
          "kill_after_checkpoint": f_kill_after_checkpoint, "second_writer": f_second_writer,
          "other_user": f_other_user, "collect_swap": f_collect_swap, "full_disk": f_full_disk,
          "suspend": f_suspend, "rank_kill": f_rank_kill}


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n")
    except OSError:
        return b""


# ----------------------------------------------------------------------------- runs, and the soak

def soak_run(s: Soak, index: int, ranks: int, budget: int, weights: dict) -> list[dict]:
    """One run trained to its end under at most `budget` faults; each fault tried, with its verdict."""
    run = s.work / f"run-{index}"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    before, tried, proc = s.outside_digest(), [], None
    kinds = KINDS[ranks]
    while len(tried) < budget and not RunDir(run).finished():
        proc = proc or s.start(run, ranks)
        if not training(run, proc):
            rc, proc = proc.wait(timeout=300), None
            if rc not in (0, 143):
                tried.append({"kind": "unexplained exit", "ok": False, "detail": f"exit {rc}"})
            continue
        kind = s.rng.choices(kinds, [weights.get(k, 1.0) for k in kinds])[0]
        if kind == "full_disk" and os.getuid() != 0:
            continue
        proc, ok, detail, steps = FAULTS[kind](s, run, proc, kind)
        if ok is not None:  # None: the run moved on before the fault could land (not a trial)
            tried.append({"kind": kind, "ok": ok, "detail": detail, "steps_before": steps})
    finish(s, run, proc, ranks)
    whole = record_of(run) == s.reference(ranks) and s.outside_digest() == before
    for t in tried:
        t.update(run=index, ranks=ranks, survived=bool(t["ok"] and whole), run_whole=whole)
    return tried


def finish(s: Soak, run: Path, proc, ranks: int) -> None:
    """Let the run train to its end, starting it again after a stop (at most a few times)."""
    for _ in range(4):
        if RunDir(run).finished():
            break
        proc = proc or s.start(run, ranks)
        proc.wait(timeout=900)
        proc = None
    if proc is not None:
        proc.wait(timeout=900)


def run(work: Path, rng_seed: int, faults: int, ranks_mix: tuple = (1,), per_run: int = 8,
        weights: dict | None = None) -> dict:
    """Soak until `faults` faults have been tried; runs take `ranks_mix` ranks in turn; each fault
    kind is drawn with its weight (WEIGHTS, and 1 for a kind it does not name)."""
    work.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:  # a directory the other user of the group can write, as a group's scratch is
        os.chown(work, 0, GROUP)
        os.chmod(work, 0o2775)
    s, tried, index, t0 = Soak(work, rng_seed), [], 0, time.time()
    while len(tried) < faults:
        ranks = ranks_mix[index % len(ranks_mix)]
        budget = per_run if ranks == 1 else PER_RUN_OF_RANKS  # a job of ranks restarts in many seconds
        tried += soak_run(s, index, ranks, min(budget, faults - len(tried)), {**WEIGHTS, **(weights or {})})
        index += 1
    kinds = collections.Counter(t["kind"] for t in tried)
    return {"rng_seed": rng_seed, "tried": len(tried), "survived": sum(t["survived"] for t in tried),
            "runs": index, "seconds": round(time.time() - t0, 1),
            "by_kind": {k: [n, sum(t["survived"] for t in tried if t["kind"] == k)] for k, n in sorted(kinds.items())},
            "seed_steps_lost": sum(t.get("steps_before") or 0 for t in tried if t["kind"] in SIGNALS),
            "failures": [t for t in tried if not t["survived"]]}


# ----------------------------------------------------------------------------- the bench section

RESULT = "soak"
FAULTS_IN_BENCH, RNG_SEED = 200, 1


def main():
    from bench.common import WORK, save

    work = WORK / "soak"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    result = run(work, RNG_SEED, FAULTS_IN_BENCH, ranks_mix=(1,) * 7 + (2,))
    show(save(RESULT, result))


def show(result: dict) -> None:
    from bench.common import table

    print(f"faults tried {result['tried']}, survived with nothing lost {result['survived']} "
          f"(seed {result['rng_seed']}, {result['runs']} runs, {result['seconds'] / 60:.0f} min)\n")
    print(table([(k, n, ok) for k, (n, ok) in result["by_kind"].items()], ("fault", "tried", "survived")))
    print(f"\nThe seed's script keeps no checkpoint: the signals above would have cost it "
          f"{result['seed_steps_lost']} steps trained before them; this suite trained every run to the same "
          "weights, bit for bit, as an uninterrupted run.")
    for f in result["failures"]:
        print(f"- not survived: {f['kind']} in run {f['run']}: {f['detail']}")


if __name__ == "__main__":
    main()
