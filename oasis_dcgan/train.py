"""The training loop: the seed's DCGAN, data-parallel over Horovod ranks, resumable at any step.

Everything a resume needs lives in TensorFlow variables updated inside the compiled step
(model, optimizers, counters, loss accumulators), and the noise is a stateless function of
(seed, rank, global step). So a checkpoint taken between two steps, even from a signal
handler, is always consistent, and a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import math
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from . import __version__, fsutil
from .config import Config
from .logs import Progress, RunLog, Stats, format_seconds

STATE_KEYS = ("epoch", "step_in_epoch", "global_step")
# Per-epoch loss accumulators and the values an epoch starts from.
ACC_INIT = {"g_sum": 0.0, "d_sum": 0.0, "count": 0.0,
            "g_min": np.inf, "g_max": -np.inf, "d_min": np.inf, "d_max": -np.inf}


def lr_for(cfg: Config, world_size: int) -> float:
    scale = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[cfg.train.lr_scaling]
    return cfg.train.lr * scale


def _git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "oasis_dcgan": __version__}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "horovod", "numpy", "h5py", "submitit"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def save_grid(images: np.ndarray, path: str | os.PathLike, title: str = "") -> None:
    """A 4x4 (or near-square) grid of images in (-1, 1), like the seed's per-epoch figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(np.squeeze(images[i]) * 127.5 + 127.5, cmap="gray", vmin=0, vmax=255)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(wspace=0.03, hspace=0.03, left=0, right=1, bottom=0, top=0.92 if title else 1)
    with fsutil.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=64)
    plt.close(fig)


class _Stop(Exception):
    pass


