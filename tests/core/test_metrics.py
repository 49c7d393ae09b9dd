"""Metrics on hand-made label images with known IoUs."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.analysis import metrics as M
from napari_medseg.errors import ParameterError


def _pair():
    """true: 3 objects; pred: 4 objects with hand-computed IoUs.

    true 1 = rows 0-9, cols 0-9 (100 px); pred 11 = rows 0-9, cols 0-7 (80 px) -> IoU 0.8
    true 2 = rows 20-29, cols 0-9 (100 px); pred 12 = rows 20-29, cols 4-13 (100 px) -> IoU 60/140
    true 3 = rows 40-49, cols 0-9; nothing predicted there (FN)
    pred 13 = rows 60-64, cols 0-4 (FP); pred 14 = rows 0-9, cols 8-9 (20 px, inside true 1)
    """
    t = np.zeros((70, 20), np.uint16)
    t[0:10, 0:10] = 1
    t[20:30, 0:10] = 2
    t[40:50, 0:10] = 3
    p = np.zeros((70, 20), np.int32)
    p[0:10, 0:8] = 11
    p[0:10, 8:10] = 14
    p[20:30, 4:14] = 12
    p[60:65, 0:5] = 13
    return t, p


def test_overlap_iou_table():
    t, p = _pair()
    ov = M.overlap(t, p)
    assert ov.true_ids.tolist() == [1, 2, 3]
    assert ov.pred_ids.tolist() == [11, 12, 13, 14]
    expected = np.zeros((3, 4))
    expected[0, 0] = 0.8
    expected[1, 1] = 60 / 140
    expected[0, 3] = 20 / 100
    np.testing.assert_allclose(ov.iou, expected)


def test_match_and_ap_at_thresholds():
    t, p = _pair()
    m = M.match_instances(t, p, 0.5)
    assert m.pairs.tolist() == [[1, 11]]
    np.testing.assert_allclose(m.ious, [0.8])
    assert m.false_negatives.tolist() == [2, 3]
    assert m.false_positives.tolist() == [12, 13, 14]
    assert (m.tp, m.fp, m.fn) == (1, 3, 2)
    assert m.ap == pytest.approx(1 / 6)
    # at 0.4, pair (2, 12) with IoU 0.4286 also matches
    assert M.average_precision(t, p, 0.4) == pytest.approx(2 / (2 + 2 + 1))
    # at 0.8 nothing matches (strictly greater)
    assert M.average_precision(t, p, 0.8) == 0.0
    aps = M.average_precision(t, p)
    assert aps.shape == (9,)
    np.testing.assert_allclose(aps, [1 / 6] * 6 + [0.0] * 3)  # 0.5..0.75 match, 0.8..0.9 not
    assert M.mean_ap(t, p) == pytest.approx(6 / 6 / 9)
    assert M.counts(t, p, [0.5, 0.85]).tolist() == [[1, 3, 2], [0, 4, 3]]
    fn, fp = M.errors(t, p, 0.5)
    assert fn.tolist() == [2, 3] and fp.tolist() == [12, 13, 14]


def test_thresholds_list_and_constant():
    assert M.MAP_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def test_hungarian_is_one_to_one():
    # Low threshold: true 1 overlaps preds 11 (IoU 0.8) and 14 (0.2); only one may match.
    t, p = _pair()
    m = M.match_instances(t, p, 0.1)
    assert sorted(m.pairs[:, 0].tolist()) == [1, 2]
    assert sorted(m.pairs[:, 1].tolist()) == [11, 12]
    assert m.false_positives.tolist() == [13, 14]


def test_identical_relabelled_is_perfect_and_empty_cases():
    t, _ = _pair()
    p = np.where(t > 0, t * 7 + 100, 0)
    assert M.mean_ap(t, p) == 1.0
    assert M.dice(t, p) == 1.0
    z = np.zeros_like(t)
    assert M.average_precision(z, z, 0.5) == 1.0
    assert M.average_precision(t, z, 0.5) == 0.0
    assert M.dice(z, z) == 1.0
    assert M.dice(t, z) == 0.0


def test_dice_exact():
    t, p = _pair()
    # |A| = 300, |B| = 80 + 20 + 100 + 25 = 225, |A and B| = 80 + 20 + 60 = 160
    assert M.dice(t, p) == pytest.approx(2 * 160 / 525)


def test_3d_and_errors():
    t = np.zeros((4, 5, 5), np.int32)
    t[:2] = 1
    p = np.zeros_like(t)
    p[:3] = 2  # IoU 2/3
    assert M.average_precision(t, p, 0.6) == 1.0
    assert M.average_precision(t, p, 0.7) == 0.0
    with pytest.raises(ParameterError, match="shape"):
        M.overlap(t, p[:1])
    with pytest.raises(ParameterError, match="integer"):
        M.overlap(t.astype(float), p)


# ---- evaluate() -------------------------------------------------------------

def test_evaluate_labels_arrays_exact():
    from napari_medseg.analysis.evaluation import evaluate

    t, p = _pair()
    rep = evaluate([np.zeros(t.shape), np.zeros(t.shape)], [t, t], labels=[p, t])
    assert [r["image"] for r in rep.rows] == ["#0", "#1"]
    r0, r1 = rep.rows
    assert (r0["n_true"], r0["n_pred"], r0["tp50"], r0["fp50"], r0["fn50"]) == (3, 4, 1, 3, 2)
    assert r0["ap50"] == pytest.approx(1 / 6) and r0["ap75"] == pytest.approx(1 / 6) and r0["map"] == pytest.approx(1 / 9)
    assert r1["ap50"] == r1["map"] == r1["dice"] == 1.0
    o = rep.overall
    assert o["n_images"] == 2
    assert o["ap50"] == pytest.approx((1 / 6 + 1) / 2)
    # pooled at 0.5: TP 1+3, FP 3, FN 2 -> 4/9; at 0.9: TP 0+3, FP 4, FN 3 -> 3/10
    assert o["ap50_pooled"] == pytest.approx(4 / 9)
    assert o["map_pooled"] == pytest.approx((6 * 4 / 9 + 3 * 3 / 10) / 9)
    assert "pooled" in rep.format_table()


def test_evaluate_folders_paired_by_name_and_csv(tmp_path):
    import tifffile

    from napari_medseg.analysis.evaluation import evaluate

    t, p = _pair()
    for d in ("images", "masks", "labels"):
        (tmp_path / d).mkdir()
    for name, (mask, pred) in {"b": (t, p), "a": (t, t)}.items():
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", np.zeros(t.shape, np.uint8))
        tifffile.imwrite(tmp_path / "masks" / f"{name}.tif", mask)
        tifffile.imwrite(tmp_path / "labels" / f"{name}.tif", pred.astype(np.uint16))
    rep = evaluate(tmp_path / "images", tmp_path / "masks", labels=tmp_path / "labels")
    assert [r["image"] for r in rep.rows] == ["a", "b"]
    assert rep.rows[0]["ap50"] == 1.0 and rep.rows[1]["ap50"] == pytest.approx(1 / 6)
    text = rep.to_csv(tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("image,n_true,n_pred,ap50,ap75,map,dice")
    assert lines[2].startswith("b,3,4,0.1667,0.1667,0.1111,")
    assert lines[3].startswith("OVERALL") and text == (tmp_path / "r.csv").read_text()
    (tmp_path / "masks" / "a.tif").unlink()
    with pytest.raises(ParameterError, match="no file named"):
        evaluate(tmp_path / "images", tmp_path / "masks", labels=tmp_path / "labels")
    with pytest.raises(ParameterError, match="either a model"):
        evaluate(tmp_path / "images", tmp_path / "masks")


def test_evaluate_with_a_model_runs_the_engine(tmp_path):
    from napari_medseg.analysis.evaluation import evaluate
    from napari_medseg.models.testing import make_random_model

    folder = make_random_model(tmp_path / "m", name="rnd", postprocess={"min_size": 1})
    t, _ = _pair()
    img = (t > 0).astype(np.float32) * 100
    rep = evaluate([img], [t], model=str(folder), device="cpu")
    r = rep.rows[0]
    assert rep.model == str(folder) and r["n_true"] == 3
    assert r["tp50"] + r["fn50"] == 3 and r["tp50"] + r["fp50"] == r["n_pred"]
