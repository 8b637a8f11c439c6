"""A sweep's runs: the product of its grids, each in a directory named by its values, checked as
--set checks a value, and recorded so a resubmission or a wider grid adds only what is new."""

import pytest

from oasis_dcgan import config, fsutil
from oasis_dcgan.errors import ConfigError
from oasis_dcgan.launch import sweep
from oasis_dcgan.rundir import FINISHED, SweepDir


def test_the_runs_are_the_product_of_the_grids_then_the_seeds():
    runs = sweep.plan(["train.lr=1e-4,2e-4", "train.loss=bce,hinge"], seeds=2)
    assert len(runs) == 8
    assert runs[0].values == {"train.lr": 1e-4, "train.loss": "bce", "train.seed": 0}
    assert runs[-1].name == "train.lr=0.0002,train.loss=hinge,train.seed=1"
    assert len({r.name for r in runs}) == 8, "every combination its own directory"


def test_values_holding_commas_come_as_a_toml_array_and_are_checked():
    runs = sweep.plan(['train.augment=["cutout,color", ""]'])
    assert [r.values["train.augment"] for r in runs] == ["cutout,color", ""]
    with pytest.raises(ConfigError, match=r"train\.augment = 'cutout,blur'"):
        sweep.plan(['train.augment=["cutout,blur"]'])


@pytest.mark.parametrize("grid, says", [
    ("train.lr=1e-4,-1", r"train\.lr = -1"),
    ("train.epochs=2,two", r"train\.epochs = 'two'"),
    ("train.nope=1,2", r"train\.nope: unknown key"),
    ("data.resolution=32,64", r"cannot vary it"),
    ("run_dir=a,b", r"cannot vary it"),
    ("train.lr=1e-4,1e-4", r"different values"),
    ("train.lr", r"expected key=value1,value2"),
    ("train.augment=cutout/..", r"train\.augment"),
])
def test_a_bad_grid_is_one_error_naming_the_key(grid, says):
    with pytest.raises(ConfigError, match=says):
        sweep.plan([grid])


def test_seeds_given_twice_or_a_key_twice_is_refused():
    with pytest.raises(ConfigError, match="seeds one way"):
        sweep.plan(["train.seed=1,2"], seeds=2)
    with pytest.raises(ConfigError, match="given twice"):
        sweep.plan(["train.lr=1e-4", "train.lr=2e-4"])
    with pytest.raises(ConfigError, match="at least one"):
        sweep.plan([])


def test_a_name_no_directory_can_have_is_refused():
    with pytest.raises(ConfigError, match="cannot name a directory"):
        sweep.plan(["cluster.account=" + ",".join("a" * 250 + str(i) for i in range(2))])
    with pytest.raises(ConfigError, match="cannot name a directory"):
        sweep.plan(['metrics.fid_weights=["/models/extractor.keras", ""]'])


def test_a_run_gets_its_values_and_its_own_directory(tmp_path):
    base = config.load(None, [f'run_dir="{tmp_path}"', "train.epochs=3"])
    [run] = sweep.plan(["train.lr=3e-4"])
    cfg = run.config(base, SweepDir(tmp_path))
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 3 and cfg.run_dir == str(tmp_path / "train.lr=0.0003")
    assert base.train.lr == 1e-4 and base.run_dir == str(tmp_path), "the base config is left as it was"


def test_a_wider_grid_adds_only_its_new_runs_and_finished_runs_are_not_trained_again(tmp_path):
    root = SweepDir(tmp_path / "sweep")
    first = sweep.plan(["train.lr=1e-4,2e-4"], seeds=1)
    sweep.record(root, ["train.lr=1e-4,2e-4"], 1, first)
    root.run(first[0].name).path.mkdir()
    root.run(first[0].name).write_state(FINISHED)
    wider = sweep.plan(["train.lr=1e-4,2e-4,4e-4"], seeds=1)
    rec = sweep.record(root, ["train.lr=1e-4,2e-4,4e-4"], 1, wider)
    assert [r["run_dir"] for r in rec["runs"]] == [r.name for r in wider], "each run recorded once"
    assert len(rec["submissions"]) == 2
    todo = sweep.unfinished(root, wider)
    assert [r.name for r in todo] == [r.name for r in wider[1:]]
    text = sweep.describe(wider, todo, root.path)
    assert "3 runs" in text and "2 to train" in text and f"done   {first[0].name}" in text


def test_an_array_task_is_its_own_job_as_its_ranks_and_scontrol_name_it(monkeypatch):
    """The retry step keys notes and requeues by the id the ranks were given: `<array>_<task>`, never the array."""
    from oasis_dcgan.launch import executors

    monkeypatch.setenv("SLURM_JOB_ID", "812")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert executors.Slurm().this_job() == ("812", 2)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "810")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert executors.Slurm().this_job() == ("810_2", 2)


def test_a_sweeps_status_asks_the_scheduler_once_for_all_its_arrays(tmp_path, monkeypatch):
    """Two arrays of a sweep in one sacct call; each run reads its own task's latest row (a requeued
    task's rows come first); a run that ended keeps its own words."""
    from oasis_dcgan import rundir
    from oasis_dcgan.launch import slurmctl, status

    root = SweepDir(tmp_path)
    runs = sweep.plan(["train.lr=1e-4,2e-4,3e-4"])
    sweep.record(root, ["train.lr=1e-4,2e-4,3e-4"], 0, runs)
    rec = fsutil.read_json(root.record)
    rec["submissions"][-1]["arrays"] = [
        {"job_id": "40", "executor": "slurm", "runs": [runs[0].name, runs[1].name]},
        {"job_id": "41", "executor": "slurm", "runs": [runs[2].name]}]
    fsutil.write_json(root.record, rec)
    root.run(runs[1].name).path.mkdir()
    root.run(runs[1].name).write_state(FINISHED, epochs=3, global_step=12)
    calls = []

    def sacct(ids):
        calls.append(ids)
        return [{"JobID": "40_0", "State": "REQUEUED"}, {"JobID": "40_0", "State": "RUNNING"},
                {"JobID": "40_1", "State": "COMPLETED"}, {"JobID": "41_0", "State": "PENDING"}]

    monkeypatch.setattr(slurmctl, "sacct", sacct)
    text, ended = status.sweep_status(root)
    assert calls == [["40", "41"]], "one query for the whole sweep"
    lines = text.splitlines()
    assert "new [RUNNING]" in lines[1] and runs[0].name in lines[1]
    assert lines[2].lstrip().startswith(rundir.FINISHED) and "[" not in lines[2]
    assert "new [PENDING]" in lines[3] and not ended


def test_watching_backs_off_while_nothing_changes_and_starts_over_on_a_change():
    from oasis_dcgan.launch import status

    texts = iter(["a", "a", "a", "a", "b", "b", "c"])
    slept, shown = [], []
    ended = status.watch(lambda: (t := next(texts), t == "c"), shown.append, first_s=10, most_s=35,
                         sleep=slept.append)
    assert ended and shown == ["a", "b", "c"]
    assert slept == [10, 20, 35, 35, 10, 20], "doubling to the cap, back to the first interval on a change"
    assert not status.watch(lambda: ("x", False), print, first_s=10, timeout_s=25, sleep=lambda s: None)
