"""Shared by the benchmarks: the machine's description, the seed baseline, a results table.

Every benchmark runs the seed's approach (bench/seed_style.py) in the same run, on the same
machine and data, and reports our figure as a ratio against it.
"""
from __future__ import annotations

import contextlib
import encodings.ascii  # noqa: F401 -- loaded now: a process forked as another user cannot read the library
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
WORK = Path(os.environ.get("OASIS_BENCH_WORK", "/var/tmp/oasis-bench"))


def dev_cluster(nodes: int | None = None) -> str:
    """Bring up the repository's dev Slurm cluster (with `nodes` namespace hosts beside this one,
    if given) and point Slurm's commands at it, as slurm/devcluster.env says. Returns SLURM_CONF."""
    subprocess.run([str(REPO / "slurm" / "devcluster"), "up", *(["--nodes", str(nodes)] if nodes else [])], check=True)
    conf = subprocess.run(["bash", "-c", "source slurm/devcluster.env && printf %s \"$SLURM_CONF\""], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    os.environ["SLURM_CONF"] = conf
    return conf


def seed_baseline(*args: str, env: dict | None = None) -> dict:
    """Run the seed's approach (bench/seed_style.py) in a fresh process and return its JSON line."""
    r = subprocess.run([sys.executable, "-m", "bench.seed_style", *args], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, **(env or {})}, check=False)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode or not lines:
        raise RuntimeError(f"seed_style {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1])


def machine() -> dict:
    import numpy as np

    info = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count(),
            "numpy": np.__version__}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in flags)
        mem = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal"))
        info["memory_gib"] = round(int(mem.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    try:
        import importlib.metadata as md

        info["tensorflow"] = md.version("tensorflow-cpu")
    except Exception:
        pass
    info["gpu"] = "none"
    return info


def sample_release(n_cases: int = 32, resolution: int = 256) -> Path:
    """The offline sample brains in the OASIS PNG layout, made once and reused."""
    from oasis_dcgan.prep import sample_data

    root = WORK / f"release-{n_cases}-{resolution}"
    train = root / "keras_png_slices_data" / "keras_png_slices_train"
    if not train.is_dir():
        sample_data.write_png_release(root, cases=(n_cases, 2, 2), resolution=resolution, rng_seed=11)
    return root


def save(name: str, result: dict) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"bench": name, "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def train_and_score(name: str, data, rng_seed: int, epochs: int, steps: int, *sets: str, ranks: int = 1) -> dict:
    """The real train job (`python -m jobs.train`; on `ranks` local Horovod ranks), then postprocess:
    the seed metric, MS-SSIM diversity, mean NN-SSIM and the epoch losses of stats.jsonl."""
    from oasis_dcgan.post.report import postprocess
    from oasis_dcgan.rundir import RunDir

    run = WORK / name
    subprocess.run(["rm", "-rf", str(run), f"{run}.rdv"], check=True)
    args = [sys.executable, "-m", "jobs.train", str(data), str(run), "--epochs", str(epochs), "--seed", str(rng_seed),
            "--set", f"train.max_steps_per_epoch={steps}"]
    args += ["--executor", "inprocess"] if ranks == 1 else ["--executor", "local", "--ranks", str(ranks)]
    for s in sets:
        args += ["--set", s]
    subprocess.run(args, cwd=REPO, check=True, capture_output=True)
    m = postprocess(run)
    epochs_ = [r for r in RunDir(run).read_stats() if r["kind"] == "epoch"]
    return {"seed_max_ssim": m["seed_max_ssim"]["final"], "diversity": m["diversity"]["generated"],
            "nn_ssim_mean": m["nn_ssim"]["mean"], "g_loss": [r["g_loss"] for r in epochs_],
            "d_loss": [r["d_loss"] for r in epochs_]}


def table(rows: list[tuple], header: tuple) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def our_step_ms(trainer, resolution: int, batch: int, steps: int, per_call: int) -> float:
    """Milliseconds a step of a built Trainer's compiled steps, `per_call` steps a call, on one
    constant batch (no reader): the step and its bookkeeping, and the call's own cost."""
    import numpy as np
    import tensorflow as tf

    x = tf.zeros([batch, resolution, resolution, 1], tf.uint8)
    size = trainer.ranks.size  # every rank's slots of the step, as the reader hands them over
    slots = tf.constant(np.arange(size * batch).reshape(size, batch), tf.int64)
    batches = iter(tf.data.Dataset.from_tensors((x, slots)).repeat())
    # An epoch of more images than the measurement trains: no call closes one (an epoch's close,
    # its samples and records, is the job's per-epoch cost, measured by the job's own rows).
    flag, n, budget = tf.constant(0.0), tf.constant(per_call), tf.constant(2 ** 40, tf.int64)
    trainer.state.restart_epoch()
    for _ in range(2):
        out = trainer.train_steps(batches, flag, n, budget)
    float(out[0])
    calls = max(1, steps // per_call)
    start = time.perf_counter()
    for _ in range(calls):
        out = trainer.train_steps(batches, flag, n, budget)
    float(out[0])
    return (time.perf_counter() - start) / (calls * per_call) * 1000


def epoch_gaps(epoch_records: list[dict]) -> list[float]:
    """Seconds between one epoch's last step and the next epoch's first, from stats.jsonl's
    epoch lines: what the epoch end held every rank up (samples, stats, a checkpoint)."""
    ends = [r["loop_end_time"] for r in epoch_records]
    starts = [e - r["epoch_time"] for e, r in zip(ends, epoch_records)]
    return [b - a for a, b in zip(ends, starts[1:])]


class AsUser:
    """`fn(*args)`, which returns a string, in a forked process of user `uid` in group `gid`
    (umask 002), its answer read back with `line()`. Forked, not exec'd: this interpreter may sit
    where another user cannot read it, so what `fn` needs is imported before. `linger_s` keeps the
    process alive after it answered (a live holder)."""

    def __init__(self, uid: int, gid: int, fn, *args, linger_s: float = 0.0):
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into its caller
            code = 1
            try:
                os.close(r)
                os.setgroups([gid])
                os.setgid(gid)
                os.setuid(uid)
                os.umask(0o002)
                os.write(w, (fn(*args) + "\n").encode())
                time.sleep(linger_s)
                code = 0
            except BaseException as e:  # noqa: BLE001
                os.write(w, f"child error: {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(code)
        os.close(w)
        self.out = os.fdopen(r)

    def line(self) -> str:
        return self.out.readline().strip()

    def end(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        self.out.close()
