#!/usr/bin/env python
"""Nuclei post-processing on cached maps: error classes, seed oracles, seed alternatives (issue 16).

    python benchmarks/bench_nuclei_postprocess_seeds.py \\
        --model distance=src/napari_medseg/models/shipped/nuclei \\
        --model contour=scripts/checkpoints/nuclei-contour.pt [--cache /tmp/s7/pp] [--val]

Everything is measured on the fluorescence images of the training script's
seeded hold-out (``scripts/train_default_models.py``: ``splits``, 10 % of
each modality, seed 1234), never on ``val``, except the last table.  Each
model (a model folder, or a resumable checkpoint ``.pt``: its last weights)
predicts every hold-out image once, whole (``training.loop.predict_all_maps``,
as the trainer's tuning does); the maps are cached (``--cache``) and every
method below runs on the same maps.

1. **Errors** at IoU 0.5 (pooled counts, printed after the alternatives).  A
   prediction *covers* a true nucleus holding >= 50 % of its pixels; a true
   nucleus *holds* a prediction with >= 50 % of the prediction's pixels.
   Missed nuclei (FN): *merged* (a prediction covering it covers >= 2 true
   nuclei), *split* (it holds >= 2 predictions), *missed* (< 50 % of it in
   any prediction), *other* (poor overlap).  False positives: *merge* (covers
   >= 2 true), *fragment* (held by a true nucleus that holds >= 2),
   *spurious* (< 50 % of it on true nuclei), *other*.
2. **Oracles**: the same watershed of ``-dist`` (the contour model's damped
   distance) with the true seeds (one pixel per true nucleus, its innermost
   point) in our foreground; with our seeds in the true foreground; both.
3. **Alternatives**, each tuned on the hold-out by the trainer's rule (mean
   AP@0.5, then mAP; ``train_default_models.best_on_grid``): the card's
   threshold seeds re-tuned on a wider grid; *threshold-tree seeds* (going
   down the levels of the distance, a component holding two or more peaks
   that rise at least ``h`` above it keeps them apart, a lower peak joins its
   neighbour: h-maxima with a floor ``t0``); scikit-image ``h_maxima`` seeds
   and the engine's ``seed_h`` (the same seeds, computed per component);
   for contour models, seeds ``dist > t & boundary < b`` flooded over the
   boundary map.  Post-processing seconds per megapixel (this machine, one
   thread) are those of this study's code (a whole-image scikit-image
   watershed; the engine's card path labels only touching components).
   The error classes of every tuned method follow.
4. ``--val``: ``dsb2018/val`` fluorescence scored once, same whole-image maps:
   the card's post-processing, and, only where the best alternative beats it
   by >= 0.01 AP@0.5 on the hold-out, that alternative and the re-tuned
   threshold seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
FACE = ndi.generate_binary_structure(2, 1)


def load_net(path: Path):
    """``(net, card)`` of a model folder or of a checkpoint file's last weights (as ``--retune`` loads them).

    A checkpoint's own card holds the default post-processing (tuning comes
    after training); its ``<name>.card.json`` beside it, when present, holds
    the tuned one, which is then used.
    """
    from napari_medseg.models.spec import ModelCard, build_network, load_model

    if path.suffix != ".pt":
        return load_model(path)
    from napari_medseg.training.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    card = ModelCard.from_dict(ck.card)
    tuned = path.with_suffix(".card.json")
    if tuned.is_file():
        card.output["postprocess"] = dict(ModelCard.from_json(tuned).output["postprocess"])
    net = build_network(card)
    net.load_state_dict(ck.model)
    return net.eval(), card


def predict(net, card, samples) -> list[np.ndarray]:
    """Whole-image sigmoid maps (K, Y, X) float32 per sample."""
    import torch

    from napari_medseg.training.loop import predict_all_maps, prepare_image

    with torch.no_grad():
        return [predict_all_maps(net, prepare_image(s.image, card.input.get("normalization"))).astype(np.float32)
                for s in samples]


def flood(fg: np.ndarray, surface: np.ndarray, markers: np.ndarray, min_size: float = 16) -> np.ndarray:
    """Seeded watershed of ``surface`` in ``fg``; seedless foreground components are objects; size filter."""
    from skimage.segmentation import watershed

    lab = watershed(surface.astype(np.float32), np.where(fg, markers, 0), mask=fg)
    rest, _ = ndi.label(fg & (lab == 0), structure=FACE)
    lab[rest > 0] = rest[rest > 0] + lab.max()
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, keep.sum() + 1)
    return lut[lab]


def true_seeds(labels: np.ndarray) -> np.ndarray:
    """One marker pixel per true nucleus, at the maximum of its own distance transform."""
    seeds = np.zeros(labels.shape, np.int32)
    for i, box in enumerate(ndi.find_objects(labels), 1):
        if box is not None:
            d = ndi.distance_transform_edt(np.pad(labels[box] == i, 1))[1:-1, 1:-1]
            seeds[box][np.unravel_index(np.argmax(d), d.shape)] = i
    return seeds


def tree_seeds(fg: np.ndarray, dist: np.ndarray, t0: float, h: float, step: float = 0.05) -> np.ndarray:
    """Seeds from the threshold tree of ``dist`` in ``fg``, levels ``t0 .. 0.95`` visited from the top.

    At each level a component of ``fg & (dist > t)`` holding no seed is a new
    seed; holding seeds of which at most one is *valid* (its peak rises
    ``>= h`` above ``t``), it becomes that seed (the valid one, else the
    largest); holding two or more valid seeds, those stay apart and the
    others are dropped (they join a neighbour in the flood).
    """
    seeds = np.zeros(dist.shape, np.int32)
    peak = np.zeros(1, np.float32)
    n = 0
    for t in np.round(np.arange(0.95, t0 - 1e-9, -step), 4):
        comp, nc = ndi.label(fg & (dist > t), structure=FACE)
        if nc == 0:
            continue
        px = seeds > 0
        code = np.unique(comp[px].astype(np.int64) * (n + 1) + seeds[px])
        cid, sid = code // (n + 1), code % (n + 1)
        area = np.bincount(seeds[px], minlength=n + 1)
        valid = peak - t >= h
        n_seeds = np.bincount(cid, minlength=nc + 1)
        n_valid = np.bincount(cid, weights=valid[sid], minlength=nc + 1)
        owner = np.zeros(nc + 1, np.int64)  # per component: its valid seed, else its largest
        order = np.lexsort((valid[sid] * 1e12 + area[sid], cid))
        last = np.r_[cid[order][1:] != cid[order][:-1], True] if len(order) else np.zeros(0, bool)
        owner[cid[order][last]] = sid[order][last]
        new = np.where(n_valid <= 1, owner, 0).astype(np.int32)
        empty = np.flatnonzero(n_seeds == 0)[1:]
        new[empty] = np.arange(n + 1, n + 1 + len(empty))
        peak = np.r_[peak, np.zeros(len(empty), np.float32)]
        n += len(empty)
        split = n_valid >= 2
        if split.any():
            seeds[split[comp] & (seeds > 0) & ~valid[seeds]] = 0
        grown = new[comp]
        inside = grown > 0
        seeds[inside] = grown[inside]
        fresh = inside & (grown > n - len(empty))
        np.maximum.at(peak, grown[fresh], dist[fresh])
    return seeds


def damped(maps: np.ndarray, bw: float) -> np.ndarray:
    """The distance a contour model floods (``dist * clip(1 - bw * boundary)``); the distance itself otherwise."""
    return maps[1] if len(maps) == 2 else maps[1] * np.clip(1 - bw * maps[2], 0, 1)


def error_classes(true: np.ndarray, pred: np.ndarray) -> dict:
    """Pooled error classes at IoU 0.5 (see the module docstring)."""
    from napari_medseg.analysis.metrics import match_instances, overlap

    ov = overlap(true, pred)
    m = match_instances(true, pred, 0.5, ov=ov)
    ta = np.bincount(true.ravel())[ov.true_ids][:, None].astype(float)
    pa = np.bincount(pred.ravel())[ov.pred_ids][None, :].astype(float)
    inter = ov.iou * (ta + pa) / (1 + ov.iou)
    covers, holds = inter >= 0.5 * ta - 1e-6, inter >= 0.5 * pa - 1e-6
    n_cov, n_hold = covers.sum(0), holds.sum(1)
    out = dict.fromkeys(("tp", "fn merged", "fn split", "fn missed", "fn other",
                         "fp merge", "fp fragment", "fp spurious", "fp other"), 0)
    out["tp"] = m.tp
    for i in np.searchsorted(ov.true_ids, m.false_negatives):
        kind = ("merged" if (covers[i] & (n_cov >= 2)).any() else "split" if n_hold[i] >= 2
                else "missed" if inter[i].sum() < 0.5 * ta[i, 0] else "other")
        out[f"fn {kind}"] += 1
    for j in np.searchsorted(ov.pred_ids, m.false_positives):
        kind = ("merge" if n_cov[j] >= 2 else "fragment" if (holds[:, j] & (n_hold >= 2)).any()
                else "spurious" if inter[:, j].sum() < 0.5 * pa[0, j] else "other")
        out[f"fp {kind}"] += 1
    return out


def pooled_errors(labels, preds) -> dict:
    """:func:`error_classes` summed over images."""
    tot: dict = {}
    for t, p in zip(labels, preds, strict=True):
        for k, v in error_classes(t, p).items():
            tot[k] = tot.get(k, 0) + v
    return tot


def methods(rep, card_pp: dict):
    """``name -> (grid, labels_fn(maps, **point))`` of the post-processing variants for one representation."""
    from skimage.morphology import h_maxima

    contour = rep.kind == "contour"
    bw_grid = (1.0, 2.0, 3.0) if contour else (0.0,)

    def card(maps):
        return rep.instances(maps, **card_pp)

    def thresholds(maps, fg, seed, bw, min_size=16):
        f, d = maps[0] > fg, damped(maps, bw)
        return flood(f, -d, ndi.label(f & (d > seed), structure=FACE)[0], min_size)

    def tree(maps, fg, t0, h, bw):
        f, d = maps[0] > fg, damped(maps, bw)
        return flood(f, -d, tree_seeds(f, d, t0, h))

    def hmax(maps, fg, h, bw):
        f, d = maps[0] > fg, damped(maps, bw)
        mk = ndi.label(h_maxima(np.where(f, d, 0).astype(np.float32), h) & f, structure=np.ones((3, 3)))[0]
        return flood(f, -d, mk)

    def engine_h(maps, fg, h, bw):  # the engine's seed_h (same seeds as hmax, faster)
        return rep.instances(maps, **{**card_pp, "fg_threshold": fg, "seed_threshold": 0.0, "seed_h": h,
                                      "boundary_weight": bw, "min_size": 16})

    def over_boundary(maps, fg, seed, bmax):
        f = maps[0] > fg
        return flood(f, maps[2], ndi.label(f & (maps[1] > seed) & (maps[2] < bmax), structure=FACE)[0])

    out = {"card": ({}, card),
           "threshold seeds, re-tuned": ({"fg": (0.5, 0.6), "seed": (0.15, 0.2, 0.3, 0.4, 0.5), "bw": bw_grid},
                                         thresholds),
           "threshold-tree seeds": ({"fg": (0.5,), "t0": (0.1, 0.2), "h": (0.2, 0.3, 0.4, 0.5), "bw": bw_grid[:2]},
                                    tree),
           "h-maxima seeds (skimage)": ({"fg": (0.5,), "h": (0.1, 0.2, 0.3, 0.4), "bw": bw_grid[1:2] or bw_grid}, hmax),
           "h-maxima seeds (engine seed_h)": ({"fg": (0.5,), "h": (0.1, 0.2, 0.3, 0.4), "bw": bw_grid[1:2] or bw_grid},
                                              engine_h)}
    if contour:
        out["seeds dist>t & boundary<b, flood boundary"] = (
            {"fg": (0.5,), "seed": (0.15, 0.2, 0.3), "bmax": (0.1, 0.2, 0.3)}, over_boundary)
    return out


def scores(labels, preds) -> np.ndarray:
    from napari_medseg.analysis.metrics import MAP_THRESHOLDS, average_precision

    return np.array([average_precision(t, p, MAP_THRESHOLDS) for t, p in zip(labels, preds, strict=True)])


def fmt(a: np.ndarray) -> str:
    return f"{a[:, 0].mean():.3f} | {a[:, 5].mean():.3f} | {a.mean():.3f}"


def main(argv=None) -> int:
    import torch
    import train_default_models as tdm

    from napari_medseg.inference.representations import representation_of

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="LABEL=FOLDER_OR_PT")
    ap.add_argument("--cache", default=None, help="folder for the cached maps (maps_<label>_<split>.npz)")
    ap.add_argument("--val", action="store_true", help="score dsb2018/val fluorescence once at the end")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not tdm.DSB.exists():
        print(f"dataset not found: {tdm.DSB}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    hold = [s for s in tdm.splits("nuclei", 0.1)[1] if s.group == "fluo"]
    labels = [s.labels for s in hold]
    mpx = sum(t.size for t in labels) / 1e6
    print(f"train hold-out (seed 1234, 10 %): {len(hold)} fluorescence images, "
          f"{sum(int(len(np.unique(t))) - 1 for t in labels)} nuclei, {mpx:.2f} MPx")

    def cached(label, split, net, card, samples):
        f = Path(args.cache) / f"maps_{label}_{split}.npz" if args.cache else None
        if f is not None and f.is_file():
            z = np.load(f)
            return [z[str(i)] for i in range(len(samples))]
        maps = predict(net, card, samples)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            np.savez(f, **{str(i): m for i, m in enumerate(maps)})
        return maps

    models = {}
    for spec in args.model:
        label, _, path = spec.partition("=")
        net, card = load_net(Path(path))
        models[label] = (net, card, representation_of(card), cached(label, "hold", net, card, hold))


    print("\n### Seed and foreground oracles (hold-out; watershed of -dist, the card's thresholds)\n")
    print("| model | seeds | foreground | AP@0.5 | AP@0.75 | mAP |")
    print("|---|---|---|---|---|---|")
    for label, (_, card, rep, maps) in models.items():
        pp = rep.keywords(card.output.get("postprocess", {}))
        for seeds_from, fg_from in (("ours", "ours"), ("true", "ours"), ("ours", "true"), ("true", "true")):
            preds = []
            for t, m in zip(labels, maps, strict=True):
                ours = m[0] > pp["fg_threshold"]
                d = damped(m, pp.get("boundary_weight", 0.0))
                mk = true_seeds(t) if seeds_from == "true" else \
                    ndi.label(ours & (d > pp["seed_threshold"]), structure=FACE)[0]
                preds.append(flood(ours if fg_from == "ours" else t > 0, -d, mk, pp["min_size"]))
            print(f"| {label} | {seeds_from} | {fg_from} | {fmt(scores(labels, preds))} |")

    print("\n### Post-processing alternatives tuned on the hold-out\n")
    print("| model | method | tuned on hold-out | AP@0.5 | AP@0.75 | mAP | s/MPx |")
    print("|---|---|---|---|---|---|---|")
    chosen, errs = {}, {}
    for label, (_, card, rep, maps) in models.items():
        pp = rep.keywords(card.output.get("postprocess", {}))
        chosen[label] = {}
        for name, (grid, fn) in methods(rep, pp).items():
            point = tdm.best_on_grid(grid, lambda p, fn=fn, maps=maps: scores(labels, [fn(m, **p) for m in maps]),
                                     f"{label} {name} ") if grid else {}
            t = time.perf_counter()
            preds = [fn(m, **point) for m in maps]
            sec = (time.perf_counter() - t) / mpx
            a = scores(labels, preds)
            chosen[label][name] = (fn, point, float(a[:, 0].mean()))
            errs[(label, name)] = pooled_errors(labels, preds)
            print(f"| {label} | {name} | {point or pp} | {fmt(a)} | {sec:.2f} |", flush=True)

    print("\n### Errors at IoU 0.5 (hold-out, pooled over images)\n")
    keys = list(next(iter(errs.values())))
    print("| model | method | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for (label, name), tot in errs.items():
        print(f"| {label} | {name} | " + " | ".join(str(tot[k]) for k in keys) + " |")

    if not args.val:
        return 0
    val = tdm.load_split("val", ("fluo",), "grey")
    vlabels = [s.labels for s in val]
    print(f"\n### dsb2018/val fluorescence ({len(val)} images), scored once, same whole-image maps\n")
    print("| model | method | AP@0.5 | AP@0.75 | mAP |")
    print("|---|---|---|---|---|")
    for label, (net, card, _, _) in models.items():
        vmaps = cached(label, "val", net, card, val)
        rows = chosen[label]
        best = max((n for n in rows if n != "card"), key=lambda n: rows[n][2])
        names = ["card"]
        if rows[best][2] >= rows["card"][2] + 0.01:
            names += [n for n in ("threshold seeds, re-tuned", best) if n not in names]
        else:
            print(f"| {label} | (best alternative {best!r} +{rows[best][2] - rows['card'][2]:.3f} on the hold-out: "
                  f"not scored) | | | |")
        for n in names:
            fn, point, _ = rows[n]
            print(f"| {label} | {n} {point or ''} | {fmt(scores(vlabels, [fn(m, **point) for m in vmaps]))} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
