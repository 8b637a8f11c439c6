"""The suite's one typed configuration. Defaults are the seed project's settings.

A config is a TOML file with the sections below; `--set section.key=value` overrides any
key. Each key is declared once, here: its type (the annotation), its default, a one-line doc
and its rule. Everything else is derived from the declarations: the checks `validate()` runs,
`oasis-dcgan config --example` (which slurm/example.toml is), the CLI's flags and choices (the
choices of data.layout and cluster.executor come from their registries, prep/layouts.py and
launch/executors.py, which import nothing of this module). Unknown keys,
wrong types and impossible values are refused with the key named. The resolved config is
written into every run directory (options.json).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .launch.executors import Auto, queued as queued_executors
from .prep.layouts import AUTO_LAYOUT, LAYOUTS
from .prep.manifest import SPLITS
from .errors import ConfigError

RESOLUTIONS = (32, 64, 128, 256)
PRECISIONS = ("fp32", "bf16", "fp16")
BCE, HINGE = "bce", "hinge"   # train.loss: training/objective.py computes them
LOSSES = {BCE: "binary cross-entropy", HINGE: "hinge"}   # each in words, for the report
AUGMENTATIONS = ("translation", "cutout", "color")     # train.augment: training/objective.py applies them
SEED_MAX = 2 ** 32 - 1
# Slurm's own names (partitions, accounts, QOS): letters, digits and a few marks, never a space,
# a quote or a newline, since they land in #SBATCH lines of a generated script.
BATCH_NAME_CHARS = re.compile(r"[A-Za-z0-9_.+-]*")



@dataclass(frozen=True)
class Rule:
    """A key's check: a test on the value and what the value must be, in words (and, for a key
    with a set of values, the set: the CLI offers it as the flag's choices). A registry's set is
    read when asked, so an extension registered after import is a choice at once."""
    test: typing.Callable[[typing.Any], bool]
    text: str | typing.Callable[[], str]
    choices: tuple | typing.Callable[[], tuple] | None = None

    def says(self) -> str:
        return self.text() if callable(self.text) else self.text

    def options(self) -> tuple | None:
        return self.choices() if callable(self.choices) else self.choices


def one_of(*choices) -> Rule:
    return Rule(lambda v: v in choices, "must be one of " + ", ".join(map(str, choices)), choices)


def registered(names: typing.Callable[[], tuple]) -> Rule:
    """A name of a registry (read at each check)."""
    return Rule(lambda v: v in names(), lambda: "must be one of " + ", ".join(names()), names)


def at_least(low) -> Rule:
    return Rule(lambda v: v >= low, f"must be >= {low}")


def more_than(low) -> Rule:
    return Rule(lambda v: v > low, f"must be > {low}")


def within(low, high, text: str) -> Rule:
    """low <= v < high, as `text` says it."""
    return Rule(lambda v: low <= v < high, text)


def augmentations(text: str) -> tuple[str, ...] | None:
    """train.augment's names in order ("translation,cutout" -> ("translation", "cutout")); None if not valid."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    return names if len(set(names)) == len(names) and all(n in AUGMENTATIONS for n in names) else None


SEED = Rule(lambda v: 0 <= v <= SEED_MAX, f"must be in [0, {SEED_MAX}]")
BATCH_NAME = Rule(lambda v: bool(BATCH_NAME_CHARS.fullmatch(v)),
                  "must be a Slurm name: letters, digits, '_', '.', '+', '-'")


@dataclass(frozen=True)
class Words:
    """How the report says a recipe key's value: `text` formatted with it (through `shown`), or
    nothing when `said` is false for it (a switch left off adds no words)."""
    text: str
    said: typing.Callable[[typing.Any], bool] = lambda v: True
    shown: typing.Callable[[typing.Any], typing.Any] = lambda v: v

    def __call__(self, value) -> str:
        return self.text.format(self.shown(value)) if self.said(value) else ""


