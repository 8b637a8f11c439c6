"""`oasis-dcgan`: one command, a subcommand per job and tool. Run `oasis-dcgan -h`.

This module parses arguments and dispatches; what a command does lives in its layer
(prep, training, post, launch).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from . import config, rundir
from .launch import executors
from .prep import layouts

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The flags that set a config key, per command. Each flag's type, choices and help come from the
# key's declaration in config.py; a flag given wins over --config and --set.
KEY_FLAGS = {
    "preprocess": (("--resolution", "data.resolution"), ("--layout", "data.layout"), ("--skip-bad", "data.skip_bad"),
                   ("--shard-size", "data.shard_size"), ("--slices", "data.slices"),
                   ("--slice-range", "data.slice_range"), ("--tasks", "cluster.preprocess_tasks")),
    "train": (("--epochs", "train.epochs"), ("--batch-size", "train.batch_size"), ("--seed", "train.seed"),
              ("--checkpoint-every-steps", "train.checkpoint_every_steps"),
              ("--deterministic", "train.deterministic"), ("--verify-data", "train.verify_data")),
    "postprocess": (("--batches", "metrics.batches"),),
    "submit": (("--executor", "cluster.executor"),),
    "sweep": (("--executor", "cluster.executor"), ("--max-parallel", "cluster.max_parallel")),
}
# Where each command runs its job when --executor is not given.
EXECUTOR_DEFAULTS = {"preprocess": executors.InProcess.name, "train": executors.Auto.name,
                     "postprocess": executors.InProcess.name, "demo": executors.Local.name}
# A packing's name on the command line (plain sbatch arrays): it becomes part of a lock file.
PACKING_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _die(msg: str, code: int = 2):
    print(f"oasis-dcgan: error: {msg}", file=sys.stderr)
    sys.exit(code)


# ----------------------------------------------------------------------------- subcommands

def _config(a):
    """The command's config: defaults, --config, --set, then the flags of KEY_FLAGS given."""
    cfg = config.load(a.config, a.set)
    for flag, name in KEY_FLAGS.get(a.cmd, ()):
        value = getattr(a, _dest(name))
        if value is not None:
            config.set_key(cfg, name, value)
    return cfg


def cmd_preprocess(a) -> int:
    from .launch import pipeline
    from .prep import pack

    cfg = _config(a)
    cfg.data.source, cfg.data.dataset = str(a.src), str(a.out)
    cfg.validate()
    tasks = cfg.cluster.preprocess_tasks
    if a.seal:  # the array's last step (slurm/preprocess.sbatch)
        m = pack.seal(a.out, a.packing or "")
    elif a.task is not None:  # one task of a plain sbatch array
        if a.task >= tasks:
            _die(f"--task {a.task}: must be below --tasks ({tasks}); tasks are numbered 0 to {tasks - 1}")
        if not a.packing:
            _die("--task needs --packing NAME, the same for every task of the array (slurm/preprocess.sbatch "
                 "passes the array's job id)")
        pack.start(a.src, a.out, cfg.data, token=a.packing, queued=True)
        r = pack.pack_task(a.out, a.task, tasks, a.packing)
        print(f"task {a.task}/{tasks}: {r['written']} shard(s) written, {r['kept']} kept, {r['images']} images")
        return 0
    else:
        m = pipeline.preprocess(cfg, a.executor, tasks)
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
    from .prep.manifest import load_manifest

    cfg = _config(a)
    cfg.data.dataset, cfg.run_dir = str(Path(a.dataset).resolve()), str(Path(a.run_dir).resolve())
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

    batches = getattr(a, _dest("metrics.batches"))
    report = pipeline.postprocess(a.run_dir, a.dataset, batches, a.executor, config_file=a.config,
                                  overrides=tuple(a.set))
    print(f"postprocess: report {report}")
    return 0


def _print_submitted(out: dict) -> None:
    print(f"\nrun directory: {out['run_dir']}")
    print("jobs: " + ", ".join(f"{k} {v}" for k, v in out["jobs"].items()))
    print(f"watch it:  oasis-dcgan status {out['run_dir']}")
    for hint in executors.get(out["executor"]).hints(out):
        print(f"           {hint}")
    if out.get("report"):
        print(f"report: {out['report']}")


def cmd_submit(a) -> int:
    import json

    from .launch import pipeline

    cfg = _config(a).validate()
    out = pipeline.submit_pipeline(cfg, dry_run=a.dry_run, collect_dest=a.collect or "",
                                   wait=True if a.wait else None)
    if not a.dry_run:
        _print_submitted(out)
        return 0
    print("# resolved config\n" + json.dumps(cfg.to_dict(), indent=2))
    for stage, text in out["scripts"].items():
        print(f"\n# ---- {stage}: the sbatch script submitit would submit\n{text}")
    print("\n(dry run: nothing was submitted)")
    return 0


