"""Shared fixtures and helpers. Everything the tests read is made here or by the suite itself.

The folder decides a test's tier: tests/unit (nothing trains; `make test-unit`), tests/integration
(trains, on real Horovod ranks and files), tests/cluster (the dev Slurm cluster). Each test is
marked with its folder's name, so `-m "not cluster"` works as well as a path."""
from __future__ import annotations

import contextlib
import logging
import os
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from oasis_dcgan.config import DataConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def log_lines(logger: str = "oasis_dcgan"):
    """The messages the suite's loggers (under `logger`) emit at INFO and above inside the block."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    target, handler = logging.getLogger(logger), Collect(logging.INFO)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


# A few small steps a run: what most training tests need.
SMALL_TRAIN = ["--batch-size", "8", "--set", "train.max_steps_per_epoch=6", "--set", "train.intra_op_threads=1",
               "--set", "train.tick_seconds=0.5"]


def train_cmd(dataset, run_dir, ranks, epochs, *extra):
    """`python -m jobs.train`, deterministic, a checkpoint a step, on 1 (in process) or more local ranks."""
    executor = ["--executor", "inprocess"] if ranks == 1 else ["--executor", "local", "--ranks", str(ranks)]
    return [sys.executable, "-m", "jobs.train", str(dataset), str(run_dir), "--epochs", str(epochs),
            "--deterministic", "--seed", "3", "--checkpoint-every-steps", "1", *executor, *SMALL_TRAIN, *extra]


def rank_digests(run_dir, ranks):
    """Each rank's digest of its final weights, from its note."""
    return [json.loads((Path(run_dir) / "ranks" / f"rank-{r}.json").read_text())["weights_sha256"]
            for r in range(ranks)]


def resumes(run_dir) -> list[dict]:
    """The run's resume lines in stats.jsonl, oldest first."""
    from oasis_dcgan.rundir import RunDir

    return RunDir(run_dir).read_stats("resume")


def stop_checkpoints(run_dir, signal_name: str) -> list[int]:
    """The global steps of the checkpoints a stop on `signal_name` wrote, from stats.jsonl."""
    from oasis_dcgan.rundir import RunDir

    return [c["global_step"] for c in RunDir(run_dir).read_stats("checkpoint") if signal_name in c["reason"]]


@pytest.fixture
def done_run(tiny_run):
    """tiny_run, post-processed (cached after the first time)."""
    from oasis_dcgan.post import report
    from oasis_dcgan.rundir import RunDir

    report.postprocess(RunDir(tiny_run))
    return tiny_run


@pytest.fixture(scope="session")
def devcluster():
    """The real single-node Slurm from slurm/devcluster, brought up once per session."""
    subprocess.run([str(REPO / "slurm" / "devcluster"), "up"], check=True)
    d = os.environ.get("OASIS_DEVCLUSTER_DIR", "/var/tmp/oasis-devcluster")
    os.environ["SLURM_CONF"] = f"{d}/etc/slurm.conf"
    return os.environ["SLURM_CONF"]


@pytest.fixture(scope="session")
def png_release(tmp_path_factory) -> Path:
    """A small OASIS PNG release (64x64 pixels to keep it quick), with seg folders and gapped cases."""
    from oasis_dcgan.prep import sample_data

    out = tmp_path_factory.mktemp("png-release")
    sample_data.write_png_release(out, cases=(6, 2, 2), slices=32, resolution=64, rng_seed=1)
    return out


@pytest.fixture(scope="session")
def dataset32(png_release, tmp_path_factory) -> Path:
    """png_release packed at 32x32: 192 train, 64 validate, 64 test images."""
    from oasis_dcgan.prep import pack

    out = tmp_path_factory.mktemp("ds32")
    pack.preprocess(png_release, out, DataConfig(resolution=32, shard_size=64))
    return out


