"""Benchmark: a folder on a dask LocalCluster (1 and 2 workers) vs the single-process path; scheduler and storage costs.

A folder of ``--files`` RGB TIFFs (``--size`` px a side, 0.5 µm pixels),
mosaics of real ``dsb2018`` H&E tiles, written to ``--tmp`` (not the
repository), is detected (``nuclei-he``, blocks of 2048, objects tables) by
:func:`napari_medseg.batch.runner.run_batch_iter`:

* ``inline_1t``: this process, no dask, torch with 1 thread;
* ``cluster_1w``: a LocalCluster of 1 worker process (1 torch thread);
* ``cluster_2w``: a LocalCluster of 2 worker processes (1 torch thread each).

Each run starts from an empty output folder; the cluster's start and close
are timed apart from the batch.  Then the 2-worker cluster runs 2000 empty
tasks (the scheduler's cost per task) and the bytes read and written per
megapixel are taken from the files, for the on-paper estimate of N machines.

One figure per line.  Run: ``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_batch.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wsi_synth import dsb_tiles, mosaic  # noqa: E402


def make_folder(folder: Path, n: int, size: int) -> list[Path]:
    import tifffile

    tiles = dsb_tiles("histo") + dsb_tiles("histo", "val")
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(n):
        p = folder / f"he_{k:02d}.tif"
        if not p.exists():
            tifffile.imwrite(p, mosaic(tiles, (size, size), seed=100 + k), photometric="rgb", compression="zlib",
                             resolution=(2.0, 2.0), metadata={"unit": "um"}, imagej=True)
        files.append(p)
    return files


def _noop(i: int) -> int:
    return i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()) / "medseg_batch_bench")
    args = ap.parse_args()
    import torch

    from napari_medseg.batch.runner import InlineExecutor, make_executor, run_batch_iter
    from napari_medseg.progress import run

    print("machine=2-core AMD EPYC VM (AVX-512, no AMX, no GPU), shared with other jobs, nice 10")
    files = make_folder(args.tmp / "in", args.files, args.size)
    mpx = args.files * args.size**2 / 1e6
    print(f"folder={args.files} files x {args.size}^2 px RGB = {mpx:.1f} Mpx")
    opts = {"model": "nuclei-he", "device": "cpu"}
    walls = {}
    for name, workers, threads in (("inline_1t", 0, 1), ("cluster_1w", 1, 1), ("cluster_2w", 2, 1)):
        out = args.tmp / f"out_{name}"
        shutil.rmtree(out, ignore_errors=True)
        torch.set_num_threads(threads)
        t = time.perf_counter()
        ex = InlineExecutor() if workers == 0 else make_executor(workers, torch_threads=threads)
        start = time.perf_counter() - t
        t = time.perf_counter()
        res = run(run_batch_iter(files, out, executor=ex, **opts))
        wall = time.perf_counter() - t
        t = time.perf_counter()
        if workers:
            ex.close()
        close = time.perf_counter() - t
        walls[name] = wall
        n_obj = int(res.report["objects"].sum())
        seg = float(res.report["segment_seconds"].sum())
        cpu = float(res.report["segment_cpu_seconds"].sum())
        print(f"{name}_start_s={start:.2f}")
        print(f"{name}_batch_s={wall:.1f}")
        print(f"{name}_close_s={close:.2f}")
        print(f"{name}_mpx_per_s={mpx / wall:.3f}")
        print(f"{name}_block_task_s_sum={seg:.1f}")
        print(f"{name}_per_worker_mpx_per_s={mpx / seg:.3f}")
        print(f"{name}_block_task_cpu_s_sum={cpu:.1f}")
        print(f"{name}_mpx_per_cpu_s={mpx / cpu:.3f}")
        print(f"{name}_objects={n_obj} failed={len(res.failed)}")
        # first-run costs in the workers (torch import, model load) are inside batch_s
    print(f"speedup_cluster_2w_vs_inline_1t={walls['inline_1t'] / walls['cluster_2w']:.2f}")
    print(f"overhead_cluster_1w_vs_inline_1t_pct={100 * (walls['cluster_1w'] / walls['inline_1t'] - 1):.1f}")

    ex = make_executor(2, torch_threads=1)
    try:
        ex.client.gather(ex.client.map(_noop, range(100)))  # warm
        t = time.perf_counter()
        ex.client.gather(ex.client.map(_noop, range(2000)))
        per_task = (time.perf_counter() - t) / 2000
    finally:
        ex.close()
    print(f"scheduler_ms_per_empty_task={1000 * per_task:.2f}")
    src = sum(f.stat().st_size for f in files)
    out = args.tmp / "out_cluster_2w"
    dst = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"input_mb_per_mpx={src / 2**20 / mpx:.3f}")
    print(f"output_mb_per_mpx={dst / 2**20 / mpx:.3f}  (labels pyramid + tables)")


if __name__ == "__main__":
    main()
