"""The Classify widget's results table: one row per item, its class and a probability per class; sortable.

Sorting is on the values (probabilities as numbers); every row keeps the
index of its item, so :meth:`ResultsTable.current_item` is independent of
the sort order.  :meth:`ResultsTable.write_csv` writes what ``medseg
classify`` writes: ``item,class,p_<class>...``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

ITEM_ROLE = Qt.ItemDataRole.UserRole + 1  #: index of the item in the last prediction
SORT_ROLE = Qt.ItemDataRole.UserRole + 2  #: value the column sorts on


class _Cell(QTableWidgetItem):
    """A read-only cell that sorts on its :data:`SORT_ROLE` value (numbers as numbers)."""

    def __init__(self, text: str, sort_value: Any) -> None:
        super().__init__(text)
        self.setData(SORT_ROLE, sort_value)
        self.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        try:
            return (a, self.text()) < (b, other.text())
        except TypeError:
            return str(a) < str(b)


class ResultsTable(QTableWidget):
    """Item, class and ``p_<class>`` per row.

    Signals
    -------
    itemActivated(int)
        The item index (position in the prediction, not the row) of the row
        the user selected.
    """

    itemActivated = Signal(int)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(0, 0, parent)
        self.names: list[str] = []
        self.probs = np.zeros((0, 0))
        self.class_names: list[str] = []
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.setToolTip("Click a row to see where the model looked (Grad-CAM); click a header to sort")
        self.itemSelectionChanged.connect(self._on_selection)

    def columns(self) -> list[str]:
        return ["item", "class"] + [f"p_{c}" for c in self.class_names]

    def set_results(self, names: list[str], probs: np.ndarray, class_names: list[str]) -> None:
        """Show one row per item (the predicted class is the most probable one)."""
        self.names, self.probs, self.class_names = list(names), np.asarray(probs, float), list(class_names)
        self.setSortingEnabled(False)
        self.blockSignals(True)
        try:
            self.clearContents()
            cols = self.columns()
            self.setColumnCount(len(cols))
            self.setHorizontalHeaderLabels(cols)
            self.setRowCount(len(self.names))
            for i, name in enumerate(self.names):
                k = int(np.argmax(self.probs[i]))
                first = _Cell(name, name)
                first.setData(ITEM_ROLE, i)
                first.setToolTip(name)
                self.setItem(i, 0, first)
                self.setItem(i, 1, _Cell(self.class_names[k], self.class_names[k]))
                for j, p in enumerate(self.probs[i]):
                    self.setItem(i, 2 + j, _Cell(f"{p:.3f}", float(p)))
        finally:
            self.blockSignals(False)
        self.setSortingEnabled(True)
        self.resizeColumnsToContents()

    def item_of_row(self, row: int) -> int:
        """The item index shown in table row ``row`` (after sorting)."""
        return int(self.item(row, 0).data(ITEM_ROLE))

    def row_of_item(self, index: int) -> int:
        """The table row showing item ``index``."""
        for r in range(self.rowCount()):
            if self.item_of_row(r) == index:
                return r
        raise IndexError(index)

    def select_item(self, index: int) -> None:
        """Select the row of item ``index`` (as a click does)."""
        self.selectRow(self.row_of_item(index))

    def current_item(self) -> int | None:
        rows = {ix.row() for ix in self.selectedIndexes()}
        return self.item_of_row(min(rows)) if rows else None

    def rows(self) -> list[list[Any]]:
        """The table as rows in item order: ``[item, class, p_...]``."""
        out = []
        for i, name in enumerate(self.names):
            k = int(np.argmax(self.probs[i]))
            out.append([name, self.class_names[k], *(float(p) for p in self.probs[i])])
        return out

    def write_csv(self, path: str | Path) -> Path:
        """Write the table (item order, probabilities with 6 decimals); returns the path."""
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(self.columns())
            for r in self.rows():
                w.writerow([r[0], r[1], *(f"{p:.6f}" for p in r[2:])])
        return path

    def _on_selection(self) -> None:
        i = self.current_item()
        if i is not None:
            self.itemActivated.emit(i)


__all__ = ["ResultsTable"]
