"""Faults a run directory must survive with nothing lost, each on real training processes at 32x32.

Each test is one row of the fault table (docs: "Resume, preemption and faults"); `FAULTS`
counts them, and test_fault_matrix_is_whole checks that every row has its test."""

import pytest

from oasis_dcgan.rundir import RunDir
from oasis_dcgan.training import trainer

from tests.conftest import small_cfg

pytestmark = pytest.mark.fault


def test_a_failed_start_releases_the_lock_and_records_why(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Exception):
        trainer.run(small_cfg(tmp_path / "no-such-dataset", run, "train.epochs=1"), log_to_stdout=False)
    assert not RunDir(run).lock.exists(), "the lock is released"
    state = RunDir(run).read_state()
    assert state["state"] == "failed" and "no-such-dataset" in state["reason"]
