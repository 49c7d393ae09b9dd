"""The Lesions widget's CNN class from lesions labelled in the table (2.5D crops of a fixed mm size), real viewer.

Run with ``xvfb-run -a python -m pytest tests/napari/test_lesions_cnn.py -q``;
``MEDSEG_SCREENSHOT_DIR`` keeps the screenshot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("torch")

pytestmark = pytest.mark.napari

RUN_TIMEOUT = 480_000  # ms; 2 CPU cores shared with other jobs (a training, then every crop classified)
SPACING = (3.0, 0.8, 0.8)  # mm


def lesion_volume(seed: int = 0):
    """12 round lesions of about 5 mm radius on a 3 x 0.8 x 0.8 mm grid: solid ones (even ids) and rim-enhancing
    ones (odd ids: a bright 1.6 mm rim around a dark core)."""
    rng = np.random.default_rng(seed)
    shape = (14, 100, 150)
    img = rng.normal(40, 8, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, SPACING, strict=True)], indexing="ij")
    kinds = []
    k = 0
    for r in range(3):
        for c in range(4):
            k += 1
            cz, cy, cx = 21.0 + rng.uniform(-2, 2), 14 + 26.0 * r, 14 + 30.0 * c
            rad = rng.uniform(4.5, 6.0)
            d = np.sqrt((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2)
            inside = d <= rad
            mask[inside] = 1
            if k % 2 == 0:
                img[inside] += 120
                kinds.append("solid")
            else:
                img[inside & (d > rad - 1.6)] += 150
                img[inside & (d <= rad - 1.6)] -= 20
                kinds.append("rim")
    return img, mask, kinds


@pytest.fixture
def viewer_widget(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    viewer = make_napari_viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Lesions")
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    yield viewer, widget
    widget.cnn_panel.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)


def test_cnn_class_of_lesions_labelled_in_the_table(viewer_widget, qtbot, tmp_path) -> None:
    viewer, widget = viewer_widget
    img, mask, _ = lesion_volume()
    image = viewer.add_image(img, name="mr", scale=SPACING, units="mm")
    labels = viewer.add_labels(mask, name="mask", scale=SPACING, units="mm")
    widget.source_kind.setCurrentIndex(1)
    widget.labels_combo.set_layer(labels)
    widget.intensity_combo.set_layer(image)
    assert widget.intensity_check.isChecked()
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    t = widget.result.table
    assert len(t) == 12, widget.status.text()
    # the kind of each component, from the image: rim lesions are dark at their centroid
    centre = [img[tuple(np.rint(r[["centroid_z", "centroid_y", "centroid_x"]].to_numpy(float)).astype(int))]
              for _, r in t.iterrows()]
    truth = np.where(np.asarray(centre) > 100, "solid", "rim")
    assert sorted(truth.tolist()) == ["rim"] * 6 + ["solid"] * 6

    # label 4 of each kind in the table
    widget.cnn_section.expand(animate=False)
    lab = widget.row_labeller
    for cls in ("solid", "rim"):
        rows = [int(i) for i in np.flatnonzero(truth == cls)[:4]]
        widget.table_view.select_rows(rows)
        lab.class_combo.setCurrentText(cls)
        assert lab.label_selected() == 4
    shown = widget.table
    assert (shown["label"] != "").sum() == 8 and "label" in widget.table_view.model.columns()[:5]

    cnn = widget.cnn_panel
    assert cnn.unit_label.text() == "mm" and cnn.mode.isEnabled()
    cnn.mode.setCurrentIndex(1)  # 2.5D: three orthogonal planes
    cnn.pixels.setValue(32)
    cnn.minutes.setValue(0)  # no time limit: the same training on a loaded machine
    cnn.epochs.setValue(40)
    assert cnn.train(), widget.status.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    t = widget.result.table
    assert "cnn_class" in t.columns, widget.status.text()
    np.testing.assert_allclose(t["cnn_p_rim"] + t["cnn_p_solid"], 1.0, atol=1e-9)
    acc = float(np.mean(t["cnn_class"].to_numpy() == truth))
    assert acc >= 0.75, (acc, widget.status.text(), cnn.info.text())
    card = json.loads((cnn.last_result.model_path / "model.json").read_text())
    crop = card["input"]["crop"]
    assert crop["mode"] == "2.5d" and crop["unit"] == "mm" and card["input"]["size"] == [32, 32]
    assert crop["size"] == pytest.approx(2.0 * np.median(t["equivalent_diameter_mm"]), rel=1e-3)
    # the size filter keeps the CNN columns; labels and classes stay with their lesions
    widget.min_size.setValue(float(np.sort(t["volume_mm3"])[3]) + 1e-6)
    assert len(widget.table) < 12 and "cnn_class" in widget.table.columns
    assert set(widget.table["id"]) < set(t["id"])

    qtbot.wait(300)
    shot_dir = Path(os.environ.get("MEDSEG_SCREENSHOT_DIR") or tmp_path)
    shot_dir.mkdir(parents=True, exist_ok=True)
    widget.scroll.verticalScrollBar().setValue(widget.scroll.verticalScrollBar().maximum())
    shot = viewer.screenshot(str(shot_dir / "medseg_lesions_cnn.png"), canvas_only=False)
    assert shot.ndim == 3 and shot.shape[0] > 200


def test_cnn_without_an_image_says_so(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    _, mask, _ = lesion_volume()
    labels = viewer.add_labels(mask, name="mask", scale=SPACING, units="mm")
    widget.source_kind.setCurrentIndex(1)
    widget.labels_combo.set_layer(labels)
    widget.intensity_check.setChecked(False)
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    widget.table_view.select_rows([0])
    widget.row_labeller.label_selected("a")
    widget.table_view.select_rows([1])
    widget.row_labeller.label_selected("b")
    assert not widget.cnn_panel.train()
    assert "tick 'intensities'" in widget.status.text()
