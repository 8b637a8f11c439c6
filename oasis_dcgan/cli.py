"""`oasis-dcgan`: one command, a subcommand per job and tool. Run `oasis-dcgan -h`.

This module parses arguments and dispatches; what a command does lives in its layer
(prep, training, post, launch).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXECUTOR_HELP = ("where to run: auto (Slurm when a controller answers, else local), local (submitit's local "
                 "executor), slurm, or inprocess (this process; also what srun-launched ranks use)")


def _die(msg: str, code: int = 2):
    print(f"oasis-dcgan: error: {msg}", file=sys.stderr)
    sys.exit(code)


# ----------------------------------------------------------------------------- subcommands

def _preprocess_config(a):
    from . import config

    cfg = config.load(a.config, a.set)
    cfg.data.source, cfg.data.dataset = str(a.src), str(a.out)
    for key, val in (("resolution", a.resolution), ("layout", a.layout), ("shard_size", a.shard_size),
                     ("slices", a.slices), ("slice_range", a.slice_range)):
        if val is not None:
            setattr(cfg.data, key, val)
    cfg.data.skip_bad = cfg.data.skip_bad or a.skip_bad
    return cfg.validate()


def cmd_preprocess(a) -> int:
    from .launch import pipeline
    from .prep import pack

    cfg = _preprocess_config(a)
    if a.task is not None and a.task >= a.tasks:
        _die(f"--task {a.task}: must be below --tasks ({a.tasks}); tasks are numbered 0 to {a.tasks - 1}")
    if a.seal:  # the array's last step (slurm/preprocess.sbatch)
        m = pack.seal(a.out)
    elif a.task is not None:  # one task of a plain sbatch array
        r = pack.run_task(a.src, a.out, a.task, a.tasks, **cfg.data.plan_kwargs())
        print(f"task {a.task}/{a.tasks}: {r['written']} shard(s) written, {r['kept']} kept, {r['images']} images")
        return 0
    else:
        m = pipeline.preprocess(cfg, a.executor, a.tasks)
    print(f"dataset {Path(a.out).resolve()}: " + ", ".join(f"{k} {v}" for k, v in m["counts"].items())
          + f"; {len(m['skipped'])} skipped")
    return 0


def cmd_dataset(a) -> int:
    from .prep import info, manifest

    if a.action == "info":
        print(info.info(a.dir, sheet=a.sheet or str(Path(a.dir) / "contact_sheet.png")))
        return 0
    problems = manifest.verify(a.dir)
    for p in problems:
        print(f"MISMATCH {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{a.dir}: OK (every shard matches its sha256, shape and dtype)")
    return 0


def _train_config(a):
    from . import config
    from .prep.manifest import load_manifest

    cfg = config.load(a.config, a.set)
    cfg.data.dataset, cfg.run_dir = str(Path(a.dataset).resolve()), str(Path(a.run_dir).resolve())
    t = cfg.train
    for key, val in (("epochs", a.epochs), ("batch_size", a.batch_size), ("seed", a.seed),
                     ("checkpoint_every_steps", a.checkpoint_every_steps)):
        if val is not None:
            setattr(t, key, val)
    t.deterministic = t.deterministic or a.deterministic
    t.verify_data = t.verify_data or a.verify_data
    if a.ranks is not None:
        cfg.cluster.nodes, cfg.cluster.tasks_per_node = 1, a.ranks
    res = load_manifest(cfg.data.dataset)["resolution"]
    if a.resolution and a.resolution != res:
        _die(f"--resolution {a.resolution}: the dataset {cfg.data.dataset} holds {res}x{res} images; "
             f"repack it with oasis-dcgan preprocess --resolution {a.resolution}")
    cfg.data.resolution = res
    return cfg.validate()


def cmd_train(a) -> int:
    from .launch import pipeline

    results = pipeline.train(_train_config(a), a.executor, wait=not a.no_wait, restart=a.restart)
    if len(results) > 1:
        same = len({r["weights_sha256"] for r in results}) == 1
        print(f"train: finished on {len(results)} rank(s); weights identical across ranks: {same}")
        return 0 if same else 1
    return 0


def cmd_postprocess(a) -> int:
    from .launch import pipeline

    report = pipeline.postprocess(a.run_dir, a.dataset, a.batches, a.executor, config_file=a.config,
                                  overrides=tuple(a.set))
    print(f"postprocess: report {report}")
    return 0


def _print_submitted(out: dict) -> None:
    print(f"\nrun directory: {out['run_dir']}")
    print("jobs: " + ", ".join(f"{k} {v}" for k, v in out["jobs"].items()))
    print(f"watch it:  oasis-dcgan status {out['run_dir']}")
    if out["executor"] == "slurm":
        print(f"           squeue -j {','.join(out['jobs'].values())}")
        print(f"           tail -f {out['run_dir']}/log.txt")
    if out.get("report"):
        print(f"report: {out['report']}")


def cmd_submit(a) -> int:
    import json

    from . import config
    from .launch import environment, pipeline

    if a.cluster == "dev":
        environment.use_dev_cluster()
    cfg = config.load(a.config, a.set)
    out = pipeline.submit_pipeline(cfg, executor=a.executor, dry_run=a.dry_run, collect_dest=a.collect or "",
                                   wait=True if a.wait else None)
    if not a.dry_run:
        _print_submitted(out)
        return 0
    print("# resolved config\n" + json.dumps(cfg.to_dict(), indent=2))
    for stage, text in out["scripts"].items():
        print(f"\n# ---- {stage}: the sbatch script submitit would submit\n{text}")
    print("\n(dry run: nothing was submitted)")
    return 0


def cmd_status(a) -> int:
    from .launch import environment, status

    if a.cluster == "dev":
        environment.use_dev_cluster(start=False)
    if not Path(a.run).is_dir():
        _die(f"{a.run}: no such run directory")
    print(status.status(a.run))
    return 0


def cmd_collect(a) -> int:
    from .launch import collect

    collect.collect(a.run, a.dest, a.include_checkpoints, update=a.update)
    return 0


def cmd_generate(a) -> int:
    from .post import samples

    images = samples.generate(a.run_or_model, a.n, a.seed)
    if images is None:
        _die(f"{samples.generator_file(a.run_or_model)}: no trained generator (is training finished?)")
    samples.write_pngs(images, a.out)
    print(f"wrote {a.n} sample(s) to {a.out} (seed {a.seed})")
    return 0


def cmd_sample_data(a) -> int:
    from .prep import sample_data

    if a.layout == "oasis-png":
        root = sample_data.write_png_release(a.out, cases=tuple(a.cases), seed=a.seed)
    else:
        root = sample_data.write_raw_release(a.out, subjects=sum(a.cases), seed=a.seed, fmt=a.format,
                                             discs=a.discs, rescans=a.rescans)
    print(f"sample data: {root}")
    return 0


def cmd_config(a) -> int:
    from . import config

    sys.stdout.write(config.example() if a.example else config.to_toml(config.load(a.config, a.set)))
    return 0


def cmd_demo(a) -> int:
    from . import demo
    from .launch import environment

    if a.cluster == "dev":
        environment.use_dev_cluster()
    return demo.run(Path(a.out), executor="slurm" if a.cluster == "dev" else "local", epochs=a.epochs,
                    overrides=a.set)


# ----------------------------------------------------------------------------- parser

def _count(low: int):
    """An argparse type: an integer of at least `low`, or one clear usage error."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"{n}: must be >= {low}")
        return n
    return parse


