"""Preprocessing: layouts, order, splits, bad input, idempotence, crash safety, verify, reader sharding."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from oasis_dcgan import claimfile
from oasis_dcgan.prep import datalock, info, layouts, manifest, pack, sample_data
from oasis_dcgan.prep.manifest import DataError
from oasis_dcgan.prep.reader import ShardReader, Stream, epoch_budget, epoch_permutation, train_dataset
from oasis_dcgan.config import DataConfig

from tests.conftest import REPO, log_lines


def all_metadata(ds, split="train"):
    r = ShardReader(ds, split)
    return r.metadata(np.arange(len(r)))


def test_png_release_counts_natural_order_and_seg_excluded(dataset32, png_release):
    m = manifest.load_manifest(dataset32)
    assert m["layout"] == "oasis-png"
    assert m["counts"] == {"train": 6 * 32, "validate": 2 * 32, "test": 2 * 32}
    assert m["ignored"]["segmentation_masks"] == 10 * 32
    meta = all_metadata(dataset32)
    keys = [(int(x["case"]), x["slice"]) for x in meta]
    assert keys == sorted(keys), "order is case, then slice number"
    assert [x["slice"] for x in meta[:12]] == list(range(12))  # slice_10 after slice_9, not after slice_1
    on_disk = sorted({int(p.name.split("_")[1]) for p in (png_release / "keras_png_slices_data" /
                                                          "keras_png_slices_train").iterdir()})
    assert sorted({int(x["case"]) for x in meta}) == on_disk  # every case, gaps and all
    assert not any("seg_" in x["source"] for x in meta)
    assert all(x["source"].endswith(".nii.png") for x in meta)
    assert all(int(x["case"]) >= 402 for x in all_metadata(dataset32, "validate"))


def test_nested_release_is_found(tmp_path):
    sample_data.write_png_release(tmp_path / "src", cases=(1, 1, 1), slices=4, resolution=32, nested=True)
    layout, root = layouts.detect_layout(tmp_path / "src")
    assert layout == "oasis-png"
    assert root.name == "keras_png_slices_data" and root.parent.name == "keras_png_slices_data"


def test_pixels_are_packed_exactly_and_scaled_like_the_seed(png_release, tmp_path):
    import imageio.v3 as iio

    m = pack.preprocess(png_release, tmp_path / "ds", DataConfig(resolution=64, shard_size=1000))
    r = ShardReader(tmp_path / "ds", "train")
    meta = r.metadata([5])[0]
    np.testing.assert_array_equal(r.read([5])[0], iio.imread(meta["source"]))
    assert m["resolution"] == 64
    from oasis_dcgan.imaging import to_uint8, to_unit

    assert to_unit(np.array([0, 255], np.uint8)).tolist() == [-1.0, 1.0]
    px = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(to_unit(px)), px)  # the two mappings are exact inverses


def test_area_resampling_to_lower_resolution(png_release, tmp_path):
    import imageio.v3 as iio

    pack.preprocess(png_release, tmp_path / "ds", DataConfig(resolution=32, shard_size=1000))
    r = ShardReader(tmp_path / "ds", "train")
    src = iio.imread(r.metadata([7])[0]["source"]).astype(np.float64)
    block_mean = src.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    assert np.abs(r.read([7])[0].astype(np.float64) - block_mean).max() <= 0.5 + 1e-9


def _folder_corpus(root: Path):
    import imageio.v3 as iio
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    iio.imwrite(root / "gray_2.png", rng.integers(0, 255, (40, 48), dtype=np.uint8))
    iio.imwrite(root / "gray_10.png", rng.integers(0, 255, (48, 48), dtype=np.uint8))
    iio.imwrite(root / "rgb.png", rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    iio.imwrite(root / "rgba.png", rng.integers(0, 255, (48, 48, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 4095, (32, 32)).astype(np.uint16)).save(root / "deep.tif")  # 12 bits in 16
    iio.imwrite(root / "photo.jpg", rng.integers(0, 255, (48, 48), dtype=np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_layout_converts_and_counts(tmp_path):
    src = _folder_corpus(tmp_path / "imgs")
    m = pack.preprocess(src, tmp_path / "ds", DataConfig(resolution=32))
    assert m["layout"] == "folder" and m["counts"] == {"train": 6}
    assert m["converted"] == {"converted_to_gray": 2, "scaled_to_8bit": 1}
    assert m["ignored"]["non_image_files"] == 1
    names = [Path(x["source"]).name for x in all_metadata(tmp_path / "ds")]
    assert names.index("gray_2.png") < names.index("gray_10.png")
    deep = ShardReader(tmp_path / "ds").read([names.index("deep.tif")])[0]
    assert deep.max() == 255 and deep.min() == 0, "its own range, stretched to 8 bits"


def _bad_corpus(root: Path) -> dict:
    from PIL import Image

    src = _folder_corpus(root)
    good = (src / "gray_10.png").read_bytes()
    (src / "empty.png").write_bytes(b"")
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    frames = [Image.fromarray(np.zeros((16, 16), np.uint8)) for _ in range(3)]
    frames[0].save(src / "volume.tif", save_all=True, append_images=frames[1:])
    return {"empty.png": "zero bytes", "truncated.png": "unreadable", "garbage.png": "unreadable",
            "volume.tif": "frames"}


def test_bad_input_fails_before_writing_and_names_every_file(tmp_path):
    expected = _bad_corpus(tmp_path / "bad")
    out = tmp_path / "ds"
    with pytest.raises(DataError) as e:
        pack.preprocess(tmp_path / "bad", out, DataConfig(resolution=32))
    msg = str(e.value)
    for name, reason in expected.items():
        line = next(ln for ln in msg.splitlines() if name in ln)
        assert reason in line, line
    assert "nothing was written" in msg
    assert not out.exists() or not any(out.iterdir())


def test_skip_bad_records_them_in_the_manifest(tmp_path):
    expected = _bad_corpus(tmp_path / "bad")
    m = pack.preprocess(tmp_path / "bad", tmp_path / "ds", DataConfig(resolution=32, skip_bad=True))
    assert m["counts"]["train"] == 6
    assert {Path(s["path"]).name for s in m["skipped"]} == set(expected)
    assert all(s["reason"] for s in m["skipped"])


def test_cli_bad_input_exit_code_and_message(tmp_path):
    _bad_corpus(tmp_path / "bad")
    r = subprocess.run([sys.executable, "-m", "jobs.preprocess", str(tmp_path / "bad"), str(tmp_path / "ds"),
                        "--resolution", "32"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0
    assert "truncated.png" in r.stderr and "empty.png" in r.stderr


@pytest.mark.parametrize("case, needle", [("missing", "no such directory"), ("empty", "empty"),
                                          ("unrecognised", "no recognised layout")])
def test_unusable_source_directories(tmp_path, case, needle):
    src = tmp_path / "src"
    if case != "missing":
        src.mkdir()
    if case == "unrecognised":
        (src / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match=needle) as e:
        pack.plan(src, DataConfig())
    assert str(src) in str(e.value)
    if case == "unrecognised":
        assert "keras_png_slices_train" in str(e.value) and "OAS1_" in str(e.value)


def test_rerun_is_idempotent(png_release, tmp_path):
    out = tmp_path / "ds"
    m1 = pack.preprocess(png_release, out, DataConfig(resolution=32, shard_size=50))
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    m2 = pack.preprocess(png_release, out, DataConfig(resolution=32, shard_size=50))
    assert m1["splits"] == m2["splits"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == mtimes, "every shard was kept, none rewritten"


def test_a_task_leaves_other_writers_temp_files_alone(png_release, tmp_path):
    out = tmp_path / "ds"
    p = pack.start(png_release, out, DataConfig(resolution=32, shard_size=50))
    in_flight = out / ".plan.json.abcd1234.tmp"  # another array task, mid-way through writing the plan
    in_flight.write_text("{")
    pack.pack_task(out, 1, 2, p.token)
    assert in_flight.exists()
    pack.pack_task(out, 0, 2, p.token)
    pack.seal(out, p.token)  # all tasks done: now leftovers go
    assert not in_flight.exists()


@pytest.mark.fault
def test_one_packing_at_a_time_writes_a_dataset_directory(png_release, tmp_path):
    """A second packing of a directory is refused naming the first and writes nothing; a packing
    whose process is gone is taken over; the replaced packing's tasks then write nothing."""
    out, data = tmp_path / "ds", DataConfig(resolution=32, shard_size=50)
    first = pack.start(png_release, out, data)  # planned and locked by this (live) process
    with pytest.raises(DataError, match=f"being packed by packing {first.token}"):
        pack.preprocess(png_release, out, data)
    assert not list(out.glob("*.h5")), "the refused packing wrote nothing"
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = out / datalock.LOCK
    lock.write_text(json.dumps({**json.loads(lock.read_text()), "pid": gone.pid, "pid_start": None}))
    with log_lines() as said:
        m = pack.preprocess(png_release, out, data)
    assert any(f"taking over {lock}" in line and "is gone" in line for line in said), said
    assert sum(m["counts"].values()) == len(first.units) and not lock.exists(), "sealed, and the lock released"
    with pytest.raises(DataError, match=f"packing {first.token} was replaced"):
        pack.pack_task(out, 0, 1, first.token)
    assert not manifest.verify(out)


