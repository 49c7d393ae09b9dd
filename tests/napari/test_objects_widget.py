"""The Objects dock widget in a real viewer, through the real threaded path.

Run with ``xvfb-run -a python -m pytest tests/napari/test_objects_widget.py -q``.
Set ``MEDSEG_SCREENSHOT_DIR`` to keep the screenshot (default: the test's tmp_path).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Labels, Points, Shapes  # noqa: E402

from napari_medseg._napari.widgets.common import viewer_camera  # noqa: E402
from napari_medseg._napari.widgets.objects import ObjectsWidget  # noqa: E402

pytestmark = pytest.mark.napari

RUN_TIMEOUT = 120_000  # ms; 2 CPU cores shared with other jobs
SCALE = (0.5, 0.25)
TRANSLATE = (10.0, 20.0)
BRIGHT = {1, 3, 5, 7}  # object ids with a bright signal


def _scene(shape=(60, 96)) -> tuple[np.ndarray, np.ndarray]:
    """8 square objects of different sizes; odd ids bright (~100), even ids dim (~20)."""
    rng = np.random.default_rng(0)
    lab = np.zeros(shape, np.uint16)
    img = rng.normal(5, 1, shape).astype(np.float32)
    k = 0
    for r in range(2):
        for c in range(4):
            k += 1
            y0, x0 = 6 + 28 * r, 4 + 23 * c
            s = 8 + (k % 3) * 3
            lab[y0:y0 + s, x0:x0 + s] = k
            base = 100 if k in BRIGHT else 20
            img[y0:y0 + s, x0:x0 + s] = rng.normal(base, 3, (s, s))
    return lab, img


@pytest.fixture
def viewer_widget(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    viewer = make_napari_viewer(show=True)  # shown: the canvas renders, the screenshot is real
    widget = ObjectsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Objects", area="right")
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    yield viewer, widget
    for job in (widget._job, widget._train_job):
        if job is not None and job.running:
            job.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def _run_and_wait(qtbot, widget) -> None:
    qtbot.mouseClick(widget.run_button, _left())
    assert widget.running and not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def _add_scene(viewer):
    lab, img = _scene()
    image = viewer.add_image(img, name="signal", scale=SCALE, translate=TRANSLATE, units="micrometer")
    labels = viewer.add_labels(lab, name="cells", scale=SCALE, translate=TRANSLATE, units="micrometer")
    return lab, img, image, labels


def test_labels_detect_gate_train_export_click(viewer_widget, qtbot, tmp_path) -> None:
    viewer, widget = viewer_widget
    lab, img, image, labels = _add_scene(viewer)
    before = lab.copy()
    widget.source_kind.setCurrentIndex(0)
    widget.labels_combo.set_layer(labels)
    widget.intensity_list.set_checked(image)
    _run_and_wait(qtbot, widget)

    # --- counts, table and the output layer
    assert widget.counts() == {"object": 8}
    assert "8 objects" in widget.counts_label.text() and "object: 8" in widget.counts_label.text()
    t = widget.table
    assert t["id"].tolist() == list(range(1, 9))
    np.testing.assert_allclose(t["area_um2"], t["n_pixels"] * 0.125)
    for k in range(1, 9):
        np.testing.assert_allclose(t.loc[t["id"] == k, "mean_signal"].iloc[0], img[lab == k].mean(), rtol=1e-6)
    out = viewer.layers["cells objects"]
    assert isinstance(out, Points) and out is widget.output_layer and len(out.data) == 8
    assert out.features["id"].tolist() == t["id"].tolist() and "mean_signal" in out.features.columns
    world = np.array([out.data_to_world(p) for p in out.data])
    np.testing.assert_allclose(world, t[["centroid_y_um", "centroid_x_um"]].to_numpy(), atol=1e-9)
    # the user's layer is read only
    np.testing.assert_array_equal(labels.data, before)
    assert labels.features.shape[1] == 0 and len(viewer.layers) == 3
    assert widget.table_view.proxy.rowCount() == 8

    # --- gate on the signal: Otsu splits the two populations
    widget.tabs.setCurrentWidget(widget.gate_panel)
    gp = widget.gate_panel
    gp.column.setCurrentText("mean_signal")
    thr = gp.suggest("otsu")
    means = t["mean_signal"].to_numpy()
    bright = t["id"].isin(BRIGHT).to_numpy()
    assert means[~bright].max() <= thr < means[bright].min()
    assert gp.threshold.value() == pytest.approx(thr, abs=1e-4)
    gp.marker.setText("signal")
    qtbot.mouseClick(gp.apply_button, _left())
    want = np.where(t["id"].isin(BRIGHT), "signal+", "signal-")
    assert widget.table["class"].tolist() == want.tolist()
    assert widget.counts() == {"signal+": 4, "signal-": 4}
    assert out.features["class"].tolist() == want.tolist()
    fc = np.asarray(out.face_color)
    assert not np.allclose(fc[0], fc[1]) and np.allclose(fc[0], fc[2])  # ids 1, 3 bright; 2 dim
    # dragging the threshold line above every object makes all negative
    gp.canvas.thresholdDragged.emit(500.0)
    assert gp.threshold.value() == pytest.approx(500.0)
    gp.apply()
    assert widget.counts() == {"signal-": 8}

    # --- trainable classifier from marks (points with a class feature)
    widget.tabs.setCurrentWidget(widget.classifier_panel)
    cp = widget.classifier_panel
    marks = widget.new_marks_layer()
    assert marks.mode == "add" and cp.marks_combo.layer() is marks
    for k, cls in ((1, "bright"), (3, "bright"), (2, "dim"), (4, "dim")):
        cp.mark_class.setCurrentText(cls)
        cy, cx = t.loc[t["id"] == k, ["centroid_y", "centroid_x"]].iloc[0]
        marks.add([cy, cx])
    assert marks.features["class"].tolist() == ["bright", "bright", "dim", "dim"]
    qtbot.mouseClick(cp.train_button, _left())
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    want = np.where(t["id"].isin(BRIGHT), "bright", "dim")
    assert widget.table["class"].tolist() == want.tolist()
    assert "probability" in widget.table.columns and (widget.table["probability"] > 0.5).all()
    assert "Trained on 4 objects (bright 2, dim 2)" in cp.info.text()
    assert out.features["class"].tolist() == want.tolist()

    # save, break the classes, load: the same classes again
    saved = widget.save_classifier(tmp_path / "clf.json")
    assert saved.is_file()
    gp.apply()
    assert widget.counts() == {"signal-": 8}
    assert widget.load_classifier(saved)
    assert widget.table["class"].tolist() == want.tolist()

    # --- export CSV and plot
    csv = widget.export_csv(tmp_path / "cells_objects.csv")
    back = pd.read_csv(csv)
    assert back["id"].tolist() == list(range(1, 9)) and back["class"].tolist() == want.tolist()
    assert list(back.columns[:4]) == ["id", "class", "score", "probability"]
    widget.tabs.setCurrentWidget(widget.plot_panel)
    pp = widget.plot_panel
    pp.kind.setCurrentText("scatter")
    pp.x_column.setCurrentText("mean_signal")
    pp.y_column.setCurrentText("area_um2")
    png = widget.export_plot(tmp_path / "plot.png")
    assert png.is_file() and png.stat().st_size > 5000
    assert len(pp.canvas.ax.collections) == 2  # one scatter per class

    # --- the table: filter, sort, click a row -> the camera centres on the object
    widget.tabs.setCurrentIndex(0)
    tv = widget.table_view
    tv.set_filter("bright", "class")
    assert sorted(tv.visible_rows()) == [0, 2, 4, 6]
    tv.set_filter("")
    from qtpy.QtCore import Qt

    tv.view.sortByColumn(list(widget.table.columns).index("n_pixels"), Qt.SortOrder.DescendingOrder)
    order = tv.visible_rows()
    sizes = widget.table["n_pixels"].to_numpy()[order]
    assert np.all(np.diff(sizes) <= 0)  # descending
    row = 5
    qtbot.wait(100)
    idx = tv.view_index(row)
    tv.view.scrollTo(idx)
    rect = tv.view.visualRect(idx)
    qtbot.mouseClick(tv.view.viewport(), _left(), pos=rect.center())
    want_world = t[["centroid_y_um", "centroid_x_um"]].iloc[row].to_numpy()
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], want_world, atol=1e-6)
    assert out.selected_data == {row}
    # and the other way: selecting a point in the viewer selects its row, the camera stays
    centre = tuple(viewer_camera(viewer).center)
    out.selected_data = {2}
    current = tv.view.currentIndex()
    assert tv.proxy.mapToSource(current).row() == 2
    assert tuple(viewer_camera(viewer).center) == centre

    qtbot.wait(300)
    shot_dir = Path(os.environ.get("MEDSEG_SCREENSHOT_DIR") or tmp_path)
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = viewer.screenshot(str(shot_dir / "medseg_objects_widget.png"), canvas_only=False)
    assert shot.ndim == 3 and shot.shape[0] > 200 and shot.shape[1] > 300


def test_3d_labels_click_sets_the_slice(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    lab = np.zeros((6, 30, 40), np.uint8)
    lab[1:3, 2:8, 3:9] = 1
    lab[4:6, 20:26, 30:36] = 2
    layer = viewer.add_labels(lab, name="vol", scale=(2.0, 0.5, 0.5), translate=(1.0, 0.0, 0.0),
                              units="millimeter")
    widget.source_kind.setCurrentIndex(0)
    widget.labels_combo.set_layer(layer)
    _run_and_wait(qtbot, widget)
    t = widget.table
    assert len(t) == 2 and "volume_mm3" in t.columns
    assert t["volume_mm3"].tolist() == pytest.approx([72 * 0.5, 72 * 0.5])
    widget.focus_object(1)
    z, y, x = t[["centroid_z_mm", "centroid_y_mm", "centroid_x_mm"]].iloc[1]
    assert z == pytest.approx(1.0 + 4.5 * 2.0)
    assert viewer.dims.point[0] == pytest.approx(z, abs=1.0)  # the slice of the object (nearest step)
    assert viewer.dims.current_step[0] in (4, 5)
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], (y, x), atol=1e-6)
    assert widget.output_layer.selected_data == {1}


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from napari_medseg.models.testing import make_random_model

    d = tmp_path / "models"
    make_random_model(d / "tiny", name="tiny", seed=1, postprocess={"min_size": 4})
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(d))
    return d


def test_image_with_segmentation_and_box_models(viewer_widget, models_dir, qtbot) -> None:
    import torch

    from napari_medseg.models.spec import build_network, save_model
    from napari_medseg.training.detection import detection_card

    viewer, widget = viewer_widget
    card = detection_card("boxy", ["WBC", "RBC"], base_channels=4, depth=2, downsample=2, score_threshold=0.0,
                          max_detections=9)
    torch.manual_seed(0)
    save_model(models_dir / "boxy", build_network(card), card)
    widget.model_picker.refresh()
    _, img = _scene()
    image = viewer.add_image(img, name="signal", scale=SCALE, units="micrometer")
    widget.source_kind.setCurrentIndex(1)
    widget.image_combo.set_layer(image)
    assert widget.model_picker.select("tiny")
    _run_and_wait(qtbot, widget)
    assert widget.result.kind == "instance", widget.status.text()
    lab_layer = viewer.layers["signal objects labels"]
    pts = viewer.layers["signal objects"]
    assert isinstance(lab_layer, Labels) and isinstance(pts, Points)
    n = len(widget.table)
    assert n == int(lab_layer.data.max()) and len(pts.data) == n
    assert lab_layer.features["index"].tolist() == widget.table["id"].tolist()
    np.testing.assert_array_equal(lab_layer.scale, SCALE)
    # a re-run replaces our layers instead of adding more
    n_layers = len(viewer.layers)
    _run_and_wait(qtbot, widget)
    assert len(viewer.layers) == n_layers and viewer.layers["signal objects"] is widget.output_layer

    # cancelled run: nothing changes
    widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    assert "Cancelled" in widget.status.text() and len(viewer.layers) == n_layers

    # a box model on an RGB layer: rectangles coloured by class, no labels layer
    rgb = np.random.default_rng(3).integers(0, 255, (48, 64, 3)).astype(np.uint8)
    smear = viewer.add_image(rgb, name="smear", rgb=True)
    widget.image_combo.set_layer(smear)
    assert widget.model_picker.select("boxy")
    _run_and_wait(qtbot, widget)
    boxes = viewer.layers["smear boxes"]
    assert isinstance(boxes, Shapes) and len(boxes.data) == 9 and widget.result.kind == "detection"
    assert set(widget.table["class"]) <= {"WBC", "RBC"} and sum(widget.counts().values()) == 9
    assert {"mean_smear_red", "mean_smear_green", "mean_smear_blue"} <= set(widget.table.columns)
    b = widget.result.boxes[0]
    np.testing.assert_allclose(boxes.data[0].min(axis=0), [b[0] - 0.5, b[1] - 0.5], atol=1e-5)
    np.testing.assert_allclose(boxes.data[0].max(axis=0), [b[2] - 0.5, b[3] - 0.5], atol=1e-5)
    assert "smear objects labels" not in [lay.name for lay in viewer.layers]
    # marks inside a box train a classifier on boxes too
    marks = widget.new_marks_layer()
    t = widget.table
    for row, cls in ((0, "a"), (1, "b")):
        marks.feature_defaults = {"class": cls}
        marks.add([t["centroid_y"].iloc[row], t["centroid_x"].iloc[row]])
    marked = widget._marks()
    assert set(marked.values()) == {"a", "b"} and len(marked) == 2


def test_errors_are_shown_not_raised(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    widget.source_kind.setCurrentIndex(0)
    widget.run()
    assert not widget.running and "No Labels layer" in widget.status.text()
    lab, img, image, labels = _add_scene(viewer)
    viewer.add_image(img[:20], name="small")
    widget.labels_combo.set_layer(labels)
    widget.intensity_list.set_checked(viewer.layers["small"])
    widget.run()
    assert not widget.running and "same grid" in widget.status.text()
    widget.intensity_list.set_checked(viewer.layers["small"], False)
    _run_and_wait(qtbot, widget)
    marks = widget.new_marks_layer()
    marks.feature_defaults = {"class": "only"}
    marks.add([10.0, 8.0])
    widget.train()
    assert not widget.running and "at least two classes" in widget.status.text()
    assert widget.counts() == {"object": 8}
    assert widget.export_csv(Path("/nonexistent/folder/x.csv")) is None
    assert "Export failed" in widget.status.text()


def test_snap_to_gap_makes_a_greater_than_gate_match_otsus_split() -> None:
    from napari_medseg._napari.widgets.objects.classify import snap_to_gap
    from napari_medseg.analysis.gating import suggest_threshold

    v = np.array([20.25, 20.36, 19.51, 20.19, 99.0, 101.2, 100.4, 98.7])
    raw = suggest_threshold(v, "otsu")
    assert (v > raw).sum() == 5  # skimage's bin centre puts one dim object above the threshold
    t = snap_to_gap(v, raw, "otsu")
    assert t == pytest.approx((20.36 + 98.7) / 2)
    assert (v > t).tolist() == [False, False, False, False, True, True, True, True]
    assert snap_to_gap(v, 42.0, "mean") == 42.0  # unbinned methods are left alone


def test_bccd_smear_with_the_shipped_box_model(viewer_widget, qtbot, tmp_path) -> None:
    """A real blood smear and the shipped ``bccd`` model: rectangles per class, counts, table, click."""
    from skimage.io import imread

    from napari_medseg.models.registry import list_models

    try:
        from conftest import dataset
    except ImportError:  # pragma: no cover - rootdir layouts differ
        from tests.conftest import dataset
    if "bccd" not in {m.name for m in list_models() if m.source == "shipped"}:
        pytest.skip("the shipped bccd model is not installed")
    path = dataset("bccd", "val", "images", "BloodImage_00014.jpg")
    viewer, widget = viewer_widget
    rgb = imread(str(path))
    smear = viewer.add_image(rgb, name="smear", rgb=True)
    widget.source_kind.setCurrentIndex(1)
    widget.image_combo.set_layer(smear)
    assert widget.model_picker.select("bccd")
    _run_and_wait(qtbot, widget)
    assert widget.result is not None and widget.result.kind == "detection", widget.status.text()
    boxes = viewer.layers["smear boxes"]
    n = len(widget.table)
    assert n > 0 and len(boxes.data) == n and sum(widget.counts().values()) == n
    assert set(widget.counts()) <= {"WBC", "RBC", "Platelets"}
    assert f"{n} objects" in widget.counts_label.text()
    # boxes as drawn are the detector's boxes (pixel-edge -> data coordinates)
    for r in range(n):
        y0, x0, y1, x1 = widget.result.boxes[r]
        np.testing.assert_allclose(boxes.data[r].min(axis=0), [y0 - 0.5, x0 - 0.5], atol=1e-4)
        np.testing.assert_allclose(boxes.data[r].max(axis=0), [y1 - 0.5, x1 - 0.5], atol=1e-4)
    widget.focus_object(n - 1)
    t = widget.table
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], t[["centroid_y", "centroid_x"]].iloc[n - 1], atol=1e-6)
    assert boxes.selected_data == {n - 1}
    widget.tabs.setCurrentWidget(widget.plot_panel)
    widget.plot_panel.kind.setCurrentText("scatter")
    widget.plot_panel.x_column.setCurrentText("area_px2")
    widget.plot_panel.y_column.setCurrentText("mean_smear_blue")
    viewer.reset_view()
    qtbot.wait(300)
    shot_dir = Path(os.environ.get("MEDSEG_SCREENSHOT_DIR") or tmp_path)
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = viewer.screenshot(str(shot_dir / "medseg_objects_bccd.png"), canvas_only=False)
    assert shot.ndim == 3 and shot.shape[0] > 200


def test_model_list_says_what_each_model_is_for_and_warns(viewer_widget) -> None:
    viewer, widget = viewer_widget
    widget.source_kind.setCurrentIndex(1)
    combo = widget.model_picker.combo
    texts = {combo.itemText(i) for i in range(combo.count())}
    assert {"nuclei \u00b7 fluo/BF/H&E", "nuclei-he \u00b7 H&E", "bccd \u00b7 blood smear"} <= texts
    rgb = viewer.add_image(np.full((40, 50, 3), 200, np.uint8), name="photo", rgb=True)
    widget.image_combo.set_layer(rgb)
    assert widget.model_picker.current().name == "nuclei-he" and widget.kind_note.isHidden()
    assert widget.model_picker.select("bccd") and widget.kind_note.isHidden()  # a photo may be a smear
    ct = viewer.add_image(np.zeros((3, 40, 50), np.int16), name="ct", metadata={"frame": "LPS",
                                                                              "dicom": {"Modality": "CT"}})
    widget.image_combo.set_layer(ct)
    assert widget.model_picker.current().name == "nuclei"
    assert widget.kind_note.text() == ("The nuclei model was made for fluorescence microscopy, brightfield microscopy "
                                       "and H&E histology images; this image is CT: results are unlikely to mean "
                                       "anything.")
