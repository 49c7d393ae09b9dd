"""Axis-aligned boxes: IoU, VOC-style matching, per-class average precision, VOC XML.

Box convention
--------------
A box is ``[y0, x0, y1, x1]`` in continuous pixel-edge coordinates of the
image: pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``, so a box that holds
exactly rows 10..19 is ``[10, ., 20, .]``, its height ``y1 - y0`` is 10 and its
area needs no ``+ 1``.  Pascal VOC XML stores 1-based inclusive pixel indices;
:func:`read_voc` converts them (``y0 = ymin - 1``, ``y1 = ymax``).

Matching and AP (definitions)
-----------------------------
:func:`match_detections` follows the Pascal VOC development kit: detections
of one class are taken in decreasing score order (ties: the earlier one
first, a stable sort); each is compared with the ground-truth box of the same
image that it overlaps most (highest IoU).  If that IoU is >= the threshold
and the box is not yet taken, the detection is a true positive and takes it;
otherwise it is a false positive (also when its best box was already taken
by a higher-scoring detection, even if another free box overlaps it enough).

:func:`average_precision` is the area under the precision-recall curve with
all-point interpolation (VOC 2010 onwards): precision is first replaced by
its running maximum from the right (the precision envelope), then summed
over every recall step, ``AP = sum_i (r_i - r_{i-1}) * p_interp(r_i)``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ParameterError, ReaderError


def as_boxes(boxes) -> np.ndarray:
    """Boxes as a float64 ``(N, 4)`` array ``[y0, x0, y1, x1]``; checks the shape."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4), np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ParameterError(f"boxes must have shape (N, 4) as [y0, x0, y1, x1], got {b.shape}")
    return b


