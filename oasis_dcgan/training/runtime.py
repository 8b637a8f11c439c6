"""The training process's set-up, once per rank: devices, threads, determinism, the global seed,
and what the run records about the software it ran on (versions, git revision, host)."""
from __future__ import annotations

import importlib.metadata as md
import logging
import os
import platform
import subprocess
from pathlib import Path

import tensorflow as tf

from .. import __version__, rundir
from ..logs import RunLog
from ..prep import datalock
from .runlock import RunLock
from ..config import Config

log = logging.getLogger(__name__)

VERSIONED = ("tensorflow", "tensorflow-cpu", "keras", "horovod", "numpy", "h5py", "submitit")


def take_run(lock: RunLock, run_files: rundir.RunDir, dataset: str, echo: bool) -> RunLog:
    """Rank 0 takes the run's lock, then fences every write into the run by it, opens log.txt and
    names the run as reading its dataset (which no packing may then change under it). A refused
    start has written nothing into the run, not even a log line."""
    lock.acquire()
    run_files.lease = lock
    run_log = RunLog(run_files, echo=echo).attach()
    if lock.taken_from:
        log.info(lock.taken_from)
    run_files.sweep_temps()  # what killed writers left: no one else writes here now
    datalock.add_reader(dataset, lock.path, lock.holder["token"])
    return run_log


def leave_run(lock: RunLock, dataset: str) -> None:
    """The end of take_run: the dataset is no longer read by this run, and the lock is released."""
    if lock.held:
        datalock.remove_reader(dataset, lock.holder["token"])
    lock.release()


def configure_tensorflow(cfg: Config, local_rank: int) -> list:
    """One GPU per rank by local rank, thread counts, determinism and the global seed. Returns the GPUs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        # Memory growth, so ranks sharing a GPU (if asked to) do not each grab all of it.
        for g in gpus:
            tf.config.experimental.set_memory_growth(g, True)
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
    _set_threads(cfg)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.keras.utils.set_random_seed(cfg.train.seed)
    return gpus


def _set_threads(cfg: Config) -> None:
    threads = cfg.train.intra_op_threads
    if cfg.train.deterministic and not tf.config.list_physical_devices("GPU") and not threads:
        # Several CPU threads split a kernel's sums differently from run to run: bit-identical
        # runs need one.
        threads = 1
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TF already ran something in this process; a job's fresh process never has
        log.warning("train.intra_op_threads ignored: TensorFlow is already initialised"
                    + (" (so --deterministic cannot promise bit-identical runs)" if cfg.train.deterministic else ""))


def git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict:
    out = {"python": platform.python_version(), "oasis_dcgan": __version__}
    for name in VERSIONED:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def software() -> dict:
    """What options.json records about the software and the machine rank 0 ran on."""
    return {"versions": package_versions(), "git_revision": git_revision(), "host": platform.node()}
