"""The Lesions dock widget on a real viewer, through the real threaded path.

Run with ``xvfb-run -a python -m pytest tests/napari/test_lesions_widget.py -q``.
Models are tiny random-weight semantic U-Nets in a temporary
``MEDSEG_MODELS_DIR`` (instance norm: their random output has blobs of many
sizes and scores, i.e. "lesions"); the worker thread is never switched off.
Set ``MEDSEG_SCREENSHOT_DIR`` to keep the screenshots (default: tmp_path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Labels  # noqa: E402

from napari_medseg._napari._worker import ProgressJob  # noqa: E402
from napari_medseg._napari.layers import spatial_geometry  # noqa: E402
from napari_medseg._napari.widgets.common import viewer_camera  # noqa: E402
from napari_medseg.analysis.lesions import lesion_table, lesions_from_labels  # noqa: E402
from napari_medseg.geometry import Geometry  # noqa: E402
from tests.conftest import DATASETS, REPO  # noqa: E402

pytestmark = pytest.mark.napari

RUN_TIMEOUT = 120_000  # ms; 2 CPU cores shared with other jobs
MR = REPO / "sample_data" / "mr" / "mr_0004"


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    pytest.importorskip("torch")
    from napari_medseg.models.testing import make_random_model

    d = tmp_path / "models"
    make_random_model(d / "lesion3", name="lesion3", kind="semantic", n_classes=3, seed=1, norm="instance")
    make_random_model(d / "lesion-rgb", name="lesion-rgb", kind="semantic", n_classes=2, in_channels=3, seed=0,
                      norm="instance")
    make_random_model(d / "tiny", name="tiny", kind="instance", seed=1)  # not a lesion model: never offered
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(d))
    return d


@pytest.fixture
def viewer_widget(make_napari_viewer, models_dir, qtbot):
    viewer = make_napari_viewer(show=True)  # shown: the canvas renders, the screenshot is real
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Lesions")
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    yield viewer, widget
    if widget.running:
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)


@pytest.fixture
def starts(monkeypatch) -> list[int]:
    """Counts ProgressJob starts (a re-filter must start none)."""
    calls: list[int] = []
    orig = ProgressJob.start

    def start(self):
        calls.append(1)
        return orig(self)

    monkeypatch.setattr(ProgressJob, "start", start)
    return calls


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def _run_and_wait(qtbot, widget) -> None:
    qtbot.mouseClick(widget.run_button, _left())
    assert widget.running and not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def _click_row(qtbot, widget, row: int) -> None:
    tv = widget.table_view
    idx = tv.view_index(row)
    tv.view.scrollTo(idx)
    qtbot.mouseClick(tv.view.viewport(), _left(), pos=tv.view.visualRect(idx).center())


def _ids(layer) -> set[int]:
    return {int(i) for i in np.unique(np.asarray(layer.data))} - {0}


def _oblique_affine() -> np.ndarray:
    """DICOM-like: 3 mm slices, 0.8 x 0.7 mm pixels, rotated 20 degrees in plane, shifted (LPS mm)."""
    a = np.deg2rad(20.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([3.0, 0.8, 0.7])
    aff[:3, 3] = (-40.0, 12.5, -100.0)
    return aff


def _scene_3d():
    """A 10x48x56 grey volume with three box lesions (ids 2, 5 and 9) of known size."""
    rng = np.random.default_rng(3)
    img = rng.normal(100, 5, (10, 48, 56)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[2:5, 5:13, 6:16] = 2  # 3 x 8 x 10 = 240 voxels
    lab[6:9, 30:36, 36:48] = 5  # 3 x 6 x 12 = 216
    lab[4, 40:42, 8:10] = 9  # 4 voxels
    img[lab == 2] += 200
    img[lab == 5] += 80
    return img, lab


# ---------------------------------------------------------------------- the module and the dock


def test_widget_module_import_is_cheap() -> None:
    code = ("import sys, napari_medseg._napari.widgets.lesions\n"
            "assert 'torch' not in sys.modules, 'torch imported by the widget module'\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_dock_fits_a_laptop_screen_and_lists_only_semantic_models(viewer_widget) -> None:
    _viewer, widget = viewer_widget
    hint = widget.minimumSizeHint()
    assert hint.width() <= 360 and hint.height() <= 700, hint
    for kind in (0, 1):  # the content, for both sources, fits without a horizontal scroll bar
        widget.source_kind.setCurrentIndex(kind)
        assert widget.scroll.widget().minimumSizeHint().width() <= 360
    assert sorted(m.name for m in widget.model_picker.models()) == ["lesion-rgb", "lesion3", "ms-lesions"]
    assert all(m.card.kind == "semantic" for m in widget.model_picker.models())


# ---------------------------------------------------------------------- image + model


def test_model_on_dicom_mr_time_point_filter_click_export(viewer_widget, qtbot, tmp_path, starts) -> None:
    """4D DICOM MR (T, Z, Y, X; spacing in the affine): lesions of the time point on screen, filtered, navigated."""
    from napari_medseg.analysis.lesions import lesions_iter
    from napari_medseg.progress import run

    viewer, widget = viewer_widget
    (img,) = viewer.open(str(MR), plugin="napari-medseg")
    assert img.data.ndim == 4 and img.metadata["axes"] == "TZYX"
    widget.source_kind.setCurrentIndex(0)
    widget.image_combo.set_layer(img)
    assert widget.model_picker.select("lesion3")
    viewer.dims.set_current_step(0, 1)
    _run_and_wait(qtbot, widget)
    assert len(starts) == 1

    fill, outline = widget.lesions_layer, widget.outlines_layer
    assert [lay.name for lay in viewer.layers] == [img.name, f"{img.name} lesions", f"{img.name} lesion outlines"]
    assert isinstance(fill, Labels) and fill.data.shape == img.data.shape[1:]
    assert outline.contour == 1 and outline.data is fill.data
    # on the image's geometry: the same voxel lands on the same patient position
    for zyx in ([0, 0, 0], [7, 30, 41], [14, 63, 63]):
        np.testing.assert_allclose(fill.data_to_world(zyx), img.data_to_world([1, *zyx])[1:], atol=1e-6)
    assert fill.metadata["napari_medseg"]["time_index"] == 1
    assert "at time point 1" in widget.status.text(), widget.status.text()

    # the table is the core's on the same data and geometry
    expect = run(lesions_iter(np.asarray(img.data[1]), models_dir_model(widget, "lesion3"), spatial_geometry(img),
                              axes="ZYX"))
    t = widget.result.table
    assert len(t) == len(expect.table) > 10
    np.testing.assert_allclose(t["volume_mm3"], expect.table["volume_mm3"])
    np.testing.assert_allclose(t["score"], expect.table["score"])
    for col in ("id", "class", "score", "volume_ml", "long_axis_mm", "short_axis_mm", "recist_slice"):
        assert col in t.columns
    assert len(widget.table) == len(t) and _ids(fill) == set(t["id"])
    assert widget.table_view.model.rowCount() == len(t)
    # the view leads with what is reported (RECIST axes, volume); the CSV keeps the core's order
    assert widget.table_view.model.columns()[:7] == ["id", "class", "score", "long_axis_mm", "short_axis_mm",
                                                     "volume_ml", "volume_mm3"]

    # re-filter: rows and layer data change, no new job
    widget.min_score.setValue(0.5)
    keep = t["score"] >= 0.5
    assert 0 < keep.sum() < len(t)
    assert len(widget.table) == keep.sum() and _ids(fill) == set(t["id"][keep]) == _ids(outline)
    size = float(np.median(t["volume_mm3"][keep]))
    widget.min_size.setValue(size)
    keep &= t["volume_mm3"] >= widget.min_size.value()
    assert len(widget.table) == keep.sum() > 0 and _ids(fill) == set(t["id"][keep])
    assert widget.min_size.suffix() == " mm\u00b3"
    assert widget.table_view.model.rowCount() == keep.sum()
    assert f"{keep.sum()} of {len(t)} lesions" in widget.counts_label.text()
    assert len(starts) == 1 and not widget.running

    # click the row of the largest lesion: its RECIST slice, at this time point, centred and selected
    widget.sort_table("volume_mm3")
    row = widget.table_view.visible_rows()[0]
    r = widget.table.iloc[row]
    assert r["volume_mm3"] == widget.table["volume_mm3"].max()
    viewer.dims.set_current_step(0, 2)
    viewer.dims.set_current_step(1, 0 if r["recist_slice"] else 1)
    _click_row(qtbot, widget, row)
    assert viewer.dims.current_step[1] == r["recist_slice"]
    assert viewer.dims.current_step[0] == 1  # back to the time point of the lesions
    world = fill.data_to_world([r["recist_slice"], r["centroid_y"], r["centroid_x"]])
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], world[-2:], atol=1e-6)
    assert fill.selected_label == int(r["id"])

    # export: the filtered rows
    import pandas as pd

    path = widget.export_csv(tmp_path / "mr_lesions.csv")
    back = pd.read_csv(path)
    assert back["id"].tolist() == widget.table["id"].tolist() and len(back) == keep.sum()
    np.testing.assert_allclose(back["long_axis_mm"], widget.table["long_axis_mm"])
    assert "Wrote" in widget.status.text()

    # a re-run replaces only the layers the widget made
    _run_and_wait(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == [img.name, f"{img.name} lesions", f"{img.name} lesion outlines"]
    assert len(starts) == 2


def models_dir_model(widget, name: str) -> Path:
    return next(m.path for m in widget.model_picker.models() if m.name == name)


def test_a_models_operating_point_sets_the_controls(viewer_widget, models_dir) -> None:
    """A card's output.lesions (threshold, min score, min size) is where the controls start for that model."""
    import json

    from napari_medseg.models.testing import make_random_model

    _viewer, widget = viewer_widget
    folder = make_random_model(models_dir / "lesion-op", name="lesion-op", kind="semantic", n_classes=2, seed=2)
    card = json.loads((folder / "model.json").read_text())
    card["output"]["lesions"] = {"threshold": 0.7, "min_size": 3.0, "score_threshold": 0.6, "tta": True}
    (folder / "model.json").write_text(json.dumps(card))
    widget.model_picker.refresh()
    assert widget.model_picker.select("lesion-op")
    assert (widget.probability.value(), widget.min_score.value(), widget.min_size.value()) == (0.7, 0.6, 3.0)
    assert widget.tta.isChecked()
    assert widget.model_picker.select("lesion3")  # no operating point: arg-max, everything shown
    assert (widget.probability.value(), widget.min_score.value(), widget.min_size.value()) == (0.0, 0.0, 0.0)
    assert not widget.tta.isChecked()
    assert widget.probability.text() == "arg-max"


