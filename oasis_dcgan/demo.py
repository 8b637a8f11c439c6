"""The README's first command: the whole pipeline on offline sample brains, no cluster needed.

sample brains (OASIS PNG layout, 256x256) -> preprocess at 64x64 as a 2-task array ->
train on 2 Horovod ranks -> postprocess -> collect, all chained by launch.pipeline,
through submitit's local executor (or Slurm with --executor slurm; `make demo-cluster` uses the dev cluster).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from . import config, fsutil, rundir
from .launch import executors, pipeline
from .logs import format_seconds
from .prep import sample_data

log = logging.getLogger(__name__)


class TrainingWatch:
    """What a person watching the demo wants while it trains: a line per finished epoch."""

    def __init__(self, run: rundir.RunDir, epochs: int):
        self.run, self.epochs = run, epochs
        self.offset = 0
        self.stage = ""

    def __call__(self, stage: str) -> None:
        if stage != self.stage:
            self.stage = stage
            log.info(f"[demo] {stage} running...")
        if stage != "train":
            return
        rows, self.offset = fsutil.follow_jsonl(self.run.stats, self.offset)
        for rec in rows:
            if rec.get("kind") == "epoch":
                self.show(rec)

    def show(self, rec: dict) -> None:
        e = rec["epoch"]
        eta = (self.epochs - e) * (rec["epoch_time"] + 0.5)
        grid = self.run.sample(e, "png")
        log.info(f"[demo] epoch {e}/{self.epochs}  {rec['images_per_s']:.0f} img/s  ETA {format_seconds(eta)}  "
                 f"G {rec['g_loss']:.3f}  D {rec['d_loss']:.3f}  samples: {grid}")


def run(out: Path, executor: str = executors.Local.name, epochs: int | None = None,
        overrides: list[str] | None = None) -> int:
    """The demo preset (oasis_dcgan/presets/demo.toml) on sample brains; `epochs` and `overrides` on top."""
    t0 = time.time()
    out = out.resolve()
    src = out / "oasis"
    if not (src / "keras_png_slices_data" / "keras_png_slices_train").is_dir():
        sample_data.write_png_release(src, cases=(24, 4, 4), rng_seed=0)
    else:
        print(f"[demo] reusing sample data in {src}")
    cfg = config.load(config.preset("demo"), [
        f'run_dir="{out / "run"}"',
        f'data.source="{src}"',
        f'data.dataset="{out / "dataset-64"}"',
        *([f"train.epochs={epochs}"] if epochs else []),
        *(overrides or []),
        f'cluster.executor="{executor}"',
    ])
    run = rundir.RunDir(out / "run")
    res = pipeline.submit_pipeline(cfg, collect_dest=str(out / "results"), wait=True,
                                   watch=TrainingWatch(run, cfg.train.epochs))
    report = run.report_file(rundir.REPORT_HTML)
    print(f"\n[demo] finished in {(time.time() - t0) / 60:.1f} min")
    print(f"[demo] run directory:  {res['run_dir']}")
    print(f"[demo] collected to:   {out / 'results'}")
    print(f"[demo] report:         {report}")
    return 0 if report.is_file() else 1
