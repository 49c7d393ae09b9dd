"""analysis.objects: detect() on labels, instance/semantic/detection models; box tables; CSV writer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_medseg.analysis.measure import measure
from napari_medseg.analysis.objects import (
    box_table,
    detect,
    detect_iter,
    write_objects_csv,
)
from napari_medseg.errors import ModelError, ParameterError
from napari_medseg.geometry import Volume
from napari_medseg.progress import Cancelled, CancelToken


def _labels_2d() -> tuple[np.ndarray, np.ndarray]:
    lab = np.zeros((20, 30), np.uint16)
    lab[2:6, 3:9] = 4  # 4 x 6 = 24 px
    lab[10:15, 20:25] = 9  # 5 x 5 = 25 px
    lab[16:18, 0:2] = 2  # 2 x 2 = 4 px
    img = np.zeros((20, 30), np.float32)
    img[lab == 4] = 10
    img[lab == 9] = 3
    img[11, 21] = 8  # one brighter pixel in object 9
    return lab, img


# ---------------------------------------------------------------------------- labels path


def test_labels_table_counts_columns_units():
    lab, img = _labels_2d()
    res = detect(img, labels=lab, scale=(0.5, 0.25), units="µm", translate=(10.0, -1.0))
    t = res.table
    assert res.kind == "labels" and len(res) == 3 and res.counts() == {"object": 3}
    assert list(t.columns[:3]) == ["id", "class", "score"]
    assert t["id"].tolist() == [2, 4, 9]
    assert t["class"].tolist() == ["object"] * 3 and t["score"].tolist() == [1.0, 1.0, 1.0]
    for col in ("centroid_y", "centroid_x", "centroid_y_um", "centroid_x_um", "bbox_y0", "bbox_x1_um",
                "n_pixels", "area_um2", "equivalent_diameter_um", "perimeter_um", "solidity",
                "mean_intensity", "min_intensity", "max_intensity", "std_intensity"):
        assert col in t.columns, col
    r4 = t[t["id"] == 4].iloc[0]
    assert r4["n_pixels"] == 24 and r4["area_um2"] == pytest.approx(24 * 0.5 * 0.25)
    assert (r4["centroid_y"], r4["centroid_x"]) == (3.5, 5.5)
    assert r4["centroid_y_um"] == pytest.approx(10.0 + 3.5 * 0.5)
    assert r4["centroid_x_um"] == pytest.approx(-1.0 + 5.5 * 0.25)
    assert r4["bbox_y0_um"] == pytest.approx(10.0 + (2 - 0.5) * 0.5)
    r9 = t[t["id"] == 9].iloc[0]
    assert r9["max_intensity"] == 8 and r9["mean_intensity"] == pytest.approx((24 * 3 + 8) / 25)
    assert res.labels is lab or np.array_equal(res.labels, lab)
    assert res.unit == "um" and res.spacing == (0.5, 0.25) and res.translate == (10.0, -1.0)
    assert res.boxes is None and res.model_name == ""


def test_labels_without_scale_are_in_pixels_and_3d_mm():
    lab, _ = _labels_2d()
    t = detect(labels=lab).table
    assert "area_px2" in t.columns and "mean_intensity" not in t.columns
    # pixel units: no world columns repeating the pixel ones
    assert "centroid_y" in t.columns and not any(c.startswith(("centroid_", "bbox_")) and c.endswith("_px") for c in t.columns)
    lab3 = np.zeros((4, 10, 12), np.uint8)
    lab3[1:3, 2:5, 3:9] = 1  # 2 x 3 x 6 voxels
    res = detect(labels=lab3, scale=(2.0, 0.1, 0.1), units="mm")
    t3 = res.table
    assert res.axes == "ZYX" and len(res) == 1
    assert t3["volume_mm3"].iloc[0] == pytest.approx(36 * 2.0 * 0.01)
    assert t3["centroid_z_mm"].iloc[0] == pytest.approx(1.5 * 2.0)
    assert "surface_area_mm2" in t3.columns and "eccentricity" not in t3.columns


def test_volume_geometry_and_rgb_channel_names():
    lab, _ = _labels_2d()
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[lab == 4] = (200, 10, 50)
    vol = Volume(rgb, "YXS", scale=(0.5, 0.5), translate=(1.0, 2.0), units=("mm", "mm"))
    res = detect(vol, labels=lab)
    t = res.table
    r4 = t[t["id"] == 4].iloc[0]
    assert (r4["mean_red"], r4["mean_green"], r4["mean_blue"]) == (200, 10, 50)
    assert r4["centroid_y_mm"] == pytest.approx(1.0 + 3.5 * 0.5) and res.unit == "mm"
    # channel-first multichannel image with names
    img = np.stack([lab * 1.0, lab * 2.0])
    t2 = detect(img, labels=lab, axes="CYX", channel_names=["DAPI", "CD3"]).table
    assert t2["mean_CD3"].tolist() == [4.0, 8.0, 18.0] and t2["mean_DAPI"].tolist() == [2.0, 4.0, 9.0]


def test_object_ids_at_and_marks_for_labels():
    lab, _ = _labels_2d()
    res = detect(labels=lab)
    ids = res.object_ids_at([[3, 4], [0, 0], [12.4, 22.4], [-5, 3], [19.6, 2]])
    assert ids.tolist() == [4, 0, 9, 0, 0]
    marks = res.marks_from_points([[3, 4], [4, 5], [12, 22], [0, 0]], ["a", "a", "b", "c"])
    assert marks == {4: "a", 9: "b"}


def test_bad_inputs():
    lab, img = _labels_2d()
    with pytest.raises(ParameterError, match="give an image"):
        detect()
    with pytest.raises(ParameterError, match="same spatial shape"):
        detect(img[:10], labels=lab)
    with pytest.raises(ParameterError, match="time point"):
        detect(np.zeros((2, 20, 30)), labels=lab, axes="TYX")
    with pytest.raises(ParameterError, match="2D"):
        detect(labels=np.zeros((2, 2, 3, 3), np.uint8))
    with pytest.raises(ParameterError, match="scale"):
        detect(labels=lab, scale=(1.0, 0.0))
    with pytest.raises(ParameterError, match="same unit"):
        detect(labels=lab, scale=(1.0, 1.0), units=["µm", "mm"])


def test_cancel_before_start():
    lab, _ = _labels_2d()
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        list(detect_iter(labels=lab, cancel=tok))


def test_unit_conversions_for_the_engine():
    from napari_medseg.geometry import convert, is_length

    assert [convert(v, "mm", "µm") for v in (0.001, 0.002)] == pytest.approx([1.0, 2.0])
    assert convert(500.0, "nm", "um") == pytest.approx(0.5)
    assert convert(0.3, "um", "micrometer") == 0.3
    assert not is_length("px") and not is_length(None) and is_length("millimeter")


# ---------------------------------------------------------------------------- boxes


def test_box_table_hand_values_match_measure_of_same_rectangles():
    lab, img = _labels_2d()
    boxes = np.array([[16, 0, 18, 2], [2, 3, 6, 9], [10, 20, 15, 25]], float)  # the three objects
    t = box_table(boxes, ["x", "y", "y"], [0.9, 0.8, 0.5], spacing=(0.5, 0.25), translate=(10.0, -1.0),
                  unit="um", intensity=[("intensity", img)])
    m = measure(lab, img, spacing=(0.5, 0.25), units="µm", translate=(10.0, -1.0))  # sorted by id: 2, 4, 9
    assert t["id"].tolist() == [1, 2, 3] and t["class"].tolist() == ["x", "y", "y"]
    for col in ("centroid_y", "centroid_x", "centroid_y_um", "centroid_x_um", "bbox_y0", "bbox_x0", "bbox_y1",
                "bbox_x1", "bbox_y0_um", "bbox_x0_um", "bbox_y1_um", "bbox_x1_um", "area_um2",
                "equivalent_diameter_um", "mean_intensity", "std_intensity"):
        np.testing.assert_allclose(t[col].to_numpy(float), m[col].to_numpy(float), err_msg=col)
    assert t["height_um"].tolist() == [1.0, 2.0, 2.5] and t["width_um"].tolist() == [0.5, 1.5, 1.25]


def test_box_stats_fractional_edges_and_empty_box():
    img = np.arange(100, dtype=float).reshape(10, 10)
    # [1.4, 3.6) holds pixel centres 1.5, 2.5 (rows 1, 2) and 3.5 (row 3): rows 1..3; cols [0.5, 2.5): cols 0, 1
    t = box_table([[1.4, 0.5, 3.6, 2.5], [4.0, 4.0, 4.4, 4.4]], ["a", "a"], [1, 1],
                  intensity=[("v", img)])
    assert t["mean_v"].iloc[0] == pytest.approx(img[1:4, 0:2].mean())
    assert t["std_v"].iloc[0] == pytest.approx(img[1:4, 0:2].std())
    assert np.isnan(t["mean_v"].iloc[1])


def test_box_objects_at_points_pick_smallest_box():
    from napari_medseg.analysis.objects import ObjectsResult

    boxes = np.array([[0, 0, 20, 20], [5, 5, 10, 10], [30, 30, 40, 40]], np.float32)
    table = box_table(boxes, ["big", "small", "far"], [0.9, 0.8, 0.7])
    res = ObjectsResult(table, "detection", None, boxes, ["big", "small", "far"], "px", (1.0, 1.0), (0.0, 0.0), "YX")
    # data coordinates: box [5, 10) in edges is [4.5, 9.5) in pixel indices
    ids = res.object_ids_at([[6, 6], [2, 2], [35, 35], [50, 50], [4.4, 6], [9.4, 9.4]])
    assert ids.tolist() == [2, 1, 3, 0, 1, 2]
    assert res.marks_from_points([[6, 6], [2, 2], [50, 50]], ["p", "q", "r"]) == {1: "q", 2: "p"}
    with pytest.raises(ParameterError, match="different classes"):
        res.marks_from_points([[6, 6], [7, 7]], ["p", "q"])


# ---------------------------------------------------------------------------- models


@pytest.fixture
def models(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from napari_medseg.models import registry
    from napari_medseg.models.testing import make_random_model

    d = tmp_path / "models"
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(d))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")
    make_random_model(d / "inst", name="inst", seed=1, postprocess={"min_size": 4})
    make_random_model(d / "sem", name="sem", kind="semantic", n_classes=3, seed=1)  # all class 2 on _image
    return d


def _image(shape=(48, 64), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(10, 3, shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx in ((12, 12), (30, 45), (36, 14)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 40] += 60
    return img


def test_instance_model_table_is_measure_of_its_labels_with_mean_fg_score(models):
    from napari_medseg.api import segment

    img = _image()
    steps = []
    res = detect(img, "inst", scale=(0.5, 0.5), units="µm", device="cpu", progress=steps.append)
    lab, probs = segment(img, "inst", scale=(0.5, 0.5), device="cpu", return_probabilities=True)
    np.testing.assert_array_equal(res.labels, lab)
    assert res.kind == "instance" and res.model_name == "inst" and len(res) == int(lab.max())
    assert len(res) > 0  # the random model finds something on this image (seeded)
    m = measure(lab, img, spacing=(0.5, 0.5), units="µm")
    np.testing.assert_array_equal(res.table["id"].to_numpy(), m["label"].to_numpy())
    np.testing.assert_allclose(res.table["area_um2"], m["area_um2"])
    np.testing.assert_allclose(res.table["mean_intensity"], m["mean_intensity"])
    fg = probs[0].astype(np.float64)
    want = [fg[lab == i].mean() for i in res.table["id"]]
    np.testing.assert_allclose(res.table["score"], want, rtol=1e-6)
    assert set(res.table["class"]) == {"object"}
    # progress: the engine's steps then "measuring objects", one more than the engine's total
    assert steps[-1].message == "measuring objects" and all(p.total == steps[0].total for p in steps[:-1])
    assert steps[-2].step == steps[-2].total - 1


def test_semantic_model_objects_are_class_regions(models):
    from skimage.measure import label as cc_label

    from napari_medseg.api import segment

    img = _image(seed=3)
    res = detect(img, "sem", device="cpu")
    cls_map, probs = segment(img, "sem", device="cpu", return_probabilities=True)
    regions = cc_label(cls_map, background=0, connectivity=2)
    assert res.kind == "semantic" and len(res) == int(regions.max()) > 0
    np.testing.assert_array_equal(res.labels, regions)
    t = res.table
    for _, row in t.iterrows():
        px = regions == row["id"]
        k = int(np.unique(cls_map[px])[0])
        assert row["class"] == f"class_{k}"
        assert row["score"] == pytest.approx(probs[k][px].astype(np.float64).mean(), rel=1e-6)
    assert res.class_names == ["class_1", "class_2"]
    assert sum(res.counts().values()) == len(res)


def test_semantic_objects_by_hand():
    from napari_medseg.analysis.objects import semantic_objects

    cm = np.zeros((6, 8), np.uint16)
    cm[0:2, 0:3] = 1  # region A, class 1
    cm[0:2, 3:5] = 2  # touches A but another class: region B
    cm[2, 5] = 2  # diagonal neighbour of B: same region (full connectivity)
    cm[4:6, 6:8] = 1  # region C, class 1
    probs = np.zeros((3, 6, 8), np.float16)
    probs[1] = 0.5
    probs[1, 0, 0] = 1.0
    probs[2] = 0.25
    regions, classes, score = semantic_objects(cm, probs, ["bg", "tumour", "stroma"])
    assert regions.max() == 3 and regions.dtype == np.uint16
    assert classes.tolist() == ["tumour", "stroma", "tumour"]
    np.testing.assert_allclose(score, [(1.0 + 5 * 0.5) / 6, 0.25, 0.5])
    assert np.array_equal(regions[0:2, 3:5] > 0, np.ones((2, 2), bool)) and regions[2, 5] == regions[0, 3]


def test_detection_model_rows_are_the_detectors_boxes(models):
    torch = pytest.importorskip("torch")
    from napari_medseg.analysis.box_detection import detect as detect_boxes
    from napari_medseg.models.spec import build_network, save_model
    from napari_medseg.training.detection import detection_card

    card = detection_card("boxy", ["A", "B"], base_channels=4, depth=2, downsample=2, score_threshold=0.0,
                          max_detections=15)
    torch.manual_seed(0)
    save_model(models / "boxy", build_network(card), card)
    rgb = np.random.default_rng(1).integers(0, 255, (64, 80, 3)).astype(np.uint8)
    res = detect(rgb, "boxy", device="cpu", scale=(0.2, 0.2), units="µm")
    ref = detect_boxes(rgb, "boxy", device="cpu")
    assert res.kind == "detection" and res.labels is None and len(res) == len(ref) == 15
    np.testing.assert_array_equal(res.boxes, ref.boxes)
    t = res.table
    assert t["id"].tolist() == list(range(1, 16))
    assert t["class"].tolist() == ref.classes
    np.testing.assert_allclose(t["score"], ref.scores)
    np.testing.assert_allclose(t["area_um2"], (ref.boxes[:, 2] - ref.boxes[:, 0]) * (ref.boxes[:, 3] - ref.boxes[:, 1])
                               * 0.04, rtol=1e-5)
    assert {"mean_red", "mean_green", "mean_blue"} <= set(t.columns)
    assert sum(res.counts().values()) == 15 and list(res.counts()) == ["A", "B"]
    with pytest.raises(ModelError, match="2D"):
        detect(np.zeros((3, 64, 80, 3), np.uint8), "boxy", axes="ZYXS", device="cpu")


def test_auto_without_a_fitting_model(tmp_path, monkeypatch):
    from napari_medseg.models import registry

    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")
    with pytest.raises(ModelError, match="no installed segmentation model"):
        detect(np.zeros((16, 16), np.float32))


# ---------------------------------------------------------------------------- CSV


def test_write_objects_csv_round_trip(tmp_path):
    lab, img = _labels_2d()
    res = detect(img, labels=lab, scale=(0.5, 0.25), units="µm")
    p = write_objects_csv(tmp_path / "a_objects.csv", res.table)
    back = pd.read_csv(p)
    assert list(back.columns) == list(res.table.columns)
    assert back["id"].tolist() == [2, 4, 9] and back["class"].tolist() == ["object"] * 3
    np.testing.assert_array_equal(back["centroid_x_um"].to_numpy(), res.table["centroid_x_um"].to_numpy())
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a_objects.csv"]  # no temporary left
    # a mapping, classes with commas and quotes survive
    p2 = write_objects_csv(tmp_path / "b.csv", {"id": [1, 2], "class": ['a, "b"', "c"]})
    assert pd.read_csv(p2)["class"].tolist() == ['a, "b"', "c"]
    with pytest.raises(ParameterError, match="does not exist"):
        write_objects_csv(tmp_path / "nope" / "x.csv", res.table)
