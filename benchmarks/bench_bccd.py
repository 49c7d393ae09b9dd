"""Benchmark on BCCD ``val``: box detection AP per class, RBC precision/recall, few-shot object classifier.

Detection
    ``napari_medseg.analysis.box_detection.detect`` with the shipped ``bccd`` model
    (or ``--model``) on the 87 val images.  AP at box IoU >= 0.5 per class,
    VOC rules (:mod:`napari_medseg.analysis.boxes`: greedy matching by score,
    all-point interpolated area under the precision-recall curve), from all
    detections with score >= ``--ap-threshold``.  Ground-truth boxes less
    than 2 pixels high or wide (degenerate annotations) are left out and
    counted.

    RBC annotations are incomplete, so RBC precision against them is only a
    lower bound.  At the model's default score threshold we report, per class:
    recall of annotated boxes; precision of all detections (unannotated cells
    count as false positives); and for RBC the precision restricted to
    detections *on annotated cells* (detections whose centre lies inside an
    annotated RBC box): the fraction of those that match an annotated box at
    IoU >= 0.5.

Few-shot object classifier
    Objects are the val ground-truth boxes.  Features measured in each box
    crop: mean, std, 10/50/90th percentiles of R, G, B and of HSV hue,
    saturation, value; box height, width, area and aspect ratio.  10 objects
    per class are drawn at random as the marked ones, an
    :class:`~napari_medseg.analysis.classify.ObjectClassifier` (random forest)
    is trained on them and every other object is classified.  Accuracy (and
    class-balanced accuracy, the mean of per-class recalls: RBCs are 85 % of
    the objects) over 5 draws: mean +- standard deviation.

Run::

    python benchmarks/bench_bccd.py [--model bccd] [--draws 5] [--per-class 10]

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))
CLASSES = ["WBC", "RBC", "Platelets"]


def box_features(image: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-box colour statistics (RGB and HSV) and box geometry, one row per box."""
    from skimage.color import rgb2hsv

    cols: dict[str, list[float]] = {}
    h, w = image.shape[:2]
    for b in boxes:
        y0, x0 = int(np.floor(max(b[0], 0))), int(np.floor(max(b[1], 0)))
        y1, x1 = int(np.ceil(min(b[2], h))), int(np.ceil(min(b[3], w)))
        crop = image[y0:y1, x0:x1, :3]
        rgb = crop.astype(np.float32) / 255.0
        hsv = rgb2hsv(crop)
        planes = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2],
                  "hue": hsv[..., 0], "sat": hsv[..., 1], "val": hsv[..., 2]}
        for name, pl in planes.items():
            v = pl.ravel()
            q = np.percentile(v, [10, 50, 90])
            for stat, val in (("mean", v.mean()), ("std", v.std()), ("p10", q[0]), ("p50", q[1]), ("p90", q[2])):
                cols.setdefault(f"{name}_{stat}", []).append(float(val))
        bh, bw = b[2] - b[0], b[3] - b[1]
        for k, val in (("height", bh), ("width", bw), ("area", bh * bw), ("aspect", bh / max(bw, 1e-6))):
            cols.setdefault(k, []).append(float(val))
    return {k: np.asarray(v) for k, v in cols.items()}


