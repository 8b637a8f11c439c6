"""The OASIS releases as users hold them: discs, rescans, voxel orders, slice choice, shared cases."""
import shutil

import numpy as np
import pytest

from oasis_dcgan.prep import layouts, pack, pixels, sample_data
from oasis_dcgan.prep.manifest import DataError
from oasis_dcgan.prep.reader import ShardReader
from oasis_dcgan.config import DataConfig



def metadata(ds, split):
    r = ShardReader(ds, split)
    return r.metadata(np.arange(len(r)))


@pytest.fixture(scope="module")
def raw_tree(tmp_path_factory):
    """OASIS-1 as its tarballs unpack: disc1/ and disc2/ of Analyze sessions, one subject with an
    MR2 rescan, and a NIfTI session in a third folder."""
    root = tmp_path_factory.mktemp("raw")
    sample_data.write_raw_release(root, subjects=4, seed=3, fmt="analyze", discs=2, rescans=1)
    sample_data.write_raw_release(root / "more", subjects=1, seed=4, fmt="nifti-gz")
    (src,) = [p for p in (root / "more").iterdir() if p.is_dir()]  # beside it: the sample-data marker
    dst = root / "disc3" / "OAS1_0099_MR1"
    dst.parent.mkdir()
    shutil.move(str(src), dst)
    for f in (dst / "PROCESSED" / "MPRAGE" / "T88_111").iterdir():
        f.rename(f.with_name(f.name.replace(src.name, dst.name)))
    shutil.rmtree(root / "more")
    return root


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
        for x in metadata(tmp_path / "ds", split):
            assert assign[x["case"][:-4]] == split, "every session is in its subject's split"
            seen[x["case"]] = split
    assert sorted(seen) == sessions
    assert seen[rescanned[0] + "_MR1"] == seen[rescanned[0] + "_MR2"]
    assert sum(v["subjects"] for v in m["summary"].values()) == 5
    assert sum(v["sessions"] for v in m["summary"].values()) == 6
    assert m["options"]["rescans"] == "keep" and m["options"]["orientation"].startswith("RAS")
    # seeded: the same seed gives the same split
    assert pack.plan(raw_tree, data).split_assignment == assign


def test_rescans_can_be_dropped_and_the_manifest_says_so(raw_tree, tmp_path):
    m = pack.preprocess(raw_tree, tmp_path / "ds", DataConfig(resolution=32, slices=4, rescans="drop"))
    cases = {x["case"] for split in m["splits"] for x in metadata(tmp_path / "ds", split)}
    assert len(cases) == 5 and not any(c.endswith("_MR2") for c in cases)
    assert m["ignored"]["rescans"] == 1 and m["options"]["rescans"] == "drop"


def test_a_session_unpacked_twice_is_refused_naming_both_copies(raw_tree, tmp_path):
    tree = tmp_path / "raw"
    shutil.copytree(raw_tree, tree)
    one = next((tree / "disc1").iterdir())
    shutil.copytree(one, tree / "disc2" / one.name)
    with pytest.raises(DataError, match="more than once") as e:
        pack.plan(tree, DataConfig(resolution=32))
    assert str(tree / "disc1" / one.name) in str(e.value) and str(tree / "disc2" / one.name) in str(e.value)


def test_slices_spread_over_the_brain_without_empty_ends(raw_tree, tmp_path):
    m = pack.preprocess(raw_tree, tmp_path / "ds", DataConfig(resolution=32, shard_size=64))
    assert "spread evenly" in m["options"]["slice_selection"]
    for split in m["splits"]:
        rows = metadata(tmp_path / "ds", split)
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


def test_slice_count_range_and_spacing_are_configurable():
    area = np.r_[np.zeros(10), np.full(2, 5.0), np.full(100, 100.0), np.full(3, 2.0), np.zeros(5)]
    assert pixels.choose_slices(area, 3, "", 0, 0.1) == [12, 62, 111]
    assert pixels.choose_slices(area, 4, "", 10, 0.1) == [46, 56, 66, 76]
    assert pixels.choose_slices(area, 32, "60:70", 0, 0.1) == list(range(60, 70))
    assert pixels.choose_slices(area, 2, "60:70", 0, 0.1) == [60, 69]
    with pytest.raises(DataError, match="fewer than the 200"):
        pixels.choose_slices(area, 200, "", 0, 0.1)
    with pytest.raises(DataError, match="outside the volume"):
        pixels.choose_slices(area, 4, "100:130", 0, 0.1)


def test_ras_and_lia_storage_of_one_brain_pack_identically(tmp_path):
    for fmt in ("nifti", "nifti-lia", "analyze"):
        sample_data.write_raw_release(tmp_path / fmt, subjects=1, seed=11, fmt=fmt)
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


def _session(root, name, data, zooms):
    import nibabel as nib

    d = root / name / "PROCESSED" / "MPRAGE" / "T88_111"
    d.mkdir(parents=True)
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    path = d / f"{name}_mpr_n4_anon_111_t88_masked_gfc.nii"
    nib.save(img, str(path))
    return path


def test_volumes_that_are_not_3d_or_far_from_isotropic_are_named(tmp_path):
    vol = np.zeros((20, 24, 20), np.int16)
    vol[4:16, 4:20, 4:16] = 500
    _session(tmp_path, "OAS1_0001_MR1", vol, (1, 1, 1))
    flat = _session(tmp_path, "OAS1_0002_MR1", vol, (1, 1, 3))
    movie = _session(tmp_path, "OAS1_0003_MR1", np.stack([vol, vol], axis=-1), (1, 1, 1))
    with pytest.raises(DataError) as e:
        pack.plan(tmp_path, DataConfig(resolution=32, slices=4))
    msg = str(e.value)
    assert f"{flat}: voxel sizes 1 x 1 x 3 mm are far from isotropic" in msg
    assert f"{movie}: wrong dimensionality" in msg
    assert "OAS1_0001" not in msg
    p = pack.plan(tmp_path, DataConfig(resolution=32, slices=4, max_anisotropy=3.5, skip_bad=True))
    assert len(p.units) == 2 and p.skipped[0]["path"] == str(movie)


def test_a_png_case_in_two_splits_is_refused_unless_allowed(tmp_path):
    root = sample_data.write_png_release(tmp_path / "src", cases=(2, 1, 1), slices=2, resolution=32)
    train = root / "keras_png_slices_train"
    case = sorted(train.iterdir())[0].name.split("_")[1]
    for f in train.glob(f"case_{case}_slice_*"):
        shutil.copy(f, root / "keras_png_slices_test" / f.name)
    with pytest.raises(DataError, match=f"case {case}: train, test"):
        pack.plan(tmp_path / "src", DataConfig(resolution=32))
    p = pack.plan(tmp_path / "src", DataConfig(resolution=32, allow_shared_cases=True))
    assert p.options["allow_shared_cases"] and p.summary["test"] == {"cases": 2}
