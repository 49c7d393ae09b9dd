"""The Train dock widget in a real viewer, through the real thread worker.

Run with ``xvfb-run -a python -m pytest tests/napari/test_train_widget.py -q``.
Models go to a temporary ``MEDSEG_MODELS_DIR``; torch uses one thread (the
CI's cores are shared).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt, QTimer  # noqa: E402

from napari_medseg._napari.widgets.segment import SegmentWidget  # noqa: E402
from napari_medseg._napari.widgets.train import PREVIEW_OF, TrainWidget, roi_polygons  # noqa: E402
from napari_medseg.models.spec import load_model  # noqa: E402

pytestmark = pytest.mark.napari

TIMEOUT = 150_000  # ms; 2 CPU cores shared with other jobs


def _blobs(shape=(64, 64), n=8, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        cy, cx = rng.integers(7, np.array(shape) - 7)
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= 16) & (lab == 0)] = k
    img = (np.where(lab > 0, 180.0, 30.0) + rng.normal(0, 8, shape)).astype(np.float32)
    return img, lab


@pytest.fixture
def setup(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    viewer = make_napari_viewer()
    img, lab = _blobs()
    image = viewer.add_image(img, name="cells")
    labels = viewer.add_labels(lab, name="painted")
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    qtbot.waitUntil(lambda: widget.device_picker.ready and seg.device_picker.ready, timeout=60_000)
    yield viewer, widget, seg, image, labels
    for w in (widget, seg):
        if w.running:
            w.cancel()
            qtbot.waitUntil(lambda w=w: not w.running, timeout=TIMEOUT)
    if widget.previewing:
        qtbot.waitUntil(lambda: not widget.previewing, timeout=TIMEOUT)


def test_trains_two_epochs_and_the_model_shows_up_in_the_segment_widget(setup, qtbot):
    viewer, widget, seg, image, labels = setup
    painted = labels.data.copy()
    widget.scratch.setChecked(True)
    widget.minutes.setValue(0)  # no time limit
    widget.epochs.setValue(2)
    widget.name_edit.setText("painted-cells")
    widget.precision.setCurrentText("float32")
    assert "painted-cells" not in [m.name for m in seg.model_picker.models()]
    assert "bounding box of the painted labels" in widget.region_label.text()

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(50)
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    assert widget.running and not widget.train_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    timer.stop()

    assert widget.train_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.plot.epochs == [1, 2] and all(v is not None for v in widget.plot.losses)
    assert "Saved 'painted-cells' after 2 epoch(s)" in widget.status.text(), widget.status.text()
    assert "painted-cells" in [m.name for m in seg.model_picker.models()]
    _, card = load_model(widget.last_result.model_path)
    assert card.training["epochs"] == 2 and card.training["data"][0]["name"] == "cells"
    assert card.training["precision"] == "float32"  # the Advanced choice reached the trainer
    # the GUI kept processing events while the worker trained (torch's lazy imports and library loads
    # in the worker hold the GIL for a second or two once, at the start: tolerated)
    gaps = np.diff(ticks)
    assert len(ticks) > 20 and np.percentile(gaps, 95) < 0.3 and gaps.max() < 5.0, (np.percentile(gaps, 95),
                                                                                     gaps.max())
    np.testing.assert_array_equal(labels.data, painted)
    assert widget.name_edit.text() != "painted-cells"  # a fresh name for the next run

    # preview: a layer of our own, replaced (not duplicated) on the next preview
    qtbot.mouseClick(widget.preview_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.previewing, timeout=TIMEOUT)
    previews = [lay for lay in viewer.layers if lay.metadata.get(PREVIEW_OF) == "cells"]
    assert len(previews) == 1 and previews[0].data.shape == (64, 64)
    widget.preview()
    qtbot.waitUntil(lambda: not widget.previewing, timeout=TIMEOUT)
    assert [lay for lay in viewer.layers if lay.metadata.get(PREVIEW_OF) == "cells"] == previews
    np.testing.assert_array_equal(labels.data, painted)


def test_cancel_keeps_the_best_checkpoint(setup, qtbot):
    viewer, widget, seg, image, labels = setup
    widget.scratch.setChecked(True)
    widget.minutes.setValue(0)
    widget.epochs.setValue(500)
    widget.name_edit.setText("cut-short")
    widget.train()
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 1, timeout=TIMEOUT)
    t0 = time.perf_counter()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert time.perf_counter() - t0 < 10.0
    assert "best checkpoint so far is saved as 'cut-short'" in widget.status.text(), widget.status.text()
    _, card = load_model(widget.model_path)
    assert card.training["cancelled"] is True and card.training["epochs"] >= 1
    assert "cut-short" in [m.name for m in seg.model_picker.models()]


def test_roi_shapes_map_to_image_pixels(setup):
    viewer, widget, seg, image, labels = setup
    shapes = viewer.add_shapes([np.array([[5, 5], [5, 10], [10, 10], [10, 5]], float)], shape_type="rectangle",
                               scale=(2, 2), name="roi")
    (poly,) = roi_polygons(shapes, image)
    np.testing.assert_allclose(poly, [[10, 10], [10, 20], [20, 20], [20, 10]])
    widget.use_roi.setChecked(True)
    widget.roi_combo.set_layer(shapes)
    assert "inside 1 ROI shape(s), rows 10-20, cols 10-20" in widget.region_label.text()
    widget.use_roi.setChecked(False)
    text = widget.region_label.text()
    assert "bounding box of the painted labels" in text and "8 painted objects" in text


def test_region_text_follows_painting(setup, qtbot):
    viewer, widget, seg, image, labels = setup
    labels.paint((60, 60), 99, refresh=True)  # a new object in the corner, through napari's paint path
    qtbot.waitUntil(lambda: "9 painted objects" in widget.region_label.text(), timeout=5_000)


def test_fine_tuning_shows_the_base_model_as_epoch_zero(setup, qtbot, tmp_path):
    from napari_medseg.models.testing import make_random_model

    viewer, widget, seg, image, labels = setup
    make_random_model(tmp_path / "models" / "tinybase", name="tinybase", base_channels=4, depth=2)
    widget.model_picker.refresh()
    assert widget.model_picker.select("tinybase")
    widget.scratch.setChecked(False)
    widget.minutes.setValue(0)
    widget.epochs.setValue(2)
    widget.name_edit.setText("from-base")
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert widget.plot.epochs[0] == 0 and widget.plot.losses[0] is None and widget.plot.scores[0] is not None
    assert widget.plot.epochs[1:] == [1, 2]
    res = widget.last_result
    assert res is not None and res.card.training["base_model"].endswith("tinybase")
    assert "Saved 'from-base'" in widget.status.text()


def test_empty_labels_region_text_says_validation_will_come(setup):
    viewer, widget, seg, image, labels = setup
    empty = viewer.add_labels(np.zeros((64, 64), np.int32), name="empty")
    widget.labels_combo.set_layer(empty)
    widget.image_combo.set_layer(image)
    assert widget.val_percent.value() == 20
    assert widget.region_label.text().splitlines() == [
        "image 'cells': nothing painted and no ROI: not used",
        "Inside the region unpainted pixels count as background; outside it nothing is used.",
        ("No validation yet: nothing is painted; 20 % of the annotation will be held out for validation once "
         "there is some.")]
    widget.val_percent.setValue(0)
    widget._update_region_text()
    assert widget.region_label.text().splitlines()[-1] == "No validation (val_fraction = 0): the last weights are kept."


def test_instance_mode_ignores_the_greyed_out_classes(setup):
    viewer, widget, seg, image, labels = setup
    widget.scratch.setChecked(True)
    widget.classes.setText("lesion, oedema")
    assert widget.mode.currentText() == "instance" and not widget.classes.isEnabled()
    assert widget._collect()["class_names"] is None
    widget.mode.setCurrentText("semantic")
    assert widget.classes.isEnabled() and widget._collect()["class_names"] == ["lesion", "oedema"]


def test_kept_base_weights_says_what_to_do_next(setup, tmp_path):
    from types import SimpleNamespace

    from napari_medseg._napari._worker import JobOutcome

    viewer, widget, seg, image, labels = setup
    card = SimpleNamespace(name="mine", metrics={"val_ap50": 0.41}, training={"kept_base_weights": True})
    res = SimpleNamespace(card=card, history=[{}, {}], best={"epoch": 0}, stopped_early=True,
                          model_path=tmp_path / "mine")
    widget._finish(JobOutcome(result=res, elapsed=12.0))
    lines = widget.status.text().splitlines()
    assert lines[0] == "Saved 'mine' after 2 epoch(s) in 12 s (stopped early); best epoch 0: val_ap50 0.410"
    assert lines[1] == ("No epoch beat the base model on the held-out annotation, so its weights were kept "
                        "(post-processing re-tuned). To do better: paint more objects (whole ones, across the kinds "
                        "of places you care about), train longer (more minutes or epochs), or lower the learning "
                        "rate (Advanced, e.g. 3e-4).")