def key(default, doc: str, rule: Rule | None = None, recipe: Words | None = None):
    """Declare a config key: its default (the seed's), what it does, and its rule. `recipe` keys
    make the training recipe, in the words given: a run that sets any of them otherwise is not
    the seed's recipe."""
    meta = {"doc": doc, "rule": rule, "recipe": recipe}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    source: str = key("", "the OASIS PNG release, a raw OASIS-1 tree, or any folder of images")
    dataset: str = key("", "the packed HDF5 dataset: written by preprocess, read by train and postprocess")
    layout: str = key(AUTO_LAYOUT, f"how source is laid out: a layout of prep/layouts.py, or {AUTO_LAYOUT} to "
                      "detect it", registered(lambda: (AUTO_LAYOUT, *LAYOUTS)))
    resolution: int = key(256, "image side in pixels: 256 is the seed's; smaller by area resampling",
                          one_of(*RESOLUTIONS))
    shard_size: int = key(2048, "images per HDF5 shard", at_least(1))
    skip_bad: bool = key(False, "skip and record bad files; false: fail before writing anything")
    allow_shared_cases: bool = key(False, "PNG release: pack even when a case number is in two splits")
    slices: int = key(32, "raw volumes: axial slices per volume, spread evenly over the brain's extent", at_least(1))
    slice_range: str = key("", 'raw volumes: "a:b", the RAS voxel window to take them from (default: the brain\'s)',
                           Rule(lambda v: not v or _is_range(v), "must look like 'a:b' with 0 <= a < b"))
    slice_spacing: int = key(0, "raw volumes: voxels between slices, centred in the window; 0 spreads them evenly",
                             at_least(0))
    min_brain_fraction: float = key(0.1, "raw volumes: end slices with less brain than this x the fullest are left "
                                    "out", within(0, 1, "must be in [0, 1)"))
    percentile: float = key(99.5, "raw volumes: this percentile of brain voxels maps to 255",
                            Rule(lambda v: 50 < v <= 100, "must be in (50, 100]"))
    max_anisotropy: float = key(1.5, "raw volumes: refuse volumes whose voxel sizes differ by more than this factor",
                                at_least(1))
    rescans: str = key("keep", "raw volumes: keep or drop a subject's MR2.. sessions (always in its MR1's split)",
                       one_of("keep", "drop"))
    split_fractions: list[float] = key([0.85, 0.10, 0.05], "raw volumes: train/validate/test fractions, by subject",
                                       Rule(lambda v: len(v) == 3 and all(x >= 0 for x in v)
                                            and abs(sum(v) - 1) < 1e-6,
                                            "must be three non-negative numbers summing to 1"))
    split_seed: int = key(0, "raw volumes: seed of the subject-to-split assignment (recorded)", SEED)


