import json

import pytest

from oasis_dcgan import config
from oasis_dcgan.config import ConfigError

from tests.conftest import REPO


def test_defaults_are_the_seeds_settings():
    c = config.Config()
    got = (c.data.resolution, c.train.batch_size, c.train.epochs, c.train.lr, c.train.noise_dim)
    assert got == (256, 16, 50, 1e-4, 100)
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
    ('data.split_fractions=[0.85, "a", 0.05]', "data.split_fractions[1]"),  # list items are typed
    ("train.seed=-1", "train.seed"),                 # seeds are bounded
    (f"metrics.seed={2 ** 32}", "metrics.seed"),
    ("cluster.mem_gb=-4", "cluster.mem_gb"),
    ("train.lr=inf", "train.lr"),                    # floats are finite
    ("train.peer_timeout_s=nan", "train.peer_timeout_s"),
    ('run_dir=""', "run_dir"),                       # not the current directory by accident
    ("cluster.timeout_min=1", "cluster.signal_delay_s"),  # USR2 90 s into a 60 s limit: every attempt stops
])
def test_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        config.load(None, [override])
    assert key in str(e.value)


@pytest.mark.parametrize("key", ["cluster.partition", "cluster.account", "cluster.qos", "cluster.constraint",
                                 "run_dir", "data.source", "cluster.setup"])
def test_a_string_that_could_reach_a_script_cannot_carry_a_command(key):
    """A newline put a command into the generated sbatch script and hid the lines after it."""
    value = '["x\\ntouch /tmp/pwned"]' if key == "cluster.setup" else '"x\\ntouch /tmp/pwned"'
    with pytest.raises(ConfigError, match=key.replace(".", "[.]")):
        config.load(None, [f"{key}={value}"])


@pytest.mark.parametrize("value", ['"gpu queue"', '"a;b"', "\"it's\""])
def test_slurm_names_keep_to_slurms_characters(value):
    with pytest.raises(ConfigError, match="cluster.partition.*Slurm name"):
        config.load(None, [f"cluster.partition={value}"])
    assert config.load(None, ['cluster.partition="gpu-a100_x.2"']).cluster.partition == "gpu-a100_x.2"


