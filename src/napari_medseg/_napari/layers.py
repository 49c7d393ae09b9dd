"""The one place that turns a napari layer into array, axes and geometry, and results back into layers.

A layer's data index maps to the world through napari's
``affine @ (translate + rotate @ shear @ scale)``; :func:`layer_geometry`
gives that as a :class:`~napari_medseg.geometry.Geometry` with the layer's
units and frame (``"LPS"`` for DICOM/NIfTI/NRRD layers).  Widgets, the
writer and measurements use it, so a DICOM layer (spacing in the affine,
scale 1) and a microscopy layer (spacing in ``scale``) are measured alike.

Importing this module imports no napari, Qt or torch: it only reads layer
attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..geometry import PIXEL, Geometry, normalize_unit

#: Axis letters of a layer by number of (non-RGB) dimensions when its metadata does not say.
DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX"}


def level0(layer: Any) -> Any:
    """A layer's full-resolution data (level 0 of a multiscale layer), never copied."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def layer_axes(layer: Any) -> str | None:
    """Axis letters of a layer's data: from our reader's metadata, else by dimensionality.

    RGB layers end in ``S``.  None for layers with more than four world axes
    (let the engine decide).
    """
    data = level0(layer)
    ndim = len(data.shape)
    rgb = bool(getattr(layer, "rgb", False))
    meta = layer.metadata if isinstance(getattr(layer, "metadata", None), Mapping) else {}
    axes = str(meta.get("axes", ""))
    if "C" in axes and len(axes) == ndim + 1:  # one channel layer split off by channel_axis
        axes = axes.replace("C", "")
    if len(axes) == ndim and axes.endswith("S") == rgb:
        return axes
    base = DEFAULT_AXES.get(ndim - (1 if rgb else 0))
    return None if base is None else base + ("S" if rgb else "")


def world_axes(layer: Any) -> str:
    """The letters of a layer's world (non-RGB) axes, e.g. ``"ZYX"``.

    Raises
    ------
    ParameterError
        If the layer has more than four world axes.
    """
    axes = layer_axes(layer)
    if axes is None:
        raise ParameterError(f"layer {layer.name!r} has {layer.ndim} dimensions; at most 4 (T, Z, Y, X) are supported")
    return axes.replace("S", "")


def geometry_from_state(axes: str, state: Mapping[str, Any]) -> Geometry:
    """Geometry from napari layer attributes (``scale``, ``translate``, ``rotate``, ``shear``,
    ``affine``, ``units``, ``metadata['frame']``), e.g. the ``meta`` dict napari gives a writer."""
    units = state.get("units")
    units = None if units is None else tuple(normalize_unit(str(u)) for u in units)
    meta = state.get("metadata") or {}
    frame = meta.get("frame") if isinstance(meta, Mapping) else None
    return Geometry.from_napari(axes, scale=state.get("scale"), translate=state.get("translate"),
                                rotate=state.get("rotate"), shear=state.get("shear"), affine=state.get("affine"),
                                units=units, frame=frame)


def layer_geometry(layer: Any) -> Geometry:
    """Index -> world geometry of all world axes of a layer (units normalised, frame from metadata)."""
    axes = world_axes(layer)
    state = {"scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate, "shear": layer.shear,
             "affine": layer.affine.affine_matrix, "units": getattr(layer, "units", None),
             "metadata": layer.metadata}
    return geometry_from_state(axes, state)


def spatial_geometry(layer: Any, ndim: int | None = None) -> Geometry:
    """Geometry of a layer's Z/Y/X axes (time dropped), or of its last ``ndim`` spatial axes."""
    g = layer_geometry(layer)
    spatial = "".join(a for a in g.axes if a in "ZYX")
    if ndim is not None:
        spatial = spatial[-ndim:]
    return g.subset(spatial)


def engine_scale(layer: Any) -> tuple[tuple[float, ...] | None, tuple[str, ...] | None]:
    """``(spacing, units)`` of the Z/Y/X axes for the segmentation engine; ``(None, None)`` when uncalibrated.

    The spacing is the length of each data axis' step in the world (the
    column norms of the full data -> world matrix), in the layer's own units
    (µm, mm...): the engine converts it to the model card's unit.  napari's
    default unit ``pixel`` means "unknown": the model then sees the image at
    its native sampling.
    """
    g = spatial_geometry(layer)
    if not g.calibrated:
        return None, None
    return tuple(float(s) for s in g.spacing), tuple(g.units)


