"""collect, generate, submit --dry-run and status: the tools around the three jobs."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oasis_dcgan.launch import collect, status
from oasis_dcgan.launch.collect import CollectError
from oasis_dcgan.rundir import RunDir

from tests.conftest import REPO, log_lines


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_collect_copies_verifies_and_resumes(done_run, tmp_path):
    dest = tmp_path / "home"
    r = collect.collect(RunDir(done_run), dest)
    for rel in ("report/report.html", "report/progress.gif", "report/metrics.json", "options.json",
                "generator.keras", "dataset_manifest.json", "samples/epoch_0002.png"):
        assert (dest / rel).is_file(), rel
    assert not (dest / "checkpoints").exists()
    sums = dict(reversed(line.split("  ", 1)) for line in (dest / "SHA256SUMS").read_text().splitlines())
    assert sums["options.json"] == sha(done_run / "options.json")
    assert all(sha(dest / rel) == digest for rel, digest in sums.items())
    # an interrupted collect resumes: remove some, run again, only those are copied
    (dest / "report" / "loss.png").unlink()
    r2 = collect.collect(RunDir(done_run), dest)
    assert r2["copied"] == 1 and r2["skipped"] == r["copied"] - 1


def test_collect_never_overwrites_a_different_file(done_run, tmp_path):
    dest = tmp_path / "home"
    collect.collect(RunDir(done_run), dest)
    (dest / "options.json").write_text("{}")
    with pytest.raises(CollectError, match="options.json"):
        collect.collect(RunDir(done_run), dest)
    assert (dest / "options.json").read_text() == "{}"


def test_collect_with_checkpoints(done_run, tmp_path):
    collect.collect(RunDir(done_run), tmp_path / "home", include_checkpoints=True)
    assert list((tmp_path / "home" / "checkpoints").glob("ckpt-*/ckpt.index"))


def test_generate_is_seeded(done_run, tmp_path):
    import imageio.v3 as iio

    def gen(out, seed):
        r = subprocess.run([sys.executable, "-m", "oasis_dcgan.cli", "generate", str(done_run), "-n", "5", str(out),
                            "--seed", str(seed)], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return [iio.imread(p) for p in sorted(Path(out).glob("*.png"))]

    a, b, c = gen(tmp_path / "a", 1), gen(tmp_path / "b", 1), gen(tmp_path / "c", 2)
    assert len(a) == 5 and a[0].shape == (32, 32) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_status_on_a_finished_run_without_accounting(done_run):
    text = status.status(RunDir(done_run))
    assert "training     finished" in text and "report" in text and "seed metric" in text
    assert "checkpoint   ckpt-" in text


@pytest.mark.fault
def test_collect_takes_the_results_group_as_regular_files_only(done_run, tmp_path):
    import shutil

    run, outside = tmp_path / "run", tmp_path / "outside.txt"
    shutil.copytree(done_run, run, symlinks=True)
    outside.write_text("private")
    outside.chmod(0o600)
    (run / "report" / "link.txt").symlink_to(outside)       # leaves the run directory
    (run / "report" / "private.txt").write_text("mine")
    (run / "report" / "private.txt").chmod(0o600)
    half = run / "checkpoints" / ".ckpt-000000099.123.456.tmp"  # a checkpoint being written
    half.mkdir()
    (half / "ckpt.index").write_bytes(b"half")
    shutil.copy(run / "generator.keras", run / "generator_raw.keras")
    (run / "requeues.jsonl").write_text('{"action": "requeue"}\n')
    dest = tmp_path / "home"
    with log_lines() as logs:
        collect.collect(RunDir(run), dest, include_checkpoints=True)
    assert not (dest / "report" / "link.txt").exists() and any("link.txt" in x and "outside" in x for x in logs)
    assert (dest / "report" / "private.txt").stat().st_mode & 0o777 == 0o600, "a private file stays private"
    assert not list((dest / "checkpoints").glob(".*")), "no temp is ever collected"
    assert (dest / "generator_raw.keras").is_file() and (dest / "requeues.jsonl").is_file()
    (run / "report" / "private.txt").unlink()
    r = collect.collect(RunDir(run), dest, include_checkpoints=True, update=True)
    assert r["no_longer_in_run"] == ["report/private.txt"] and (dest / "report" / "private.txt").is_file()


def test_status_shows_local_jobs_real_states_and_why_one_failed(dataset32, tmp_path):
    def train(run, *extra):
        return subprocess.run([sys.executable, "-m", "oasis_dcgan.cli", "train", str(dataset32), str(run),
                               "--executor", "local", "--ranks", "1", "--epochs", "1", "--set",
                               "train.max_steps_per_epoch=2", "--set", "train.intra_op_threads=1", *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=600)

    r = train(tmp_path / "ok", "--batch-size", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    text = status.status(RunDir(tmp_path / "ok"))
    assert "UNKNOWN" not in text and "COMPLETED" in text.split("train", 1)[1].splitlines()[0], text
    r = train(tmp_path / "bad", "--batch-size", "4096")
    assert r.returncode != 0
    text = status.status(RunDir(tmp_path / "bad"))
    assert "FAILED" in text and "cannot fill one batch" in text, text


@pytest.mark.fault
def test_a_file_swapped_for_a_symlink_mid_collect_is_never_read_through_it(done_run, tmp_path, monkeypatch):
    """The swap lands after the listing and before the copy opens the file: what is read is
    what the open checked, a regular file of the run, never the link's target."""
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(done_run), str(run)], check=True)
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY\n")
    real = collect.open_regular

    def swap_then_open(base, rel):
        if rel.as_posix() == "report/metrics.json":
            (base / rel).unlink()
            (base / rel).symlink_to(secret)
        return real(base, rel)

    monkeypatch.setattr(collect, "open_regular", swap_then_open)
    with log_lines() as logs:
        collect.collect(RunDir(run), tmp_path / "home")
    home = tmp_path / "home"
    assert not (home / "report" / "metrics.json").exists()
    assert "PRIVATE KEY" not in "".join(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file())
    assert "  report/metrics.json\n" not in (home / "SHA256SUMS").read_text()
    assert any("metrics.json" in line and "no longer a regular file" in line for line in logs)


