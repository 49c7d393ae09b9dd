#!/usr/bin/env python
"""Fine-tuning benchmarks: domain adaptation, semantic lesions, training speed.

    python benchmarks/bench_finetune.py [--minutes 2] [--seeds 0 1 2] [--bases nuclei DIR/nuclei-fluo-only] [--threads N] [--skip-adapt] [--skip-semantic]

(a) Adaptation.  Domain: the H&E-like ``histo`` images of dsb2018, converted
    to grey as the grey ``nuclei`` models take them.  Bases (``--bases``):
    the shipped ``nuclei`` (it saw grey histo in a quarter of its patches)
    and, as the issue suggests, a model trained only on fluorescence
    (``python scripts/train_default_models.py --model nuclei-fluo-only
    --minutes 22 --threads 1 --base 8 --out DIR``; not shipped), for which
    histology is a new domain.  For each seed, 3 histo *train* images
    (chosen at random) are fully painted; each base is fine-tuned for
    ``--minutes`` and, with the same budget, a model is trained from
    scratch.  AP@0.5 (DSB definition, mean over images) is
    measured on the 11 histo *val* images through the real engine
    (:func:`napari_medseg.api.segment`), before and after.
(b) Semantic.  ``radiology_lesions`` brain1 (MR, 25 x 256 x 256, tumour in
    slices 11-17) and breast1 (21 x 120 x 45, lesion in slices 8-10): every
    other slice is "annotated" (a full-slice ROI on even slices), a model is
    trained from scratch for ``--minutes``, and the Dice of the lesion is
    measured on the odd slices (never seen), over whole slices.
(c) Speed: seconds per epoch and optimiser steps per second of the runs above.

The CPU of the development machine is shared with other jobs, so timings are
noisy; the load average is printed.  Prints one markdown table per part.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spin-waiting threads crawl on a busy CPU

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def load_histo(split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    import tifffile
    from skimage.color import rgb2gray

    root = DATA / "dsb2018" / split
    out = []
    for r in csv.DictReader((root / "index.csv").read_text().splitlines()):
        if r["modality"] != "histo":
            continue
        img = tifffile.imread(root / "images" / f"{r['id']}.tif")
        lab = tifffile.imread(root / "masks" / f"{r['id']}.tif").astype(np.int32)
        grey = (rgb2gray(img[..., :3]) * 255).astype(np.float32)  # as scripts/train_default_models.py
        out.append((r["id"], grey, lab))
    return out


def mean_ap50(model, images) -> float:
    from napari_medseg.analysis.metrics import average_precision
    from napari_medseg.api import segment

    return float(np.mean([average_precision(lab, np.asarray(segment(img, str(model), device="cpu")).astype(np.int64),
                                            0.5) for _, img, lab in images]))


def speed(res) -> dict:
    h = res.history
    steps = h[-1]["step"] if h else 0
    secs = h[-1]["seconds"] if h else float("nan")
    return {"epochs": len(h), "steps": steps, "s_per_epoch": secs / max(len(h), 1), "steps_per_s": steps / secs,
            "batch": res.card.training["batch_size"], "patch": res.card.training["patch_size"],
            "best_epoch": None if res.best is None else res.best["epoch"],
            "stopped_early": res.stopped_early}


def bench_adapt(args, out: Path, rows_speed: list) -> None:
    from napari_medseg.models.registry import resolve_model
    from napari_medseg.training.finetune import train

    bases = []
    for b in args.bases:
        try:
            bases.append((b, resolve_model(b).path))
        except Exception as e:  # noqa: BLE001
            print(f"(a) base {b!r} skipped: {e}")
    if not bases:
        return
    train_set, val_set = load_histo("train"), load_histo("val")
    print(f"(a) histo (grey): {len(train_set)} train, {len(val_set)} val images; bases {bases}", flush=True)
    ap_base = {}
    for b, path in bases:
        t = time.perf_counter()
        ap_base[b] = mean_ap50(path, val_set)
        print(f"    base {b}: AP50 {ap_base[b]:.3f} ({time.perf_counter() - t:.0f} s to evaluate)", flush=True)
    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        pick = [train_set[i] for i in rng.choice(len(train_set), 3, replace=False)]
        n_obj = sum(int(lab.max()) for _, _, lab in pick)
        res = {}
        for how, base_arg in [*((f"fine-tuned from {b}", str(path)) for b, path in bases), ("scratch", None)]:
            t = time.perf_counter()
            r = train([p[1] for p in pick], [p[2] for p in pick], base=base_arg, minutes=args.minutes,
                      out=out / f"adapt-{len(res)}-{seed}", overwrite=True, threads=args.threads, seed=seed,
                      names=[p[0][:8] for p in pick])
            wall = time.perf_counter() - t
            ap = mean_ap50(r.model_path, val_set)
            res[how] = ap
            sp = speed(r)
            rows_speed.append((f"(a) {how}, seed {seed}", sp, wall))
            print(f"    seed {seed} {how}: AP50 {ap:.3f}; {sp['epochs']} epochs, {sp['steps']} steps, "
                  f"best epoch {sp['best_epoch']}, wall {wall:.0f} s", flush=True)
        rows.append((seed, [p[0][:8] for p in pick], n_obj, res))
    print("\n| base model | seed | 3 train images (ids) | nuclei painted | AP@0.5 base | AP@0.5 fine-tuned "
          "| AP@0.5 scratch | gain over base | gain over scratch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for b, _ in bases:
        key = f"fine-tuned from {b}"
        for seed, ids, n, res in rows:
            ft, sc = res[key], res["scratch"]
            print(f"| {b} | {seed} | {' '.join(ids)} | {n} | {ap_base[b]:.3f} | {ft:.3f} | {sc:.3f} "
                  f"| {ft - ap_base[b]:+.3f} | {ft - sc:+.3f} |")
        ft = np.mean([r[3][key] for r in rows])
        sc = np.mean([r[3]["scratch"] for r in rows])
        print(f"| {b} | mean | | | {ap_base[b]:.3f} | {ft:.3f} | {sc:.3f} | {ft - ap_base[b]:+.3f} | {ft - sc:+.3f} |")
    print(flush=True)


def bench_semantic(args, out: Path, rows_speed: list) -> None:
    import SimpleITK as sitk

    from napari_medseg.api import segment
    from napari_medseg.training.finetune import train

    rows = []
    for case in ("brain1", "breast1"):
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "radiology_lesions" / f"{case}_image.nrrd")))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "radiology_lesions" / f"{case}_label.nrrd")))
        img, lab = img.astype(np.float32), (lab > 0).astype(np.int32)
        nz, ny, nx = lab.shape
        rect = np.array([[0, 0], [0, nx - 1], [ny - 1, nx - 1], [ny - 1, 0]], float)
        train_z = list(range(0, nz, 2))
        test_z = list(range(1, nz, 2))
        painted = np.zeros_like(lab)
        painted[train_z] = lab[train_z]
        roi = [[np.c_[np.full(4, float(z)), rect] for z in train_z]]
        t = time.perf_counter()
        r = train(img, painted, roi=roi, mode="semantic", class_names=["lesion"], minutes=args.minutes,
                  out=out / f"sem-{case}", overwrite=True, threads=args.threads, names=[case])
        wall = time.perf_counter() - t
        pred = np.asarray(segment(img, str(r.model_path), axes="ZYX", device="cpu"))
        a, b = lab[test_z] > 0, pred[test_z] > 0
        d = 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)
        lz = [z for z in test_z if lab[z].any()]
        a2, b2 = lab[lz] > 0, pred[lz] > 0
        d2 = 2 * (a2 & b2).sum() / max(a2.sum() + b2.sum(), 1)
        sp = speed(r)
        rows_speed.append((f"(b) semantic {case}", sp, wall))
        rows.append((case, lab.shape, len(train_z), int((lab[train_z] > 0).sum()), int(a.sum()), d, d2,
                     None if r.best is None else r.best["val_score"], int(b.sum())))
        print(f"    {case}: test Dice {d:.3f} (lesion slices {lz}: {d2:.3f}); val {rows[-1][7]}; "
              f"{sp['epochs']} epochs, wall {wall:.0f} s", flush=True)
    print("\n| volume | shape (Z,Y,X) | train slices (even) | lesion voxels painted | lesion voxels in odd slices "
          "| predicted | Dice odd slices (whole) | Dice on odd lesion slices | internal val Dice |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, shape, n_tr, n_p, n_t, d, d2, v, n_pred in rows:
        print(f"| {case} | {shape} | {n_tr} | {n_p} | {n_t} | {n_pred} | {d:.3f} | {d2:.3f} | "
              f"{'n/a' if v is None else f'{v:.3f}'} |")
    print(flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--bases", nargs="+", default=["nuclei"],
                    help="base models (names or folders) to fine-tune from, each compared with the same scratch run")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-adapt", action="store_true")
    ap.add_argument("--skip-semantic", action="store_true")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"datasets not found at {DATA}")
        return 1
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (requested {args.threads}), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average at start {os.getloadavg()}, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}", flush=True)
    rows_speed: list = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEDSEG_MODELS_DIR"] = str(Path(tmp) / "user")
        out = Path(tmp)
        if not args.skip_adapt:
            bench_adapt(args, out, rows_speed)
        if not args.skip_semantic:
            bench_semantic(args, out, rows_speed)
    print("| run | patch x batch | epochs | steps | s / epoch | steps / s | wall s (incl. data prep, final save) |")
    print("|---|---|---|---|---|---|---|")
    for name, sp, wall in rows_speed:
        print(f"| {name} | {sp['patch']} x {sp['batch']} | {sp['epochs']} | {sp['steps']} | {sp['s_per_epoch']:.1f} "
              f"| {sp['steps_per_s']:.2f} | {wall:.0f} |")
    print(f"\nload average at the end {os.getloadavg()} (2 cores shared with other jobs: timings are noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
