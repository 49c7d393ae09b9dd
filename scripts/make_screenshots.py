"""Screenshots of each dock widget in a real napari viewer, for the README and the napari hub.

Opens napari, loads the fluorescence nuclei sample (File > Open Sample >
napari-medseg > nuclei) for the first four widgets (other data for Lesions and
Classify), and for each widget docks it alone, runs it and saves the whole
window (``viewer.screenshot(canvas_only=False)``) to ``docs/images/<widget>.png``:

- ``segment.png``: Segment with the shipped ``nuclei`` model (the prediction shown,
  the ground truth hidden);
- ``objects.png``: Objects measuring the predicted labels (table tab);
- ``train.png``: Train fine-tuning ``nuclei`` on the ground truth for a short run
  (``--train-minutes``), with its curves;
- ``evaluate.png``: Evaluate comparing the prediction with the ground truth,
  false positives and negatives as layers;
- ``lesions.png``: Lesions measuring existing labels on a real lesion case, the
  pyradiomics ``brain1`` MR tumour (BSD-3) from ``MEDSEG_DATASETS`` (default
  ``../shared/datasets/radiology_lesions``), or, where that folder is absent, the
  shipped MR sample ``sample_data/mr/mr_0004`` with a synthetic box lesion; the
  largest lesion's row clicked, so the view is on its RECIST slice;
- ``classify.png``: Classify trained for a few epochs on synthetic discs vs
  squares (one Image layer each), predicting held-out layers, one row selected so
  its Grad-CAM heat map shows over the item.

Needs a display; on a machine without one::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/make_screenshots.py

Each PNG is saved with a 256-colour palette, and downscaled if it is still
over ``--max-kb`` (300 KB), so the repository stays small.  Prints each file with its size and the widget's
status line.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "napari-medseg"


def _wait(until: Callable[[], bool], timeout: float, what: str) -> None:
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    while not until():
        QApplication.processEvents()
        time.sleep(0.05)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
    for _ in range(20):  # let the last layer updates and repaints land
        QApplication.processEvents()
        time.sleep(0.02)


def _click_row(table_view, row: int) -> None:
    """A real mouse click on a row of an ObjectsTable (as the user does; the widget reacts to the click)."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    idx = table_view.view_index(row)
    table_view.view.scrollTo(idx)
    QTest.mouseClick(table_view.view.viewport(), Qt.MouseButton.LeftButton, pos=table_view.view.visualRect(idx).center())


