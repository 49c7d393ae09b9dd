#!/usr/bin/env python
"""int8 compression of the shipped nuclei models: size, speed and AP@0.5 on dsb2018/val, before and after.

    python benchmarks/bench_compress.py [--datasets ../shared/datasets] [--models nuclei nuclei-he]
                                        [--calib-images 64] [--threads 1] [--keep DIR]

For each model, in one run:

1. export the network to ONNX (float32, dynamic size) and quantise a copy to
   int8 (:func:`napari_medseg.models.export.quantize.quantize_onnx`: static
   QDQ, per-channel int8 weights, uint8 activations), calibrated on one
   random crop (<= 256 px) of each of ``--calib-images`` *train* images of the
   model's kind (``nuclei``: grey images and grey-of-RGB histology;
   ``nuclei-he``: RGB histology), normalised as the card says;
2. prints the file sizes (safetensors, ONNX float32, ONNX int8);
3. runs every *val* image through three networks on the same whole-image
   path (card normalisation, :func:`~napari_medseg.inference.predictor.predict_whole`,
   sigmoid, :func:`~napari_medseg.inference.instances.instances_from_maps`
   with the card's thresholds): torch float32 (the network as loaded),
   ONNX Runtime float32 and ONNX Runtime int8, and prints AP@0.5 (mean over
   images, DSB definition), the network seconds of each (interleaved image by
   image), and the largest absolute difference of the raw outputs from torch's;
4. times one 1024 x 1024 input through the engine's torch network (batch norms
   folded, channels_last) and the two ONNX files, interleaved, best of
   ``--reps``.

All with ``--threads`` intra-op threads (torch and ONNX Runtime alike).
Needs the ``[export]`` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def read_image(path: Path, card) -> np.ndarray | None:
    """The image as the model takes it (``(Y, X)`` grey or ``(Y, X, 3)`` RGB), or None if it does not fit."""
    import tifffile
    from skimage.color import rgb2gray

    a = tifffile.imread(path)
    if card.in_channels == 3:
        return a[..., :3] if a.ndim == 3 else None
    if a.ndim == 3:
        return (rgb2gray(a[..., :3]) * 255).astype(np.float32)
    return a


def run_model(name: str, args, root: Path, workdir: Path) -> None:
    import torch

    from napari_medseg.analysis.evaluation import overall_scores, score_image
    from napari_medseg.api import load_model
    from napari_medseg.inference.instances import instances_from_maps
    from napari_medseg.inference.normalize import normalized_channels_first
    from napari_medseg.inference.predictor import inference_network, predict_whole
    from napari_medseg.models.export.onnx import export_onnx, onnx_network
    from napari_medseg.models.export.quantize import calibration_crops, quantize_onnx
    from napari_medseg.models.registry import resolve_model
    from napari_medseg.models.spec import model_paths

    net, card = load_model(name)
    d = int(net.divisor)
    f32_path, i8_path = workdir / f"{name}.onnx", workdir / f"{name}.int8.onnx"
    t = time.perf_counter()
    export_onnx(net, f32_path, in_channels=card.in_channels, dims=card.dims, card=card)
    t_export = time.perf_counter() - t

    train = list(csv.DictReader((root / "train" / "index.csv").read_text().splitlines()))
    rng = np.random.default_rng(0)
    calib_imgs = []
    for r in rng.permutation(train):
        if card.in_channels == 3 and r["modality"] != "histo":
            continue
        img = read_image(root / "train" / "images" / f"{r['id']}.tif", card)
        if img is not None:
            calib_imgs.append(normalized_channels_first(img, card.input.get("normalization")))
        if len(calib_imgs) >= args.calib_images:
            break
    crops = calibration_crops(calib_imgs, 256, d, seed=0)
    t = time.perf_counter()
    quantize_onnx(f32_path, i8_path, crops, method=args.method)
    t_quant = time.perf_counter() - t
    st = model_paths(resolve_model(name).path)[1].stat().st_size
    s32, s8 = f32_path.stat().st_size, i8_path.stat().st_size
    print(f"## {name}: export {t_export:.1f} s, int8 calibration on {len(crops)} train crops ({args.method}) "
          f"{t_quant:.1f} s")
    print(f"size: safetensors {st / 1e6:.3f} MB, ONNX float32 {s32 / 1e6:.3f} MB, ONNX int8 {s8 / 1e6:.3f} MB "
          f"(int8 / float32 ONNX = {s8 / s32:.3f}, int8 / safetensors = {s8 / st:.3f})")

    nets = {"torch float32": net, "ORT float32": onnx_network(f32_path, threads=args.threads),
            "ORT int8": onnx_network(i8_path, threads=args.threads)}
    pp = dict(card.output.get("postprocess") or {})
    pp = {k: pp[k] for k in ("fg_threshold", "seed_threshold", "min_size") if k in pp}
    scores = {k: [] for k in nets}
    secs = dict.fromkeys(nets, 0.0)
    diff = {k: 0.0 for k in nets if k != "torch float32"}
    n_px = 0
    val = list(csv.DictReader((root / "val" / "index.csv").read_text().splitlines()))
    for r in val:
        if card.in_channels == 3 and r["modality"] != "histo":
            continue
        img = read_image(root / "val" / "images" / f"{r['id']}.tif", card)
        if img is None:
            continue
        import tifffile

        true = tifffile.imread(root / "val" / "masks" / f"{r['id']}.tif").astype(np.int64)
        x = normalized_channels_first(img, card.input.get("normalization"))
        n_px += x.shape[1] * x.shape[2]
        raw = {}
        for k, m in nets.items():
            t = time.perf_counter()
            raw[k] = predict_whole(m, x)
            secs[k] += time.perf_counter() - t
        for k in diff:
            diff[k] = max(diff[k], float(np.max(np.abs(raw[k] - raw["torch float32"]))))
        for k, y in raw.items():
            p = 1.0 / (1.0 + np.exp(-y))
            lab = instances_from_maps(p[0], p[1], **pp)
            scores[k].append(score_image(true, lab.astype(np.int64), r["id"]))
    print(f"dsb2018/val: {len(scores['torch float32'])} images, {n_px / 1e6:.2f} MPx, {args.threads} thread(s)")
    print("| network | AP@0.5 | AP@0.75 | mAP | network s (val) | max abs diff of raw outputs vs torch |")
    print("|---|---|---|---|---|---|")
    base = overall_scores(scores["torch float32"])
    for k in nets:
        o = overall_scores(scores[k])
        dd = "-" if k not in diff else f"{diff[k]:.2e}"
        print(f"| {k} | {o['ap50']:.4f} | {o['ap75']:.4f} | {o['map']:.4f} | {secs[k]:.1f} | {dd} |")
    o8 = overall_scores(scores["ORT int8"])
    print(f"AP@0.5 drop int8 vs torch float32: {base['ap50'] - o8['ap50']:+.4f}")

    # one large input, interleaved: engine's torch network vs the two ONNX files
    engine = inference_network(net, channels_last=True)
    x = torch.from_numpy(np.resize(crops[0], (card.in_channels, 1024, 1024)).astype(np.float32))[None]
    x_cl = x.contiguous(memory_format=torch.channels_last)
    runs = {"torch (engine: folded, channels_last)": (engine, x_cl), "ORT float32": (nets["ORT float32"], x),
            "ORT int8": (nets["ORT int8"], x)}
    best = dict.fromkeys(runs, float("inf"))
    with torch.inference_mode():
        for _ in range(args.reps):
            for k, (m, xi) in runs.items():
                t = time.perf_counter()
                m(xi)
                best[k] = min(best[k], time.perf_counter() - t)
    print(f"1024x1024 input, best of {args.reps}: " + ", ".join(f"{k} {v:.2f} s ({1.048576 / v:.2f} MPx/s)"
                                                               for k, v in best.items()))
    print(f"speed-up int8 vs ORT float32: {best['ORT float32'] / best['ORT int8']:.2f}x, vs engine torch: "
          f"{best['torch (engine: folded, channels_last)'] / best['ORT int8']:.2f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--models", nargs="+", default=["nuclei", "nuclei-he"])
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--keep", help="folder to keep the ONNX files in (default: a temporary folder)")
    args = ap.parse_args(argv)
    root = Path(args.datasets) / "dsb2018"
    if not root.exists():
        print(f"dataset not found: {root}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    print(f"machine: {os.cpu_count()} CPUs; torch {torch.__version__}; threads {args.threads}")
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.models:
            run_model(name, args, root, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
