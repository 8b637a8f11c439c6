"""The seeded fault soak (bench/bench_soak.py), short: at least 20 faults on real training
processes, each run checked against an uninterrupted one. `make bench SECTION=soak` runs 200."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from bench import bench_soak

from tests.conftest import record_soak

FAST = {"second_writer": 3, "other_user": 3, "collect_swap": 2, "full_disk": 1}  # more faults a minute


@pytest.mark.fault
def test_a_short_seeded_soak_survives_every_fault():
    if os.getuid() != 0:
        pytest.skip("another user's process and a full disk need root")
    top = Path(tempfile.mkdtemp(prefix="oasis-soak-", dir="/tmp"))  # reachable by the group's other user
    os.chmod(top, 0o755)
    try:
        result = bench_soak.run(top / "work", rng_seed=7, faults=20, weights=FAST)
        record_soak(result)
        assert result["tried"] >= 20 and len(result["by_kind"]) >= 5, result["by_kind"]
        assert result["survived"] == result["tried"], result["failures"]
    finally:
        shutil.rmtree(top, ignore_errors=True)
