"""Classification panels of the Objects widget: gates and the trainable classifier.

:class:`GatePanel` is QuPath's positive detection: pick a measurement, look
at its histogram, set the threshold (suggested by Otsu and friends, typed in,
or dragged on the histogram), Apply: every object becomes ``<name>+`` or
``<name>-``.

:class:`ClassifierPanel` holds the controls of the trainable classifier
(marks layer, mark class, table-row labels, the method: a random forest on
the measurements with Train/Save/Load, or a CNN on crops,
:class:`~napari_medseg._napari.widgets.crop_cnn.CropCnnPanel`); the widget
does the work because it owns the objects and the viewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Points
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ....analysis.gating import OPS, THRESHOLD_METHODS, Gate, suggest_threshold
from ..common import LayerCombo, compact_combo
from .plot import PlotCanvas, default_column, numeric_columns

#: Methods whose threshold is a histogram bin centre (skimage.filters, ``nbins`` bins over the values' range).
BINNED_METHODS = ("otsu", "triangle", "yen", "isodata")


def snap_to_gap(values: np.ndarray, threshold: float, method: str, nbins: int = 256) -> float:
    """Move a binned threshold to the middle of the gap its split intends.

    skimage's binned thresholds return the centre of the last bin of the low
    class, so low-class values in the upper half of that bin end up *above*
    the threshold and a ``>`` gate calls them positive (with few objects this
    happens: 4 dim objects at 19.5-20.4 and a threshold of 20.30).  The split
    the method chose is at the bin's upper edge; the threshold returned here
    is halfway between the largest value at or below that edge and the
    smallest above it, so ``value > threshold`` reproduces the split exactly.
    Other methods' thresholds are returned unchanged.
    """
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if method not in BINNED_METHODS or v.size < 2 or v.min() == v.max():
        return float(threshold)
    edges = np.histogram_bin_edges(v, bins=nbins)
    k = int(np.clip(np.searchsorted(edges, threshold, side="right") - 1, 0, nbins - 1))
    upper_edge = edges[k + 1]
    low, high = v[v <= upper_edge], v[v > upper_edge]
    if low.size == 0 or high.size == 0:
        return float(threshold)
    return float((low.max() + high.min()) / 2)


class GatePanel(QWidget):
    """Threshold gate on one measurement column.

    Signals
    -------
    gateApplied(object)
        The :class:`~napari_medseg.analysis.gating.Gate` to apply.
    """

    gateApplied = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.column = compact_combo(QComboBox())
        self.op = QComboBox()
        self.op.addItems([o for o in OPS if o != "between"])
        self.threshold = QDoubleSpinBox()
        self.threshold.setDecimals(4)
        self.threshold.setRange(-1e12, 1e12)
        self.threshold.setKeyboardTracking(False)
        self.method = QComboBox()
        self.method.addItems(list(THRESHOLD_METHODS))
        self.suggest_button = QPushButton("Suggest")
        self.suggest_button.setToolTip("Threshold from the column's histogram (skimage.filters.threshold_<method>)")
        self.marker = QLineEdit()
        self.marker.setPlaceholderText("class name (default: from the measurement)")
        self.apply_button = QPushButton("Apply gate")
        self.canvas = PlotCanvas(self)
        self.canvas.draggable = True
        self.canvas.setToolTip("Drag on the histogram to move the threshold")
        thr = QHBoxLayout()
        thr.addWidget(self.op)
        thr.addWidget(self.threshold, 1)
        sug = QHBoxLayout()
        sug.addWidget(self.method, 1)
        sug.addWidget(self.suggest_button)
        form = QFormLayout()
        form.addRow("measurement", self.column)
        form.addRow("positive if", thr)
        form.addRow("suggest", sug)
        form.addRow("name", self.marker)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        lay.addWidget(self.canvas, 1)
        lay.addWidget(self.apply_button)
        self._table = None
        self._colors: dict[str, str] = {}
        self.column.currentIndexChanged.connect(self._on_column)
        self.column.currentIndexChanged.connect(self._update_placeholder)
        self.op.currentIndexChanged.connect(self._update_placeholder)
        self.threshold.valueChanged.connect(self.canvas.set_threshold)
        self.canvas.thresholdDragged.connect(self._on_dragged)
        self.suggest_button.clicked.connect(lambda: self.suggest())
        self.apply_button.clicked.connect(lambda: self.apply())
        self.canvas.clear("no objects yet")

    def set_table(self, table: Any, colors: dict[str, str]) -> None:
        """New objects (or new classes): refill the columns, keep the chosen one if present."""
        new_objects = table is not self._table and (self._table is None or len(table) != len(self._table))
        self._table, self._colors = table, dict(colors)
        cols = numeric_columns(table)
        keep = self.column.currentText()
        self.column.blockSignals(True)
        self.column.clear()
        self.column.addItems(cols)
        want = keep if keep in cols else default_column(table)
        self.column.setCurrentIndex(max(0, self.column.findText(want)) if want else -1)
        self.column.blockSignals(False)
        if new_objects or keep != self.column.currentText():
            self._on_column()
        else:
            self._draw()

    def values(self) -> np.ndarray:
        c = self.column.currentText()
        if self._table is None or not c:
            return np.zeros(0)
        return np.asarray(self._table[c], np.float64)

    def suggest(self, method: str | None = None) -> float | None:
        """Set the threshold from the histogram; returns it (None when the column cannot be split)."""
        if method is not None:
            self.method.setCurrentText(method)
        method = self.method.currentText()
        v = self.values()
        try:
            t = snap_to_gap(v, suggest_threshold(v, method), method)
        except Exception:  # fewer than two distinct values: keep the current threshold  # noqa: BLE001
            return None
        self.threshold.setValue(t)
        return t

    def gate(self) -> Gate:
        """The gate the controls describe."""
        return Gate(self.column.currentText(), self.op.currentText(), float(self.threshold.value()),
                    self.marker.text().strip() or None)

    def apply(self) -> Gate | None:
        """Emit :attr:`gateApplied` with :meth:`gate`; returns it (None without a column)."""
        if not self.column.currentText():
            return None
        g = self.gate()
        self.gateApplied.emit(g)
        return g

    def _on_column(self, *_: Any) -> None:
        v = self.values()
        finite = v[np.isfinite(v)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            step = (hi - lo) / 100 if hi > lo else 1.0
            self.threshold.setSingleStep(step)
        if self.suggest() is None and finite.size:
            self.threshold.setValue(float(np.median(finite)))
        self._draw()

    def _update_placeholder(self, *_: Any) -> None:
        """Show the class names an unnamed gate gives (``nuclei bright / nuclei dim``)."""
        c = self.column.currentText()
        if not c:
            self.marker.setPlaceholderText("class name (default: from the measurement)")
            return
        yes, no = Gate(c, self.op.currentText(), 0.0).class_names()
        self.marker.setPlaceholderText(f"default: {yes} / {no}")
        self.marker.setToolTip(f"Name the gate (e.g. CD3 gives CD3+ / CD3-); empty: {yes} / {no}")

    def _on_dragged(self, x: float) -> None:
        self.threshold.blockSignals(True)
        self.threshold.setValue(x)
        self.threshold.blockSignals(False)

    def _draw(self) -> None:
        t = self._table
        c = self.column.currentText()
        if t is None or not c or len(t) == 0:
            self.canvas.clear("no objects")
            return
        self.canvas.histogram(t[c], t["class"], self._colors, c, threshold=self.threshold.value())


class ClassifierPanel(QWidget):
    """Controls of the trainable object classifier (the widget connects the buttons)."""

    markClassChanged = Signal(str)
    #: Classifier methods, in the order of :attr:`method`.
    METHODS = ("random forest (measurements)", "CNN (crops)")

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.marks_combo = LayerCombo(viewer, Points)
        self.marks_combo.setToolTip("A Points layer with a 'class' feature: one or more points on objects of "
                                    "each class")
        self.new_marks_button = QPushButton("New")
        self.new_marks_button.setToolTip("Add a marks Points layer; click objects to mark them with the class below")
        self.mark_class = compact_combo(QComboBox(), 10)
        self.mark_class.setEditable(True)
        self.mark_class.addItems(["positive", "negative"])
        self.mark_class.setToolTip("Class given to the next points you add, or to the table rows you label "
                                   "(type a new name to add a class)")
        self.method = compact_combo(QComboBox(), 12)
        self.method.addItems(list(self.METHODS))
        self.method.setToolTip("random forest: on the table's measurements (fast, few labels);\n"
                               "CNN: a small convolutional network on image crops around each object")
        self.train_button = QPushButton("Train and classify")
        self.save_button = QPushButton("Save…")
        self.load_button = QPushButton("Load…")
        self.info = QLabel("Mark a few objects of each class (points, or label table rows), then Train.")
        self.info.setWordWrap(True)
        marks = QHBoxLayout()
        marks.addWidget(self.marks_combo, 1)
        marks.addWidget(self.new_marks_button)
        self._rows_holder = QHBoxLayout()
        form = QFormLayout()
        form.addRow("marks layer", marks)
        form.addRow("class", self.mark_class)
        form.addRow("table rows", self._rows_holder)
        form.addRow("method", self.method)
        rf = QWidget()
        rl = QVBoxLayout(rf)
        rl.setContentsMargins(0, 0, 0, 0)
        io = QHBoxLayout()
        io.addWidget(self.save_button)
        io.addWidget(self.load_button)
        rl.addWidget(self.train_button)
        rl.addLayout(io)
        rl.addStretch(1)
        self.stack = QStackedWidget()
        self.stack.addWidget(rf)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        lay.addWidget(self.stack)
        lay.addWidget(self.info)
        lay.addStretch(1)
        self.cnn_panel: Any = None
        self.row_labeller: Any = None
        self.mark_class.currentTextChanged.connect(self.markClassChanged.emit)
        self.method.currentIndexChanged.connect(self.stack.setCurrentIndex)

    def add_cnn(self, labeller: QWidget, cnn_panel: QWidget) -> None:
        """Put the table-row labeller and the CNN page (built by the widget, which owns the table) in place."""
        self.row_labeller, self.cnn_panel = labeller, cnn_panel
        self._rows_holder.addWidget(labeller)
        self.stack.addWidget(cnn_panel)

    @property
    def use_cnn(self) -> bool:
        return self.method.currentIndex() == 1
