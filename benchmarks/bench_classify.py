"""Benchmark: the CNN classifier on real data (val splits), side by side with the object random forest.

One figure per line, per data set (``--data``, several allowed)::

    isic_melanoma_auc=...           ISIC 2017 (256 px dermoscopy): melanoma vs rest, ROC AUC on val
    lc25000_accuracy=...            LC25000 lung H&E tiles, 3 classes, accuracy on val (groups kept apart)
    ph2_melanoma_auc_cv=...         PH2 (100 images): melanoma vs nevus, 5-fold cross-validated AUC,
    ph2_melanoma_auc_cv_from_isic=  ... and the same starting from the ISIC classifier's weights
    <set>_ece_before/after=...      calibration on val (15 bins), before/after temperature scaling
    <set>_train_images_per_s=...    training throughput; <set>_infer_images_per_s=...
    <set>_..._no_tta=...            the same model without test-time flips
    bccd_cnn_accuracy=...           BCCD val ground-truth boxes as cells, 10 labelled per class (``--per-class``):
    bccd_rf_accuracy=...            CNN on 2D crops around the boxes vs the random forest on box features
                                    (``bench_bccd.box_features``), on the other cells, ``--draws`` draws

``--base MODEL`` starts the ISIC / LC25000 (and BCCD, besides scratch) models from a model's encoder
(e.g. ``nuclei-he``: give ``--width 8 --depth 4`` to match it; ``--width``/``--depth`` apply to scratch too).

``--isic-models A B`` evaluates kept ISIC models (``--keep``) and their ensemble (mean calibrated probability)
on val instead of training one. Per CPU second throughputs (``*_per_cpu_s``) do not depend on the machine's load.

Training budgets are wall-clock minutes (``--minutes``; ``--clock cpu``: this process's CPU minutes); the licences of
isic2017_256 and lc25000_lung are unverified: the models trained here are
kept in a temporary folder, never shipped.

Run: ``python benchmarks/bench_classify.py --data lc25000 isic ph2 --minutes 10``; the val figures of
models trained by the CLI: ``--data lc25000 --models MODEL_DIR [MODEL_DIR2 ...]`` (several: an ensemble).
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
    from napari_medseg.progress import run
    from napari_medseg.training.classifier import train_classifier_iter

    t, cpu = time.perf_counter(), time.process_time()
    res = run(train_classifier_iter(tr_items, tr_cls, size=args.size, base=base, minutes=args.minutes,
                                    epochs=args.epochs, batch_size=args.batch, seed=args.seed, device="cpu", out=Path(tmp) / name,
                                    name=name, patience=args.patience, base_channels=args.width,
                                    depth=args.depth, clock=args.clock, precision=args.precision))
    t_train = time.perf_counter() - t
    res.cpu_s = time.process_time() - cpu
    probs, names, t_inf, res.probs_no_tta, res.infer_cpu = _predict(te_items, res.model_path)
    return res, probs, names, t_train, t_inf


def _predict(items, model):
    """Probabilities with and without test-time flips, the TTA wall seconds and (TTA, no-TTA) CPU seconds."""
    from napari_medseg.analysis.image_classify import classify_items

    t, cpu = time.perf_counter(), time.process_time()
    probs, names = classify_items(items, model, tta=True)
    t_inf, cpu_tta = time.perf_counter() - t, time.process_time() - cpu
    cpu = time.process_time()
    probs0, _ = classify_items(items, model, tta=False)
    return probs, names, t_inf, probs0, (cpu_tta, time.process_time() - cpu)


def _uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z) from softmax(z / T): the logits are T * log p up to a constant per row."""
    from napari_medseg.training.classifier import softmax

    return softmax(np.log(np.clip(probs, 1e-300, None)) * temperature)


def _report_ece(tag: str, res, probs_no_tta: np.ndarray, y: np.ndarray) -> None:
    from napari_medseg.training.classifier import expected_calibration_error as ece

    t = res.metrics["temperature"]
    print(f"{tag}_ece_before={res.metrics['ece_before']:.4f} {tag}_ece_after={res.metrics['ece_after']:.4f} "
          f"(held-out part of train, T={t:.3f}); val ECE (no TTA) before={ece(_uncalibrated(probs_no_tta, t), y):.4f} "
          f"after={ece(probs_no_tta, y):.4f}")