def run(cfg: Config, log_to_stdout: bool = True, handle_usr2: bool = True) -> dict:
    """Train (or resume) the run in cfg.run_dir on this rank. Returns a summary on every rank.

    handle_usr2=False leaves USR2 to submitit, which calls TrainJob.checkpoint() instead.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from . import distributed

    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    world = distributed.job_world()
    hvd = distributed.init(run_dir / ".rendezvous", world=world)
    rank, size = hvd.rank(), hvd.size()
    chief = rank == 0

    import tensorflow as tf

    # One GPU per rank, by local rank; memory growth so ranks on a node can share if asked.
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        for g in gpus:
            tf.config.experimental.set_memory_growth(g, True)
        tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
    if cfg.train.intra_op_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.train.intra_op_threads)
            tf.config.threading.set_inter_op_parallelism_threads(cfg.train.intra_op_threads)
        except RuntimeError:  # TF already ran something in this process; a job's fresh process never has
            print("warning: train.intra_op_threads ignored: TensorFlow is already initialised", flush=True)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.keras.utils.set_random_seed(cfg.train.seed)

    from . import model
    from .checkpoint import CheckpointManager, variable_groups
    from .data import load_manifest, manifest_hash
    from .reader import ShardReader, scale_tf, steps_per_epoch, train_dataset

    log = RunLog(run_dir, enabled=chief, echo=log_to_stdout)
    manifest = load_manifest(cfg.data.dataset)
    res = int(manifest["resolution"])
    n_train = len(ShardReader(cfg.data.dataset, "train"))
    bs, nd = cfg.train.batch_size, cfg.train.noise_dim
    spe = steps_per_epoch(n_train, bs, size)
    if cfg.train.max_steps_per_epoch:
        spe = min(spe, cfg.train.max_steps_per_epoch)
    if spe == 0:
        raise ValueError(f"{cfg.data.dataset}: {n_train} training images cannot fill one global batch "
                         f"of {bs} x {size} ranks")
    total_steps = spe * cfg.train.epochs
    lr = lr_for(cfg, size)

    G = model.build_generator(res, nd)
    D = model.build_discriminator(res)
    g_opt = tf.keras.optimizers.Adam(lr)
    d_opt = tf.keras.optimizers.Adam(lr)
    # Adam's slots are created lazily; build them now so they are checkpointed and broadcast.
    g_opt.build(G.trainable_variables)
    d_opt.build(D.trainable_variables)
    state = {k: tf.Variable(0, dtype=tf.int64, name=k) for k in STATE_KEYS}
    acc = {k: tf.Variable(v, dtype=tf.float64, name=k) for k, v in ACC_INIT.items()}
    fixed_noise = tf.Variable(tf.random.stateless_normal([16, nd], seed=[cfg.train.seed, 0x5EED]),
                              name="fixed_noise")
    groups = variable_groups(G, D, g_opt, d_opt, {**state, **acc, "fixed_noise": fixed_noise})
    ckpts = CheckpointManager(run_dir / "checkpoints", groups, keep=cfg.train.keep_checkpoints, log=log)

    resumed = None
    if chief:
        fsutil.remove_stale_temps(run_dir / "checkpoints")
        resumed = ckpts.restore_latest()
    # Rank 0's variables, restored or fresh, become everyone's: models, optimizer slots,
    # counters and accumulators alike.
    for name, group in groups.items():
        distributed.broadcast_variables(hvd, list(group.values()), prefix=f"bcast.{name}")

    if chief:
        fsutil.write_json(run_dir / "options.json", {
            "config": cfg.to_dict(),
            "world_size": size,
            "ranks": {"nodes": world.num_nodes, "tasks_per_node": world.local_size},
            "learning_rate": lr,
            "global_batch": bs * size,
            "steps_per_epoch": spe,
            "dataset_manifest_sha256": manifest_hash(cfg.data.dataset),
            "resolution": res,
            "versions": package_versions(),
            "git_revision": _git_revision(),
            "host": platform.node(),
            "started": time.time(),
        })
        if resumed and resumed.get("world_size", size) != size:
            log(f"WARNING: the checkpoint was written by {resumed['world_size']} rank(s), this job has {size}: "
                "the rest of this epoch visits images in a different order, and the result is no longer "
                "bit-identical to an uninterrupted run")
        if resumed:
            dropped = Stats.truncate_after(run_dir / "stats.jsonl", resumed["global_step"], resumed["epoch"])
            if dropped:
                log(f"dropped {dropped} stats line(s) logged after that checkpoint")
        else:
            log(f"new run: {res}x{res}, {size} rank(s), global batch {bs * size}, {spe} steps/epoch, "
                f"{cfg.train.epochs} epochs, lr {lr:g}")
    stats = Stats(run_dir / "stats.jsonl") if chief else None
    tb = tf.summary.create_file_writer(str(run_dir / "tensorboard")) if chief else None
    (run_dir / "samples").mkdir(exist_ok=True)

    noise_seed = cfg.train.seed * 1000 + rank

    @tf.function
    def train_step(images_uint8):
        images = scale_tf(images_uint8)
        noise = tf.random.stateless_normal([bs, nd], seed=tf.stack([tf.cast(noise_seed, tf.int64),
                                                                    state["global_step"]]))
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = G(noise, training=True)
            real_logits = D(images, training=True)
            fake_logits = D(fake, training=True)
            g_loss = model.generator_loss(fake_logits)
            d_loss = model.discriminator_loss(real_logits, fake_logits)
        g_grads = g_tape.gradient(g_loss, G.trainable_variables)
        d_grads = d_tape.gradient(d_loss, D.trainable_variables)
        # The forward pass moved G's BatchNorm statistics by this rank's batch; averaging them
        # with the gradients keeps every rank's whole state identical, so any rank's
        # checkpoint is the run's, and a resume is exact for any number of ranks.
        bn_stats = [tf.convert_to_tensor(v) for v in G.non_trainable_variables]
        ng, nd_ = len(g_grads), len(d_grads)
        if cfg.train.fp16_allreduce:  # only gradients travel in fp16; statistics and losses stay fp32
            grads = distributed.allreduce_mean(hvd, g_grads + d_grads, fp16=True)
            rest = distributed.allreduce_mean(hvd, bn_stats + [g_loss, d_loss])
        else:  # one fused allreduce for everything
            both = distributed.allreduce_mean(hvd, g_grads + d_grads + bn_stats + [g_loss, d_loss])
            grads, rest = both[:ng + nd_], both[ng + nd_:]
        g_opt.apply_gradients(zip(grads[:ng], G.trainable_variables))
        d_opt.apply_gradients(zip(grads[ng:], D.trainable_variables))
        if size > 1:
            for v, m in zip(G.non_trainable_variables, rest[:len(bn_stats)]):
                v.assign(m)
        gl, dl = tf.cast(rest[-2], tf.float64), tf.cast(rest[-1], tf.float64)
        acc["g_sum"].assign_add(gl)
        acc["d_sum"].assign_add(dl)
        acc["g_min"].assign(tf.minimum(acc["g_min"], gl))
        acc["g_max"].assign(tf.maximum(acc["g_max"], gl))
        acc["d_min"].assign(tf.minimum(acc["d_min"], dl))
        acc["d_max"].assign(tf.maximum(acc["d_max"], dl))
        acc["count"].assign_add(1.0)
        state["step_in_epoch"].assign_add(1)
        state["global_step"].assign_add(1)
        return gl, dl

    def counters():
        return {k: int(v.numpy()) for k, v in state.items()}

    def save(reason: str) -> None:
        c = counters()
        t0 = time.perf_counter()
        path = ckpts.save(c["global_step"], {**c, "reason": reason, "world_size": size,
                                             "data_seed": cfg.train.seed, "resolution": res})
        if stats:
            stats.write(kind="checkpoint", global_step=c["global_step"], epoch=c["epoch"], reason=reason,
                        seconds=time.perf_counter() - t0)
            stats.sync()
        log(f"checkpoint {path.name} ({reason})")

    # Preemption: Slurm sends SIGTERM (and submitit-managed jobs USR2, handled by
    # cluster.TrainJob.checkpoint). Rank 0 saves between steps; no collective runs here.
    def on_term(signum, frame):
        if chief:
            try:
                save(f"signal {signal.Signals(signum).name}")
            except Exception as e:  # a failed save must not hide the signal
                log(f"could not checkpoint on signal: {e}")
        raise SystemExit(128 + signum)

    if chief:
        _install_save_hook(lambda: save("preemption (USR2)"))
    # submitit's own SIGTERM handler only logs; `scontrol requeue` and scancel send SIGTERM,
    # so take it over. USR2 stays submitit's when it runs the job (it calls save_now()).
    signal.signal(signal.SIGTERM, on_term)
    if handle_usr2:
        signal.signal(signal.SIGUSR2, on_term)

    c = counters()
    epoch, step0 = c["epoch"], c["step_in_epoch"]
    progress = Progress(total_steps, done=c["global_step"]) if chief else None
    last_ckpt = last_tick = time.monotonic()
    t_run = time.monotonic()
    steps_run = 0
    try:
        while epoch < cfg.train.epochs:
            ds, _ = train_dataset(cfg.data.dataset, cfg.train.seed, epoch, bs, rank, size, start_step=step0,
                                  max_steps=spe, scaled=False)
            t_epoch, steps_this = time.monotonic(), 0
            for images in ds:
                t_step = time.monotonic()
                gl, dl = train_step(images)
                steps_run += 1
                steps_this += 1
                if not chief:
                    continue
                now = time.monotonic()
                gs = c["global_step"] + steps_run
                tick = now - last_tick >= cfg.train.tick_seconds
                if progress.active or tick:  # reading the losses waits for the step: only when shown
                    g_now, d_now = float(gl), float(dl)
                    ips = steps_this * bs * size / max(now - t_epoch, 1e-9)
                    progress.update(gs, f"epoch {epoch + 1}/{cfg.train.epochs} g {g_now:.3f} d {d_now:.3f} "
                                        f"{ips:.1f} img/s")
                if tick:
                    last_tick = now
                    eta = (total_steps - gs) * (now - t_run) / steps_run
                    stats.write(kind="tick", epoch=epoch + 1, global_step=gs, g_loss=g_now, d_loss=d_now,
                                images_per_s=ips, step_time=now - t_step, eta_s=eta)
                    if not progress.active:
                        log(f"tick epoch {epoch + 1}/{cfg.train.epochs} step {gs}/{total_steps} "
                            f"g {g_now:.4f} d {d_now:.4f} {ips:.1f} img/s ETA {format_seconds(eta)}")
                every_k = cfg.train.checkpoint_every_steps
                every_t = cfg.train.checkpoint_every_minutes * 60
                if (every_k and gs % every_k == 0) or (every_t and now - last_ckpt >= every_t):
                    if step0 + steps_this < spe:  # the epoch end saves anyway
                        save("periodic")
                        last_ckpt = now
            # ---- epoch end (every rank ran the same steps; only rank 0 writes)
            epoch_s = time.monotonic() - t_epoch
            if chief:
                t_sample = time.perf_counter()
                a = {k: float(v.numpy()) for k, v in acc.items()}
                n = max(a["count"], 1.0)
                fake = G(fixed_noise, training=False).numpy()
                with fsutil.atomic_path(run_dir / "samples" / f"epoch_{epoch + 1:04d}.npy") as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, fake)
                save_grid(fake, run_dir / "samples" / f"epoch_{epoch + 1:04d}.png", f"epoch {epoch + 1}")
                rec = dict(kind="epoch", epoch=epoch + 1, global_step=c["global_step"] + steps_run,
                           g_loss=a["g_sum"] / n, d_loss=a["d_sum"] / n,
                           g_loss_min=a["g_min"], g_loss_max=a["g_max"], d_loss_min=a["d_min"],
                           d_loss_max=a["d_max"], steps=int(a["count"]),
                           images_per_s=steps_this * bs * size / max(epoch_s, 1e-9),
                           step_time=epoch_s / max(steps_this, 1), epoch_time=epoch_s,
                           sample_s=time.perf_counter() - t_sample, wall_time=time.time())
                stats.write(**rec)
                with tb.as_default():
                    for k in ("g_loss", "d_loss", "images_per_s"):
                        tf.summary.scalar(k, rec[k], step=epoch + 1)
                tb.flush()
                log(f"epoch {epoch + 1}/{cfg.train.epochs} g_loss {rec['g_loss']:.4f} d_loss {rec['d_loss']:.4f} "
                    f"{rec['images_per_s']:.1f} img/s ({format_seconds(epoch_s)})")
                if cfg.train.snapshot_every_epoch:
                    save_model(G, run_dir / "snapshots" / f"generator_epoch_{epoch + 1:04d}.keras")
            for k, v in acc.items():
                v.assign(ACC_INIT[k])
            epoch += 1
            step0 = 0
            state["epoch"].assign(epoch)
            state["step_in_epoch"].assign(0)
            if chief:
                save("epoch end")
                last_ckpt = time.monotonic()
    finally:
        if progress:
            progress.close()
    summary = {"rank": rank, "size": size, "epochs": cfg.train.epochs, "global_step": counters()["global_step"],
               "weights_sha256": weights_digest(G, D), "host": platform.node(), "pid": os.getpid()}
    # Every rank leaves a note: proof it ran, and a digest to compare replicas by.
    fsutil.write_json(run_dir / "ranks" / f"rank-{rank}.json", summary)
    if chief:
        save_model(G, run_dir / "generator.keras")
        fsutil.write_json(run_dir / "train_done.json", {**summary, "finished": time.time()})
        log(f"done: {cfg.train.epochs} epochs, {summary['global_step']} steps. Run directory: {run_dir}")
        stats.close()
        log.close()
    return summary


def save_model(model, dest: Path) -> None:
    """Keras insists on a .keras suffix, so the temp name keeps it; then fsync and rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp.keras")
    model.save(str(tmp))
    fd = os.open(tmp, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.replace(tmp, dest)
    fsutil.fsync_dir(dest.parent)


def weights_digest(*models) -> str:
    import hashlib

    h = hashlib.sha256()
    for m in models:
        for v in m.variables:
            h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


_save_hook = None


def _install_save_hook(fn) -> None:
    global _save_hook
    _save_hook = fn


def save_now() -> bool:
    """Called from a preemption handler on rank 0: checkpoint the current state if training runs."""
    if _save_hook is None:
        return False
    _save_hook()
    return True
