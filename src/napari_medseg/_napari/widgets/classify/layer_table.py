"""The viewer's Image layers with a "use" tick and a class each: the Classify widget's training items.

The table follows the viewer (layers added, removed, renamed, reordered);
what the user typed is kept per layer across refreshes.  A layer's class
starts as :func:`~.items.default_class` of its name (``"disc_03"`` ->
``"disc"``) and follows renames until the user types one.  Layers the
widget made (heat maps) are not listed.
"""

from __future__ import annotations

import weakref
from typing import Any

from napari.layers import Image
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from .items import default_class, is_item_layer


class LayerClassTable(QTableWidget):
    """Rows: use (check box), layer name, class (editable)."""

    def __init__(self, viewer: Any, parent: Any = None) -> None:
        super().__init__(0, 3, parent)
        self._viewer = viewer
        self._layers: list[Any] = []
        #: id(layer) -> (weakref, use, class typed by the user or None)
        self._state: dict[int, tuple[weakref.ref, bool, str | None]] = {}
        self.setHorizontalHeaderLabels(["use", "layer", "class"])
        self.verticalHeader().setVisible(False)
        hdr = self.horizontalHeader()
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hdr.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setToolTip("One training item per ticked Image layer; its class is typed here "
                        "(default: the layer name before the first '_' or space)")
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._on_removed)
        events.moved.connect(self.refresh)
        events.reordered.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.itemChanged.connect(self._on_item_changed)
        self.refresh()

    # --- API ---------------------------------------------------------------------------
    def entries(self) -> list[tuple[Any, str]]:
        """``(layer, class)`` of the ticked layers with a class, in viewer order (top first)."""
        out = []
        for layer in self._layers:
            use, cls = self._use_class(layer)
            if use and cls:
                out.append((layer, cls))
        return out

    def set_class(self, layer: Any, cls: str) -> None:
        _, use, _ = self._state.get(id(layer), (None, True, None))
        self._state[id(layer)] = (weakref.ref(layer), use, cls)
        self.refresh()

    def set_use(self, layer: Any, use: bool) -> None:
        _, _, cls = self._state.get(id(layer), (None, True, None))
        self._state[id(layer)] = (weakref.ref(layer), bool(use), cls)
        self.refresh()

    def class_of(self, layer: Any) -> str:
        return self._use_class(layer)[1]

    # --- internals ---------------------------------------------------------------------
    def _use_class(self, layer: Any) -> tuple[bool, str]:
        ref, use, cls = self._state.get(id(layer), (None, True, None))
        if ref is not None and ref() is not layer:  # a recycled id: a new layer
            use, cls = True, None
        return use, (cls if cls is not None else default_class(layer.name)).strip()

    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()

    def _on_removed(self, event: Any) -> None:
        event.value.events.name.disconnect(self.refresh)
        self._state.pop(id(event.value), None)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Rebuild the rows from the viewer's Image layers."""
        self._layers = [lay for lay in reversed(self._viewer.layers) if isinstance(lay, Image) and is_item_layer(lay)]
        self.blockSignals(True)
        try:
            self.setRowCount(len(self._layers))
            for r, layer in enumerate(self._layers):
                use, cls = self._use_class(layer)
                tick = QTableWidgetItem()
                tick.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
                tick.setCheckState(Qt.CheckState.Checked if use else Qt.CheckState.Unchecked)
                name = QTableWidgetItem(layer.name)
                name.setFlags(Qt.ItemFlag.ItemIsEnabled)
                name.setToolTip(layer.name)
                self.setItem(r, 0, tick)
                self.setItem(r, 1, name)
                self.setItem(r, 2, QTableWidgetItem(cls))
        finally:
            self.blockSignals(False)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        r = item.row()
        if not 0 <= r < len(self._layers):
            return
        layer = self._layers[r]
        _, use, cls = self._state.get(id(layer), (None, True, None))
        if item.column() == 0:
            use = item.checkState() == Qt.CheckState.Checked
        elif item.column() == 2:
            cls = item.text().strip()
        self._state[id(layer)] = (weakref.ref(layer), use, cls)


__all__ = ["LayerClassTable"]