@pytest.fixture(scope="session")
def dataset256(png_release, tmp_path_factory) -> Path:
    """png_release packed at the seed's 256x256, for the full-size model's checkpoints."""
    from oasis_dcgan.prep import pack

    out = tmp_path_factory.mktemp("ds256")
    pack.preprocess(png_release, out, DataConfig(resolution=256, shard_size=64))
    return out


@pytest.fixture(scope="session")
def tiny_run(dataset32, tmp_path_factory) -> Path:
    """A finished 3-epoch training run on dataset32, small metric settings, not yet post-processed."""
    from oasis_dcgan import config
    from oasis_dcgan.training import trainer

    run = tmp_path_factory.mktemp("tiny-run")
    cfg = config.load(None, [f'run_dir="{run}"', f'data.dataset="{dataset32}"', "train.epochs=3",
                             "train.batch_size=8", "train.max_steps_per_epoch=3", "metrics.batches=10",
                             "metrics.nn_samples=12", "metrics.diversity_samples=6"])
    trainer.run(cfg, log_to_stdout=False)
    return run


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of a given size at a fresh folder: a disk that fills up. Needs root."""
    import shutil
    import uuid

    mounted = []

    def make(size_kib: int) -> Path:
        where = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
        mounted.append(where)
        return where

    def resize(where: Path, size_kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(where)], check=True)

    make.resize = resize
    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


# ---------------------------------------------------------------- helpers shared by the tiers
# A few small steps a run, as a config: what most in-process training tests need.
SMALL_CFG = ["train.batch_size=8", "train.max_steps_per_epoch=4", "train.intra_op_threads=1"]
# A report's checks on a few images: the defaults' take 40 s at 32x32, these about 10.
SMALL_METRICS = ["metrics.batches=5", "metrics.nn_samples=12", "metrics.diversity_samples=6"]


def small_overrides(dataset, run_dir, *overrides) -> list[str]:
    return [f'run_dir="{run_dir}"', f'data.dataset="{dataset}"', *SMALL_CFG, *overrides]


def small_cfg(dataset, run_dir, *overrides):
    from oasis_dcgan import config

    return config.load(None, small_overrides(dataset, run_dir, *overrides))


def no_temps(root: Path) -> bool:
    """No temp file of an atomic write is left anywhere under root."""
    return not [p for p in root.rglob(".*") if p.name.endswith(".tmp")]


def shard_metadata(ds, split):
    """Source, case and slice of every image of a split."""
    from oasis_dcgan.prep.reader import ShardReader

    r = ShardReader(ds, split)
    return r.metadata(np.arange(len(r)))


def packed_brains(tmp_path_factory, name: str, cases, rng_seed: int, resolution: int = 32, slices: int = 32):
    """Sample brains (train, validate, test cases) packed at 32x32, or at 64."""
    from oasis_dcgan.prep import pack, sample_data

    src = tmp_path_factory.mktemp(f"{name}-src")
    sample_data.write_png_release(src, cases=cases, slices=slices, resolution=64, rng_seed=rng_seed)
    out = tmp_path_factory.mktemp(name)
    pack.preprocess(src, out, DataConfig(resolution=resolution, shard_size=256))
    return out


@pytest.fixture(scope="session")
def held_out_rich(tmp_path_factory):
    """6 training brains and 6 each in validate and test: 192 held-out images a split, enough to see 5%."""
    return packed_brains(tmp_path_factory, "rich", (6, 6, 6), rng_seed=3)


@pytest.fixture(scope="session")
def demo_brains(tmp_path_factory):
    """The demo's subjects (24 training, 4 validate, 4 test, seed 0) at 64x64, 16 slices each where the demo
    has 32: the bench judges the demo's own data, the tests half as many slices of the same subjects."""
    return packed_brains(tmp_path_factory, "demo-brains", (24, 4, 4), rng_seed=0, resolution=64, slices=16)


@pytest.fixture(scope="session")
def fresh_brains(tmp_path_factory):
    """Brains of another sample-data seed at 64x64: real, and unseen by any split of demo_brains."""
    return packed_brains(tmp_path_factory, "fresh-brains", (12, 1, 1), rng_seed=7, resolution=64, slices=16)


