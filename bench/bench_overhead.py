"""The training loop's host cost per step, and the reader's headroom, at 256x256 and batch 16.

On a GPU the seed's step takes 5.8 ms (H200, TF32), so what the loop does around the step
(the reader, the compiled call, Horovod's negotiation, stats) must be a fraction of a
millisecond. This runs the real job (Trainer, reader, Horovod, stats, checkpoint checks)
with the two networks swapped for stand-ins of the same inputs and outputs whose arithmetic
is negligible, and subtracts the stand-ins' bare step (the seed's loop: one compiled call
on a constant batch, nothing else), measured in the same run. The rest is host overhead.

Reader headroom: the HDF5 reader's images per second per CPU core at 256 (process CPU
time, so it holds whatever the core count), against the seed's PNG loop on the same
images, and the cores one GPU needs at the seed step's 2,771 img/s.
"""
from __future__ import annotations

import os
import shutil
import sys
import time

import numpy as np

from oasis_dcgan.rundir import RunDir

from bench.common import WORK, seed_baseline, epoch_gaps, our_step_ms, save, table
from bench.bench_train import dataset

RES, BATCH = 256, 16
ROUNDS = 5  # this machine's step times wander by ~1 ms: medians of rounds, each case beside its seed
H200_STEP_MS, H200_IMG_S = 5.8, 2771


def stand_in_generator(resolution: int, noise_dim: int = 100, precision: str = "fp32"):
    """Noise -> one number -> an image of zeros but one pixel: the job's shapes, next to no arithmetic."""
    import tensorflow as tf

    L = tf.keras.layers
    return tf.keras.Sequential([L.Input((noise_dim,)), L.Dense(1, name="g_dense"), L.Reshape((1, 1, 1)),
                                L.ZeroPadding2D(((0, resolution - 1), (0, resolution - 1)))], name="generator")


def stand_in_discriminator(resolution: int, precision: str = "fp32", dropout_scale: float = 1.0,
                           spectral_norm: bool = False):
    import tensorflow as tf

    L = tf.keras.layers
    return tf.keras.Sequential([L.Input((resolution, resolution, 1)),
                                L.Cropping2D(((0, resolution - 1), (0, resolution - 1))), L.Flatten(),
                                L.Dense(1, name="d_logit")], name="discriminator")


def _use_stand_ins() -> None:
    from oasis_dcgan.training import model

    model.build_generator, model.build_discriminator = stand_in_generator, stand_in_discriminator


def bare_step_ms(steps: int = 400, ranks=None) -> float:
    """The stand-ins in the seed's loop: uint8 batch scaled in the step, both updates, nothing else.
    With `ranks` (distributed.init's collectives), the gradients are averaged over the ranks first:
    the least a data-parallel step does."""
    import tensorflow as tf

    G, D = stand_in_generator(RES), stand_in_discriminator(RES)
    g_opt, d_opt = tf.keras.optimizers.Adam(1e-4), tf.keras.optimizers.Adam(1e-4)
    bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(images_uint8):
        images = tf.cast(images_uint8, tf.float32) / 127.5 - 1
        with tf.GradientTape() as gt, tf.GradientTape() as dt:
            fake = G(tf.random.normal([BATCH, 100]), training=True)
            real, fake_out = D(images, training=True), D(fake, training=True)
            g_loss = bce(tf.ones_like(fake_out), fake_out)
            d_loss = bce(tf.ones_like(real), real) + bce(tf.zeros_like(fake_out), fake_out)
        g_grads, d_grads = gt.gradient(g_loss, G.trainable_variables), dt.gradient(d_loss, D.trainable_variables)
        if ranks is not None:
            both = ranks.allreduce_mean(g_grads + d_grads)
            g_grads, d_grads = both[:len(g_grads)], both[len(g_grads):]
        g_opt.apply_gradients(zip(g_grads, G.trainable_variables))
        d_opt.apply_gradients(zip(d_grads, D.trainable_variables))
        return g_loss, d_loss

    x = tf.zeros([BATCH, RES, RES, 1], tf.uint8)
    for _ in range(5):
        step(x)
    t = time.perf_counter()
    for _ in range(steps):
        out = step(x)
    float(out[0])
    return (time.perf_counter() - t) / steps * 1000


