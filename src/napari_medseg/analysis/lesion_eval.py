"""Lesion-wise detection quality, the way the field measures it: sensitivity, FP per case, FROC, CPM.

The hit rule: a predicted lesion *hits* a true lesion when they share at
least one voxel (``min_iou=0``, the LUNA16 / MS-lesion convention for masks)
or when their IoU is at least ``min_iou``.  A true lesion is *detected* when a
kept predicted lesion hits it; a kept predicted lesion that hits no true
lesion is a *false positive*.  Per case::

    n_true, n_pred, detected, missed, false_positives, sensitivity,
    dice (voxels), relative volume error of each detected lesion (pred / true - 1,
    the predicted lesions hitting it together)

Over cases, :func:`froc` sweeps the score threshold: sensitivity at 1/8, 1/4,
1/2, 1, 2, 4 and 8 false positives per case (the best sensitivity whose mean
FP per case does not exceed the rate) and their mean, the CPM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError

#: False positives per case at which :func:`froc` reads the sensitivity (LUNA16's).
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class LesionCase:
    """What one case contributes to the FROC: per predicted lesion, its score and what it hits.

    Attributes
    ----------
    scores : ndarray of float, shape (n_pred,)
    hits : list of ndarray of int
        For each predicted lesion, the (0-based) true lesions it hits.
    n_true : int
    dice : float
        Voxel Dice of the two foregrounds (all predicted lesions kept).
    volume_error : ndarray of float, shape (n_true,)
        Relative volume error of each true lesion against the predicted
        lesions hitting it (NaN when missed).
    """

    scores: np.ndarray
    hits: list
    n_true: int
    dice: float
    volume_error: np.ndarray


def match_lesions(true: Any, pred: Any, scores: Sequence[float] | None = None, *,
                  min_iou: float = 0.0) -> LesionCase:
    """Which predicted lesions hit which true lesions in one case.

    Parameters
    ----------
    true, pred : array-like of int, same shape
        Lesion ids (0 background); ids need not be consecutive.
    scores : sequence of float, optional
        Score of each predicted lesion in increasing id order (default 1).
    min_iou : float
        0: any shared voxel is a hit; else IoU >= ``min_iou``.

    Returns
    -------
    LesionCase
    """
    t = np.asarray(true)
    p = np.asarray(pred)
    if t.shape != p.shape:
        raise ParameterError(f"true lesions {t.shape} and predicted lesions {p.shape} differ in shape")
    if not 0.0 <= min_iou < 1.0:
        raise ParameterError(f"min_iou must be in [0, 1), got {min_iou}")
    t_ids, t_inv = np.unique(t, return_inverse=True)
    p_ids, p_inv = np.unique(p, return_inverse=True)
    t_inv, p_inv = t_inv.ravel(), p_inv.ravel()
    nt, np_ = len(t_ids), len(p_ids)
    inter = np.bincount(t_inv * np_ + p_inv, minlength=nt * np_).reshape(nt, np_)
    t_fg = t_ids != 0
    p_fg = p_ids != 0
    inter = inter[np.ix_(t_fg, p_fg)]
    t_size = np.bincount(t_inv, minlength=nt)[t_fg]
    p_size = np.bincount(p_inv, minlength=np_)[p_fg]
    n_true, n_pred = int(t_fg.sum()), int(p_fg.sum())
    if scores is None:
        sc = np.ones(n_pred)
    else:
        sc = np.asarray(scores, np.float64).ravel()
        if len(sc) != n_pred:
            raise ParameterError(f"{len(sc)} scores for {n_pred} predicted lesions")
    if min_iou > 0:
        union = t_size[:, None] + p_size[None, :] - inter
        hit = (inter > 0) & (inter >= min_iou * union)
    else:
        hit = inter > 0
    hits = [np.flatnonzero(hit[:, j]) for j in range(n_pred)]
    fg_t, fg_p = t != 0, p != 0
    denom = int(fg_t.sum() + fg_p.sum())
    dice = 1.0 if denom == 0 else 2.0 * float((fg_t & fg_p).sum()) / denom
    vol_err = np.full(n_true, np.nan)
    for i in range(n_true):
        js = np.flatnonzero(hit[i])
        if len(js):
            vol_err[i] = float(p_size[js].sum()) / float(t_size[i]) - 1.0
    return LesionCase(sc, hits, n_true, dice, vol_err)


def case_summary(case: LesionCase, score_threshold: float = 0.0) -> dict[str, float]:
    """Counts of one case with the predicted lesions scoring at least ``score_threshold``."""
    keep = case.scores >= score_threshold
    detected = np.zeros(case.n_true, bool)
    fp = 0
    for k, h in zip(keep, case.hits, strict=True):
        if not k:
            continue
        if len(h):
            detected[h] = True
        else:
            fp += 1
    n_det = int(detected.sum())
    return {"n_true": case.n_true, "n_pred": int(keep.sum()), "detected": n_det, "missed": case.n_true - n_det,
            "false_positives": fp, "sensitivity": n_det / case.n_true if case.n_true else float("nan"),
            "dice": case.dice,
            "volume_error_median": float(np.nanmedian(case.volume_error)) if np.isfinite(case.volume_error).any()
            else float("nan")}


def froc(cases: Sequence[LesionCase], fp_rates: Sequence[float] = FP_RATES) -> dict[str, Any]:
    """FROC over cases: sensitivity at each FP-per-case rate and their mean (CPM).

    Returns
    -------
    dict
        ``fp_rates``, ``sensitivity`` (one per rate), ``cpm``, and the curve
        ``curve_fp_per_case`` / ``curve_sensitivity`` over every score threshold.
    """
    if not cases:
        raise ParameterError("froc needs at least one case")
    n_cases = len(cases)
    n_true = sum(c.n_true for c in cases)
    thresholds = np.unique(np.concatenate([c.scores for c in cases] + [np.array([np.inf])]))[::-1]
    fps, sens = [], []
    for thr in thresholds:
        det = fp = 0
        for c in cases:
            s = case_summary(c, thr)
            det += s["detected"]
            fp += s["false_positives"]
        fps.append(fp / n_cases)
        sens.append(det / n_true if n_true else float("nan"))
    fps_a, sens_a = np.asarray(fps), np.asarray(sens)
    at = []
    for r in fp_rates:
        ok = fps_a <= r
        at.append(float(sens_a[ok].max()) if ok.any() else 0.0)
    return {"fp_rates": list(map(float, fp_rates)), "sensitivity": at, "cpm": float(np.mean(at)),
            "curve_fp_per_case": fps_a.tolist(), "curve_sensitivity": sens_a.tolist()}


def lesion_report(cases: Sequence[LesionCase], names: Sequence[str], score_threshold: float = 0.0
                  ) -> dict[str, Any]:
    """Per-case rows and the overall lesion-wise figures of several cases.

    Returns
    -------
    dict
        ``rows`` (one :func:`case_summary` dict per case, with ``case``),
        ``overall``: ``n_cases``, ``n_true``, ``detected``, ``sensitivity``,
        ``fp_per_case``, ``dice_mean``, ``volume_error_median`` and the FROC
        (``froc_sensitivity`` at :data:`FP_RATES`, ``cpm``).
    """
    if len(cases) != len(names):
        raise ParameterError(f"{len(names)} names for {len(cases)} cases")
    rows = [{"case": n, **case_summary(c, score_threshold)} for n, c in zip(names, cases, strict=True)]
    n_true = sum(r["n_true"] for r in rows)
    det = sum(r["detected"] for r in rows)
    errs = np.concatenate([c.volume_error for c in cases]) if cases else np.zeros(0)
    f = froc(cases)
    overall = {
        "n_cases": len(cases), "n_true": n_true, "detected": det,
        "sensitivity": det / n_true if n_true else float("nan"),
        "fp_per_case": sum(r["false_positives"] for r in rows) / len(cases),
        "dice_mean": float(np.mean([c.dice for c in cases])),
        "volume_error_median": float(np.nanmedian(errs)) if np.isfinite(errs).any() else float("nan"),
        "froc_fp_rates": f["fp_rates"], "froc_sensitivity": f["sensitivity"], "cpm": f["cpm"],
    }
    return {"rows": rows, "overall": overall}


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`lesion_report` as text, one line per case then the overall lines."""
    lines = ["case | true | detected | missed | FP | sensitivity | Dice | median volume error"]
    for r in report["rows"]:
        lines.append(f"{r['case']} | {r['n_true']} | {r['detected']} | {r['missed']} | {r['false_positives']} | "
                     f"{r['sensitivity']:.3f} | {r['dice']:.3f} | {r['volume_error_median']:+.3f}")
    o = report["overall"]
    lines.append(f"overall: {o['n_cases']} cases, {o['n_true']} lesions, sensitivity {o['sensitivity']:.3f}, "
                 f"{o['fp_per_case']:.2f} FP/case, mean Dice {o['dice_mean']:.3f}, "
                 f"median volume error {o['volume_error_median']:+.3f}")
    fr = ", ".join(f"{r:g}: {s:.3f}" for r, s in zip(o["froc_fp_rates"], o["froc_sensitivity"], strict=True))
    lines.append(f"FROC sensitivity at FP/case {{{fr}}}; CPM {o['cpm']:.3f}")
    return "\n".join(lines)


__all__ = ["FP_RATES", "LesionCase", "case_summary", "format_report", "froc", "lesion_report", "match_lesions"]
