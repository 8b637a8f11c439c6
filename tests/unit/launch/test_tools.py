"""collect, generate, submit --dry-run and status: the tools around the three jobs."""

import subprocess
import sys

import pytest

from oasis_dcgan import config
from oasis_dcgan.launch import pipeline

from tests.conftest import REPO


def test_submit_refuses_bad_config_naming_the_key(tmp_path):
    r = subprocess.run([sys.executable, "-m", "oasis_dcgan.cli", "submit", str(REPO / "slurm/example.toml"),
                        "--dry-run", "--set", "train.epoch=3"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "train.epoch" in r.stderr


def test_submit_reuses_a_verified_dataset_only_when_it_is_the_one_the_config_asks_for(dataset32, png_release):
    """A dataset packed otherwise is refused naming each key, never packed over (another run may train on it)."""
    base = [f'data.dataset="{dataset32}"', f'data.source="{png_release}"']
    assert pipeline.dataset_ready(config.load(None, base + ["data.resolution=32"]), dataset32)
    for differs, key in ((["data.resolution=64"], "data.resolution"),
                         (["data.resolution=32", "data.allow_shared_cases=true"], "data.allow_shared_cases"),
                         (["data.resolution=32", 'data.layout="folder"'], "data.layout")):
        with pytest.raises(config.ConfigError, match=key.replace(".", "[.]")) as e:
            pipeline.dataset_ready(config.load(None, base + differs), dataset32)
        assert str(dataset32) in str(e.value)
    other = config.load(None, [f'data.dataset="{dataset32}"', 'data.source="/elsewhere"', "data.resolution=32"])
    with pytest.raises(config.ConfigError, match="data.source"):
        pipeline.dataset_ready(other, dataset32)
    assert not pipeline.dataset_ready(config.load(None, base), png_release), "no dataset there: pack one"


def test_train_records_the_datasets_identity_and_refuses_a_config_asking_for_other_data(dataset32, tmp_path):
    from oasis_dcgan.training import trainer

    cfg = config.load(None, [f'run_dir="{tmp_path / "run"}"', f'data.dataset="{dataset32}"',
                             "data.allow_shared_cases=true", "train.epochs=1"])
    with pytest.raises(config.ConfigError, match="data.allow_shared_cases"):
        trainer.run(cfg, log_to_stdout=False)
    assert not list((tmp_path / "run").glob("ckpt*")), "refused before anything trained"
