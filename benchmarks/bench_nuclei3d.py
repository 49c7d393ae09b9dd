#!/usr/bin/env python
"""3D nuclei from the 2D ``nuclei`` model: planes along three axes (do_3d) vs plane-by-plane + linking.

    python benchmarks/bench_nuclei3d.py [--stacks 6] [--threads 1] [--device cpu]

Synthetic confocal-like stacks (known 3D ground truth): random ellipsoid
nuclei (Y/X semi-axes 7-11 px, Z semi-axis 6-9 px in the same physical unit,
random in-plane orientation), packed so that some touch (centre distance down
to 0.85x the sum of their mean radii; a shared voxel goes to the first
nucleus), with smooth intensity texture and per-nucleus brightness, blurred
by an elongated PSF (sigma 2 px along Z, 1 px in Y/X), on a dim background,
Poisson noise.  The stacks are sampled every 2 px along Z (voxel 2 x 1 x 1),
as confocal stacks usually are.

Each stack is segmented with the shipped ``nuclei`` model by

- ``do_3d``: :func:`~napari_medseg.inference.ortho3d.segment_3d_from_2d_iter`
  with ``scale=(2, 1, 1)`` (Z resampled to isotropic, YX/ZX/ZY planes,
  averaged maps, 3D watershed);
- ``do_3d, scale ignored``: the same without the voxel size (the stack taken
  as isotropic: nuclei look half as tall in the ZX/ZY planes);
- ``planes + 3D CC``: the plane-by-plane labels (``do_3d=False``), linked
  into 3D objects by 3D connected components (face connectivity) of their
  foreground, components under 24 voxels dropped (the ``do_3d`` minimum,
  48 isotropic voxels, on this grid) -- the simplest linking baseline; it
  merges touching nuclei.

Prints a markdown table: AP@0.5 and AP@0.75 in 3D
(:func:`napari_medseg.analysis.metrics.average_precision`, TP/(TP+FP+FN),
mean over stacks), objects found vs true, and seconds per stack (torch
threads as given).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

Z_STEP = 2.0  #: Z sampling in Y/X pixel units


def synthetic_stack(shape=(32, 128, 128), seed: int = 0, n_target: int = 24):
    """(image float32, ground-truth int32 labels) of one confocal-like stack, sampled every Z_STEP along Z."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    zz, yy, xx = np.indices(shape).astype(np.float32)
    zz *= Z_STEP  # physical Z
    gt = np.zeros(shape, np.int32)
    placed: list[tuple[float, float, float, float]] = []
    tries = 0
    while len(placed) < n_target and tries < 5000:
        tries += 1
        ry, rx, rz = rng.uniform(7, 11), rng.uniform(7, 11), rng.uniform(6, 9)
        c = (rng.uniform(rz, nz * Z_STEP - rz), rng.uniform(ry, ny - ry), rng.uniform(rx, nx - rx))
        r = (ry + rx + rz) / 3
        if any(np.sqrt((c[0] - p[0]) ** 2 + (c[1] - p[1]) ** 2 + (c[2] - p[2]) ** 2) < 0.85 * (r + p[3])
               for p in placed):
            continue
        th = rng.uniform(0, np.pi)
        dy, dx = yy - c[1], xx - c[2]
        u, v = dy * np.cos(th) + dx * np.sin(th), -dy * np.sin(th) + dx * np.cos(th)
        m = ((zz - c[0]) / rz) ** 2 + (u / ry) ** 2 + (v / rx) ** 2 <= 1
        m &= gt == 0
        if m.sum() < 50:
            continue
        placed.append((*c, r))
        gt[m] = len(placed)
    bright = np.concatenate([[0.0], rng.uniform(0.5, 1.0, len(placed))])
    texture = 1 + 0.25 * ndi.gaussian_filter(rng.normal(0, 1, shape), (1, 2, 2)) / 0.1
    signal = 60 * bright[gt] * np.clip(texture, 0.3, None)
    signal = ndi.gaussian_filter(signal, (2.0 / Z_STEP, 1.0, 1.0)) + 4.0  # PSF + background (photons)
    img = rng.poisson(signal).astype(np.float32)
    return img, gt


def touching_pairs(gt: np.ndarray) -> int:
    """Pairs of distinct labels that share a face."""
    pairs = set()
    for ax in range(3):
        a = np.moveaxis(gt, ax, 0)
        x, y = a[1:].ravel(), a[:-1].ravel()
        sel = (x > 0) & (y > 0) & (x != y)
        pairs |= {(min(p, q), max(p, q)) for p, q in zip(x[sel].tolist(), y[sel].tolist(), strict=False)}
    return len(pairs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stacks", type=int, default=6)
    ap.add_argument("--shape", type=int, nargs=3, default=(32, 128, 128), metavar=("Z", "Y", "X"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from scipy import ndimage as ndi

    from napari_medseg.analysis.metrics import average_precision
    from napari_medseg.inference.dispatch import segment_any_iter
    from napari_medseg.inference.segment import segment_iter
    from napari_medseg.progress import run

    def planes_cc(img):
        lab = run(segment_iter(img, "nuclei", device=args.device)).labels
        cc, _ = ndi.label(lab > 0)
        sizes = np.bincount(cc.ravel())
        keep = sizes >= 24
        keep[0] = False
        return np.where(keep[cc], cc, 0)

    methods = {
        "do_3d": lambda img: run(segment_any_iter(img, "nuclei", device=args.device, scale=(Z_STEP, 1, 1),
                                                  do_3d=True)).labels,
        "do_3d, scale ignored": lambda img: run(segment_any_iter(img, "nuclei", device=args.device,
                                                                 do_3d=True)).labels,
        "planes + 3D CC": planes_cc,
    }
    rows = {m: {"ap50": [], "ap75": [], "n": [], "s": []} for m in methods}
    n_true, n_touch = [], []
    run(segment_iter(np.zeros((2, 64, 64), np.float32), "nuclei", device=args.device))  # warm-up (load, JIT)
    for k in range(args.stacks):
        img, gt = synthetic_stack(tuple(args.shape), seed=k)
        n_true.append(int(gt.max()))
        n_touch.append(touching_pairs(gt))
        for name, fn in methods.items():
            t = time.perf_counter()
            lab = np.asarray(fn(img))
            rows[name]["s"].append(time.perf_counter() - t)
            ap50, ap75 = average_precision(gt, lab, [0.5, 0.75])
            rows[name]["ap50"].append(ap50)
            rows[name]["ap75"].append(ap75)
            rows[name]["n"].append(int(len(np.unique(lab)) - (0 in lab)))
            print(f"stack {k}: {name}: AP50 {ap50:.3f} AP75 {ap75:.3f} objects {rows[name]['n'][-1]}/{gt.max()} "
                  f"{rows[name]['s'][-1]:.1f} s", file=sys.stderr)

    z, y, x = args.shape
    print(f"## 3D nuclei from the 2D `nuclei` model ({args.stacks} synthetic stacks {z}x{y}x{x}, voxel "
          f"{Z_STEP:g}x1x1, {sum(n_true)} nuclei, {sum(n_touch)} touching pairs; torch threads {args.threads}, "
          f"device {args.device})\n")
    print("| method | AP@0.5 | AP@0.75 | objects found / true | s per stack |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {np.mean(r['ap50']):.3f} | {np.mean(r['ap75']):.3f} | {sum(r['n'])} / {sum(n_true)} | "
              f"{np.mean(r['s']):.1f} |")
    print(f"\nCommand: `python benchmarks/bench_nuclei3d.py --stacks {args.stacks} --shape {z} {y} {x} "
          f"--threads {args.threads} --device {args.device}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
