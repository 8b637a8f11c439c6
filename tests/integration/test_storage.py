"""Shared storage as it is: full disks, group-readable files, and collecting a run that goes on."""

import json
import shutil
import stat
import subprocess
import sys
import threading

import pytest

from oasis_dcgan import config, fsutil
from oasis_dcgan.launch import collect
from oasis_dcgan.launch.collect import CollectError
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.training import trainer

from tests.conftest import REPO, no_temps


def cfg_for(dataset, run, epochs, *extra):
    return config.load(None, [f'run_dir="{run}"', f'data.dataset="{dataset}"', f"train.epochs={epochs}",
                              "train.batch_size=8", "train.max_steps_per_epoch=2", "train.intra_op_threads=1", *extra])


@pytest.mark.fault
def test_a_full_disk_at_a_checkpoint_names_the_newest_intact_one(dataset32, tmp_path, small_disk):
    probe = tmp_path / "probe"
    trainer.run(cfg_for(dataset32, probe, 1), log_to_stdout=False)
    (one,) = list((probe / "checkpoints").iterdir())
    size_kib = sum(f.stat().st_size for f in one.rglob("*") if f.is_file()) // 1024
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    disk = small_disk(int(size_kib * 1.5) + 64)  # room for one checkpoint, not two
    (run / "checkpoints").rmdir()
    (run / "checkpoints").symlink_to(disk)
    trainer.run(cfg_for(dataset32, run, 1), log_to_stdout=False)
    (first,) = list(disk.iterdir())
    with pytest.raises(fsutil.StorageError) as e:
        trainer.run(cfg_for(dataset32, run, 2), log_to_stdout=False)
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "step 4" in msg
    assert f"Newest intact checkpoint: {run / 'checkpoints' / first.name}" in msg
    assert [p.name for p in disk.iterdir()] == [first.name], "the failed write left nothing behind"
    small_disk.resize(disk, size_kib * 4 + 64)
    assert trainer.run(cfg_for(dataset32, run, 2), log_to_stdout=False)["global_step"] == 4


@pytest.mark.fault
def test_a_full_disk_in_collect_says_what_is_intact(done_run, small_disk):
    dest = small_disk(200)
    with pytest.raises(fsutil.StorageError) as e:  # the storage's fault: retryable, not the user's
        collect.collect(RunDir(done_run), dest / "home")
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "SHA256SUMS" in msg
    assert no_temps(dest)


def test_collect_snapshots_growing_files_and_update_refreshes_a_run_that_went_on(done_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(done_run, run, symlinks=True)
    stats = run / "stats.jsonl"
    with open(stats, "a") as f:
        f.write('{"kind": "epo')  # a line being written right now
    dest = tmp_path / "home"
    stop = threading.Event()

    def grow():
        while not stop.is_set():
            with open(run / "log.txt", "a") as f:
                f.write("a tick line from a live run\n" * 50)

    t = threading.Thread(target=grow)
    t.start()
    try:
        collect.collect(RunDir(run), dest)
    finally:
        stop.set()
        t.join()
    got = (dest / "stats.jsonl").read_bytes()
    assert stats.read_bytes().startswith(got) and got.endswith(b"\n") and not got.endswith(b'"epo\n')
    assert all(json.loads(x) for x in got.decode().splitlines())
    log = (dest / "log.txt").read_bytes()
    assert (run / "log.txt").read_bytes().startswith(log) and log.endswith(b"\n")
    sums = dict(reversed(x.split("  ", 1)) for x in (dest / "SHA256SUMS").read_text().splitlines())
    assert sums["log.txt"] == fsutil.sha256_file(dest / "log.txt")
    # The run goes on: more stats, a new report. Without --update that is a conflict, left alone.
    with open(stats, "a") as f:
        f.write('ch", "n": 1}\n')
    (run / "report" / "metrics.json").write_text('{"changed": true}\n')
    with pytest.raises(CollectError, match="--update") as e:
        collect.collect(RunDir(run), dest)
    assert "metrics.json" in str(e.value) and "stats.jsonl" in str(e.value)
    assert (dest / "stats.jsonl").read_bytes() == got
    r = collect.collect(RunDir(run), dest, update=True)
    assert r["updated"] >= 2
    for rel in ("stats.jsonl", "report/metrics.json"):
        assert (dest / rel).read_bytes() == (run / rel).read_bytes(), rel


UMASK_JOB = """
import os, sys
os.umask(int(sys.argv[1], 8))
from oasis_dcgan import config
from oasis_dcgan.launch import collect
from oasis_dcgan.prep import pack
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.training import trainer
src, work = sys.argv[2], sys.argv[3]
pack.preprocess(src, work + "/ds", config.DataConfig(resolution=32, shard_size=64))
cfg = config.load(None, [f'run_dir="{work}/run"', f'data.dataset="{work}/ds"', "train.epochs=1",
                         "train.batch_size=8", "train.max_steps_per_epoch=1"])
trainer.run(cfg, log_to_stdout=False)
collect.collect(RunDir(work + "/run"), work + "/home", include_checkpoints=True)
"""


@pytest.mark.parametrize("mask, mode", [("022", 0o644), ("002", 0o664)])
def test_what_the_suite_writes_is_as_readable_as_the_umask_allows(png_release, tmp_path, mask, mode):
    subprocess.run([sys.executable, "-c", UMASK_JOB, mask, str(png_release), str(tmp_path)], cwd=REPO, check=True)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for part in ("ds", "run", "home"):
        assert any(p.is_relative_to(tmp_path / part) for p in files), part
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files if stat.S_IMODE(p.stat().st_mode) != mode}
    assert not wrong, wrong
