"""Training: artefacts, checkpoint format, fallback, stops, resume rules.

SIGKILL and requeue: tests/cluster/test_slurm_failures.py."""

import time

import numpy as np
import pytest

from oasis_dcgan import config
from oasis_dcgan.training import model, trainer

from tests.conftest import small_cfg


def test_a_signal_that_lands_while_tensorflow_traces_still_checkpoints(dataset32, tmp_path):
    import tensorflow as tf

    t = trainer.Trainer(small_cfg(dataset32, tmp_path / "run", "train.epochs=1"), log_to_stdout=False)
    try:
        t.open_outputs(t.start())
        saved = []

        @tf.function(autograph=False)  # a handler's code runs as written, not converted
        def traced(x):  # a handler runs between two bytecodes: here, in the middle of a trace
            saved.append(t.checkpoint_now("signal SIGTERM"))
            return x + 1

        traced(tf.constant(1))
        assert saved == [True], (tmp_path / "run" / "log.txt").read_text()
        (ckpt,) = list((tmp_path / "run" / "checkpoints").iterdir())
        assert t.checkpoints.verify(ckpt) is None
    finally:
        t.lock.release()
        t.run_log.close()  # run() would: no later run's lines go to this run's log


def test_the_epoch_end_checkpoints_when_due_and_always_at_a_stop_or_the_end(tmp_path):
    from oasis_dcgan.training.saving import SavePolicy, StopRequest

    cfg = small_cfg(tmp_path / "ds", tmp_path / "run", "train.epochs=10", "train.checkpoint_every_epochs=3",
                  "train.checkpoint_every_minutes=1")
    policy, stop = SavePolicy(cfg.train), StopRequest()
    reasons = {epoch: policy.at_epoch_end(epoch, 7, stop) for epoch in range(1, 11)}
    assert reasons == {1: "", 2: "", 3: "epoch end", 4: "", 5: "", 6: "epoch end", 7: "", 8: "", 9: "epoch end",
                       10: "end of training"}
    policy.last = time.monotonic() - 61
    assert policy.at_epoch_end(4, 7, stop) == "periodic", "a minute passed"
    stop.wanted = "signal SIGUSR2"
    stop.agree()
    assert policy.at_epoch_end(4, 7, stop) == "signal SIGUSR2 at the epoch end"
    stop.saved = True
    assert policy.at_epoch_end(4, 7, stop) == "epoch end", "the stop's own save came first; then the new epoch's"


def test_lr_scaling():
    c = config.load(None, ["train.lr_scaling=\"sqrt\""])
    assert model.lr_for(c, 4) == pytest.approx(2e-4)
    c = config.load(None, ["train.lr_scaling=\"linear\""])
    assert model.lr_for(c, 4) == pytest.approx(4e-4)


def test_lr_rampdown_factor_falls_linearly_over_the_last_epochs():
    assert [model.lr_factor(e, 10, 0.0) for e in range(10)] == [1.0] * 10
    assert [model.lr_factor(e, 10, 0.4) for e in range(10)] == pytest.approx([1] * 7 + [0.75, 0.5, 0.25])
    assert [model.lr_factor(e, 4, 1.0) for e in range(4)] == pytest.approx([1, 0.75, 0.5, 0.25])


def test_dropout_masks_differ_across_ranks_and_follow_the_step():
    import tensorflow as tf

    from oasis_dcgan.training.step import set_dropout_rng

    D = model.build_discriminator(32)
    x = tf.ones([4, 32, 32, 1])

    def masks(rank, step):
        set_dropout_rng(D, rng_seed=3, rank=rank, global_step=step)
        return D(x, training=True).numpy()

    assert np.array_equal(masks(0, 5), masks(0, 5)), "a function of (seed, rank, step)"
    assert not np.array_equal(masks(0, 5), masks(1, 5)), "ranks draw different masks"
    assert not np.array_equal(masks(0, 5), masks(0, 6))


def test_discriminator_dropout_scale_multiplies_the_seeds_rates():
    import tensorflow as tf


    def rates(D):
        return [layer.rate for layer in D.layers if isinstance(layer, tf.keras.layers.Dropout)]

    assert rates(model.build_discriminator(32)) == [0.4, 0.2, 0.2], "the seed's by default"
    assert rates(model.build_discriminator(32, dropout_scale=0.5)) == pytest.approx([0.2, 0.1, 0.1])
    D = model.build_discriminator(32, dropout_scale=0)
    x = tf.random.stateless_uniform([4, 32, 32, 1], seed=[1, 2])
    np.testing.assert_array_equal(D(x, training=True).numpy(), D(x, training=False).numpy())
    assert len(D.weights) == len(model.build_discriminator(32).weights), "checkpoints stay interchangeable"
