"""What data-parallel training would reach on GPU clusters, from the measured H200 step.

Inputs that were measured: the seed's step on one H200 (STACK.md's table, TF32 and bf16),
the 111.0 MB of gradients a step at 256 (55.5 MB when sent in fp16), and, from this
suite's own benchmarks, the loop's host overhead per step and the epoch end's blocking time.
Inputs that are assumptions, stated here and in the README: the bandwidths below and a
ring allreduce that is not overlapped with the backward pass (the step reduces all
gradients in one fused call after both tapes, so nothing overlaps).

Time per step = compute + allreduce + host overhead + the epoch end's blocking spread over
the epoch's steps; efficiency = compute / that.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from bench.common import RESULTS, save, table

EPOCH_IMAGES = 9664
GRAD_BYTES = 111.0e6
# H200, the seed's layers at 256 (ms per step, by per-GPU batch).
STEP_MS = {"fp32": {16: 5.8, 64: 17.8, 256: 64.8},   # TF32 matmuls, fp32 storage
           "bf16": {16: 6.3, 64: 15.4, 256: 54.8}}
# Assumed achieved bandwidths (bytes/s) and per-hop latency. NVLink: NCCL's all-reduce bus
# bandwidth on an 8-GPU NVLink-4 node. InfiniBand: one NIC per GPU (the usual 8-GPU node
# design), 85% of line rate achieved.
NVLINK_BUS = 450e9
IB = {"200 Gb/s IB": 0.85 * 200e9 / 8, "400 Gb/s IB": 0.85 * 400e9 / 8}
LATENCY_S = 10e-6
GPUS_PER_NODE = 8
CHECKPOINT_MINUTES = 10.0   # train.checkpoint_every_minutes, the default


@dataclass
class Overheads:
    """What the job adds to the step, as measured by this suite's benchmarks (ms)."""
    host_ms: float = 0.0        # the loop's own time per step, outside the compiled call
    gap_ms: float = 0.0         # the pause between two epochs
    snapshot_ms: float = 0.0    # a checkpoint's snapshot, once per CHECKPOINT_MINUTES
    source: str = ""


def compute_ms(precision: str, batch: int) -> float:
    """The measured step, linear between the measured batches and beyond the last two."""
    pts = sorted(STEP_MS[precision].items())
    for (b0, t0), (b1, t1) in zip(pts, pts[1:]):
        if batch <= b1 or (b1, t1) == pts[-1]:
            return t0 + (t1 - t0) * (batch - b0) / (b1 - b0)
    raise AssertionError


def allreduce_ms(gpus: int, nbytes: float, network: str) -> float:
    """Hierarchical ring: NVLink inside a node; across nodes each GPU's NIC carries a 1/8 shard."""
    local = min(gpus, GPUS_PER_NODE)
    nodes = gpus // local
    t = 2 * (local - 1) / local * nbytes / NVLINK_BUS + 2 * (local - 1) * LATENCY_S
    if nodes > 1:
        t += 2 * (nodes - 1) / nodes * (nbytes / local) / IB[network] + 2 * (nodes - 1) * LATENCY_S
    return t * 1000


