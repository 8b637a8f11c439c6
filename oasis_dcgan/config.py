"""The suite's one typed configuration. Defaults are the reference project's settings.

A config is a TOML file with the sections below; `--set section.key=value` overrides any
key. Unknown keys, wrong types and impossible values are refused with the key named.
The resolved config is written into every run directory (options.json).
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

RESOLUTIONS = (32, 64, 128, 256)
LAYOUTS = ("auto", "oasis-png", "oasis-raw", "folder")
EXECUTORS = ("auto", "local", "slurm", "inprocess")
PRECISIONS = ("fp32", "bf16", "fp16")


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or impossible. The message names the key."""


@dataclass
class DataConfig:
    source: str = ""            # OASIS PNG release, raw OASIS-1 tree, or a folder of images
    dataset: str = ""           # packed dataset directory (preprocess output, train input)
    layout: str = "auto"
    resolution: int = 256       # the reference trains at 256x256
    shard_size: int = 2048      # images per HDF5 shard
    skip_bad: bool = False
    allow_shared_cases: bool = False  # PNG release: pack even if a case appears in two splits
    # raw volumes only: reoriented to RAS, then axial slices chosen as prep/pixels.py says
    slices: int = 32            # slices per volume, spread over the brain's axial extent
    slice_range: str = ""       # "a:b" in RAS voxel indices: the window to take them from
    slice_spacing: int = 0      # voxels between slices; 0 spreads them evenly over the window
    min_brain_fraction: float = 0.1  # end slices with less brain than this x the fullest are left out
    percentile: float = 99.5    # robust max for intensity scaling, per volume
    max_anisotropy: float = 1.5  # largest / smallest voxel size a volume may have
    rescans: str = "keep"       # keep | drop: a subject's MR2, MR3 sessions (always in the MR1's split)
    split_fractions: list = field(default_factory=lambda: [0.85, 0.10, 0.05])  # train/validate/test, by subject
    split_seed: int = 0

    def plan_kwargs(self) -> dict:
        """The arguments of data.plan() that this section sets."""
        keys = ("resolution", "layout", "shard_size", "skip_bad", "allow_shared_cases", "slices", "slice_range",
                "slice_spacing", "min_brain_fraction", "percentile", "max_anisotropy", "rescans",
                "split_fractions", "split_seed")
        return {k: getattr(self, k) for k in keys}


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 16        # per rank; the global batch is batch_size x ranks
    lr: float = 1e-4
    lr_scaling: str = "none"    # none | linear | sqrt, by world size
    # A documented recipe option, not the seed's: Adam beta_1 0.5 (the DCGAN paper's) and a
    # discriminator learning rate of lr x d_lr_ratio. The seed's are 0.9 and 1.
    adam_beta1: float = 0.9
    d_lr_ratio: float = 1.0
    # Another recipe option: the discriminator's dropout rates are the seed's (0.4, 0.2, 0.2)
    # times this. The seed's is 1.
    d_dropout_scale: float = 1.0
    # Another: both learning rates fall linearly over this last fraction of the epochs, to
    # 1/(its epochs) of lr in the last one, for runs whose last epochs oscillate (on the demo it
    # did not help: README, "The demo's recipe"). The seed's is 0: constant.
    lr_rampdown: float = 0.0
    noise_dim: int = 100
    seed: int = 0
    deterministic: bool = False
    fp16_allreduce: bool = False
    # fp32 is the seed's. bf16 and fp16 compute in half precision with fp32 variables, logits
    # and losses (Keras mixed policies); fp16 adds dynamic loss scaling. A speed-up on GPUs only.
    precision: str = "fp32"
    # The generator average (G_ema): an exponential moving average of G's weights with this
    # half-life in thousands of images. Samples, metrics and generator.keras use it; the raw
    # G is saved beside it. It never feeds back into training. 0: off.
    ema_kimg: float = 10.0
    # The half-life is at most ema_rampup x the images seen so far, so a short run's average
    # is not dominated by its first epochs. 0: a fixed half-life from the start.
    ema_rampup: float = 0.05
    # When to checkpoint besides every stop and the end of training. By time, because a GPU
    # epoch lasts seconds: see the README, "Choosing the checkpoint cadence".
    checkpoint_every_minutes: float = 10.0  # 0: off
    checkpoint_every_steps: int = 0     # 0: off
    checkpoint_every_epochs: int = 0    # 0: off
    keep_checkpoints: int = 3
    # Steps one compiled call runs, once a step takes under 0.1 s (on GPUs; one otherwise). A
    # call costs the host ~0.5 ms, a GPU step 6 ms: several a call pay it once. Signals,
    # progress and checkpoints are handled between calls.
    steps_per_call: int = 8
    checkpoint_in_background: bool = True  # write periodic and epoch-end checkpoints while training goes on
    snapshot_every_epoch: bool = False  # keep a generator-only .keras file per epoch
    tick_seconds: float = 60.0          # batch-log tick interval
    intra_op_threads: int = 0           # 0: TensorFlow's default
    max_steps_per_epoch: int = 0        # 0: the full epoch; >0 caps it (tests, smoke runs)
    # Every start checks each shard's size, header, shape and count against the manifest
    # (milliseconds); this also re-hashes every shard, which reads the whole dataset.
    verify_data: bool = False
    allow_dataset_change: bool = False  # resume a run's checkpoints on a dataset other than the one it began on
    # A rank that stops answering (a hung node, a lost link) ends the job after this long:
    # the gloo collectives' timeout and Horovod's stall shutdown. It bounds how long rank 0
    # may spend writing a checkpoint while the others wait, so keep it well above that.
    peer_timeout_s: float = 300.0


