"""Objects widget helpers: intensity checklist, class colours, output Points/Shapes layers, column names.

Coordinates: a layer's data coordinates are pixel indices (pixel ``i`` centred
at ``i``); the objects table's ``centroid_*`` columns are in those, so the
output Points/Shapes layers carry the source layer's scale and translate and
land on the objects in the world.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Points, Shapes
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QWidget

if TYPE_CHECKING:
    import napari

#: Class colours, in order of first use (matplotlib's tab10, then tab20's light tones).
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)

#: Metadata key on layers this widget made: name of the layer they came from.
OBJECTS_OF = "napari_medseg_objects_of"


class LayerChecklist(QListWidget):
    """Checkable list of the viewer's Image layers (the intensity images to measure).

    Kept in sync with the viewer as layers are added, removed or renamed;
    check states survive renames.
    """

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._layers: list[Image] = []
        self._checked: set[int] = set()  # ids of checked layers
        self.setMaximumHeight(90)
        self.setToolTip("Image layers whose intensities are measured in every object "
                        "(mean/min/max/std per layer and channel); with 'image + model' the "
                        "source image is always measured")
        ev = viewer.layers.events
        ev.inserted.connect(self._on_inserted)
        ev.removed.connect(self._on_removed)
        ev.moved.connect(self.refresh)
        for lay in viewer.layers:
            lay.events.name.connect(self.refresh)
        self.itemChanged.connect(self._on_item)
        self.refresh()

    def checked_layers(self) -> list[Image]:
        """Checked Image layers, top of the layer list first."""
        return [lay for lay in self._layers if id(lay) in self._checked]

    def set_checked(self, layer: Image, checked: bool = True) -> None:
        """Check or uncheck ``layer``."""
        if checked:
            self._checked.add(id(layer))
        else:
            self._checked.discard(id(layer))
        self.refresh()

    def refresh(self, *_: Any) -> None:
        self._layers = [lay for lay in reversed(self._viewer.layers) if isinstance(lay, Image)]
        self._checked &= {id(lay) for lay in self._layers}
        self.blockSignals(True)
        try:
            self.clear()
            for lay in self._layers:
                item = QListWidgetItem(lay.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if id(lay) in self._checked else Qt.CheckState.Unchecked)
                self.addItem(item)
        finally:
            self.blockSignals(False)

    def _on_item(self, item: QListWidgetItem) -> None:
        i = self.row(item)
        if 0 <= i < len(self._layers):
            if item.checkState() == Qt.CheckState.Checked:
                self._checked.add(id(self._layers[i]))
            else:
                self._checked.discard(id(self._layers[i]))

    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()

    def _on_removed(self, event: Any) -> None:
        event.value.events.name.disconnect(self.refresh)
        self.refresh()


def class_colors(classes: Sequence[str], previous: dict[str, str] | None = None) -> dict[str, str]:
    """Hex colour per class; classes already coloured in ``previous`` keep their colour."""
    out = dict(previous or {})
    used = set(out.values())
    free = [c for c in PALETTE if c not in used]
    for c in classes:
        if c not in out:
            out[c] = free.pop(0) if free else PALETTE[len(out) % len(PALETTE)]
    return out


def rgba(classes: Sequence[Any], colors: dict[str, str]) -> np.ndarray:
    """``(n, 4)`` float RGBA per object from its class."""
    from napari.utils.colormaps.standardize_color import transform_color

    if len(classes) == 0:
        return np.zeros((0, 4), np.float32)
    names = list(colors)
    table = transform_color([colors[n] for n in names])
    index = {n: i for i, n in enumerate(names)}
    return table[[index[str(c)] for c in classes]]


def column_name(name: str) -> str:
    """A layer name as a column-name fragment: runs of non-alphanumerics become ``_``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_") or "image"


def centroids(table: Any, axes: str) -> np.ndarray:
    """``(n, ndim)`` centroid pixel indices from an objects table."""
    return np.stack([np.asarray(table[f"centroid_{a.lower()}"], np.float64) for a in axes], axis=1) \
        if len(table) else np.zeros((0, len(axes)))


def points_layer(table: Any, axes: str, colors: dict[str, str], geom: dict[str, Any], name: str,
                 meta: dict[str, Any]) -> Points:
    """Points at the objects' centroids, coloured by class, the table as features."""
    pts = centroids(table, axes)
    size = 6.0
    if "n_pixels" in table and len(table):
        size = float(np.clip(0.5 * np.sqrt(np.median(np.asarray(table["n_pixels"], np.float64))), 3, 30))
    return Points(pts, ndim=len(axes), name=name, features=table.reset_index(drop=True),
                  face_color=rgba(list(table["class"]), colors), border_color="white", border_width=0.1,
                  size=size, metadata=meta, **geom)


def boxes_layer(boxes: np.ndarray, table: Any, colors: dict[str, str], geom: dict[str, Any], name: str,
                meta: dict[str, Any]) -> Shapes:
    """Rectangles of pixel-edge boxes ``[y0, x0, y1, x1]``, edge coloured by class, the table as features."""
    b = np.asarray(boxes, np.float64) - 0.5  # pixel-edge -> data (pixel-centre) coordinates
    rects = [np.array([[r[0], r[1]], [r[0], r[3]], [r[2], r[3]], [r[2], r[1]]]) for r in b]
    shapes = Shapes(ndim=2, name=name, metadata=meta, **geom)
    if rects:
        shapes.add_rectangles(rects, edge_width=max(1.0, float(np.median(b[:, 2] - b[:, 0])) / 25),
                              edge_color=rgba(list(table["class"]), colors), face_color="transparent")
    shapes.features = table.reset_index(drop=True)
    return shapes
