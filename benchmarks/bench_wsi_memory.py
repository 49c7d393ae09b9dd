"""Benchmark: whole-slide block-wise detection: peak memory vs slide size, throughput, stitched-vs-whole agreement.

1. Two synthetic slides, ``--sizes`` (default 10000 and 40000 px a side), RGB,
   pyramidal OME-TIFF with JPEG tiles in ``--tmp`` (never in the repository),
   with the *same* two tissue islands (mosaics of real ``dsb2018`` H&E
   tiles, 1200 x 1800 px, each across one block border) at the same offsets
   from the block grid, so the two jobs segment the same tissue blocks and
   differ only in the slide's size (the plan, the mask, the output pyramid
   and its empty chunks, the source's pyramid).
2. The same job on each (``medseg batch``'s engine in one process: level 0,
   blocks of ``--block`` (1024), the ``nuclei-he`` model, objects table; the
   tissue mask is thresholded on a low level and kept inside :data:`WINDOW`,
   600 x 900 px across one block border, so that the job's network work
   fits a CPU shared with trainings), each in a fresh subprocess: its peak
   resident memory (``ru_maxrss``), the memory after torch and the model are
   loaded, time, objects, and the throughput over the tissue blocks (per
   wall and per CPU second), the normalisation limits, and how many of the
   objects around the island the two jobs share (matched one-to-one at IoU >
   0.5: the result must not depend on the slide's size).
3. Agreement: a ``--region`` x ``--region`` mosaic of H&E tiles and one of
   fluorescence tiles, each segmented whole (``segment_iter``) and block-wise
   (``--agreement-block``, so many objects cross block borders); the share of
   the whole image's objects matched one-to-one at IoU > 0.5 (goal >= 99 %).

One figure per line.  Run:
``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_wsi_memory.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wsi_synth import dsb_tiles, mosaic, tissue_mask, write_slide  # noqa: E402

BLOCK = 2048  # the grid phase the slides' islands are placed on
#: the job's tissue: the slide's tissue mask inside this (y0, y1, x0, x1) window of level 0, across one block border
WINDOW = (300, 900, 700, 1600)


def island_offsets(size: int) -> list[tuple[int, int]]:
    """Two island corners: in the first and in the last block row and column that hold one, same grid phase."""
    last = (size - 3000) // BLOCK * BLOCK
    return [(300, 1100), (300 + last, 1100 + last)]


def build_slides(sizes: list[int], tmp: Path) -> dict[int, Path]:
    tiles = dsb_tiles("histo") + dsb_tiles("histo", "val")
    islands = [mosaic(tiles, (1200, 1800), seed=k) for k in range(2)]
    out = {}
    for size in sizes:
        p = tmp / f"slide_{size}.ome.tif"
        if not p.exists():
            t = time.perf_counter()
            write_slide(p, size, [(y, x, a) for (y, x), a in zip(island_offsets(size), islands, strict=True)])
            print(f"build_{size}_s={time.perf_counter() - t:.1f}")
        print(f"file_{size}_mb={p.stat().st_size / 2**20:.1f}")
        out[size] = p
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def size_of(slide: Path) -> int:
    import tifffile

    with tifffile.TiffFile(slide) as tf:
        return int(tf.series[0].shape[0])


def run_job(slide: Path, out: Path, block: int) -> dict:
    """One job in this (fresh) process; returns its figures."""
    import torch

    torch.set_num_threads(1)
    from napari_medseg.batch.blockwise import segment_blockwise_iter
    from napari_medseg.batch.plan import SourceSpec
    from napari_medseg.io import read
    from napari_medseg.models.cache import get_model
    from napari_medseg.models.registry import resolve_model
    from napari_medseg.progress import run

    get_model(resolve_model("nuclei-he").path, torch.device("cpu"))
    base = rss_mb()
    t = time.perf_counter()
    read(slide)
    open_s = time.perf_counter() - t
    t = time.perf_counter()
    mask = tissue_mask(slide)
    mask_s = time.perf_counter() - t
    f = mask.shape[0] / size_of(slide)
    window = np.zeros_like(mask)
    y0, y1, x0, x1 = (int(v * f) for v in WINDOW)
    window[y0:y1, x0:x1] = True
    mask &= window
    t = time.perf_counter()
    res = run(segment_blockwise_iter(SourceSpec(path=str(slide)), str(out), tissue=mask, model="nuclei-he",
                                     block_size=block, device="cpu"))
    secs = time.perf_counter() - t
    s = res.summary
    core_px = s["active_blocks"] * block * block
    return {"open_s": open_s, "mask_s": mask_s, "job_s": secs, "objects": s["objects"], "blocks": s["blocks"],
            "active_blocks": s["active_blocks"], "levels": s["levels"], "base_rss_mb": base,
            "limits_low": " ".join(f"{v:g}" for v in s["limits"]["low"]),
            "limits_high": " ".join(f"{v:g}" for v in s["limits"]["high"]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "mpx_per_s": core_px / 1e6 / res.timings["segment"], "objects_per_s": s["objects"] / secs,
            "mpx_per_cpu_s": core_px / 1e6 / s["segment_cpu_seconds"],
            **{f"stage_{k}_s": v for k, v in res.timings.items()}}


def same_objects(store_a: Path, store_b: Path, size: int, block: int) -> dict:
    """The two slide jobs' objects around the first island (the same tissue at the same place), matched at IoU > 0.5."""
    from napari_medseg.analysis.metrics import match_instances
    from napari_medseg.batch.store import open_labels

    y, x = island_offsets(size)[0]
    box = (slice(0, y + 1200 + block), slice(0, x + 1800 + block))
    a, b = (np.asarray(open_labels(s)[0][0][box]) for s in (store_a, store_b))
    m = match_instances(a, b, 0.5)
    n_a, n_b = len(np.unique(a)) - 1, len(np.unique(b)) - 1
    return {"in_a": n_a, "in_b": n_b, "matched": len(m.pairs), "matched_pct": 100 * len(m.pairs) / max(n_a, n_b, 1),
            "mean_iou": float(np.mean(m.ious)) if len(m.ious) else 0.0,
            "foreground_differing_pct": 100 * int(((a > 0) != (b > 0)).sum()) / max(int((a > 0).sum()), 1)}


