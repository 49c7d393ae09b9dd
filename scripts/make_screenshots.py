"""Screenshots of each dock widget in a real napari viewer, for the README and the napari hub.

Opens napari, loads the fluorescence nuclei sample (File > Open Sample >
napari-medseg > nuclei), and for each widget docks it alone, runs it on the
sample and saves the whole window (``viewer.screenshot(canvas_only=False)``)
to ``docs/images/<widget>.png``:

- ``segment.png``: Segment with the shipped ``nuclei`` model (the prediction shown,
  the ground truth hidden);
- ``objects.png``: Objects measuring the predicted labels (table tab);
- ``train.png``: Train fine-tuning ``nuclei`` on the ground truth for a short run
  (``--train-minutes``), with its curves;
- ``evaluate.png``: Evaluate comparing the prediction with the ground truth,
  false positives and negatives as layers.

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
    ap.add_argument("--only", nargs="*", default=None, help="widgets to shoot (default: all four)")
    args = ap.parse_args()

    import os
    import tempfile

    # the Train run saves a model: keep it out of the user's model folder (and the screenshots
    # free of models that only exist on this machine)
    os.environ.setdefault("MEDSEG_MODELS_DIR", tempfile.mkdtemp(prefix="medseg-screenshots-"))
    import napari

    viewer = napari.Viewer(title="napari-medseg")
    viewer.window._qt_window.resize(*args.size)
    image, truth = viewer.open_sample(PLUGIN, "nuclei")
    prediction = None
    wanted = args.only or ["segment", "objects", "train", "evaluate"]
    results: list[tuple[Path, str]] = []

    def dock(name: str):
        dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        return dock_widget, widget

    def undock(dock_widget) -> None:
        viewer.window.remove_dock_widget(dock_widget)

    # --- Segment: always run, the other widgets use its prediction
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

    for path, status in results:
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
              f"({path.stat().st_size // 1024} KB): {status}")
    viewer.close()


if __name__ == "__main__":
    main()
