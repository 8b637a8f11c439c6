"""Preprocessing: layouts, order, splits, bad input, idempotence, crash safety, verify, reader sharding."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from oasis_dcgan import fsutil
from oasis_dcgan.prep import manifest, pack
from oasis_dcgan.prep.manifest import DataError
from oasis_dcgan.config import DataConfig

from tests.conftest import REPO


def test_kill_9_during_packing_then_rerun_completes_identically(png_release, tmp_path):
    ref = pack.preprocess(png_release, tmp_path / "ref", DataConfig(resolution=64, shard_size=8))
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "jobs.preprocess", str(png_release), str(out), "--resolution", "64",
           "--shard-size", "8"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.h5"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = list(out.glob("*.h5"))
    assert 3 <= len(finished) < 40, "killed mid-way"
    assert not (out / "manifest.json").exists()
    # whatever is visible under a shard name is complete
    for f in finished:
        rec = json.loads((out / pack.TASK_DIR / (f.name + ".json")).read_text()) \
            if (out / pack.TASK_DIR / (f.name + ".json")).exists() else None
        if rec:
            assert fsutil.sha256_file(f) == rec["sha256"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = manifest.load_manifest(out)
    assert m["splits"] == ref["splits"], "byte-identical shards to an uninterrupted run"
    assert not list(out.glob(".*.tmp"))


def test_a_damaged_shard_stops_training_before_any_step_naming_it(dataset32, tmp_path):
    from oasis_dcgan import config
    from oasis_dcgan.training import trainer

    ds = tmp_path / "ds"
    shutil.copytree(dataset32, ds)
    shard = sorted(ds.glob("train-*.h5"))[1]
    good = shard.read_bytes()

    def train(*extra):
        cfg = config.load(None, [f'run_dir="{tmp_path / "run"}"', f'data.dataset="{ds}"', "train.epochs=1",
                                 "train.batch_size=8", "train.max_steps_per_epoch=2", *extra])
        return trainer.run(cfg, log_to_stdout=False)

    shard.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk or a killed copy
    with pytest.raises(DataError, match=f"{shard}: {len(good) // 2} bytes, the manifest recorded {len(good)}"):
        train()
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
    # One flipped pixel keeps the size and the header: only the hash sees it, on request.
    entry = next(e for e in manifest.load_manifest(ds)["splits"]["train"]["shards"] if e["file"] == shard.name)
    b = bytearray(good)
    b[entry["images_offset"] + 100] ^= 0x01
    shard.write_bytes(bytes(b))
    assert manifest.verify(ds, full=False) == []
    with pytest.raises(DataError, match=f"{shard}: sha256 mismatch"):
        train("train.verify_data=true")
    r = subprocess.run([sys.executable, "-m", "jobs.train", str(ds), str(tmp_path / "run2"), "--verify-data",
                        "--executor", "inprocess", "--epochs", "1"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and f"{shard}: sha256 mismatch" in r.stderr
    shard.write_bytes(good)
    assert train("train.verify_data=true")["global_step"] == 2
