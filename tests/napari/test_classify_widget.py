"""The Classify dock widget in a real viewer, through the real thread worker.

Run with ``xvfb-run -a python -m pytest tests/napari/test_classify_widget.py -q``.
Models go to a temporary ``MEDSEG_MODELS_DIR``; torch uses one thread; the
network is small (input 32 px, depth 4) so a few epochs take seconds.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt  # noqa: E402

from napari_medseg._napari.widgets.classify import ClassifyWidget  # noqa: E402
from napari_medseg._napari.widgets.classify.items import (  # noqa: E402
    MADE_BY,
    default_class,
    region_boxes,
    shape_classes,
)
from napari_medseg.models.spec import load_model  # noqa: E402

pytestmark = pytest.mark.napari

TIMEOUT = 150_000  # ms; 2 CPU cores shared with other jobs


def _thing(kind: str, seed: int, shape=(48, 48)) -> np.ndarray:
    """A bright disc or square on a dark noisy background, uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    cy, cx = rng.integers(18, np.array(shape) - 18)
    r = int(rng.integers(8, 12))
    if kind == "disc":
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        m = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
    return np.clip(np.where(m, 200, 30) + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)


def _fast(widget: ClassifyWidget, epochs: int, name: str) -> None:
    widget.size.setValue(32)
    widget.depth.setValue(4)
    widget.minutes.setValue(0)  # no time limit
    widget.epochs.setValue(epochs)
    widget.name_edit.setText(name)


@pytest.fixture
def setup(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    viewer = make_napari_viewer()
    widget = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classify")
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    yield viewer, widget
    if widget.running:
        widget.cancel()
    qtbot.waitUntil(lambda: not widget.running and not widget.predicting, timeout=TIMEOUT)


def test_layers_train_predict_heatmap_and_csv(setup, qtbot, tmp_path):
    viewer, widget = setup
    train = [viewer.add_image(_thing(k, 10 * i + (k == "disc")), name=f"{k}_{i:02d}")
             for k in ("disc", "square") for i in range(12)]
    assert [c for _, c in widget.layer_table.entries()] == ["square"] * 12 + ["disc"] * 12
    _fast(widget, 3, "discs-squares")
    widget.precision.setCurrentText("float32")
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    assert widget.running and not widget.train_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    text = widget.status.text()
    assert "Trained 3 epoch(s)" in text and "saved 'discs-squares'" in text, text
    assert "val accuracy" in text and "AUC" in text and "ECE" in text and "after calibration" in text, text
    assert widget.plot.epochs == [1, 2, 3] and all(v is not None for v in widget.plot.losses)
    res = widget.last_result
    assert res.class_names == ["disc", "square"]
    _, card = load_model(res.model_path)
    assert card.kind == "classification" and card.input["size"] == [32, 32]
    assert card.training["class_counts"] == {"disc": 12, "square": 12}
    assert card.training["precision"] == "float32"  # the Advanced choice reached the trainer
    # the new model is in every picker (Predict's is set to it)
    assert widget.model_picker.current().name == "discs-squares"
    assert "discs-squares" in [m.name for m in widget.base_picker.models()]
    assert widget.name_edit.text() != "discs-squares"

    held = [viewer.add_image(_thing(k, 1000 + i), name=f"test {k} {i}") for k in ("disc", "square") for i in range(3)]
    before = {lay.name: lay.data.copy() for lay in viewer.layers}
    viewer.layers.selection.clear()
    viewer.layers.selection.update(held)
    widget.tabs.setCurrentIndex(1)
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.predicting, timeout=TIMEOUT)
    table = widget.results
    assert table.rowCount() == 6, widget.status.text()
    assert table.columns() == ["item", "class", "p_disc", "p_square"]
    assert sorted(table.names) == sorted(lay.name for lay in held)
    np.testing.assert_allclose(table.probs.sum(axis=1), 1.0, atol=1e-6)
    assert all(r[1] in ("disc", "square") and r[1] == ("disc", "square")[int(np.argmax(r[2:]))] for r in table.rows())
    assert "Classified 6 item(s)" in widget.status.text()

    # sorting by a probability column keeps each row tied to its item
    table.sortItems(2, Qt.SortOrder.DescendingOrder)
    shown = [float(table.item(r, 2).text()) for r in range(6)]
    assert shown == sorted(shown, reverse=True)
    for r in range(6):
        assert table.item(r, 0).text() == table.names[table.item_of_row(r)]

    # a row -> its Grad-CAM heat map over the item; another row replaces it
    target = table.names.index("test square 1")
    table.select_item(target)
    qtbot.waitUntil(lambda: widget.heatmap_layer is not None, timeout=TIMEOUT)
    hm = widget.heatmap_layer
    assert hm.data.shape == (48, 48) and hm.metadata[MADE_BY] == "gradcam" and hm.metadata["item"] == "test square 1"
    assert hm.colormap.name == "inferno" and hm.opacity == pytest.approx(0.5) and hm.blending == "additive"
    assert hm.data.min() >= 0.0 and hm.data.max() <= 1.0 and hm.contrast_limits[0] == pytest.approx(hm.data.min())
    assert set(viewer.layers.selection) == set(held)  # the user's selection is kept
    table.select_item(table.names.index("test disc 0"))
    qtbot.waitUntil(lambda: widget.heatmap_layer is not hm and widget.heatmap_layer is not None, timeout=TIMEOUT)
    heatmaps = [lay for lay in viewer.layers if MADE_BY in lay.metadata]
    assert heatmaps == [widget.heatmap_layer] and heatmaps[0].metadata["item"] == "test disc 0"
    assert heatmaps[0].name not in [lay.name for lay in train]
    assert widget.heatmap_layer.name not in [n for n, _ in widget.layer_table.entries()]  # never a training item
    viewer.screenshot(str(tmp_path / "shot.png"), canvas_only=False)  # renders with the heat map shown

    # CSV export, and the user's layers untouched
    out = widget.export_csv(tmp_path / "pred.csv")
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["item", "class", "p_disc", "p_square"] and len(rows) == 7
    assert [r[0] for r in rows[1:]] == table.names
    assert all(abs(float(r[2]) + float(r[3]) - 1) < 1e-5 for r in rows[1:])
    for lay in viewer.layers:
        if lay.name in before:
            np.testing.assert_array_equal(lay.data, before[lay.name])


