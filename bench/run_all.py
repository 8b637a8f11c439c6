"""`make bench`: every benchmark, each in a process of its own, then the results documents.

Each section's module measures, saves bench/results/<name>.json (the machine, its CPU flags and
the time included) and prints its tables through its `show(result)`. This module never copies
a figure: bench/results/RESULTS.md and docs/performance.md are rendered from those JSON files
alone, by the same `show` functions.

`python -m bench.run_all multinode preempt` runs only those, then re-renders both documents.
`python -m bench.run_all --from-results` (`make docs`) re-renders them, measuring nothing.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from collections import Counter

from bench import (bench_checkpoint, bench_copying, bench_data, bench_multinode, bench_overhead, bench_precision,
                   bench_preempt, bench_quality, bench_recipe, bench_soak, bench_split, bench_ssim, bench_train,
                   bench_wire, probe_generator, projection)
from bench.common import REPO, RESULTS
from oasis_dcgan import fsutil

SECTIONS = {  # short name: (heading, module)
    "ssim": ("Seed metric (max SSIM, 800 pairs)", bench_ssim),
    "data": ("Data: packing and reading", bench_data),
    "train": ("Training", bench_train),
    "checkpoint": ("Checkpoints off the critical path", bench_checkpoint),
    "preempt": ("Preemption (dev Slurm cluster)", bench_preempt),
    "multinode": ("Two hosts (dev Slurm cluster, partition multi)", bench_multinode),
    "soak": ("Fault soak: seeded faults on real runs, nothing lost", bench_soak),
    "overhead": ("Host overhead per step, and the reader's headroom", bench_overhead),
    "split": ("What the step split costs a step", bench_split),
    "precision": ("Mixed precision", bench_precision),
    "wire": ("Gradients in fp16 on the wire: what they cost the model", bench_wire),
    "recipe": ("The demo's recipe: brains in its budget", bench_recipe),
    "probe": ("Why the demo's recipe stalls: the generator's upsampling, R1, more steps", probe_generator),
    "quality": ("Quality against images seen: the seed's recipe, the demo's and the small-data step, three seeds",
                bench_quality),
    "copying": ("Copies found, unseen brains left alone: power and the null's false-flag rate", bench_copying),
    # Last: it reads what overhead and checkpoint measured.
    "projection": ("Projection: data-parallel efficiency on H200 clusters", projection),
}
HEAD = ("# Benchmark results\n\nEvery ratio is against the seed's approach (the seed-style baseline, "
        "bench/seed_style.py) run in the same session on the same data. Each section says when and on what it "
        "was measured. Rendered from bench/results/*.json by `python -m bench.run_all --from-results`: "
        "do not edit.\n\n")
PERFORMANCE = REPO / "docs" / "performance.md"
PERFORMANCE_HEAD = """# Performance

Rendered from `bench/results/*.json` by `python -m bench.run_all --from-results` (`make docs`): do not edit
by hand; rerun a section with `make bench SECTION=name` and the page follows.

How to read it:
- Every ratio is against the seed's approach, run in the same session on the same machine and data by
  `bench/seed_style.py`, written in this project from the seed's description: PNG files decoded every epoch, an
  eager SSIM loop, one compiled call a step.
- These machines have 2 cores and no GPU. A GPU's step is milliseconds (5.8 ms on an H200 at 256, batch 16),
  so the suite's own costs are judged against that budget: "Host overhead" measures them with the networks
  replaced by stand-ins of negligible arithmetic, and "Projection" turns them into efficiency on GPU clusters.
- Each section names its CPU and flags. A section measured on another CPU than most says so; compare its
  ratios, not its times.

"""


def describe_machine(m: dict, when: str, usual: tuple | None = None) -> str:
    """The machine a section was measured on, as its result file names it; flagged when its CPU
    differs from the one most sections were measured on (`usual`)."""
    text = (f"Measured {when} on: {m.get('cpu')}, {m['cores']} cores ({m.get('simd')}), {m.get('memory_gib')} GiB, "
            f"no GPU; Python {m['python']}, TensorFlow {m.get('tensorflow')}, numpy {m['numpy']}.")
    if usual and cpu_of(m) != usual:
        text += f" **Another CPU than most sections ({usual[0]}, {usual[1]}): compare ratios, not times.**"
    return text


def cpu_of(m: dict) -> tuple:
    return m.get("cpu"), m.get("simd")


def results() -> dict[str, dict]:
    """Each section's saved result, by section name, for the sections that have one."""
    out = {}
    for name, (_, mod) in SECTIONS.items():
        path = RESULTS / f"{mod.RESULT}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def shown(name: str, result: dict) -> str:
    """What the section's show() prints for a saved result."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        SECTIONS[name][1].show(result)
    return buf.getvalue().strip()


def render(saved: dict[str, dict]) -> str:
    """Every saved section, in SECTIONS order, as its module's show() prints it."""
    usual = Counter(cpu_of(r["machine"]) for r in saved.values()).most_common(1)[0][0] if saved else None
    return "\n".join(f"## {SECTIONS[name][0]}\n\n(`make bench SECTION={name}`) "
                     f"{describe_machine(result['machine'], result['when'], usual)}\n\n{shown(name, result)}\n"
                     for name, result in saved.items())


