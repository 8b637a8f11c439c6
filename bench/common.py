"""Shared by the benchmarks: the machine's description, the seed anchors, a results table.

Every benchmark runs the seed's approach (the baseline script seed_style_bench.py, looked up
beside the repository or in $OASIS_ANCHORS) in the same run, on the same machine and data,
and reports our figure as a ratio against it.
"""
from __future__ import annotations

import importlib.util
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


def dev_cluster() -> str:
    """Bring up the repository's dev Slurm cluster and point Slurm's commands at it, as
    slurm/devcluster.env says. Returns SLURM_CONF."""
    subprocess.run([str(REPO / "slurm" / "devcluster"), "up"], check=True)
    conf = subprocess.run(["bash", "-c", "source slurm/devcluster.env && printf %s \"$SLURM_CONF\""], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    os.environ["SLURM_CONF"] = conf
    return conf


def anchor_path() -> Path:
    for cand in (REPO.parent / "shared" / "anchors" / "seed_style_bench.py",
                 Path(os.environ.get("OASIS_ANCHORS", "")) / "seed_style_bench.py"):
        if cand.is_file():
            return cand
    raise SystemExit("cannot find shared/anchors/seed_style_bench.py beside the repository "
                     "(set OASIS_ANCHORS to its folder)")


def anchor(*args: str, env: dict | None = None) -> dict:
    """Run a seed baseline in a fresh process and return its JSON line."""
    r = subprocess.run([sys.executable, str(anchor_path()), *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, check=False)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode or not lines:
        raise RuntimeError(f"anchor {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1])


def anchor_module():
    spec = importlib.util.spec_from_file_location("seed_style_bench", anchor_path())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
        sample_data.write_png_release(root, cases=(n_cases, 2, 2), resolution=resolution, seed=11)
    return root


def save(name: str, result: dict) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"bench": name, "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


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
    slots = tf.constant(np.arange(batch)[None], tf.int64)
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