def main(argv: list[str] | None = None) -> int:

    from napari_medseg.analysis.box_detection import detect
    from napari_medseg.analysis.boxes import evaluate_detections, match_detections
    from napari_medseg.analysis.classify import ObjectClassifier
    from napari_medseg.models.registry import resolve_model
    from napari_medseg.training.detection import load_voc_folder

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bccd")
    ap.add_argument("--data", type=Path, default=DATASETS / "bccd" / "val")
    ap.add_argument("--ap-threshold", type=float, default=0.01, help="lowest score kept for the AP curves")
    ap.add_argument("--threshold", type=float, default=None, help="operating score threshold (default: the card's)")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto", help="network arithmetic (auto: float32 on CPU)")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"BCCD val not found at {args.data}", file=sys.stderr)
        return 2

    samples, dropped = load_voc_folder(args.data, CLASSES)
    card = resolve_model(args.model).card
    thr = float(args.threshold if args.threshold is not None else card.output["postprocess"]["score_threshold"])

    # ---- detection ---------------------------------------------------------------------------
    t = time.perf_counter()
    dets, gts, times = [], [], []
    for s in samples:
        t1 = time.perf_counter()
        r = detect(s.image, args.model, device=args.device, score_threshold=args.ap_threshold,
                   precision=args.precision)
        times.append(time.perf_counter() - t1)
        dets.append((r.boxes, r.classes, r.scores))
        gts.append((s.boxes, [CLASSES[i] for i in s.class_ids]))
    total_s = time.perf_counter() - t
    used_precision = r.info["precision"]
    ap_scores = evaluate_detections(dets, gts, CLASSES, 0.5)
    at_thr = [(b[sc >= thr], [c for c, keep in zip(cl, sc >= thr, strict=False) if keep], sc[sc >= thr]) for b, cl, sc in dets]
    op = evaluate_detections(at_thr, gts, CLASSES, 0.5)

    # RBC precision on annotated cells: detections whose centre is inside an annotated RBC box
    on_cells = tp_on = 0
    for (b, cl, sc), (gb, gc) in zip(at_thr, gts, strict=False):
        sel = np.array([c == "RBC" for c in cl], bool)
        gsel = np.array([c == "RBC" for c in gc], bool)
        if not sel.any() or not gsel.any():
            continue
        db, ds, g = b[sel], sc[sel], gb[gsel]
        tp, _ = match_detections(db, ds, g, 0.5)
        cy, cx = (db[:, 0] + db[:, 2]) / 2, (db[:, 1] + db[:, 3]) / 2
        inside = ((cy[:, None] >= g[None, :, 0]) & (cy[:, None] < g[None, :, 2])
                  & (cx[:, None] >= g[None, :, 1]) & (cx[:, None] < g[None, :, 3])).any(axis=1)
        on_cells += int(inside.sum())
        tp_on += int((tp & inside).sum())

    print(f"## BCCD val detection ({len(samples)} images, model `{card.name}`, device {args.device}, "
          f"{used_precision})\n")
    print(f"Ground-truth boxes left out as degenerate (< 2 px): {dropped['degenerate']}. "
          f"AP from detections with score >= {args.ap_threshold}; precision/recall at the operating "
          f"threshold {thr}.\n")
    print("| class | GT boxes | AP@0.5 | detections @thr | recall @thr | precision @thr |")
    print("|---|---|---|---|---|---|")
    for c in CLASSES:
        a, o = ap_scores[c], op[c]
        print(f"| {c} | {a.n_gt} | {a.ap:.3f} | {o.n_det} | {o.recall:.3f} | {o.precision:.3f} |")
    print(f"| mean | | {np.nanmean([ap_scores[c].ap for c in CLASSES]):.3f} | | | |")
    prec_on = tp_on / on_cells if on_cells else float("nan")
    print(f"\nRBC (annotations incomplete): recall of annotated RBCs {op['RBC'].recall:.3f}; precision of all RBC "
          f"detections vs annotations {op['RBC'].precision:.3f} (lower bound: unannotated cells count as false); "
          f"precision of RBC detections centred on an annotated RBC box {prec_on:.3f} ({tp_on}/{on_cells}).")
    print(f"\nDetection time: {np.median(times) * 1000:.0f} ms median per 640x480 image "
          f"({total_s:.1f} s for {len(samples)} images, model loading included).\n")

    # ---- few-shot object classifier ---------------------------------------------------------
    feats: dict[str, list] = {}
    labels: list[str] = []
    for s in samples:
        f = box_features(s.image, s.boxes)
        for k, v in f.items():
            feats.setdefault(k, []).append(v)
        labels += [CLASSES[i] for i in s.class_ids]
    table = {k: np.concatenate(v) for k, v in feats.items()}
    n = len(labels)
    table["label"] = np.arange(1, n + 1)
    y = np.asarray(labels)
    accs, baccs = [], []
    for draw in range(args.draws):
        rng = np.random.default_rng(draw)
        marked = {}
        for c in CLASSES:
            idx = np.flatnonzero(y == c)
            for i in rng.choice(idx, size=min(args.per_class, len(idx)), replace=False):
                marked[int(i) + 1] = c
        clf = ObjectClassifier(random_state=draw).fit(table, marked)
        pred, _ = clf.predict(table)
        rest = np.array([i + 1 not in marked for i in range(n)])
        accs.append(float(np.mean(pred[rest] == y[rest])))
        baccs.append(float(np.mean([np.mean(pred[rest & (y == c)] == c) for c in CLASSES])))
    counts = {c: int(np.sum(y == c)) for c in CLASSES}
    print(f"## Few-shot object classifier ({args.per_class} marked objects per class, ground-truth boxes of val "
          f"as objects {counts}, {len(feats)} features, {args.draws} random draws)\n")
    print("| metric | mean | sd | draws |")
    print("|---|---|---|---|")
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    bsd = statistics.stdev(baccs) if len(baccs) > 1 else 0.0
    print(f"| accuracy on the other objects | {np.mean(accs):.3f} | {sd:.3f} | {', '.join(f'{a:.3f}' for a in accs)} |")
    print(f"| balanced accuracy | {np.mean(baccs):.3f} | {bsd:.3f} | {', '.join(f'{a:.3f}' for a in baccs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
