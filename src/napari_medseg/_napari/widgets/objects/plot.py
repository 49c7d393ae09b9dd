"""Plots of the Objects widget: histogram / scatter of measurements, coloured by class.

:class:`PlotCanvas` is a matplotlib ``FigureCanvasQTAgg`` with two drawing
methods and an optional draggable vertical threshold line (used by the gate
panel).  :class:`PlotPanel` adds the kind and column pickers and PNG export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ....analysis.classify import feature_columns
from ..common import compact_combo


def numeric_columns(table: Any) -> list[str]:
    """Numeric columns worth plotting or gating: every number column except ``id``."""
    if table is None:
        return []
    out = []
    for c in table.columns:
        v = np.asarray(table[c])
        if c != "id" and v.dtype != bool and np.issubdtype(v.dtype, np.number):
            out.append(str(c))
    return out


def default_column(table: Any) -> str | None:
    """A useful first column: the first intensity mean, else the first measurement feature."""
    cols = numeric_columns(table)
    for c in cols:
        if c.startswith("mean_"):
            return c
    feats = feature_columns(table) if table is not None else []
    return feats[0] if feats else (cols[0] if cols else None)


class PlotCanvas(FigureCanvasQTAgg):
    """A small matplotlib canvas: histogram or scatter by class, optional draggable threshold.

    Signals
    -------
    thresholdDragged(float)
        The threshold line was dragged to a new x value (only when
        :attr:`draggable` is True).
    """

    thresholdDragged = Signal(float)

    def __init__(self, parent: QWidget | None = None, height: float = 2.4) -> None:
        self.figure = Figure(figsize=(4, height), dpi=90, layout="constrained")
        super().__init__(self.figure)
        self.setParent(parent)
        self.ax = self.figure.add_subplot(111)
        self.draggable = False
        self._line = None
        self._dragging = False
        self.mpl_connect("button_press_event", self._press)
        self.mpl_connect("motion_notify_event", self._motion)
        self.mpl_connect("button_release_event", self._release)
        self.setMinimumHeight(150)

    def clear(self, message: str = "") -> None:
        self.ax.clear()
        self._line = None
        if message:
            self.ax.text(0.5, 0.5, message, ha="center", va="center", transform=self.ax.transAxes, color="grey")
            self.ax.set_axis_off()
        self.draw_idle()

    def histogram(self, values: Any, classes: Any, colors: dict[str, str], xlabel: str,
                  threshold: float | None = None, bins: int = 40) -> None:
        """Stacked histogram of ``values`` per class; a vertical line at ``threshold``."""
        self.ax.clear()
        self.ax.set_axis_on()
        v = np.asarray(values, np.float64)
        cls = np.asarray([str(c) for c in classes], dtype=object)
        ok = np.isfinite(v)
        names = [c for c in colors if np.any(cls[ok] == c)]
        if ok.any():
            edges = np.histogram_bin_edges(v[ok], bins=bins)
            data = [v[ok & (cls == c)] for c in names]
            self.ax.hist(data, bins=edges, stacked=True, color=[colors[c] for c in names], label=names)
            if len(names) > 1:
                self.ax.legend(fontsize=7, frameon=False)
        self.ax.set_xlabel(xlabel, fontsize=8)
        self.ax.set_ylabel("objects", fontsize=8)
        self.ax.tick_params(labelsize=7)
        self._line = None
        if threshold is not None and np.isfinite(threshold):
            self._line = self.ax.axvline(threshold, color="#e05555", lw=1.5)
        self.draw_idle()

    def scatter(self, x: Any, y: Any, classes: Any, colors: dict[str, str], xlabel: str, ylabel: str) -> None:
        """Scatter of two measurements, one colour per class."""
        self.ax.clear()
        self.ax.set_axis_on()
        self._line = None
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        cls = np.asarray([str(c) for c in classes], dtype=object)
        for c, col in colors.items():
            m = cls == c
            if m.any():
                self.ax.scatter(x[m], y[m], s=8, color=col, label=c, linewidths=0)
        if len({str(c) for c in cls}) > 1:
            self.ax.legend(fontsize=7, frameon=False, markerscale=1.5)
        self.ax.set_xlabel(xlabel, fontsize=8)
        self.ax.set_ylabel(ylabel, fontsize=8)
        self.ax.tick_params(labelsize=7)
        self.draw_idle()

    def set_threshold(self, value: float) -> None:
        """Move the threshold line (no signal)."""
        if self._line is not None:
            self._line.set_xdata([value, value])
            self.draw_idle()

    def save_png(self, path: str | Path, dpi: int = 150) -> Path:
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        self.figure.savefig(path, dpi=dpi)
        return path

    # --- dragging -----------------------------------------------------------------
    def _press(self, event: Any) -> None:
        if self.draggable and self._line is not None and event.inaxes is self.ax and event.xdata is not None:
            self._dragging = True
            self._move_to(event.xdata)

    def _motion(self, event: Any) -> None:
        if self._dragging and event.inaxes is self.ax and event.xdata is not None:
            self._move_to(event.xdata)

    def _release(self, event: Any) -> None:
        self._dragging = False

    def _move_to(self, x: float) -> None:
        self.set_threshold(float(x))
        self.thresholdDragged.emit(float(x))


class PlotPanel(QWidget):
    """Histogram of one measurement or scatter of two, coloured by class; Export PNG."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind = QComboBox()
        self.kind.addItems(["histogram", "scatter"])
        self.x_column = compact_combo(QComboBox())
        self.y_column = compact_combo(QComboBox())
        self.canvas = PlotCanvas(self, height=3.0)
        self.export_button = QPushButton("Export PNG…")
        form = QFormLayout()
        form.addRow("plot", self.kind)
        form.addRow("x", self.x_column)
        form.addRow("y", self.y_column)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        lay.addWidget(self.canvas, 1)
        lay.addLayout(buttons)
        self._table = None
        self._colors: dict[str, str] = {}
        self.kind.currentIndexChanged.connect(self.redraw)
        self.x_column.currentIndexChanged.connect(self.redraw)
        self.y_column.currentIndexChanged.connect(self.redraw)
        self.export_button.clicked.connect(lambda: self.export_png())
        self.canvas.clear("no objects yet")

    def set_table(self, table: Any, colors: dict[str, str]) -> None:
        """Plot ``table`` (its ``class`` column picks the colours); column choices are kept when possible."""
        self._table, self._colors = table, dict(colors)
        cols = numeric_columns(table)
        first = default_column(table)
        for combo, fallback in ((self.x_column, first), (self.y_column, None)):
            keep = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(cols)
            want = keep if keep in cols else fallback
            if want is None and combo is self.y_column:
                want = next((c for c in cols if c.startswith(("area_", "volume_"))), None)
            combo.setCurrentIndex(max(0, combo.findText(want)) if want else 0)
            combo.blockSignals(False)
        self.redraw()

    def redraw(self, *_: Any) -> None:
        t = self._table
        self.y_column.setEnabled(self.kind.currentText() == "scatter")
        if t is None or len(t) == 0 or not self.x_column.currentText():
            self.canvas.clear("no objects")
            return
        x = self.x_column.currentText()
        cls = t["class"] if "class" in t else ["object"] * len(t)
        if self.kind.currentText() == "histogram":
            self.canvas.histogram(t[x], cls, self._colors, x)
        else:
            y = self.y_column.currentText() or x
            self.canvas.scatter(t[x], t[y], cls, self._colors, x, y)

    def export_png(self, path: str | Path | None = None) -> Path | None:
        """Save the plot as PNG (asks for a file when ``path`` is None); returns the file."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save plot", "objects_plot.png", "PNG image (*.png)")
            if not path:
                return None
        return self.canvas.save_png(path)
