"""Instance segmentation scores: object matching by IoU, AP (DSB definition), Dice.

All functions take integer label images of the same shape (2D or 3D, any
integer dtype, 0 = background, object ids need not be consecutive) and work on
the contingency table of (true id, predicted id) pixel pairs, built with one
``np.unique`` over the overlapping pixels: no per-object loop.

The average precision follows the 2018 Data Science Bowl / StarDist
definition, ``AP(t) = TP / (TP + FP + FN)`` at IoU threshold ``t``, where a
true and a predicted object match one-to-one when their IoU exceeds ``t``
(optimal assignment; for ``t >= 0.5`` a match is unique anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

#: IoU thresholds 0.5, 0.55, ..., 0.9 (9 values) used for the mean AP.
MAP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))


@dataclass(frozen=True)
class Overlap:
    """IoU table between the objects of two label images.

    Attributes
    ----------
    true_ids, pred_ids : ndarray of int64
        Object ids present in each image (sorted, background excluded).
    iou : ndarray of float64, shape (len(true_ids), len(pred_ids))
        Intersection over union of every pair (0 where they do not touch).
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    iou: np.ndarray


def _check(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true, pred = np.asarray(true), np.asarray(pred)
    if true.shape != pred.shape:
        raise ParameterError(f"label images differ in shape: true {true.shape}, pred {pred.shape}")
    for name, a in (("true", true), ("pred", pred)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ParameterError(f"{name} must be an integer label image, got dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise ParameterError(f"{name} has negative labels; labels must be >= 0")
    return true, pred


def overlap(true: np.ndarray, pred: np.ndarray) -> Overlap:
    """IoU of every (true, predicted) object pair, vectorised.

    Parameters
    ----------
    true, pred : ndarray of int, same shape
        Label images, 0 = background.

    Returns
    -------
    Overlap
    """
    true, pred = _check(true, pred)
    t = true.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    true_ids, t_area = np.unique(t[t > 0], return_counts=True)
    pred_ids, p_area = np.unique(p[p > 0], return_counts=True)
    iou = np.zeros((len(true_ids), len(pred_ids)), np.float64)
    both = (t > 0) & (p > 0)
    if both.any():
        pairs, inter = np.unique(np.stack([t[both], p[both]]), axis=1, return_counts=True)
        ti = np.searchsorted(true_ids, pairs[0])
        pi = np.searchsorted(pred_ids, pairs[1])
        iou[ti, pi] = inter / (t_area[ti] + p_area[pi] - inter)
    return Overlap(true_ids, pred_ids, iou)


@dataclass(frozen=True)
class Matching:
    """One-to-one matching of true and predicted objects at one IoU threshold.

    Attributes
    ----------
    threshold : float
    pairs : ndarray of int64, shape (TP, 2)
        Matched ``(true id, predicted id)`` pairs.
    ious : ndarray of float64, shape (TP,)
        IoU of each matched pair.
    false_negatives : ndarray of int64
        True object ids left unmatched (missed objects).
    false_positives : ndarray of int64
        Predicted object ids left unmatched (spurious objects).
    """

    threshold: float
    pairs: np.ndarray
    ious: np.ndarray
    false_negatives: np.ndarray
    false_positives: np.ndarray

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return len(self.false_positives)

    @property
    def fn(self) -> int:
        return len(self.false_negatives)

    @property
    def ap(self) -> float:
        """TP / (TP + FP + FN); 1.0 when both images are empty."""
        n = self.tp + self.fp + self.fn
        return 1.0 if n == 0 else self.tp / n


def _match(ov: Overlap, threshold: float) -> Matching:
    from scipy.optimize import linear_sum_assignment

    if not 0.0 <= threshold <= 1.0:
        raise ParameterError(f"IoU threshold must be in [0, 1], got {threshold}")
    iou = ov.iou
    ti = pi = np.zeros(0, np.int64)
    if iou.size:
        # Only rows/columns with a candidate above the threshold take part.
        ok = iou > threshold
        rows = np.flatnonzero(ok.any(axis=1))
        cols = np.flatnonzero(ok.any(axis=0))
        if len(rows) and len(cols):
            sub = np.where(ok[np.ix_(rows, cols)], iou[np.ix_(rows, cols)], 0.0)
            r, c = linear_sum_assignment(sub, maximize=True)
            keep = sub[r, c] > threshold
            ti, pi = rows[r[keep]], cols[c[keep]]
    matched_t = np.zeros(len(ov.true_ids), bool)
    matched_t[ti] = True
    matched_p = np.zeros(len(ov.pred_ids), bool)
    matched_p[pi] = True
    return Matching(
        threshold=float(threshold),
        pairs=np.stack([ov.true_ids[ti], ov.pred_ids[pi]], axis=1) if len(ti) else np.zeros((0, 2), np.int64),
        ious=iou[ti, pi],
        false_negatives=ov.true_ids[~matched_t],
        false_positives=ov.pred_ids[~matched_p],
    )


def match_instances(true: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5,
                    ov: Overlap | None = None) -> Matching:
    """Match true and predicted objects one-to-one where IoU > ``iou_threshold``.

    Uses the optimal (Hungarian) assignment that maximises the summed IoU of
    the pairs above the threshold (``scipy.optimize.linear_sum_assignment``).

    Parameters
    ----------
    true, pred : ndarray of int, same shape
        Label images, 0 = background.
    iou_threshold : float
        A pair counts as a match only when its IoU is strictly greater.
    ov : Overlap, optional
        ``overlap(true, pred)`` when the caller already has it (not recomputed).

    Returns
    -------
    Matching
        Matched pairs, their IoUs, and the unmatched (FN, FP) object ids.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[1, 1, 0, 2, 2]])
    >>> p = np.array([[3, 3, 0, 0, 4]])
    >>> m = match_instances(t, p, 0.5)
    >>> m.pairs.tolist(), m.false_negatives.tolist(), m.false_positives.tolist()
    ([[1, 3]], [2], [4])
    """
    return _match(overlap(true, pred) if ov is None else ov, iou_threshold)


def errors(true: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the missed and spurious objects, e.g. to highlight them in napari.

    Returns
    -------
    false_negative_ids : ndarray of int64
        Ids in ``true`` with no predicted object above the IoU threshold.
    false_positive_ids : ndarray of int64
        Ids in ``pred`` with no true object above the IoU threshold.
    """
    m = match_instances(true, pred, iou_threshold)
    return m.false_negatives, m.false_positives


def average_precision(
    true: np.ndarray, pred: np.ndarray, thresholds: float | Sequence[float] = MAP_THRESHOLDS
) -> np.ndarray | float:
    """DSB average precision ``TP / (TP + FP + FN)`` at one or more IoU thresholds.

    Parameters
    ----------
    true, pred : ndarray of int, same shape
        Label images, 0 = background.
    thresholds : float or sequence of float
        IoU threshold(s); default 0.5, 0.55, ..., 0.9.

    Returns
    -------
    float or ndarray of float64
        One AP per threshold (a float when a single float was given).  Both
        images empty scores 1.0.
    """
    ov = overlap(true, pred)
    if np.ndim(thresholds) == 0:
        return _match(ov, float(thresholds)).ap
    return np.array([_match(ov, float(t)).ap for t in thresholds])


def counts(true: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = MAP_THRESHOLDS,
           ov: Overlap | None = None) -> np.ndarray:
    """``(TP, FP, FN)`` per threshold, shape (len(thresholds), 3), int64.

    Sum these over images to pool a data set (as StarDist's ``by_image=False``).
    ``ov``: ``overlap(true, pred)`` when the caller already has it.
    """
    if ov is None:
        ov = overlap(true, pred)
    out = np.zeros((len(thresholds), 3), np.int64)
    for i, t in enumerate(thresholds):
        m = _match(ov, float(t))
        out[i] = (m.tp, m.fp, m.fn)
    return out


def mean_ap(true: np.ndarray, pred: np.ndarray) -> float:
    """Mean of :func:`average_precision` over IoU 0.5, 0.55, ..., 0.9."""
    return float(np.mean(average_precision(true, pred, MAP_THRESHOLDS)))


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Pixel Dice of the foregrounds (``label > 0``): 2|A∩B| / (|A| + |B|).

    Returns 1.0 when both foregrounds are empty.
    """
    true, pred = _check(true, pred)
    a, b = true > 0, pred > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s
