"""Benchmark the ``ms-lesions`` model on one MS case: lesion-wise detection, FROC, Dice, volume, time.

The FLAIR volume is read with :func:`napari_medseg.io.radiology.read_nifti`
and segmented with :func:`napari_medseg.segment` (``return_probabilities=True``,
CPU, the engine's tiling, normalisation and resampling).  Lesions are then made
the way a user gets them (:func:`napari_medseg.analysis.lesions.lesions_from_probabilities`,
3D components, 26-connectivity, score = mean lesion probability over the
lesion; :func:`~napari_medseg.analysis.lesions.lesion_table` for the volumes)
and compared with the consensus mask's 26-connected components by
:mod:`napari_medseg.analysis.lesion_eval` (a hit is any shared voxel).

Figures (one per line, ``name: value``):

* at the operating point (lesion probability > ``--threshold``, default 0.5
  = the arg-max): lesion-wise sensitivity, false positives per case,
  precision, voxel Dice, predicted / true lesion volume (mL), median and
  median absolute relative volume error of the detected lesions;
* FROC: candidates are the components above ``--candidate-threshold``
  (default 0.25, fixed before any measurement), swept by their score (the
  mean lesion probability over the candidate, ``Lesions.scores``); sensitivity
  at 1/8, 1/4, 1/2, 1, 2, 4, 8 FP per case and their mean (CPM).  The number
  of candidates scoring 1.0 is printed (ties: the engine's float16
  probabilities round to 1.0 above ~0.9995; with the old max-probability
  score many tied); the same FROC with candidates ranked by soft volume
  (sum of the lesion probability over the candidate) is printed beside it;
* by true lesion size (< 10, 10-99, >= 100 voxels) the sensitivity at the
  operating point;
* seconds per volume (segmentation only; first call includes loading the model).

* the false positives at the operating point (:func:`false_positive_sizes`):
  how many have < 5, 5-9, 10-99, >= 100 voxels, how many span one slice, and
  their depth under the brain surface (mm; the skull-stripped FLAIR's
  non-zero voxels are the brain).

``--tune-on CASE:Z0-Z1,...`` first picks the voxel threshold, the smallest
lesion volume and the lowest lesion score on held-out slabs of *training*
cases (:func:`tune`: best mean of voxel Dice and lesion-wise F1, pooled over
the slabs), then measures ``--case`` at that operating point (the FROC
candidates then also drop lesions under the chosen volume);
``--tune-min-size MM3`` fixes the smallest volume instead of choosing it.

Run::

    python benchmarks/bench_ms_lesions.py --model ms-lesions --case patient07 [--json out.json]

``--model`` is a model name or folder; ``--case`` a folder name under
``--data`` (default ``../shared/datasets/ms_lesions``) holding the FLAIR and
``GOLD_STANDARD`` files of the Lesjak et al. 2017 database, or a path to such
a folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))
FLAIR = "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
GOLD = "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"
SIZE_BINS = ((0, 10, "<10 vox"), (10, 100, "10-99 vox"), (100, None, ">=100 vox"))
#: Smallest true lesion the MSSEG 2016 / 2021 challenges count (mm³); also reported against.
MSSEG_MIN_MM3 = 3.0
#: Size bins (voxels) of the false positives' table.
FP_BINS = ((0, 5, "<5 vox"), (5, 10, "5-9 vox"), (10, 100, "10-99 vox"), (100, None, ">=100 vox"))


def predict(model, case_dir: Path, tta: bool = False, cache: Path | None = None) -> tuple:
    """``(probabilities (2, Z, Y, X) float16, geometry, gold mask (Z, Y, X) bool, seconds)`` of one case.

    ``cache``: a folder where the probabilities (``.npy``) and the seconds they took are kept per model
    folder, case and ``tta``, so that the next operating point or FROC of the same model needs no network run
    (the seconds reported are the first run's).
    """
    from napari_medseg.api import segment
    from napari_medseg.io.radiology import read_nifti

    vol = read_nifti(case_dir / FLAIR)[0]
    gold = np.asarray(read_nifti(case_dir / GOLD)[0].data) > 0
    key = None
    if cache is not None:
        import hashlib

        from napari_medseg.models.registry import resolve_model

        folder = Path(resolve_model(model).path).resolve()
        stamp = (folder / "weights.safetensors").stat().st_mtime_ns
        key = hashlib.sha1(f"{folder}|{stamp}|{case_dir.resolve()}|{tta}".encode()).hexdigest()[:16]
        hit = cache / f"{key}.npy"
        if hit.is_file():
            meta = json.loads((cache / f"{key}.json").read_text(encoding="utf-8"))
            return np.load(hit), vol.spatial_geometry(), gold, float(meta["seconds"])
    t = time.perf_counter()
    _, probs = segment(vol, model, return_probabilities=True, device="cpu", tta=tta)
    seconds = time.perf_counter() - t
    if key is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{key}.npy", np.asarray(probs))
        (cache / f"{key}.json").write_text(json.dumps({"model": str(model), "case": str(case_dir), "tta": tta,
                                                       "seconds": seconds}) + "\n", encoding="utf-8")
    return probs, vol.spatial_geometry(), gold, seconds


def operating_point(probs, geo, true: np.ndarray, threshold: float, min_size: float = 0.0,
                    score_threshold: float = 0.0) -> dict:
    """Lesions at one setting (voxel threshold, smallest volume in mm³, lowest score) against ``true`` lesions.

    Returns the lesions (``lesions``, ``case``: its :class:`LesionCase`) and pooled counts: ``detected``,
    ``n_true``, ``fp``, ``n_pred``, ``inter`` and ``sum`` (voxels, for Dice).
    """
    from napari_medseg.analysis.lesion_eval import case_summary, match_lesions
    from napari_medseg.analysis.lesions import lesions_from_probabilities

    les = lesions_from_probabilities(probs, geo, ["background", "ms_lesion"], threshold=threshold,
                                     min_size=min_size)
    keep = np.flatnonzero(les.scores >= score_threshold) + 1
    relabel = np.zeros(len(les) + 1, np.int64)
    relabel[keep] = np.arange(1, len(keep) + 1)
    labels = relabel[les.labels]
    case = match_lesions(true, labels, les.scores[keep - 1])
    s = case_summary(case)
    fg = labels > 0
    return {"labels": labels, "lesions": les, "case": case, "detected": s["detected"], "n_true": s["n_true"],
            "fp": s["false_positives"], "n_pred": s["n_pred"], "inter": int((fg & (true > 0)).sum()),
            "sum": int(fg.sum() + (true > 0).sum())}


#: Settings :func:`tune` tries: voxel threshold, smallest lesion (mm³), lowest lesion score (mean probability).
TUNE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
TUNE_MIN_SIZE_MM3 = (0.0, 3.0, 5.0, 10.0, 20.0)
TUNE_SCORES = (0.0, 0.7, 0.8, 0.9, 0.95)


def tune(cases: list[tuple], min_sizes: tuple[float, ...] = TUNE_MIN_SIZE_MM3) -> tuple[dict, list[dict]]:
    """The setting with the best mean of voxel Dice and lesion-wise F1 pooled over held-out slabs of cases.

    ``cases``: ``(probs, geo, gold, slabs)`` per case, ``slabs`` its ``(z0, z1)`` inclusive ranges (slices
    the model was not trained on).  Each slab is a separate little volume (lesions cut at its ends).  Ties
    keep the earlier (gentler) setting.  ``min_sizes``: the smallest volumes (mm³) tried.  Returns the chosen
    setting and one row per setting tried.
    """
    from skimage.measure import label as cc_label

    parts = []
    for probs, geo, gold, slabs in cases:
        p = np.asarray(probs, np.float32)
        parts += [(p[:, a:b + 1], geo, cc_label(gold[a:b + 1], connectivity=3)) for a, b in slabs]
    rows = []
    for thr in TUNE_THRESHOLDS:
        for ms in min_sizes:
            for st in TUNE_SCORES:
                if 0 < st <= thr:  # every lesion's mean probability is above the voxel threshold already
                    continue
                c = dict.fromkeys(("detected", "n_true", "fp", "n_pred", "inter", "sum"), 0)
                for ps, geo, true in parts:
                    r = operating_point(ps, geo, true, thr, ms, st)
                    for k in c:
                        c[k] += r[k]
                sens = c["detected"] / c["n_true"] if c["n_true"] else 1.0
                prec = (c["n_pred"] - c["fp"]) / c["n_pred"] if c["n_pred"] else 0.0
                f1 = 2 * sens * prec / (sens + prec) if sens + prec else 0.0
                dice = 2 * c["inter"] / c["sum"] if c["sum"] else 1.0
                rows.append({"threshold": thr, "min_size_mm3": ms, "score_threshold": st, "sensitivity": sens,
                             "false_positives": c["fp"], "precision": prec, "f1": f1, "dice": dice,
                             "score": 0.5 * (dice + f1)})
    best = max(rows, key=lambda r: r["score"])  # max keeps the first of equal scores
    return best, rows


def false_positive_sizes(labels: np.ndarray, case, brain: np.ndarray, spacing) -> dict:
    """What the false positives are: counts by size (voxels), one-slice ones, depth under the brain surface.

    ``labels``: predicted lesion ids ``1..n`` (Z, Y, X) in the order of ``case.hits``; ``brain``: the
    skull-stripped FLAIR's non-zero voxels; ``spacing``: (z, y, x) in mm.  The depth of a lesion is the largest
    distance (mm) of its voxels to the nearest voxel outside the brain.
    """
    from scipy import ndimage as ndi

    n = len(case.hits)
    fp = np.asarray([len(h) == 0 for h in case.hits], bool)
    ids = labels.ravel().astype(np.int64)
    size = np.bincount(ids, minlength=n + 1)[1:]
    depth_map = ndi.distance_transform_edt(brain, sampling=spacing)
    depth = np.zeros(n + 1)
    np.maximum.at(depth, ids, depth_map.ravel())
    depth = depth[1:]
    slices = np.zeros(n, np.int64)
    for i, sl in enumerate(ndi.find_objects(labels.astype(np.int64), max_label=n)):
        if sl is not None:
            slices[i] = sl[0].stop - sl[0].start
    out = {}
    for lo, hi, name in FP_BINS:
        out[f"fp {name}"] = int((fp & (size >= lo) & (size < (hi if hi is not None else np.inf))).sum())
    out["fp one slice"] = int((fp & (slices == 1)).sum())
    out["fp depth_mm median"] = float(np.median(depth[fp])) if fp.any() else float("nan")
    out["fp within 5 mm of the brain surface"] = int((fp & (depth <= 5.0)).sum())
    out["tp depth_mm median"] = float(np.median(depth[~fp])) if (~fp).any() else float("nan")
    return out


def evaluate(model, case_dir: Path, threshold: float, candidate_threshold: float, tta: bool = False,
             save_probabilities: Path | None = None, min_size: float = 0.0, score_threshold: float = 0.0,
             predicted: tuple | None = None) -> dict:
    """All figures of one case as a dict (see the module docstring); ``predicted``: :func:`predict`'s result."""
    from skimage.measure import label as cc_label

    from napari_medseg.analysis.lesion_eval import froc, match_lesions
    from napari_medseg.analysis.lesions import lesion_table, lesions_from_probabilities

    probs, geo, gold, seconds = predicted if predicted is not None else predict(model, case_dir, tta)
    if save_probabilities is not None:
        np.save(save_probabilities, np.asarray(probs[1]))
    names = ["background", "ms_lesion"]
    true = cc_label(gold, connectivity=3)
    t_sizes = np.bincount(true.ravel())[1:]

    op = operating_point(probs, geo, true, threshold, min_size, score_threshold)
    case = op["case"]
    table = lesion_table(op["labels"], geo, properties=("bbox", "area"))
    vol_err = case.volume_error[np.isfinite(case.volume_error)]

    cand = lesions_from_probabilities(probs, geo, names, threshold=candidate_threshold, min_size=min_size)
    fr = froc([match_lesions(true, cand.labels, cand.scores)])
    # a second ranking: soft volume (sum of the lesion probability over the candidate, voxels)
    p_les = np.asarray(probs[1], np.float32).ravel()
    ids = cand.labels.ravel().astype(np.int64)
    soft = np.bincount(ids, weights=p_les, minlength=len(cand) + 1)[1:]
    fr_soft = froc([match_lesions(true, cand.labels, soft)])

    detected = np.zeros(len(t_sizes), bool)
    for h in case.hits:
        detected[h] = True
    out = {
        "case": case_dir.name, "threshold": threshold, "min_size_mm3": min_size,
        "score_threshold": score_threshold, "candidate_threshold": candidate_threshold, "tta": tta,
        "n_true": op["n_true"], "n_pred": op["n_pred"], "detected": op["detected"],
        "sensitivity": op["detected"] / op["n_true"] if op["n_true"] else float("nan"),
        "false_positives": op["fp"],
        "precision": (op["n_pred"] - op["fp"]) / op["n_pred"] if op["n_pred"] else float("nan"),
        "dice": 2 * op["inter"] / op["sum"] if op["sum"] else 1.0,
        "true_volume_ml": float(gold.sum() * geo.voxel_size / 1000.0),
        "pred_volume_ml": float(table["volume_ml"].sum()) if len(table) else 0.0,
        "volume_error_median": float(np.median(vol_err)) if len(vol_err) else float("nan"),
        "volume_abs_error_median": float(np.median(np.abs(vol_err))) if len(vol_err) else float("nan"),
        "froc_fp_rates": fr["fp_rates"], "froc_sensitivity": fr["sensitivity"], "cpm": fr["cpm"],
        "n_candidates": len(cand), "n_candidates_score_1": int((cand.scores >= 1.0).sum()),
        "froc_sensitivity_soft_volume": fr_soft["sensitivity"], "cpm_soft_volume": fr_soft["cpm"],
        "seconds_per_volume": seconds,
    }
    from napari_medseg.io.radiology import read_nifti

    brain = np.asarray(read_nifti(case_dir / FLAIR)[0].data) > 0
    out.update(false_positive_sizes(op["labels"], case, brain, [float(v) for v in geo.spacing]))
    # the MSSEG challenges' convention: true lesions under 3 mm³ are not counted
    big = t_sizes * float(geo.voxel_size) >= MSSEG_MIN_MM3
    out["n_true >=3 mm3"] = int(big.sum())
    out["sensitivity true >=3 mm3"] = float(detected[big].mean()) if big.any() else float("nan")
    for lo, hi, name in SIZE_BINS:
        sel = (t_sizes >= lo) & (t_sizes < (hi if hi is not None else np.inf))
        out[f"sensitivity {name}"] = float(detected[sel].mean()) if sel.any() else float("nan")
        out[f"n_true {name}"] = int(sel.sum())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ms-lesions", help="model name or folder")
    ap.add_argument("--case", default="patient07", help="case folder name under --data, or a path")
    ap.add_argument("--data", type=Path, default=DATASETS / "ms_lesions")
    ap.add_argument("--threshold", type=float, default=0.5, help="lesion probability of the operating point")
    ap.add_argument("--candidate-threshold", type=float, default=0.25, help="candidates of the FROC sweep")
    ap.add_argument("--min-size", type=float, default=0.0, help="smallest lesion kept (mm³)")
    ap.add_argument("--score-threshold", type=float, default=0.0, help="lowest lesion score kept")
    ap.add_argument("--tune-on", default=None, metavar="CASE:Z0-Z1,...",
                    help="choose --threshold, --min-size and --score-threshold on these held-out slabs of a "
                         "training case (e.g. patient19:62-69,patient19:112-119; slabs of several training cases "
                         "are pooled), then measure --case with them")
    ap.add_argument("--tune-min-size", type=float, default=None, metavar="MM3",
                    help="with --tune-on: fix the smallest lesion volume (mm³, e.g. 3) instead of choosing it")
    ap.add_argument("--tta", action="store_true", help="engine test-time augmentation (4 flips)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--cache", type=Path, default=None, metavar="DIR",
                    help="keep the probabilities of each model / case here and reuse them (no second network run)")
    ap.add_argument("--save-probabilities", type=Path, default=None, help="write the lesion probability (.npy)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    case_dir = Path(args.case) if Path(args.case).is_dir() else args.data / args.case
    model = Path(args.model) if Path(args.model).is_dir() else args.model
    if args.tune_on:
        slabs: dict[str, list[tuple[int, int]]] = {}
        for part in filter(None, (q.strip() for q in args.tune_on.split(","))):
            name, rng = part.split(":")
            a, b = (int(v) for v in rng.split("-"))
            slabs.setdefault(name, []).append((min(a, b), max(a, b)))
        cases = []
        for name, zs in slabs.items():
            probs, geo, gold, _ = predict(model, Path(name) if Path(name).is_dir() else args.data / name, args.tta,
                                          args.cache)
            cases.append((probs, geo, gold, zs))
        sizes = TUNE_MIN_SIZE_MM3 if args.tune_min_size is None else (args.tune_min_size,)
        best, _rows = tune(cases, sizes)
        print(f"tuned on {args.tune_on}: threshold {best['threshold']} min_size_mm3 {best['min_size_mm3']} "
              f"score_threshold {best['score_threshold']} (slabs: dice {best['dice']:.4f} sensitivity "
              f"{best['sensitivity']:.4f} FP {best['false_positives']} f1 {best['f1']:.4f})", flush=True)
        args.threshold, args.min_size, args.score_threshold = (best["threshold"], best["min_size_mm3"],
                                                               best["score_threshold"])
        tuned = {"tune_on": args.tune_on, "tuned_on_slabs": {k: best[k] for k in (
            "dice", "sensitivity", "false_positives", "precision", "f1")}}
    else:
        tuned = {}
    res = evaluate(model, case_dir, args.threshold, args.candidate_threshold, args.tta, args.save_probabilities,
                   args.min_size, args.score_threshold, predict(model, case_dir, args.tta, args.cache))
    res.update(tuned)
    res["model"] = str(args.model)
    res["command"] = "python benchmarks/bench_ms_lesions.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for k, v in res.items():
        if k.startswith("froc_"):
            continue
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    for r, sv, ss in zip(res["froc_fp_rates"], res["froc_sensitivity"], res["froc_sensitivity_soft_volume"],
                         strict=True):
        print(f"FROC sensitivity at {r:g} FP/case: {sv:.4f} (score: mean probability), {ss:.4f} (soft volume)")
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
