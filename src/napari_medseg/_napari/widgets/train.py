"""The Train dock widget: fine-tune a model on the labels just painted, with live curves.

The user picks (image, labels) pairs, a base model (or from scratch), the
mode (instance / semantic with editable class names), optionally a Shapes
layer as ROI, a time budget, and presses Train.  The core generator
:func:`napari_medseg.training.finetune.finetune_iter` runs in a napari thread
worker (:class:`~napari_medseg._napari._worker.ProgressJob`): the dock shows
the region used, a live plot of the loss and validation score per epoch and
a status line (device, epoch, time left).  The model is written into the
user model folder under the chosen name at every improvement, so Cancel
keeps the best checkpoint so far; every model list of the app (the Segment
widget's too) is refreshed when it appears.  Preview runs the current
checkpoint on the selected image (the current slice of a volume) into a
preview Labels layer that this widget owns (replaced on the next preview,
never a user layer).
"""

from __future__ import annotations

import os
import sys
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
)

from ...errors import MedsegError
from ...geometry import convert, is_length
from .._worker import JobOutcome, ProgressJob
from ..layers import engine_scale, layer_axes
from .common import LayerCombo, collapsible_form, precision_combo, scrolling_layout, suggest_model_name
from .dock import JobDock, ModelRows
from .plot import CurvePlot

if TYPE_CHECKING:
    import napari

    from ...progress import Progress

if "torch" not in sys.modules:  # OpenMP spin-waiting starves the GUI and the patch thread otherwise
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PREVIEW_OF = "napari_medseg_preview_of"  #: metadata key of the preview layer


def _fmt_num(v: float | None) -> str:
    return "?" if v is None else f"{v:.3f}"


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d}"


