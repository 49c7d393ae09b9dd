#!/usr/bin/env python
"""Nuclei models on a 2048 x 2048 image: run time, post-processing share, MPx/s, tiling agreement.

    python benchmarks/bench_nuclei_postprocess.py --model distance=src/napari_medseg/models/shipped/nuclei \\
        --model contour=/tmp/nuc/A/nuclei --model star=/tmp/nuc/B/nuclei [--size 2048] [--repeats 2]

The image is a mosaic of real ``dsb2018/val`` fluorescence images (each
scaled to [0, 1] by its own 1-99.8 percentiles, tiled until the square is
full), so the object density is that of real data.  Each model runs through
:func:`napari_medseg.inference.segment.segment_iter` with the engine's
defaults (CPU, its thread count, 1024-px tiles), the models interleaved and
repeated; reported are the median seconds of the whole call, of the network
and of the instance post-processing (``timings``: it runs in the calling
thread when torch uses every core, so the share is what it adds), the
share, megapixels per second and the object count.  ``tiled = whole``: the
share of objects that come out identical with 512-px tiles and 768-px
post-processing blocks (the centroid-rule stitching) as with the defaults.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def mosaic(root: Path, size: int) -> np.ndarray:
    """A (size, size) float32 mosaic of the fluorescence val images."""
    import tifffile

    rows = [r for r in csv.DictReader((root / "index.csv").read_text().splitlines()) if r["modality"] == "fluo"]
    out = np.zeros((size, size), np.float32)
    y = x = 0
    row_h = 0
    i = 0
    while y < size:
        img = tifffile.imread(root / "images" / f"{rows[i % len(rows)]['id']}.tif").astype(np.float32)
        i += 1
        if img.ndim == 3:
            img = img[..., :3].mean(-1)
        lo, hi = np.percentile(img, [1, 99.8])
        img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
        h, w = min(img.shape[0], size - y), min(img.shape[1], size - x)
        out[y:y + h, x:x + w] = img[:h, :w]
        row_h = max(row_h, h)
        x += w
        if x >= size:
            x, y, row_h = 0, y + row_h, 0
    return out


def identical_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the objects of ``a`` that are exactly an object of ``b``."""
    from scipy import ndimage as ndi

    n = int(a.max())
    if n == 0:
        return 1.0
    same = 0
    for i, box in enumerate(ndi.find_objects(a), 1):
        if box is None:
            continue
        m = a[box] == i
        vals = np.unique(b[box][m])
        if len(vals) == 1 and vals[0] > 0 and np.array_equal(b[box] == vals[0], m) and \
                (b == vals[0]).sum() == m.sum():
            same += 1
    return same / n


def main(argv=None) -> int:
    from napari_medseg.inference.segment import segment_iter
    from napari_medseg.progress import run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--model", action="append", required=True, metavar="LABEL=FOLDER")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    root = Path(args.datasets) / "dsb2018" / "val"
    if not root.exists():
        print(f"dataset not found: {root}", file=sys.stderr)
        return 2
    models = [m.partition("=")[::2] for m in args.model]
    img = mosaic(root, args.size)
    mpx = img.size / 1e6
    res: dict[str, list] = {label: [] for label, _ in models}
    for _label, folder in models:  # warm-up: model loading and first-call costs are not timed
        run(segment_iter(img[:256, :256], folder, device="cpu"), lambda p: None)
    for _ in range(args.repeats):
        for label, folder in models:
            t = time.perf_counter()
            r = run(segment_iter(img, folder, device="cpu"), lambda p: None)
            res[label].append((time.perf_counter() - t, r))
    print(f"{args.size} x {args.size} mosaic of dsb2018/val fluorescence ({mpx:.2f} MPx), median of {args.repeats}")
    print("\n| model | total s | network s | post-processing s | post share | MPx/s | objects | threads | tiled = whole |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, folder in models:
        runs = res[label]
        tot = float(np.median([t for t, _ in runs]))
        net = float(np.median([r.timings["network"] for _, r in runs]))
        post = float(np.median([r.timings["postprocess"] for _, r in runs]))
        last = runs[-1][1]
        tiled = run(segment_iter(img, folder, device="cpu", tile_size=512, postprocess={"block_size": 768}),
                    lambda p: None)
        same = identical_share(np.asarray(last.labels), np.asarray(tiled.labels))
        print(f"| {label} | {tot:.2f} | {net:.2f} | {post:.2f} | {post / tot:.0%} | {mpx / tot:.2f} | "
              f"{last.info['n_labels']} | {last.info['threads']} | {same:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