def performance_page(body: str) -> str:
    return PERFORMANCE_HEAD + body


README = REPO / "README.md"
# A block a page quotes: <!-- bench:NAME --> ... <!-- /bench:NAME -->, NAME a section (its show()) or
# "headline" (the README's few figures). Everything between the markers is rendered, never typed.
BLOCK = re.compile(r"(<!-- bench:([a-z]+) -->\n).*?(<!-- /bench:\2 -->)", re.S)


def headline(saved: dict[str, dict]) -> str:
    """The README's few figures, from the same result files (a missing section is left out)."""
    rows = []
    if "ssim" in saved:
        r = saved["ssim"]["rows"][-1]
        rows.append((f"the seed metric, 800 pairs at {r['res']}", f"{r['x_vs_seed']:.0f}x the seed's eager loop"))
    if "data" in saved:
        rows.append(("feeding images at 256", f"{saved['data']['reader_x_vs_seed']:.1f}x the seed's PNG loop"))
    if "train" in saved:
        for r in saved["train"]["rows"]:
            rows.append((f"the whole job, 1 rank, {r['res']}x{r['res']}", f"{r['images_per_s'] / r['seed_img_s']:.2f}x "
                         "the seed's bare step"))
    if "overhead" in saved:
        o = saved["overhead"]
        rows.append(("the loop's cost a step beyond the seed's, 1 rank / 2 ranks (stand-ins at 256)",
                     f"{o['job_over_seed_ms']['1rank']:+.2f} / {o['job_over_seed_ms']['2ranks']:+.2f} ms"))
        rows.append(("the pause between epochs, 1 rank / 2 ranks",
                     f"{o['epoch_gap_ms']['1rank']:.2f} / {o['epoch_gap_ms']['2ranks']:.2f} ms"))
    if "wire" in saved:
        w = saved["wire"]
        rows.append((f"fp16 gradients against fp32, whole runs on {w['ranks']} ranks, {len(w['rng_seeds'])} rng seeds",
                     "seed metric, diversity and losses as fp32's" if w["holds"] else "they differ: see the page"))
    if "projection" in saved:
        for r in saved["projection"]["levers"]:
            if r["lever"] == projection.FP16_WIRE:
                rows.append((f"projected efficiency, {r['gpus']} H200s over {r['network']}, batch 16, "
                             "fp16 gradients", f"{r['efficiency'] * 100:.0f}% (goal {r['goal'] * 100:.0f}%)"))
    lines = ["| measured | figure |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def block(name: str, saved: dict[str, dict]) -> str:
    if name == "headline":
        return headline(saved)
    m = saved[name]["machine"]
    when = f"{m.get('cpu')} ({m.get('simd')}), {saved[name]['when']}"
    return f"(`bench/results/{SECTIONS[name][1].RESULT}.json`, measured {when})\n\n{shown(name, saved[name])}\n"


def quoting_pages() -> list:
    """The pages that quote bench blocks: the README and docs/, but the page rendered whole."""
    return [README] + sorted(p for p in (REPO / "docs").glob("*.md") if p != PERFORMANCE)


def with_blocks(text: str, saved: dict[str, dict]) -> str:
    return BLOCK.sub(lambda m: m.group(1) + block(m.group(2), saved) + m.group(3), text)


def write_documents() -> None:
    saved = results()
    body = render(saved)
    fsutil.write_text(RESULTS / "RESULTS.md", HEAD + body)
    fsutil.write_text(PERFORMANCE, performance_page(body))
    for page in quoting_pages():
        text = page.read_text()
        quoted = with_blocks(text, saved)
        if quoted != text:
            fsutil.write_text(page, quoted)
    print(f"written: {RESULTS / 'RESULTS.md'}, {PERFORMANCE}, and the blocks the README and docs/ quote")


def run_section(heading: str, mod) -> None:
    """The section's module in a process of its own: each sets TensorFlow's threads before it runs
    anything, which a process where an earlier section ran TensorFlow no longer allows."""
    print(f"== {heading}", flush=True)
    r = subprocess.run([sys.executable, "-m", mod.__name__])
    if r.returncode:
        raise SystemExit(f"{mod.__name__} failed (exit {r.returncode}); the sections before it are saved")


def main(argv: list[str]) -> int:
    """Run the named sections (all without names), then render the documents; --from-results: only render."""
    render_only = "--from-results" in argv
    argv = [a for a in argv if a != "--from-results"]
    unknown = [a for a in argv if a not in SECTIONS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if not render_only:
        for name in argv or list(SECTIONS):
            run_section(*SECTIONS[name])
    write_documents()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
