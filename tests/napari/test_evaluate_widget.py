"""The Evaluate dock widget in a real viewer, through the real worker thread.

Run with ``xvfb-run -a python -m pytest tests/napari/test_evaluate_widget.py -q``.
Set ``MEDSEG_SCREENSHOT_DIR`` to keep the screenshot (default: the test's tmp_path).

The scene has a known answer: 4 true objects; the prediction copies one,
matches one at IoU 0.9, splits one into two halves (IoU exactly 0.5 each, so
no match at "IoU > 0.5"), misses one and adds one extra object.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Labels  # noqa: E402

from napari_medseg._napari.widgets.evaluate import ERRORS_OF, EvaluateWidget  # noqa: E402
from napari_medseg.analysis.evaluation import compare_iter  # noqa: E402
from napari_medseg.errors import ParameterError  # noqa: E402
from napari_medseg.progress import run  # noqa: E402

pytestmark = pytest.mark.napari

RUN_TIMEOUT = 60_000  # ms; 2 CPU cores shared with other jobs
SCALE = (0.5, 0.25)
TRANSLATE = (10.0, 20.0)

# expected at IoU > 0.5: true 1 = pred 10 (IoU 1), true 2 ~ pred 20 (IoU 0.9);
# true 3 split into 30 + 31 (IoU 0.5 each: no match); true 4 missed; pred 40 extra
TP, FP_IDS, FN_IDS = 2, [30, 31, 40], [3, 4]
AP50 = 2 / 7
MAP = (8 * (2 / 7) + 1 / 8) / 9  # at IoU 0.9 the 0.9-IoU pair no longer matches: 1 / (1 + 4 + 3)
DICE = 2 * 390 / (500 + 490)


def _scene(shape=(60, 80)) -> tuple[np.ndarray, np.ndarray]:
    true = np.zeros(shape, np.uint16)
    pred = np.zeros(shape, np.int32)
    true[5:15, 5:15] = 1
    pred[5:15, 5:15] = 10
    true[5:15, 25:35] = 2
    pred[6:15, 25:35] = 20  # 90 of 100 pixels: IoU 0.9
    true[25:35, 5:25] = 3
    pred[25:35, 5:15] = 30  # the two halves of true 3
    pred[25:35, 15:25] = 31
    true[25:35, 40:50] = 4  # missed
    pred[45:55, 60:70] = 40  # extra
    return true, pred


@pytest.fixture
def viewer_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)  # shown: the canvas renders, the screenshot is real
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Evaluate")
    assert isinstance(widget, EvaluateWidget)
    yield viewer, widget
    if widget.running:
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def _compare_and_wait(qtbot, widget) -> None:
    qtbot.mouseClick(widget.compare_button, _left())
    assert widget.running and not widget.compare_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    assert widget.compare_button.isEnabled() and not widget.cancel_button.isEnabled()


def _ids(layer: Labels) -> list[int]:
    d = np.asarray(layer.data)
    return sorted(int(i) for i in np.unique(d[d > 0]))


def _table(widget) -> dict[str, str]:
    t = widget.scores_table
    return {t.item(i, 0).text(): t.item(i, 1).text() for i in range(t.rowCount())}


def test_known_scene_scores_error_layers_and_export(viewer_widget, qtbot, tmp_path) -> None:
    viewer, widget = viewer_widget
    true, pred = _scene()
    gt_layer = viewer.add_labels(true.copy(), name="truth", scale=SCALE, translate=TRANSLATE, units="micrometer")
    pred_layer = viewer.add_labels(pred.copy(), name="pred", scale=SCALE, translate=TRANSLATE, units="micrometer")
    # the top-most layer is offered as the prediction, another one as the ground truth
    assert widget.pred_combo.layer() is pred_layer and widget.gt_combo.layer() is gt_layer
    assert widget.threshold.value() == 0.5 and not widget.export_csv_button.isEnabled()
    _compare_and_wait(qtbot, widget)

    s = widget.result.scores
    assert (s["n_true"], s["n_pred"], s["tp"], s["fp"], s["fn"]) == (4, 5, TP, 3, 2), widget.status.text()
    assert (s["tp50"], s["fp50"], s["fn50"]) == (TP, 3, 2)
    assert s["ap50"] == pytest.approx(AP50, abs=1e-12) and s["ap75"] == pytest.approx(AP50, abs=1e-12)
    assert s["map"] == pytest.approx(MAP, abs=1e-12) and s["dice"] == pytest.approx(DICE, abs=1e-12)
    shown = _table(widget)
    assert shown["TP (IoU > 0.5)"] == "2" and shown["FP (predicted, unmatched)"] == "3"
    assert shown["FN (true, missed)"] == "2" and shown["AP@0.5"] == f"{AP50:.3f}" == "0.286"
    assert shown["mean AP 0.5:0.05:0.9"] == f"{MAP:.3f}" and shown["pixel Dice"] == f"{DICE:.3f}"
    assert "2 TP, 3 FP, 2 FN" in widget.status.text()

    # --- the error layers: exactly the unmatched ids, with their ids and pixels, in the sources' geometry
    fp, fn = viewer.layers["pred false positives"], viewer.layers["truth false negatives"]
    assert fp is widget.false_positives_layer and fn is widget.false_negatives_layer
    assert _ids(fp) == FP_IDS and _ids(fn) == FN_IDS
    np.testing.assert_array_equal(fp.data, np.where(np.isin(pred, FP_IDS), pred, 0))
    np.testing.assert_array_equal(fn.data, np.where(np.isin(true, FN_IDS), true, 0))
    assert fp.data.dtype == pred.dtype and fn.data.dtype == true.dtype
    for lay in (fp, fn):
        np.testing.assert_allclose(lay.scale, SCALE)
        np.testing.assert_allclose(lay.translate, TRANSLATE)
        assert tuple(str(u) for u in lay.units) == ("micrometer", "micrometer")
        assert lay.metadata[ERRORS_OF]["prediction"] == "pred" and lay.metadata[ERRORS_OF]["iou_threshold"] == 0.5
    # one colour per layer: every id maps to the same RGBA, magenta vs yellow
    np.testing.assert_allclose(fp.colormap.map(np.array(FP_IDS)), [[1, 0, 1, 1]] * 3)
    np.testing.assert_allclose(fn.colormap.map(np.array(FN_IDS)), [[1, 1, 0, 1]] * 2)
    assert fp.colormap.map(np.array([0]))[0, 3] == 0
    # the user's layers are only read
    np.testing.assert_array_equal(gt_layer.data, true)
    np.testing.assert_array_equal(pred_layer.data, pred)
    assert [lay.name for lay in viewer.layers] == ["truth", "pred", "truth false negatives", "pred false positives"]

    # --- CSV export of the scores row
    out = widget.export_csv(tmp_path / "scores.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1
    r = rows[0]
    assert (r["ground_truth"], r["prediction"], r["shape"], r["iou_threshold"]) == ("truth", "pred", "60x80", "0.5")
    assert (r["n_true"], r["n_pred"], r["tp"], r["fp"], r["fn"]) == ("4", "5", "2", "3", "2")
    assert r["ap50"] == f"{AP50:.4f}" and r["map"] == f"{MAP:.4f}" and r["dice"] == f"{DICE:.4f}"

    # --- screenshot: look at it (FP magenta, FN yellow)
    viewer.layers["truth"].visible = False
    viewer.reset_view()
    qtbot.wait(300)
    shot_dir = Path(os.environ.get("MEDSEG_SCREENSHOT_DIR") or tmp_path)
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = viewer.screenshot(str(shot_dir / "medseg_evaluate_widget.png"), canvas_only=False)
    assert shot.ndim == 3 and shot.shape[0] > 200 and shot.shape[1] > 300


def test_rerun_replaces_only_our_layers(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    true, pred = _scene()
    viewer.add_labels(true, name="truth")
    viewer.add_labels(pred, name="pred")
    user = viewer.add_labels(np.full(true.shape, 7, np.uint8), name="pred false positives")  # a user's layer
    widget.gt_combo.set_layer(viewer.layers["truth"])
    widget.pred_combo.set_layer(viewer.layers["pred"])
    _compare_and_wait(qtbot, widget)
    fp1, fn1 = widget.false_positives_layer, widget.false_negatives_layer
    assert fp1.name == "pred false positives [1]" and fn1.name == "truth false negatives"
    names = [lay.name for lay in viewer.layers]

    # stricter threshold: only the identical pair still matches (IoU 1 > 0.95)
    widget.threshold.setValue(0.95)
    _compare_and_wait(qtbot, widget)
    fp2, fn2 = widget.false_positives_layer, widget.false_negatives_layer
    assert fp2 is not fp1 and fn2 is not fn1 and fp1 not in viewer.layers and fn1 not in viewer.layers
    assert [lay.name for lay in viewer.layers] == names  # same names, same places
    assert _ids(fp2) == [20, 30, 31, 40] and _ids(fn2) == [2, 3, 4]
    s = widget.result.scores
    assert (s["tp"], s["fp"], s["fn"], s["tp50"]) == (1, 4, 3, 2)
    assert _table(widget)["TP (IoU > 0.95)"] == "1"
    assert viewer.layers["pred false positives"] is user and int(user.data.min()) == 7 == int(user.data.max())

    # a layer we made and the user then removed is simply made again
    viewer.layers.remove(fp2)
    _compare_and_wait(qtbot, widget)
    assert widget.false_positives_layer.name == "pred false positives [1]"
    assert len(viewer.layers) == len(names)


def test_shape_mismatch_says_so_and_adds_nothing(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    true, pred = _scene()
    viewer.add_labels(true, name="truth")
    viewer.add_labels(pred[:, :70], name="cropped")
    widget.gt_combo.set_layer(viewer.layers["truth"])
    widget.pred_combo.set_layer(viewer.layers["cropped"])
    qtbot.mouseClick(widget.compare_button, _left())
    assert not widget.running and widget.compare_button.isEnabled()
    text = widget.status.text()
    assert text.startswith("Shapes differ") and "(60, 80)" in text and "(60, 70)" in text, text
    assert [lay.name for lay in viewer.layers] == ["truth", "cropped"] and widget.result is None
    assert widget.export_csv(Path("never-written.csv")) is None and not Path("never-written.csv").exists()


def test_4d_layers_are_compared_as_one_array(viewer_widget, qtbot) -> None:
    """(T, Z, Y, X): each id is one object over every frame; the counts equal the 2D scene's."""
    viewer, widget = viewer_widget
    true, pred = _scene()
    true4 = np.broadcast_to(true, (2, 3, *true.shape)).copy()
    pred4 = np.broadcast_to(pred, (2, 3, *pred.shape)).copy()
    viewer.add_labels(true4, name="truth", scale=(1.0, 2.0, 0.5, 0.5))
    viewer.add_labels(pred4, name="pred", scale=(1.0, 2.0, 0.5, 0.5))
    assert "4D" in widget.note.text() and "across every time point" in widget.note.text()
    _compare_and_wait(qtbot, widget)
    s = widget.result.scores
    assert (s["n_true"], s["n_pred"], s["tp"], s["fp"], s["fn"]) == (4, 5, TP, 3, 2), widget.status.text()
    assert s["ap50"] == pytest.approx(AP50, abs=1e-12) and s["shape"] == "2x3x60x80"
    fp = widget.false_positives_layer
    assert fp.data.shape == pred4.shape and _ids(fp) == FP_IDS
    np.testing.assert_allclose(fp.scale, (1.0, 2.0, 0.5, 0.5))