def our_steps_ms(steps: int = 48, extra: tuple = ()) -> dict:
    """Our compiled steps with the stand-ins on a constant batch: the step's own bookkeeping
    (counters, loss accumulators, the visit record, the stop flag) beside the bare step, with
    one step a call (the call's cost paid each step) and with the default steps a call."""
    from oasis_dcgan import config
    from oasis_dcgan.training.trainer import Trainer

    _use_stand_ins()
    run = WORK / "overhead-step"
    shutil.rmtree(run, ignore_errors=True)
    t = Trainer(config.load(None, _options(run, 1, extra)), log_to_stdout=False)
    t.start()
    k = t.cfg.train.steps_per_call
    out = {"1": our_step_ms(t, RES, BATCH, steps, 1), str(k): our_step_ms(t, RES, BATCH, steps, k)}
    t.lock.release()
    t.run_log.close()
    return out


def _options(run_dir, steps: int, extra: tuple = ()) -> list:
    return [f'run_dir="{run_dir}"', f'data.dataset="{dataset(RES)}"', f"train.batch_size={BATCH}", "train.epochs=4",
            f"train.max_steps_per_epoch={steps}", "train.checkpoint_every_minutes=0", *extra]


def _step_ms(run_dir) -> dict:
    """From stats.jsonl, in ms: the median time per step of the epochs after the first (which
    pays tracing); of it, the loop's own time outside the compiled calls; and the median pause
    between two epochs' loops after the first (which traces the epoch-end functions)."""
    ep = RunDir(run_dir).read_stats()
    ep = [r for r in ep if r["kind"] == "epoch"]
    gaps = epoch_gaps(ep)
    return {"step": float(np.median([r["step_time"] for r in ep][1:])) * 1000,
            "outside": float(np.median([r["host_s_per_step"] for r in ep][1:])) * 1000,
            "gap": float(np.median(gaps[1:])) * 1000}


def job_step_ms_one_rank(name: str, steps: int, extra: tuple = ()) -> dict:
    from oasis_dcgan import config
    from oasis_dcgan.training import trainer

    _use_stand_ins()
    run = WORK / f"overhead-{name}"
    shutil.rmtree(run, ignore_errors=True)
    trainer.run(config.load(None, _options(run, steps, extra)), log_to_stdout=False)
    return _step_ms(run)


def _pin(rank: int) -> None:
    """This rank's process (its threads included) on one core of its own."""
    os.sched_setaffinity(0, {rank % os.cpu_count()})


def _rank_worker(run_dir: str, steps: int, extra: tuple, pinned: bool = False) -> None:
    from pathlib import Path

    from oasis_dcgan import config
    from oasis_dcgan.launch.environment import job_world
    from oasis_dcgan.training import trainer

    world = job_world(run_dir + ".rdv")
    if pinned:
        _pin(world.rank)
    _use_stand_ins()
    trainer.run(config.load(None, _options(Path(run_dir), steps, extra)), world, log_to_stdout=False)


def _our_steps_worker(run_dir: str, per_call: int, extra: tuple = ()) -> float:
    """Our compiled steps on a constant batch on this rank: no reader, no loop."""
    from pathlib import Path

    from oasis_dcgan import config
    from oasis_dcgan.launch.environment import job_world
    from oasis_dcgan.training.trainer import Trainer

    _use_stand_ins()
    cfg = config.load(None, _options(Path(run_dir), 1, ("train.intra_op_threads=1", *extra)))
    t = Trainer(cfg, job_world(run_dir + ".rdv"), log_to_stdout=False)
    t.start()
    ms = our_step_ms(t, RES, BATCH, 200, per_call)
    t.ranks.barrier("ours.done")
    return ms


def _bare_hvd_worker(rendezvous: str) -> float:
    import tensorflow as tf

    from oasis_dcgan.launch.environment import job_world
    from oasis_dcgan.training import distributed

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    ranks = distributed.init(job_world(rendezvous))
    ms = bare_step_ms(200, ranks=ranks)
    ranks.barrier("bare.done")
    return ms