def cmd_sweep(a) -> int:
    from .launch import sweep

    out = sweep.submit(_config(a).validate(), a.grid, a.seeds, dry_run=a.dry_run)
    print(out["listing"])
    if a.dry_run:
        for stage, text in out["scripts"].items():
            print(f"\n# ---- {stage}: the script submitit would submit\n{text}")
        print("\n(dry run: nothing was submitted)")
        return 0
    for arr in out["arrays"]:
        print(f"array {arr['job_id']}: {len(arr['runs'])} runs")
    print(f"sweep directory: {out['sweep_dir']}")
    if a.wait or a.collect:
        from .launch import collect, status

        sweep_dir = rundir.SweepDir(out["sweep_dir"])
        status.watch(lambda: status.sweep_status(sweep_dir), print)
        if a.collect:
            collect.collect_sweep(sweep_dir, a.collect)
    return 0


def cmd_sweep_report(a) -> int:
    from .launch import jobs

    if not rundir.SweepDir(a.sweep).record.is_file():
        _die(f"{a.sweep}: no {rundir.SWEEP_RECORD} here: not a sweep's directory")
    print(f"leaderboard: {jobs.sweep_report_job(a.sweep, a.batches)['leaderboard']}")
    return 0


def cmd_status(a) -> int:
    from .launch import status

    if not Path(a.run).is_dir():
        _die(f"{a.run}: no such run directory")
    sweep, run = rundir.SweepDir(a.run), rundir.RunDir(a.run)
    poll = (lambda: status.sweep_status(sweep)) if sweep.record.is_file() else (lambda: status.run_status(run))
    if a.watch:
        status.watch(poll, print, first_s=a.watch)
    else:
        print(poll()[0])
    return 0


def cmd_collect(a) -> int:
    from .launch import collect

    sweep = rundir.SweepDir(a.run)
    if sweep.record.is_file():
        collect.collect_sweep(sweep, a.dest, a.include_checkpoints, update=a.update)
    else:
        collect.collect(rundir.RunDir(a.run), a.dest, a.include_checkpoints, update=a.update)
    return 0


def cmd_generate(a) -> int:
    from .post import samples

    given = Path(a.run_or_model)
    model = rundir.RunDir(given).generator if given.is_dir() else given   # a run's final generator, or the file
    images = samples.generate(model, a.n, a.seed)
    if images is None:
        _die(f"{model}: no trained generator (is training finished?)")
    samples.write_pngs(images, a.out)
    print(f"wrote {a.n} sample(s) to {a.out} (seed {a.seed})")
    return 0


def cmd_evaluate(a) -> int:
    from .post import evaluate

    evaluate.evaluate(a.images, a.dataset, a.out, _config(a).metrics, a.split, a.cases)
    return 0


def cmd_sample_data(a) -> int:
    from .prep import sample_data

    root = sample_data.WRITERS[a.layout](a.out, a.cases, a.seed, fmt=a.format, discs=a.discs, rescans=a.rescans)
    print(f"sample data: {root}")
    return 0


def cmd_config(a) -> int:
    from . import config

    sys.stdout.write(config.example() if a.example else config.to_toml(config.load(a.config, a.set)))
    return 0


def cmd_demo(a) -> int:
    from . import demo

    return demo.run(Path(a.out), executor=a.executor, epochs=a.epochs, overrides=a.set)


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


def _dest(name: str) -> str:
    return "key_" + name.replace(".", "__")


