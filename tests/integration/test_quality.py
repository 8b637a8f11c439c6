"""The quality verdicts against independent computations: copies are flagged and real unseen
brains are not, one image repeated is less varied, the linear anchor is a PCA, intervals resample
cases; and `evaluate` on an array and on a folder of PNGs."""

import json

import numpy as np
import pytest

from oasis_dcgan.imaging import to_unit
from oasis_dcgan.post import anchors, evaluate, quality, samples
from oasis_dcgan.prep.reader import ShardReader

from tests.conftest import copying_of, packed_brains, small_metrics, with_copies


@pytest.fixture(scope="module")
def new_brains(tmp_path_factory):
    """Brains from the same process that neither split of held_out_rich holds: real and unseen."""
    return packed_brains(tmp_path_factory, "new", (8, 1, 1), rng_seed=11)


@pytest.mark.parametrize("share", [0.05, 0.10])
def test_verbatim_copies_among_generated_images_are_flagged(held_out_rich, share):
    train = to_unit(ShardReader(held_out_rich, "train").read(np.arange(192)))
    generated = anchors.fit_linear(train, 20).sample(260, rng_seed=1)   # a generator that copies nothing
    clean = copying_of(generated, held_out_rich)
    assert clean["flagged"] is False and clean["count"] == 0
    mixed, k = with_copies(generated, held_out_rich, share)
    got = copying_of(mixed, held_out_rich)
    assert got["flagged"] is True and got["verdict"] == quality.SIGN_OF_COPYING
    assert got["count"] == k and got["share"] == pytest.approx(k / 260) and got["ci95"][0] < k / 260 < got["ci95"][1]
    assert got["held_out_share"] < got["ci95"][0]


def test_real_unseen_brains_are_not_flagged(held_out_rich, new_brains):
    real = to_unit(ShardReader(new_brains, "train").read(np.arange(256)))
    got = copying_of(real, held_out_rich)
    assert got["flagged"] is False and got["verdict"] == quality.NO_SIGN, got


def test_evaluate_an_array_and_a_png_folder(held_out_rich, tmp_path):
    test = ShardReader(held_out_rich, "test")
    pixels = test.read(np.arange(40))
    np.save(tmp_path / "real.npy", pixels)
    samples.write_pngs(to_unit(pixels), tmp_path / "pngs")
    m = small_metrics(diversity_samples=16)
    got = evaluate.evaluate(tmp_path / "real.npy", held_out_rich, tmp_path / "a", m)
    on_disk = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for d in (got, on_disk):
        assert isinstance(d["copying"]["flagged"], bool) and {"share", "held_out_share"} <= set(d["copying"])
        assert len(d["nn_ssim"]["ci95"]) == 2 and len(d["diversity"]["ci95"]) == 2
        assert d["diversity"]["verdict"] in (quality.LESS_VARIED, quality.AS_VARIED, quality.MORE_VARIED)
        assert all(isinstance(d["anchors"][a]["nn_ssim"]["median"], float) for a in ("held_out", "blurred", "linear"))
    assert "On the ladder of anchors" in (tmp_path / "a" / "report.md").read_text()
    png = evaluate.evaluate(tmp_path / "pngs", held_out_rich, tmp_path / "b", m)
    assert png["nn_ssim"]["median"] == pytest.approx(got["nn_ssim"]["median"], abs=1e-6)  # the same pixels
