"""What data-parallel training would reach on GPU clusters, from the measured H200 step, and
which lever gives what.

Measured inputs: the seed's step on one H200 (STACK.md's table, TF32 and bf16); the bytes a
step reduces, counted from the model at 256 (the gradients, and G's BatchNorm statistics,
which stay fp32 on the wire); and, from this suite's own benchmarks (bench/results), what the
job adds to the seed's step:
- the loop's own time between compiled calls, a step;
- what its compiled call costs beyond the seed's (none when negative: k steps a call pay the
  call's fixed cost once, where the seed's loop pays it every step);
- the pause between epochs, spread over the epoch's steps;
- a checkpoint's blocking snapshot, once per checkpoint interval.
Assumptions, stated here and printed: the bandwidths and per-hop latency below, a
hierarchical ring (NVLink in a node, one NIC per GPU across nodes), and no overlap of the
allreduce with the backward pass unless a lever says so.

Time a step = compute + the allreduce's exposed part + the job's overheads; efficiency =
compute / that.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from bench.common import RESULTS, save, table

RESULT = "projection"
RES = 256
EPOCH_IMAGES = 9664
# H200, the seed's layers at 256 (ms per step, by per-GPU batch).
STEP_MS = {"fp32": {16: 5.8, 64: 17.8, 256: 64.8},   # TF32 matmuls, fp32 storage
           "bf16": {16: 6.3, 64: 15.4, 256: 54.8}}
# Assumed achieved bandwidths (bytes/s). NVLink: NCCL's all-reduce bus bandwidth on an 8-GPU
# NVLink-4 node. InfiniBand: one NIC per GPU (the usual 8-GPU node design), 85% of line rate.
NVLINK_BUS = 450e9
IB = {"200 Gb/s IB": 0.85 * 200e9 / 8, "400 Gb/s IB": 0.85 * 400e9 / 8}
HOP_LATENCY_S = 10e-6        # per ring step: a conservative figure; the "latency" lever tries 3 us
GPUS_PER_NODE = 8
CHECKPOINT_MINUTES = 10.0    # train.checkpoint_every_minutes, the default
GOALS = {(8, "NVLink"): 0.95, (32, "400 Gb/s IB"): 0.90}


@dataclass(frozen=True)
class Bytes:
    """What one step's allreduce carries at 256, counted from the model."""
    g_grads: float
    d_grads: float
    bn_stats: float

    def on_wire(self, fp16: bool) -> float:
        return (self.g_grads + self.d_grads) / (2 if fp16 else 1) + self.bn_stats

    def d_share(self, fp16: bool) -> float:
        return self.d_grads / (2 if fp16 else 1) / self.on_wire(fp16)


@dataclass(frozen=True)
class Overheads:
    """What the job adds to the seed's step, measured by this suite's benchmarks (ms)."""
    loop_ms: float = 0.0        # the loop's own time a step, between compiled calls
    call_ms: float = 0.0        # what the compiled call costs a step beyond the seed's (>= 0)
    gap_ms: float = 0.0         # the pause between two epochs (the worse of 1 and 2 ranks)
    snapshot_ms: float = 0.0    # a checkpoint's blocking snapshot, once per CHECKPOINT_MINUTES
    source: str = ""


@dataclass(frozen=True)
class Levers:
    fp16_wire: bool = False       # train.fp16_allreduce
    overlap_d: bool = False       # D's allreduce started before G's backward ends (not built)
    hop_latency_s: float = HOP_LATENCY_S


def model_bytes() -> Bytes:
    import numpy as np

    from oasis_dcgan.training import model

    def count(vs):
        return float(sum(int(np.prod(v.shape)) for v in vs) * 4)

    g, d = model.build_generator(RES), model.build_discriminator(RES)
    return Bytes(count(g.trainable_variables), count(d.trainable_variables), count(g.non_trainable_variables))


