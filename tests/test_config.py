import json

import pytest

from oasis_dcgan import config
from oasis_dcgan.config import ConfigError


def test_defaults_are_the_seeds_settings():
    c = config.Config()
    assert (c.data.resolution, c.train.batch_size, c.train.epochs, c.train.lr, c.train.noise_dim) == (256, 16, 50, 1e-4, 100)
    assert c.metrics.batches == 50 and c.metrics.batch_size == 16 and c.metrics.split == "train"


def test_toml_file_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('run_dir = "r"\n[train]\nepochs = 3\n[data]\nresolution = 64\n')
    c = config.load(f, ["train.lr=2e-4", "cluster.tasks_per_node=4", 'data.source="/x y/z"'])
    assert c.train.epochs == 3 and c.data.resolution == 64 and c.train.lr == 2e-4
    assert c.cluster.tasks_per_node == 4 and c.data.source == "/x y/z"
    # round trip through the dict form saved in options.json
    assert config.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize("override, key", [
    ("train.epoch=3", "train.epoch"),                  # unknown key
    ("bogus.x=1", "bogus"),                            # unknown section
    ("train.epochs=\"ten\"", "train.epochs"),          # wrong type
    ("train.deterministic=1", "train.deterministic"),  # int is not a bool
    ("data.resolution=100", "data.resolution"),        # impossible value
    ("train.lr=-1", "train.lr"),
    ("train.d_dropout_scale=2.5", "train.d_dropout_scale"),  # a first rate of 1 drops everything
    ("train.lr_rampdown=1.5", "train.lr_rampdown"),  # a fraction of the epochs
    ("cluster.executor=\"pbs\"", "cluster.executor"),
])
def test_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        config.load(None, [override])
    assert key in str(e.value)


def test_bad_toml_names_the_file(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("[train\nepochs=")
    with pytest.raises(ConfigError, match="broken.toml"):
        config.load(f)


def test_example_config_loads():
    from pathlib import Path

    ex = Path(__file__).resolve().parent.parent / "slurm" / "example.toml"
    c = config.load(ex)
    assert c.data.resolution == 256 and c.train.epochs == 50