def bench_lc25000(args, tmp) -> None:
    from napari_medseg.training.classifier import classification_metrics, expected_calibration_error

    root = DATA / "lc25000_lung"
    tr = _rows(root / "train" / "labels.csv")
    va = _rows(root / "val" / "labels.csv")
    if args.limit:
        tr, va = tr[:: max(1, len(tr) // args.limit)], va[:: max(1, len(va) // args.limit)]
    x_tr = _load([root / "train" / "images" / r["file"] for r in tr], args.size)
    x_va = _load([root / "val" / "images" / r["file"] for r in va], args.size)
    res, probs, names, t_train, t_inf = _fit_predict(x_tr, [r["class"] for r in tr], x_va, args, base=args.base,
                                                     name="lc", tmp=tmp)
    y = np.array([names.index(r["class"]) for r in va])
    m = classification_metrics(probs, y, len(names))
    m0 = classification_metrics(res.probs_no_tta, y, len(names))
    print(f"lc25000_accuracy={m['accuracy']:.4f} lc25000_accuracy_no_tta={m0['accuracy']:.4f} (n_val={len(va)}, "
          f"classes {names}, base {args.base}, best epoch {res.metrics['best_epoch']}/{len(res.history)})")
    _report_ece("lc25000", res, res.probs_no_tta, y)
    print(f"lc25000_val_ece_tta={expected_calibration_error(probs, y):.4f}")
    print(f"lc25000_train_images_per_s={res.metrics['images_per_second']:.1f} train_s={t_train:.0f} "
          f"train_cpu_s={res.cpu_s:.0f} "
          f"lc25000_infer_images_per_s={len(x_va) / t_inf:.1f}")


def bench_lc25000_models(models: list[Path]) -> None:
    """LC25000 val figures of models trained elsewhere (``medseg train --mode classify``); several: an ensemble."""
    import json

    from napari_medseg.analysis.image_classify import classify_items, load_image_item
    from napari_medseg.training.classifier import classification_metrics, expected_calibration_error

    root = DATA / "lc25000_lung" / "val"
    va = _rows(root / "labels.csv")
    items = [load_image_item(root / "images" / r["file"]) for r in va]  # 224 px, resized by the model as in the CLI
    for m in models:
        card = json.loads((m / "model.json").read_text())
        tr, mt = card["training"], card["metrics"]
        print(f"model {m.name}: base {tr.get('base')}, {tr['epochs']} epochs (best {mt['best_epoch']}), "
              f"{tr['minutes']:.1f} wall / {tr.get('cpu_minutes', float('nan')):.1f} CPU min, "
              f"train images/s {mt['images_per_second']:.1f} (wall), held-out ({mt.get('calibrated_on')}) accuracy "
              f"{mt['val_accuracy']:.4f}, ECE {mt['ece_before']:.4f} -> {mt['ece_after']:.4f} "
              f"(T={mt['temperature']:.3f})")
    out = {}
    for tta in (True, False):
        t, cpu = time.perf_counter(), time.process_time()
        probs, names = classify_items(items, [str(m) for m in models], tta=tta)
        out[tta] = (probs, time.perf_counter() - t, time.process_time() - cpu)
    y = np.array([names.index(r["class"]) for r in va])
    tag = "lc25000" + ("_ensemble" if len(models) > 1 else "")
    for tta, (probs, wall, cpu) in out.items():
        m = classification_metrics(probs, y, len(names))
        pred = probs.argmax(1)
        rec = " / ".join(f"{(pred[y == c] == c).mean():.3f}" for c in range(len(names)))
        sfx = "" if tta else "_no_tta"
        print(f"{tag}_accuracy{sfx}={m['accuracy']:.4f} recall {'/'.join(names)} = {rec}, "
              f"ECE {expected_calibration_error(probs, y):.4f}, infer {len(items) / wall:.1f} images/s wall "
              f"({len(items) / max(cpu, 1e-9):.1f} per CPU s)")
    if len(models) == 1:
        t = json.loads((models[0] / "model.json").read_text())["metrics"]["temperature"]
        p0 = out[False][0]
        print(f"{tag}_val_ece_no_tta before T={expected_calibration_error(_uncalibrated(p0, t), y):.4f} "
              f"after T={expected_calibration_error(p0, y):.4f} (T={t:.3f} from the held-out part of train)")


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
    x_va = _load([root / "val" / "images" / (r["image_id"] + ext) for r in va], args.size)
    if args.isic_models:
        _isic_ensemble(args.isic_models, x_va, [cls(r) for r in va])
        return args.isic_models[0]
    x_tr = _load([root / "train" / "images" / (r["image_id"] + ext) for r in tr], args.size)
    res, probs, names, t_train, t_inf = _fit_predict(x_tr, [cls(r) for r in tr], x_va, args, base=args.base,
                                                     name=f"isic_{Path(args.base).name if args.base else 'scratch'}",
                                                     tmp=tmp)
    y = np.array([names.index(cls(r)) for r in va])
    k = names.index("melanoma")
    auc = roc_auc(probs[:, k], y == k)
    auc0 = roc_auc(res.probs_no_tta[:, k], y == k)
    print(f"isic_melanoma_auc={auc:.4f} isic_melanoma_auc_no_tta={auc0:.4f} (n_val={len(va)}, "
          f"{int((y == k).sum())} melanoma, base {args.base}, best epoch {res.metrics['best_epoch']}/"
          f"{len(res.history)})")
    _report_ece("isic", res, res.probs_no_tta, y)
    print(f"isic_val_ece_tta={expected_calibration_error(probs, y):.4f}")
    print(f"isic_train_images_per_s={res.metrics['images_per_second']:.1f} train_s={t_train:.0f} "
          f"train_cpu_s={res.cpu_s:.0f} "
          f"isic_infer_images_per_s={len(x_va) / t_inf:.1f}")
    _per_cpu_second("isic", res, len(x_va))
    print("isic_history: " + " ".join(f"{h['epoch']}:{h['train_loss']:.3f}/{h['val_loss']:.3f}/"
                                      f"{h['val_loss_balanced']:.3f}/{h['val_auc']:.3f}" for h in res.history)
          + " (epoch:train loss/held-out loss/class-balanced held-out loss/held-out AUC)")
    return res.model_path


def _per_cpu_second(tag: str, res, n_test: int) -> None:
    m = res.metrics
    print(f"{tag}_train_images_per_cpu_s={m['images_seen'] / m['cpu_seconds']:.1f} ({m['images_seen']} images drawn "
          f"in {m['cpu_seconds']:.0f} CPU s, {len(res.history)} epochs of {m['n_train']}) "
          f"{tag}_infer_images_per_cpu_s={n_test / res.infer_cpu[0]:.1f} (TTA, 4 flips) "
          f"{n_test / res.infer_cpu[1]:.1f} (no TTA)")


def _isic_ensemble(models: list[Path], x_va, classes: list[str]) -> None:
    """Melanoma AUC and ECE of each kept ISIC model and of their ensemble (mean calibrated probability)."""
    from napari_medseg.training.classifier import expected_calibration_error, roc_auc

    for tag, model in [(Path(m).name, m) for m in models] + [("ensemble", list(models))]:
        probs, names, _, probs0, cpu = _predict(x_va, model)
        y = np.array([names.index(c) for c in classes])
        k = names.index("melanoma")
        print(f"isic_{tag}_melanoma_auc={roc_auc(probs[:, k], y == k):.4f} no_tta={roc_auc(probs0[:, k], y == k):.4f} "
              f"val_ece={expected_calibration_error(probs, y):.4f} no_tta={expected_calibration_error(probs0, y):.4f} "
              f"infer_images_per_cpu_s={len(y) / cpu[0]:.1f} (TTA)")


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
    fold_args = argparse.Namespace(**{**vars(args), "minutes": args.ph2_minutes or args.minutes})
    for tag, base in (("", None), ("_from_isic", isic_model)):
        if tag and base is None:
            continue
        scores = np.zeros(len(y))
        for k in range(5):
            tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            _, probs, names, _, _ = _fit_predict([x[i] for i in tr], list(y[tr]), [x[i] for i in te], fold_args,
                                                 base=None if base is None else str(base), name=f"ph2{tag}{k}",
                                                 tmp=tmp)
            scores[te] = probs[:, names.index("melanoma")]
        print(f"ph2_melanoma_auc_cv{tag}={roc_auc(scores, y == 'melanoma'):.4f} (5-fold, {len(y)} images, "
              f"CPU {time.process_time():.0f} s so far)")


def bench_bccd(args, tmp) -> None:
    """CNN on crops vs random forest on features, ``--per-class`` labelled val cells per class."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_bccd import CLASSES, box_features

    from napari_medseg.analysis.classify import ObjectClassifier
    from napari_medseg.analysis.crop_classify import CropSpec, classify_at
    from napari_medseg.progress import run
    from napari_medseg.training.crop_classifier import train_crop_classifier_iter
    from napari_medseg.training.detection import load_voc_folder

    samples, _ = load_voc_folder(DATA / "bccd" / "val", CLASSES)
    feats: dict[str, list] = {}
    y, owner, centres = [], [], []
    for i, s in enumerate(samples):
        for k, v in box_features(s.image, s.boxes).items():
            feats.setdefault(k, []).append(v)
        y += [CLASSES[c] for c in s.class_ids]
        owner += [i] * len(s.boxes)
        centres.append(np.stack([(s.boxes[:, 0] + s.boxes[:, 2]) / 2 - 0.5, (s.boxes[:, 1] + s.boxes[:, 3]) / 2 - 0.5],
                                axis=1))
    table = {k: np.concatenate(v) for k, v in feats.items()}
    y, owner, centres = np.asarray(y), np.asarray(owner), np.concatenate(centres)
    n = len(y)
    table["label"] = np.arange(1, n + 1)
    spec = CropSpec(args.crop, "pixel", "2d", 64)
    bases = [("scratch", None)] + [(b, b) for b in args.bccd_bases]
    acc: dict[str, list] = {}
    t_cnn: list[float] = []
    for draw in range(args.draws):
        rng = np.random.default_rng(draw)
        picked = np.concatenate([rng.choice(np.flatnonzero(y == c), args.per_class, replace=False) for c in CLASSES])
        rest = np.setdiff1d(np.arange(n), picked)
        clf = ObjectClassifier(random_state=draw).fit(table, {int(i) + 1: str(y[i]) for i in picked})
        pred, _ = clf.predict(table)
        acc.setdefault("rf", []).append((np.mean(pred[rest] == y[rest]),
                                         np.mean([np.mean(pred[rest][y[rest] == c] == c) for c in CLASSES])))
        for tag, base in bases:
            # the labelled crops come from their images; one image per item keeps crops on their own picture
            t, cpu = time.perf_counter(), time.process_time()
            crops_img = [samples[owner[i]].image for i in picked]
            res = run(_train_on_images(train_crop_classifier_iter, crops_img, centres[picked], list(y[picked]), spec,
                                       base=base, minutes=args.minutes, seed=draw, out=Path(tmp) / f"bccd{draw}{tag}",
                                       name=f"bccd{draw}{tag}", patience=args.patience, val_fraction=0.2,
                                       batch_size=8, device="cpu", clock=args.clock,
                                       base_channels=16 if base in (None, "bccd") else 8,
                                       depth=4 if base is not None else None))
            t_cnn.append((time.perf_counter() - t, time.process_time() - cpu))
            probs = np.zeros((n, len(res.class_names)))
            for i in np.unique(owner[rest]):
                m = rest[owner[rest] == i]
                probs[m], names = classify_at(samples[i].image, centres[m], res.model_path, tta=True)
            p = np.asarray(res.class_names)[probs[rest].argmax(axis=1)]
            acc.setdefault(f"cnn_{tag}", []).append((np.mean(p == y[rest]),
                                                     np.mean([np.mean(p[y[rest] == c] == c) for c in CLASSES])))
            print(f"  draw {draw} cnn_{tag}: accuracy {acc[f'cnn_{tag}'][-1][0]:.4f}, {len(res.history)} epochs, "
                  f"fit {t_cnn[-1][0]:.0f} s wall / {t_cnn[-1][1]:.0f} s CPU", flush=True)
    counts = {c: int(np.sum(y == c)) for c in CLASSES}
    print(f"bccd: {n} val cells {counts}, {args.per_class} labelled per class, {args.draws} draws, "
          f"CNN crops {spec.size:g} px -> {spec.pixels}, {args.minutes} min per CNN, mean CNN fit "
          f"{np.mean([a for a, _ in t_cnn]):.0f} s wall, {np.mean([b for _, b in t_cnn]):.0f} s CPU")
    for k, v in acc.items():
        a = np.asarray(v)
        print(f"bccd_{k}_accuracy={a[:, 0].mean():.4f} (sd {a[:, 0].std(ddof=1) if len(a) > 1 else 0:.4f}) "
              f"balanced={a[:, 1].mean():.4f} draws {', '.join(f'{x:.3f}' for x in a[:, 0])}")


def _train_on_images(train_iter, images, centres, classes, spec, **kw):
    """Crops from several images: cut each on its own image, then train on the stack of crops."""
    from napari_medseg.analysis.crop_classify import sample_crops
    from napari_medseg.training.classifier import train_classifier_iter
    from napari_medseg.training.crop_classifier import default_depth

    crops = [sample_crops(img, c[None], None, spec)[0] for img, c in zip(images, centres, strict=True)]
    depth = kw.pop("depth", None) or default_depth(spec)
    return train_classifier_iter(crops, classes, dims=spec.dims, size=spec.pixels, depth=depth,
                                 input_extra={"crop": spec.to_dict()}, **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["lc25000"], choices=["lc25000", "isic", "ph2", "bccd"])
    ap.add_argument("--base", default=None, help="model whose encoder starts the ISIC / LC25000 models")
    ap.add_argument("--width", type=int, default=16, help="base channels of the classifier")
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None,
                    help="save the trained models here (a folder outside the repository; never shipped)")
    ap.add_argument("--isic-models", type=Path, nargs="+", default=None,
                    help="kept ISIC models: evaluate each and their ensemble on val instead of training one")
    ap.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="autocast dtype of the training forward pass")
    ap.add_argument("--ph2-base", default=None, help="a model (e.g. a kept ISIC one) for PH2's transfer run")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="what --minutes counts (cpu: this process's CPU time, for a shared machine)")
    ap.add_argument("--crop", type=float, default=128.0, help="BCCD crop edge in pixels")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--bccd-bases", nargs="*", default=["bccd"], help="bases tried besides scratch on BCCD")
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per model (besides --minutes; first one ends)")
    ap.add_argument("--ph2-minutes", type=float, default=None, help="budget per PH2 fold (default --minutes)")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="use about this many train and val items (0 = all)")
    ap.add_argument("--models", nargs="+", type=Path, default=None,
                    help="lc25000: evaluate these trained model folders on val (an ensemble if several), no training")
    args = ap.parse_args(argv)
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # the training keeps it
    torch.set_num_threads(args.threads)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, size {args.size}, {args.minutes} {args.clock} "
          f"min/model, width {args.width}, depth {args.depth}, base {args.base}, precision {args.precision}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        isic_model = Path(args.ph2_base) if args.ph2_base else None
        if "lc25000" in args.data:
            if args.models:
                bench_lc25000_models(args.models)
            else:
                bench_lc25000(args, tmp)
        if "isic" in args.data:
            isic_model = bench_isic(args, tmp) if isic_model is None else isic_model
        if "ph2" in args.data:
            bench_ph2(args, tmp, isic_model)
        if "bccd" in args.data:
            bench_bccd(args, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