def _two_ranks(fn, *args, env: dict | None = None) -> list:
    """fn(*args) in 2 tasks of submitit's local executor (Horovod over gloo, this machine)."""
    import submitit

    saved = dict(os.environ)
    os.environ.update(env or {})  # the local executor's tasks inherit this process's environment
    try:
        ex = submitit.AutoExecutor(folder=str(WORK / "overhead-jobs"), cluster="local")
        ex.update_parameters(tasks_per_node=2, nodes=1, timeout_min=20)
        return ex.submit(fn, *args).results()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def bare_step_ms_two_ranks() -> float:
    rdv = WORK / "overhead-bare.rdv"
    shutil.rmtree(rdv, ignore_errors=True)
    return _two_ranks(_bare_hvd_worker, str(rdv))[0]


def _fresh(name: str) -> str:
    run = WORK / f"overhead-{name}"
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(f"{run}.rdv", ignore_errors=True)
    return str(run)


def job_step_ms_two_ranks(name: str, steps: int, env: dict | None = None, pinned: bool = False) -> dict:
    run = _fresh(name)
    _two_ranks(_rank_worker, run, steps, ("train.intra_op_threads=1",), pinned, env=env)
    return _step_ms(run)


def our_steps_ms_two_ranks(extra: tuple = ()) -> float:
    """Our compiled steps, the default steps a call, on a constant batch on 2 ranks."""
    from oasis_dcgan import config

    return _two_ranks(_our_steps_worker, _fresh("ours-2ranks"), config.Config().train.steps_per_call, extra)[0]


def reader_per_core(n_images: int = 2048) -> float:
    """Images per CPU-second through the job's own input pipeline (uint8, as the step takes it)."""
    from oasis_dcgan.prep.reader import Stream, train_dataset

    ds, steps = train_dataset(dataset(RES), Stream(rng_seed=0, batch_size=BATCH), scaled=False)
    n, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    for images, _ in ds:
        n += int(images.shape[0])
        if n >= n_images:
            break
    cpu = time.process_time() - cpu0
    return n / cpu, n / (time.perf_counter() - wall0)


def one_round(steps: int = 64) -> dict:
    """Every case once, each against the seed's loop on as many ranks, measured beside it: on 2
    ranks that loop also averages its gradients with Horovod, so what is left is what the job adds.
    On 2 ranks the job is also taken apart: its compiled steps alone on a constant batch (what the
    step adds), each rank held to a core of its own, and Horovod's cycle shortened.
    64 steps: the sample dataset's whole epoch at 256 (1,024 images)."""
    bare = bare_step_ms()
    bare_two = bare_step_ms_two_ranks()
    ours = our_steps_ms()
    ours_two = our_steps_ms_two_ranks()
    one = job_step_ms_one_rank("1rank", steps, ("train.intra_op_threads=1",))
    two = job_step_ms_two_ranks("2ranks", steps)
    pinned = job_step_ms_two_ranks("2ranks-pinned", steps, pinned=True)
    two_fast = job_step_ms_two_ranks("2ranks-cycle0.1", steps, {"HOROVOD_CYCLE_TIME": "0.1"})
    rows = {SEED_1: {"step": bare},
            **{f"our compiled steps alone, constant batch, {k} a call": {"step": ms, "base": bare}
               for k, ms in ours.items()},
            JOB_1: {**one, "base": bare},
            SEED_2: {"step": bare_two},
            OURS_2: {"step": ours_two, "base": bare_two},
            JOB_2: {**two, "base": bare_two},
            "the job, 2 ranks, each held to a core of its own": {**pinned, "base": bare_two},
            "the job, 2 ranks, HOROVOD_CYCLE_TIME=0.1 ms": {**two_fast, "base": bare_two}}
    for r in rows.values():
        if "base" in r:
            r["over_seed"] = r["step"] - r["base"]
    return rows


SEED_1, JOB_1 = "seed's loop, 1 rank: one call a step", "the job, 1 rank"
SEED_2, JOB_2 = "seed's loop + Horovod allreduce, 2 ranks", "the job, 2 ranks (gloo, Horovod defaults)"
OURS_2 = "our compiled steps alone, constant batch, 2 ranks"


def median_rows(rounds: list[dict]) -> dict:
    rows = {case: {k: float(np.median([r[case][k] for r in rounds])) for k in rounds[0][case]} for case in rounds[0]}
    for case, r in rows.items():
        if "over_seed" in r:
            r["over_seed_each"] = [x[case]["over_seed"] for x in rounds]
    return rows


RESULT = "overhead"


