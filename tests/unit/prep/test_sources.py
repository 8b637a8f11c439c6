"""The OASIS releases as users hold them: discs, rescans, voxel orders, slice choice, shared cases."""

import shutil

import numpy as np
import pytest

from oasis_dcgan.prep import pack, pixels, sample_data
from oasis_dcgan.prep.manifest import DataError
from oasis_dcgan.config import DataConfig

from tests.conftest import shard_metadata


def test_rescans_can_be_dropped_and_the_manifest_says_so(raw_tree, tmp_path):
    m = pack.preprocess(raw_tree, tmp_path / "ds", DataConfig(resolution=32, slices=4, rescans="drop"))
    cases = {x["case"] for split in m["splits"] for x in shard_metadata(tmp_path / "ds", split)}
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


def test_a_volume_layout_registered_in_one_place_packs_shards_sized_by_its_images_per_input(tmp_path, monkeypatch):
    """A throwaway layout, registered here only: data.layout takes its name, and packing sizes shards by
    the images one of its inputs gives (2 volumes of 6 slices a shard of 13 images, never 13 volumes)."""
    from oasis_dcgan.prep import layouts, manifest

    monkeypatch.setattr(layouts, "LAYOUTS", dict(layouts.LAYOUTS))
    slices = 6

    @layouts.register_layout
    class NpyStacks(layouts.Layout):
        name, doc, looks_for = "npy-stacks", "a stack of 32x32 slices per .npy file", "*.stack.npy files"
        volumes = True

        def find(self, src):
            return src if list(src.glob("*.stack.npy")) else None

        def scan(self, root, data):
            return layouts.Scan(units=[layouts.Unit("train", str(p), p.name.split(".")[0])
                                       for p in sorted(root.glob("*.stack.npy"))])

        def check(self, path, options):
            return None if np.load(path).shape == (slices, 32, 32) else "not a stack of 32x32 slices"

        def read(self, unit, resolution, options):
            return [(i, s) for i, s in enumerate(np.load(unit.path))], ""

        def images_per_unit(self, data):
            return slices

    src, out = tmp_path / "stacks", tmp_path / "ds"
    src.mkdir()
    rng = np.random.default_rng(0)
    for subject in range(5):
        np.save(src / f"subject{subject}.stack.npy", rng.integers(0, 256, (slices, 32, 32), dtype=np.uint8))
    m = pack.preprocess(src, out, DataConfig(layout=NpyStacks.name, resolution=32, shard_size=2 * slices + 1))
    assert m["layout"] == NpyStacks.name and m["splits"]["train"]["count"] == 5 * slices
    assert [s["count"] for s in m["splits"]["train"]["shards"]] == [2 * slices, 2 * slices, slices]
    assert manifest.verify(out) == []