def voxel_ratio_scale(layer: Any) -> tuple[float, ...] | None:
    """Data-axis step lengths along Z/Y/X in world units of any kind (for the Z / XY ratio of 3D objects)."""
    try:
        g = spatial_geometry(layer)
    except ParameterError:
        return None
    return tuple(float(s) for s in g.spacing) or None


def measure_geometry(layer: Any, ndim: int) -> Geometry | None:
    """Geometry of a layer's last ``ndim`` spatial axes for measurements, or None (measure in pixels).

    A layer whose spatial axes have no length unit (napari's default
    ``pixel``) or different length units is measured in pixels.
    """
    try:
        g = spatial_geometry(layer, ndim)
        unit = g.length_unit
    except ParameterError:
        return None
    return None if unit == PIXEL else g


def output_geometry(layer: Any, ndim: int | None = None) -> dict[str, Any]:
    """Layer keyword arguments that place an output of a layer's last ``ndim`` axes where the layer is.

    ``scale``/``translate`` (and ``rotate``/``shear``/``affine`` when the
    output has all the layer's axes), ``units``, ``axis_labels`` and, in
    ``metadata``, the ``frame``: what a Labels or Points layer made from this
    layer needs to overlay it, and what the writer needs to save it with the
    source geometry.
    """
    n = layer.ndim if ndim is None else int(ndim)
    geom: dict[str, Any] = {
        "scale": tuple(float(s) for s in layer.scale[-n:]),
        "translate": tuple(float(t) for t in layer.translate[-n:]),
    }
    if layer.ndim == n:  # rotate/shear/affine only carry over between layers of the same dimensionality
        geom["rotate"] = np.array(layer.rotate, copy=True)
        geom["shear"] = np.array(layer.shear, copy=True)
        geom["affine"] = np.array(layer.affine.affine_matrix, copy=True)
    elif not _outer_is_identity(layer):
        # an affine (DICOM, NIfTI) cannot be cut to fewer axes by napari: cut it here
        g = spatial_geometry(layer, n)
        geom["affine"] = g.affine.copy()
        geom["scale"], geom["translate"] = (1.0,) * n, (0.0,) * n
    units = getattr(layer, "units", None)
    if units is not None:
        geom["units"] = tuple(units)[-n:]
    labels = getattr(layer, "axis_labels", None)
    if labels is not None:
        geom["axis_labels"] = tuple(labels)[-n:]
    return geom


def layer_image_kind(layer: Any) -> str:
    """What a layer's image is (:func:`napari_medseg.models.kinds.infer_image_kind`): its frame and DICOM Modality.

    ``"MR"``, ``"CT"``... for DICOM layers, ``"radiology"`` for other
    patient-coordinate layers (NIfTI, NRRD: ``metadata["frame"] == "LPS"``),
    ``"microscopy"`` for everything else.
    """
    from ..models.kinds import infer_image_kind

    meta = layer.metadata if isinstance(getattr(layer, "metadata", None), Mapping) else {}
    dicom = meta.get("dicom")
    modality = dicom.get("Modality") if isinstance(dicom, Mapping) else None
    return infer_image_kind(meta.get("frame"), modality)


def output_metadata(layer: Any) -> dict[str, Any]:
    """Metadata an output layer inherits from its source: the geometry frame and the source axes."""
    meta = layer.metadata if isinstance(getattr(layer, "metadata", None), Mapping) else {}
    out = {k: meta[k] for k in ("frame",) if k in meta}
    return out