def _config_options(p) -> None:
    p.add_argument("--config", help="TOML config (see slurm/example.toml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=2e-4 (repeatable)")


def _add_job_commands(sub) -> None:
    """preprocess, dataset, train, postprocess: the three jobs and the dataset tools."""
    p = sub.add_parser("preprocess", help="pack images or volumes into verified HDF5 shards")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--resolution", type=int, choices=config.RESOLUTIONS)
    p.add_argument("--layout", choices=config.LAYOUTS)
    p.add_argument("--skip-bad", action="store_true", help="skip bad files and record them, instead of failing")
    p.add_argument("--tasks", type=_count(1), default=1, help="array tasks (parallel shard writers)")
    p.add_argument("--task", type=_count(0), help="run only array task TASK (0 to TASKS-1) of --tasks (no seal); "
                   "for sbatch arrays")
    p.add_argument("--seal", action="store_true", help="only verify the shards and write manifest.json")
    p.add_argument("--shard-size", type=int)
    p.add_argument("--slices", type=int,
                   help="raw volumes: axial slices per volume, spread over the brain (default 32)")
    p.add_argument("--slice-range", help="raw volumes: take them from RAS axial voxels a:b, not the brain's extent")
    p.add_argument("--executor", default="inprocess", choices=config.EXECUTORS,
                   help=EXECUTOR_HELP)
    _config_options(p)
    p.set_defaults(fn=cmd_preprocess)

    p = sub.add_parser("dataset", help="inspect or verify a packed dataset")
    p.add_argument("action", choices=("info", "verify"))
    p.add_argument("dir")
    p.add_argument("--sheet", help="contact sheet PNG path (info; default DIR/contact_sheet.png)")
    p.set_defaults(fn=cmd_dataset)

    p = sub.add_parser("train", help="train (or resume) a run")
    p.add_argument("dataset")
    p.add_argument("run_dir")
    p.add_argument("--resolution", type=int, choices=config.RESOLUTIONS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--ranks", type=_count(1), help="Horovod ranks (one node)")
    p.add_argument("--executor", default="auto", choices=config.EXECUTORS, help=EXECUTOR_HELP)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--verify-data", action="store_true",
                   help="re-hash every shard at start (sha256), not only check sizes and headers")
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every-steps", type=int)
    p.add_argument("--no-wait", action="store_true", help="return once submitted")
    p.add_argument("--restart", action="store_true",
                   help="start afresh: move RUN_DIR's checkpoints and record to RUN_DIR/set-aside/ first")
    _config_options(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("postprocess", help="metrics, figures, GIF and report for a run")
    p.add_argument("run_dir")
    p.add_argument("--dataset")
    p.add_argument("--batches", type=int)
    p.add_argument("--executor", default="inprocess", choices=config.EXECUTORS,
                   help=EXECUTOR_HELP)
    _config_options(p)  # on top of the run's own config (its options.json)
    p.set_defaults(fn=cmd_postprocess)


def _add_tool_commands(sub) -> None:
    """submit, status, collect, generate, sample-data, demo: around the jobs."""
    p = sub.add_parser("submit", help="submit preprocess -> train -> postprocess (-> collect) as chained jobs")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dry-run", action="store_true", help="print the config and sbatch scripts; submit nothing")
    p.add_argument("--executor", default="auto", choices=[e for e in config.EXECUTORS if e != "inprocess"])
    p.add_argument("--cluster", choices=("dev",), help="use this repository's dev Slurm cluster")
    p.add_argument("--collect", metavar="DEST", help="also chain a collect job copying results to DEST")
    p.add_argument("--wait", action="store_true", help="wait for every stage (always so with the local executor)")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("status", help="where a run stands")
    p.add_argument("run")
    p.add_argument("--cluster", choices=("dev",))
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("collect", help="copy a run's results off scratch, verified")
    p.add_argument("run")
    p.add_argument("dest")
    p.add_argument("--include-checkpoints", action="store_true")
    p.add_argument("--update", action="store_true",
                   help="refresh an earlier collection of this run (it went on): replace the files that changed")
    p.set_defaults(fn=cmd_collect)

    p = sub.add_parser("generate", help="PNG samples from a trained generator")
    p.add_argument("run_or_model")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("config", help="print every config key with its doc: resolved from --config/--set, or the "
                       "defaults (--example, which is slurm/example.toml)")
    p.add_argument("--example", action="store_true", help="every key at its default")
    _config_options(p)
    p.set_defaults(fn=cmd_config)

    p = sub.add_parser("sample-data", help="write offline sample brains in an OASIS layout")
    p.add_argument("out")
    p.add_argument("--layout", choices=("oasis-png", "oasis-raw"), default="oasis-png")
    p.add_argument("--cases", type=int, nargs=3, default=[24, 4, 4], metavar=("TRAIN", "VALIDATE", "TEST"))
    p.add_argument("--format", choices=("analyze", "nifti", "nifti-gz", "nifti-lia", "nifti-gz-lia"),
                   default="analyze", help="oasis-raw: the volumes' file format and voxel order")
    p.add_argument("--discs", type=int, default=0, help="oasis-raw: deal the sessions into disc1/ ... discN/")
    p.add_argument("--rescans", type=int, default=0, help="oasis-raw: this many subjects also get an MR2 session")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_sample_data)

    p = sub.add_parser("demo", help="the whole pipeline on sample data, 64x64, 2 ranks")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--epochs", type=_count(1), help="default: the demo preset's (40)")
    p.add_argument("--cluster", choices=("dev",), help="run through the dev Slurm cluster instead of locally")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override on top of the demo's (repeatable), e.g. train.adam_beta1=0.5")
    p.set_defaults(fn=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="oasis-dcgan", description="Pack OASIS brain slices, train the reference DCGAN "
                                 "with Horovod on Slurm, and report.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_job_commands(sub)
    _add_tool_commands(sub)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from .config import ConfigError
    from .fsutil import StorageError
    from .launch.collect import CollectError
    from .post.metrics import MetricError
    from .prep.manifest import DataError
    from .training.checkpoint import CheckpointError
    from .training.runlock import RunLockError

    try:
        return a.fn(a) or 0
    except (ConfigError, DataError, CollectError, MetricError, FileNotFoundError, ValueError) as e:
        _die(str(e), 1 if isinstance(e, (DataError, CollectError)) else 2)
    except (CheckpointError, RunLockError, StorageError) as e:
        _die(str(e), 1)


if __name__ == "__main__":
    sys.exit(main())
