"""Gates, the trainable object classifier (exact JSON save/load) and the marking helpers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from skimage import filters
from skimage.draw import ellipse

from napari_medseg.analysis.classify import (
    ObjectClassifier,
    classify,
    feature_columns,
    marks_from_painted,
    marks_from_points,
)
from napari_medseg.analysis.gating import Gate, gate_classes, suggest_threshold
from napari_medseg.analysis.measure import measure
from napari_medseg.errors import ModelError, ParameterError

# ----------------------------------------------------------------------------- gates


def test_gate_operators_and_nan():
    t = {"v": np.array([1.0, 2.0, 3.0, np.nan])}
    assert Gate("v", ">", 2).mask(t).tolist() == [False, False, True, False]
    assert Gate("v", ">=", 2).mask(t).tolist() == [False, True, True, False]
    assert Gate("v", "<", 2).mask(t).tolist() == [True, False, False, False]
    assert Gate("v", "<=", 2).mask(t).tolist() == [True, True, False, False]
    assert Gate("v", "between", (2, 3)).mask(t).tolist() == [False, True, True, False]


def test_gate_validation_and_round_trip():
    with pytest.raises(ParameterError, match="operator"):
        Gate("v", "=>", 1)
    with pytest.raises(ParameterError, match="low, high"):
        Gate("v", "between", 3)
    with pytest.raises(ParameterError, match="low <= high"):
        Gate("v", "between", (3, 1))
    with pytest.raises(ParameterError, match="finite"):
        Gate("v", ">", float("nan"))
    with pytest.raises(ParameterError, match="no column 'w'"):
        Gate("w", ">", 1).mask({"v": np.zeros(2)})
    g = Gate("mean_CD3", "between", (10, 20.5), name="CD3")
    assert Gate.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_gate_classes_combine_markers():
    t = pd.DataFrame({"mean_CD3": [50.0, 200.0, 150.0, 90.0], "mean_CD8": [10.0, 90.0, 20.0, 70.0]})
    gates = [Gate("mean_CD3", ">", 100, "CD3"), Gate("mean_CD8", ">", 50, "CD8")]
    assert gate_classes(t, gates).tolist() == ["CD3- CD8-", "CD3+ CD8+", "CD3+ CD8-", "CD3- CD8+"]
    assert gate_classes(t, gates[0]).tolist() == ["CD3-", "CD3+", "CD3+", "CD3-"]
    assert gate_classes(t, Gate("mean_CD8", "<=", 20)).tolist() == ["CD8 dim", "CD8 bright", "CD8 dim", "CD8 bright"]
    with pytest.raises(ParameterError, match="at least one gate"):
        gate_classes(t, [])


def test_suggest_threshold_separates_two_populations():
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(100, 10, 900), rng.normal(300, 20, 100)
    values = np.concatenate([neg, pos, [np.nan, np.inf]])
    both, is_pos = np.concatenate([neg, pos]), np.arange(1000) >= 900
    for method in ("otsu", "triangle", "li", "isodata"):
        t = suggest_threshold(values, method)
        assert 100 < t < 300 and np.mean((both > t) != is_pos) < 0.01, (method, t)
    for method in ("otsu", "triangle", "li", "yen", "isodata"):  # non-finite values are left out
        assert suggest_threshold(values, method) == getattr(filters, f"threshold_{method}")(both), method
    assert suggest_threshold(values, "mean") == pytest.approx(np.concatenate([neg, pos]).mean())
    with pytest.raises(ParameterError, match="two distinct"):
        suggest_threshold([5.0, 5.0, np.nan])
    with pytest.raises(ParameterError, match="not one of"):
        suggest_threshold(values, "kmeans")


# ----------------------------------------------------------------------------- classifier


def _two_kinds_of_cells(seed: int = 0):
    """8 x 8 grid of objects: even cells small bright discs ('lymphocyte'), odd cells large dim ellipses ('tumour')."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((320, 320), np.int32)
    img = rng.normal(40, 5, lab.shape)
    truth = {}
    k = 0
    for i in range(8):
        for j in range(8):
            k += 1
            cy, cx = 20 + 40 * i + rng.uniform(-2, 2), 20 + 40 * j + rng.uniform(-2, 2)
            if (i + j) % 2 == 0:
                r = rng.uniform(4, 6)
                rr, cc = ellipse(cy, cx, r, r * rng.uniform(0.85, 1.0), lab.shape, rotation=rng.uniform(0, np.pi))
                img[rr, cc] += rng.uniform(140, 180)
                truth[k] = "lymphocyte"
            else:
                a = rng.uniform(11, 15)
                rr, cc = ellipse(cy, cx, a, a * rng.uniform(0.45, 0.65), lab.shape, rotation=rng.uniform(0, np.pi))
                img[rr, cc] += rng.uniform(50, 80)
                truth[k] = "tumour"
            lab[rr, cc] = k
    return lab, img, truth


