"""The quality verdicts against independent computations: copies are flagged and real unseen
brains are not, one image repeated is less varied, the linear anchor is a PCA, intervals resample
cases; and `evaluate` on an array and on a folder of PNGs."""
import json

import numpy as np
import pytest

from oasis_dcgan import config
from oasis_dcgan.config import DataConfig
from oasis_dcgan.imaging import to_uint8, to_unit
from oasis_dcgan.post import anchors, checks, evaluate, intervals, quality, samples
from oasis_dcgan.prep.reader import ShardReader



def _packed(tmp_path_factory, name: str, cases, seed: int):
    from oasis_dcgan.prep import pack, sample_data

    src = tmp_path_factory.mktemp(f"{name}-src")
    sample_data.write_png_release(src, cases=cases, slices=32, resolution=64, seed=seed)
    out = tmp_path_factory.mktemp(name)
    pack.preprocess(src, out, DataConfig(resolution=32, shard_size=256))
    return out


@pytest.fixture(scope="module")
def held_out_rich(tmp_path_factory):
    """6 training brains and 6 each in validate and test: 192 held-out images a split, enough to see 5%."""
    return _packed(tmp_path_factory, "rich", (6, 6, 6), seed=3)


@pytest.fixture(scope="module")
def new_brains(tmp_path_factory):
    """Brains from the same process that neither split of held_out_rich holds: real and unseen."""
    return _packed(tmp_path_factory, "new", (8, 1, 1), seed=11)


def _metrics(**kw):
    return config.load(None, [f"metrics.{k}={v}" for k, v in {"diversity_samples": 24, "nn_samples": 64,
                                                              **kw}.items()]).metrics


def _with_copies(images, dataset, share, seed=0):
    """`images` with a share of them replaced by verbatim training slices."""
    train = ShardReader(dataset, "train")
    rng = np.random.default_rng(seed)
    k = int(round(share * len(images)))
    out = images.copy()
    out[rng.choice(len(images), k, replace=False)] = to_unit(train.read(np.sort(rng.choice(len(train), k, False))))
    return out, k


def _copying(images, dataset):
    ctx = checks.Context(images, "test", str(dataset), _metrics())
    return checks.copying(ctx)


@pytest.mark.parametrize("share", [0.05, 0.10])
def test_verbatim_copies_among_generated_images_are_flagged(held_out_rich, share):
    train = to_unit(ShardReader(held_out_rich, "train").read(np.arange(192)))
    generated = anchors.fit_linear(train, 20).sample(260, seed=1)   # a generator that copies nothing
    clean = _copying(generated, held_out_rich)
    assert clean["flagged"] is False and clean["count"] == 0
    mixed, k = _with_copies(generated, held_out_rich, share)
    got = _copying(mixed, held_out_rich)
    assert got["flagged"] is True and got["verdict"] == quality.SIGN_OF_COPYING
    assert got["count"] == k and got["share"] == pytest.approx(k / 260) and got["ci95"][0] < k / 260 < got["ci95"][1]
    assert got["held_out_share"] < got["ci95"][0]


@pytest.mark.parametrize("share", [0.05, 0.10])
def test_verbatim_copies_among_held_out_images_are_flagged(held_out_rich, share):
    test = ShardReader(held_out_rich, "test")
    mixed, k = _with_copies(to_unit(test.read(np.arange(len(test)))), held_out_rich, share, seed=2)
    got = _copying(mixed, held_out_rich)
    assert got["flagged"] is True and got["count"] >= k


def test_real_unseen_brains_are_not_flagged(held_out_rich, new_brains):
    real = to_unit(ShardReader(new_brains, "train").read(np.arange(256)))
    got = _copying(real, held_out_rich)
    assert got["flagged"] is False and got["verdict"] == quality.NO_SIGN, got


def test_with_one_held_out_split_each_case_is_read_against_the_others():
    nn = np.array([0.80, 0.82, 0.90, 0.70, 0.85, 0.88, 0.60, 0.65, 0.95])
    cases = np.repeat(["a", "b", "c"], 3)
    held = quality.Profile(nn=nn, nearest=np.zeros(9, int), brain=nn, pairs=None, cases=cases)
    got = quality.left_out_share(held)
    # a against max(b, c) = 0.95: none; b against 0.95: none; c against 0.90: 0.95 only
    assert got["count"] == 1 and got["n"] == 9


