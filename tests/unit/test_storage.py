"""Shared storage as it is: full disks, group-readable files, and collecting a run that goes on."""

import pytest

from oasis_dcgan import fsutil
from oasis_dcgan.prep import manifest, pack
from oasis_dcgan.config import DataConfig

from tests.conftest import no_temps


@pytest.mark.fault
def test_a_full_disk_in_preprocess_says_what_is_intact_and_a_rerun_finishes(png_release, tmp_path, small_disk):
    pack.preprocess(png_release, tmp_path / "full", DataConfig(resolution=32, shard_size=32))
    need = sum(f.stat().st_size for f in (tmp_path / "full").rglob("*") if f.is_file()) // 1024
    disk = small_disk(need * 6 // 10)
    out = disk / "ds"
    with pytest.raises(fsutil.StorageError) as e:  # the storage's fault: retryable, not the input's
        pack.preprocess(png_release, out, DataConfig(resolution=32, shard_size=32))
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and str(out) in msg and "is complete and kept" in msg
    assert no_temps(out)
    kept = sorted(out.glob("*.h5"))
    assert kept, "some shards fitted before the disk filled"
    for shard in kept:  # every shard that is there is whole and matches its task's record
        rec = fsutil.read_json(out / pack.TASK_DIR / (shard.name + ".json"))
        assert fsutil.sha256_file(shard) == rec["sha256"]
    small_disk.resize(disk, need * 2)
    m = pack.preprocess(png_release, out, DataConfig(resolution=32, shard_size=32))
    assert m["counts"] == {"train": 192, "validate": 64, "test": 64} and manifest.verify(out) == []


@pytest.mark.fault
def test_a_failed_shard_write_never_removes_the_complete_shard_already_there(png_release, small_disk):
    disk = small_disk(4096)
    out = disk / "ds"
    pack.preprocess(png_release, out, DataConfig(resolution=32, shard_size=64))
    shard = sorted(out.glob("train-*.h5"))[0]
    before = fsutil.sha256_file(shard)
    record = out / pack.TASK_DIR / (shard.name + ".json")
    fsutil.write_json(record, {**fsutil.read_json(record), "inputs_hash": "another writer's"})  # to be rewritten
    rerun = pack.start(png_release, out, DataConfig(resolution=32, shard_size=64))
    with open(disk / "filler", "wb", buffering=0) as f:  # the disk fills up, to its last block
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
    with pytest.raises(fsutil.StorageError, match="is complete and kept") as e:
        pack.pack_task(out, 0, 1, rerun.token)
    assert shard.name in str(e.value), "the failed write is the rewrite of that shard"
    assert shard.is_file() and fsutil.sha256_file(shard) == before, "the complete shard is still there"
    assert no_temps(out)