def test_shapes_regions_train_and_predict_with_crop_geometry(setup, qtbot):
    viewer, widget = setup
    img = np.full((96, 288), 30, np.uint8)
    boxes = []
    for j, kind in enumerate(("disc", "square") * 3):
        for i in range(2):
            y0, x0 = 48 * i, 48 * j
            img[y0:y0 + 48, x0:x0 + 48] = _thing(kind, 100 * i + j)
            boxes.append(((y0, x0), kind))
    image = viewer.add_image(img, name="scene", scale=(0.5, 0.5), translate=(5.0, 7.0))
    # rectangles in world coordinates, a class per shape
    rects = [np.array([[5 + 0.5 * y, 7 + 0.5 * x], [5 + 0.5 * y, 7 + 0.5 * (x + 47)],
                       [5 + 0.5 * (y + 47), 7 + 0.5 * (x + 47)], [5 + 0.5 * (y + 47), 7 + 0.5 * x]])
             for (y, x), _ in boxes]
    shapes = viewer.add_shapes(rects, shape_type="rectangle", features={"class": [k for _, k in boxes]},
                               text="class", name="regions")
    assert shape_classes(shapes) == [k for _, k in boxes]
    assert region_boxes(shapes, image)[3] == (48, 96, 48, 96)
    widget.source.setCurrentIndex(1)
    widget.region_image.set_layer(image)
    widget.region_shapes.set_layer(shapes)
    assert "12 region(s): disc 6, square 6" in widget.region_label.text()
    _fast(widget, 2, "regions")
    widget.train()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert "saved 'regions'" in widget.status.text(), widget.status.text()

    widget.predict_source.setCurrentIndex(1)
    widget.predict_image.set_layer(image)
    widget.predict_shapes.set_layer(shapes)
    assert widget.model_picker.current().name == "regions"
    widget.predict()
    qtbot.waitUntil(lambda: not widget.predicting, timeout=TIMEOUT)
    assert widget.results.rowCount() == 12 and widget.results.names[3] == "regions #3"
    np.testing.assert_allclose(widget.results.probs.sum(axis=1), 1.0, atol=1e-6)
    widget.results.select_item(3)
    qtbot.waitUntil(lambda: widget.heatmap_layer is not None, timeout=TIMEOUT)
    hm = widget.heatmap_layer
    assert hm.data.shape == (48, 48)
    # placed on the crop: the image's scale, translate + scale * crop offset
    np.testing.assert_allclose(hm.scale, (0.5, 0.5))
    np.testing.assert_allclose(hm.translate, (5.0 + 0.5 * 48, 7.0 + 0.5 * 48))
    np.testing.assert_allclose(hm.data_to_world((0, 0)), image.data_to_world((48, 48)))
    np.testing.assert_array_equal(image.data, img)


