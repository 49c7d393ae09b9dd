"""The Predict tab of the Classify widget: classify items into a table, show the Grad-CAM map of a row.

Items are the selected Image layers or the regions of a Shapes layer over
one image (:mod:`.items`); :func:`napari_medseg.analysis.image_classify.classify_items`
runs in a thread worker and fills :class:`~.results.ResultsTable`.  Selecting
a row computes that item's Grad-CAM map (in a worker, once per item) and
shows it as one heat-map layer over the item (inferno, additive, half
opaque), replacing the previous one; the user's layer selection is kept,
since Predict reads it.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Shapes
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ....errors import MedsegError, ParameterError
from ....progress import Progress
from ..._worker import JobOutcome, ProgressJob
from ...layers import unique_name
from ..common import LayerCombo, ModelPicker, RunCancelRow, StatusLine, finish_job
from .items import MADE_BY, Item, count_text, heatmap_geometry, is_item_layer, layer_item, materialize, region_items
from .results import ResultsTable

if TYPE_CHECKING:
    import napari

PREDICT_SOURCES = ("Selected Image layers", "Shapes regions")


def compact(picker: ModelPicker) -> ModelPicker:
    """A model picker whose combo does not widen the dock to its longest model name."""
    picker.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    picker.combo.setMinimumContentsLength(6)
    picker.combo.setMinimumWidth(90)
    return picker


def _predict_gen(items: list[Item], model: str, tta: bool):
    """Worker: read the items, classify them; returns ``(arrays, probs, class_names)``."""
    yield Progress(0, 2, f"reading {len(items)} item(s)")
    arrays = materialize(items)
    yield Progress(1, 2, "classifying")
    from ....analysis.image_classify import classify_items

    probs, names = classify_items(arrays, model, tta=tta)
    return arrays, probs, names


def _gradcam_gen(array: np.ndarray, model: str, class_index: int):
    yield Progress(0, 1, "Grad-CAM")
    from ....analysis.image_classify import gradcam

    return gradcam([array], model, class_index=class_index)[0]


class PredictPanel(QWidget):
    """Model, items, Classify / Cancel / CSV, and the results table.

    Parameters
    ----------
    viewer : napari.Viewer
    status : StatusLine
        The Classify widget's status line (shared with the Train tab).
    """

    def __init__(self, viewer: napari.Viewer, status: StatusLine, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.status = status
        self._predict_job: ProgressJob | None = None
        self._cam_job: ProgressJob | None = None
        self._cam_pending: int | None = None
        self._pred: dict[str, Any] | None = None  # items, arrays, probs, class_names, model
        self._cams: dict[int, np.ndarray] = {}
        self._heatmap: weakref.ref | None = None
        self.model_picker = compact(ModelPicker(kinds=("classification",)))
        self.predict_source = QComboBox()
        self.predict_source.addItems(PREDICT_SOURCES)
        self.predict_image = LayerCombo(self.viewer, Image)
        self.predict_shapes = LayerCombo(self.viewer, Shapes)
        self.tta = QCheckBox("test-time flips")
        self.tta.setChecked(True)
        self.tta.setToolTip("Average the probabilities over flipped copies of each item")
        self.predict_buttons = RunCancelRow("Classify")
        self.predict_button = self.predict_buttons.run_button
        self.export_button = QPushButton("CSV\u2026")
        self.export_button.setToolTip("Save the table as CSV (item, class, p_<class>)")
        self.export_button.setEnabled(False)
        self.predict_buttons.layout().addWidget(self.export_button)
        self.results = ResultsTable()
        self.results.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        shapes_row = QHBoxLayout()
        shapes_row.addWidget(self.predict_image, 1)
        shapes_row.addWidget(self.predict_shapes, 1)
        self.predict_shapes_row = QWidget()
        self.predict_shapes_row.setLayout(shapes_row)
        shapes_row.setContentsMargins(0, 0, 0, 0)
        self.predict_shapes_row.setVisible(False)
        form = QFormLayout()
        form.addRow("model", self.model_picker)
        form.addRow("items", self.predict_source)
        form.addRow(self.predict_shapes_row)
        form.addRow(self.tta)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.predict_buttons)
        lay.addWidget(self.results, 1)
        self.predict_source.currentIndexChanged.connect(lambda i: self.predict_shapes_row.setVisible(i == 1))
        self.predict_button.clicked.connect(self.predict)
        self.predict_buttons.cancel_button.clicked.connect(self.cancel_predict)
        self.export_button.clicked.connect(self._browse_export)
        self.results.itemActivated.connect(self.show_heatmap)

    @property
    def predicting(self) -> bool:
        return any(j is not None and j.running for j in (self._predict_job, self._cam_job))

    @property
    def heatmap_layer(self) -> Image | None:
        layer = self._heatmap() if self._heatmap is not None else None
        return layer if layer is not None and layer in self.viewer.layers else None

    def predict_items(self) -> list[Item]:
        if self.predict_source.currentIndex() == 1:
            image, shapes = self.predict_image.layer(), self.predict_shapes.layer()
            if image is None or shapes is None:
                raise ParameterError("Pick an image and a Shapes layer with the regions to classify.")
            return region_items(shapes, image, need_class=False)
        chosen = self.viewer.layers.selection
        layers = [lay for lay in reversed(self.viewer.layers)
                  if lay in chosen and isinstance(lay, Image) and is_item_layer(lay)]
        if not layers:
            raise ParameterError("Select the Image layers to classify in the layer list.")
        return [layer_item(lay, None, self.viewer.dims.point) for lay in layers]

    def predict(self) -> None:
        """Classify the items in a worker thread; the table fills when done."""
        if self.predicting:
            return
        info = self.model_picker.current()
        if info is None:
            self.status.set("No classification model: train one first or add a model folder.", error=True)
            return
        try:
            items = self.predict_items()
        except MedsegError as exc:
            self.status.set(str(exc), error=True)
            return
        model, tta = str(info.path), self.tta.isChecked()
        self._predict_job = ProgressJob(lambda token: _predict_gen(items, model, tta),
                                        lambda out: self._predict_done(out, items, model, info.name),
                                        desc="Classifying", owner=self)
        self.predict_buttons.set_running(True)
        self.status.set(f"Classifying {len(items)} item(s) with '{info.name}'…")
        self._predict_job.start()

    def cancel_predict(self) -> None:
        if self._predict_job is not None and self._predict_job.running:
            self._predict_job.cancel()

    def export_csv(self, path: str | Path) -> Path:
        """Write the results table to ``path``."""
        out = self.results.write_csv(path)
        self.status.set(f"Saved {len(self.results.names)} rows to {out}")
        return out

    def show_heatmap(self, index: int) -> None:
        """Show item ``index``'s Grad-CAM map (computed in a worker the first time)."""
        if self._pred is None or not 0 <= index < len(self._pred["items"]):
            return
        if index in self._cams:
            self._add_heatmap(index)
            return
        if self._cam_job is not None and self._cam_job.running:
            self._cam_pending = index
            return
        arr, model = self._pred["arrays"][index], self._pred["model"]
        k = int(np.argmax(self._pred["probs"][index]))
        self._cam_job = ProgressJob(lambda token: _gradcam_gen(arr, model, k),
                                    lambda out: self._cam_done(out, index), desc="Grad-CAM", owner=self)
        self._cam_job.start()

    # --- internals ----------------------------------------------------------------------------
    def _predict_done(self, outcome: JobOutcome, items: list[Item], model: str, model_name: str) -> None:
        def show(res: Any) -> str:
            arrays, probs, names = res
            self._pred = {"items": items, "arrays": arrays, "probs": probs, "class_names": names, "model": model}
            self._cams.clear()
            self.results.set_results([it.name for it in items], probs, names)
            self.export_button.setEnabled(True)
            pred = [names[int(k)] for k in np.argmax(probs, axis=1)]
            return (f"Classified {len(items)} item(s) with '{model_name}': {count_text(pred)}. "
                    "Select a row to see where the model looked.")

        finish_job(outcome, self.status, "Classification", show, buttons=self.predict_buttons)

    def _cam_done(self, outcome: JobOutcome, index: int) -> None:
        if outcome.error is not None:
            finish_job(outcome, self.status, "Grad-CAM", lambda r: None)
        elif outcome.ok:
            self._cams[index] = outcome.result
            if self._cam_pending is None:
                self._add_heatmap(index)
        pending, self._cam_pending = self._cam_pending, None
        if pending is not None:
            self.show_heatmap(pending)

    def _add_heatmap(self, index: int) -> None:
        item = self._pred["items"][index]
        cls = self._pred["class_names"][int(np.argmax(self._pred["probs"][index]))]
        cam = self._cams[index]
        lo = float(cam.min())  # the map's own range: the least relevant pixels add nothing (additive blending)
        layer = Image(cam, name=f"Grad-CAM {item.name}", colormap="inferno", opacity=0.5,
                      blending="additive", contrast_limits=(lo, max(float(cam.max()), lo + 1e-3)),
                      metadata={MADE_BY: "gradcam", "item": item.name, "class": cls}, **heatmap_geometry(item))
        viewer = self.viewer
        selected, active = list(viewer.layers.selection), viewer.layers.selection.active
        old = self.heatmap_layer
        if old is not None:
            viewer.layers.remove(old)
        layer.name = unique_name(viewer, layer.name)
        viewer.add_layer(layer)
        self._heatmap = weakref.ref(layer)
        viewer.layers.selection.clear()  # keep the user's selection (Predict reads it)
        viewer.layers.selection.update([lay for lay in selected if lay in viewer.layers])
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active
        self.status.set(f"Grad-CAM of {item.name} for '{cls}': bright = pixels that drove the decision.")

    def _browse_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the classification table", "classification.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except OSError as exc:
                self.status.set(f"Export failed: {exc}", error=True)


__all__ = ["PREDICT_SOURCES", "PredictPanel", "compact"]
