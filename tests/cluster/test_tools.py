"""collect, generate, submit --dry-run and status: the tools around the three jobs."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.cluster
def test_submit_dry_run_prints_config_and_scripts(devcluster, png_release, tmp_path):
    """Every script, array line included, even where no Slurm controller answers (submitit renders
    them where srun is installed: the dev cluster's set-up installs it)."""
    odd = tmp_path / "it's a dir"
    r = subprocess.run([sys.executable, "-m", "oasis_dcgan.cli", "submit", str(REPO / "slurm/example.toml"),
                        "--dry-run", "--set", f'run_dir="{odd / "run"}"',
                        "--set", f'data.source="{png_release}"', "--set", f'data.dataset="{odd / "ds"}"',
                        "--set", "cluster.tasks_per_node=4", "--set", "cluster.gpus_per_node=4",
                        "--set", 'cluster.constraint="a100&ib"'],
                       cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "SLURM_CONF": str(tmp_path / "no-cluster.conf")})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert '"epochs": 50' in out and "nothing was submitted" in out
    for stage in ("preprocess", "seal", "train", "postprocess"):
        assert f"---- {stage}" in out
    train_script = out.split("---- train")[1].split("---- postprocess")[0]
    assert "--signal=USR2@90" in train_script and "--ntasks-per-node=4" in train_script
    assert "--gpus-per-node=4" in train_script and "#SBATCH --constraint='a100&ib'" in train_script
    assert "--cpus-per-task=1 --kill-on-bad-exit=1" in train_script, "srun gets both, explicitly"
    assert "-m oasis_dcgan.launch.retry" in train_script.split("srun ")[1], "the retry step runs after srun"
    assert "#SBATCH --array=0-1%2" in out.split("---- preprocess")[1].split("---- seal")[0]
    assert "it'\"'\"'s a dir" in train_script  # the quote survives shell quoting
    assert not (odd / "run").exists() and not (odd / "ds").exists(), "a dry run writes nothing"


@pytest.mark.cluster
def test_sweep_dry_run_lists_the_runs_and_prints_every_script(devcluster, png_release, tmp_path):
    """The packing, the array of train tasks (its %limit and requeue) and the leaderboard job after
    it however the array ends; nothing written, nothing queued."""
    r = subprocess.run([sys.executable, "-m", "oasis_dcgan.cli", "sweep", str(REPO / "slurm/example.toml"),
                        "--dry-run", "--grid", "train.lr=1e-4,2e-4,3e-4", "--seeds", "2", "--max-parallel", "2",
                        "--set", f'run_dir="{tmp_path / "sweep"}"', "--set", f'data.source="{png_release}"',
                        "--set", f'data.dataset="{tmp_path / "ds"}"', "--executor", "slurm"],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SLURM_CONF": str(tmp_path / "no-cluster.conf")})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "6 runs under" in out and "6 to train" in out and "train  train.lr=0.0003,train.seed=1" in out
    stages = [line.split("---- ")[1].split(":")[0] for line in out.splitlines() if line.startswith("# ---- ")]
    assert stages == ["preprocess", "seal", "train", "sweep-report"], stages
    train = out.split("---- train")[1].split("---- sweep-report")[0]
    assert "#SBATCH --array=0-5%2" in train and "--requeue" in train and "--signal=USR2@90" in train
    assert "--array-task $SLURM_ARRAY_TASK_ID" in train, "each task's retry step decides on its own run"
    assert "afterany:ARRAY_JOB_ID" in out.split("---- sweep-report")[1], "the leaderboard, however the runs end"
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "ds").exists(), "a dry run writes nothing"
