"""A CNN on crops around table rows (cells, lesions): row labels, Train, Classify; shared by Objects and Lesions.

:class:`RowLabeller` keeps the classes the user gives to table rows (object
``id`` -> class): select rows in the table, pick or type a class, "Label
selected".  :class:`CropCnnPanel` trains a CNN on fixed physical-size crops
around the labelled objects
(:func:`napari_medseg.training.crop_classifier.fit_and_classify_iter`: 2D,
2.5D or 3D crops, optional start from another model's encoder, a time
budget, Cancel keeps the best epoch) and classifies every row, or classifies
the rows with a classification model chosen in its picker
(:func:`napari_medseg.analysis.crop_classify.classify_at`, the crop settings
from the model card).  Both run in a thread worker.

The host widget gives a ``source()`` callable returning a :class:`CropSource`
(captured in the GUI thread) and an ``on_result(ids, probs, names, model)``
callback that writes the columns into its table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...errors import MedsegError, ParameterError
from ...progress import CancelToken, Progress
from .._worker import JobOutcome, ProgressJob
from .common import ModelPicker, RunCancelRow, StatusLine, compact_combo, finish_job, notify_models_changed, spin_box

log = logging.getLogger(__name__)

#: (core mode, text) of the crop mode choice.
MODES = (("2d", "2D (plane)"), ("2.5d", "2.5D (3 planes)"), ("3d", "3D (cube)"))


@dataclass
class CropSource:
    """What the CNN needs, captured in the GUI thread.

    Attributes
    ----------
    image : array-like
        ``(Y, X[, C])`` or ``(Z, Y, X)`` pixels the crops are cut from.
    centres : ndarray, shape (N, ndim)
        Pixel centres of every row's object, in table order.
    ids : ndarray of int
        Object id of each row.
    geometry : Geometry or None
    unit : str
        Unit of the crop size (the geometry's length unit, ``pixel`` when uncalibrated).
    name : str
        For the model card and messages (the image layer's name).
    """

    image: Any
    centres: np.ndarray
    ids: np.ndarray
    geometry: Any
    unit: str
    name: str


def selected_ids(table: Any, view: Any) -> list[int]:
    """Object ids (``table["id"]``) of the rows selected in an ObjectsTable ``view`` (none without a table)."""
    if table is None:
        return []
    ids = np.asarray(table["id"], np.int64)
    return [int(ids[r]) for r in view.selected_rows() if r < len(ids)]


class RowLabeller(QWidget):
    """Class per table row, given by the user: "Label selected" / "Clear".

    Parameters
    ----------
    selected_ids : callable
        Returns the object ids of the rows selected in the host's table.
    class_combo : QComboBox, optional
        An editable combo of class names to share (default: a new one).

    Signals
    -------
    labelsChanged()
        After every change of :attr:`labels`.
    """

    labelsChanged = Signal()

    def __init__(self, selected_ids: Callable[[], list[int]], class_combo: QComboBox | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._selected_ids = selected_ids
        self.labels: dict[int, str] = {}  #: object id -> class
        self.owns_combo = class_combo is None
        if class_combo is None:
            class_combo = compact_combo(QComboBox(), 10)
            class_combo.setEditable(True)
            class_combo.addItems(["positive", "negative"])
            class_combo.setToolTip("Class given to the selected rows (type a new name to add a class)")
        self.class_combo = class_combo
        self.label_button = QPushButton("Label selected")
        self.label_button.setToolTip("Give the class to the rows selected in the table (Ctrl/Shift-click: several)")
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Remove the labels of the selected rows (none selected: of every row)")
        self.count_label = QLabel("no row labelled")
        self.count_label.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.label_button)
        buttons.addWidget(self.clear_button)
        lay = QVBoxLayout(self)  # the class above the buttons: a narrow dock stays narrow
        lay.setContentsMargins(0, 0, 0, 0)
        if self.owns_combo:
            lay.addWidget(self.class_combo)
        lay.addLayout(buttons)
        self.label_button.clicked.connect(lambda: self.label_selected())
        self.clear_button.clicked.connect(lambda: self.clear_selected())

    def label_selected(self, cls: str | None = None) -> int:
        """Give ``cls`` (default: the combo's text) to the selected rows; returns how many."""
        cls = (cls if cls is not None else self.class_combo.currentText()).strip()
        ids = self._selected_ids()
        if not cls or not ids:
            return 0
        for i in ids:
            self.labels[int(i)] = cls
        self._changed()
        return len(ids)

    def set_labels(self, labels: dict[int, str]) -> None:
        """Replace every label (e.g. from a script, or none for new objects)."""
        self.labels = {int(k): str(v) for k, v in labels.items()}
        self._changed()

    def clear_selected(self) -> None:
        ids = self._selected_ids()
        if ids:
            for i in ids:
                self.labels.pop(int(i), None)
        else:
            self.labels.clear()
        self._changed()

    def column(self, ids: Any) -> np.ndarray:
        """The ``label`` column for rows of these ids ("" where unlabelled)."""
        return np.asarray([self.labels.get(int(i), "") for i in np.asarray(ids)], dtype=object)

    def _changed(self) -> None:
        per: dict[str, int] = {}
        for c in self.labels.values():
            per[c] = per.get(c, 0) + 1
        self.count_label.setText(", ".join(f"{c}: {n}" for c, n in sorted(per.items())) + " labelled"
                                 if per else "no row labelled")
        self.labelsChanged.emit()


class CropCnnPanel(QWidget):
    """Train / apply a CNN on crops around the host's table rows (see the module docstring).

    Parameters
    ----------
    status : StatusLine
        The host's status line.
    source : callable
        ``source() -> CropSource`` (GUI thread; raises :class:`MedsegError` with a message for people).
    labels : callable
        ``labels() -> dict[id, class]``: the objects to learn from.
    on_result : callable
        ``on_result(ids, probs, names, model_name)`` in the GUI thread after Train or Classify.
    what : str
        ``"cells"``, ``"lesions"``...: for messages and the default model name.
    """

    def __init__(self, status: StatusLine, source: Callable[[], CropSource], labels: Callable[[], dict[int, str]],
                 on_result: Callable[[np.ndarray, np.ndarray, list[str], str], None], what: str = "objects",
                 default_size: Callable[[str], float | None] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.status, self._source, self._labels, self._on_result = status, source, labels, on_result
        self._default_size = default_size
        self.what = what
        self.crop_size = spin_box(0.0, 1e6, 0.0, decimals=2, special="auto", tip="Edge of the square (cube) cut around each object, in the "
                               "image's unit; auto: 2.5 x the median object diameter")
        self.unit_label = QLabel("px")
        self.mode = compact_combo(QComboBox(), 10)
        self.mode.addItems([t for _, t in MODES])
        self.mode.setToolTip("3D images: the plane through the centre, the three orthogonal planes (as 3 "
                             "channels), or the cube")
        self.pixels = spin_box(16, 128, 64, 16, tip="Samples per crop edge: the network's input size (a multiple "
                               "of 16)")
        self.minutes = spin_box(0.0, 600.0, 1.0, decimals=1, special="no limit",
                                tip="Training time budget (early stopping may end sooner)")
        self.minutes.setSuffix(" min")
        self.epochs = spin_box(0, 10000, 0, special="auto", tip="Epochs (auto: until the time budget or early "
                               "stopping)")
        self.use_base = QCheckBox("start from")
        self.use_base.setToolTip("Start from the encoder of a shipped or user model (transfer learning)")
        self.base_picker = ModelPicker()
        self.base_picker.setEnabled(False)
        compact_combo(self.base_picker.combo, 6)  # long model names must not widen the dock
        self.train_buttons = RunCancelRow("Train CNN and classify")
        self.train_button = self.train_buttons.run_button
        self.apply_picker = ModelPicker(kinds=("classification",))
        compact_combo(self.apply_picker.combo, 6)
        self.apply_button = QPushButton("Classify")
        self.apply_button.setToolTip("Classify every row with the chosen model (its own crop settings)")
        self.info = QLabel(f"Label a few {what} of each class in the table, then Train.")
        self.info.setWordWrap(True)
        size_row = QHBoxLayout()
        size_row.addWidget(self.crop_size, 1)
        size_row.addWidget(self.unit_label)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("crop size", size_row)
        form.addRow("crop", self.mode)
        form.addRow("input pixels", self.pixels)
        form.addRow("time budget", self.minutes)
        form.addRow("epochs", self.epochs)
        form.addRow(self.use_base)
        form.addRow(self.base_picker)  # a row of its own: the dock stays narrow
        apply_row = QHBoxLayout()
        apply_row.addWidget(QLabel("or apply a trained CNN:"), 1)
        apply_row.addWidget(self.apply_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        lay.addWidget(self.train_buttons)
        lay.addLayout(apply_row)
        lay.addWidget(self.apply_picker)
        lay.addWidget(self.info)
        self.use_base.toggled.connect(self.base_picker.setEnabled)
        self.train_button.clicked.connect(lambda: self.train())
        self.train_buttons.cancel_button.clicked.connect(self.cancel)
        self.apply_button.clicked.connect(lambda: self.apply())
        self._job: ProgressJob | None = None
        self._token: CancelToken | None = None
        self.last_result = None  #: ClassifierResult of the last training
        self.set_dims(2)

    # --- host-facing -----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._job is not None and self._job.running

    def set_dims(self, ndim: int, unit: str | None = None) -> None:
        """2D objects: crops are planes; 3D: the mode choice applies."""
        three = ndim == 3
        self.mode.setEnabled(three)
        if not three:
            self.mode.setCurrentIndex(0)
        if unit is not None:
            from ...geometry.units import PIXEL

            self.unit_label.setText("px" if unit == PIXEL else unit)

    def spec(self, src: CropSource) -> Any:
        """The crop settings of the controls for this source."""
        from ...analysis.crop_classify import CropSpec

        size = float(self.crop_size.value())
        if size <= 0:
            size = (self._default_size(src.unit) if self._default_size else None) or 64.0
        mode = MODES[self.mode.currentIndex()][0] if np.asarray(src.centres).shape[1] == 3 else "2d"
        return CropSpec(round(size, 3), src.unit, mode, int(self.pixels.value()) // 16 * 16)

    def train(self) -> bool:
        """Train on the labelled rows and classify every row (worker thread); False when it cannot start."""
        if self.running:
            return False
        try:
            labels = self._labels()
            classes = sorted(set(labels.values()))
            if len(classes) < 2:
                raise ParameterError(f"label {self.what} of at least two classes (labelled: "
                                     f"{', '.join(classes) or 'none'})")
            src = self._source()
            rows = {r: labels[int(i)] for r, i in enumerate(src.ids) if int(i) in labels}
            spec = self.spec(src)
            kwargs = self._train_kwargs(src, len(rows))
        except MedsegError as exc:
            self.status.set(str(exc), error=True)
            return False
        token = self._token = CancelToken()

        def make_gen(_job_token):
            from ...training.crop_classifier import fit_and_classify_iter  # torch loads here, in the worker

            return fit_and_classify_iter(src.image, src.centres, rows, src.geometry, spec=spec, cancel=token, **kwargs)

        self._job = ProgressJob(make_gen, lambda o: self._train_done(src, o), on_progress=self._on_progress,
                                desc=f"Training a CNN on {self.what}", owner=self)
        self.train_buttons.set_running(True)
        self.apply_button.setEnabled(False)
        self.info.setText(f"Training on {len(rows)} labelled {self.what}, crops {spec.size:g} {self.unit_label.text()}"
                          f" ({spec.mode})…")
        self._job.start()
        return True

    def apply(self) -> bool:
        """Classify every row with the picked classification model (worker thread)."""
        if self.running:
            return False
        info = self.apply_picker.current()
        try:
            if info is None:
                raise ParameterError("No classification model: train one first (or add a folder).")
            src = self._source()
        except MedsegError as exc:
            self.status.set(str(exc), error=True)
            return False
        path = info.path

        def make_gen(_job_token):
            yield Progress(0, 1, f"classifying {len(src.ids)} {self.what}")
            from ...analysis.crop_classify import classify_at

            probs, names = classify_at(src.image, src.centres, path, src.geometry)
            return probs, names

        def done(outcome: JobOutcome) -> None:
            self.train_buttons.set_running(False)
            self.apply_button.setEnabled(True)

            def show(result: Any) -> str:
                probs, names = result
                self._on_result(src.ids, probs, names, info.name)
                return f"Classified {len(src.ids)} {self.what} with {info.name}: {self._counts(probs, names)}"

            finish_job(outcome, self.status, "Classification", show)

        self._job = ProgressJob(make_gen, done, on_progress=self._on_progress, desc=f"Classifying {self.what}",
                                owner=self)
        self.train_buttons.set_running(True)
        self.apply_button.setEnabled(False)
        self._job.start()
        return True

    def cancel(self) -> None:
        """Stop training after the current step (the best epoch is kept and used), or stop classifying."""
        if not self.running:
            return
        if self._token is not None and not self._token.cancelled:
            self.status.set("Cancelling: the best epoch so far is kept…")  # first: cancel() may deliver the job's end re-entrantly
            self._token.cancel()
        else:
            self._job.cancel()

    # --- internals -------------------------------------------------------------------
    def _train_kwargs(self, src: CropSource, n: int) -> dict[str, Any]:
        from ...training.finetune import default_model_name, model_folder

        base, width = None, 16
        if self.use_base.isChecked():
            info = self.base_picker.current()
            if info is None:
                raise ParameterError("No base model: pick one, or untick 'start from'.")
            base, width = str(info.path), int(info.card.architecture.get("base_channels", 16))
        minutes, epochs = float(self.minutes.value()) or None, int(self.epochs.value()) or None
        if minutes is None and epochs is None:
            raise ParameterError("Give a time budget or a number of epochs.")
        folder, name = model_folder(None, default_model_name(f"{self.what}-cnn"))
        return {"base": base, "base_channels": width, "minutes": minutes, "epochs": epochs,
                "batch_size": int(np.clip(n // 3, 4, 32)), "val_fraction": 0.2, "device": "auto", "out": folder,
                "name": name, "patience": 15,
                "training_data": f"napari: {n} labelled {self.what} of {src.name!r}"}

    def _on_progress(self, p: Progress) -> None:
        info = p.info or {}
        if "epoch" in info:
            self.status.set(f"epoch {info['epoch']}: loss {info['train_loss']:.3f}, val accuracy "
                            f"{info['val_accuracy']:.3f}" + ("; cancelling…" if self._token and self._token.cancelled
                                                             else ""))
        elif p.message:
            self.status.set(p.message)

    def _train_done(self, src: CropSource, outcome: JobOutcome) -> None:
        self.apply_button.setEnabled(True)
        self._token = None

        def show(result: Any) -> str:
            res, probs, names = result
            self.last_result = res
            notify_models_changed()
            self.apply_picker.select(res.model_path.name)
            self._on_result(src.ids, probs, names, res.model_path.name)
            m = res.metrics
            self.info.setText(f"Saved '{res.model_path.name}': {len(res.history)} epoch(s), best {m['best_epoch']}; "
                              f"held-out accuracy {m['val_accuracy']:.2f} (n={m['n_val']}), {m['calibrated_on']}")
            return f"CNN classes: {self._counts(probs, names)}"

        finish_job(outcome, self.status, "CNN training", show, buttons=self.train_buttons,
                   cancelled=lambda o: f"Stopped after {o.elapsed:.0f} s; nothing was saved.")

    @staticmethod
    def _counts(probs: np.ndarray, names: list[str]) -> str:
        idx = np.asarray(probs).argmax(axis=1) if len(probs) else np.zeros(0, int)
        return ", ".join(f"{n} {int((idx == k).sum())}" for k, n in enumerate(names))


__all__ = ["MODES", "CropCnnPanel", "CropSource", "RowLabeller", "selected_ids"]