def test_compare_iter_is_the_core_of_the_widget() -> None:
    true, pred = _scene()
    res = run(compare_iter(true, pred, 0.5, names=("t", "p")))
    assert res.false_positive_ids.tolist() == FP_IDS and res.false_negative_ids.tolist() == FN_IDS
    with pytest.raises(ParameterError, match="differ in shape"):
        run(compare_iter(true, pred[:-1], 0.5))


# ---------------------------------------------------------------- the shared job helper
def test_finish_job_reports_errors_cancel_and_result(qtbot) -> None:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    from napari_medseg._napari._worker import JobOutcome
    from napari_medseg._napari.widgets.common import RunCancelRow, StatusLine, finish_job

    status, buttons = StatusLine(), RunCancelRow()
    qtbot.addWidget(status)
    qtbot.addWidget(buttons)

    def last_error() -> str:
        errs = [n for n in notification_manager.records if n.severity == NotificationSeverity.ERROR]
        return str(errs[-1].message) if errs else ""

    buttons.set_running(True)
    assert finish_job(JobOutcome(result=3), status, "Counting", lambda r: f"{r} things", buttons=buttons)
    assert status.text() == "3 things" and buttons.run_button.isEnabled() and not buttons.cancel_button.isEnabled()

    assert not finish_job(JobOutcome(cancelled=True, elapsed=2.0), status, "Counting", lambda r: "x")
    assert status.text() == "Cancelled after 2.0 s; no layer was added."

    assert not finish_job(JobOutcome(error=ParameterError("bad input")), status, "Counting", lambda r: "x")
    assert status.text() == "Counting failed: bad input" == last_error()

    assert not finish_job(JobOutcome(error=KeyError("k")), status, "Counting", lambda r: "x")
    assert status.text() == "Counting failed (KeyError): 'k'" == last_error()

    def broken_show(r):
        raise ValueError("cannot show")

    assert not finish_job(JobOutcome(result=1), status, "Counting", broken_show, show_what="Showing")
    assert status.text() == "Showing failed (ValueError): cannot show" == last_error()
