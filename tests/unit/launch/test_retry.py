"""What the batch script does after the train step ends: requeue, fail with a reason, or leave it."""

import pytest

from oasis_dcgan import rundir
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.errors import (CheckpointError, ConfigError, DataError, RendezvousError, RunLockError,
                                StorageError)
from oasis_dcgan.launch import retry
from oasis_dcgan.training.distributed import World


def world(rank, size=2, attempt=0):
    return World(rank=rank, size=size, local_rank=rank, local_size=size, job_id="7", attempt=attempt)


def record(run, decision, attempt=0):
    retry._record(run, job_id="7", attempt=attempt, rc=1, action=decision.action, reason=decision.reason,
                  counted=decision.counted)


def test_a_rank_killed_without_a_note_is_requeued_and_counted(tmp_path):
    wrapped = ("Graph execution error:\n\nDetected at node x defined at:\n  File a.py\n\n"
               "Horovod has been shut down.\n\t[[node x]]")
    retry.note_failure(RunDir(tmp_path), world(0), RuntimeError(wrapped))
    d = retry.decide(RunDir(tmp_path), "7", 0, 137, max_requeues=2)
    assert d.action == "requeue" and d.counted
    assert "rank 1 ended without a note" in d.reason and "Horovod has been shut down." in d.reason
    assert "[[node x]]" not in d.reason and "Graph" not in d.reason, "TensorFlow's wrapping is dropped"
    assert "requeue 1 of 2" in d.reason


def test_requeues_after_failures_stop_at_the_limit_with_the_reason(tmp_path):
    for attempt in range(3):
        d = retry.decide(RunDir(tmp_path), "7", attempt, 137, max_requeues=2)
        record(RunDir(tmp_path), d, attempt)
    assert [x["action"] for x in retry.read_decisions(RunDir(tmp_path))] == ["requeue", "requeue", "fail"]
    assert "gave up after 2 requeue(s)" in d.reason and "no rank left a note" in d.reason
    assert retry.decide(RunDir(tmp_path), "8", 0, 137, max_requeues=2).action == "requeue", "the limit is per job"


def test_a_stop_is_requeued_without_counting_unless_submitit_did_it(tmp_path):
    for r in (0, 1):
        retry.note_attempt(RunDir(tmp_path), world(r), "stopped", "signal SIGUSR2")
    d = retry.decide(RunDir(tmp_path), "7", 0, 143, max_requeues=0)
    assert d.action == "requeue" and not d.counted, "preemptions never use up max_requeues"
    retry.note_attempt(RunDir(tmp_path), world(0, attempt=1), "stopped", "signal SIGUSR2", requeued_by="submitit")
    assert retry.decide(RunDir(tmp_path), "7", 1, 143, max_requeues=0).action == "none", "never requeued twice"


@pytest.mark.parametrize("error", [ConfigError("train.lr = -1: must be > 0"), FileNotFoundError("/data/x.h5"),
                                   DataError("/data: 12 training images cannot fill one batch of 16"),
                                   CheckpointError("/run/checkpoints: no checkpoint can be resumed from"),
                                   RunLockError("/run is being trained by job 5")])
def test_an_error_a_retry_cannot_fix_fails_at_once(tmp_path, error):
    retry.note_failure(RunDir(tmp_path), world(1), error)
    d = retry.decide(RunDir(tmp_path), "7", 0, 1, max_requeues=5)
    assert d.action == "fail" and str(error) in d.reason and d.reason.startswith("rank 1:")
    usage = retry.decide(RunDir(tmp_path / "other"), "7", 0, 2, max_requeues=5)
    assert usage.action == "fail", "exit 2 is a usage error"


@pytest.mark.fault
def test_a_finished_run_is_left_alone_but_a_finish_of_another_job_decides_nothing(tmp_path):
    run = RunDir(tmp_path)
    run.write_state(rundir.FINISHED, epochs=2, job_id="7", attempt=0)
    assert retry.decide(RunDir(tmp_path), "7", 0, 1, max_requeues=5).action == "none"
    # Job 8 extends the run and is stopped before it writes its own state: its stop is requeued.
    retry.note_attempt(RunDir(tmp_path), World(rank=0, size=1, job_id="8"), "stopped", "signal SIGUSR2")
    d = retry.decide(RunDir(tmp_path), "8", 0, 143, max_requeues=5)
    assert d.action == "requeue" and not d.counted


def test_main_fails_the_job_with_the_step_exit_code_and_records_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    retry.note_failure(RunDir(tmp_path), world(0), DataError("12 training images cannot fill one batch of 16"))
    assert retry.main([str(tmp_path), "--rc", "1", "--max-requeues", "3"]) == 1
    assert "fail: rank 0: DataError: 12 training images" in capsys.readouterr().out
    assert retry.read_decisions(RunDir(tmp_path))[-1]["action"] == "fail"


@pytest.mark.parametrize("error", [StorageError("/run/stats.jsonl: cannot append a line (No space left on device)"),
                                   RendezvousError("rank 0 did not publish its address within 300 s"),
                                   ValueError("an unforeseen bug")])
def test_a_fault_of_the_machine_or_an_unforeseen_error_is_requeued(tmp_path, error):
    retry.note_failure(RunDir(tmp_path), world(1), error)
    d = retry.decide(RunDir(tmp_path), "7", 0, 1, max_requeues=5)
    assert d.action == "requeue" and d.counted and str(error) in d.reason


def test_the_cli_prints_a_known_error_on_one_line_and_keeps_the_traceback_of_a_bug():
    from oasis_dcgan import errors

    assert [errors.exit_code(e) for e in (ConfigError("x"), RunLockError("x"), FileNotFoundError("x"),
                                          StorageError("x"), RendezvousError("x"), ValueError("x"))] == \
        [errors.USER_EXIT, errors.USER_EXIT, errors.USER_EXIT, errors.RETRYABLE_EXIT, errors.RETRYABLE_EXIT, None]


def test_an_array_task_decides_on_the_run_its_task_id_names(tmp_path, monkeypatch, capsys):
    """A sweep's array shares one teardown line: each task finds its own run in the array's list."""
    from oasis_dcgan import fsutil

    sweep = rundir.SweepDir(tmp_path)
    runs = ["train.lr=0.0001", "train.lr=0.0002"]
    for name in runs:
        sweep.run(name).path.mkdir()
    listing = sweep.array_folder("a1") / rundir.SWEEP_ARRAY_RUNS
    fsutil.write_json(listing, {"runs": runs})
    monkeypatch.setenv("SLURM_JOB_ID", "31")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "30")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    w = World(rank=0, size=1, local_rank=0, local_size=1, job_id="30_1", attempt=0)
    retry.note_failure(sweep.run(runs[1]), w, DataError("12 training images cannot fill one batch of 16"))
    argv = [str(tmp_path), "--rc", "1", "--max-requeues", "3", "--array-runs", str(listing), "--array-task", "1"]
    assert retry.main(argv) == 1
    assert "job 30_1 attempt 0: fail: rank 0: DataError" in capsys.readouterr().out
    assert retry.read_decisions(sweep.run(runs[1]))[-1]["job_id"] == "30_1"
    assert not retry.read_decisions(sweep.run(runs[0])), "the other task's run is left alone"
