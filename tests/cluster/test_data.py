"""Preprocessing: layouts, order, splits, bad input, idempotence, crash safety, verify, reader sharding."""

import subprocess
import sys

import pytest

from oasis_dcgan.prep import manifest

from tests.conftest import REPO


@pytest.mark.cluster
def test_array_preprocess_on_the_dev_cluster(devcluster, png_release, tmp_path):
    out = tmp_path / "ds"
    r = subprocess.run([sys.executable, "-m", "jobs.preprocess", str(png_release), str(out), "--resolution", "32",
                        "--shard-size", "40", "--tasks", "2", "--executor", "slurm"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "array job" in r.stdout
    assert manifest.verify(out) == []
    m = manifest.load_manifest(out)
    assert m["counts"]["train"] == 192
    logs = list((out / ".submitit").glob("*_0_log.out")) + list((out / ".submitit").glob("*_1_log.out"))
    assert len(logs) == 2, "both array tasks ran under Slurm"