def test_one_image_repeated_is_less_varied_and_real_sets_are_as_varied(held_out_rich):
    reader = ShardReader(held_out_rich, "train")
    real = to_unit(reader.read(np.arange(len(reader))))
    cases = np.array([m["case"] for m in reader.metadata(np.arange(len(reader)))])
    base = quality.pairs_only(real, 24, seed=0, cases=cases)
    one = quality.pairs_only(np.stack([real[5]] * 24), 24, seed=0)
    assert quality.diversity(one, base, seed=0)["verdict"] == quality.LESS_VARIED
    other = quality.pairs_only(real, 24, seed=1, cases=cases)
    same = quality.diversity(other, base, seed=0)
    assert same["verdict"] == quality.AS_VARIED and same["ci95"][0] < 1 < same["ci95"][1]
    noise = quality.pairs_only(np.random.default_rng(0).uniform(-1, 1, (24, 32, 32)).astype(np.float32), 24, 0)
    assert quality.diversity(noise, base, seed=0)["verdict"] == quality.MORE_VARIED


def test_the_linear_anchor_is_a_pca_of_the_training_images():
    rng = np.random.default_rng(0)
    images = np.tanh(rng.normal(size=(60, 12, 12)) + np.linspace(-1, 1, 12)).astype(np.float32)
    model = anchors.fit_linear(images, 5)
    x = images.reshape(60, -1).astype(np.float64)
    u, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(model.mean, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(model.scales, s[:5] / np.sqrt(59), rtol=1e-8)
    np.testing.assert_allclose(np.abs((model.components * vt[:5]).sum(1)), 1.0, rtol=1e-8)  # same axes, any sign
    z = np.random.default_rng(3).standard_normal((4, 5))
    signs = np.sign((model.components * vt[:5]).sum(1))
    want = np.clip(x.mean(0) + (z * s[:5] / np.sqrt(59) * signs) @ vt[:5], -1, 1).reshape(4, 12, 12)
    np.testing.assert_allclose(model.sample(4, seed=3), want, atol=1e-5)


def test_bootstrap_by_case_is_wider_than_by_image_when_cases_differ():
    values = np.repeat([0.6, 0.7, 0.8, 0.9], 30) + np.random.default_rng(0).normal(0, 0.01, 120)
    by_image = intervals.bootstrap(values, seed=0)
    by_case = intervals.bootstrap(values, groups=np.repeat(np.arange(4), 30), seed=0)
    assert by_case[1] - by_case[0] > 3 * (by_image[1] - by_image[0])
    assert intervals.share_interval(0, 100)[0] == 0.0 and intervals.share_interval(100, 100)[1] == 1.0


def test_evaluate_an_array_and_a_png_folder(held_out_rich, tmp_path):
    test = ShardReader(held_out_rich, "test")
    pixels = test.read(np.arange(40))
    np.save(tmp_path / "real.npy", pixels)
    samples.write_pngs(to_unit(pixels), tmp_path / "pngs")
    m = _metrics(diversity_samples=16)
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


def test_evaluate_refuses_bad_images_by_name(held_out_rich, tmp_path):
    cases = {"small.npy": np.zeros((4, 16, 16), np.uint8), "range.npy": np.full((4, 32, 32), 3.0, np.float32),
             "ints.npy": np.zeros((4, 32, 32), np.int64), "one.npy": np.zeros((1, 32, 32), np.uint8)}
    for name, a in cases.items():
        np.save(tmp_path / name, a)
        with pytest.raises(evaluate.ImagesError, match=str(tmp_path / name)):
            evaluate.load_images(tmp_path / name, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(evaluate.ImagesError, match="no .png files"):
        evaluate.load_images(tmp_path / "empty", 32)
    assert evaluate.load_images(_save(tmp_path, to_uint8(np.zeros((3, 32, 32)))), 32).shape == (3, 32, 32)


def _save(tmp_path, a):
    np.savez(tmp_path / "ok.npz", images=a)
    return tmp_path / "ok.npz"


def test_feature_distances_sit_beside_held_out_images_at_one_n(held_out_rich, tmp_path):
    import tensorflow as tf

    net = tf.keras.Sequential([tf.keras.layers.Input((32, 32, 1)), tf.keras.layers.Conv2D(6, 3, strides=2),
                               tf.keras.layers.GlobalAveragePooling2D()])
    net.save(tmp_path / "fx.keras")
    test = ShardReader(held_out_rich, "test")
    np.save(tmp_path / "real.npy", test.read(np.arange(100)))
    m = _metrics(fid_weights=f'"{tmp_path / "fx.keras"}"', kid_subsets=10, fid_real_images=80)
    f = evaluate.evaluate(tmp_path / "real.npy", held_out_rich, tmp_path / "out", m)["feature_distances"]
    assert f["n"] == 80 and f["held_out"]["fid"] is not None and f["fid"] is not None
    assert f["subset_size"] == 40 and f["kid_std"] > 0 and f["held_out"]["kid_std"] > 0, "subsets of half: a spread"
    assert 0 <= f["precision"] <= 1 and 0 <= f["held_out"]["recall"] <= 1
    md = (tmp_path / "out" / "report.md").read_text()
    assert "FID against the train split" in md and "+- 0.0000" not in md
