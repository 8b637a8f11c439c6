"""One collective cycle a step: the job's step negotiates with the other ranks as often as the
seed's loop with its gradient allreduce, counted in Horovod's own timeline on 2 real ranks."""

import json
import os
import subprocess
import sys

from oasis_dcgan import rundir

from tests.conftest import REPO

STEPS = 8  # 2 epochs of 4 steps


def read_timeline(path) -> list[dict]:
    """Horovod's timeline: a JSON array it may leave open (no closing bracket, a trailing comma)."""
    text = path.read_text().strip().rstrip(",")
    return json.loads(text if text.endswith("]") else text + "]")


def allreduce_cycles(path) -> int:
    """How many of Horovod's background cycles ran an allreduce. Each cycle is one negotiation
    among the ranks and, on GPUs, one launch."""
    events = read_timeline(path)
    cycles = sorted(e["ts"] for e in events if e.get("name") == "CYCLE_START")
    starts = [e["ts"] for e in events if e.get("ph") == "B" and e.get("name") == "ALLREDUCE"]
    assert cycles and starts, f"{path}: no cycles or no allreduce (HOROVOD_TIMELINE_MARK_CYCLES unset?)"
    return len({max((c for c in cycles if c <= t), default=0) for t in starts})


def timeline_env(path) -> dict:
    return {**os.environ, "HOROVOD_TIMELINE": str(path), "HOROVOD_TIMELINE_MARK_CYCLES": "1"}


def _seed_loop(rendezvous: str, steps: int) -> int:
    """The seed's step at 32x32 with the least a data-parallel step adds: its gradients averaged."""
    import tensorflow as tf

    from oasis_dcgan.launch.environment import job_world
    from oasis_dcgan.training import distributed, model
    from oasis_dcgan.training.objective import Objective

    tf.config.threading.set_intra_op_parallelism_threads(1)
    ranks = distributed.init(job_world(rendezvous), timeout_s=120)
    G, D = model.build_generator(32), model.build_discriminator(32)
    g_opt, d_opt = tf.keras.optimizers.Adam(1e-4), tf.keras.optimizers.Adam(1e-4)

    @tf.function
    def step(images):
        with tf.GradientTape() as gt, tf.GradientTape() as dt:
            fake = G(tf.random.normal([8, 100]), training=True)
            real_logits, fake_logits = D(images, training=True), D(fake, training=True)
            g_loss = tf.reduce_mean(Objective().g_loss_per_image(fake_logits))
            d_loss = tf.reduce_mean(Objective().d_loss_per_image(real_logits, fake_logits))
        g_grads, d_grads = gt.gradient(g_loss, G.trainable_variables), dt.gradient(d_loss, D.trainable_variables)
        both = ranks.allreduce_mean(g_grads + d_grads)
        g_opt.apply_gradients(zip(both[:len(g_grads)], G.trainable_variables))
        d_opt.apply_gradients(zip(both[len(g_grads):], D.trainable_variables))

    for _ in range(steps):
        step(tf.zeros([8, 32, 32, 1]))
    return ranks.rank  # no barrier: every allreduce in the timeline is a step's


def test_the_job_negotiates_once_a_step_as_the_seed_loop_with_its_allreduce(dataset32, tmp_path):
    import submitit

    saved = dict(os.environ)
    os.environ.update(timeline_env(tmp_path / "seed.json"))  # submitit's local tasks inherit it
    try:
        ex = submitit.AutoExecutor(folder=str(tmp_path / "seed-jobs"), cluster="local")
        ex.update_parameters(tasks_per_node=2, nodes=1, timeout_min=10)
        assert sorted(ex.submit(_seed_loop, str(tmp_path / "seed.rdv"), STEPS).results()) == [0, 1]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    seed = allreduce_cycles(tmp_path / "seed.json")
    assert seed == STEPS, f"the seed loop: {seed} cycles for {STEPS} steps"
    for name, wire in (("fp32", "false"), ("fp16-wire", "true")):  # fp16 gradients beside fp32 statistics
        run = tmp_path / name
        r = subprocess.run([sys.executable, "-m", "jobs.train", str(dataset32), str(run), "--epochs", "2",
                            "--executor", "local", "--ranks", "2", "--batch-size", "8",
                            "--set", f"train.max_steps_per_epoch={STEPS // 2}", "--set", "train.intra_op_threads=1",
                            "--set", f"train.fp16_allreduce={wire}"],
                           cwd=REPO, env=timeline_env(tmp_path / f"{name}.json"), capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert rundir.RunDir(run).read_state()["global_step"] == STEPS
        for rec in rundir.RunDir(run).read_stats("epoch"):  # the step split of two real ranks
            split = rec["step_split"]
            assert split["allreduce_ms"] > 0 and split["compute_ms"] > 0 and split["input_ms"] >= 0, split
            assert sum(split.values()) <= rec["step_time"] * 1000 * 1.01, (split, rec["step_time"])
        job = allreduce_cycles(tmp_path / f"{name}.json")
        # fp16 gradients and fp32 statistics are two groups (Horovod's grouped op takes one dtype),
        # enqueued together: one cycle a step as a rule, and a cycle's boundary may fall between them.
        most = seed if wire == "false" else seed + STEPS // 4
        assert seed <= job <= most, f"the job ({name}): {job} allreduce cycles for {STEPS} steps; the seed's {seed}"
