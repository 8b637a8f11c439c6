"""The run directory's owner: its groups, state, JSONL, temps, and one-line errors on a full disk. Nothing trains."""

import logging
import os

import pytest

from oasis_dcgan import fsutil, rundir
from oasis_dcgan.logs import RunLog, Stats
from oasis_dcgan.rundir import RunDir


def fill(disk):
    """Use up a small disk's last byte."""
    with open(disk / "filler", "wb") as f:
        with pytest.raises(OSError):
            for _ in range(10_000):
                f.write(b"\0" * 65536)
                f.flush()
            os.fsync(f.fileno())


@pytest.mark.fault
def test_set_aside_moves_the_whole_record_and_nothing_else(tmp_path):
    run = RunDir(tmp_path)
    for name in rundir.RECORD:
        (tmp_path / name).write_text(name)
    for name in (rundir.OPTIONS, rundir.LOG, rundir.REQUEUES, rundir.JOBS):
        (tmp_path / name).write_text(name)
    moved = run.set_aside()
    assert sorted(p.name for p in moved.iterdir()) == sorted(rundir.RECORD)
    assert rundir.GENERATOR_RAW in rundir.RECORD and rundir.STATE in rundir.RECORD
    assert run.record_present() == [] and run.read_state() == {"state": "new"}
    for name in (rundir.OPTIONS, rundir.LOG, rundir.REQUEUES, rundir.JOBS):
        assert (tmp_path / name).is_file(), f"{name} belongs to the directory, not to one run"
    (tmp_path / rundir.STATS).write_text("")
    assert run.set_aside() != moved, "a second set-aside in the same second gets its own folder"


def test_state_round_trip_and_finished(tmp_path):
    run = RunDir(tmp_path)
    assert not run.finished()
    run.write_state(rundir.FINISHED, epochs=3)
    assert run.finished() and run.read_state()["epochs"] == 3
    run.write_state(rundir.TRAINING, epochs=6)
    assert not run.finished(), "an extension clears the finish"


def test_jsonl_skips_a_torn_line_and_follows_a_growing_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    assert fsutil.read_jsonl(path) == [{"a": 1}]
    rows, off = fsutil.follow_jsonl(path, 0)
    with open(path, "a") as f:
        f.write('}\n{"a": 3}\n')
    rows2, _ = fsutil.follow_jsonl(path, off)
    assert rows + rows2 == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert fsutil.read_jsonl(tmp_path / "missing.jsonl") == []


def test_truncate_after_drops_late_and_torn_lines(tmp_path):
    path = tmp_path / rundir.STATS
    path.write_text('{"kind": "epoch", "epoch": 1, "global_step": 4}\n'
                    '{"kind": "tick", "epoch": 2, "global_step": 6}\n{"kind": "ep')
    assert Stats.truncate_after(path, 4, 1) == 1
    assert path.read_text() == '{"kind": "epoch", "epoch": 1, "global_step": 4}\n'


@pytest.mark.fault
def test_the_final_model_never_writes_through_a_planted_symlink(tmp_path):
    import tensorflow as tf

    from oasis_dcgan.training.model import save_model

    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    (tmp_path / rundir.GENERATOR).symlink_to(victim)
    for guess in (f".generator.{os.getpid()}.tmp.keras", f".generator.keras.{os.getpid()}.tmp"):
        (tmp_path / guess).symlink_to(victim)  # what a predictable temp name would have followed
    save_model(tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)]), tmp_path / rundir.GENERATOR)
    assert victim.read_text() == "do not touch"
    assert not (tmp_path / rundir.GENERATOR).is_symlink() and (tmp_path / rundir.GENERATOR).stat().st_size > 0
    assert not [p for p in tmp_path.glob(".generator.keras.*.tmp") if not p.is_symlink()], "its temp dir is gone"


@pytest.mark.fault
def test_a_start_sweeps_every_temp_a_killed_writer_left(tmp_path):
    run = RunDir(tmp_path)
    left = [tmp_path / ".generator.keras.abc123.tmp", run.samples / ".epoch_0003.npy.x1.tmp",
            run.snapshots / ".generator_epoch_0001.keras.y.tmp", run.ranks / ".rank-0.json.z.tmp"]
    left[0].mkdir()
    (left[0] / rundir.GENERATOR).write_bytes(b"partial")
    for p in left[1:]:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"partial")
    assert run.sweep_temps() == 4 and not any(p.exists() for p in left)


@pytest.mark.fault
def test_a_full_disk_under_stats_log_and_report_is_one_line_naming_the_path(small_disk):
    disk = small_disk(64)
    stats, log = Stats(disk / rundir.STATS), RunLog(rundir.RunDir(disk), echo=False)
    fill(disk)
    with pytest.raises(fsutil.StorageError) as e:
        stats.write(kind="epoch", epoch=1, pad="x" * 8192)
        stats.sync()
    assert str(disk / rundir.STATS) in str(e.value) and "No space left" in str(e.value) and "intact" in str(e.value)
    logger = logging.getLogger("oasis_dcgan.test")
    log.attach()
    try:
        with pytest.raises(fsutil.StorageError) as e:
            for _ in range(100):
                logger.info("a line " * 200)
            log._f.flush()
    finally:
        log.close()
    assert str(disk / rundir.LOG) in str(e.value)
    report = disk / rundir.REPORT
    report.mkdir(exist_ok=True)
    with pytest.raises(fsutil.StorageError) as e:
        fsutil.write_text(report / rundir.REPORT_HTML, "<html>" + "x" * 100_000)
    msg = str(e.value)
    assert "\n" not in msg and rundir.REPORT_HTML in msg and "No space left" in msg and "intact" in msg
    assert not list(report.glob(".*.tmp"))


@pytest.mark.fault
def test_submitit_never_runs_out_of_requeues_for_stops(tmp_path):
    from oasis_dcgan import config
    from oasis_dcgan.launch import executors

    cfg = config.load(None, [f'run_dir="{tmp_path}"', "cluster.max_requeues=2"])
    slurm = executors.Slurm()
    params = slurm.parameters(cfg, "train", "oasis-train", 0, None, tmp_path)
    assert slurm.options()["slurm_max_num_timeout"] >= 10_000
    teardown = params["slurm_teardown"][0]
    assert "--max-requeues 2" in teardown and f"--executor {slurm.name}" in teardown and teardown.endswith("--rc $?")
    assert params["slurm_additional_parameters"]["requeue"] is True


@pytest.mark.fault
@pytest.mark.parametrize("requeued", [True, False])
def test_a_stop_is_noted_requeued_by_submitit_only_once_it_requeued(tmp_path, requeued):
    from oasis_dcgan.launch import jobs, retry
    from oasis_dcgan.training.distributed import World

    w = World(rank=0, size=1, job_id="5")

    def submitit_handler(signum, frame):
        if requeued:
            raise SystemExit(-1)  # submitit requeued, and exits
        raise RuntimeError("Job not requeued because: timed-out too many times.")

    run = rundir.RunDir(tmp_path)
    retry.note_attempt(run, w, "stopped", "signal SIGUSR2")  # written before the barrier
    if requeued:
        with pytest.raises(SystemExit):
            jobs.hand_stop_to_submitit(submitit_handler, run, w, "signal SIGUSR2")
    else:
        jobs.hand_stop_to_submitit(submitit_handler, run, w, "signal SIGUSR2")
    (note,) = retry.read_notes(run, "5", 0)
    assert note["requeued_by"] == ("submitit" if requeued else "")
    want = "none" if requeued else "requeue"
    assert retry.decide(run, "5", 0, 143, max_requeues=0).action == want, "a stop is never counted"