class TrainWidget(JobDock):
    """Dock widget: train or fine-tune a segmentation model on painted Labels layers.

    ``napari_viewer``: see :class:`~napari_medseg._napari.widgets.dock.JobDock`.
    """

    cancelling_text = "Cancelling: keeping the best checkpoint so far…"

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer, "Paint some objects, pick the pair(s), then Train.")
        # the base model follows the image; the model list is not re-read on show (a training refreshes it)
        rows = ModelRows(napari_viewer, ("instance", "semantic"), note=False)
        self.image_combo, self.model_picker, self.device_picker = rows.image_combo, rows.model_picker, rows.device_picker
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.add_button = QPushButton("+")
        self.add_button.setToolTip("Add this (image, labels) pair to the training data")
        self.remove_button = QPushButton("\u2212")
        self.remove_button.setToolTip("Remove the selected pair")
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(70)
        self.pair_list.setToolTip("Training pairs; when empty, the pair chosen above is used")
        self._pairs: list[tuple[weakref.ref, weakref.ref]] = []

        self.scratch = QCheckBox("from scratch")
        self.scratch.setToolTip("A new U-Net (16 base channels, depth 4) instead of fine-tuning a model")
        self.mode = QComboBox()
        self.mode.addItems(["instance", "semantic"])
        self.mode.setToolTip("instance: each painted object has its own id; semantic: label value = class id")
        self.classes = QLineEdit("lesion")
        self.classes.setToolTip("Names of classes 1, 2, ... separated by commas (semantic mode)")
        self.use_roi = QCheckBox("ROI")
        self.use_roi.setToolTip("Train only inside the shapes of this layer (default: the painted labels' box)")
        self.roi_combo = LayerCombo(napari_viewer, Shapes)
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.0, 600.0)
        self.minutes.setDecimals(1)
        self.minutes.setValue(2.0)
        self.minutes.setSuffix(" min")
        self.minutes.setSpecialValueText("no limit")
        self.epochs = QSpinBox()
        self.epochs.setRange(0, 10000)
        self.epochs.setSpecialValueText("auto")
        self.epochs.setToolTip("Epochs (auto = until the time budget or early stopping)")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(0.0, 0.1)
        self.lr.setSingleStep(1e-4)
        self.lr.setSpecialValueText("auto")
        self.lr.setToolTip("Peak learning rate; auto = 1e-3")
        self.augment = QCheckBox("augmentation")
        self.augment.setChecked(True)
        self.early_stopping = QCheckBox("early stopping")
        self.early_stopping.setChecked(True)
        self.val_percent = QSpinBox()
        self.val_percent.setRange(0, 50)
        self.val_percent.setValue(20)
        self.val_percent.setSuffix(" %")
        self.val_percent.setToolTip("Share of the annotation held out for validation (0 = none)")
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip("Saved as this name in the user model folder (letters, digits, . _ + -)")

        pair_row = QHBoxLayout()
        pair_row.addWidget(self.labels_combo, 1)
        pair_row.addWidget(self.add_button)
        self.add_button.setFixedWidth(28)
        self.remove_button.setFixedWidth(28)
        list_row = QHBoxLayout()
        list_row.addWidget(self.pair_list, 1)
        list_row.addWidget(self.remove_button)

        roi_row = QHBoxLayout()
        roi_row.addWidget(self.use_roi)
        roi_row.addWidget(self.roi_combo, 1)

        self.advanced, adv_form = collapsible_form("Advanced")
        adv_form.addRow("learning rate", self.lr)
        adv_form.addRow("validation", self.val_percent)
        adv_form.addRow(self.augment)
        adv_form.addRow(self.early_stopping)
        adv_form.addRow("device", self.device_picker)
        self.precision = precision_combo()
        adv_form.addRow("precision", self.precision)

        self.train_button = self.run_row("Train", self.train).run_button
        self.preview_button = QPushButton("Preview")
        self.preview_button.setToolTip("Run the current checkpoint on the image (current slice) into a preview layer")
        self.buttons.layout().addWidget(self.preview_button)
        self.region_label = QLabel("")
        self.region_label.setWordWrap(True)
        self.plot = CurvePlot()

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("labels", pair_row)
        form.addRow("pairs", list_row)
        form.addRow("base model", self.model_picker)
        form.addRow("", self.scratch)
        form.addRow("mode", self.mode)
        form.addRow("classes", self.classes)
        form.addRow("region", roi_row)
        form.addRow("budget", self.minutes)
        form.addRow("epochs", self.epochs)
        form.addRow("save as", self.name_edit)
        lay = scrolling_layout(self)
        lay.addLayout(form)
        lay.addWidget(self.advanced)
        lay.addWidget(self.buttons)
        lay.addWidget(self.region_label)
        lay.addWidget(self.plot)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self._preview_job: ProgressJob | None = None
        self._preview_layer: weakref.ref | None = None
        self.model_path = None  #: folder of the model being / last trained
        self.last_result = None  #: FinetuneResult of the last finished run
        self.add_button.clicked.connect(self._add_current_pair)
        self.remove_button.clicked.connect(self._remove_selected)
        self.preview_button.clicked.connect(self.preview)
        self.scratch.toggled.connect(self.model_picker.setDisabled)
        self.mode.currentTextChanged.connect(self._on_mode)
        # the region text follows painting (debounced) and the ROI layer
        self._region_timer = QTimer(self)
        self._region_timer.setSingleShot(True)
        self._region_timer.setInterval(300)
        self._region_timer.timeout.connect(self._update_region_text)
        self._watched: list[Any] = []
        for sig in (self.labels_combo.layerChanged, self.roi_combo.layerChanged, self.use_roi.toggled):
            sig.connect(self._watch_layers)
        rows.start()
        self._on_mode(self.mode.currentText())
        self._watch_layers()
        self._suggest_name()

    # --- public API (tests and scripts) ------------------------------------------------
    @property
    def previewing(self) -> bool:
        return self._preview_job is not None and self._preview_job.running

    def add_pair(self, image: Image, labels: Labels) -> None:
        """Add an (image, labels) pair to the training list."""
        if any(i() is image and lab() is labels for i, lab in self._pairs):
            return
        self._pairs.append((weakref.ref(image), weakref.ref(labels)))
        self.pair_list.addItem(f"{image.name} \u2194 {labels.name}")
        self._watch_layers()

    def pairs(self) -> list[tuple[Image, Labels]]:
        """The pairs training will use (the listed ones, else the one chosen in the combos)."""
        alive = [(i(), lab()) for i, lab in self._pairs]
        alive = [(i, lab) for i, lab in alive if i is not None and lab is not None and i in self.viewer.layers
                 and lab in self.viewer.layers]
        if alive:
            return alive
        img, lab = self.image_combo.layer(), self.labels_combo.layer()
        return [(img, lab)] if img is not None and lab is not None else []

    def train(self) -> None:
        """Start training in a worker thread (returns at once)."""
        if (kwargs := self.prepared(self._collect)) is None:
            return
        from ...training.finetune import model_folder

        try:
            self.model_path, kwargs["name"] = model_folder(None, kwargs["name"])
        except MedsegError as exc:
            self.status.set(str(exc), error=True)
            return
        images, labels = kwargs.pop("images"), kwargs.pop("labels")

        def make_gen(token):
            from ...training.finetune import (
                finetune_iter,  # torch loads here, in the worker thread
            )

            return finetune_iter(images, labels, cancel=token, **kwargs)

        self.plot.clear("val AP@0.5" if kwargs["mode"] == "instance" else "val Dice")
        self._announced = False
        self.start_job(make_gen, self._finish, desc=f"Training {kwargs['name']}", message=f"Preparing {kwargs['name']}…")

    def preview(self) -> None:
        """Segment the selected image (its current slice in 3D) with the current checkpoint."""
        from ...models.spec import CARD_NAME

        if self.previewing:
            return
        image = self.image_combo.layer() or next((i for i, _ in self.pairs()), None)
        if image is None:
            self.status.set("Preview: no image to run on.", error=True)
            return
        if self.model_path is None or not (self.model_path / CARD_NAME).exists():
            self.status.set("Preview: no checkpoint yet (train for at least one epoch).", error=True)
            return
        scale = _scale_of(image)
        scale = None if scale is None else scale[-2:]
        data = image.data[0] if image.multiscale else image.data
        n_sp = data.ndim - (1 if image.rgb else 0)
        z = None
        if n_sp == 3:
            pos = image.world_to_data(self.viewer.dims.point)
            z = int(np.clip(np.round(pos[0]), 0, data.shape[0] - 1))
            data = data[z]
        path = self.model_path

        def make_gen(token):
            from ...inference.segment import segment_iter

            return segment_iter(data, path, axes="YXS" if image.rgb else "YX", scale=scale,
                                units=None if scale is None else "µm", cancel=token)

        self._preview_job = ProgressJob(make_gen, lambda out: self._preview_done(image, z, out),
                                        desc="Preview", owner=self)
        self._preview_job.start()

    # --- collecting the settings ----------------------------------------------------------
    def _collect(self) -> dict[str, Any]:
        from ...errors import ParameterError

        pairs = self.pairs()
        if not pairs:
            raise ParameterError("No (image, labels) pair: add an image and a Labels layer with painted objects.")
        images, labels, names, scales = [], [], [], []
        for img, lab in pairs:
            data = img.data[0] if img.multiscale else img.data
            ldata = lab.data[0] if lab.multiscale else lab.data
            images.append(data)
            labels.append(np.array(ldata, copy=True))  # the user may keep painting while we train
            names.append(img.name)
            scales.append(_scale_of(img))
        mode = self.mode.currentText()
        base = None
        if not self.scratch.isChecked():
            info = self.model_picker.current()
            if info is None:
                raise ParameterError("No base model: pick one or tick 'from scratch'.")
            base = str(info.path)
        roi = None
        if self.use_roi.isChecked() and self.roi_combo.layer() is not None:
            roi = [roi_polygons(self.roi_combo.layer(), img) for img, _ in pairs]
        minutes = self.minutes.value() or None
        epochs = self.epochs.value() or None
        if minutes is None and epochs is None:
            raise ParameterError("Give a time budget or a number of epochs.")
        return {
            "images": images, "labels": labels, "names": names,
            "scale": scales if all(s is not None for s in scales) else None,
            "base": base, "mode": mode,
            # the classes field is for semantic mode only (greyed out otherwise)
            "class_names": ([c.strip() for c in self.classes.text().split(",") if c.strip()] or None)
            if mode == "semantic" else None,
            "roi": roi, "minutes": minutes, "epochs": epochs, "lr": self.lr.value() or None,
            "augment": self.augment.isChecked(), "val_fraction": self.val_percent.value() / 100.0,
            "early_stopping": self.early_stopping.isChecked(), "device": self.device_picker.device(),
            "precision": self.precision.currentText(), "name": self.name_edit.text().strip() or None,
        }

    # --- slots ------------------------------------------------------------------------------
    def _add_current_pair(self) -> None:
        img, lab = self.image_combo.layer(), self.labels_combo.layer()
        if img is None or lab is None:
            self.status.set("Pick an image and a Labels layer first.", error=True)
            return
        self.add_pair(img, lab)

    def _remove_selected(self) -> None:
        row = self.pair_list.currentRow()
        if 0 <= row < len(self._pairs):
            del self._pairs[row]
            self.pair_list.takeItem(row)
            self._watch_layers()

    def _on_mode(self, mode: str) -> None:
        self.classes.setEnabled(mode == "semantic")
        self._update_region_text()

    def _suggest_name(self) -> None:
        suggest_model_name(self.name_edit, "my-model")

    def _schedule_region(self, *_: Any) -> None:
        self._region_timer.start()

    def _watch_layers(self, *_: Any) -> None:
        """Re-describe the region when the labels are painted or the ROI shapes change."""
        for layer in self._watched:
            for name in ("paint", "data", "set_data"):
                ev = getattr(layer.events, name, None)
                if ev is not None:
                    ev.disconnect(self._schedule_region)
        self._watched = [lay for _, lay in self.pairs()]
        if self.use_roi.isChecked() and self.roi_combo.layer() is not None:
            self._watched.append(self.roi_combo.layer())
        for layer in self._watched:
            for name in ("paint", "data", "set_data"):
                ev = getattr(layer.events, name, None)
                if ev is not None:
                    ev.connect(self._schedule_region)
        self._update_region_text()

    def _update_region_text(self, *_: Any) -> None:
        """Say which pixels training will use (computed from the painted labels, cheap)."""
        if self.running:
            return
        from ...training.regions import describe_region

        pairs = self.pairs()
        if not pairs or sum(int(np.prod(lab.data.shape)) for _, lab in pairs if not lab.multiscale) > 2e8:
            self.region_label.setText("")
            return
        try:
            roi = None
            if self.use_roi.isChecked() and self.roi_combo.layer() is not None:
                roi = [roi_polygons(self.roi_combo.layer(), img) for img, _ in pairs]
            text = describe_region([np.asarray(lab.data) for _, lab in pairs], roi, names=[i.name for i, _ in pairs],
                                   mode=self.mode.currentText(), val_fraction=self.val_percent.value() / 100.0)
        except Exception as exc:  # noqa: BLE001
            text = f"Region: {exc}"
        self.region_label.setText(text)

    def _on_progress(self, p: Progress) -> None:
        if self._job is None or self._job.cancel_requested:
            return
        info = p.info or {}
        if "region" in info:
            self.region_label.setText(info["region"])
            return
        if "base_val_score" in info:  # the base model scored before training: epoch 0 of the curve
            self.plot.add_point(0, None, info["base_val_score"], 0)
            self.status.set(f"{info.get('device', '')}\nbase model: val {info['base_val_score']:.3f} "
                            "(kept unless an epoch does at least as well)")
            return
        if info.get("epoch_end"):
            self.plot.add_point(info["epoch"], info.get("epoch_loss"), info.get("val_score"), info.get("best_epoch"))
            if not self._announced:  # the first checkpoint is on disk: show it in every model list
                self._announced = True
                refresh_model_lists()
        val = info.get("val_score")
        self.status.set(f"{info.get('device', '')}\nepoch {info.get('epoch', 0) + (0 if info.get('epoch_end') else 1)}"
                        f", step {p.step}/{p.total or '?'}, loss {_fmt_num(info.get('loss'))}"
                        + ("" if val is None else f", val {val:.3f} (best {_fmt_num(info.get('best'))})")
                        + f", time left {_fmt_time(info.get('eta_s'))}")

    def _finish(self, outcome: JobOutcome) -> None:
        from ...models.spec import CARD_NAME
        from ...training.finetune import KEPT_BASE_ADVICE

        def cancelled(outcome: JobOutcome) -> str:
            name = self.model_path.name if self.model_path is not None else "?"
            kept = self.model_path is not None and (self.model_path / CARD_NAME).exists()
            return (f"Cancelled after {outcome.elapsed:.0f} s; "
                    + (f"the best checkpoint so far is saved as '{name}'." if kept else "nothing was saved."))

        def show(res: Any) -> str:
            self.last_result = res
            metric = next(((k, v) for k, v in res.card.metrics.items() if isinstance(v, float)), None)
            how = " (stopped early)" if res.stopped_early else ""
            return (f"Saved '{res.card.name}' after {len(res.history)} epoch(s) in {outcome.elapsed:.0f} s{how}"
                    + (f"; best epoch {res.best['epoch']}: {metric[0]} {metric[1]:.3f}" if res.best and metric else "")
                    + ("\n" + KEPT_BASE_ADVICE.replace("(e.g. 3e-4)", "(Advanced, e.g. 3e-4)")
                       if res.card.training.get("kept_base_weights") else "")
                    + f"\n{res.model_path}")

        self.end_job(outcome, "Training", show, cancelled=cancelled)
        refresh_model_lists()
        self._suggest_name()

    def _preview_done(self, image: Image, z: int | None, outcome: JobOutcome) -> None:
        if outcome.error is not None:
            self.status.set(f"Preview failed: {outcome.error}", error=True)
            return
        if outcome.cancelled:
            return
        lab2d = np.asarray(outcome.result.labels)
        if z is None:
            data = lab2d
        else:
            full = image.data[0].shape if image.multiscale else image.data.shape
            data = np.zeros(full[:3], lab2d.dtype)
            data[z] = lab2d
        old = self._preview_layer() if self._preview_layer is not None else None
        if old is not None and old in self.viewer.layers and old.metadata.get(PREVIEW_OF) == image.name:
            old.data = data
            return
        layer = Labels(data, name=f"{image.name} preview", scale=image.scale, translate=image.translate,
                       metadata={PREVIEW_OF: image.name}, opacity=0.6)
        if old is not None and old in self.viewer.layers:
            self.viewer.layers.remove(old)
        self.viewer.add_layer(layer)
        self._preview_layer = weakref.ref(layer)