@pytest.mark.fault
def test_a_collect_that_fails_keeps_every_entry_sha256sums_had(done_run, tmp_path):
    home = tmp_path / "home"
    collect.collect(RunDir(done_run), home)
    listed = (home / "SHA256SUMS").read_text().splitlines()
    (home / "options.json").write_text("{}")  # a conflict: this collect fails
    (home / "report" / "loss.png").unlink()   # and has something to copy before it does
    with pytest.raises(CollectError):
        collect.collect(RunDir(done_run), home)
    assert sorted((home / "SHA256SUMS").read_text().splitlines()) == sorted(listed), \
        "a later --update can still tell what the run no longer has"


def test_a_new_executor_registered_in_one_place_runs_the_pipeline_dry_run_status_and_retry(
        png_release, tmp_path, monkeypatch, capsys):
    from oasis_dcgan import cli, config, rundir
    from oasis_dcgan.launch import executors, pipeline, retry
    from oasis_dcgan.training.distributed import World

    # Registered for this test only; its jobs import the module again, and so know the name.
    monkeypatch.setattr(executors, "EXECUTORS", dict(executors.EXECUTORS))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    sys.modules.pop("tests.recording_executor", None)
    from tests.recording_executor import RecordingExecutor as ex

    run, ds = tmp_path / "run", tmp_path / "ds"
    sets = [f'run_dir="{run}"', f'data.source="{png_release}"', f'data.dataset="{ds}"', "data.resolution=32",
            "cluster.preprocess_tasks=2", "cluster.tasks_per_node=1", "train.epochs=1", "train.max_steps_per_epoch=2",
            "train.intra_op_threads=1", "metrics.batches=2", "metrics.nn_samples=8", "metrics.diversity_samples=4"]
    toml = tmp_path / "run.toml"
    toml.write_text("\n".join(sets) + "\n")
    assert cli.main(["submit", str(toml), "--executor", ex.name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#recorder oasis-preprocess role=preprocess tasks=2" in out and "#recorder oasis-train role=train" in out
    assert not ex.submitted and not run.exists(), "a dry run submits nothing"

    res = pipeline.submit_pipeline(config.load(None, sets + [f'cluster.executor="{ex.name}"']))
    stages = [s[0] for s in ex.submitted]
    assert stages == ["oasis-preprocess", "oasis-seal", "oasis-train", "oasis-postprocess"]
    assert ex.submitted[0][2] == 2 and ex.submitted[1][3] == res["jobs"]["preprocess"], "chained"
    assert RunDir(run).report_file(rundir.REPORT_HTML).is_file()
    recorded = {j["stage"]: j for j in status.job_states(RunDir(run))}
    assert {j["executor"] for j in recorded.values()} == {ex.name}
    assert all(j["state"] == "COMPLETED" for j in recorded.values()), recorded

    job_id, _ = ex().this_job()
    retry.note_failure(RunDir(run), World(rank=0, size=1, job_id=job_id), ValueError("an unforeseen bug"))
    assert retry.main([str(run), "--rc", "1", "--executor", ex.name]) == 0
    assert ex.requeued == [job_id] and retry.read_decisions(RunDir(run))[-1]["action"] == "requeue"
    assert "requeue 1 of" in status.status(RunDir(run))
