"""Benchmark: the CNN classifier on real data (val splits), side by side with the object random forest.

One figure per line, per data set (``--data``, several allowed)::

    isic_melanoma_auc=...           ISIC 2017 (256 px dermoscopy): melanoma vs rest, ROC AUC on val
    lc25000_accuracy=...            LC25000 lung H&E tiles, 3 classes, accuracy on val (groups kept apart)
    ph2_melanoma_auc_cv=...         PH2 (100 images): melanoma vs nevus, 5-fold cross-validated AUC,
    ph2_melanoma_auc_cv_from_isic=  ... and the same starting from the ISIC classifier's weights
    <set>_ece_before/after=...      calibration on val (15 bins), before/after temperature scaling
    <set>_train_images_per_s=...    training throughput; <set>_infer_images_per_s=...

Training budgets are wall-clock minutes (``--minutes``); the licences of
isic2017_256 and lc25000_lung are unverified: the models trained here are
kept in a temporary folder, never shipped.

Run: ``python benchmarks/bench_classify.py --data lc25000 isic ph2 --minutes 10``.
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
DATA = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _load(paths: list[Path], size: int) -> list[np.ndarray]:
    from skimage.io import imread
    from skimage.transform import resize

    out = []
    for p in paths:
        a = imread(p)[..., :3]
        # resized once here (the classifier would resize too); uint8 keeps memory low
        out.append((resize(a, (size, size), anti_aliasing=True) * 255).astype(np.uint8))
    return out


def _fit_predict(tr_items, tr_cls, te_items, args, base=None, name="m", tmp=None):
    from napari_medseg.analysis.image_classify import classify_items
    from napari_medseg.progress import run
    from napari_medseg.training.classifier import train_classifier_iter

    t = time.perf_counter()
    res = run(train_classifier_iter(tr_items, tr_cls, size=args.size, base=base, minutes=args.minutes,
                                    batch_size=args.batch, seed=args.seed, device="cpu", out=Path(tmp) / name,
                                    name=name, patience=args.patience))
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    probs, names = classify_items(te_items, res.model_path, tta=True)
    t_inf = time.perf_counter() - t
    return res, probs, names, t_train, t_inf


def bench_lc25000(args, tmp) -> None:
    from napari_medseg.training.classifier import classification_metrics, expected_calibration_error

    root = DATA / "lc25000_lung"
    tr = _rows(root / "train" / "labels.csv")
    va = _rows(root / "val" / "labels.csv")
    if args.limit:
        tr, va = tr[:: max(1, len(tr) // args.limit)], va[:: max(1, len(va) // args.limit)]
    x_tr = _load([root / "train" / "images" / r["file"] for r in tr], args.size)
    x_va = _load([root / "val" / "images" / r["file"] for r in va], args.size)
    res, probs, names, t_train, t_inf = _fit_predict(x_tr, [r["class"] for r in tr], x_va, args, name="lc", tmp=tmp)
    y = np.array([names.index(r["class"]) for r in va])
    m = classification_metrics(probs, y, len(names))
    print(f"lc25000_accuracy={m['accuracy']:.4f} (n_val={len(va)}, classes {names})")
    print(f"lc25000_ece_before={res.metrics['ece_before']:.4f} lc25000_ece_after={res.metrics['ece_after']:.4f} "
          f"(held-out part of train); val ECE={expected_calibration_error(probs, y):.4f}")
    print(f"lc25000_train_images_per_s={res.metrics['images_per_second']:.1f} train_s={t_train:.0f} "
          f"lc25000_infer_images_per_s={len(x_va) / t_inf:.1f}")


def bench_isic(args, tmp) -> Path:
    from napari_medseg.training.classifier import expected_calibration_error, roc_auc

    root = DATA / "isic2017_256"
    tr = _rows(root / "train" / "labels.csv")
    va = _rows(root / "val" / "labels.csv")
    if args.limit:
        tr, va = tr[:: max(1, len(tr) // args.limit)], va[:: max(1, len(va) // args.limit)]

    def cls(r):
        return "melanoma" if float(r["melanoma"]) > 0.5 else "other"

    ext = ".jpg"
    x_tr = _load([root / "train" / "images" / (r["image_id"] + ext) for r in tr], args.size)
    x_va = _load([root / "val" / "images" / (r["image_id"] + ext) for r in va], args.size)
    res, probs, names, t_train, t_inf = _fit_predict(x_tr, [cls(r) for r in tr], x_va, args, name="isic", tmp=tmp)
    y = np.array([names.index(cls(r)) for r in va])
    auc = roc_auc(probs[:, names.index("melanoma")], y == names.index("melanoma"))
    print(f"isic_melanoma_auc={auc:.4f} (n_val={len(va)}, {int((y == names.index('melanoma')).sum())} melanoma)")
    print(f"isic_ece_before={res.metrics['ece_before']:.4f} isic_ece_after={res.metrics['ece_after']:.4f}; "
          f"val ECE={expected_calibration_error(probs, y):.4f}")
    print(f"isic_train_images_per_s={res.metrics['images_per_second']:.1f} train_s={t_train:.0f} "
          f"isic_infer_images_per_s={len(x_va) / t_inf:.1f}")
    return res.model_path


def bench_ph2(args, tmp, isic_model: Path | None) -> None:
    from napari_medseg.training.classifier import roc_auc

    root = DATA / "ph2_dev"
    rows = _rows(root / "labels.csv")
    x = _load([root / "images" / f"{r['id']}.png" for r in rows], args.size)
    y = np.array(["melanoma" if r["diagnosis"] == "melanoma" else "nevus" for r in rows])
    rng = np.random.default_rng(args.seed)
    folds = np.empty(len(y), int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        folds[idx] = np.arange(len(idx)) % 5
    for tag, base in (("", None), ("_from_isic", isic_model)):
        if tag and base is None:
            continue
        scores = np.zeros(len(y))
        for k in range(5):
            tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            _, probs, names, _, _ = _fit_predict([x[i] for i in tr], list(y[tr]), [x[i] for i in te], args,
                                                 base=None if base is None else str(base), name=f"ph2{tag}{k}",
                                                 tmp=tmp)
            scores[te] = probs[:, names.index("melanoma")]
        print(f"ph2_melanoma_auc_cv{tag}={roc_auc(scores, y == 'melanoma'):.4f} (5-fold, {len(y)} images)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["lc25000"], choices=["lc25000", "isic", "ph2"])
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="use about this many train and val items (0 = all)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, size {args.size}, {args.minutes} min/model")
    with tempfile.TemporaryDirectory() as tmp:
        isic_model = None
        if "lc25000" in args.data:
            bench_lc25000(args, tmp)
        if "isic" in args.data:
            isic_model = bench_isic(args, tmp)
        if "ph2" in args.data:
            bench_ph2(args, tmp, isic_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
