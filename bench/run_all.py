"""`make bench`: every benchmark, one after another, then one results table (bench/results/RESULTS.md).

`python -m bench.run_all multinode preempt` runs only those and replaces their sections in the
existing RESULTS.md; each section names the machine and the time it was measured on.
`python -m bench.run_all --from-results quality` rebuilds a section from its saved result file
(for the sections whose module has a show()), measuring nothing.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import time

from bench import (bench_checkpoint, bench_data, bench_multinode, bench_overhead, bench_precision, bench_preempt,
                   bench_quality, bench_recipe, bench_ssim, bench_train, probe_generator, projection)
from bench.common import RESULTS, machine

SECTIONS = {  # short name: (heading, module)
    "ssim": ("Seed metric (max SSIM, 800 pairs)", bench_ssim),
    "data": ("Data: packing and reading", bench_data),
    "train": ("Training", bench_train),
    "checkpoint": ("Checkpoints off the critical path", bench_checkpoint),
    "preempt": ("Preemption (dev Slurm cluster)", bench_preempt),
    "multinode": ("Two hosts (dev Slurm cluster, partition multi)", bench_multinode),
    "overhead": ("Host overhead per step, and the reader's headroom", bench_overhead),
    "precision": ("Mixed precision", bench_precision),
    "recipe": ("The demo's recipe: brains in its budget", bench_recipe),
    "probe": ("Why the demo's recipe stalls: the generator's upsampling, R1, more steps", probe_generator),
    "quality": ("Quality against images seen: the seed's recipe and the demo's, three seeds", bench_quality),
    # Last: it reads what overhead and checkpoint measured.
    "projection": ("Projection: data-parallel efficiency on H200 clusters", projection),
}
HEAD = ("# Benchmark results\n\nEvery ratio is against the seed's approach (the baseline script seed_style_bench.py) "
        "run in the same session on the same data. Each section says when and on what it was measured.\n\n")


def describe_machine(m: dict | None = None, when: str | None = None) -> str:
    """The machine a section was measured on: this one now, or the one its result file names."""
    m = m or machine()
    return (f"Measured {when or time.strftime('%Y-%m-%d %H:%M')} on: {m.get('cpu')}, {m['cores']} cores "
            f"({m.get('simd')}), {m.get('memory_gib')} GiB, no GPU; Python {m['python']}, TensorFlow "
            f"{m.get('tensorflow')}, numpy {m['numpy']}.")


def rendered_section(heading: str, mod) -> str:
    """A section rebuilt from its saved result file (the module's show()), with the machine that file names."""
    result = json.loads((RESULTS / f"{mod.RESULT}.json").read_text())
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        mod.show(result)
    return f"## {heading}\n\n{describe_machine(result['machine'], result['when'])}\n\n{buf.getvalue().strip()}\n"


def run_section(heading: str, mod) -> str:
    """The section's module in a process of its own: each sets TensorFlow's threads before it runs
    anything, which a process where an earlier section ran TensorFlow no longer allows."""
    print(f"== {heading}", flush=True)
    t = time.time()
    r = subprocess.run([sys.executable, "-m", mod.__name__], stdout=subprocess.PIPE, text=True)
    print(r.stdout, flush=True)
    if r.returncode:
        raise SystemExit(f"{mod.__name__} failed (exit {r.returncode}); the sections before it are in its output")
    return f"## {heading}\n\n{describe_machine()}\n\n{r.stdout.strip()}\n\n(took {time.time() - t:.0f} s)\n"


def existing_sections() -> dict[str, str]:
    path = RESULTS / "RESULTS.md"
    text = path.read_text() if path.is_file() else ""
    parts = re.split(r"(?m)^(?=## )", text)
    return {p.splitlines()[0][3:].strip(): p.rstrip() + "\n" for p in parts if p.startswith("## ")}


def main(argv: list[str]) -> int:
    """Run the named sections (all without names); with --from-results, rebuild them from their result files."""
    render = "--from-results" in argv
    argv = [a for a in argv if a != "--from-results"]
    unknown = [a for a in argv if a not in SECTIONS or (render and not hasattr(SECTIONS[a][1], "show"))]
    if unknown:
        print(f"unknown benchmark(s), or none that can be rebuilt from its results: {', '.join(unknown)}; choose from "
              f"{', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    chosen = argv or list(SECTIONS)
    done = existing_sections() if argv else {}
    for name in chosen:
        heading, mod = SECTIONS[name]
        done[heading] = rendered_section(heading, mod) if render else run_section(heading, mod)
    body = "\n".join(done[h] for h, _ in SECTIONS.values() if h in done)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "RESULTS.md").write_text(HEAD + body)
    print(f"written: {RESULTS / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