@dataclass
class TrainConfig:
    epochs: int = key(50, "epochs to train (a finished run given more is extended)", at_least(1))
    batch_size: int = key(16, "images per rank a step; the global batch is batch_size x ranks", at_least(1),
                          recipe=Words("batch {} per rank"))
    lr: float = key(1e-4, "Adam's learning rate, both networks", more_than(0), recipe=Words("learning rate {:g}"))
    lr_scaling: str = key("none", "scale lr by the number of ranks: none, linear or sqrt",
                          one_of("none", "linear", "sqrt"))
    adam_beta1: float = key(0.9, "Adam's beta_1: 0.9 is the seed's (Keras's default); 0.5 the DCGAN paper's",
                            within(0, 1, "must be in [0, 1)"), recipe=Words("beta_1 {:g}"))
    d_lr_ratio: float = key(1.0, "the discriminator's learning rate is lr x this (1: the seed's)", more_than(0),
                            recipe=Words("discriminator learning rate x{:g}"))
    d_dropout_scale: float = key(1.0, "the discriminator's dropout rates are the seed's (0.4, 0.2, 0.2) x this; "
                                 "0: none", within(0, 2.5, "must be in [0, 2.5) (the first rate is 0.4x it)"),
                                 recipe=Words("discriminator dropout x{:g}"))
    loss: str = key(BCE, f"the GAN loss: {BCE} (the seed's binary cross-entropy) or {HINGE} (training/objective.py)",
                    one_of(*LOSSES), recipe=Words("{} loss", shown=LOSSES.get))
    d_spectral_norm: bool = key(False, "spectral normalisation of D's convolutions and logit layer (one power "
                                "iteration a call); false: the seed's",
                                recipe=Words("spectral normalisation in the discriminator", said=bool))
    augment: str = key("", "DiffAugment on every image D sees, real and generated: any of translation, cutout, color, "
                       "comma-separated; empty: none, the seed's", Rule(lambda v: augmentations(v) is not None,
                       "must name " + ", ".join(AUGMENTATIONS) + ", each at most once, comma-separated"),
                       recipe=Words("DiffAugment ({}) on every image the discriminator sees", said=bool))
    lr_rampdown: float = key(0.0, "both learning rates fall linearly over this last fraction of the epochs; 0: "
                             "constant, the seed's", Rule(lambda v: 0 <= v <= 1, "must be in [0, 1] (a fraction "
                                                                                 "of the epochs)"),
                             recipe=Words("both rates falling linearly over the last {:.0%} of the epochs", said=bool))
    noise_dim: int = key(100, "the generator's input noise", at_least(1))
    seed: int = key(0, "weights init, noise, dropout and data order", SEED)
    deterministic: bool = key(False, "op determinism: a killed and resumed run ends bit-identical (CPUs: 1 thread)")
    fp16_allreduce: bool = key(False, "gradients cross the wire in fp16 (half the bytes)")
    precision: str = key("fp32", "fp32 (the seed's), bf16, or fp16 with dynamic loss scaling; half pays on GPUs",
                         one_of(*PRECISIONS))
    ema_kimg: float = key(10.0, "generator average half-life in thousands of images; samples, metrics and "
                          "generator.keras use it; 0: off", at_least(0))
    ema_rampup: float = key(0.05, "the half-life is at most this x the images seen so far; 0: fixed", at_least(0))
    checkpoint_every_minutes: float = key(10.0, "checkpoint this often (0: off); every stop and the end of training "
                                          "checkpoint anyway", at_least(0))
    checkpoint_every_steps: int = key(0, "checkpoint every N steps (0: off; for tests)", at_least(0))
    checkpoint_every_epochs: int = key(0, "checkpoint every N epochs (0: off)", at_least(0))
    keep_checkpoints: int = key(3, "the newest checkpoints kept", at_least(1))
    steps_per_call: int = key(8, "steps a compiled call runs once a step takes under 0.1 s (GPUs); one otherwise",
                              at_least(1))
    step_split: bool = key(True, "time each step's wait for input and for the allreduce (two timestamps each), so the "
                           "report says whether a run is bound by communication; false: the bare step; off under "
                           "train.deterministic, whose op determinism refuses timestamps")
    checkpoint_in_background: bool = key(True, "the loop waits only for a snapshot; a stop always waits for the write")
    snapshot_every_epoch: bool = key(False, "also keep snapshots/generator_epoch_NNNN.keras")
    tick_seconds: float = key(60.0, "interval of tick lines in batch logs and stats.jsonl", more_than(0))
    intra_op_threads: int = key(0, "TensorFlow's threads a rank (0: its default; 1 when ranks share a CPU)",
                                at_least(0))
    max_steps_per_epoch: int = key(0, "0: full epochs; >0 caps them (smoke tests)", at_least(0))
    verify_data: bool = key(False, "re-hash every shard at start; sizes and headers are always checked")
    allow_dataset_change: bool = key(False, "resume a run's checkpoints on another dataset (per-image state restarts)")
    peer_timeout_s: float = key(300.0, "a rank that stops answering ends the attempt after this long (then requeue); "
                                "keep it above a checkpoint's write", at_least(5))