@pytest.mark.fault
def test_array_tasks_of_one_packing_share_the_lock_and_a_queued_packing_goes_stale(png_release, tmp_path):
    out, data = tmp_path / "ds", DataConfig(resolution=32, shard_size=200)
    a = pack.start(png_release, out, data, token="array-7", queued=True)
    b = pack.start(png_release, out, data, token="array-7", queued=True)  # another task: same plan
    assert a == b
    with pytest.raises(DataError, match="being packed by packing array-7"):
        pack.start(png_release, out, data, token="array-8", queued=True)
    old = time.time() - datalock.BY_AGE.stale_after_s - 60  # its jobs died long ago: nothing refreshed the lock
    os.utime(out / datalock.LOCK, (old, old))
    c = pack.start(png_release, out, data, token="array-8", queued=True)
    assert c.token == "array-8"
    with pytest.raises(DataError, match="packing array-7 was replaced"):
        pack.seal(out, "array-7")


@pytest.mark.fault
def test_a_queued_packing_whose_jobs_slurm_still_has_never_goes_stale(png_release, tmp_path):
    """The scheduler's word, not age, decides for a packing that names its jobs (here the
    scheduler's answer is a stand-in; tests/cluster asks the real one)."""
    out, data = tmp_path / "ds", DataConfig(resolution=32, shard_size=200)
    pack.start(png_release, out, data, token="array-7", queued=True)
    datalock.name_jobs(out, "array-7", ["4242", "4243"])
    old = time.time() - 10 * datalock.BY_AGE.stale_after_s  # hours in a busy queue
    os.utime(out / datalock.LOCK, (old, old))
    asked = []
    queue = {"alive": True}

    def jobs_alive(ids):
        asked.append(list(ids))
        return queue["alive"]

    slurm = claimfile.Liveness(datalock.BY_AGE.stale_after_s, jobs_alive)
    with pytest.raises(DataError, match="being packed by packing array-7"):
        pack.start(png_release, out, data, token="array-8", queued=True, liveness=slurm)
    assert asked == [["4242", "4243"]]
    queue["alive"] = False  # cancelled
    with log_lines() as said:
        assert pack.start(png_release, out, data, token="array-8", queued=True, liveness=slurm).token == "array-8"
    assert any("Slurm job(s) 4242, 4243 have ended" in line for line in said), said