def test_csv_table_trains(setup, qtbot, tmp_path):
    import tifffile

    viewer, widget = setup
    (tmp_path / "imgs").mkdir()
    lines = ["file,class"]
    for kind in ("disc", "square"):
        for i in range(6):
            tifffile.imwrite(tmp_path / "imgs" / f"{kind}{i}.tif", _thing(kind, 50 + i))
            lines.append(f"imgs/{kind}{i}.tif,{kind}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    assert widget.load_table(tmp_path / "train.csv") == 12
    assert widget.source.currentIndex() == 2 and "12 files (disc 6, square 6)" in widget.csv_label.text()
    _fast(widget, 2, "from-csv")
    widget.train()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert "saved 'from-csv'" in widget.status.text(), widget.status.text()
    assert widget.last_result.class_names == ["disc", "square"]

    (tmp_path / "bad.csv").write_text("path,label\nx.tif,a\n")
    with pytest.raises(Exception, match="needs the columns file,class"):
        widget.load_table(tmp_path / "bad.csv")


def test_cancel_keeps_the_best_epoch_and_early_cancel_says_why(setup, qtbot):
    viewer, widget = setup
    for k in ("disc", "square"):
        for i in range(6):
            viewer.add_image(_thing(k, i), name=f"{k}_{i}")
    _fast(widget, 5000, "cut-short")
    widget.train()
    widget.cancel()  # before the first epoch: the core's own message
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert "cancelled before the first epoch finished: nothing to save" in widget.status.text(), widget.status.text()
    assert widget.train_button.isEnabled()

    widget.name_edit.setText("cut-short")
    widget.train()
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 2, timeout=TIMEOUT)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    text = widget.status.text()
    assert "Cancelled at epoch" in text and "kept the best epoch" in text and "saved 'cut-short'" in text, text
    _, card = load_model(widget.last_result.model_path)
    assert card.training["cancelled"] is True
    assert widget.model_picker.current().name == "cut-short"


def test_base_models_transfer_or_say_why_not(setup, qtbot):
    viewer, widget = setup
    for k in ("disc", "square"):
        for i in range(4):
            viewer.add_image(_thing(k, i), name=f"{k}_{i}")
    _fast(widget, 1, "from-nuclei")
    widget.use_base.setChecked(True)
    assert widget.base_picker.select("nuclei")
    widget.train()  # width auto = the base's 16 channels: its encoder is copied
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert "saved 'from-nuclei'" in widget.status.text(), widget.status.text()
    _, card = load_model(widget.last_result.model_path)
    assert card.training["base"] == "nuclei"

    assert widget.base_picker.select("nuclei-he")
    widget.width.setValue(8)  # nuclei-he has 16: nothing to copy
    widget.name_edit.setText("from-he")
    widget.train()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    text = widget.status.text()
    assert text.startswith("Training failed: base model 'nuclei-he' shares no encoder weights"), text


def test_layer_table_classes_errors_and_size(setup, qtbot):
    viewer, widget = setup
    assert default_class("disc_03") == "disc" and default_class("benign tile 4") == "benign"
    assert default_class("plain") == "plain"
    a = viewer.add_image(np.zeros((20, 20), np.uint8), name="nevus_1")
    b = viewer.add_image(np.zeros((20, 20, 3), np.uint8), name="melanoma 2", rgb=True)
    assert widget.layer_table.entries() == [(b, "melanoma"), (a, "nevus")]
    a.name = "mel_1"  # an untyped class follows the name
    assert widget.layer_table.class_of(a) == "mel"
    widget.layer_table.set_class(a, "melanoma")
    a.name = "x_1"
    assert widget.layer_table.class_of(a) == "melanoma"
    widget.layer_table.set_use(b, False)
    assert widget.layer_table.entries() == [(a, "melanoma")]
    widget.train()  # one class only
    assert "at least two classes" in widget.status.text() and not widget.running
    widget.layer_table.set_use(b, True)
    widget.layer_table.set_class(a, "nevus")
    widget.size.setValue(32)
    widget.depth.setValue(4)
    widget.train()  # a grey and an RGB item: the core's message, from the worker
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert widget.status.text().startswith("Training failed: items have different channels"), widget.status.text()

    viewer.layers.selection.clear()
    widget.predict()
    assert widget.status.text().startswith(("No classification model", "Select the Image layers")), widget.status.text()
    hint = widget.minimumSizeHint()
    assert hint.width() <= 360 and hint.height() <= 700, (hint.width(), hint.height())


def test_items_from_a_stack_plane_and_heatmaps_on_rotated_crops(make_napari_viewer):
    from napari.layers import Image

    from napari_medseg._napari.widgets.classify.items import Item, heatmap_geometry, layer_item

    viewer = make_napari_viewer()
    stack = np.arange(5 * 8 * 9, dtype=np.uint16).reshape(5, 8, 9)
    layer = viewer.add_image(stack, name="stack")
    viewer.dims.set_point(0, 3)
    it = layer_item(layer, "a", viewer.dims.point)
    np.testing.assert_array_equal(it.data, stack[3])
    assert it.data is not stack  # a copy: the user may edit the layer meanwhile

    img = Image(np.zeros((40, 50)), scale=(2.0, 3.0), translate=(1.0, 2.0), rotate=30,
                affine=np.array([[1.0, 0.2, 5.0], [0.0, 1.0, -3.0], [0.0, 0.0, 1.0]]))
    hm = Image(np.zeros((6, 7)), **heatmap_geometry(Item("crop", None, None, img, (4, 5))))
    for p in ((0, 0), (1, 1), (5, 6)):
        np.testing.assert_allclose(hm.data_to_world(p), img.data_to_world((4 + p[0], 5 + p[1])), atol=1e-9)
