"""The Classify dock widget: train a CNN classifier on labelled images, tiles or regions, then predict with Grad-CAM.

**Train** takes items from Image layers (a class per layer, typed in a
table), from the regions of a Shapes layer drawn over one image (a class per
shape: ``features["class"]`` or the shape's text; each shape's bounding box
is an item) or from a ``file,class`` CSV, and runs
:func:`napari_medseg.training.classifier.train_classifier_iter` in a thread
worker with a live loss / validation-accuracy plot.  Cancel keeps the best
epoch: the widget cancels only the core's token, so the core saves the model
and returns.  The new model appears in every model picker.

**Predict** classifies the selected Image layers (or the Shapes regions)
with :func:`napari_medseg.analysis.image_classify.classify_items` into a
sortable table (item, class, ``p_<class>``), exportable as CSV; selecting a
row shows that item's Grad-CAM map as a heat-map layer over the item, which
replaces the previous one the widget made.  The user's layers are never
modified.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Shapes
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ....errors import MedsegError, ParameterError
from ....progress import CancelToken, Progress
from ..._worker import JobOutcome
from ..common import (
    DevicePicker,
    LayerCombo,
    ModelPicker,
    collapsible_form,
    notify_models_changed,
    precision_combo,
    spin_box,
    suggest_model_name,
)
from ..dock import JobDock
from ..plot import CurvePlot
from .items import Item, count_text, layer_item, materialize, read_table, region_items
from .layer_table import LayerClassTable
from .predict import PredictPanel, compact

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

if "torch" not in sys.modules:  # OpenMP spin-waiting starves the GUI thread otherwise
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SOURCES = ("Image layers", "Shapes regions", "Table (CSV)")


class ClassifyWidget(JobDock):
    """Dock widget: train a CNN image classifier and predict with saliency maps.

    ``napari_viewer``: see :class:`~napari_medseg._napari.widgets.dock.JobDock`.
    """

    cancelling_text = "Cancelling: the best epoch so far is kept…"

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer, "Label some images (a class per layer or per shape), then Train.")
        self.predict_panel = p = PredictPanel(napari_viewer, self.status)
        # the Predict tab's parts, for scripts and tests
        self.model_picker, self.results, self.tta = p.model_picker, p.results, p.tta
        self.predict_source, self.predict_image, self.predict_shapes = p.predict_source, p.predict_image, p.predict_shapes
        self.predict_button, self.export_button = p.predict_button, p.export_button
        self.predict, self.cancel_predict, self.export_csv, self.show_heatmap = (
            p.predict, p.cancel_predict, p.export_csv, p.show_heatmap)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_train(), "Train")
        self.tabs.addTab(p, "Predict")
        lay = QVBoxLayout(self)
        lay.addWidget(self.tabs)
        lay.addWidget(self.status)
        self.setMinimumWidth(300)

        self._train_token: CancelToken | None = None
        self._best: tuple[float, int] = (float("inf"), 0)
        self.last_result = None  #: ClassifierResult of the last training
        self.csv_items: list[Item] = []
        self.model_picker.refresh()
        self.base_picker.refresh()
        self._suggest_name()
        self.device_picker.populate()

    # --- construction --------------------------------------------------------------------
    def _build_train(self) -> QWidget:
        v = self.viewer
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.layer_table = LayerClassTable(v)
        self.layer_table.setMinimumHeight(90)
        self.region_image = LayerCombo(v, Image)
        self.region_shapes = LayerCombo(v, Shapes)
        self.region_label = QLabel("")
        self.region_label.setWordWrap(True)
        shapes_page = QWidget()
        f = QFormLayout(shapes_page)
        f.setContentsMargins(0, 0, 0, 0)
        f.addRow("image", self.region_image)
        f.addRow("regions", self.region_shapes)
        f.addRow(self.region_label)
        self.load_button = QPushButton("Load table\u2026")
        self.load_button.setToolTip("A CSV with the columns file,class (files relative to the CSV's folder)")
        self.csv_label = QLabel("no table loaded")
        self.csv_label.setWordWrap(True)
        csv_page = QWidget()
        cl = QVBoxLayout(csv_page)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(self.load_button)
        cl.addWidget(self.csv_label)
        cl.addStretch(1)
        self.source_stack = QStackedWidget()
        for page in (self.layer_table, shapes_page, csv_page):
            self.source_stack.addWidget(page)

        self.use_base = QCheckBox("start from")
        self.use_base.setToolTip("Start from the encoder of a shipped or user model (transfer learning); "
                                 "off: from scratch")
        self.base_picker = compact(ModelPicker())
        self.base_picker.setEnabled(False)
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.0, 600.0)
        self.minutes.setDecimals(1)
        self.minutes.setValue(2.0)
        self.minutes.setSuffix(" min")
        self.minutes.setSpecialValueText("no limit")
        self.epochs = spin_box(0, 10000, 0, special="auto", tip="Epochs (auto = until the time budget or early stopping)")
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip("Saved under this name in the user model folder")
        self.size = spin_box(16, 512, 96, 16, tip="Input size of the network in pixels (items are resized to it)")
        self.depth = spin_box(3, 6, 5, tip="Encoder levels (size must be a multiple of 2^(depth-1))")
        self.width = spin_box(0, 64, 0, 4, special="auto",
                           tip="Channels of the first level; auto = the base model's, else 16")
        self.batch = spin_box(0, 512, 0, 4, special="auto",
                           tip="Items per step; auto = a third of the training items (4-32), so that a few "
                               "labelled images still give several steps per epoch")
        self.val_percent = spin_box(0, 50, 20, 5, tip="Share of each class held out for validation and calibration")
        self.val_percent.setSuffix(" %")
        self.augment = QCheckBox("augmentation")
        self.augment.setChecked(True)
        self.device_picker = DevicePicker()
        self.advanced, af = collapsible_form("Advanced")
        af.addRow("input size", self.size)
        af.addRow("depth", self.depth)
        af.addRow("width", self.width)
        af.addRow("batch", self.batch)
        af.addRow("validation", self.val_percent)
        af.addRow(self.augment)
        af.addRow("device", self.device_picker)
        self.precision = precision_combo()
        af.addRow("precision", self.precision)
        self.train_buttons = self.run_row("Train", self.train)
        self.train_button = self.train_buttons.run_button
        self.plot = CurvePlot("val accuracy")
        self.plot.setMinimumHeight(110)

        page = QWidget()
        form = QFormLayout()
        form.addRow("classes from", self.source)
        form.addRow(self.source_stack)
        form.addRow(self.use_base, self.base_picker)
        form.addRow("time budget", self.minutes)
        form.addRow("epochs", self.epochs)
        form.addRow("save as", self.name_edit)
        lay = QVBoxLayout(page)
        lay.addLayout(form)
        lay.addWidget(self.advanced)
        lay.addWidget(self.train_buttons)
        lay.addWidget(self.plot)

        self.source.currentIndexChanged.connect(self.source_stack.setCurrentIndex)
        self.use_base.toggled.connect(self.base_picker.setEnabled)
        self.load_button.clicked.connect(self._browse_table)
        self._watched_shapes: Any = None
        self.region_shapes.layerChanged.connect(self._watch_shapes)
        self.region_image.layerChanged.connect(self._update_region_text)
        self._watch_shapes(self.region_shapes.layer())
        return page

    # --- public API (tests and scripts) ----------------------------------------------------
    @property
    def predicting(self) -> bool:
        return self.predict_panel.predicting

    @property
    def heatmap_layer(self) -> Image | None:
        """The heat-map layer this widget shows (None when none is in the viewer)."""
        return self.predict_panel.heatmap_layer

    def load_table(self, path: str | Path) -> int:
        """Use the items of a ``file,class`` CSV for training; returns their number."""
        self.csv_items = read_table(path)
        counts = count_text([it.label for it in self.csv_items])
        self.csv_label.setText(f"{Path(path).name}: {len(self.csv_items)} files ({counts})")
        self.csv_label.setToolTip(str(path))
        self.source.setCurrentIndex(2)
        return len(self.csv_items)

    def training_items(self) -> list[Item]:
        """The labelled items of the chosen source (in the GUI thread; pixels of files are read later)."""
        src = self.source.currentIndex()
        if src == 0:
            entries = self.layer_table.entries()
            if not entries:
                raise ParameterError("No training image: tick Image layers and give each a class.")
            point = self.viewer.dims.point
            return [layer_item(layer, cls, point) for layer, cls in entries]
        if src == 1:
            image, shapes = self.region_image.layer(), self.region_shapes.layer()
            if image is None or shapes is None:
                raise ParameterError("Pick an image and a Shapes layer whose regions carry a class.")
            return region_items(shapes, image, need_class=True)
        if not self.csv_items:
            raise ParameterError("No table: load a CSV with the columns file,class.")
        return list(self.csv_items)

    def train(self) -> None:
        """Start training in a worker thread (returns at once)."""
        if (prepared := self.prepared(self._collect_training)) is None:
            return
        kwargs, items = prepared
        token = self._train_token = CancelToken()  # the core's own token: cancel ends the loop, the core saves

        def make_gen(_job_token):
            yield Progress(0, 1, f"reading {len(items)} item(s)")
            arrays = materialize(items)
            from ....training.classifier import train_classifier_iter  # torch loads here, in the worker

            return (yield from train_classifier_iter(arrays, [it.label for it in items], cancel=token, **kwargs))

        self.plot.clear()
        self._best = (float("inf"), 0)
        self.start_job(make_gen, self._train_done, desc=f"Training {kwargs['name']}",
                       message=f"Training '{kwargs['name']}' on {len(items)} items "
                       f"({count_text([i.label for i in items])})…")

    def cancel(self) -> None:
        """Stop training after the current step; the core keeps and saves the best epoch."""
        if self.running and self._train_token is not None:
            self.status.set(self.cancelling_text)  # first: cancel() may deliver the job's end re-entrantly
            self._train_token.cancel()

    # --- training internals ---------------------------------------------------------------
    def _collect_training(self) -> tuple[dict[str, Any], list[Item]]:
        from ....training.finetune import model_folder

        items = self.training_items()
        if len({it.label for it in items}) < 2:
            raise ParameterError(f"Give items of at least two classes (got only {count_text([i.label for i in items])}).")
        minutes = self.minutes.value() or None
        epochs = self.epochs.value() or None
        if minutes is None and epochs is None:
            raise ParameterError("Give a time budget or a number of epochs.")
        base, width = None, self.width.value() or None
        if self.use_base.isChecked():
            info = self.base_picker.current()
            if info is None:
                raise ParameterError("No base model: pick one, or untick 'start from' to train from scratch.")
            base = str(info.path)
            if width is None:
                width = int(info.card.architecture.get("base_channels", 16))
        folder, name = model_folder(None, self.name_edit.text().strip() or None)
        val = self.val_percent.value() / 100.0
        batch = self.batch.value() or int(np.clip((len(items) - round(val * len(items))) // 3, 4, 32))
        source = SOURCES[self.source.currentIndex()].lower()
        return {"base": base, "size": self.size.value(), "depth": self.depth.value(), "base_channels": width or 16,
                "minutes": minutes, "epochs": epochs, "val_fraction": val, "batch_size": batch,
                "augment": self.augment.isChecked(), "device": self.device_picker.device(), "out": folder,
                "precision": self.precision.currentText(),
                "name": name, "training_data": f"napari Classify widget: {len(items)} items from {source}"}, items

    def _on_progress(self, p: Progress) -> None:
        info = p.info or {}
        if "epoch" not in info:
            self.status.set(p.message)
            return
        if info["val_loss"] < self._best[0]:
            self._best = (info["val_loss"], info["epoch"])
        self.plot.add_point(info["epoch"], info.get("train_loss"), info.get("val_accuracy"), self._best[1])
        text = (f"epoch {info['epoch']}{'/' + str(p.total) if p.total else ''}: loss {info['train_loss']:.3f}, "
                f"val loss {info['val_loss']:.3f}, val accuracy {info['val_accuracy']:.3f}")
        self.status.set(text + ("; cancelling…" if self._train_token and self._train_token.cancelled else ""))

    def _train_done(self, outcome: JobOutcome) -> None:
        def show(res: Any) -> str:
            self.last_result = res
            m = res.metrics
            notify_models_changed()
            self.model_picker.select(res.model_path.name)
            how = (f"Cancelled at epoch {len(res.history)}; kept the best epoch ({m['best_epoch']})"
                   if res.cancelled else f"Trained {len(res.history)} epoch(s), best {m['best_epoch']}")
            return (f"{how}: saved '{res.model_path.name}'.\nval accuracy {m['val_accuracy']:.3f}, "
                    f"AUC {m['val_auc']:.3f} (n={m['n_val']}); ECE {m['ece_before']:.3f} before, "
                    f"{m['ece_after']:.3f} after calibration (T={m['temperature']:.2f})")

        self.end_job(outcome, "Training", show,
                     cancelled=lambda o: f"Training stopped after {o.elapsed:.0f} s; nothing was saved.")
        self._suggest_name()

    def _suggest_name(self) -> None:
        suggest_model_name(self.name_edit, "classifier")

    def _browse_table(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Training table (file,class)", "", "CSV (*.csv);;All files (*)")
        if path:
            try:
                self.load_table(path)
            except MedsegError as exc:
                self.status.set(str(exc), error=True)

    def _watch_shapes(self, layer: Any) -> None:
        if self._watched_shapes is not None:
            self._watched_shapes.events.data.disconnect(self._update_region_text)
            self._watched_shapes.events.features.disconnect(self._update_region_text)
        self._watched_shapes = layer
        if layer is not None:
            layer.events.data.connect(self._update_region_text)
            layer.events.features.connect(self._update_region_text)
        self._update_region_text()

    def _update_region_text(self, *_: Any) -> None:
        image, shapes = self.region_image.layer(), self.region_shapes.layer()
        if image is None or shapes is None:
            self.region_label.setText("Draw rectangles over one image; give each a 'class' feature (or text).")
            return
        try:
            items = region_items(shapes, image, need_class=False)
            missing = sum(it.label is None for it in items)
            text = f"{len(items)} region(s): {count_text([it.label for it in items if it.label])}" + (
                f"; {missing} without a class" if missing else "")
        except MedsegError as exc:
            text = str(exc)
        self.region_label.setText(text)


__all__ = ["ClassifyWidget"]