@pytest.fixture(scope="module")
def cells():
    lab, img, truth = _two_kinds_of_cells()
    table = measure(lab, img, spacing=(0.5, 0.5), units="µm")
    ids = table["label"].to_numpy()
    marks = {}
    for cls in ("lymphocyte", "tumour"):
        marks.update({int(i): cls for i in [i for i in ids if truth[int(i)] == cls][:5]})
    return table, truth, marks


def test_feature_columns_skip_ids_positions_and_results():
    t = pd.DataFrame({"label": [1, 2], "centroid_y": [0.0, 1.0], "centroid_y_um": [0.0, 1.0], "bbox_y0": [0, 1],
                      "area_um2": [3.0, 4.0], "mean_DAPI": [1.0, 2.0], "class": ["a", "b"], "probability": [1.0, 1.0],
                      "name": ["x", "y"], "flag": [True, False], "empty": [np.nan, np.nan]})
    assert feature_columns(t) == ["area_um2", "mean_DAPI"]


def test_classifier_learns_from_five_marks_per_class(cells):
    table, truth, marks = cells
    clf = ObjectClassifier(n_estimators=50).fit(table, marks)
    assert clf.classes_ == ["lymphocyte", "tumour"]
    assert "area_um2" in clf.features_ and "centroid_y_um" not in clf.features_ and "label" not in clf.features_
    classes, prob = clf.predict(table)
    expected = np.array([truth[int(i)] for i in table["label"]])
    unmarked = ~np.isin(table["label"], list(marks))
    accuracy = np.mean(classes[unmarked] == expected[unmarked])
    assert accuracy >= 0.95
    assert np.all((prob >= 0.5) & (prob <= 1.0))
    np.testing.assert_allclose(clf.predict_proba(table).sum(axis=1), 1.0, rtol=1e-12)


def test_numpy_forest_equals_sklearn_and_survives_save_load(cells, tmp_path):
    table, _, marks = cells
    clf = ObjectClassifier(n_estimators=30, random_state=3).fit(table, marks)
    x = clf._standardised(table)
    np.testing.assert_array_equal(clf.predict_proba(table), clf._sklearn.predict_proba(x))
    np.testing.assert_array_equal(clf.predict(table)[0], clf._sklearn.predict(x))

    path = clf.save(tmp_path / "classifiers" / "cells")
    assert path.suffix == ".json" and path.exists()
    doc = json.loads(path.read_text())
    assert doc["format"] == "napari-medseg object classifier" and len(doc["trees"]) == 30
    loaded = ObjectClassifier.load(path)
    assert loaded.features_ == clf.features_ and loaded.classes_ == clf.classes_
    np.testing.assert_array_equal(loaded.predict_proba(table), clf.predict_proba(table))
    c1, p1 = clf.predict(table)
    c2, p2 = loaded.predict(table)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(p1, p2)


def test_missing_values_use_training_median(cells):
    table, _, marks = cells
    clf = ObjectClassifier(n_estimators=10).fit(table, marks)
    t2 = table.copy()
    col = clf.features_[0]
    t2.loc[t2.index[:3], col] = np.nan
    filled = table.copy()
    filled.loc[filled.index[:3], col] = clf._fill[0]
    np.testing.assert_array_equal(clf.predict_proba(t2), clf.predict_proba(filled))


def test_fit_errors(cells):
    table, _, marks = cells
    one_class = dict.fromkeys(list(marks)[:3], "tumour")
    with pytest.raises(ParameterError, match="two classes"):
        ObjectClassifier().fit(table, one_class)
    with pytest.raises(ParameterError, match="not in the table"):
        ObjectClassifier().fit(table, {**marks, 99999: "tumour"})
    with pytest.raises(ModelError, match="not trained"):
        ObjectClassifier().predict(table)
    with pytest.raises(ParameterError, match="no column"):
        ObjectClassifier(features=["nope"]).fit(table, marks)


