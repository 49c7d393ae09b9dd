"""Lesions widget helpers: the output Labels layers, their class colours and features, the size unit.

Two Labels layers show one result, on the source layer's geometry
(:func:`~napari_medseg._napari.layers.output_geometry`):

* ``<source> lesions``: the lesion ids, napari's label colours, translucent;
* ``<source> lesion outlines``: the same ids drawn as contours in their
  class colour (in the 3D view: solid, i.e. the lesions' surfaces).

Both carry the key columns of the lesion table as ``features`` (napari shows
them for the label under the mouse).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels

from ..objects.outputs import class_colors

#: Metadata key on layers this widget made: name of the layer they came from.
LESIONS_OF = "napari_medseg_lesions_of"
#: Metadata key: what made them (model or labels), parameters.
META = "napari_medseg"

#: Table columns copied to the layers' features (when present).
FEATURE_COLUMNS = ("id", "class", "score", "volume_ml", "volume_mm3", "area_mm2", "long_axis_mm", "short_axis_mm",
                   "recist_slice")

_SUPERSCRIPT = {"2": "\u00b2", "3": "\u00b3"}


def size_column(table: Any) -> tuple[str, str]:
    """``(column, unit text)`` of a lesion table's size: ``("volume_mm3", "mm³")``, ``("area_px2", "px²")``..."""
    for c in table.columns:
        c = str(c)
        if c.startswith(("volume_", "area_")) and c[-1] in "23" and not c.startswith("volume_ml"):
            unit = c.split("_", 1)[1][:-1]
            unit = {"um": "\u00b5m"}.get(unit, unit)
            return c, unit + _SUPERSCRIPT[c[-1]]
    raise KeyError("the lesion table has no volume_<unit>3 or area_<unit>2 column")


def display_order(table: Any) -> Any:
    """The table with what a radiologist reports first: id, class, score, the user's label and the CNN's class,
    long and short axis, volume (mL, then
    in the unit) or area, RECIST slice; then the rest in table order (the CSV keeps the core's order)."""
    col, _ = size_column(table)
    unit = col.split("_", 1)[1][:-1]
    first = ["id", "class", "score", "label", "cnn_class", "cnn_probability", f"long_axis_{unit}", f"short_axis_{unit}", "volume_ml", col, "recist_slice"]
    first = [c for c in dict.fromkeys(first) if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def lesion_colors(table: Any, previous: dict[str, str] | None = None) -> dict[str, str]:
    """Hex colour per lesion class (classes in table order; ``previous`` colours kept)."""
    classes = list(dict.fromkeys(str(c) for c in table["class"])) if len(table) else []
    return class_colors(sorted(classes), previous)


def class_colormap(table: Any, colors: dict[str, str]) -> Any:
    """A napari label colormap giving every lesion id of ``table`` its class colour (0 transparent)."""
    from napari.utils.colormaps import DirectLabelColormap

    cmap: dict[Any, Any] = {None: "transparent", 0: "transparent"}
    for i, c in zip(np.asarray(table["id"], np.int64).tolist(), table["class"], strict=True):
        cmap[int(i)] = colors[str(c)]
    return DirectLabelColormap(color_dict=cmap)


def layer_features(table: Any) -> Any:
    """Key columns of ``table`` for a Labels layer (napari maps rows to label values by ``index``)."""
    cols = [c for c in FEATURE_COLUMNS if c in table.columns]
    t = table[cols].copy().reset_index(drop=True)
    t.insert(0, "index", np.asarray(table["id"], np.int64))
    return t


def lesion_layers(labels: np.ndarray, shown: Any, every: Any, colors: dict[str, str], geometry: dict[str, Any],
                  name: str, meta: dict[str, Any]) -> tuple[Labels, Labels]:
    """The ``<name> lesions`` and ``<name> lesion outlines`` layers of one result (not yet in a viewer).

    ``shown`` is the filtered table (the features), ``every`` the whole one
    (the colours: a new filter needs no new colormap).
    """
    feats = layer_features(shown)
    fill = Labels(labels, name=f"{name} lesions", features=feats, opacity=0.35, metadata=dict(meta), **geometry)
    outline = Labels(labels, name=f"{name} lesion outlines", features=feats.copy(), opacity=1.0,
                     colormap=class_colormap(every, colors), metadata=dict(meta), **geometry)
    outline.contour = 1
    return fill, outline


def lesion_index(row: Any, ndim: int) -> np.ndarray:
    """Data index to show a lesion at: its RECIST slice (3D) and its centroid in the plane."""
    yx = [float(row["centroid_y"]), float(row["centroid_x"])]
    if ndim == 2:
        return np.asarray(yx)
    z = row["recist_slice"] if "recist_slice" in row.index else row["centroid_z"]
    return np.asarray([float(z), *yx])


def value_names(layer: Any) -> dict[int, str]:
    """Names of a Labels layer's values from its features (``index`` + a name column), e.g. DICOM-SEG segments."""
    feats = getattr(layer, "features", None)
    if feats is None or not len(feats) or "index" not in feats.columns:
        return {}
    col = next((c for c in ("name", "label_name", "segment_label", "segment", "class") if c in feats.columns), None)
    if col is None:
        return {}
    return {int(i): str(n) for i, n in zip(feats["index"], feats[col], strict=True) if str(n) and int(i) > 0}