def _key_value(name: str, typ: type):
    """An argparse type for a key: its type, then its declared rule, or one usage error naming the key."""
    def parse(text: str):
        try:
            value = typ(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {typ.__name__} ({name})") from None
        try:
            config.check_value(name, value)
        except config.ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value
    return parse


def _key_flags(p, cmd: str) -> None:
    """The command's KEY_FLAGS, each typed, checked and documented by its key's declaration."""
    for flag, name in KEY_FLAGS.get(cmd, ()):
        f, typ = config.declaration(name)
        rule, dest = f.metadata.get("rule"), _dest(name)
        text = f"{f.metadata['doc']} (config key {name}; default {f.default!r})"
        if typ is bool:
            p.add_argument(flag, dest=dest, action="store_const", const=True, default=None, help=text)
            continue
        choices = rule.options() if rule else None
        p.add_argument(flag, dest=dest, type=_key_value(name, typ), choices=choices, default=None, help=text,
                       metavar=None if choices else name.rsplit(".", 1)[-1].upper())


def _executor(p, cmd: str, choices: tuple | None = None) -> None:
    choices = tuple(executors.EXECUTORS) if choices is None else choices
    p.add_argument("--executor", default=EXECUTOR_DEFAULTS[cmd], choices=choices,
                   help="where the job runs: " + executors.describe(choices))


def _config_options(p) -> None:
    p.add_argument("--config", help="TOML config (see slurm/example.toml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=2e-4 (repeatable)")


def _add_job_commands(sub) -> None:
    """preprocess, dataset, train, postprocess: the three jobs and the dataset tools."""
    p = sub.add_parser("preprocess", help="pack images or volumes into verified HDF5 shards")
    p.add_argument("src", type=Path, help="the source: the OASIS PNG release, raw OASIS-1 sessions, or images")
    p.add_argument("out", type=Path, help="the dataset directory to write (data.dataset)")
    _key_flags(p, "preprocess")
    p.add_argument("--task", type=_count(0), help="run only array task TASK (0 to TASKS-1) of --tasks, no seal; "
                   "for plain sbatch arrays (slurm/preprocess.sbatch)")
    p.add_argument("--packing", type=_packing_name, help="with --task and --seal: the packing's name, the same "
                   "for every task of a plain sbatch array")
    p.add_argument("--seal", action="store_true", help="only verify the shards and write manifest.json")
    _executor(p, "preprocess")
    _config_options(p)
    p.set_defaults(fn=cmd_preprocess)

    p = sub.add_parser("dataset", help="inspect or verify a packed dataset")
    p.add_argument("action", choices=("info", "verify"), help="info: counts and a contact sheet; verify: re-hash")
    p.add_argument("dir", help="the dataset directory (holding manifest.json)")
    p.add_argument("--sheet", help="contact sheet PNG path (info; default DIR/contact_sheet.png)")
    p.set_defaults(fn=cmd_dataset)

    p = sub.add_parser("train", help="train (or resume) a run")
    p.add_argument("dataset", help="the packed dataset (data.dataset)")
    p.add_argument("run_dir", help="the run directory: new, or one to resume (run_dir)")
    p.add_argument("--resolution", type=int, help="check: the dataset must hold this size (it decides the model)")
    _key_flags(p, "train")
    p.add_argument("--ranks", type=_count(1), help="Horovod ranks on one node (sets cluster.nodes=1 and "
                   "cluster.tasks_per_node)")
    _executor(p, "train")
    p.add_argument("--no-wait", action="store_true", help="return once submitted")
    p.add_argument("--restart", action="store_true",
                   help="start afresh: move RUN_DIR's checkpoints and record to RUN_DIR/set-aside/ first")
    _config_options(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("postprocess", help="metrics, figures, GIF and report for a run")
    p.add_argument("run_dir", help="the run directory")
    p.add_argument("--dataset", help="the dataset to compare against (default: the run's)")
    _key_flags(p, "postprocess")
    _executor(p, "postprocess")
    _config_options(p)  # on top of the run's own config (its options.json)
    p.set_defaults(fn=cmd_postprocess)


def _packing_name(text: str) -> str:
    if not PACKING_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: letters, digits, '_', '.', '-' only (at most 64)")
    return text


def _add_tool_commands(sub) -> None:
    """submit, status, collect, generate, evaluate, config, sample-data, demo: around the jobs."""
    from .prep import sample_data

    p = sub.add_parser("submit", help="submit preprocess -> train -> postprocess (-> collect) as chained jobs")
    p.add_argument("config", help="the TOML config (start from slurm/example.toml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the config and sbatch scripts; submit nothing")
    _key_flags(p, "submit")
    p.add_argument("--collect", metavar="DEST", help="also chain a collect job copying results to DEST")
    p.add_argument("--wait", action="store_true", help="wait for every stage (always so with the local executor)")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("status", help="where a run or a sweep stands")
    p.add_argument("run", help="the run directory, or a sweep's (one line per run)")
    p.add_argument("--watch", type=float, nargs="?", const=30.0, default=0, metavar="SECONDS",
                   help="poll until it ends, first every SECONDS (30), then less often while nothing changes")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("collect", help="copy a run's results off scratch, verified")
    p.add_argument("run", help="the run directory (on scratch), or a sweep's: every run and the leaderboard")
    p.add_argument("dest", help="where the results go (a directory; made if missing)")
    p.add_argument("--include-checkpoints", action="store_true")
    p.add_argument("--update", action="store_true",
                   help="refresh an earlier collection of this run (it went on): replace the files that changed")
    p.set_defaults(fn=cmd_collect)

    p = sub.add_parser("generate", help="PNG samples from a trained generator")
    p.add_argument("run_or_model", help="a finished run directory, or a generator .keras file")
    p.add_argument("-n", type=_count(1), default=16, help="how many images")
    p.add_argument("out", help="the directory the PNGs go to")
    p.add_argument("--seed", type=_count(0), default=0)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("evaluate", help="the report's checks, anchors and verdicts for any set of images")
    p.add_argument("images", help="a .npy/.npz array [N, H, W] (uint8, or floats on (-1, 1)), a folder of PNGs, or a "
                   "packed dataset (with --split)")
    p.add_argument("dataset", help="a packed dataset at the images' size: its training split is what copying means")
    p.add_argument("--out", required=True, help="the directory metrics.json and report.md go to")
    p.add_argument("--split", help="when IMAGES is a packed dataset: the split judged (real slices, by subject)")
    p.add_argument("--cases", help="a file of case ids, one a line, one per image: real slices, resampled by subject")
    _config_options(p)   # the metrics.* keys
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("config", help="print every config key with its doc: resolved from --config/--set, or the "
                       "defaults (--example, which is slurm/example.toml)")
    p.add_argument("--example", action="store_true", help="every key at its default")
    _config_options(p)
    p.set_defaults(fn=cmd_config)

    p = sub.add_parser("sample-data", help="write offline sample brains in an OASIS layout")
    p.add_argument("out", help="the directory to write them to")
    p.add_argument("--layout", choices=tuple(sample_data.WRITERS), default=layouts.PNG)
    p.add_argument("--cases", type=_count(1), nargs=3, default=[24, 4, 4], metavar=("TRAIN", "VALIDATE", "TEST"))
    p.add_argument("--format", choices=("analyze", "nifti", "nifti-gz", "nifti-lia", "nifti-gz-lia"),
                   default="analyze", help=f"{layouts.RAW}: the volumes' file format and voxel order")
    p.add_argument("--discs", type=_count(0), default=0, help=f"{layouts.RAW}: deal the sessions into disc1/ ... "
                   "discN/")
    p.add_argument("--rescans", type=_count(0), default=0,
                   help=f"{layouts.RAW}: this many subjects also get an MR2 session")
    p.add_argument("--seed", type=_count(0), default=0)
    p.set_defaults(fn=cmd_sample_data)

    p = sub.add_parser("demo", help="the whole pipeline on sample data, 64x64, 2 ranks")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--epochs", type=_count(1), help="default: the demo preset's (40)")
    _executor(p, "demo", executors.queued())
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override on top of the demo's (repeatable), e.g. train.adam_beta1=0.5")
    p.set_defaults(fn=cmd_demo)


def _add_sweep_commands(sub) -> None:
    """sweep, sweep-report: a grid of runs, and its leaderboard."""
    p = sub.add_parser("sweep", help="train a grid of runs (one array on Slurm), each in a directory named by its "
                       "values")
    p.add_argument("config", help="the TOML config the runs share; its run_dir holds the sweep")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help='one key\'s values (repeatable; runs are the product); values with commas as a TOML array: '
                        'train.augment=["cutout,color",""]')
    p.add_argument("--seeds", type=_count(0), default=0, metavar="N", help="each combination with train.seed 0..N-1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--dry-run", action="store_true", help="list the runs and print the scripts; submit nothing")
    p.add_argument("--wait", action="store_true", help="watch the sweep until every run and the leaderboard are done")
    p.add_argument("--collect", metavar="DEST", help="then copy every run and the leaderboard to DEST (implies --wait)")
    _key_flags(p, "sweep")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("sweep-report", help="(re)write a sweep's leaderboard, reporting finished runs first")
    p.add_argument("sweep", help="the sweep's directory (its config's run_dir)")
    p.add_argument("--batches", type=_count(1), default=None, help="the seed metric's real batches (default: "
                   "each run's metrics.batches)")
    p.set_defaults(fn=cmd_sweep_report)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="oasis-dcgan", description="Pack OASIS brain slices, train the seed's DCGAN "
                                 "with Horovod on Slurm, and report.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_job_commands(sub)
    _add_tool_commands(sub)
    _add_sweep_commands(sub)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from . import errors, logs

    logs.to_console()
    try:
        return a.fn(a) or 0
    except Exception as e:
        code = errors.exit_code(e)
        if code is None:
            raise  # not foreseen: the traceback is what a bug report needs
        _die(str(e), code)

if __name__ == "__main__":
    sys.exit(main())
