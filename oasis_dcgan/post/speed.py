"""Where a run's step time goes: the step split that train.step_split records in every epoch line
of stats.jsonl, summarised for the report and the leaderboard.

Per step: the compiled computation, the wait for the allreduce (the wire and the slowest peer),
and the wait for input. The epoch lines carry milliseconds a step; the first epoch traces the
step, so the summary takes the median of the others (of the first alone when there are no others).
"""
from __future__ import annotations

import statistics

PARTS = ("compute_ms", "allreduce_ms", "input_ms")
BOUND_SHARE = 0.2  # a wait past this share of the step is what to fix first


def step_split(epochs: list[dict], world_size: int, fp16_allreduce: bool) -> dict | None:
    """The median split of the run's epochs, each part's share, and what it says; None when the
    run recorded none (trained before train.step_split existed, or with it off)."""
    timed = [e["step_split"] for e in epochs if sum(e.get("step_split", {}).values()) > 0]
    if not timed:
        return None
    timed = timed[1:] or timed
    split = {k: statistics.median(t[k] for t in timed) for k in PARTS}
    total = sum(split.values()) or 1e-12
    shares = {k: split[k] / total for k in PARTS}
    words = [reading(_shares(t), world_size, fp16_allreduce).split(":")[0].split(" (")[0] for t in timed]
    said = reading(shares, world_size, fp16_allreduce)
    if len(set(words)) > 1:  # a bound only where every epoch shows it
        said = f"undetermined: the epochs disagree ({', '.join(sorted(set(words)))})"
    return {**split, "shares": shares, "epochs": len(timed), "reading": said}


def _shares(t: dict) -> dict:
    total = sum(t[k] for k in PARTS) or 1e-12
    return {k: t[k] / total for k in PARTS}


def reading(shares: dict, world_size: int, fp16_allreduce: bool) -> str:
    if shares["input_ms"] >= BOUND_SHARE:
        return (f"bound by input: {shares['input_ms']:.0%} of a step waits for data; the reader does not keep "
                "up (more CPU cores a rank, or the dataset on faster storage)")
    if world_size > 1 and shares["allreduce_ms"] >= BOUND_SHARE:
        lever = ("; train.fp16_allreduce = true would halve the bytes" if not fp16_allreduce
                 else "; the gradients already travel in fp16: a larger batch a rank spreads the cost")
        return f"bound by communication: {shares['allreduce_ms']:.0%} of a step waits for the allreduce{lever}"
    alone = "one rank, no allreduce" if world_size == 1 else f"{shares['allreduce_ms']:.0%} allreduce wait"
    return f"bound by computation ({shares['compute_ms']:.0%} of a step; {alone})"


def row(split: dict | None) -> list[str]:
    """The split as table cells: compute, allreduce and input milliseconds, and the reading."""
    if split is None:
        return ["-", "-", "-", "not recorded"]
    return [f"{split[k]:.2f}" for k in PARTS] + [split["reading"]]


HEADER = ["compute ms", "allreduce wait ms", "input wait ms", "reading"]
