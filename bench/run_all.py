"""`make bench`: every benchmark, one after another, then one results table (bench/results/RESULTS.md)."""
from __future__ import annotations

import contextlib
import io
import sys
import time

from bench import bench_data, bench_preempt, bench_ssim, bench_train
from bench.common import RESULTS, machine


def main() -> int:
    sections = []
    for name, mod in (("Seed metric (max SSIM, 800 pairs)", bench_ssim), ("Data: packing and reading", bench_data),
                      ("Training", bench_train), ("Preemption (dev Slurm cluster)", bench_preempt)):
        print(f"== {name}", flush=True)
        buf = io.StringIO()
        t = time.time()
        with contextlib.redirect_stdout(buf):
            mod.main()
        print(buf.getvalue(), flush=True)
        sections.append(f"## {name}\n\n{buf.getvalue().strip()}\n\n(took {time.time() - t:.0f} s)\n")
    m = machine()
    head = (f"# Benchmark results\n\nMeasured {time.strftime('%Y-%m-%d %H:%M')} on: {m.get('cpu')}, {m['cores']} cores "
            f"({m.get('simd')}), {m.get('memory_gib')} GiB, no GPU; Python {m['python']}, TensorFlow "
            f"{m.get('tensorflow')}, numpy {m['numpy']}.\nEvery ratio is against the seed's approach "
            "(the baseline script seed_style_bench.py) run in the same session on the same data.\n\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "RESULTS.md").write_text(head + "\n".join(sections))
    print(f"written: {RESULTS / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
