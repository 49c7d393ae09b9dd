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


def evaluate(model, case_dir: Path, threshold: float, candidate_threshold: float, tta: bool = False,
             save_probabilities: Path | None = None) -> dict:
    """All figures of one case as a dict (see the module docstring)."""
    from skimage.measure import label as cc_label

    from napari_medseg.analysis.lesion_eval import case_summary, froc, match_lesions
    from napari_medseg.analysis.lesions import lesion_table, lesions_from_probabilities
    from napari_medseg.api import segment
    from napari_medseg.io.radiology import read_nifti

    vol = read_nifti(case_dir / FLAIR)[0]
    gold = np.asarray(read_nifti(case_dir / GOLD)[0].data) > 0
    geo = vol.spatial_geometry()
    t = time.perf_counter()
    _, probs = segment(vol, model, return_probabilities=True, device="cpu", tta=tta)
    seconds = time.perf_counter() - t
    if save_probabilities is not None:
        np.save(save_probabilities, np.asarray(probs[1]))
    names = ["background", "ms_lesion"]
    true = cc_label(gold, connectivity=3)
    t_sizes = np.bincount(true.ravel())[1:]

    les = lesions_from_probabilities(probs, geo, names, threshold=threshold)
    case = match_lesions(true, les.labels, les.scores)
    s = case_summary(case)
    table = lesion_table(les.labels, geo, lesions=les, properties=("bbox", "area"))
    vol_err = case.volume_error[np.isfinite(case.volume_error)]

    cand = lesions_from_probabilities(probs, geo, names, threshold=candidate_threshold)
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
        "case": case_dir.name, "threshold": threshold, "candidate_threshold": candidate_threshold, "tta": tta,
        "n_true": s["n_true"], "n_pred": s["n_pred"], "detected": s["detected"],
        "sensitivity": s["sensitivity"], "false_positives": s["false_positives"],
        "precision": (s["n_pred"] - s["false_positives"]) / s["n_pred"] if s["n_pred"] else float("nan"),
        "dice": s["dice"],
        "true_volume_ml": float(gold.sum() * geo.voxel_size / 1000.0),
        "pred_volume_ml": float(table["volume_ml"].sum()) if len(table) else 0.0,
        "volume_error_median": float(np.median(vol_err)) if len(vol_err) else float("nan"),
        "volume_abs_error_median": float(np.median(np.abs(vol_err))) if len(vol_err) else float("nan"),
        "froc_fp_rates": fr["fp_rates"], "froc_sensitivity": fr["sensitivity"], "cpm": fr["cpm"],
        "n_candidates": len(cand), "n_candidates_score_1": int((cand.scores >= 1.0).sum()),
        "froc_sensitivity_soft_volume": fr_soft["sensitivity"], "cpm_soft_volume": fr_soft["cpm"],
        "seconds_per_volume": seconds,
    }
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
    ap.add_argument("--tta", action="store_true", help="engine test-time augmentation (4 flips)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--save-probabilities", type=Path, default=None, help="write the lesion probability (.npy)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    case_dir = Path(args.case) if Path(args.case).is_dir() else args.data / args.case
    model = Path(args.model) if Path(args.model).is_dir() else args.model
    res = evaluate(model, case_dir, args.threshold, args.candidate_threshold, args.tta, args.save_probabilities)
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
