#!/usr/bin/env python
"""Accuracy of the engine's precisions and backends on dsb2018/val: float32 vs bfloat16 (vs ONNX Runtime).

    python benchmarks/bench_precision_accuracy.py [--datasets ../shared/datasets] [--threads 2]
        [--variants float32 bfloat16 onnxruntime]

Every image of ``dsb2018/val`` is segmented by the shipped model a user gets
for it (``nuclei`` for grey images, ``nuclei-he`` for RGB histology) once per
variant, variants interleaved image by image: ``float32`` and ``bfloat16``
are torch eager at that precision, ``onnxruntime`` is ONNX Runtime (float32;
needs the ``[export]`` extra).  One figure per line: per variant AP@0.5,
mAP 0.5:0.9 and Dice (DSB definitions, mean over images) and seconds; then
the AP@0.5 and mAP differences to float32 (goal |diff| <= 0.005 for
bfloat16) and the fraction of pixels with equal labels after one-to-one
object matching.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KW = {"float32": {"precision": "float32", "backend": "torch"},
      "bfloat16": {"precision": "bfloat16", "backend": "torch"},
      "onnxruntime": {"precision": "float32", "backend": "onnxruntime"}}


def main(argv=None) -> int:
    import tifffile
    import torch

    from napari_medseg.analysis.evaluation import overall_scores, score_image
    from napari_medseg.api import segment

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variants", nargs="+", default=["float32", "bfloat16"], choices=sorted(KW))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.datasets) / "dsb2018" / "val"
    if not root.exists():
        print(f"dataset not found: {root}", file=sys.stderr)
        return 2
    rows = list(csv.DictReader((root / "index.csv").read_text().splitlines()))
    scores: dict[str, list[dict]] = {v: [] for v in args.variants}
    labels: dict[str, list[np.ndarray]] = {v: [] for v in args.variants}
    seconds = dict.fromkeys(args.variants, 0.0)
    for r in rows:
        img = tifffile.imread(root / "images" / f"{r['id']}.tif")
        true = tifffile.imread(root / "masks" / f"{r['id']}.tif").astype(np.int64)
        model = "nuclei-he" if img.ndim == 3 else "nuclei"
        if img.ndim == 3:
            img = img[..., :3]
        for v in args.variants:
            t = time.perf_counter()
            pred = np.asarray(segment(img, model, device="cpu", **KW[v])).astype(np.int64)
            seconds[v] += time.perf_counter() - t
            scores[v].append(score_image(true, pred, r["id"]))
            labels[v].append(pred)
    from bench_vs_monai import matched_agreement

    ref = overall_scores(scores[args.variants[0]])
    print(f"images={len(rows)} threads={torch.get_num_threads()} reference={args.variants[0]}")
    for v in args.variants:
        o = overall_scores(scores[v])
        print(f"{v}: ap50={o['ap50']:.4f} map={o['map']:.4f} dice={o['dice']:.4f} seconds={seconds[v]:.1f}")
        if v != args.variants[0]:
            eq = np.mean([matched_agreement(a, b)[1] for a, b in zip(labels[v], labels[args.variants[0]], strict=True)])
            print(f"{v}_minus_{args.variants[0]}: ap50={o['ap50'] - ref['ap50']:+.4f} map={o['map'] - ref['map']:+.4f} "
                  f"dice={o['dice'] - ref['dice']:+.4f} equal_label_px={eq:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