def test_load_rejects_bad_files(cells, tmp_path):
    table, _, marks = cells
    good = ObjectClassifier(n_estimators=3).fit(table, marks).to_dict()
    with pytest.raises(ModelError, match="not found"):
        ObjectClassifier.load(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_bytes(b"\x80\x04\x95 pickle bytes")
    with pytest.raises(ModelError, match="cannot read"):
        ObjectClassifier.load(tmp_path / "junk.json")
    cyclic = json.loads(json.dumps(good))
    tree = cyclic["trees"][0]
    inner = [i for i, c in enumerate(tree["left"]) if c != -1]
    if inner:
        tree["left"][inner[-1]] = 0  # points back to the root: would loop forever
        with pytest.raises(ModelError, match="out of order"):
            ObjectClassifier.from_dict(cyclic)
    bad_feature = json.loads(json.dumps(good))
    bad_feature["trees"][0]["feature"] = [len(good["features"]) + 5] * len(bad_feature["trees"][0]["feature"])
    bad_feature["trees"][0]["left"] = good["trees"][0]["left"]
    if inner:
        with pytest.raises(ModelError, match="feature index"):
            ObjectClassifier.from_dict(bad_feature)
    with pytest.raises(ModelError, match="not a napari-medseg"):
        ObjectClassifier.from_dict({**good, "format": "something else"})
    with pytest.raises(ModelError, match="invalid"):
        ObjectClassifier.from_dict({k: v for k, v in good.items() if k != "scale"})


def test_classify_with_classifier_or_gates(cells):
    table, _, marks = cells
    clf = ObjectClassifier(n_estimators=10).fit(table, marks)
    out = classify(table, clf)
    assert isinstance(out, pd.DataFrame) and "class" not in table.columns
    classes, prob = clf.predict(table)
    np.testing.assert_array_equal(out["class"], classes)
    np.testing.assert_array_equal(out["probability"], prob)
    as_dict = {k: table[k].to_numpy() for k in table.columns}
    out_d = classify(as_dict, Gate("area_um2", ">", 30.0, name="big"))
    assert isinstance(out_d, dict) and "probability" not in out_d
    np.testing.assert_array_equal(out_d["class"], np.where(table["area_um2"] > 30.0, "big+", "big-"))
    with pytest.raises(ParameterError, match="ObjectClassifier"):
        classify(table, "random forest")


# ----------------------------------------------------------------------------- marks


def test_marks_from_points():
    lab = np.zeros((10, 10), np.int32)
    lab[1:4, 1:4], lab[6:9, 6:9], lab[1:3, 6:9] = 5, 8, 9
    pts = [(2.0, 2.0), (2.4, 3.4), (7.0, 7.0), (0.0, 0.0), (-3.0, 2.0), (20.0, 1.0), (6.6, 5.6)]
    cls = ["a", "a", "b", "b", "b", "a", "a"]  # background, outside and one rounding to (7, 6) -> object 8
    # object 8 gets b (7, 7) and a (7, 6): a tie
    with pytest.raises(ParameterError, match=r"objects \[8\]"):
        marks_from_points(pts, cls, lab)
    marks = marks_from_points(pts[:6] + [(8.0, 8.0)], cls[:6] + ["b"], lab)
    assert marks == {5: "a", 8: "b"}
    assert marks_from_points(np.zeros((0, 2)), [], lab) == {}
    with pytest.raises(ParameterError, match="shape"):
        marks_from_points([(1.0, 1.0, 1.0)], ["a"], lab)
    with pytest.raises(ParameterError, match="classes"):
        marks_from_points([(1.0, 1.0)], ["a", "b"], lab)
    vol = np.zeros((3, 4, 4), np.int32)
    vol[1, 1:3, 1:3] = 2
    assert marks_from_points([(1.2, 1.0, 2.0)], [3], vol) == {2: "3"}


def test_marks_from_painted():
    lab = np.zeros((8, 8), np.int32)
    lab[0:4, 0:4], lab[4:8, 4:8], lab[0:2, 6:8] = 1, 2, 3
    paint = np.zeros_like(lab)
    paint[0:2, 0:3] = 1  # 6 pixels of class 1 on object 1
    paint[3, 0:2] = 2  # 2 pixels of class 2 on object 1
    paint[5, 4:8] = 2  # object 2: class 2
    paint[4, 0:4] = 1  # background only: ignored
    assert marks_from_painted(paint, lab) == {1: "1", 2: "2"}
    assert marks_from_painted(paint, lab, ["bg", "tumour", "stroma"]) == {1: "tumour", 2: "stroma"}
    assert marks_from_painted(paint, lab, {1: "T", 2: "S"}) == {1: "T", 2: "S"}
    paint[0, 6], paint[1, 6] = 1, 2
    with pytest.raises(ParameterError, match=r"objects \[3\]"):
        marks_from_painted(paint, lab)
    with pytest.raises(ParameterError, match="no name"):
        marks_from_painted(paint[:, :5].copy(), lab[:, :5].copy(), {1: "T"})
    with pytest.raises(ParameterError, match="differ in shape"):
        marks_from_painted(paint[:4], lab)


def test_unnamed_gates_give_short_readable_classes():
    from napari_medseg.analysis.gating import short_column_name

    assert [short_column_name(c) for c in ("mean_nuclei_DSB2018_fluorescence", "mean_H_E_tile_DSB2018_red",
                                           "area_um2", "equivalent_diameter_px", "std_DAPI", "mean_image_ch1")] == \
        ["nuclei", "H E tile red", "area", "equivalent diameter", "std DAPI", "image ch1"]
    t = {"mean_nuclei_DSB2018_fluorescence": np.array([5.0, 50.0]), "area_px2": np.array([30.0, 10.0])}
    assert gate_classes(t, Gate("mean_nuclei_DSB2018_fluorescence", ">", 20)).tolist() == \
        ["nuclei dim", "nuclei bright"]
    assert gate_classes(t, Gate("area_px2", "<", 20)).tolist() == ["area high", "area low"]
    assert gate_classes(t, Gate("area_px2", "between", (0, 20))).tolist() == ["area out of range", "area in range"]
    assert gate_classes(t, Gate("area_px2", ">", 20, name="big")).tolist() == ["big+", "big-"]