@dataclass
class MetricsConfig:
    batches: int = 50           # the reference metric's 50 real batches
    batch_size: int = 16
    split: str = "train"        # the reference compares against its training images
    # fixed: the same seeded batches every epoch, so epochs compare like with like; per_epoch:
    # fresh random batches every epoch, as the seed's loop draws them
    real_batches: str = "fixed"
    seed: int = 1234
    nn_samples: int = 256       # generated images for the nearest-neighbour check
    diversity_samples: int = 64  # images for the MS-SSIM diversity figure
    fid_weights: str = ""       # local path to an Inception-style feature extractor; never downloaded
    # With an extractor: all the split's real images (or this many, when > 0) against as many
    # generated ones (or more); KID over subsets; precision/recall with k neighbours.
    fid_real_images: int = 0
    fid_generated_images: int = 0
    fid_preprocessing: str = "tanh"  # what the extractor takes: tanh (-1..1, Inception's), unit (0..1), 0-255
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_neighbours: int = 3


@dataclass
class ClusterConfig:
    executor: str = "auto"      # auto: slurm when sbatch is on PATH, else local
    partition: str = ""
    account: str = ""
    qos: str = ""
    nodes: int = 1
    tasks_per_node: int = 2     # Horovod ranks per node (one per GPU on GPU nodes)
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: int = 0             # 0: let the site default apply
    timeout_min: int = 60 * 24
    preprocess_tasks: int = 2   # array tasks for packing
    postprocess_cpus: int = 2
    signal_delay_s: int = 90    # USR2 this long before the time limit
    max_requeues: int = 5       # requeues after a failed attempt (a dead rank), per job; preemptions do not count
    setup: list = field(default_factory=list)  # shell lines run before each job (module load ...)