def _lesion_case(viewer):
    """Image and lesion Labels layers of a real case (shared datasets) or of the shipped MR sample."""
    import os

    import numpy as np

    from napari_medseg._napari.layers import output_geometry

    datasets = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))
    case = datasets / "radiology_lesions"
    if (case / "brain1_image.nrrd").is_file() and (case / "brain1_label.nrrd").is_file():
        (image,) = viewer.open(str(case / "brain1_image.nrrd"), plugin=PLUGIN)
        (labels,) = viewer.open(str(case / "brain1_label.nrrd"), plugin=PLUGIN, layer_type="labels")
        return image, labels
    (image,) = viewer.open(str(REPO / "sample_data" / "mr" / "mr_0004"), plugin=PLUGIN)
    shape = image.data.shape[-3:]
    lab = np.zeros(shape, np.uint8)  # a box lesion in one hemisphere, mid-volume (ZYX)
    z, y, x = (n // 2 for n in shape)
    dy, dx = max(shape[1] // 16, 1), max(shape[2] // 16, 1)
    lab[max(z - 1, 0):z + 2, y - dy:y + dy, x + dx:x + 3 * dx] = 1
    labels = viewer.add_labels(lab, name="lesion (synthetic)", **output_geometry(image, 3))
    return image, labels


def _thing(kind: str, seed: int, shape=(48, 48)):
    """A bright disc or square on a dark noisy background, uint8 (as tests/napari/test_classify_widget.py)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    cy, cx = rng.integers(18, np.array(shape) - 18)
    r = int(rng.integers(8, 12))
    if kind == "disc":
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        m = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
    return np.clip(np.where(m, 200, 30) + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)


def _save(viewer, path: Path, max_kb: int) -> Path:
    import numpy as np
    from PIL import Image

    shot = viewer.screenshot(canvas_only=False, flash=False)
    img = Image.fromarray(np.asarray(shot)[..., :3])
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = 1.0
    while True:
        out = img if scale == 1.0 else img.resize((round(img.width * scale), round(img.height * scale)),
                                                  Image.Resampling.LANCZOS)
        # a 256-colour palette keeps a UI screenshot sharp at a third of the size
        out.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
        if path.stat().st_size <= max_kb * 1024 or scale < 0.3:
            return path
        scale *= 0.9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    ap.add_argument("--size", type=int, nargs=2, default=(1400, 860), metavar=("W", "H"),
                    help="window size in pixels (default 1400 860)")
    ap.add_argument("--max-kb", type=int, default=300, help="downscale each PNG until it is this small")
    ap.add_argument("--train-minutes", type=float, default=0.5, help="length of the Train widget's run")
    ap.add_argument("--only", nargs="*", default=None, help="widgets to shoot (default: all six)")
    args = ap.parse_args()

    import os
    import tempfile

    # the Train and Classify runs save models: keep them out of the user's model folder (and the screenshots
    # free of models that only exist on this machine)
    os.environ.setdefault("MEDSEG_MODELS_DIR", tempfile.mkdtemp(prefix="medseg-screenshots-"))
    import napari

    viewer = napari.Viewer(title="napari-medseg")
    viewer.window._qt_window.resize(*args.size)
    wanted = args.only or ["segment", "objects", "train", "evaluate", "lesions", "classify"]
    results: list[tuple[Path, str]] = []

    def dock(name: str):
        dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        return dock_widget, widget

    def widen(dock_widget, width: int) -> None:
        """Give a dock with a table room for its key columns (a dock opens at its size hint)."""
        from qtpy.QtCore import Qt

        viewer.window._qt_window.resizeDocks([dock_widget], [width], Qt.Orientation.Horizontal)

    def undock(dock_widget) -> None:
        viewer.window.remove_dock_widget(dock_widget)

    nuclei_widgets = {"segment", "objects", "train", "evaluate"}
    if nuclei_widgets & set(wanted):
        # --- Segment: run for any of these, the other three use its prediction
        image, truth = viewer.open_sample(PLUGIN, "nuclei")
        d, seg = dock("Segment")
        seg.image_combo.set_layer(image)
        _wait(lambda: seg.device_picker.ready, 120, "device list")
        before = set(map(id, viewer.layers))
        seg.run()
        _wait(lambda: not seg.running, 600, "Segment")
        new = [lay for lay in viewer.layers if id(lay) not in before and lay._type_string == "labels"]
        if not new:
            raise RuntimeError(f"Segment made no labels layer: {seg.status.text()}")
        prediction = new[-1]
        truth.visible = False  # show the model's result over the image
        viewer.layers.selection.active = prediction
        if "segment" in wanted:
            results.append((_save(viewer, args.out / "segment.png", args.max_kb), seg.status.text()))
        undock(d)

    if "objects" in wanted:
        d, obj = dock("Objects")
        obj.source_kind.setCurrentIndex(0)  # "labels layer"
        obj.labels_combo.set_layer(prediction)
        obj.run()
        _wait(lambda: not obj.running, 300, "Objects")
        results.append((_save(viewer, args.out / "objects.png", args.max_kb), obj.status.text()))
        undock(d)
        for lay in [lay for lay in viewer.layers if lay._type_string in ("points", "shapes")]:
            viewer.layers.remove(lay)

    if "train" in wanted:
        d, tr = dock("Train")
        tr.image_combo.set_layer(image)
        tr.labels_combo.set_layer(truth)
        tr.add_pair(image, truth)
        tr.model_picker.select("nuclei")
        tr.name_edit.setText("nuclei-finetuned")
        tr.minutes.setValue(max(tr.minutes.minimum(), args.train_minutes))
        truth.visible = True
        prediction.visible = False
        tr.train()
        _wait(lambda: not tr.running, 60 * args.train_minutes + 300, "Train")
        results.append((_save(viewer, args.out / "train.png", args.max_kb), tr.status.text()))
        undock(d)
        truth.visible = False
        prediction.visible = True

    if "evaluate" in wanted:
        d, ev = dock("Evaluate")
        ev.gt_combo.set_layer(truth)
        ev.pred_combo.set_layer(prediction)
        ev.compare()
        _wait(lambda: not ev.running, 300, "Evaluate")
        results.append((_save(viewer, args.out / "evaluate.png", args.max_kb), ev.status.text()))
        undock(d)

    if "lesions" in wanted:
        viewer.layers.clear()
        image, labels = _lesion_case(viewer)
        d, les = dock("Lesions")
        widen(d, 480)  # id, class, RECIST axes and volume in view
        _wait(lambda: les.device_picker.ready, 120, "device list")
        les.source_kind.setCurrentIndex(1)  # "existing labels"
        les.labels_combo.set_layer(labels)
        les.intensity_combo.set_layer(image)
        les.intensity_check.setChecked(True)
        labels.visible = False  # the widget's fill and outlines show the lesions
        les.run()
        _wait(lambda: not les.running, 300, "Lesions")
        if les.table is None or not len(les.table):
            raise RuntimeError(f"Lesions found none: {les.status.text()}")
        les.sort_table("volume_mm3")
        _click_row(les.table_view, les.table_view.visible_rows()[0])  # the largest: its slice, centred
        _wait(lambda: True, 5, "repaint")
        results.append((_save(viewer, args.out / "lesions.png", args.max_kb), les.status.text()))
        undock(d)

    if "classify" in wanted:
        viewer.layers.clear()
        d, cl = dock("Classify")
        widen(d, 400)  # every probability column in view
        _wait(lambda: cl.device_picker.ready, 120, "device list")
        train = [viewer.add_image(_thing(k, 10 * i + (k == "disc")), name=f"{k}_{i:02d}")
                 for k in ("disc", "square") for i in range(12)]
        cl.size.setValue(32)  # small and short: seconds on a CPU
        cl.depth.setValue(4)
        cl.minutes.setValue(0)
        cl.epochs.setValue(15)  # batch-norm statistics settle after ~7 epochs of 24 items
        cl.name_edit.setText("discs-squares")
        cl.train()
        _wait(lambda: not cl.running, 600, "Classify training")
        for lay in train:
            lay.visible = False
        held = [viewer.add_image(_thing(k, 1000 + i), name=f"test {k} {i}") for k in ("disc", "square")
                for i in range(3)]
        viewer.layers.selection.clear()
        viewer.layers.selection.update(held)
        cl.tabs.setCurrentIndex(1)  # Predict
        cl.predict()
        _wait(lambda: not cl.predicting, 300, "Classify prediction")
        if cl.results.rowCount() != len(held):
            raise RuntimeError(f"Classify predicted no table: {cl.status.text()}")
        shown = held[-1]  # a square
        for lay in held:
            lay.visible = lay is shown
        cl.results.select_item(cl.results.names.index(shown.name))
        _wait(lambda: cl.heatmap_layer is not None and not cl.predicting, 300, "Grad-CAM")
        viewer.reset_view()
        results.append((_save(viewer, args.out / "classify.png", args.max_kb), cl.status.text()))
        undock(d)

    for path, status in results:
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
              f"({path.stat().st_size // 1024} KB): {status}")
    viewer.close()


if __name__ == "__main__":
    main()