def compute_ms(precision: str, batch: int) -> float:
    """The measured step, linear between the measured batches and beyond the last two."""
    pts = sorted(STEP_MS[precision].items())
    for (b0, t0), (b1, t1) in zip(pts, pts[1:]):
        if batch <= b1 or (b1, t1) == pts[-1]:
            return t0 + (t1 - t0) * (batch - b0) / (b1 - b0)
    raise AssertionError


def allreduce_ms(gpus: int, nbytes: float, network: str, latency_s: float = HOP_LATENCY_S) -> float:
    """Hierarchical ring: NVLink inside a node; across nodes each GPU's NIC carries a 1/8 shard."""
    if gpus < 2:
        return 0.0
    local = min(gpus, GPUS_PER_NODE)
    nodes = gpus // local
    t = 2 * (local - 1) / local * nbytes / NVLINK_BUS + 2 * (local - 1) * latency_s
    if nodes > 1:
        t += 2 * (nodes - 1) / nodes * (nbytes / local) / IB[network] + 2 * (nodes - 1) * latency_s
    return t * 1000


def step_breakdown(gpus: int, batch: int, precision: str, network: str, o: Overheads, lv: Levers,
                   b: Bytes) -> dict:
    comp = compute_ms(precision, batch)
    ar = allreduce_ms(gpus, b.on_wire(lv.fp16_wire), network, lv.hop_latency_s)
    # D's gradients are done before G's backward through D and G is; their share of the
    # allreduce could run meanwhile. G's Dense layer, the bulk, is its first: its gradient comes last.
    exposed = ar * (1 - b.d_share(lv.fp16_wire)) if lv.overlap_d else ar
    steps_per_epoch = -(-EPOCH_IMAGES // (gpus * batch))
    base = comp + exposed + o.loop_ms + o.call_ms + o.gap_ms / steps_per_epoch
    total = base * (1 + o.snapshot_ms / (CHECKPOINT_MINUTES * 60e3))
    return {"compute_ms": comp, "allreduce_ms": ar, "exposed_allreduce_ms": exposed, "total_ms": total,
            "efficiency": comp / total, "img_s": gpus * batch / total * 1000}


def batch_for(target: float, gpus: int, precision: str, network: str, o: Overheads, lv: Levers, b: Bytes):
    for batch in range(16, 4097, 16):
        if step_breakdown(gpus, batch, precision, network, o, lv, b)["efficiency"] >= target:
            return batch
    return None


def measured_overheads() -> Overheads:
    """From this machine's results in bench/results."""
    loop = call = gap = snap = 0.0
    src = []
    p = RESULTS / "overhead.json"
    if p.is_file():
        d = json.loads(p.read_text())
        loop, call, gap = d["host_outside_step_ms"], max(0.0, d.get("call_over_seed_ms", 0.0)), \
            max(d["epoch_gap_ms"].values())
        src.append("overhead.json")
    p = RESULTS / "checkpoint.json"
    if p.is_file():
        snap = 1000 * json.loads(p.read_text()).get("every_step_background", {}).get("blocking_s", 0.0)
        src.append("checkpoint.json")
    return Overheads(loop, call, gap, snap,
                     ", ".join(src) or "none found: run bench_overhead and bench_checkpoint first")


FP16_WIRE = "+ train.fp16_allreduce (half the bytes)"
LEVER_STEPS = (  # cumulative, in the order a user would reach for them
    ("the job as it runs by default (fp32 gradients)", Levers()),
    (FP16_WIRE, Levers(fp16_wire=True)),
    ("+ D's allreduce overlapped with G's backward (not built)", Levers(fp16_wire=True, overlap_d=True)),
    ("+ 3 us a ring step instead of 10 (NCCL's latency: an assumption)",
     Levers(fp16_wire=True, overlap_d=True, hop_latency_s=3e-6)),
)


def lever_table(o: Overheads, b: Bytes) -> list[dict]:
    out = []
    for (gpus, net), goal in GOALS.items():
        for name, lv in LEVER_STEPS:
            r = step_breakdown(gpus, 16, "fp32", net, o, lv, b)
            bare = step_breakdown(gpus, 16, "fp32", net, Overheads(), lv, b)
            out.append({"gpus": gpus, "network": net, "goal": goal, "lever": name, **r,
                        "efficiency_without_overheads": bare["efficiency"]})
    return out


def main():
    o, b = measured_overheads(), model_bytes()
    cases = []
    grid = [(8, "NVLink")] + [(n, net) for net in IB for n in (16, 32, 64)]
    for gpus, network in grid:
        for fp16 in (False, True):
            for batch in (16, 64, 256):
                lv = Levers(fp16_wire=fp16)
                cases.append({"gpus": gpus, "network": network, "wire": "fp16" if fp16 else "fp32", "batch": batch,
                              **step_breakdown(gpus, batch, "fp32", network, o, lv, b),
                              "efficiency_communication_only":
                                  step_breakdown(gpus, batch, "fp32", network, Overheads(), lv, b)["efficiency"]})
    levers = lever_table(o, b)
    assumed = {"nvlink_bus_Bps": NVLINK_BUS, "ib_Bps": IB, "hop_latency_s": HOP_LATENCY_S}
    b90 = {name: batch_for(0.9, 32, "fp32", "400 Gb/s IB", o, lv, b) for name, lv in LEVER_STEPS}
    result = save(RESULT, {"overheads": o.__dict__, "bytes": b.__dict__, "assumed": assumed, "cases": cases,
                           "levers": levers, "batch_for_90pct_32gpus_400ib": b90})
    show(result)
    return result


def show(result: dict) -> None:
    o, b = result["overheads"], result["bytes"]
    print(f"Measured inputs: H200 step (TF32) 5.8/17.8/64.8 ms at batch 16/64/256; a step reduces "
          f"{b['g_grads'] / 1e6:.1f} MB of G's gradients, {b['d_grads'] / 1e6:.1f} MB of D's and "
          f"{b['bn_stats'] / 1e6:.1f} MB of G's BatchNorm statistics; from {o['source']}: the loop's own "
          f"{o['loop_ms'] * 1000:.0f} us a step, its call {o['call_ms'] * 1000:.0f} us beyond the seed's, "
          f"{o['gap_ms']:.2f} ms between epochs, a {o['snapshot_ms']:.0f} ms checkpoint snapshot every "
          f"{CHECKPOINT_MINUTES:g} minutes.")
    print(f"Assumed: NVLink all-reduce bus bandwidth {NVLINK_BUS / 1e9:.0f} GB/s; one NIC per GPU at 85% of line "
          f"rate; {HOP_LATENCY_S * 1e6:.0f} us a ring step; no overlap of the allreduce with the backward pass.")
    print()
    print("Which lever gives what, batch 16 a GPU (cumulative):")
    print()
    print(table([(f"{r['gpus']} GPUs, {r['network']}", f"{r['goal'] * 100:.0f}%", r["lever"],
                  f"{r['exposed_allreduce_ms']:.3f}", f"{r['efficiency'] * 100:.1f}%",
                  f"{r['efficiency_without_overheads'] * 100:.1f}%") for r in result["levers"]],
                ("setup", "goal", "lever", "allreduce ms exposed", "efficiency",
                 "the same without the job's overheads")))
    print()
    rows = {}
    for c in result["cases"]:
        key = (c["gpus"], c["network"], c["wire"])
        rows.setdefault(key, []).append(c)
    print(table([(g, net, wire, f"{cs[0]['allreduce_ms']:.2f}",
                  " / ".join(f"{c['efficiency'] * 100:.0f}%" for c in cs),
                  " / ".join(f"{c['efficiency_communication_only'] * 100:.0f}%" for c in cs))
                 for (g, net, wire), cs in rows.items()],
                ("GPUs", "link", "gradients on the wire", "allreduce ms (batch-independent)",
                 "efficiency at batch 16 / 64 / 256, with this machine's overheads", "the same, allreduce only")))
    print()
    print("Batch a GPU for 90% on 32 GPUs over 400 Gb/s IB: "
          + "; ".join(f"{k}: {v or 'none up to 4096'}" for k, v in result["batch_for_90pct_32gpus_400ib"].items()))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