def insert_axis(geometry: Mapping[str, Any], pos: int) -> dict[str, Any]:
    """Output geometry with one extra unit-scale, zero-offset axis at ``pos`` (e.g. probabilities' class axis K)."""
    n = len(geometry["scale"])
    keep = [i for i in range(n + 1) if i != pos]

    def grow(mat: np.ndarray, size: int) -> np.ndarray:
        out = np.eye(size + 1)
        idx = [keep[i] if i < n else size for i in range(n + 1)]  # last row/col: homogeneous part
        out[np.ix_(idx, idx)] = mat
        return out

    geom: dict[str, Any] = {
        "scale": (*geometry["scale"][:pos], 1.0, *geometry["scale"][pos:]),
        "translate": (*geometry["translate"][:pos], 0.0, *geometry["translate"][pos:]),
        "affine": grow(np.asarray(geometry.get("affine", np.eye(n + 1))), n + 1),
    }
    if "units" in geometry:
        units = [str(u) for u in geometry["units"]]
        geom["units"] = (*units[:pos], "pixel", *units[pos:])
    if "axis_labels" in geometry:
        labels = [str(a) for a in geometry["axis_labels"]]
        geom["axis_labels"] = (*labels[:pos], "k", *labels[pos:])
    return geom  # rotate/shear stay at identity: napari's rotate of the shifted axes would not match


def time_point(layer: Any, world_point: Any) -> tuple[int, int, int] | None:
    """``(axis, index, size)`` of the time point on screen of a layer with a T axis; None without one.

    ``world_point`` is the viewer's ``dims.point``; the index is the nearest
    time point of the layer's data, clipped to its range.
    """
    axes = layer_axes(layer)
    if axes is None or "T" not in axes:
        return None
    ti = axes.index("T")
    size = int(level0(layer).shape[ti])
    pos = layer.world_to_data(world_point)
    return ti, int(np.clip(np.round(pos[ti]), 0, size - 1)), size


def labels_of(layer: Any) -> np.ndarray:
    """A Labels layer's data (level 0) as a numpy array (never copied when it already is one)."""
    return np.asarray(level0(layer))


def unique_name(viewer: Any, name: str) -> str:
    """``name``, or ``name [k]`` with the smallest free k."""
    names = {lay.name for lay in viewer.layers}
    if name not in names:
        return name
    k = 1
    while f"{name} [{k}]" in names:
        k += 1
    return f"{name} [{k}]"


def slide_of_layer(layer: Any) -> Any:
    """A :class:`~napari_medseg.slides.pyramid.Slide` over a 2D (multiscale) Image layer's data, never copied.

    Its pixel size is the layer's Y/X step when both are in µm (or another
    length unit, converted), else None (pixels).

    Raises
    ------
    ParameterError
        A layer that is not 2D grey or RGB.
    """
    from ..slides.pyramid import Slide, mpp_of

    levels = list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]
    nd = len(levels[0].shape) - (1 if getattr(layer, "rgb", False) else 0)
    if nd != 2:
        raise ParameterError(f"layer {layer.name!r} is not a 2D image (it has {nd} spatial dimensions); "
                             "slide tools need a 2D grey or RGB (multiscale) image")
    return Slide(levels=levels, mpp=mpp_of(spatial_geometry(layer, 2)), name=layer.name)


def grid_layer_kwargs(layer: Any, downsample: Any) -> dict[str, Any]:
    """Layer keyword arguments placing a grid over a 2D layer, each grid pixel covering ``downsample``
    ``(y, x)`` of the layer's (level-0) pixels from its top-left corner (tissue masks, heat maps)."""
    d = np.asarray(downsample, np.float64)
    geom = output_geometry(layer, 2)
    scale = np.asarray(geom["scale"], np.float64)
    geom["scale"] = tuple(float(v) for v in scale * d)
    geom["translate"] = tuple(float(v) for v in np.asarray(geom["translate"]) + (d - 1) / 2 * scale)
    return geom


def _outer_is_identity(layer: Any) -> bool:
    """Whether a layer's ``affine``, ``rotate`` and ``shear`` are all identity (only scale/translate)."""
    a = np.asarray(layer.affine.affine_matrix, float)
    r = np.asarray(layer.rotate, float)
    s = np.asarray(layer.shear, float)
    shear_ok = np.allclose(s, np.eye(len(r))) if s.ndim == 2 else np.allclose(s, 0)
    return bool(np.allclose(a, np.eye(len(a))) and np.allclose(r, np.eye(len(r))) and shear_ok)
