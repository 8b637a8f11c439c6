"""What a resume may take from a checkpoint, and what the config decides instead.

A checkpoint of another model, or of another dataset unless train.allow_dataset_change, is
an error, not a resume. The config, not the checkpoint, decides what is not learned state
(the learning rate above all); each difference is logged.
"""
from __future__ import annotations

import logging
import os

from ..config import Config
from ..errors import CheckpointError, ConfigError
from ..prep.layouts import identity, identity_differences

log = logging.getLogger(__name__)


def take_dataset_identity(cfg: Config, manifest: dict) -> None:
    """The config's data section takes the dataset's identity, so options.json records what the
    run trains on. A key the config sets away from its default, to another value than the
    dataset was packed with, is an error naming it: the config asks for other data."""
    default = Config().data
    differ = identity_differences(manifest, cfg.data, only=lambda key: _field(key, cfg.data) != _field(key, default))
    if differ:
        raise ConfigError(f"data.dataset: {cfg.data.dataset} was packed otherwise than the config asks:\n  "
                          + "\n  ".join(differ) + "\nPack a dataset for this config, or drop these keys.")
    for key, value in identity(manifest).items():
        setattr(cfg.data, key.removeprefix("data."), value)


def _field(key: str, data):
    """data.X of a DataConfig, by its dotted key."""
    return getattr(data, key.removeprefix("data."))


def check_compatible(cfg: Config, dataset_hash: str, meta: dict, ckpt_dir) -> dict:
    """Raise CheckpointError for a checkpoint this config cannot resume. Returns what to leave
    out of the restore: the per-image state, when the dataset changed."""
    # The networks' shapes: spectral normalisation gives D variables of its own.
    for key, theirs, ours in (("data.resolution", meta.get("resolution"), cfg.data.resolution),
                              ("train.noise_dim", meta.get("noise_dim"), cfg.train.noise_dim),
                              ("train.d_spectral_norm", meta.get("d_spectral_norm", False), cfg.train.d_spectral_norm)):
        if theirs is not None and theirs != ours:
            raise CheckpointError(f"{key} = {ours}, but {ckpt_dir} was written with {theirs}: it cannot be "
                                  "resumed. Use another run directory, or train with --restart")
    theirs = meta.get("dataset_manifest_sha256")
    if theirs and theirs != dataset_hash and not cfg.train.allow_dataset_change:
        raise CheckpointError(f"data.dataset: {cfg.data.dataset} is not the dataset {ckpt_dir} was trained "
                              "on (its manifest hash differs). Set train.allow_dataset_change=true to go on "
                              "with the new data, or use another run directory")
    return {"state": ("visits",)} if theirs and theirs != dataset_hash else {}


def data_changed(resumed: dict | None, dataset_hash: str) -> bool:
    return bool(resumed) and resumed.get("dataset_manifest_sha256") not in (None, dataset_hash)


def epoch_rng_seed(cfg: Config, resumed: dict | None, counters: dict) -> int:
    """The data order's seed for the epoch under way. An epoch begun under another train.seed
    finishes in the order it began, so no image repeats or is skipped in it."""
    theirs, ours = (resumed or {}).get("data_seed"), cfg.train.seed
    if theirs is None or theirs == ours or not counters["images_in_epoch"]:
        return ours
    log.info(f"resume: train.seed is {ours}, but epoch {counters['epoch'] + 1} began under {theirs}: it "
             f"finishes in the order of seed {theirs}, and seed {ours} applies from the next epoch")
    return int(theirs)


def config_changes(resumed: dict, now: dict) -> dict:
    """Each key of the checkpoint's meta that the config now sets otherwise ({key: [was, now]},
    logged too); the config wins."""
    changes = {}
    for key, label in (("learning_rate", "learning rate"), ("batch_size", "train.batch_size"), ("world_size", "ranks"),
                       ("precision", "train.precision"), ("dataset_manifest_sha256", "dataset")):
        theirs = resumed.get(key, "fp32" if key == "precision" else None)
        if theirs is not None and theirs != now[key]:
            log.info(f"resume: {label} was {theirs} when the checkpoint was written, now {now[key]}; the config wins")
            changes[key] = [theirs, now[key]]
    return changes


def checkpoint_on_record(run_files) -> int | None:
    """The global step of the last checkpoint this run's record says was written (state.json's
    step, or a checkpoint line of stats.jsonl); None when the record shows none."""
    steps = [r.get("global_step") for r in run_files.read_stats("checkpoint")]
    steps.append(run_files.read_state().get("global_step"))
    steps = [int(s) for s in steps if isinstance(s, int) and s > 0]
    return max(steps) if steps else None


def missing_checkpoints(run_files, checkpoints) -> str:
    """Why a run must not start afresh although no checkpoint is found: its record shows one.
    Its storage is purged or not mounted; starting again would train the whole run over, silently."""
    step = checkpoint_on_record(run_files)
    if step is None:
        return ""
    where = checkpoints.dir
    link = f" (a link to {os.readlink(where)})" if where.is_symlink() else ""
    return (f"{run_files.path}: its record shows a checkpoint at global step {step}, but {where}{link} holds "
            "none; is its storage mounted? Nothing was written. To start the run again on purpose, train with "
            "--restart (the record is moved aside, nothing is deleted)")


def restore(checkpoints, cfg: Config, dataset_hash: str, state, nets, run_files) -> tuple[dict | None, str]:
    """Rank 0: restore the newest checkpoint this config can resume. Returns (its meta or None for a
    fresh run, ""), or (None, why none can be resumed)."""
    checkpoints.recover()
    try:
        resumed = checkpoints.restore_latest(check=lambda meta, where: check_compatible(cfg, dataset_hash, meta,
                                                                                        where))
    except CheckpointError as e:
        return None, str(e)
    if resumed is None and (why := missing_checkpoints(run_files, checkpoints)):
        return None, why
    if resumed and nets.average is not None and "generator_ema" in checkpoints.absent:
        nets.average.set_weights(nets.generator.get_weights())  # an average starts from G
    if data_changed(resumed, dataset_hash):
        # The epoch under way starts again on the new data: its order and visits were the old data's.
        c = state.read_counters()
        state.restart_epoch()
        log.info(f"resume: the dataset changed (train.allow_dataset_change): epoch {c['epoch'] + 1} starts "
                 f"again from its first image on {cfg.data.dataset} (it was at image {c['images_in_epoch']})")
    return resumed, ""
