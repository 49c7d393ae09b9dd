"""What the Classify widget classifies: items (arrays) from Image layers, Shapes regions or a ``file,class`` CSV.

An :class:`Item` is one image or crop for the CNN classifier plus where it
sits in the viewer (its source layer and, for a Shapes region, the crop's
pixel offset), so that its Grad-CAM map can be laid over it
(:func:`heatmap_geometry`).  Everything here runs in the GUI thread and only
reads layers (the user's layers are never modified); arrays of lazy layers
(dask, zarr) stay lazy until the worker reads them (:func:`materialize`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ....errors import ParameterError
from ...layers import level0, output_geometry

#: metadata key of the layers this widget makes (heat maps); such layers are never items
MADE_BY = "napari_medseg_classify"

#: picture files read with scikit-image (as ``medseg classify`` does); the rest go through napari_medseg.io

#: a multiscale layer is classified at its coarsest level whose shorter side still has this many pixels
MIN_LEVEL_SIDE = 512


@dataclass
class Item:
    """One thing to classify.

    Attributes
    ----------
    name : str
        Shown in the results table (layer name, ``"<shapes> #k"`` or file name).
    data : array-like
        ``(Y, X)`` grey or ``(Y, X, C)`` pixels (possibly lazy).
    label : str or None
        The class given for training (None when unknown).
    layer : napari layer or None
        Where the item comes from (None for files).
    offset : tuple of int
        Pixel offset ``(y, x)`` of the crop in the layer's data (a Shapes region), else ``(0, 0)``.
    step : int
        Data pixels per item pixel (a coarser level of a multiscale layer), else 1.
    """

    name: str
    data: Any
    label: str | None = None
    layer: Any = None
    offset: tuple[int, int] = (0, 0)
    step: int = 1


def default_class(name: str) -> str:
    """A class guessed from a layer name: what comes before the first ``_`` or space (``"disc_03"`` -> ``"disc"``)."""
    head = re.split(r"[_ ]", name.strip(), maxsplit=1)[0]
    return head or name.strip()


def is_item_layer(layer: Any) -> bool:
    """Whether an Image layer can be an item: not a layer this widget made."""
    meta = getattr(layer, "metadata", None) or {}
    return MADE_BY not in meta


def _plane(layer: Any, point: Any) -> tuple[Any, int]:
    """The 2D (+ RGB) pixels of an image layer: the whole 2D image, or the displayed plane of a stack.

    A multiscale layer gives its coarsest level whose shorter side still has
    :data:`MIN_LEVEL_SIDE` pixels (the classifier resizes to ~100 px anyway).
    """
    full = level0(layer)
    n_sp = full.ndim - (1 if layer.rgb else 0)
    data, step = full, 1
    if getattr(layer, "multiscale", False):
        for lev in layer.data:
            if min(lev.shape[n_sp - 2:n_sp]) >= MIN_LEVEL_SIDE:
                data = lev
        step = max(1, int(round(full.shape[n_sp - 1] / data.shape[n_sp - 1])))
    if n_sp > 2:
        pos = np.asarray(layer.world_to_data(point), float) if point is not None else np.zeros(n_sp)
        idx = tuple(int(np.clip(np.round(pos[i] * data.shape[i] / full.shape[i]), 0, data.shape[i] - 1))
                    for i in range(n_sp - 2))
        data = data[idx]
    return data, step


def layer_item(layer: Any, label: str | None = None, point: Any = None) -> Item:
    """An Image layer as one item (copied when it is a numpy array: the user may edit the layer meanwhile)."""
    data, step = _plane(layer, point)
    if isinstance(data, np.ndarray):
        data = np.array(data, copy=True)
    return Item(layer.name, data, label, layer, (0, 0), step)


def shape_classes(shapes: Any) -> list[str | None]:
    """The class of each shape: ``features["class"]``, else the shape's text; None where empty."""
    n = len(shapes.data)
    feats = getattr(shapes, "features", None)
    values: Any = None
    if feats is not None and "class" in getattr(feats, "columns", ()):
        values = list(feats["class"])
    else:
        try:
            text = np.asarray(shapes.text.values)
            values = list(text) if text.shape == (n,) else None
        except Exception:  # noqa: BLE001 - a layer without usable text has no classes
            values = None
    if values is None:
        return [None] * n
    out: list[str | None] = []
    for v in values:
        s = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
        out.append(s or None)
    return out