def test_shards_are_byte_reproducible(png_release, tmp_path):
    a = pack.preprocess(png_release, tmp_path / "a", DataConfig(resolution=32, shard_size=50))
    b = pack.preprocess(png_release, tmp_path / "b", DataConfig(resolution=32, shard_size=50))
    assert a["splits"] == b["splits"]


def test_verify_catches_a_flipped_byte(png_release, tmp_path):
    out = tmp_path / "ds"
    pack.preprocess(png_release, out, DataConfig(resolution=32, shard_size=100))
    assert manifest.verify(out) == []
    shard = sorted(out.glob("train-*.h5"))[0]
    b = bytearray(shard.read_bytes())
    b[len(b) // 2] ^= 0x01
    shard.write_bytes(bytes(b))
    problems = manifest.verify(out)
    assert len(problems) == 1 and shard.name in problems[0] and "sha256" in problems[0]
    r = subprocess.run([sys.executable, "-m", "oasis_dcgan.cli", "dataset", "verify", str(out)], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 1 and shard.name in r.stderr


def test_dataset_info_writes_a_contact_sheet(dataset32, tmp_path):
    import imageio.v3 as iio

    text = info.info(dataset32, sheet=tmp_path / "sheet.png")
    assert "train" in text and "192" in text and "segmentation_masks: 320" in text
    img = iio.imread(tmp_path / "sheet.png")
    assert img.std() > 10


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_sharding_is_disjoint_and_covers_the_epoch(dataset32, world):
    """Every rank's batches from the training reader itself, traced back to indices by their pixels."""
    reader = ShardReader(dataset32, "train")
    n, bs, seed, epoch = len(reader), 5, 5, 2
    index_of = {img.tobytes(): i for i, img in enumerate(reader.read(np.arange(n)))}
    assert len(index_of) == n, "the sample images are all distinct, so pixels identify an index"
    budget = epoch_budget(n, bs)
    assert budget == 190, "a remainder smaller than one per-rank batch is left out, for any world size"
    seen, schedules = [], []
    for rank in range(world):
        ds, steps = train_dataset(dataset32, Stream(seed, bs, epoch, rank, world), scaled=False)
        elements = [(images.numpy()[..., 0], slots.numpy()) for images, slots in ds]
        assert len(elements) == steps == -(-budget // (bs * world))
        for images, slots in elements:
            mine = slots[rank]
            assert all(index_of[img.tobytes()] == i for img, i in zip(images, mine) if i >= 0), \
                "each image is the one its slot names"
            seen += [i for i in mine if i >= 0]
        schedules.append(np.stack([slots for _, slots in elements]))
    assert all(np.array_equal(schedules[0], s) for s in schedules), "every rank sees the same global schedule"
    assert len(seen) == len(set(seen)) == budget, "no image twice in an epoch, across ranks"
    assert set(seen) == set(epoch_permutation(n, seed, epoch)[:budget].tolist())
    assert not np.array_equal(epoch_permutation(n, seed, 1), epoch_permutation(n, seed, 2))


def test_reader_resumes_at_an_image_with_another_world_size(dataset32):
    """Stop after 3 steps of 2 ranks x 8, go on with 1 rank: it starts at image 48, the next unseen."""
    def indices(ds, rank):
        return [i for _, slots in ds for i in slots.numpy()[rank] if i >= 0]

    full, steps = train_dataset(dataset32, Stream(rng_seed=1, epoch=3, batch_size=8, rank=0, world_size=1))
    full_idx = indices(full, 0)
    assert steps == 24 and len(full_idx) == 192
    part, rest = train_dataset(dataset32, Stream(rng_seed=1, epoch=3, batch_size=8, start_image=48))
    assert rest == 18 and indices(part, 0) == full_idx[48:]
    first, _ = train_dataset(dataset32, Stream(rng_seed=1, epoch=3, batch_size=8, rank=1, world_size=2))
    images, slots = next(iter(first))
    assert images.shape == (8, 32, 32, 1) and images.numpy().min() >= -1 and images.numpy().max() <= 1
    assert slots.numpy()[1].tolist() == full_idx[8:16], "rank 1 of 2 takes the second batch of a step"
    # One stream across epoch ends: the resumed epoch's rest, then whole epochs with their own order.
    stream, total = train_dataset(dataset32, Stream(rng_seed=1, epoch=3, batch_size=8, start_image=48, epochs=3,
                                                  later_budget=64))
    next_epoch, _ = train_dataset(dataset32, Stream(rng_seed=1, epoch=4, batch_size=8, budget=64))
    assert total == 18 + 8 + 8
    streamed = indices(stream, 0)
    assert streamed[:144] == full_idx[48:] and streamed[144:208] == indices(next_epoch, 0)
    n = len(ShardReader(dataset32))
    assert streamed[208:] == epoch_permutation(n, 1, 5)[:64].tolist(), "each epoch its own order"
