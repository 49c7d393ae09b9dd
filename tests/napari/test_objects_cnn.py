"""The Objects widget's CNN on cell crops, in a real viewer: label table rows, train, probabilities in the table.

Run with ``xvfb-run -a python -m pytest tests/napari/test_objects_cnn.py -q``;
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

from napari_medseg._napari.widgets.objects import ObjectsWidget  # noqa: E402

pytestmark = pytest.mark.napari

RUN_TIMEOUT = 480_000  # ms; 2 CPU cores shared with other jobs (a training, then every crop classified)


def _cells(n_rows: int = 3, n_cols: int = 4, seed: int = 0):
    """Discs (even ids) and squares (odd ids) of one brightness, on a uint8 image."""
    rng = np.random.default_rng(seed)
    h, w = 40 * n_rows, 40 * n_cols
    img = rng.normal(30, 6, (h, w))
    lab = np.zeros((h, w), np.uint16)
    yy, xx = np.mgrid[:h, :w]
    k = 0
    for r in range(n_rows):
        for c in range(n_cols):
            k += 1
            cy, cx = 20 + 40 * r + rng.integers(-2, 3), 20 + 40 * c + rng.integers(-2, 3)
            rad = int(rng.integers(8, 11))
            m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= rad * rad) if k % 2 == 0 else (
                (abs(yy - cy) <= rad * 0.85) & (abs(xx - cx) <= rad * 0.85))
            img[m] += 150
            lab[m] = k
    return lab, np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def viewer_widget(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    viewer = make_napari_viewer(show=True)
    widget = ObjectsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Objects", area="right")
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    yield viewer, widget
    widget.cnn_panel.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)


def test_cnn_on_cell_crops_from_labelled_rows(viewer_widget, qtbot, tmp_path) -> None:
    viewer, widget = viewer_widget
    lab, img = _cells()
    image = viewer.add_image(img, name="cells image", scale=(2.0, 2.0), units="micrometer")
    labels = viewer.add_labels(lab, name="cells", scale=(2.0, 2.0), units="micrometer")
    widget.source_kind.setCurrentIndex(0)
    widget.labels_combo.set_layer(labels)
    widget.intensity_list.set_checked(image)
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    assert widget.table is not None and len(widget.table) == 12, widget.status.text()
    truth = np.where(widget.table["id"] % 2 == 0, "disc", "square")

    # label 8 rows in the table (4 discs, 4 squares): select, pick the class, "Label selected"
    cp = widget.classifier_panel
    widget.tabs.setCurrentWidget(cp)
    for cls, rows in (("disc", [1, 3, 5, 7]), ("square", [0, 2, 4, 6])):
        widget.table_view.select_rows(rows)
        assert widget.table_view.selected_rows() == rows
        cp.mark_class.setCurrentText(cls)
        assert widget.row_labeller.label_selected() == 4
    assert widget.table["label"].tolist()[:8] == truth[:8].tolist() and widget.table["label"].tolist()[8:] == [""] * 4
    assert "disc: 4, square: 4 labelled" in widget.row_labeller.count_label.text()

    # the CNN: crops of 2.5 x the cells' diameter in µm, a short budget
    cp.method.setCurrentIndex(1)
    assert cp.stack.currentWidget() is widget.cnn_panel
    cnn = widget.cnn_panel
    assert cnn.unit_label.text() == "µm" and not cnn.mode.isEnabled()  # 2D cells: planes only
    cnn.minutes.setValue(0)  # no time limit: the same training on a loaded machine
    cnn.epochs.setValue(40)
    cnn.pixels.setValue(32)
    assert cnn.train(), widget.status.text()
    assert widget.running and not cnn.train_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    t = widget.table
    assert "cnn_class" in t.columns, widget.status.text()
    p = t[["cnn_p_disc", "cnn_p_square"]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert t["class"].tolist() == t["cnn_class"].tolist()  # the classes (and colours) follow the CNN
    np.testing.assert_allclose(t["probability"], p.max(axis=1))
    acc = float(np.mean(t["cnn_class"].to_numpy() == truth))
    assert acc >= 0.75, (acc, widget.status.text(), cnn.info.text())
    res = cnn.last_result
    crop = json.loads((res.model_path / "model.json").read_text())["input"]["crop"]
    d = np.median(t["equivalent_diameter_um"])
    assert crop["unit"] == "µm" and crop["mode"] == "2d" and crop["size"] == pytest.approx(2.5 * d, rel=1e-3)
    assert out_has_classes(widget)

    # apply the saved model again: same probabilities (its card's crop settings)
    assert cnn.apply_picker.current() is not None and cnn.apply_picker.current().name == res.model_path.name
    before = p.copy()
    assert cnn.apply()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    np.testing.assert_allclose(widget.table[["cnn_p_disc", "cnn_p_square"]].to_numpy(), before, atol=1e-6)

    widget.tabs.setCurrentIndex(0)
    qtbot.wait(300)
    shot_dir = Path(os.environ.get("MEDSEG_SCREENSHOT_DIR") or tmp_path)
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = viewer.screenshot(str(shot_dir / "medseg_objects_cnn.png"), canvas_only=False)
    assert shot.ndim == 3 and shot.shape[0] > 200
    widget.tabs.setCurrentWidget(cp)
    qtbot.wait(200)
    viewer.screenshot(str(shot_dir / "medseg_objects_cnn_panel.png"), canvas_only=False)


def out_has_classes(widget) -> bool:
    out = widget.output_layer
    return out is not None and out.features["class"].tolist() == widget.table["class"].tolist()


def test_cnn_needs_two_labelled_classes_and_an_image(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    lab, _ = _cells(1, 2)
    labels = viewer.add_labels(lab, name="cells")
    widget.source_kind.setCurrentIndex(0)
    widget.labels_combo.set_layer(labels)
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    widget.classifier_panel.method.setCurrentIndex(1)
    assert not widget.cnn_panel.train()
    assert "No marks" in widget.status.text()
    widget.table_view.select_rows([0, 1])
    widget.row_labeller.label_selected("a")
    assert not widget.cnn_panel.train() and "at least two classes" in widget.status.text()
    widget.table_view.select_rows([1])
    widget.row_labeller.label_selected("b")
    assert not widget.cnn_panel.train() and "needs the objects' image" in widget.status.text()
    widget.table_view.select_rows([])
    widget.row_labeller.clear_selected()  # nothing selected: every label goes
    assert widget.row_labeller.labels == {} and "label" not in widget.table.columns