@dataclass
class Config:
    run_dir: str = "runs/oasis-dcgan"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        d, t, m, c = self.data, self.train, self.metrics, self.cluster
        checks = [
            ("data.layout", d.layout in LAYOUTS, f"must be one of {', '.join(LAYOUTS)}"),
            ("data.resolution", d.resolution in RESOLUTIONS, f"must be one of {RESOLUTIONS}"),
            ("data.shard_size", d.shard_size >= 1, "must be >= 1"),
            ("data.slices", d.slices >= 1, "must be >= 1"),
            ("data.percentile", 50 < d.percentile <= 100, "must be in (50, 100]"),
            ("data.split_fractions", len(d.split_fractions) == 3 and all(x >= 0 for x in d.split_fractions)
             and abs(sum(d.split_fractions) - 1) < 1e-6, "must be three non-negative numbers summing to 1"),
            ("data.slice_range", not d.slice_range or _is_range(d.slice_range), "must look like 'a:b' with a < b"),
            ("data.slice_spacing", d.slice_spacing >= 0, "must be >= 0"),
            ("data.min_brain_fraction", 0 <= d.min_brain_fraction < 1, "must be in [0, 1)"),
            ("data.max_anisotropy", d.max_anisotropy >= 1, "must be >= 1"),
            ("data.rescans", d.rescans in ("keep", "drop"), "must be keep or drop"),
            ("train.epochs", t.epochs >= 1, "must be >= 1"),
            ("train.batch_size", t.batch_size >= 1, "must be >= 1"),
            ("train.lr", t.lr > 0, "must be > 0"),
            ("train.adam_beta1", 0 <= t.adam_beta1 < 1, "must be in [0, 1)"),
            ("train.d_lr_ratio", t.d_lr_ratio > 0, "must be > 0"),
            ("train.d_dropout_scale", 0 <= t.d_dropout_scale < 2.5, "must be in [0, 2.5) (the first rate is 0.4x it)"),
            ("train.lr_rampdown", 0 <= t.lr_rampdown <= 1, "must be in [0, 1] (a fraction of the epochs)"),
            ("train.lr_scaling", t.lr_scaling in ("none", "linear", "sqrt"), "must be none, linear or sqrt"),
            ("train.noise_dim", t.noise_dim >= 1, "must be >= 1"),
            ("train.ema_kimg", t.ema_kimg >= 0, "must be >= 0 (0: no generator average)"),
            ("train.ema_rampup", t.ema_rampup >= 0, "must be >= 0 (0: a fixed half-life)"),
            ("train.checkpoint_every_steps", t.checkpoint_every_steps >= 0, "must be >= 0"),
            ("train.checkpoint_every_minutes", t.checkpoint_every_minutes >= 0, "must be >= 0"),
            ("train.checkpoint_every_epochs", t.checkpoint_every_epochs >= 0, "must be >= 0"),
            ("train.precision", t.precision in PRECISIONS, f"must be one of {', '.join(PRECISIONS)}"),
            ("train.keep_checkpoints", t.keep_checkpoints >= 1, "must be >= 1"),
            ("train.steps_per_call", t.steps_per_call >= 1, "must be >= 1"),
            ("train.tick_seconds", t.tick_seconds > 0, "must be > 0"),
            ("train.max_steps_per_epoch", t.max_steps_per_epoch >= 0, "must be >= 0"),
            ("train.peer_timeout_s", t.peer_timeout_s >= 5, "must be >= 5 seconds"),
            ("metrics.batches", m.batches >= 1, "must be >= 1"),
            ("metrics.batch_size", m.batch_size >= 1, "must be >= 1"),
            ("metrics.split", m.split in ("train", "validate", "test"), "must be train, validate or test"),
            ("metrics.nn_samples", m.nn_samples >= 1, "must be >= 1"),
            ("metrics.real_batches", m.real_batches in ("fixed", "per_epoch"), "must be fixed or per_epoch"),
            ("metrics.diversity_samples", m.diversity_samples >= 2, "must be >= 2"),
            ("metrics.fid_real_images", m.fid_real_images >= 0, "must be >= 0 (0: the whole split)"),
            ("metrics.fid_generated_images", m.fid_generated_images >= 0, "must be >= 0"),
            ("metrics.fid_preprocessing", m.fid_preprocessing in ("tanh", "unit", "0-255"), "must be tanh, unit or 0-255"),
            ("metrics.kid_subsets", m.kid_subsets >= 1, "must be >= 1"),
            ("metrics.kid_subset_size", m.kid_subset_size >= 2, "must be >= 2"),
            ("metrics.pr_neighbours", m.pr_neighbours >= 1, "must be >= 1"),
            ("cluster.executor", c.executor in EXECUTORS, f"must be one of {', '.join(EXECUTORS)}"),
            ("cluster.nodes", c.nodes >= 1, "must be >= 1"),
            ("cluster.tasks_per_node", c.tasks_per_node >= 1, "must be >= 1"),
            ("cluster.gpus_per_node", c.gpus_per_node >= 0, "must be >= 0"),
            ("cluster.cpus_per_task", c.cpus_per_task >= 1, "must be >= 1"),
            ("cluster.timeout_min", c.timeout_min >= 1, "must be >= 1"),
            ("cluster.preprocess_tasks", c.preprocess_tasks >= 1, "must be >= 1"),
            ("cluster.signal_delay_s", c.signal_delay_s >= 0, "must be >= 0"),
            ("cluster.max_requeues", c.max_requeues >= 0, "must be >= 0"),
        ]
        for key, ok, why in checks:
            if not ok:
                raise ConfigError(f"{key} = {_get(self, key)!r}: {why}")
        if c.gpus_per_node and c.gpus_per_node != c.tasks_per_node:
            raise ConfigError(f"cluster.tasks_per_node = {c.tasks_per_node}: must equal cluster.gpus_per_node "
                              f"({c.gpus_per_node}); Horovod runs one rank per GPU")
        return self

    @property
    def world_size(self) -> int:
        return self.cluster.nodes * self.cluster.tasks_per_node


def _is_range(s: str) -> bool:
    try:
        a, b = (int(x) for x in s.split(":"))
        return 0 <= a < b
    except ValueError:
        return False


def _get(cfg, key):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _coerce(key: str, value, typ):
    """Check `value` against the dataclass field type; accept ints for floats, nothing looser."""
    origin = typing.get_origin(typ) or typ
    if origin is bool:
        if isinstance(value, bool):
            return value
    elif origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif origin is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list):
            return value
    raise ConfigError(f"{key} = {value!r}: expected {getattr(origin, '__name__', origin)}, "
                      f"got {type(value).__name__}")


def _apply(obj, values: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(names))})")
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current):
            if not isinstance(v, dict):
                raise ConfigError(f"{key}: expected a [{key}] table, got {type(v).__name__}")
            _apply(current, v, key + ".")
        else:
            setattr(obj, k, _coerce(key, v, hints[k]))


def _parse_override(text: str) -> tuple[str, object]:
    """Parse `a.b=value`; the value is read as a TOML value, or as a bare string if that fails."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _nest(key: str, value) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load(path: str | Path | None = None, overrides: typing.Iterable[str] = (),
         base: dict | None = None) -> Config:
    """Defaults, then the TOML file, then `base` (a dict, e.g. from options.json), then overrides."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            _apply(cfg, tomllib.loads(p.read_text(encoding="utf-8")))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML ({e})") from None
    if base:
        _apply(cfg, base)
    for text in overrides:
        key, value = _parse_override(text)
        _apply(cfg, _nest(key, value))
    return cfg.validate()


def from_dict(d: dict) -> Config:
    cfg = Config()
    _apply(cfg, d)
    return cfg.validate()
