"""A sweep on the real dev Slurm cluster: one array of train tasks, a task preempted with USR2 and
requeued as itself, tasks that fail named in the leaderboard with their reason, and a resubmission
that queues only the unfinished runs, or nothing once they are all finished."""

import pytest

from oasis_dcgan import config, fsutil, rundir
from oasis_dcgan.launch import slurmctl, status, sweep
from oasis_dcgan.rundir import SweepDir

from tests.conftest import SMALL_METRICS, resumes, stop_checkpoints
from tests.slurmkit import sh, top_states, wait_for_checkpoint, wait_gone

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EPOCHS = 6
# batch_size 400 cannot fill one batch from dataset32's 192 training images: those runs fail, and
# their retry step gives up at once (a bad config is never requeued).
GRIDS = ["train.batch_size=8,400", "train.lr=1e-4,2e-4"]


def base(dataset, root):
    return config.load(None, [f'run_dir="{root}"', f'data.dataset="{dataset}"', "data.resolution=32",
                              f"train.epochs={EPOCHS}", "train.max_steps_per_epoch=4", "train.checkpoint_every_steps=2",
                              "train.intra_op_threads=1", "cluster.tasks_per_node=1", "cluster.timeout_min=30",
                              'cluster.executor="slurm"', *SMALL_METRICS])


@pytest.mark.fault
def test_a_grid_runs_as_one_array_a_preempted_task_requeues_as_itself_and_failures_are_named(devcluster,
                                                                                            dataset32, tmp_path):
    root = SweepDir(tmp_path / "sweep")
    out = sweep.submit(base(dataset32, root.path), GRIDS)
    [array] = out["arrays"]
    assert len(array["runs"]) == 4 and not out["arrays"][1:], "one array for the whole grid"
    task = array["runs"].index("train.batch_size=8,train.lr=0.0002")
    preempted = root.run(array["runs"][task])
    wait_for_checkpoint(preempted.path, after_step=2)
    task_id = f"{array['job_id']}_{task}"
    # Slurm delivers a signal to an array task yet answers "cannot be altered now", so scancel retries
    # it until the requeued task takes it too: one or more preemptions, each resumed exactly.
    sh("scancel", "--signal=USR2", task_id)
    wait_gone(array["job_id"], timeout=900)
    wait_gone(out["jobs"]["sweep-report"], timeout=600)

    states = top_states(task_id)
    assert "REQUEUED" in states[:-1] and states[-1] == "COMPLETED", states
    stops = stop_checkpoints(preempted.path, "SIGUSR2")
    assert stops and [r["global_step"] for r in resumes(preempted.path)] == stops, "each stop resumed, once"
    epochs = [r["epoch"] for r in preempted.read_stats("epoch")]
    assert epochs == list(range(1, EPOCHS + 1)), "every epoch once, in the same directory"
    assert sorted(p.name for p in root.path.iterdir() if "=" in p.name) == sorted(array["runs"]), \
        "no second directory for the requeued task"

    board = fsutil.read_json(root.report / rundir.SWEEP_LEADERBOARD)
    rows = {r["name"]: r for r in board["runs"]}
    for name, row in rows.items():
        if "batch_size=400" in name:
            assert row["state"] == rundir.FAILED and "cannot fill one batch" in row["why"], row
        else:
            assert row["state"] == rundir.FINISHED and row["metrics"]["seed_max_ssim"]["final"] is not None, row
            assert row["epochs_done"] == EPOCHS and row["cost"]["gpu_hours"] > 0
    assert (root.report / rundir.SWEEP_LEADERBOARD_HTML).is_file()

    for name, row in rows.items():  # one rank each: the step is computation and input only
        assert ("batch_size=400" in name) == (row["step_split"] is None), row
    text, ended = status.sweep_status(root)  # one sacct for the array: each task's own state
    assert ended and len(text.splitlines()) == 6, text
    assert all("cannot fill one batch" in line for line in text.splitlines() if "batch_size=400" in line)

    again = sweep.submit(base(dataset32, root.path), GRIDS, dry_run=True)
    assert sorted(again["to_train"]) == sorted(n for n in rows if "batch_size=400" in n), "only the unfinished"
    before = sh("squeue", "-h", "-o", "%i")
    finished = sweep.submit(base(dataset32, root.path), ["train.batch_size=8", "train.lr=1e-4,2e-4"])
    assert not finished["to_train"] and not finished["arrays"] and not finished.get("jobs"), finished
    assert sh("squeue", "-h", "-o", "%i") == before, "a resubmission of finished runs queues no job"


def test_a_sweep_past_max_array_size_is_split_into_arrays_with_one_leaderboard(devcluster, dataset32, tmp_path):
    """The dev cluster's MaxArraySize is 4: five runs go as arrays of 4 and 1, and the leaderboard
    after both has all five. Batches no dataset32 can fill: each run fails at once, with its reason."""
    assert slurmctl.max_array_size() == 4, "slurm/devcluster sets MaxArraySize=4"
    root = SweepDir(tmp_path / "sweep")
    out = sweep.submit(base(dataset32, root.path), ["train.batch_size=400,401,402,403,404"])
    assert [len(a["runs"]) for a in out["arrays"]] == [4, 1], out["arrays"]
    for a in out["arrays"]:
        wait_gone(a["job_id"], timeout=600)
    wait_gone(out["jobs"]["sweep-report"], timeout=600)
    assert top_states(out["jobs"]["sweep-report"])[-1] == "COMPLETED"
    board = fsutil.read_json(root.report / rundir.SWEEP_LEADERBOARD)
    assert sorted(r["name"] for r in board["runs"]) == sorted(out["runs"]) and len(board["runs"]) == 5
    assert all(r["state"] == rundir.FAILED and "cannot fill one batch" in r["why"] for r in board["runs"]), board
    text, ended = status.sweep_status(root)
    assert ended and text.count("cannot fill one batch") == 5, text