@dataclass
class MetricsConfig:
    batches: int = key(50, "the seed metric's real batches", at_least(1))
    batch_size: int = key(16, "images per real batch", at_least(1))
    split: str = key("train", "the split the seed metric compares against (the seed's: its training images)",
                     one_of(*SPLITS))
    real_batches: str = key("fixed", "fixed: the same seeded batches every epoch; per_epoch: fresh ones, as the "
                            "seed's loop draws them", one_of("fixed", "per_epoch"))
    seed: int = key(1234, "which real batches (saved in report/metric_batches.json)", SEED)
    nn_samples: int = key(256, "generated images for the nearest-neighbour (memorisation) check", at_least(1))
    diversity_samples: int = key(256, "images a set for the MS-SSIM diversity check (fewer if a set is smaller)",
                                 at_least(2))
    fid_weights: str = key("", "a local .keras feature extractor for FID/KID; never downloaded")
    fid_real_images: int = key(0, "with an extractor: at most this many images a set; every set has the same n "
                               "(0: as many as the held-out split holds)", at_least(0))
    fid_preprocessing: str = key("tanh", "the extractor's input range: tanh (-1..1, Inception's), unit or 0-255",
                                 one_of("tanh", "unit", "0-255"))
    kid_subsets: int = key(100, "KID: mean and deviation over this many random subsets", at_least(1))
    kid_subset_size: int = key(1000, "KID: images per subset (capped by the sets' sizes)", at_least(2))
    pr_neighbours: int = key(3, "precision/recall: the k of the k-nearest-neighbour manifolds", at_least(1))


@dataclass
class ClusterConfig:
    executor: str = key(Auto.name, "where the pipeline's jobs run: an executor that queues jobs "
                        "(launch/executors.py; `oasis-dcgan submit -h` lists them)", registered(queued_executors))
    partition: str = key("", "Slurm partition (empty: the site's default)", BATCH_NAME)
    account: str = key("", "Slurm account", BATCH_NAME)
    qos: str = key("", "Slurm QOS", BATCH_NAME)
    constraint: str = key("", 'node features every job needs, e.g. "a100&ib" (empty: any node)',
                          Rule(lambda v: bool(re.fullmatch(r"[A-Za-z0-9_.+&|,*:\[\]-]*", v)),
                               "must be a Slurm feature expression: names joined by & | , with [ ] and *N"))
    nodes: int = key(1, "nodes of the train job", at_least(1))
    tasks_per_node: int = key(2, "Horovod ranks per node: one per GPU on GPU nodes", at_least(1))
    gpus_per_node: int = key(0, "GPUs per node; must equal tasks_per_node when set", at_least(0))
    cpus_per_task: int = key(1, "CPUs per rank", at_least(1))
    mem_gb: int = key(0, "memory per node (0: the site's default)", at_least(0))
    timeout_min: int = key(60 * 24, "each job's time limit in minutes (a train job is requeued past it)", at_least(1))
    preprocess_tasks: int = key(2, "array tasks packing shards in parallel", at_least(1))
    max_parallel: int = key(0, "a sweep's runs training at once (0: as many as the scheduler starts; the local "
                            "executor: one)", at_least(0))
    postprocess_cpus: int = key(2, "CPUs of the postprocess job", at_least(1))
    signal_delay_s: int = key(90, "USR2 this long before the time limit: checkpoint and requeue", at_least(0))
    max_requeues: int = key(5, "requeues after a failed attempt (a dead rank), per job; stops never count",
                            at_least(0))
    lock_stale_after_s: float = key(900.0, "a run's or dataset's lock whose holder neither its host nor Slurm can "
                                    "vouch for is taken over once nothing refreshed it this long", more_than(0))
    setup: list[str] = key([], 'shell lines run first in every job, e.g. ["module load cuda/12.2"]')


SECTIONS = ("data", "train", "metrics", "cluster")


@dataclass
class Config:
    run_dir: str = key("runs/oasis-dcgan", "where the run lives (options.json, stats.jsonl, checkpoints/, samples/, "
                       "report/): put it on scratch", Rule(bool, "must not be empty"))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        """Every declared key's type and rule, then the rules that join two keys."""
        for name, f, value in declared(self):
            _check(name, f, value)
        c = self.cluster
        if c.gpus_per_node and c.gpus_per_node != c.tasks_per_node:
            raise ConfigError(f"cluster.tasks_per_node = {c.tasks_per_node}: must equal cluster.gpus_per_node "
                              f"({c.gpus_per_node}); Horovod runs one rank per GPU")
        if c.signal_delay_s >= 60 * c.timeout_min:
            raise ConfigError(f"cluster.signal_delay_s = {c.signal_delay_s}: must be shorter than the time limit "
                              f"(cluster.timeout_min = {c.timeout_min}, {60 * c.timeout_min} s), or every attempt "
                              "is stopped as it starts")
        return self

    @property
    def world_size(self) -> int:
        return self.cluster.nodes * self.cluster.tasks_per_node