def agreement(modality: str, size: int, block: int) -> dict:
    """Whole-image vs block-wise objects on a mosaic small enough to segment whole."""
    import torch

    torch.set_num_threads(1)
    from napari_medseg.analysis.metrics import match_instances
    from napari_medseg.batch.blockwise import segment_blockwise_iter
    from napari_medseg.inference.segment import segment_iter
    from napari_medseg.progress import run

    tiles = dsb_tiles(modality, "val") + dsb_tiles(modality)
    img = mosaic(tiles, (size, size), seed=7)
    model = "nuclei-he" if modality == "histo" else "nuclei"
    t = time.perf_counter()
    whole = np.asarray(run(segment_iter(img, model, device="cpu")).labels)
    whole_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        res = run(segment_blockwise_iter(img, d, model=model, block_size=block, device="cpu", detect=False,
                                         tissue="none"))
        block_s = time.perf_counter() - t
        lab = np.asarray(res.labels[0])
    m = match_instances(whole, lab, 0.5)
    crossing = set()
    for b in range(block, size, block):
        for a, c in ((whole[b - 1], whole[b]), (whole[:, b - 1], whole[:, b])):
            crossing |= set(np.unique(a[(a == c) & (a > 0)]).tolist())
    n_whole, n_block = int(whole.max()), int(lab.max())
    return {"objects_whole": n_whole, "objects_blockwise": n_block, "crossing_borders": len(crossing),
            "matched": len(m.pairs), "matched_pct": 100 * len(m.pairs) / max(n_whole, 1),
            "mean_iou": float(np.mean(m.ious)) if len(m.ious) else 0.0,
            "identical_objects_pct": 100 * float(np.mean(np.asarray(m.ious) == 1.0)) if len(m.ious) else 0.0,
            "whole_s": whole_s, "blockwise_s": block_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000])
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()) / "medseg_wsi")
    ap.add_argument("--block", type=int, default=1024, help="block edge of the slide jobs")
    ap.add_argument("--region", type=int, default=1024)
    ap.add_argument("--agreement-block", type=int, default=512)
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # internal: run one job, print JSON
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--agree", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job is not None:
        print(json.dumps(run_job(args.job, args.out, args.block)))
        return
    if args.agree is not None:
        print(json.dumps(agreement(args.agree[0], int(args.agree[1]), int(args.agree[2]))))
        return
    print("machine=2-core AMD EPYC VM (AVX-512, no AMX, no GPU), shared with other jobs, nice 10, 1 torch thread")
    slides = build_slides(args.sizes, args.tmp)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for size, path in slides.items():
        out = args.tmp / f"out_{size}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        r = subprocess.run([sys.executable, __file__, "--job", str(path), "--out", str(out), "--block",
                            str(args.block)], env=env,
                           capture_output=True, text=True, check=True)
        results[size] = json.loads(r.stdout.strip().splitlines()[-1])
        for k, v in results[size].items():
            print(f"slide_{size}_{k}={v:.3f}" if isinstance(v, float) else f"slide_{size}_{k}={v}")
    if len(args.sizes) == 2:
        a, b = args.sizes
        print(f"peak_rss_ratio_{b}_vs_{a}={results[b]['peak_rss_mb'] / results[a]['peak_rss_mb']:.3f}  (goal < 1.5)")
        ja = results[a]["peak_rss_mb"] - results[a]["base_rss_mb"]
        jb = results[b]["peak_rss_mb"] - results[b]["base_rss_mb"]
        print(f"job_rss_above_model_ratio_{b}_vs_{a}={jb / ja:.3f}")
        for k, v in same_objects(args.tmp / f"out_{a}" / f"slide_{a}.zarr", args.tmp / f"out_{b}" / f"slide_{b}.zarr",
                                 a, args.block).items():
            print(f"objects_{b}_vs_{a}_{k}={v:.3f}" if isinstance(v, float) else f"objects_{b}_vs_{a}_{k}={v}")
    if not args.skip_agreement:
        for modality, size in (("histo", args.region), ("fluo", args.region)):
            r = subprocess.run([sys.executable, __file__, "--agree", modality, str(size), str(args.agreement_block)],
                               env=env, capture_output=True, text=True, check=True)
            for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items():
                print(f"agreement_{modality}_{size}_{k}={v:.3f}" if isinstance(v, float) else
                      f"agreement_{modality}_{size}_{k}={v}")


if __name__ == "__main__":
    main()