def test_2d_rgb_image_with_an_rgb_model(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:96, :128]
    for cy, cx, r in ((30, 30, 12), (60, 90, 18)):
        rgb[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (180, 90, 60)
    img = viewer.add_image(rgb, name="skin", rgb=True, scale=(0.05, 0.05), units="mm")
    widget.image_combo.set_layer(img)
    assert widget.model_picker.current().name == "lesion-rgb"  # the RGB model for an RGB image
    _run_and_wait(qtbot, widget)
    assert widget.result is not None, widget.status.text()
    t = widget.result.table
    assert "area_mm2" in t.columns and "long_axis_mm" in t.columns and "recist_slice" not in t.columns
    assert widget.lesions_layer.data.shape == (96, 128)
    np.testing.assert_allclose(widget.lesions_layer.scale, (0.05, 0.05))
    assert widget.min_size.suffix() == " mm\u00b2"
    if len(widget.table):
        widget.focus_lesion(0)
        r = widget.table.iloc[0]
        np.testing.assert_allclose(viewer_camera(viewer).center[-2:], (0.05 * r["centroid_y"], 0.05 * r["centroid_x"]))


def test_cancel_adds_nothing(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    img = viewer.add_image(np.random.default_rng(1).normal(size=(8, 40, 40)).astype(np.float32), name="vol")
    widget.image_combo.set_layer(img)
    widget.model_picker.select("lesion3")
    widget.run()
    widget.cancel()  # before the worker's result reaches the GUI thread: always counts as cancelled
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    assert [lay.name for lay in viewer.layers] == ["vol"]
    assert widget.status.text().startswith("Cancelled")
    assert widget.result is None


# ---------------------------------------------------------------------- existing labels


def test_existing_labels_on_an_oblique_dicom_like_grid(viewer_widget, qtbot, tmp_path, starts) -> None:
    viewer, widget = viewer_widget
    img, lab = _scene_3d()
    aff = _oblique_affine()
    image = viewer.add_image(img, name="ct", affine=aff, units="mm", metadata={"frame": "LPS"})
    labels = viewer.add_labels(lab, name="seg", affine=aff, units="mm", metadata={"frame": "LPS"})
    widget.source_kind.setCurrentIndex(1)
    widget.labels_combo.set_layer(labels)
    widget.intensity_combo.set_layer(image)
    assert widget.intensity_check.isChecked()  # a grey image: its intensities by default
    assert widget.run_button.text() == "Measure lesions"
    _run_and_wait(qtbot, widget)

    t = widget.result.table
    g = spatial_geometry(labels)
    voxel = abs(np.linalg.det(aff[:3, :3]))
    assert g.voxel_size == pytest.approx(voxel)
    assert t["id"].tolist() == [2, 5, 9]  # "auto": several values, one lesion each, ids kept
    np.testing.assert_allclose(t["volume_mm3"], np.array([240, 216, 4]) * voxel)
    np.testing.assert_allclose(t["volume_ml"], np.array([240, 216, 4]) * voxel / 1000)
    ref = lesion_table(lab, g, image=img, image_name="ct")
    for col in ("volume_mm3", "long_axis_mm", "short_axis_mm", "recist_slice", "max_diameter_mm", "centroid_z_mm",
                "mean_ct"):
        np.testing.assert_allclose(t[col], ref[col], err_msg=col)
    np.testing.assert_allclose(t["mean_ct"].iloc[0], img[lab == 2].mean(), rtol=1e-6)
    assert not labels.data.flags.writeable or np.array_equal(labels.data, lab)  # the user's layer is untouched
    assert widget.lesions_layer is not labels and widget.lesions_layer.data is not labels.data
    np.testing.assert_allclose(widget.lesions_layer.affine.affine_matrix, labels.affine.affine_matrix)
    assert not widget.min_score.isEnabled()  # labels have no score: its column is hidden (1 each)
    assert widget.table_view.view.isColumnHidden(widget.table_view.model.columns().index("score"))

    # minimum size re-filters without a job
    widget.min_size.setValue(10 * voxel)
    assert widget.table["id"].tolist() == [2, 5] and _ids(widget.lesions_layer) == {2, 5}
    assert len(starts) == 1

    # click: the slice of the lesion (world z of its RECIST slice), centred
    row = widget.table["id"].tolist().index(5)
    viewer.dims.set_current_step(0, 0)
    _click_row(qtbot, widget, row)
    r = widget.table.iloc[row]
    world = widget.lesions_layer.data_to_world([r["recist_slice"], r["centroid_y"], r["centroid_x"]])
    data_z = labels.world_to_data(viewer.dims.point)[0]
    assert round(float(data_z)) == r["recist_slice"]
    assert viewer.dims.point[0] == pytest.approx(world[0], abs=1.5)  # the nearest step of 3 mm
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], world[-2:], atol=1e-6)
    assert widget.lesions_layer.selected_label == 5

    # a binary mask: its connected components are the lesions
    mask = viewer.add_labels((lab > 0).astype(np.uint8), name="mask", affine=aff, units="mm")
    widget.labels_combo.set_layer(mask)
    widget.min_size.setValue(0)
    _run_and_wait(qtbot, widget)
    t = widget.result.table
    assert len(t) == 3 and set(t["class"]) == {"lesion"}
    assert sorted(t["n_voxels"] if "n_voxels" in t else t["n_pixels"]) == [4, 216, 240]
    assert [lay.name for lay in viewer.layers][-2:] == ["mask lesions", "mask lesion outlines"]
    assert "seg lesions" in [lay.name for lay in viewer.layers]  # the other source's layers stay