def declared(cfg: Config) -> typing.Iterator[tuple[str, dataclasses.Field, typing.Any]]:
    """(dotted key, its declaration, its value) for every key, in declaration order."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                yield f"{f.name}.{g.name}", g, getattr(value, g.name)
        else:
            yield f.name, f, value


def declaration(name: str) -> tuple[dataclasses.Field, type]:
    """A dotted key's declaration and its type; a ConfigError for a key that is not declared."""
    section, _, leaf = name.rpartition(".")
    owner = type(getattr(Config(), section, None)) if section else Config
    fields = {f.name: f for f in dataclasses.fields(owner)} if dataclasses.is_dataclass(owner) else {}
    typ = typing.get_type_hints(owner).get(leaf) if leaf in fields else None
    if typ is None or dataclasses.is_dataclass(typ):
        raise ConfigError(f"{name}: unknown key")
    return fields[leaf], typ


def check_value(name: str, value) -> None:
    """One key's value against its declaration: a ConfigError naming the key, or nothing."""
    f, typ = declaration(name)
    _check(name, f, _coerce(name, value, typ))


def set_key(cfg: "Config", name: str, value) -> None:
    """Set a dotted key, checking its type (the cross-key rules run in validate())."""
    _apply(cfg, _nest(name, value))


def _check(name: str, f: dataclasses.Field, value) -> None:
    """What every key of its type must be (finite numbers, strings without control characters),
    then its own rule."""
    items = value if isinstance(value, list) else [value]
    for v in items:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{name} = {value!r}: must be a finite number")
        if isinstance(v, str) and any(ord(ch) < 32 or ord(ch) == 127 for ch in v):
            raise ConfigError(f"{name} = {value!r}: must not hold control characters (a newline, a tab, ...)")
    rule = f.metadata.get("rule")
    if rule and not rule.test(value):
        raise ConfigError(f"{name} = {value!r}: {rule.says()}")


def _is_range(s: str) -> bool:
    try:
        a, b = (int(x) for x in s.split(":"))
        return 0 <= a < b
    except ValueError:
        return False


def _coerce(key: str, value, typ):
    """Check `value` against the declared type; ints pass for floats, nothing looser. Lists are
    checked item by item."""
    origin = typing.get_origin(typ) or typ
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {value!r}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(typ) or (typing.Any,)
        return [v if item is typing.Any else _coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is bool and isinstance(value, bool):
        return value
    if origin is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if origin is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key} = {value!r}: expected {getattr(origin, '__name__', origin)}, "
                      f"got {type(value).__name__}")


def _apply(obj, values: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in values.items():
        key_ = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(f"{key_}: unknown key (known: {', '.join(sorted(names))})")
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current):
            if not isinstance(v, dict):
                raise ConfigError(f"{key_}: expected a [{key_}] table, got {type(v).__name__}")
            _apply(current, v, key_ + ".")
        else:
            setattr(obj, k, _coerce(key_, v, hints[k]))


def _parse_override(text: str) -> tuple[str, object]:
    """Parse `a.b=value`; the value is read as a TOML value, or as a bare string if that fails."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key_, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key_, value


def grid_axis(text: str) -> tuple[str, list]:
    """`--grid KEY=V1,V2,...` as the key and its values, each checked as `--set` checks one: a
    ConfigError names the key and the value. Values that hold commas come as a TOML array
    (`train.augment=["cutout,color", ""]`). A sweep packs one dataset and gives each run its own
    directory, so data.* and run_dir cannot vary."""
    if "=" not in text:
        raise ConfigError(f"--grid {text!r}: expected key=value1,value2,...")
    name, raw = (s.strip() for s in text.split("=", 1))
    f, typ = declaration(name)
    if name == "run_dir" or name.startswith("data.") or typing.get_origin(typ) is list:
        raise ConfigError(f"--grid {name}: a sweep cannot vary it (one dataset, a directory per run, no lists)")
    try:
        values = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        values = None
    if not isinstance(values, list):
        values = [_parse_override(f"{name}={part}")[1] for part in raw.split(",")]
    values = [_coerce(name, v, typ) for v in values]
    for v in values:
        _check(name, f, v)
    if not values or len(set(map(repr, values))) != len(values):
        raise ConfigError(f"--grid {text!r}: give {name} one or more different values")
    return name, values


def _nest(key_: str, value) -> dict:
    out: dict = {}
    node = out
    parts = key_.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def read_toml(path: str | Path) -> dict:
    """A TOML file's tables; a missing, undecodable or invalid file is a ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None


