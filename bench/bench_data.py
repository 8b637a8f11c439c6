"""Packing and reading: 1 vs 2 array tasks, reader vs the seed's PNG feeding, time to first batch."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, WORK, seed_baseline, sample_release, save, table
from oasis_dcgan.config import DataConfig


def pack_rate(src: Path, out: Path, tasks: int) -> float:
    """Images per second for a full pack with `tasks` array tasks running side by side."""
    from oasis_dcgan.prep import pack

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    p = pack.start(src, out, DataConfig(resolution=256, shard_size=256), queued=True)
    task = "from oasis_dcgan.prep import pack; pack.pack_task({!r}, {}, {}, {!r})"
    procs = [subprocess.Popen([sys.executable, "-c", task.format(str(out), i, tasks, p.token)], cwd=REPO)
             for i in range(tasks)]
    assert all(pr.wait() == 0 for pr in procs)
    m = pack.seal(out, p.token)
    return sum(m["counts"].values()) / (time.perf_counter() - t)


def read_rate(dataset: Path, scaled: bool, repeats: int = 3) -> float:
    """Steady-state images/s of one epoch of the training reader, batches of 16 (best of a few).

    scaled=False is what the train job consumes (uint8; it scales inside its compiled step);
    scaled=True adds the (x - 127.5) / 127.5 the seed's feeding includes, in the pipeline.
    """
    from oasis_dcgan.prep.reader import Stream, train_dataset

    best = 0.0
    for e in range(repeats):
        ds, steps = train_dataset(dataset, Stream(rng_seed=0, epoch=e, batch_size=16), scaled=scaled)
        it = iter(ds)
        next(it)  # the pipeline's one-off start is what time-to-first-batch measures
        n, t = 0, time.perf_counter()
        for images, _ in it:
            n += int(images.shape[0])
        best = max(best, n / (time.perf_counter() - t))
    return best


def first_batch_s(dataset: Path) -> float:
    """Opening the dataset to the first batch in hand, in a fresh process, after the imports
    (which cost the same for any dataset). Best of three."""
    code = ("import time, tensorflow; from oasis_dcgan.prep.reader import Stream, train_dataset; "
            f"t=time.perf_counter(); ds,_=train_dataset({str(dataset)!r}, Stream(0, 16)); next(iter(ds)); "
            "print(time.perf_counter()-t)")
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                                    check=True).stdout.strip().splitlines()[-1]) for _ in range(3))


def replicate(src_train: Path, dest: Path, copies: int) -> Path:
    """A folder-layout dataset of `copies` x the sample images (hard links: instant, same bytes)."""
    if dest.is_dir() and len(list(dest.iterdir())) == copies * len(list(src_train.iterdir())):
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for c in range(copies):
        for f in src_train.iterdir():
            os.link(f, dest / f"c{c:02d}_{f.name}")
    return dest


RESULT = "data"


def main():
    from oasis_dcgan.prep import manifest, pack

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    release = sample_release()
    train_png = release / "keras_png_slices_data" / "keras_png_slices_train"
    n_png = len(list(train_png.iterdir()))
    one, two = pack_rate(release, WORK / "pack1", 1), pack_rate(release, WORK / "pack2", 2)
    seed_png = seed_baseline("png", str(train_png), "--limit", str(n_png))
    big_src = replicate(train_png, WORK / "folder-10k", 10)        # 10,240 images
    small_src = replicate(train_png, WORK / "folder-1k", 1)        # 1,024 images
    sizes = {}
    for name, src in (("1k", small_src), ("10k", big_src)):
        out = WORK / f"ds-{name}"
        if not (out / "manifest.json").is_file():
            pack.preprocess(src, out, DataConfig(resolution=256, shard_size=2048))
        sizes[name] = (sum(manifest.load_manifest(out)["counts"].values()), first_batch_s(out))
    ours_read = read_rate(WORK / "ds-10k", scaled=False)
    ours_scaled = read_rate(WORK / "ds-10k", scaled=True)
    result = save(RESULT, {
        "images": n_png, "pack_1_task_img_s": one, "pack_2_tasks_img_s": two, "pack_speedup": two / one,
        "seed_png_img_s": seed_png["images_per_s"], "reader_img_s": ours_read,
        "reader_x_vs_seed": ours_read / seed_png["images_per_s"],
        "reader_scaled_img_s": ours_scaled, "reader_scaled_x_vs_seed": ours_scaled / seed_png["images_per_s"],
        "first_batch_s": {k: {"images": v[0], "seconds": v[1]} for k, v in sizes.items()},
    })
    show(result)
    return result


def show(r: dict) -> None:
    one, two, seed, small, big = (r["pack_1_task_img_s"], r["pack_2_tasks_img_s"], r["seed_png_img_s"],
                                  r["first_batch_s"]["1k"], r["first_batch_s"]["10k"])
    print(table([
        ("pack, 1 task", f"{one:.0f} img/s", ""),
        ("pack, 2 array tasks", f"{two:.0f} img/s", f"{two / one:.2f}x vs 1 task"),
        ("seed feeding (PNG read+decode+resize+scale)", f"{seed:.0f} img/s", "1.0x"),
        ("our reader as training uses it (uint8 batches of 16; scaling in the train step)",
         f"{r['reader_img_s']:.0f} img/s", f"{r['reader_x_vs_seed']:.1f}x vs seed"),
        ("our reader with scaling to (-1, 1) in the pipeline", f"{r['reader_scaled_img_s']:.0f} img/s",
         f"{r['reader_scaled_x_vs_seed']:.1f}x vs seed"),
        (f"time to first batch, {small['images']} images", f"{small['seconds'] * 1000:.0f} ms", "beyond TF import"),
        (f"time to first batch, {big['images']} images", f"{big['seconds'] * 1000:.0f} ms",
         f"{big['seconds'] / small['seconds']:.2f}x the 1k figure"),
    ], ("what (256x256)", "figure", "ratio")))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
