"""A sweep's leaderboard from real runs: a finished run reported, its copy under another seed, and
a run that failed, each a row; the finished ones grouped with their seed spread."""

import shutil

from oasis_dcgan import fsutil, rundir
from oasis_dcgan.launch import collect, status, sweep
from oasis_dcgan.post import checks, leaderboard, report
from oasis_dcgan.rundir import RunDir, SweepDir


def test_the_leaderboard_has_every_run_with_its_checks_cost_and_a_failed_run_with_its_reason(tiny_run, tmp_path):
    m = report.postprocess(RunDir(tiny_run))
    root = SweepDir(tmp_path / "sweep")
    runs = sweep.plan(["train.lr=1e-4,2e-4"], seeds=2)[:3]   # lr 1e-4 with seeds 0 and 1; lr 2e-4 seed 0
    sweep.record(root, ["train.lr=1e-4,2e-4"], 2, runs)
    for r in runs[:2]:
        shutil.copytree(tiny_run, root.run(r.name).path)
    failed = root.run(runs[2].name)
    failed.path.mkdir()
    failed.write_state(rundir.FAILED, reason="DataError: 12 training images cannot fill one batch of 16")

    board = leaderboard.build(root)
    rows = {r["run_dir"]: r for r in board["runs"]}
    assert list(rows) == [str(root.run(r.name).path) for r in runs], "one row per run, in the sweep's order"
    done = rows[str(root.run(runs[0].name).path)]
    assert done["state"] == rundir.FINISHED and done["epochs_done"] == 3 and done["values"] == runs[0].values
    assert done["metrics"]["seed_max_ssim"]["final"] == m["seed_max_ssim"]["final"]
    assert set(checks.CHECKS) <= set(done["metrics"]), "every registered check, with no list of them here"
    assert done["readings"] == checks.table_rows(m)
    assert done["cost"]["images_per_s"] > 0 and done["cost"]["gpu_hours"] > 0 and done["cost"]["ranks"] == 1
    assert done["kimg"] == 3 * 3 * 8 / 1000
    split = done["step_split"]
    assert split == m["step_split"] and split["compute_ms"] > 0
    assert split["reading"].startswith(("bound by", "undetermined")), split["reading"]
    assert split["allreduce_ms"] < 0.5, "one rank: the allreduce is the identity"
    assert "Where a step's time goes" in RunDir(tiny_run).report_file(rundir.REPORT_MD).read_text()
    bad = rows[str(failed.path)]
    assert bad["state"] == rundir.FAILED and "cannot fill one batch" in bad["why"] and bad["metrics"] == {}
    group = next(g for g in board["groups"] if g["values"] == {"train.lr": 1e-4})
    spread = group["seed_max_ssim"]
    assert spread["n"] == 2 and spread["sd"] == 0.0 and spread["mean"] == m["seed_max_ssim"]["final"]
    assert done["verdicts"] == checks.readings(m) and done["verdicts"], "the report's readings, in words"
    page = leaderboard.page(board, False).markdown()
    assert "rank-hours" in page and page.count(f"### {runs[0].name}") == 1 and f"### {runs[2].name}" not in page
    assert checks.table_rows(m)[0][1] in page, "each reported run's checks, with their intervals"

    written = leaderboard.write(root)
    for name in (rundir.SWEEP_LEADERBOARD, rundir.SWEEP_LEADERBOARD_MD, rundir.SWEEP_LEADERBOARD_HTML,
                 rundir.FIGURE_SWEEP_CURVES):
        assert (root.report / name).is_file(), name
    md = (root.report / rundir.SWEEP_LEADERBOARD_MD).read_text()
    assert "cannot fill one batch" in md and runs[1].name in md and len(written["runs"]) == 3

    # Status: one line per run from their own files (no scheduler here); collect: every run that
    # started, each verified with its SHA256SUMS, and the sweep's record and leaderboard beside them.
    text, ended = status.sweep_status(root)
    lines = text.splitlines()
    assert len(lines) == 5 and ended, text
    assert lines[1].split()[0] == rundir.FINISHED and "epoch 3/3" in lines[1] and runs[0].name in lines[1]
    assert lines[3].split()[0] == rundir.FAILED and "cannot fill one batch" in lines[3]
    assert rundir.SWEEP_LEADERBOARD_HTML in lines[4]
    dest = tmp_path / "collected"
    got = collect.collect_sweep(root, dest)
    assert sorted(got["runs"]) == sorted(r.name for r in runs[:2]), "the failed run never started: nothing to take"
    for r in runs[:2]:
        assert (dest / r.name / "SHA256SUMS").is_file() and (dest / r.name / "report" / "report.html").is_file()
    sums = (dest / "SHA256SUMS").read_text()
    assert rundir.SWEEP_RECORD in sums and f"{rundir.SWEEP_REPORT}/{rundir.SWEEP_LEADERBOARD}" in sums
    assert collect.collect_sweep(root, dest)["skipped"] == got["copied"], "a second collect copies nothing"


def test_the_local_executor_runs_a_sweep_one_run_at_a_time_with_max_parallel_1(dataset32, tmp_path):
    """Two runs through the local queue with --max-parallel 1: the second starts training only once
    the first has finished; then the leaderboard has both, and a resubmission trains nothing."""
    import subprocess
    import sys

    from tests.conftest import REPO

    toml = tmp_path / "sweep.toml"
    toml.write_text(f'run_dir = "{tmp_path / "sweep"}"\n[data]\ndataset = "{dataset32}"\nresolution = 32\n'
                    "[train]\nepochs = 2\nmax_steps_per_epoch = 2\nintra_op_threads = 1\n"
                    "[metrics]\nbatches = 3\nnn_samples = 12\ndiversity_samples = 6\n")
    cmd = [sys.executable, "-m", "oasis_dcgan.cli", "sweep", str(toml), "--grid", "train.lr=1e-4,2e-4",
           "--executor", "local", "--max-parallel", "1"]
    dest = tmp_path / "collected"
    r = subprocess.run([*cmd, "--collect", str(dest)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (dest / rundir.SWEEP_REPORT / rundir.SWEEP_LEADERBOARD_HTML).is_file(), "--collect waited, then took it"
    root = SweepDir(tmp_path / "sweep")
    spans = []
    for name in ("train.lr=0.0001", "train.lr=0.0002"):
        run = root.run(name)
        assert run.read_state()["state"] == rundir.FINISHED, name
        stats = run.read_stats()
        spans.append((stats[0]["time"], run.read_state()["time"]))
    spans.sort()
    assert spans[0][1] <= spans[1][0], f"the runs overlapped: {spans}"
    board = fsutil.read_json(root.report / rundir.SWEEP_LEADERBOARD)
    assert [r["state"] for r in board["runs"]] == [rundir.FINISHED] * 2
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 to train" in again.stdout, again.stdout + again.stderr[-2000:]