def refresh_model_lists() -> None:
    """Re-read the model registry in every model picker of the app (the Segment widget's too)."""
    from .common import notify_models_changed

    notify_models_changed()


def _scale_of(image: Image) -> tuple[float, ...] | None:
    """Pixel size of an image layer's Z/Y/X axes in µm (the unit training works in), None when unknown."""
    if layer_axes(image) is None:
        return None
    scale, units = engine_scale(image)
    if scale is None or not all(is_length(u) for u in units):
        return None
    return tuple(convert(s, u, "µm") for s, u in zip(scale, units, strict=False))


def roi_polygons(shapes: Shapes, image: Image) -> list[np.ndarray]:
    """The rectangles, polygons and ellipses of a Shapes layer as polygons in ``image``'s data coordinates.

    Vertices go shapes data -> world -> image data, so layers with different
    scale or translate line up.  Ellipses become 64-vertex polygons; lines
    and paths enclose nothing and are skipped.
    """
    data = image.data[0] if image.multiscale else image.data
    n_sp = data.ndim - (1 if image.rgb else 0)
    out = []
    for verts, kind in zip(shapes.data, shapes.shape_type, strict=False):
        if kind in ("line", "path"):
            continue
        v = np.asarray(verts, float)
        if kind == "ellipse":
            c = v.mean(axis=0)
            a, b = (v[1] - v[0]) / 2, (v[3] - v[0]) / 2
            t = np.linspace(0, 2 * np.pi, 64, endpoint=False)[:, None]
            v = c + np.cos(t) * a + np.sin(t) * b
        world = np.array([shapes.data_to_world(p) for p in v])
        pts = np.array([image.world_to_data(w) for w in world], float)
        pts = pts[:, -n_sp:] if pts.shape[1] >= n_sp else pts
        if n_sp == 2 and pts.shape[1] == 3:
            pts = pts[:, 1:]
        out.append(pts)
    return out