def small_metrics(**kw):
    from oasis_dcgan import config

    return config.load(None, [f"metrics.{k}={v}" for k, v in {"diversity_samples": 24, "nn_samples": 64,
                                                              **kw}.items()]).metrics


def with_copies(images, dataset, share, rng_seed=0):
    """`images` with a share of them replaced by verbatim training slices."""
    import numpy as np

    from oasis_dcgan.imaging import to_unit
    from oasis_dcgan.prep.reader import ShardReader

    train = ShardReader(dataset, "train")
    rng = np.random.default_rng(rng_seed)
    k = int(round(share * len(images)))
    out = images.copy()
    out[rng.choice(len(images), k, replace=False)] = to_unit(train.read(np.sort(rng.choice(len(train), k, False))))
    return out, k


_BASELINES = {}   # the held-out side of a dataset, scored once for every test that judges a set against it


def judged(images, dataset, cases=None):
    """A checks.Context for images judged against the dataset, its held-out side scored once a session."""
    from oasis_dcgan.post import checks

    key = (str(dataset), None if cases is None else tuple(cases))
    ctx = checks.Context(images, "test", str(dataset), small_metrics(), cases=cases, base=_BASELINES.get(key))
    _BASELINES[key] = ctx.base
    return ctx


def copying_of(images, dataset, cases=None):
    from oasis_dcgan.post import checks

    return checks.copying(judged(images, dataset, cases))


@pytest.fixture(scope="session")
def raw_tree(tmp_path_factory):
    """OASIS-1 as its tarballs unpack: disc1/ and disc2/ of Analyze sessions, one subject with an
    MR2 rescan, and a NIfTI session in a third folder."""
    import shutil

    from oasis_dcgan.prep import sample_data

    root = tmp_path_factory.mktemp("raw")
    sample_data.write_raw_release(root, subjects=4, rng_seed=3, fmt="analyze", discs=2, rescans=1)
    sample_data.write_raw_release(root / "more", subjects=1, rng_seed=4, fmt="nifti-gz")
    (src,) = [p for p in (root / "more").iterdir() if p.is_dir()]  # beside it: the sample-data marker
    dst = root / "disc3" / "OAS1_0099_MR1"
    dst.parent.mkdir()
    shutil.move(str(src), dst)
    for f in (dst / "PROCESSED" / "MPRAGE" / "T88_111").iterdir():
        f.rename(f.with_name(f.name.replace(src.name, dst.name)))
    shutil.rmtree(root / "more")
    return root


# ---------------------------------------------------------------- the fault matrix
# Tests marked `fault` each inflict one fault on a run directory (docs/resume.md: "Faults, and
# what is kept"); the session's summary counts them: tried, and survived with nothing lost (passed).
_faults: dict = {}
_soak = {"tried": 0, "survived": 0}  # the faults a soak test tried inside one test (bench/bench_soak.py)


def record_soak(result: dict) -> None:
    _soak["tried"] += result["tried"]
    _soak["survived"] += result["survived"]


def pytest_runtest_logreport(report):
    if "fault" in report.keywords and (report.when == "call" or report.outcome != "passed"):
        _faults[report.nodeid] = _faults.get(report.nodeid, True) and report.outcome == "passed"


def pytest_terminal_summary(terminalreporter):
    if _faults:
        tried, survived = len(_faults) + _soak["tried"], sum(_faults.values()) + _soak["survived"]
        soaked = f" ({_soak['tried']} of them in the seeded soak)" if _soak["tried"] else ""
        terminalreporter.write_line(f"fault matrix: {tried} faults tried{soaked}, {survived} survived with nothing "
                                    f"lost" + ("" if survived == tried else
                                               f"; not survived: {sorted(k for k, v in _faults.items() if not v)}"))


# ---------------------------------------------------------------- tiers by folder
TIERS = ("unit", "integration", "cluster")


def pytest_collection_modifyitems(items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts[0] in TIERS:
            item.add_marker(parts[0])