def test_3d_view_shows_solid_lesions_and_2d_outlines(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    _img, lab = _scene_3d()
    layer = viewer.add_labels(lab, name="seg", scale=(3.0, 0.8, 0.8), units="mm")
    widget.source_kind.setCurrentIndex(1)
    widget.labels_combo.set_layer(layer)
    _run_and_wait(qtbot, widget)
    fill, outline = widget.lesions_layer, widget.outlines_layer
    assert outline.contour == 1 and fill.visible
    viewer.dims.ndisplay = 3
    assert outline.contour == 0 and not fill.visible and outline.visible
    widget.focus_lesion(0)  # centring in 3D works too
    viewer.dims.ndisplay = 2
    assert outline.contour == 1 and fill.visible


def test_errors_are_shown_not_raised(viewer_widget, qtbot, models_dir) -> None:
    from napari_medseg.errors import ModelError
    from napari_medseg.models.registry import resolve_model

    viewer, widget = viewer_widget
    widget.source_kind.setCurrentIndex(0)
    widget.run()
    assert widget.status.text().startswith("No image layer") and not widget.running
    img = viewer.add_image(np.zeros((20, 20), np.float32), name="img")
    widget.image_combo.set_layer(img)
    widget.model_picker.combo.setCurrentIndex(-1)
    widget.run()
    assert widget.status.text().startswith("No lesion model") and not widget.running
    with pytest.raises(ModelError, match="semantic"):
        widget.model_picker.add_path(str(models_dir / "tiny"))
    info = resolve_model(models_dir / "tiny")
    widget.model_picker.current = lambda: info  # as if an instance model got there anyway
    widget.run()
    assert "is a instance model; lesions need a semantic model" in widget.status.text()
    widget.source_kind.setCurrentIndex(1)
    widget.run()
    assert widget.status.text().startswith("No Labels layer")
    labels = viewer.add_labels(np.zeros((10, 10), np.uint8), name="small")
    widget.labels_combo.set_layer(labels)
    widget.intensity_combo.set_layer(img)
    widget.intensity_check.setChecked(True)
    widget.run()
    assert "intensities: image 'img' has shape (20, 20)" in widget.status.text()
    widget.intensity_check.setChecked(False)
    _run_and_wait(qtbot, widget)  # empty labels: an empty table, no crash
    assert len(widget.result.table) == 0 and widget.status.text().startswith("0 lesions")
    assert widget.export_csv(Path("/nonexistent/dir/x.csv")) is None
    assert "Export failed" in widget.status.text()
    assert len(viewer.layers) == 4


def test_lesions_from_labels_core() -> None:
    g = Geometry.from_napari("ZYX", scale=(2.0, 0.5, 0.5), units=("mm",) * 3)
    lab = np.zeros((6, 20, 20), np.uint8)
    lab[1:4, 2:8, 3:9] = 1
    lab[2:5, 12:16, 12:18] = 1
    res = lesions_from_labels(lab, g)  # a mask: its components
    assert res.table["id"].tolist() == [1, 2] and res.table["volume_mm3"].tolist() == [54.0, 36.0]
    lab[lab == 1] = 3
    lab[2:5, 12:16, 12:18] = 7
    res = lesions_from_labels(lab, g, class_names={7: "tumour"})
    assert res.table["id"].tolist() == [3, 7] and res.table["class"].tolist() == ["lesion", "tumour"]
    labels, table = res.refilter(min_size=40.0)
    assert table["id"].tolist() == [3] and set(np.unique(labels)) == {0, 3}
    res = lesions_from_labels(lab, g, split="components")
    assert res.table["class"].tolist() == ["label 3", "label 7"] and res.table["id"].tolist() == [1, 2]


# ---------------------------------------------------------------------- screenshots


def _shot_dir(tmp_path) -> Path:
    d = Path(os.environ.get("MEDSEG_SCREENSHOT_DIR") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_screenshot_model_on_dicom_mr(viewer_widget, qtbot, tmp_path) -> None:
    viewer, widget = viewer_widget
    viewer.window.resize(1400, 860)
    (img,) = viewer.open(str(MR), plugin="napari-medseg")
    widget.source_kind.setCurrentIndex(0)
    widget.image_combo.set_layer(img)
    widget.model_picker.select("lesion3")
    viewer.dims.set_current_step(0, 1)
    _run_and_wait(qtbot, widget)
    widget.min_score.setValue(0.4)  # the mean class probability of a random 3-class model
    assert len(widget.table) > 0
    widget.sort_table("score")
    _click_row(qtbot, widget, widget.table_view.visible_rows()[0])
    qtbot.wait(300)
    shot = viewer.screenshot(str(_shot_dir(tmp_path) / "medseg_lesions_mr_model.png"), canvas_only=False)
    assert shot.ndim == 3 and shot.shape[0] > 200 and shot.shape[1] > 300


def test_screenshot_ms_lesions(viewer_widget, qtbot, tmp_path) -> None:
    """Real MS lesions on FLAIR (1 mm MNI, LAS NIfTI): the consensus mask's components, measured and navigated.

    The dataset README's figures: patient19 has 98 lesions, 49.8 mL (26-connected components).
    """
    case = DATASETS / "ms_lesions" / "patient19"
    if not case.is_dir():
        pytest.skip(f"{case} not present (../shared/datasets is only on developer/CI machines)")
    viewer, widget = viewer_widget
    viewer.window.resize(1400, 860)
    (flair,) = viewer.open(str(next(case.glob("FLAIR_*.nii.gz"))), plugin="napari-medseg")
    (gold,) = viewer.open(str(next(case.glob("GOLD_STANDARD_*.nii.gz"))), plugin="napari-medseg",
                          layer_type="labels")
    gold.visible = False
    widget.source_kind.setCurrentIndex(1)
    widget.labels_combo.set_layer(gold)
    widget.intensity_combo.set_layer(flair)
    _run_and_wait(qtbot, widget)
    t = widget.result.table
    assert len(t) == 98, widget.status.text()
    assert t["volume_ml"].sum() == pytest.approx(49.8, abs=0.05)
    assert t.filter(like="mean_FLAIR").shape[1] == 1  # intensities of the FLAIR in every lesion
    widget.min_size.setValue(10.0)
    widget.sort_table("volume_mm3")
    _click_row(qtbot, widget, widget.table_view.visible_rows()[1])  # the largest lesion but the confluent one
    assert widget.lesions_layer.selected_label == int(t["id"][t["volume_mm3"].rank(ascending=False) == 2].iloc[0])
    qtbot.wait(300)
    shot = viewer.screenshot(str(_shot_dir(tmp_path) / "medseg_lesions_ms.png"), canvas_only=False)
    assert shot.ndim == 3 and shot.shape[0] > 200
