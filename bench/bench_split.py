"""What train.step_split costs a step: the two timed brackets (input, allreduce) it adds.

Two measurements in one run, on this machine:
- the brackets alone: a compiled loop whose body is nothing but them, against the same loop
  without them, over many iterations (microseconds a step, set against the H200's 5.8 ms step);
- our compiled steps with the stand-in networks of the overhead bench (256x256, batch 16, the
  default steps a call, a constant batch), with the split on and off, on 1 rank and on 2 (gloo),
  each round beside the seed's bare step on as many ranks, measured in the same round.
The GPU adds one host copy of two elements a step, which this machine cannot measure.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from bench.bench_overhead import (BATCH, H200_STEP_MS, RES, bare_step_ms, bare_step_ms_two_ranks, our_steps_ms,
                                  our_steps_ms_two_ranks)
from bench.common import save, table

ROUNDS = 5
LOOP = 20000


def brackets_us(on: bool, n: int = LOOP) -> float:
    """Microseconds an iteration of a compiled loop that only times two no-op brackets, as the step does."""
    import tensorflow as tf

    from oasis_dcgan.training.step import timer

    timed = timer(on)

    @tf.function
    def loop(x):
        def body(i, x, waits):
            x, a = timed(lambda: x + 1.0, [])
            x, b = timed(lambda: x * 1.0, [x])
            return i + 1, x, waits + tf.stack([a, b])
        return tf.while_loop(lambda i, x, w: i < n, body, (tf.constant(0), x, tf.zeros([2], tf.float64)))[1]

    x = tf.constant([0.0])
    loop(x)
    t0 = time.perf_counter()
    float(loop(x)[0])
    return (time.perf_counter() - t0) / n * 1e6


OFF = ("train.step_split=false",)


def one_round() -> dict:
    from oasis_dcgan import config

    k = str(config.Config().train.steps_per_call)
    return {"seed_ms": bare_step_ms(), "on_ms": our_steps_ms()[k], "off_ms": our_steps_ms(extra=OFF)[k],
            "seed2_ms": bare_step_ms_two_ranks(), "on2_ms": our_steps_ms_two_ranks(),
            "off2_ms": our_steps_ms_two_ranks(OFF), "brackets_us": brackets_us(True) - brackets_us(False)}


RESULT = "split"


def main():
    import tensorflow as tf

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rounds = [one_round() for _ in range(ROUNDS)]
    med = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}
    result = save(RESULT, {"resolution": RES, "batch": BATCH, "rounds": rounds, "median": med,
                           "on_over_off_ms": {n: float(np.median([r[f"on{n}_ms"] - r[f"off{n}_ms"] for r in rounds]))
                                              for n in ("", "2")}})
    show(result)
    return result


def show(result: dict) -> None:
    m, rows, notes = result["median"], [], []
    for n, ranks in (("", 1), ("2", 2)):
        seed = m[f"seed{n}_ms"]
        rows += [(f"{ranks} rank(s), train.step_split on", f"{m[f'on{n}_ms']:.2f}", f"{m[f'on{n}_ms'] / seed:.2f}x"),
                 (f"{ranks} rank(s), train.step_split off", f"{m[f'off{n}_ms']:.2f}", f"{m[f'off{n}_ms'] / seed:.2f}x"),
                 (f"{ranks} rank(s), seed's loop{' + allreduce' if n else ''}", f"{seed:.2f}", "1.00x")]
        diffs = [(r[f"on{n}_ms"] - r[f"off{n}_ms"]) * 1000 for r in result["rounds"]]
        d = result["on_over_off_ms"][n or ""] * 1000
        told = ("not told from zero: the rounds straddle it" if min(diffs) < 0 < max(diffs)
                else f"{100 * d / 1000 / H200_STEP_MS:+.1f}% of the H200's step")
        notes.append(f"{ranks} rank(s): median {d:+.0f} us a step, rounds from {min(diffs):+.0f} to {max(diffs):+.0f} "
                     f"us, {told}")
    print(table(rows, (f"{result['resolution']}x{result['resolution']}, batch {result['batch']}, stand-in networks, "
                       "our compiled steps", "ms per step (median of rounds)", "vs the seed's loop, same round")))
    print()
    print(f"The two brackets alone cost {m['brackets_us']:.1f} us a step (a compiled loop of {LOOP:,} iterations "
          f"with and without them), {100 * m['brackets_us'] / 1000 / H200_STEP_MS:.2f}% of the H200's "
          f"{H200_STEP_MS} ms step: the measure of its cost this machine can resolve. The whole step with the "
          f"split on against off, {len(result['rounds'])} rounds: " + "; ".join(notes) + ".")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
