"""What a first user sees: a sample, its prediction under the ground truth, Evaluate in step, docks on a laptop.

Set ``MEDSEG_SCREENSHOT_DIR`` to keep the screenshots (default: the test's tmp_path).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt  # noqa: E402

from napari_medseg._napari.sample_data import GROUND_TRUTH_OPACITY  # noqa: E402
from napari_medseg._napari.widgets.common import DOCK_MAX_WIDTH  # noqa: E402

pytestmark = pytest.mark.napari

PLUGIN = "napari-medseg"
TIMEOUT = 150_000  # ms
DOCKS = ("Segment", "Objects", "Train", "Evaluate")


def _shot_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("MEDSEG_SCREENSHOT_DIR") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _wait_devices(qtbot, *widgets) -> None:
    qtbot.waitUntil(lambda: all(w.device_picker.ready for w in widgets if hasattr(w, "device_picker")),
                    timeout=60_000)


def test_sample_prediction_goes_under_the_ground_truth_and_evaluate_follows(make_napari_viewer, qtbot, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    viewer = make_napari_viewer(show=True)
    image, truth = viewer.open_sample(PLUGIN, "nuclei")
    assert [lay.name for lay in viewer.layers] == [image.name, truth.name]
    assert truth.opacity == GROUND_TRUTH_OPACITY == 0.35 and image.opacity == 1.0
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    _, ev = viewer.window.add_plugin_dock_widget(PLUGIN, "Evaluate")
    _wait_devices(qtbot, seg)
    seg.image_combo.set_layer(image)
    assert seg.model_picker.current().name == "nuclei"
    qtbot.mouseClick(seg.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not seg.running, timeout=TIMEOUT)
    pred = viewer.layers[f"{image.name} labels"]
    # the prediction lands between the image and the ground truth, which stays on top
    assert [lay.name for lay in viewer.layers] == [image.name, pred.name, truth.name]
    # Evaluate offers the new prediction against the ground truth
    assert ev.pred_combo.layer() is pred and ev.gt_combo.layer() is truth
    qtbot.mouseClick(ev.compare_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not ev.running, timeout=TIMEOUT)
    s = ev.result.scores
    assert s["n_true"] == 136 and s["ground_truth"] == truth.name and s["prediction"] == pred.name
    assert s["ap50"] > 0.5, s  # the shipped model on its sample
    assert ev.scores_table.item(0, 1).text() == "136"
    viewer.reset_view()
    qtbot.wait(300)
    viewer.screenshot(str(_shot_dir(tmp_path) / "medseg_sample_segment_evaluate.png"), canvas_only=False)

    # renaming a compared layer keeps the scores under the new name; removing one clears them
    truth.name = "truth"
    assert ev.result is not None and ev.result.scores["ground_truth"] == "truth"
    viewer.layers.remove(pred)
    assert ev.result is None and not ev.export_csv_button.isEnabled()
    assert ev.scores_table.item(0, 1).text() == "" and ev.scores_table.item(2, 0).text() == "TP"
    assert ev.status.text() == f"Layer {pred.name!r} was removed: Compare again for new scores."


def test_every_dock_fits_a_laptop_screen(make_napari_viewer, qtbot, tmp_path):
    """Each dock: at most 360 px wide and (scrolled) 300 px tall, Segment's groups open, after a detection."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    image, truth = viewer.open_sample(PLUGIN, "nuclei")
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name) for name in DOCKS}
    widgets = {name: w for name, (_, w) in docks.items()}
    _wait_devices(qtbot, *widgets.values())
    seg, obj = widgets["Segment"], widgets["Objects"]
    seg.objects_group.expand(animate=False)
    seg.advanced.expand(animate=False)
    obj.source_kind.setCurrentIndex(0)
    obj.labels_combo.set_layer(truth)
    obj.run()
    qtbot.waitUntil(lambda: not obj.running, timeout=TIMEOUT)
    assert len(obj.table) == 136
    qtbot.wait(200)
    for name, w in widgets.items():
        hint = w.minimumSizeHint()
        assert hint.width() <= DOCK_MAX_WIDTH == 360 and hint.height() <= 300, (name, hint)
    shots = _shot_dir(tmp_path)
    for name in docks:
        for other, (d, _) in docks.items():
            d.setVisible(other == name)
        qtbot.wait(200)
        viewer.screenshot(str(shots / f"medseg_dock_{name.lower()}.png"), canvas_only=False)