def test_a_config_that_is_not_utf8_names_the_file(tmp_path):
    f = tmp_path / "latin1.toml"
    f.write_bytes('run_dir = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.toml.*UTF-8"):
        config.load(f)


def test_every_key_is_declared_with_a_doc_and_the_example_is_generated_from_them():

    keys = list(config.declared(config.Config()))
    assert len(keys) > 60 and all(f.metadata["doc"] for _, f, _ in keys)
    example = REPO / "slurm" / "example.toml"
    assert example.read_text() == config.example(), "regenerate it: oasis-dcgan config --example > slurm/example.toml"
    assert config.load(example) == config.Config()


def test_bad_toml_names_the_file(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("[train\nepochs=")
    with pytest.raises(ConfigError, match="broken.toml"):
        config.load(f)


def test_the_resolved_config_prints_as_toml_that_loads_back(tmp_path):
    c = config.load(None, ["train.lr=2e-4", 'cluster.setup=["module load cuda"]', 'data.source="/a \\"b\\""'])
    f = tmp_path / "back.toml"
    f.write_text(config.to_toml(c))
    assert config.load(f) == c


@pytest.mark.parametrize("argv, says", [
    (["train", "ds", "run", "--ranks", "0"], "--ranks"),
    (["preprocess", "src", "out", "--task", "0", "--tasks", "0"], "--tasks"),
    (["preprocess", "src", "out", "--task", "5", "--tasks", "2"], "--task 5"),
])
def test_counts_on_the_command_line_are_checked_before_anything_runs(argv, says, capsys):
    from oasis_dcgan import cli

    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_postprocess_takes_the_runs_own_config_with_overrides_on_top(tmp_path):
    """A site that needs cluster.account: postprocess on Slurm submits with the run's config, not defaults."""
    from oasis_dcgan import fsutil, rundir
    from oasis_dcgan.post import report

    run_cfg = config.load(None, ['cluster.account="lab7"', 'cluster.partition="gpu"', "metrics.batches=20"])
    fsutil.write_json(rundir.RunDir(tmp_path).options, {"config": run_cfg.to_dict()})
    _, cfg = report.load_run(rundir.RunDir(tmp_path), overrides=("metrics.batches=5",))
    assert (cfg.cluster.account, cfg.cluster.partition, cfg.metrics.batches) == ("lab7", "gpu", 5)


def test_each_layout_check_and_executor_name_is_a_literal_in_its_registry_only():
    """Everything else (the config's choices, the CLI's, the packer, the pipeline, the report)
    derives from the registry, so a name written twice is a seam this test finds."""
    import ast
    import io
    import tokenize

    from oasis_dcgan.launch import executors
    from oasis_dcgan.post import checks
    from oasis_dcgan.prep import layouts

    home = {**{n: "prep/layouts.py" for n in layouts.LAYOUTS}, **{n: "post/checks.py" for n in checks.CHECKS},
            # "auto" is a choice of both registries (detect the layout; pick the executor), not an executor
            **{n: "launch/executors.py" for n in executors.EXECUTORS if n != executors.Auto.name}}
    found: dict = {n: set() for n in home}
    package = REPO / "oasis_dcgan"
    for path in package.rglob("*.py"):
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.STRING:
                try:
                    value = ast.literal_eval(tok.string)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(value, str) and value in found:
                    found[value].add(path.relative_to(package).as_posix())
    assert found == {n: {m} for n, m in home.items()}


def test_no_module_but_its_registry_compares_an_executor_layout_or_check_name():
    """Behaviour is asked of the registered object, so a new executor, layout or check changes no other
    module: no comparison outside a registry names one of its members (or an executor at all)."""
    import ast
    import re

    from oasis_dcgan.launch import executors
    from oasis_dcgan.post import checks
    from oasis_dcgan.prep import layouts

    members = {"launch/executors.py": {cls.__name__ for cls in executors.EXECUTORS.values()},
               "prep/layouts.py": {type(v).__name__ for v in layouts.LAYOUTS.values()} | {"PNG", "RAW", "FOLDER"},
               "post/checks.py": {k for k, v in vars(checks).items() if isinstance(v, str) and v in checks.CHECKS}}
    package, found = REPO / "oasis_dcgan", []
    for path in package.rglob("*.py"):
        here = path.relative_to(package).as_posix()
        names = set().union(*(v for k, v in members.items() if k != here))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            text = " ".join(ast.unparse(x) for x in (node.left, *node.comparators) if not isinstance(x, ast.Constant))
            words = set(re.findall(r"\w+", text))
            if words & names or (here != "launch/executors.py" and "executor" in text.lower()):
                found.append(f"{here}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


def test_the_cli_flags_take_type_choices_help_and_checks_from_the_keys(capsys):
    from oasis_dcgan import cli

    ap = cli.build_parser()
    for cmd, flags in cli.KEY_FLAGS.items():
        for flag, name in flags:
            f, _ = config.declaration(name)  # every flag names a declared key
            assert f.metadata["doc"], name
    text = ap._subparsers._group_actions[0].choices["preprocess"].format_help()
    assert "data.shard_size" in text and "images per HDF5 shard" in text and "{32,64,128,256}" in text
    with pytest.raises(SystemExit) as e:
        cli.main(["preprocess", "src", "out", "--shard-size", "0"])
    assert e.value.code == 2 and "data.shard_size = 0: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "ds", "run", "--seed", "-3"])
    assert e.value.code == 2 and "train.seed = -3" in capsys.readouterr().err
    args = ap.parse_args(["submit", "c.toml", "--executor", "slurm"])
    assert getattr(args, cli._dest("cluster.executor")) == "slurm"
    with pytest.raises(SystemExit):
        ap.parse_args(["submit", "c.toml", "--executor", "inprocess"])  # a pipeline's stages must be jobs
