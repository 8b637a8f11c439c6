"""End to end on the real dev Slurm cluster: the chained pipeline submitted through submitit."""

import json
import subprocess
import time

import pytest

from oasis_dcgan import config
from oasis_dcgan.launch import pipeline, slurmctl, status
from oasis_dcgan.rundir import RunDir
from oasis_dcgan.prep import manifest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


RUN_NAME = "run with space's"  # paths with spaces and quotes must survive into the sbatch scripts


def wait_for_jobs(ids, timeout=900):
    """Until every job id has left the queue; returns sacct's top-level states."""
    end = time.time() + timeout
    while time.time() < end:
        q = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"], capture_output=True, text=True)
        if q.returncode == 0 and not q.stdout.strip():
            break
        time.sleep(2)
    time.sleep(1)
    return slurmctl.sacct(ids)


def tiny_config(tmp_path, png_release, **extra):
    sets = [f'run_dir="{tmp_path / RUN_NAME}"', f'data.source="{png_release}"',
            f'data.dataset="{tmp_path / "ds"}"', "data.resolution=32", "data.shard_size=64",
            "train.epochs=1", "train.max_steps_per_epoch=3", "train.intra_op_threads=1",
            "cluster.tasks_per_node=2", "cluster.preprocess_tasks=2", "cluster.timeout_min=20",
            "metrics.batches=5", "metrics.nn_samples=8", "metrics.diversity_samples=4"]
    return config.load(None, sets + [f"{k}={v}" for k, v in extra.items()])


def test_chained_pipeline_on_slurm(devcluster, png_release, tmp_path):
    cfg = tiny_config(tmp_path, png_release, **{"cluster.executor": '"slurm"'})
    out = pipeline.submit_pipeline(cfg, wait=False)
    ids = list(out["jobs"].values())
    assert set(out["jobs"]) == {"preprocess", "seal", "train", "postprocess"}
    rows = wait_for_jobs(ids)
    top = {r["JobID"]: r["State"] for r in rows if "." not in r["JobID"]}
    # sacct: every job COMPLETED, the two array tasks included
    pre = out["jobs"]["preprocess"]
    assert top.get(f"{pre}_0") == "COMPLETED" and top.get(f"{pre}_1") == "COMPLETED", top
    for stage in ("seal", "train", "postprocess"):
        assert top.get(out["jobs"][stage]) == "COMPLETED", (stage, top)
    # the train job ran 2 ranks, and they ended with identical weights
    run = tmp_path / RUN_NAME
    ranks = [json.loads((run / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["size"] for r in ranks] == [2, 2]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["pid"] != ranks[1]["pid"]
    # the artefacts of all three stages
    assert manifest.verify(tmp_path / "ds") == []
    for rel in ("options.json", "stats.jsonl", "generator.keras", "samples/epoch_0001.png",
                "report/metrics.json", "report/loss.png", "report/report.html", "report/progress.gif"):
        assert (run / rel).is_file(), rel
    assert "COMPLETED" in status.status(RunDir(run))