def region_boxes(shapes: Any, image: Any) -> list[tuple[int, int, int, int] | None]:
    """Bounding box ``(y0, y1, x0, x1)`` (ends exclusive, clipped) of each shape in ``image``'s pixels; None if empty.

    Vertices go shapes data -> world -> image data, so layers with different
    scale, translate or affine line up.
    """
    data = level0(image)
    n_sp = data.ndim - (1 if image.rgb else 0)
    if n_sp != 2:
        raise ParameterError(f"Shapes regions need a 2D image; {image.name!r} has {n_sp} spatial axes")
    h, w = data.shape[:2]
    out: list[tuple[int, int, int, int] | None] = []
    for verts in shapes.data:
        world = np.array([shapes.data_to_world(p) for p in np.asarray(verts, float)])
        pts = np.array([image.world_to_data(q) for q in world], float)[:, -2:]
        y0, x0 = np.floor(pts.min(axis=0)).astype(int)
        y1, x1 = np.ceil(pts.max(axis=0)).astype(int) + 1
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        out.append((int(y0), int(y1), int(x0), int(x1)) if y1 - y0 >= 2 and x1 - x0 >= 2 else None)
    return out


def region_items(shapes: Any, image: Any, *, need_class: bool) -> list[Item]:
    """Each shape's bounding-box crop of ``image`` as an item (class from :func:`shape_classes`).

    Raises
    ------
    ParameterError
        No shape over the image, or (``need_class``) a shape without a class.
    """
    data = level0(image)
    classes = shape_classes(shapes)
    items = []
    for k, (box, cls) in enumerate(zip(region_boxes(shapes, image), classes, strict=True)):
        if box is None:
            continue
        if need_class and cls is None:
            raise ParameterError(f"shape #{k} of {shapes.name!r} has no class: give the layer a 'class' feature "
                                 "(or text) for every shape")
        y0, y1, x0, x1 = box
        crop = data[y0:y1, x0:x1]
        crop = np.array(crop, copy=True) if isinstance(crop, np.ndarray) else crop
        items.append(Item(f"{shapes.name} #{k}", crop, cls, image, (y0, x0)))
    if not items:
        raise ParameterError(f"no shape of {shapes.name!r} lies over the image {image.name!r}")
    return items


def read_table(path: str | Path) -> list[Item]:
    """Items of a ``file,class`` CSV (see :func:`~napari_medseg.analysis.image_classify.read_class_table`); pixels read later."""
    from ....analysis.image_classify import read_class_table

    files, classes = read_class_table(path)
    return [Item(p.name, p, c) for p, c in zip(files, classes, strict=True)]


def load_file(path: Path) -> np.ndarray:
    """The pixels of one image file, channels last (:func:`~napari_medseg.analysis.image_classify.load_image_item`)."""
    from ....analysis.image_classify import load_image_item

    return load_image_item(path)


def materialize(items: list[Item]) -> list[np.ndarray]:
    """The items' pixels as numpy arrays (files read, lazy arrays computed); call in the worker thread."""
    return [load_file(it.data) if isinstance(it.data, Path) else np.asarray(it.data) for it in items]


def heatmap_geometry(item: Item) -> dict[str, Any]:
    """Layer keywords that lay an item-sized map over the item: the source's geometry, shifted to the crop.

    ``world = A (T + M x)`` for a layer (``A`` its affine, ``T`` its
    translate, ``M`` rotate @ shear @ scale); a crop at data offset ``o``
    with ``step`` data pixels per map pixel is ``M' = M step``,
    ``T' = T + M o``; ``M o`` is read off the layer's own ``data_to_world``.
    """
    layer = item.layer
    if layer is None:
        return {}
    geom = output_geometry(layer, 2)
    oy, ox = item.offset
    if (oy, ox) != (0, 0) or item.step != 1:
        n = layer.ndim
        lin = np.asarray(geom.get("affine", np.eye(3)), float)[:2, :2] if "affine" in geom else np.eye(2)
        origin = np.zeros(n)
        shifted = origin.copy()
        shifted[-2:] = (oy, ox)
        d = np.asarray(layer.data_to_world(shifted), float)[-2:] - np.asarray(layer.data_to_world(origin), float)[-2:]
        delta = np.linalg.solve(lin, d) if "affine" in geom else d
        geom["translate"] = tuple(float(t + e) for t, e in zip(geom["translate"], delta, strict=True))
        if item.step != 1:
            geom["scale"] = tuple(float(s) * item.step for s in geom["scale"])
    return geom


def count_text(labels: list[Any]) -> str:
    """``"disc 3, square 2"`` (classes sorted)."""
    vals, n = np.unique(np.asarray([str(x) for x in labels]), return_counts=True)
    return ", ".join(f"{v} {k}" for v, k in zip(vals, n, strict=True)) or "none"


__all__ = ["MADE_BY", "Item", "count_text", "default_class", "heatmap_geometry", "is_item_layer", "layer_item", "load_file",
           "materialize", "read_table", "region_boxes", "region_items", "shape_classes"]