def main():
    import tensorflow as tf

    from oasis_dcgan import config

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf.config.threading.set_intra_op_parallelism_threads(1)  # the 1-rank job below is told the same
    tf.config.threading.set_inter_op_parallelism_threads(1)
    per_core, wall = reader_per_core()
    png = seed_baseline("png", str(_png_folder()), "--limit", "400", "--res", str(RES))["images_per_s"]
    rows = median_rows([one_round() for _ in range(ROUNDS)])
    one, two = rows[JOB_1], rows[JOB_2]
    k = config.Config().train.steps_per_call
    k_a_call = rows[f"our compiled steps alone, constant batch, {k} a call"]
    result = save(RESULT, {
        "resolution": RES, "batch": BATCH, "steps_per_epoch": 64, "rounds": ROUNDS,
        "rows": [{"case": c, **r} for c, r in rows.items()],
        "job_over_seed_ms": {"1rank": one["over_seed"], "2ranks": two["over_seed"]},
        # What the compiled call costs a step beyond the seed's (its bookkeeping, its fixed cost
        # over k steps): the projection's input, with the loop's own time outside the calls.
        "call_over_seed_ms": k_a_call["over_seed"],
        "host_outside_step_ms": max(one["outside"], two["outside"]),
        "epoch_gap_ms": {"1rank": one["gap"], "2ranks": two["gap"]},
        "reader_img_per_cpu_s": per_core, "reader_img_per_s_wall": wall, "seed_png_img_per_s": png,
        "cores_per_gpu_at_2771": H200_IMG_S / per_core})
    show(result)
    return result


def show(result: dict) -> None:
    rows = {r["case"]: r for r in result["rows"]}
    per_core, png = result["reader_img_per_cpu_s"], result["seed_png_img_per_s"]

    def us(r, k):
        return f"{r[k] * 1000:.0f}" if k in r else ""

    def rounds_us(r):
        return f"{r['over_seed'] * 1000:.0f} ({', '.join(f'{x * 1000:.0f}' for x in r['over_seed_each'])})"

    print(table([(c, f"{r['step']:.2f}", f"{r['step'] / r['base']:.2f}x" if "base" in r else "",
                  rounds_us(r) if "over_seed" in r else "",
                  f"{100 * r['over_seed'] / H200_STEP_MS:+.1f}%" if "over_seed" in r else "", us(r, "outside"),
                  f"{r['gap']:.2f}" if "gap" in r else "")
                 for c, r in rows.items()],
                (f"{RES}x{RES}, batch {BATCH}, stand-in networks", "ms per step", "vs the seed's loop (same ranks)",
                 f"over the seed's loop, us: median (each of {result['rounds']})",
                 "that, of the H200 step (5.8 ms)", "loop's own time outside the compiled calls, us",
                 "pause between epochs, ms")))
    print()
    ours_two, job_two = rows[OURS_2], rows[JOB_2]
    print(f"On 2 ranks, the compiled steps alone on a constant batch are {ours_two['over_seed']:+.2f} ms a step "
          f"against the seed's loop with the same allreduce; the whole job is {job_two['over_seed']:+.2f} ms. What "
          f"the job adds beyond its steps is its reader: {BATCH / per_core * 1000:.2f} ms of CPU a step and rank, "
          "in threads that share these 2 cores with the two ranks' steps (on a GPU node, cores of their own).")
    print()
    print(f"The loop pauses {rows[JOB_1]['gap']:.2f} ms between two epochs on 1 rank and {job_two['gap']:.2f} ms on 2 "
          "(median over the epochs after the first, each round; the samples and records come out of the epoch's "
          "last compiled call, and one thread for the whole run writes the stats, grid and TensorBoard), with the "
          "default cadence writing no checkpoint.")
    print()
    print(table([("HDF5 reader (the job's pipeline, uint8)", f"{per_core:.0f}", f"{per_core / png:.1f}x",
                  f"{H200_IMG_S / per_core:.2f}"),
                 ("seed: PNG read, decode, resize (one core)", f"{png:.0f}", "1.0x", f"{H200_IMG_S / png:.1f}")],
                ("input at 256x256", "img/s per core", "vs seed", "cores per GPU at 2,771 img/s")))


def _png_folder():
    from bench.common import sample_release

    return sample_release() / "keras_png_slices_data" / "keras_png_slices_train"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