def load(path: str | Path | None = None, overrides: typing.Iterable[str] = (),
         base: dict | None = None) -> Config:
    """Defaults, then `base` (a dict, e.g. a run's from options.json), then the TOML file, then overrides."""
    cfg = Config()
    if base:
        _apply(cfg, base)
    if path:
        _apply(cfg, read_toml(path))
    for text in overrides:
        key_, value = _parse_override(text)
        _apply(cfg, _nest(key_, value))
    return cfg.validate()


def from_dict(d: dict) -> Config:
    cfg = Config()
    _apply(cfg, d)
    return cfg.validate()


# ----------------------------------------------------------------------------- recipes and presets

PRESETS = Path(__file__).resolve().parent / "presets"


def recipe(cfg: Config | dict) -> dict:
    """The recipe keys' values ({"train.lr": ...}): the seed's for a default Config()."""
    d = cfg if isinstance(cfg, dict) else cfg.to_dict()
    return {name: _lookup(d, name) for name, f, _ in declared(Config()) if f.metadata.get("recipe")}


def _lookup(d: dict, name: str):
    for part in name.split("."):
        d = d[part]
    return d


def seed_recipe() -> dict:
    return recipe(Config())


def recipe_words(values: dict) -> list[str]:
    """The recipe keys' `values` ({"train.lr": ...}) in their words, in declaration order."""
    words = {name: f.metadata["recipe"] for name, f, _ in declared(Config()) if f.metadata.get("recipe")}
    return [w for w in (words[name](v) for name, v in values.items()) if w]


def preset(name: str) -> Path:
    """A named set of keys in oasis_dcgan/presets/ (the seed's preset is the defaults: no file)."""
    path = PRESETS / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS.glob("*.toml"))
        raise ConfigError(f"preset {name!r}: not found (known: {', '.join(known)})")
    return path


def as_overrides(values: dict) -> list[str]:
    """{"train.lr": 4e-4} as --set strings, which put every key back exactly."""
    return [f"{k}={_toml_value(v)}" for k, v in values.items()]


# ----------------------------------------------------------------------------- as TOML

EXAMPLE_HEADER = """\
# oasis-dcgan configuration: every key, with its default (the seed's settings) and what it does.
# Written by `oasis-dcgan config --example`, from the declarations in oasis_dcgan/config.py.
# Use:  oasis-dcgan submit slurm/example.toml --set data.source=/scratch/$USER/keras_png_slices_data
#       --set data.dataset=/scratch/$USER/oasis-256 --set run_dir=/scratch/$USER/runs/first
# Any key can be overridden with --set section.key=value. Unknown keys and bad values are refused.
"""


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: the same escapes
    return repr(v)


def to_toml(cfg: Config, header: str = "") -> str:
    """The config as a TOML file: each key under its doc, section by section."""
    out, section = [header] if header else [], ""
    for name, f, value in declared(cfg):
        where = name.split(".")[0] if "." in name else ""
        if where != section:
            out.append(f"\n[{where}]")
            section = where
        out.append(f"# {f.metadata['doc']}")
        out.append(f"{name.rsplit('.', 1)[-1]} = {_toml_value(value)}")
    return "\n".join(out) + "\n"


def example() -> str:
    """slurm/example.toml: every key at its default."""
    return to_toml(Config(), EXAMPLE_HEADER)
