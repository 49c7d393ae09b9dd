"""The objects table of the Objects widget: a DataFrame model, sortable and filterable.

:class:`DataFrameModel` shows a ``pandas.DataFrame`` read-only (floats with 4
significant digits) and sorts on the raw values (numbers as numbers).
:class:`ObjectsTable` puts it behind a ``QSortFilterProxyModel`` with a
filter box and a column choice; :attr:`ObjectsTable.objectActivated` gives the
*table row* (position in the DataFrame, independent of sorting and filtering)
of the object the user clicked or moved to.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from qtpy.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..common import compact_combo

SORT_ROLE = Qt.ItemDataRole.UserRole + 1


def _display(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else f"{float(v):.4g}"
    return str(v)


class DataFrameModel(QAbstractTableModel):
    """Read-only Qt model over a DataFrame (one object per row)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._df = None
        self._cols: list[str] = []
        self._values: list[np.ndarray] = []

    def set_frame(self, df: Any) -> None:
        """Show ``df`` (or nothing for None); the model keeps column arrays, not the frame."""
        self.beginResetModel()
        self._df = df
        self._cols = [] if df is None else [str(c) for c in df.columns]
        self._values = [] if df is None else [np.asarray(df[c]) for c in df.columns]
        self.endResetModel()

    def columns(self) -> list[str]:
        return list(self._cols)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt signature
        return 0 if parent.isValid() or not self._values else len(self._values[0])

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._cols)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        v = self._values[index.column()][index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return _display(v)
        if role == SORT_ROLE:
            if isinstance(v, (bool, np.bool_)):
                return int(v)
            if isinstance(v, (int, float, np.integer, np.floating)):
                f = float(v)
                return -math.inf if math.isnan(f) else f  # NaN first ascending, a total order
            return str(v)
        if role == Qt.ItemDataRole.TextAlignmentRole and isinstance(v, (int, float, np.number)):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._cols[section] if 0 <= section < len(self._cols) else None
        return str(section + 1)


class ObjectsTable(QWidget):
    """Filter box + column choice + sortable table view of an objects table.

    Signals
    -------
    objectActivated(int)
        Table row (DataFrame position) of the object clicked or made current.
    """

    objectActivated = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = DataFrameModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setFilterKeyColumn(-1)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("filter rows (text in the chosen column)")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_column = compact_combo(QComboBox())
        self.filter_column.addItem("any column")
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # keep the table order until asked
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)  # several rows to label
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.verticalHeader().setDefaultSectionSize(20)
        row = QHBoxLayout()
        row.addWidget(self.filter_edit, 1)
        row.addWidget(self.filter_column)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.view)
        self.filter_edit.textChanged.connect(self._apply_filter)
        self.filter_column.currentIndexChanged.connect(self._apply_filter)
        self.view.clicked.connect(self._on_clicked)
        self.view.selectionModel().currentRowChanged.connect(self._on_current)

    # --- public -----------------------------------------------------------------
    def set_table(self, df: Any) -> None:
        """Show ``df``; filter text, filter column (when still present) and sort column are kept."""
        keep_col = self.filter_column.currentText()
        header = self.view.horizontalHeader()
        sort_name = None
        if 0 <= header.sortIndicatorSection() < self.model.columnCount():
            sort_name = self.model.columns()[header.sortIndicatorSection()]
        order = header.sortIndicatorOrder()
        self.model.set_frame(df)
        cols = self.model.columns()
        self.filter_column.blockSignals(True)
        self.filter_column.clear()
        self.filter_column.addItems(["any column", *cols])
        self.filter_column.setCurrentIndex(max(0, self.filter_column.findText(keep_col)))
        self.filter_column.blockSignals(False)
        self._apply_filter()
        if sort_name in cols:
            self.view.sortByColumn(cols.index(sort_name), order)
        self.view.resizeColumnsToContents()

    def set_filter(self, text: str, column: str | None = None) -> None:
        """Show only rows whose ``column`` (any column when None) contains ``text``."""
        if column is not None:
            i = self.filter_column.findText(column)
            if i < 0:
                raise ValueError(f"no column {column!r} in the table")
            self.filter_column.setCurrentIndex(i)
        self.filter_edit.setText(text)

    def visible_rows(self) -> list[int]:
        """Table rows shown, in view order (after sorting and filtering)."""
        return [self.proxy.mapToSource(self.proxy.index(r, 0)).row() for r in range(self.proxy.rowCount())]

    def select_row(self, table_row: int) -> None:
        """Select and scroll to a table row (no signal when it is hidden by the filter)."""
        src = self.model.index(table_row, 0)
        idx = self.proxy.mapFromSource(src)
        if idx.isValid():
            self.view.selectRow(idx.row())
            self.view.scrollTo(idx)

    def selected_rows(self) -> list[int]:
        """Table rows (DataFrame positions) selected in the view, increasing."""
        rows = {self.proxy.mapToSource(i).row() for i in self.view.selectionModel().selectedRows()}
        return sorted(r for r in rows if r >= 0)

    def select_rows(self, table_rows: list[int]) -> None:
        """Select several table rows (those hidden by the filter are skipped); no signal."""
        from qtpy.QtCore import QItemSelection, QItemSelectionModel

        sel = QItemSelection()
        for r in table_rows:
            idx = self.proxy.mapFromSource(self.model.index(r, 0))
            if idx.isValid():
                sel.select(idx, idx)
        flags = (QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.view.selectionModel().select(sel, flags)

    def view_index(self, table_row: int, column: int = 0) -> QModelIndex:
        """Proxy index of a table row (for clicking it in tests)."""
        return self.proxy.mapFromSource(self.model.index(table_row, column))

    # --- slots ------------------------------------------------------------------
    def _apply_filter(self, *_: Any) -> None:
        col = self.filter_column.currentIndex() - 1  # "any column" -> -1
        self.proxy.setFilterKeyColumn(col)
        self.proxy.setFilterFixedString(self.filter_edit.text())

    def _on_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self.objectActivated.emit(self.proxy.mapToSource(index).row())

    def _on_current(self, current: QModelIndex, previous: QModelIndex) -> None:
        if current.isValid() and (not previous.isValid() or current.row() != previous.row()):
            self.objectActivated.emit(self.proxy.mapToSource(current).row())