def box_area(boxes) -> np.ndarray:
    """Area of each box (pixels²); boxes with ``y1 < y0`` or ``x1 < x0`` have area 0."""
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a, b) -> np.ndarray:
    """Intersection over union of every pair of boxes (vectorised).

    Parameters
    ----------
    a : array-like, shape (N, 4)
    b : array-like, shape (M, 4)
        Boxes ``[y0, x0, y1, x1]`` in pixels.

    Returns
    -------
    ndarray of float64, shape (N, M)
        IoU in [0, 1]; 0 where the union is empty (two degenerate boxes).
    """
    a, b = as_boxes(a), as_boxes(b)
    y0 = np.maximum(a[:, None, 0], b[None, :, 0])
    x0 = np.maximum(a[:, None, 1], b[None, :, 1])
    y1 = np.minimum(a[:, None, 2], b[None, :, 2])
    x1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def match_detections(
    boxes, scores, gt_boxes, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """VOC greedy matching of one class's detections to ground truth in one image.

    Parameters
    ----------
    boxes : array-like, shape (N, 4)
        Detected boxes ``[y0, x0, y1, x1]``.
    scores : array-like, shape (N,)
        Their scores (higher = more confident).
    gt_boxes : array-like, shape (M, 4)
        Ground-truth boxes of the same class.
    iou_threshold : float
        A detection matches when its IoU with its best box is >= this.

    Returns
    -------
    tp : ndarray of bool, shape (N,)
        Whether each detection (in the input order) is a true positive.
    matched : ndarray of int64, shape (N,)
        Index of the ground-truth box each detection took, -1 if none.
    """
    boxes, gt = as_boxes(boxes), as_boxes(gt_boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ParameterError(f"{len(boxes)} boxes but {len(scores)} scores")
    tp = np.zeros(len(boxes), bool)
    matched = np.full(len(boxes), -1, np.int64)
    if len(boxes) == 0 or len(gt) == 0:
        return tp, matched
    iou = box_iou(boxes, gt)
    taken = np.zeros(len(gt), bool)
    for i in np.argsort(-scores, kind="stable"):
        j = int(np.argmax(iou[i]))
        if iou[i, j] >= iou_threshold and not taken[j]:
            taken[j] = True
            tp[i] = True
            matched[i] = j
    return tp, matched


def average_precision(recall, precision) -> float:
    """Area under a precision-recall curve, all-point interpolation (VOC 2010+).

    Parameters
    ----------
    recall, precision : array-like, shape (K,)
        Recall (non-decreasing) and precision after each detection in score
        order.

    Returns
    -------
    float
        ``sum_i (r_i - r_{i-1}) * max_{j >= i} p_j`` with ``r_0 = 0``; 0 for an
        empty curve.
    """
    r = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    p = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@dataclass
class ClassScore:
    """Detection quality of one class over a set of images.

    Attributes
    ----------
    ap : float
        Average precision at the IoU threshold (NaN when there is no ground truth).
    n_gt, n_det, n_tp : int
        Ground-truth boxes, detections and true positives (all detections).
    precision, recall : float
        ``n_tp / n_det`` and ``n_tp / n_gt`` over all detections given (so
        they depend on the score threshold used to make them).
    """

    ap: float
    n_gt: int
    n_det: int
    n_tp: int
    precision: float
    recall: float


def evaluate_detections(
    detections: Sequence[tuple],
    ground_truth: Sequence[tuple],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
) -> dict[str, ClassScore]:
    """Per-class AP, precision and recall over many images.

    Parameters
    ----------
    detections : sequence of (boxes, classes, scores)
        One entry per image: ``(N, 4)`` boxes, N class names, N scores.
    ground_truth : sequence of (boxes, classes)
        One entry per image, same order: ``(M, 4)`` boxes and M class names.
    class_names : sequence of str
        Classes to score (others are ignored).
    iou_threshold : float
        Box IoU needed for a match.

    Returns
    -------
    dict of str to ClassScore
    """
    if len(detections) != len(ground_truth):
        raise ParameterError(f"{len(detections)} detection entries but {len(ground_truth)} ground-truth entries")
    out: dict[str, ClassScore] = {}
    for name in class_names:
        all_scores, all_tp, n_gt = [], [], 0
        for (db, dc, ds), (gb, gc) in zip(detections, ground_truth, strict=False):
            db, gb = as_boxes(db), as_boxes(gb)
            dsel = np.asarray([c == name for c in dc], bool).reshape(-1)
            gsel = np.asarray([c == name for c in gc], bool).reshape(-1)
            s = np.asarray(ds, np.float64).reshape(-1)[dsel] if dsel.size else np.zeros(0)
            tp, _ = match_detections(db[dsel] if dsel.size else db, s, gb[gsel] if gsel.size else gb, iou_threshold)
            all_scores.append(s)
            all_tp.append(tp)
            n_gt += int(gsel.sum())
        scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
        tp = np.concatenate(all_tp) if all_tp else np.zeros(0, bool)
        order = np.argsort(-scores, kind="stable")
        ctp = np.cumsum(tp[order])
        n_det = len(scores)
        n_tp = int(ctp[-1]) if n_det else 0
        if n_gt:
            rec = ctp / n_gt
            prec = ctp / np.arange(1, n_det + 1)
            ap = average_precision(rec, prec) if n_det else 0.0
        else:
            ap = float("nan")
        out[name] = ClassScore(
            ap=ap, n_gt=n_gt, n_det=n_det, n_tp=n_tp,
            precision=n_tp / n_det if n_det else float("nan"),
            recall=n_tp / n_gt if n_gt else float("nan"),
        )
    return out


def read_voc(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Boxes and class names of a Pascal VOC annotation file.

    Parameters
    ----------
    path : path
        VOC XML file (``<object><name>…</name><bndbox><xmin>…``).

    Returns
    -------
    boxes : ndarray of float64, shape (N, 4)
        ``[y0, x0, y1, x1]`` in pixel-edge coordinates (``ymin - 1, xmin - 1,
        ymax, xmax`` of the 1-based inclusive VOC indices), in file order.
    classes : list of str
        The ``<name>`` of each object, stripped.

    Raises
    ------
    ReaderError
        If the file is missing, not XML, or an object lacks its name or a
        coordinate.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ReaderError(f"no VOC annotation file at {path}") from None
    except ET.ParseError as e:
        raise ReaderError(f"{path} is not valid XML: {e}") from None
    boxes, classes = [], []
    for i, obj in enumerate(root.iter("object")):
        name = obj.findtext("name")
        bb = obj.find("bndbox")
        if name is None or bb is None:
            raise ReaderError(f"{path}: object {i} lacks <name> or <bndbox>")
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise ReaderError(f"{path}: object {i} ({name.strip()}) has a missing or non-numeric coordinate") from None
        boxes.append([y0 - 1.0, x0 - 1.0, y1, x1])
        classes.append(name.strip())
    return as_boxes(boxes), classes
