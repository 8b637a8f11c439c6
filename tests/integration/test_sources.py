"""The OASIS releases as users hold them: discs, rescans, voxel orders, slice choice, shared cases."""

import numpy as np

from oasis_dcgan.prep import layouts, pack, pixels, sample_data
from oasis_dcgan.prep.reader import ShardReader
from oasis_dcgan.config import DataConfig

from tests.conftest import shard_metadata


def sessions_on_disk(root):
    return sorted(p.name for d in root.iterdir() if d.is_dir() for p in d.iterdir())


def test_every_disc_is_read_and_a_subjects_sessions_share_a_split(raw_tree, tmp_path):
    assert sorted(p.name for p in raw_tree.iterdir() if p.is_dir()) == ["disc1", "disc2", "disc3"]
    assert layouts.detect_layout(raw_tree) == ("oasis-raw", raw_tree)
    data = DataConfig(resolution=32, shard_size=64, split_fractions=[0.6, 0.2, 0.2], split_seed=7)
    m = pack.preprocess(raw_tree, tmp_path / "ds", data)
    sessions = sessions_on_disk(raw_tree)
    assert len(sessions) == 6 and sum(m["counts"].values()) == 6 * 32
    rescanned = [s[:-4] for s in sessions if s.endswith("_MR2")]
    assert len(rescanned) == 1
    assign = m["split_assignment"]
    assert sorted(assign) == sorted({s[:-4] for s in sessions}), "the assignment is by subject"
    seen = {}
    for split in m["splits"]:
        for x in shard_metadata(tmp_path / "ds", split):
            assert assign[x["case"][:-4]] == split, "every session is in its subject's split"
            seen[x["case"]] = split
    assert sorted(seen) == sessions
    assert seen[rescanned[0] + "_MR1"] == seen[rescanned[0] + "_MR2"]
    assert sum(v["subjects"] for v in m["summary"].values()) == 5
    assert sum(v["sessions"] for v in m["summary"].values()) == 6
    assert m["options"]["rescans"] == "keep" and m["options"]["orientation"].startswith("RAS")
    # seeded: the same seed gives the same split
    assert pack.plan(raw_tree, data).split_assignment == assign


def test_slices_spread_over_the_brain_without_empty_ends(raw_tree, tmp_path):
    m = pack.preprocess(raw_tree, tmp_path / "ds", DataConfig(resolution=32, shard_size=64))
    assert "spread evenly" in m["options"]["slice_selection"]
    for split in m["splits"]:
        rows = shard_metadata(tmp_path / "ds", split)
        for case in {x["case"] for x in rows}:
            ks = [x["slice"] for x in rows if x["case"] == case]
            assert ks == m["volume_slices"][case]
            source = rows[[x["case"] for x in rows].index(case)]["source"]
            vol = pixels.canonical_volume(source, DataConfig().max_anisotropy)
            area = (vol > 0).sum(axis=(0, 1))
            brain = np.flatnonzero(area)
            gaps = np.diff(ks)
            assert len(ks) == 32 and gaps.min() >= 1 and gaps.max() - gaps.min() <= 1, "evenly spaced"
            assert ks[-1] - ks[0] >= 0.6 * (brain[-1] - brain[0]), "spans most of the brain, not a 3 cm slab"
            assert area[ks[0]] >= 0.1 * area.max() and area[ks[-1]] >= 0.1 * area.max(), "no near-empty end slice"


def test_ras_and_lia_storage_of_one_brain_pack_identically(tmp_path):
    for fmt in ("nifti", "nifti-lia", "analyze"):
        sample_data.write_raw_release(tmp_path / fmt, subjects=1, rng_seed=11, fmt=fmt)
        pack.preprocess(tmp_path / fmt, tmp_path / f"ds-{fmt}",
                        DataConfig(resolution=32, slices=8, split_fractions=[1.0, 0.0, 0.0]))
    import nibabel as nib

    (lia,) = (tmp_path / "nifti-lia").rglob("*.nii")
    assert nib.aff2axcodes(nib.load(lia).affine) == ("L", "I", "A")
    ref = ShardReader(tmp_path / "ds-nifti", "train")
    for fmt in ("nifti-lia", "analyze"):
        other = ShardReader(tmp_path / f"ds-{fmt}", "train")
        np.testing.assert_array_equal(other.read(np.arange(8)), ref.read(np.arange(8)))
        assert [x["slice"] for x in other.metadata(np.arange(8))] == [x["slice"] for x in ref.metadata(np.arange(8))]
