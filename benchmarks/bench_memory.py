"""Benchmark: peak resident memory of segmenting a 16384^2 image vs a 2048^2 one.

The inputs are synthetic uint8 nuclei-like images (a 2048x2048
``bench_segment.synthetic_nuclei`` image repeated), stored on disk as zarr
arrays (1024x1024 chunks) so the input is not in RAM, and the labels go to an
``out`` zarr array on disk.  Each size runs in a fresh subprocess, which
prints its peak RSS (``VmHWM``) after the imports and model load and at the
end.  The model is a *small random-weight* U-Net (base_channels=4,
depth=2): this measures memory, not accuracy, and a default-size network
would take hours for 268 megapixels on a laptop CPU.  One figure per line::

    rss_2048_mb=...    rss_16384_mb=...    growth=...  (goal < 1.5 while pixels grow 64x)

``--store memmap`` uses ``np.memmap`` files instead: their pages are
file-backed and reclaimable, but Linux counts the touched ones in RSS, so RSS
then grows with the image even though the engine does not.

Run: ``python benchmarks/bench_memory.py [--sizes 2048 16384] [--store zarr]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_input(folder: Path, size: int, store: str):
    from bench_segment import synthetic_nuclei

    base = synthetic_nuclei(min(size, 2048), seed=1)
    b = base.shape[0]
    if store == "zarr":
        import zarr

        img = zarr.create_array(store=str(folder / f"img{size}.zarr"), shape=(size, size), chunks=(1024, 1024),
                                dtype="uint8")
        out = zarr.create_array(store=str(folder / f"lab{size}.zarr"), shape=(size, size), chunks=(1024, 1024),
                                dtype="uint32", fill_value=0)
        del out
    else:
        img = np.memmap(folder / f"img{size}.raw", dtype=np.uint8, mode="w+", shape=(size, size))
        np.memmap(folder / f"lab{size}.raw", dtype=np.uint32, mode="w+", shape=(size, size)).flush()
    for y in range(0, size, b):
        for x in range(0, size, b):
            img[y:y + b, x:x + b] = base
    if store != "zarr":
        img.flush()


def child(folder: Path, size: int, store: str, model: str, tile: int, compress: bool = True) -> None:
    import resource

    import torch  # noqa: F401  (imports count in the baseline)

    import napari_medseg.inference.segment as seg
    from napari_medseg.inference.segment import segment_iter

    seg.COMPRESS_CACHE = compress
    from napari_medseg.progress import run

    def rss_mb() -> float:
        # VmHWM: peak RSS of this process image.  Not ru_maxrss: Linux carries the
        # parent's peak into a child spawned with vfork (as subprocess does) through exec.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if store == "zarr":
        import zarr

        img = zarr.open_array(str(folder / f"img{size}.zarr"), mode="r")
        out = zarr.open_array(str(folder / f"lab{size}.zarr"), mode="r+")
    else:
        img = np.memmap(folder / f"img{size}.raw", dtype=np.uint8, mode="r", shape=(size, size))
        out = np.memmap(folder / f"lab{size}.raw", dtype=np.uint32, mode="r+", shape=(size, size))
    # load the model and warm up on a small crop: the baseline every run pays
    run(segment_iter(np.asarray(img[:256, :256]), model, tile_size=tile))
    base = rss_mb()
    t = time.perf_counter()
    res = run(segment_iter(img, model, out=out, tile_size=tile))
    dt = time.perf_counter() - t
    print(json.dumps({"size": size, "baseline_mb": base, "peak_mb": rss_mb(), "seconds": dt,
                      "labels": int(res.info["n_labels"]), "tiles": res.info["tiles"], "blocks": res.info["blocks"],
                      "cached_tiles": res.info["max_cached_tiles"], "cache_mb": res.info["max_cache_mb"],
                      "timings": {k: round(v, 2) for k, v in res.timings.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 16384])
    ap.add_argument("--store", choices=["zarr", "memmap"], default="zarr")
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--no-compress", action="store_true",
                    help="keep cached tile maps uncompressed (the random model's flat maps compress far "
                         "better than real ones, ~2x; this gives the upper bound)")
    ap.add_argument("--child", nargs=3, metavar=("FOLDER", "SIZE", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), args.store, args.child[2], args.tile_size,
              not args.no_compress)
        return

    from napari_medseg.models.testing import make_random_model

    with tempfile.TemporaryDirectory(prefix="medseg-bench-mem-") as tmp:
        folder = Path(tmp)
        model = str(make_random_model(folder / "small-random", name="small-random", base_channels=4, depth=2))
        print(f"model=random(unet base4 depth2) store={args.store} tile={args.tile_size} "
              f"cache_compression={'off' if args.no_compress else 'on'}")
        results = {}
        for size in args.sizes:
            make_input(folder, size, args.store)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--store", args.store, "--tile-size",
                   str(args.tile_size), *(["--no-compress"] if args.no_compress else []),
                   "--child", str(folder), str(size), model]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
            if proc.returncode != 0:
                sys.exit(f"size {size} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[size] = r
            print(f"rss_{size}_mb={r['peak_mb']:.0f} (after imports+model {r['baseline_mb']:.0f}; "
                  f"{r['seconds']:.0f} s, {r['tiles']} tiles, {r['blocks']} blocks, {r['labels']} labels, "
                  f"at most {r['cached_tiles']} tiles = {r['cache_mb']} MB cached)")
            print(f"stages_{size}={json.dumps(r['timings'])}")
            for f in folder.glob(f"*{size}.*"):
                if f.is_dir():
                    import shutil

                    shutil.rmtree(f)
                else:
                    f.unlink()
        if len(args.sizes) >= 2:
            a, b = results[args.sizes[0]], results[args.sizes[-1]]
            print(f"pixels_ratio={(args.sizes[-1] / args.sizes[0]) ** 2:.0f}")
            print(f"growth={b['peak_mb'] / a['peak_mb']:.3f}")
            print(f"growth_above_baseline={(b['peak_mb'] - b['baseline_mb']) / max(1.0, a['peak_mb'] - a['baseline_mb']):.3f}")


if __name__ == "__main__":
    main()
