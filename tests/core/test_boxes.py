"""Box IoU, VOC matching, all-point AP and VOC XML parsing on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.analysis.boxes import (
    average_precision,
    box_area,
    box_iou,
    evaluate_detections,
    match_detections,
    read_voc,
)
from napari_medseg.errors import ParameterError, ReaderError


def test_box_iou_hand_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [10, 0, 20, 10], [0, 0, 10, 20], [20, 20, 30, 30]], float)
    iou = box_iou(a, b)
    assert iou.shape == (2, 5)
    # overlap 5x5 = 25, union 100 + 100 - 25 = 175
    np.testing.assert_allclose(iou[0], [25 / 175, 1.0, 0.0, 100 / 200, 0.0])
    np.testing.assert_allclose(iou[0], iou[1])
    np.testing.assert_allclose(box_iou(b, a), iou.T)


def test_box_iou_degenerate_and_empty():
    z = np.array([[3, 3, 3, 3]], float)  # zero area
    assert box_iou(z, z)[0, 0] == 0.0
    assert box_iou(z, [[0, 0, 10, 10]])[0, 0] == 0.0
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    assert box_area([[2, 1, 5, 9], [5, 5, 4, 9]]).tolist() == [24.0, 0.0]
    with pytest.raises(ParameterError):
        box_iou([[0, 0, 1]], [[0, 0, 1, 1]])


def test_match_voc_rule_best_box_taken_is_false_positive():
    gt = np.array([[0, 0, 10, 10], [0, 3, 10, 13]], float)
    # det 0 (score .9) and det 1 (score .8) both overlap gt 0 best; det 1 also has IoU 2/3 with gt 1
    det = np.array([[0, 0, 10, 10], [0, 1, 10, 11]], float)
    iou = box_iou(det, gt)
    assert iou[1, 0] > iou[1, 1] >= 0.5
    tp, matched = match_detections(det, [0.8, 0.9], gt)  # det 1 first (higher score)
    assert tp.tolist() == [False, True]
    assert matched.tolist() == [-1, 0]
    tp, matched = match_detections(det, [0.9, 0.8], gt)
    assert tp.tolist() == [True, False]  # VOC: det 1's best box is taken -> FP
    assert matched.tolist() == [0, -1]


def test_match_threshold_is_inclusive():
    gt = np.array([[0, 0, 10, 10]], float)
    det = np.array([[0, 0, 10, 20]], float)  # IoU exactly 0.5
    assert match_detections(det, [1.0], gt, 0.5)[0].tolist() == [True]
    assert match_detections(det, [1.0], gt, 0.51)[0].tolist() == [False]
    assert match_detections(np.zeros((0, 4)), [], gt)[0].shape == (0,)


def test_average_precision_all_point():
    # TP, FP, TP with 3 ground-truth boxes: recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3
    ap = average_precision([1 / 3, 1 / 3, 2 / 3], [1.0, 0.5, 2 / 3])
    assert ap == pytest.approx(1 / 3 * 1.0 + 1 / 3 * 2 / 3)
    assert average_precision([0.5, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    # envelope: the FP first lowers precision to 0 at recall 0, then a TP reaches recall 1 at precision 1/2
    assert average_precision([0.0, 1.0], [0.0, 0.5]) == pytest.approx(0.5)
    assert average_precision([], []) == 0.0


def test_evaluate_detections_two_images():
    gt = [
        (np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), ["a", "a"]),
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), ["a", "b"]),
    ]
    det = [
        (np.array([[0, 0, 10, 10], [40, 40, 45, 45]], float), ["a", "a"], [0.9, 0.7]),  # TP .9, FP .7
        (np.array([[1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 9, 9]], float), ["a", "a", "b"], [0.8, 0.6, 0.5]),
    ]
    res = evaluate_detections(det, gt, ["a", "b", "c"])
    # class a, by score: .9 TP, .8 TP (IoU 9/11), .7 FP, .6 FP (box of class b) -> 3 gt
    # recall 1/3, 2/3, 2/3, 2/3; precision 1, 1, 2/3, 1/2 -> AP = 2/3
    assert res["a"].ap == pytest.approx(2 / 3)
    assert (res["a"].n_gt, res["a"].n_det, res["a"].n_tp) == (3, 4, 2)
    assert res["a"].precision == pytest.approx(0.5) and res["a"].recall == pytest.approx(2 / 3)
    # class b: one detection of IoU 0 with its box
    assert res["b"].ap == 0.0 and res["b"].n_tp == 0 and res["b"].n_gt == 1
    assert np.isnan(res["c"].ap) and res["c"].n_gt == 0


VOC = """<annotation>
  <filename>x.jpg</filename>
  <size><width>640</width><height>480</height><depth>3</depth></size>
  <object><name> WBC </name><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
  <object><name>Platelets</name>
    <bndbox><xmin>100.5</xmin><ymin>50</ymin><xmax>130</xmax><ymax>71</ymax></bndbox></object>
</annotation>
"""


def test_read_voc(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(VOC)
    boxes, classes = read_voc(p)
    assert classes == ["WBC", "Platelets"]
    assert boxes.dtype == np.float64
    np.testing.assert_array_equal(boxes, [[1, 0, 20, 10], [49, 99.5, 71, 130]])


def test_read_voc_errors(tmp_path):
    with pytest.raises(ReaderError, match="no VOC"):
        read_voc(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><object>")
    with pytest.raises(ReaderError, match="not valid XML"):
        read_voc(bad)
    nocoord = tmp_path / "nocoord.xml"
    nocoord.write_text("<annotation><object><name>RBC</name><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    with pytest.raises(ReaderError, match="RBC"):
        read_voc(nocoord)
    empty = tmp_path / "empty.xml"
    empty.write_text("<annotation></annotation>")
    boxes, classes = read_voc(empty)
    assert boxes.shape == (0, 4) and classes == []