def step_breakdown(gpus: int, batch: int, precision: str, wire: str, network: str, o: Overheads) -> dict:
    nbytes = GRAD_BYTES / (2 if wire == "fp16" else 1)
    comp = compute_ms(precision, batch)
    ar = allreduce_ms(gpus, nbytes, network) if gpus > 1 else 0.0
    steps_per_epoch = -(-EPOCH_IMAGES // (gpus * batch))
    base = comp + ar + o.host_ms + o.gap_ms / steps_per_epoch
    total = base * (1 + o.snapshot_ms / (CHECKPOINT_MINUTES * 60e3))  # one snapshot per checkpoint interval
    return {"compute_ms": comp, "allreduce_ms": ar, "total_ms": total, "efficiency": comp / total,
            "img_s": gpus * batch / total * 1000}


def batch_for(target: float, gpus: int, precision: str, wire: str, network: str, o: Overheads) -> int | None:
    for batch in range(16, 4097, 16):
        if step_breakdown(gpus, batch, precision, wire, network, o)["efficiency"] >= target:
            return batch
    return None


def measured_overheads() -> Overheads:
    """From this machine's results in bench/results."""
    host = gap = snap = 0.0
    src = []
    p = RESULTS / "overhead.json"
    if p.is_file():
        d = json.loads(p.read_text())
        # The loop's own time outside the compiled calls, or what the 1-rank job adds to the
        # seed's loop if more: on the critical path whatever runs the step. (On 2 ranks the job
        # adds more here, the reader's CPU on cores the step needs, which a GPU node has to
        # spare, and gloo's allreduce, which the model above replaces.)
        host = max(d["host_outside_step_ms"], d.get("job_over_seed_ms", {}).get("1rank", 0.0))
        gap = max(d["epoch_gap_ms"].values())
        src.append("overhead.json")
    p = RESULTS / "checkpoint.json"
    if p.is_file():
        snap = 1000 * json.loads(p.read_text()).get("every_step_background", {}).get("blocking_s", 0.0)
        src.append("checkpoint.json")
    return Overheads(host, gap, snap, ", ".join(src) or "none found: run bench_overhead and bench_checkpoint first")


def main():
    o, lean = measured_overheads(), Overheads(source="none")
    rows, out = [], []
    cases = [(8, "NVLink")] + [(n, net) for net in IB for n in (16, 32, 64)]
    for gpus, network in cases:
        for wire in ("fp32", "fp16"):
            effs, comm = [], []
            for batch in (16, 64, 256):
                r = step_breakdown(gpus, batch, "fp32", wire, network, o)
                effs.append(r)
                comm.append(step_breakdown(gpus, batch, "fp32", wire, network, lean))
                out.append({"gpus": gpus, "network": network, "wire": wire, "batch": batch, **r,
                            "efficiency_communication_only": comm[-1]["efficiency"]})
            b90 = [batch_for(0.9, gpus, "fp32", wire, network, x) for x in (o, lean)] if gpus == 32 else None
            rows.append((gpus, network, wire, f"{effs[0]['allreduce_ms']:.2f}",
                         " / ".join(f"{e['efficiency'] * 100:.0f}%" for e in effs),
                         " / ".join(f"{e['efficiency'] * 100:.0f}%" for e in comm),
                         " / ".join(str(b or "none up to 4096") for b in b90) if b90 else ""))
    b90_bf16 = {net: [batch_for(0.9, 32, "bf16", "fp16", net, x) for x in (o, lean)] for net in IB}
    result = save("projection", {"overheads": o.__dict__,
                                 "assumed": {"nvlink_bus_Bps": NVLINK_BUS, "ib_Bps": IB, "latency_s": LATENCY_S},
                                 "cases": out, "batch_for_90pct_32gpus_bf16_fp16wire": b90_bf16})
    print(f"Measured inputs: H200 step (TF32) 5.8/17.8/64.8 ms at batch 16/64/256; gradients 111.0 MB; from "
          f"{o.source}: the loop's own {o.host_ms * 1000:.0f} us a step, {o.gap_ms:.0f} ms between epochs, a "
          f"{o.snapshot_ms:.0f} ms checkpoint snapshot every {CHECKPOINT_MINUTES:g} minutes.")
    print(f"Assumed: NVLink all-reduce bus bandwidth {NVLINK_BUS / 1e9:.0f} GB/s; one NIC per GPU at 85% of line "
          "rate; no overlap of the allreduce with the backward pass.")
    print()
    print(table(rows, ("GPUs", "link", "gradients on the wire", "allreduce ms (batch-independent)",
                       "efficiency at batch 16 / 64 / 256, with this machine's overheads",
                       "the same, allreduce only", "batch/GPU for 90%, 32 GPUs: with overheads / allreduce only")))
    print()
    print("32 GPUs, bf16 compute and fp16 gradients, batch/GPU for 90% (with overheads / allreduce only): "
          + "; ".join(f"{net}: {' / '.join(str(b or 'none up to 4096') for b in bs)}" for net, bs in b90_bf16.items()))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
