"""Objects from an image: detect (segment or box-detect), measure, table, CSV.

:func:`detect` is the one verb behind the Objects dock widget and ``medseg
detect``: it turns an image (or a label image you already have) into a table
with one row per object, choosing the path from the model's card:

* ``labels`` given: no model runs; the objects are the labels' ids, measured
  with :func:`~napari_medseg.analysis.measure.measure`.  ``class`` is
  ``"object"``, ``score`` 1.0 (nothing to be confident about).
* an ``instance`` segmentation model: :func:`~napari_medseg.inference.segment.segment_iter`
  gives instance labels, which are measured; ``class`` is ``"object"`` and
  ``score`` the mean foreground probability over the object's pixels.
* a ``semantic`` segmentation model: every connected region of one class
  (full connectivity) becomes an object; ``class`` is the card's class name of
  that label value and ``score`` the mean probability of that class over the
  region.  The returned labels are these regions (object ids), not the
  class map.
* a ``detection`` (box) model: :func:`~napari_medseg.analysis.box_detection.detect_iter`
  gives boxes; each box is a row (``class`` and ``score`` from the detector,
  size = box height, width and area in physical units, intensity mean/std of
  the pixels whose centres lie in the box).

Table columns (2D; ``um`` stands for the unit suffix, see
:func:`~napari_medseg.analysis.measure.unit_suffix`)::

    id                                  object id (label value; 1..N by score for boxes)
    class, score                        class name, confidence in [0, 1]
    centroid_y, centroid_x              pixel index (napari data coordinates, pixel centres)
    centroid_y_um, centroid_x_um        world position (translate + index * spacing)
    bbox_y0, bbox_x0, bbox_y1, bbox_x1  pixel-edge box (half-open, as measure's bbox)
    bbox_y0_um, ...                     the box's outer edges in the world
                                        (world columns only with a physical unit, not in px)
    n_pixels, area_um2 (volume_um3)     size (boxes: area_um2 of the box, height_um, width_um)
    ...                                 the other measure() columns; mean_/std_<channel>

Pixel coordinates follow napari: pixel ``i`` has its centre at index ``i``,
so a box ``[y0, y1)`` in pixel-edge coordinates spans ``[y0 - 0.5, y1 - 0.5)``
in data coordinates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, ParameterError
from ..geometry import Geometry, ascii_unit, is_length, is_volume, normalize_unit
from ..progress import CancelToken, Progress, run
from .measure import PROPERTIES, measure, unit_suffix

#: Class of objects that have no class of their own (instance models, given labels).
DEFAULT_CLASS = "object"

#: Columns that lead every objects table, in this order (when present).
LEADING_COLUMNS = ("id", "class", "score", "probability")

_RGB_NAMES = ("red", "green", "blue", "alpha")


@dataclass
class ObjectsResult:
    """What :func:`detect_iter` returns.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per object; columns as in the module docstring.
    kind : {"labels", "instance", "semantic", "detection"}
        Where the objects came from (given labels, or the model's kind).
    labels : ndarray of int or None
        ``(Z,) Y, X`` object ids (0 background) for every kind except
        ``detection``.
    boxes : ndarray of float32, shape (N, 4) or None
        ``[y0, x0, y1, x1]`` pixel-edge boxes, in table row order (``detection`` only).
    class_names : list of str
        Classes the objects can have (the model's, or ``["object"]``).
    unit : str
        Unit suffix of the physical columns (``"um"``, ``"mm"``, ``"px"``).
    geometry : Geometry or None
        Index -> world mapping of ``labels`` (None: measured in pixels).
    spacing, translate : tuple of float
        Pixel size and world position of pixel 0 per spatial axis (Z, Y, X order).
    axes : str
        Spatial axes of ``labels`` / the table (``"YX"`` or ``"ZYX"``).
    model_name, device, device_reason : str
        Empty when no model ran.
    timings : dict
        Seconds per stage (``model``, ``measure``, ``total``).
    info : dict
        Extras (the engine's own info, score definition...).
    """

    table: Any
    kind: str
    labels: np.ndarray | None
    boxes: np.ndarray | None
    class_names: list[str]
    unit: str
    spacing: tuple[float, ...]
    translate: tuple[float, ...]
    axes: str
    model_name: str = ""
    device: str = ""
    device_reason: str = ""
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    geometry: Geometry | None = None

    def __len__(self) -> int:
        return int(len(self.table))

    def counts(self) -> dict[str, int]:
        """Number of objects per class: the model's classes first (zeros included), then any other."""
        classes = [str(c) for c in np.asarray(self.table["class"])] if len(self.table) else []
        out = dict.fromkeys(self.class_names, 0)
        for c in classes:
            out[c] = out.get(c, 0) + 1
        return out

    def object_ids_at(self, points: Any) -> np.ndarray:
        """Id of the object under each point (0 where there is none).

        Parameters
        ----------
        points : array-like, shape (n, ndim)
            Positions in pixel (napari data) coordinates of ``labels``:
            ``(y, x)`` or ``(z, y, x)``.

        Returns
        -------
        ndarray of int64, shape (n,)
            For labels, the label value at the nearest pixel; for boxes, the
            smallest box that contains the point.
        """
        pts = np.asarray(points, dtype=np.float64)
        nd = len(self.axes)
        if pts.size == 0:
            return np.zeros(0, np.int64)
        if pts.ndim != 2 or pts.shape[1] != nd:
            raise ParameterError(f"points must have shape (n, {nd}) for {self.axes!r} objects, got {pts.shape}")
        if self.boxes is None:
            lab = np.asarray(self.labels)
            idx = np.floor(pts + 0.5)
            ok = np.all(np.isfinite(idx), axis=1) & np.all((idx >= 0) & (idx < np.array(lab.shape)), axis=1)
            out = np.zeros(len(pts), np.int64)
            out[ok] = lab[tuple(idx[ok].astype(np.int64).T)]
            return out
        b = np.asarray(self.boxes, np.float64) - 0.5  # pixel-edge -> data coordinates
        inside = ((b[None, :, 0] <= pts[:, None, 0]) & (pts[:, None, 0] < b[None, :, 2])
                  & (b[None, :, 1] <= pts[:, None, 1]) & (pts[:, None, 1] < b[None, :, 3]))
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        cost = np.where(inside, area[None, :], np.inf)
        best = np.argmin(cost, axis=1) if len(b) else np.zeros(len(pts), np.int64)
        ids = np.asarray(self.table["id"], np.int64)
        hit = np.isfinite(cost[np.arange(len(pts)), best]) if len(b) else np.zeros(len(pts), bool)
        return np.where(hit, ids[best] if len(b) else 0, 0).astype(np.int64)

    def marks_from_points(self, points: Any, point_classes: Sequence[Any]) -> dict[int, str]:
        """Training marks (object id -> class) from class-marked points.

        Points on no object are ignored; an object hit by several points takes
        their most common class (a tie raises :class:`ParameterError`).
        For label objects this is :func:`~napari_medseg.analysis.classify.marks_from_points`.
        """
        from .classify import majority_class, marks_from_points

        if self.boxes is None:
            return marks_from_points(points, point_classes, self.labels)
        cls = np.asarray([str(c) for c in point_classes], dtype=object)
        ids = self.object_ids_at(points)
        if cls.shape[0] != ids.shape[0]:
            raise ParameterError(f"{ids.shape[0]} points but {cls.shape[0]} classes")
        hit = ids > 0
        names, codes = np.unique(cls[hit].astype(str), return_inverse=True)
        best = majority_class(ids[hit], codes.ravel(), "points")
        return {o: str(names[c]) for o, c in sorted(best.items())}


# ------------------------------------------------------------------------------- helpers


def _unpack_image(image: Any, axes: str | None, scale, translate, units, channel_names, geometry):
    """Array, axes and geometry from an array or a Volume (explicit arguments win)."""
    if is_volume(image):
        vol = image
        image = vol.data[0] if isinstance(vol.data, list) else vol.data
        axes = axes or vol.axes
        if geometry is None and scale is None and translate is None and units is None:
            geometry = vol.spatial_geometry()
        if channel_names is None and vol.channel_names:
            channel_names = list(vol.channel_names)
    if not hasattr(image, "shape") or not hasattr(image, "__getitem__"):
        image = np.asarray(image)
    return image, axes, scale, translate, units, channel_names, geometry


def _image_axes(shape: tuple[int, ...], axes: str | None) -> str:
    from ..inference.prepare import infer_axes

    axes = (axes or infer_axes(shape)).upper()
    if len(axes) != len(shape):
        raise ParameterError(f"axes {axes!r} have {len(axes)} letters for an image with {len(shape)} dimensions")
    if "T" in axes:
        raise ParameterError("detect one time point at a time: select an index along T first")
    if set(axes) - set("ZYXCS") or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes) \
            or ("C" in axes and "S" in axes):
        raise ParameterError(f"axes {axes!r} must use each of Z, Y, X, C (or S) at most once and include Y and X")
    return axes


def intensity_of_image(image: Any, axes: str, channel_names: Sequence[str] | None) -> list[tuple[str, Any]]:
    """The image as measure()'s ``image`` argument: ``[(name, (Z,)Y,X array)]``.

    Parameters
    ----------
    image : array-like
        The image, with the axes ``axes``.
    axes : str
        Its axis letters (upper case; ``C`` or ``S`` for channels).
    channel_names : sequence of str, optional
        Names of the channels; used when there is one per channel.

    Returns
    -------
    list of (str, array-like)
        One entry per channel, each a view of ``image`` without the channel
        axis.  Unnamed channels are ``ch0, ch1...``, or ``red, green, blue
        (, alpha)`` for an RGB(A) ``S`` axis; an image without channels is
        ``intensity`` (or its one channel name).
    """
    ch = next((i for i, a in enumerate(axes) if a in "CS"), None)
    if ch is None:
        return [(str(channel_names[0]) if channel_names else "intensity", image)]
    n = int(image.shape[ch])
    if channel_names is not None and len(channel_names) == n:
        names = [str(c) for c in channel_names]
    elif axes[ch] == "S" and n in (3, 4):
        names = list(_RGB_NAMES[:n])
    else:
        names = [f"ch{i}" for i in range(n)]
    return [(nm, image[(slice(None),) * ch + (i,)]) for i, nm in enumerate(names)]


def _normalise_intensity(intensity: Any, shape: tuple[int, ...]) -> list[tuple[str, np.ndarray]]:
    """``intensity`` argument -> ``[(name, array of shape)]`` (one entry per channel)."""
    from .measure import intensity_channels

    if intensity is None:
        return []
    return [(n, np.asarray(a)) for n, a in intensity_channels(intensity, shape, None, None)]


def order_columns(table: Any) -> Any:
    """The table with the :data:`LEADING_COLUMNS` that it has first, the other columns after in their order.

    Parameters
    ----------
    table : pandas.DataFrame
        An objects table.

    Returns
    -------
    pandas.DataFrame
        The same rows, columns reordered.
    """
    lead = [c for c in LEADING_COLUMNS if c in table.columns]
    return table[lead + [c for c in table.columns if c not in lead]]


def _relay(gen: Generator[Progress, None, Any], extra: int) -> Generator[Progress, None, Any]:
    """Re-yield a sub-generator's progress with ``extra`` more steps in the total; close it on exit."""
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            yield Progress(p.step, p.total + extra, p.message, p.info)
    finally:
        gen.close()


def _mean_per_object(labels: np.ndarray, values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over each object's pixels, for object ``ids`` (float64)."""
    lab = np.asarray(labels).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    n = int(lab.max()) + 1 if lab.size else 1
    s = np.bincount(lab, weights=v, minlength=n)
    c = np.bincount(lab, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (s / c)[ids]


def semantic_objects(class_map: np.ndarray, probs: np.ndarray | None, class_names: Sequence[str]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected regions of each class -> (object ids, class per id, score per id).

    Parameters
    ----------
    class_map : ndarray of int
        Class per pixel (0 = background).
    probs : ndarray, optional
        Class probabilities, ``(n_classes, *class_map.shape)``; None gives
        every object the score 1.
    class_names : sequence of str
        Name of each class value (``class_N`` past its end).

    Returns
    -------
    regions : ndarray of uint16 or uint32
        Object ids 1..N: the connected regions of one class (full connectivity).
    classes : ndarray of object
        Class name of objects 1..N.
    scores : ndarray of float
        Mean probability of its class over each object's pixels.
    """
    from skimage.measure import label as cc_label

    cm = np.asarray(class_map)
    regions = cc_label(cm, background=0, connectivity=cm.ndim)
    n = int(regions.max())
    regions = regions.astype(np.uint16 if n < 65535 else np.uint32)
    cls_of = np.zeros(n + 1, np.int64)
    cls_of[regions.ravel()] = cm.ravel()  # every pixel of a region has the same class
    ids = np.arange(1, n + 1)
    if probs is not None:
        p = np.take_along_axis(np.asarray(probs), cm[None].astype(np.intp), axis=0)[0]
        score = _mean_per_object(regions, p, ids)
    else:
        score = np.ones(n)
    names = np.asarray([class_names[c] if c < len(class_names) else f"class_{c}" for c in range(int(cm.max()) + 1)],
                       dtype=object)
    return regions, names[cls_of[1:]] if n else np.zeros(0, object), score


def box_table(
    boxes: Any,
    classes: Sequence[str],
    scores: Any,
    *,
    spacing: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    unit: str = "px",
    intensity: Sequence[tuple[str, np.ndarray]] = (),
) -> Any:
    """Objects table of boxes (one row per box, in the given order).

    Parameters
    ----------
    boxes : array-like, shape (N, 4)
        ``[y0, x0, y1, x1]`` pixel-edge coordinates.
    classes : sequence of str, length N
    scores : array-like, length N
    spacing, translate : (sy, sx), optional
        Pixel size and world position of pixel 0's centre (default 1 and 0).
    unit : str
        Unit suffix of the physical columns.
    intensity : sequence of (name, (Y, X) array)
        Channels for ``mean_<name>`` / ``std_<name>``: statistics of the
        pixels whose centres lie inside the box (NaN for a box that holds none).

    Returns
    -------
    pandas.DataFrame
        ``id`` (1..N), ``class``, ``score``, centroid and bbox in pixels and
        physical units, ``height_<u>``, ``width_<u>``, ``area_<u>2``,
        ``equivalent_diameter_<u>`` and intensity columns.
    """
    import pandas as pd

    from .boxes import as_boxes

    b = as_boxes(boxes)
    n = len(b)
    sp = np.ones(2) if spacing is None else np.asarray(spacing, np.float64)
    tr = np.zeros(2) if translate is None else np.asarray(translate, np.float64)
    cols: dict[str, Any] = {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "class": np.asarray([str(c) for c in classes], dtype=object),
        "score": np.asarray(scores, np.float64).reshape(n),
    }
    centre = np.stack([(b[:, 0] + b[:, 2]) / 2 - 0.5, (b[:, 1] + b[:, 3]) / 2 - 0.5], axis=1)
    for i, a in enumerate("yx"):
        cols[f"centroid_{a}"] = centre[:, i]
    world_cols = unit != "px"  # in pixel units the world columns would repeat the pixel ones
    if world_cols:
        for i, a in enumerate("yx"):
            cols[f"centroid_{a}_{unit}"] = tr[i] + centre[:, i] * sp[i]
    for j, a in ((0, "y0"), (1, "x0"), (2, "y1"), (3, "x1")):
        cols[f"bbox_{a}"] = b[:, j]
    if world_cols:
        for j, a in ((0, "y0"), (1, "x0"), (2, "y1"), (3, "x1")):
            cols[f"bbox_{a}_{unit}"] = tr[j % 2] + (b[:, j] - 0.5) * sp[j % 2]
    h = np.clip(b[:, 2] - b[:, 0], 0, None) * sp[0]
    w = np.clip(b[:, 3] - b[:, 1], 0, None) * sp[1]
    cols[f"height_{unit}"] = h
    cols[f"width_{unit}"] = w
    cols[f"area_{unit}2"] = h * w
    cols[f"equivalent_diameter_{unit}"] = np.sqrt(4 * h * w / np.pi)
    for name, chan in intensity:
        mean, std = _box_stats(np.asarray(chan), b)
        cols[f"mean_{name}"] = mean
        cols[f"std_{name}"] = std
    return pd.DataFrame(cols)


def _box_stats(img: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof 0) of the pixels whose centres lie in each box, via summed-area tables."""
    if img.ndim != 2:
        raise ParameterError(f"box intensities need a 2D (Y, X) channel, got shape {img.shape}")
    v = img.astype(np.float64)
    s1 = np.zeros((v.shape[0] + 1, v.shape[1] + 1))
    s2 = np.zeros_like(s1)
    s1[1:, 1:] = v.cumsum(0).cumsum(1)
    s2[1:, 1:] = (v * v).cumsum(0).cumsum(1)
    # pixel i (centre i + 0.5 in edge coordinates) is inside [y0, y1) when y0 <= i + 0.5 < y1
    r0 = np.clip(np.ceil(b[:, 0] - 0.5), 0, v.shape[0]).astype(np.int64)
    r1 = np.clip(np.ceil(b[:, 2] - 0.5), 0, v.shape[0]).astype(np.int64)
    c0 = np.clip(np.ceil(b[:, 1] - 0.5), 0, v.shape[1]).astype(np.int64)
    c1 = np.clip(np.ceil(b[:, 3] - 0.5), 0, v.shape[1]).astype(np.int64)
    r1, c1 = np.maximum(r1, r0), np.maximum(c1, c0)

    def box_sum(s: np.ndarray) -> np.ndarray:
        return s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0]

    cnt = ((r1 - r0) * (c1 - c0)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = box_sum(s1) / cnt
        var = box_sum(s2) / cnt - mean * mean
    return mean, np.sqrt(np.clip(var, 0, None))


# ------------------------------------------------------------------------------- the verb


def detect_iter(
    image: Any = None,
    model: str | os.PathLike = "auto",
    *,
    labels: Any = None,
    intensity: Any = None,
    scale: Sequence[float] | float | None = None,
    translate: Sequence[float] | None = None,
    units: str | Sequence[str] | None = None,
    geometry: Geometry | None = None,
    axes: str | None = None,
    channel_names: Sequence[str] | None = None,
    device: str = "auto",
    score_threshold: float | None = None,
    tile_size: int | None = None,
    batch_size: int | None = None,
    properties: Sequence[str] = PROPERTIES,
    cancel: CancelToken | None = None,
    image_kind: str | None = None,
) -> Generator[Progress, None, ObjectsResult]:
    """Find and measure the objects of an image, yielding progress.

    Parameters
    ----------
    image : array-like or Volume, optional
        ``YX``, ``YXS`` (RGB), ``CYX``, ``ZYX``... (see ``axes``).  Needed
        unless ``labels`` is given; then it only supplies intensities.
    model : str or path
        Model name, folder, or ``"auto"`` (the default segmentation model
        for the image: ``nuclei-he`` for RGB, ``nuclei`` for grey).  Its
        card's kind (``instance``, ``semantic``, ``detection``) picks the
        path; ignored when ``labels`` is given.
    labels : array-like of int, optional
        ``(Z,) Y, X`` objects you already have (0 background): they are
        measured, no model runs.
    intensity : array, mapping or list of (name, array), optional
        Images for the ``mean_/min_/max_/std_<name>`` columns, of the
        labels' spatial shape (as :func:`~napari_medseg.analysis.measure.measure`'s
        ``image``).  Default: ``image`` itself, one column group per channel
        (``red/green/blue`` for RGB, ``channel_names`` or ``ch0...`` otherwise).
    scale : float or sequence of float, optional
        Pixel size per spatial axis (Z, Y, X order) in ``units``; segmentation
        models get it converted to µm to match their training pixel size.
    translate : sequence of float, optional
        World position of pixel 0's centre, per spatial axis.
    units : str or sequence of str, optional
        Length unit (``"µm"``, ``"mm"``...).  Default ``"µm"`` when ``scale``
        or ``translate`` is given, else ``"px"``.
    geometry : Geometry, optional
        The full index -> world mapping of the spatial axes (e.g. a DICOM or
        NIfTI series' affine in LPS mm), instead of ``scale``/``translate``/
        ``units``.  A :class:`~napari_medseg.geometry.Volume` image brings its
        own.  Volumes come from ``|det|`` of the affine, lengths from its
        column norms, world columns from the affine.
    axes : str, optional
        Axis letters of ``image`` from ``Z Y X C S``; guessed from the shape
        when None (2D -> ``YX``, 3D ending in 3/4 -> ``YXS``, other 3D -> ``ZYX``).
    channel_names : sequence of str, optional
        Names of the image's channels (column names of the intensity stats).
    device : {"auto", "cpu", "cuda", "mps"}
    score_threshold : float, optional
        Detection models: smallest box score kept (default the card's).
    tile_size, batch_size : int, optional
        Passed to the engine.
    properties : sequence of str
        Measurement groups (segmentation paths), see :data:`~napari_medseg.analysis.measure.PROPERTIES`.
    cancel : CancelToken, optional
        Checked by the engine; raises :class:`~napari_medseg.progress.Cancelled`.
    image_kind : str, optional
        What the image is (:mod:`napari_medseg.models.kinds`), default from
        a Volume's frame and DICOM Modality: ``model="auto"`` picks a model
        made for such images (``"blood_smear"`` -> the ``bccd`` detector) or
        raises ModelError when none is installed (radiology); a named model
        made for other images runs with an
        :class:`~napari_medseg.errors.ImageKindWarning`.

    Yields
    ------
    Progress
        The engine's steps, then one ``"measuring objects"`` step.

    Returns
    -------
    ObjectsResult

    Raises
    ------
    ParameterError
        Missing or inconsistent inputs.
    ModelError
        The model cannot be used on this image.
    """
    t0 = time.perf_counter()
    if image is None and labels is None:
        raise ParameterError("give an image (and a model) or a label image to detect objects")
    arr = img_axes = None
    if image is not None:
        if image_kind is None and is_volume(image):
            from ..models.kinds import kind_of_volume

            image_kind = kind_of_volume(image)
        arr, axes, scale, translate, units, channel_names, geometry = _unpack_image(
            image, axes, scale, translate, units, channel_names, geometry)
        img_axes = _image_axes(tuple(int(s) for s in arr.shape), axes)
        spatial = "".join(a for a in img_axes if a in "ZYX")
        sp_shape = tuple(int(arr.shape[img_axes.index(a)]) for a in spatial)
    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim not in (2, 3):
            raise ParameterError(f"labels must be 2D (YX) or 3D (ZYX), got shape {lab.shape}")
        if image is not None and lab.shape != sp_shape:
            raise ParameterError(f"labels {lab.shape} and image {tuple(arr.shape)} (axes {img_axes!r}) "
                                 f"do not have the same spatial shape {sp_shape}")
        spatial = "ZYX"[3 - lab.ndim:]
        sp_shape = lab.shape
    ndim = len(spatial)
    if ndim not in (2, 3):
        raise ParameterError(f"objects are measured in 2D or 3D; this image has spatial axes {spatial!r}")
    if geometry is not None:
        if scale is not None or translate is not None or units is not None:
            raise ParameterError("give either geometry or scale/translate/units, not both")
        if not isinstance(geometry, Geometry) or geometry.axes != spatial:
            raise ParameterError(f"geometry {geometry!r} does not fit the spatial axes {spatial!r}")
        if not geometry.calibrated:
            geometry = None  # a plain pixel grid: measured in px as without one
        else:
            unit = ascii_unit(geometry.length_unit)
            sp, tr = geometry.spacing, geometry.origin
    if geometry is None:
        default_unit = "px" if scale is None and translate is None else "um"
        unit = unit_suffix(units, ndim, default=default_unit)
        sp = (np.full(ndim, float(scale)) if np.isscalar(scale) else
              np.ones(ndim) if scale is None else np.asarray(scale, np.float64).ravel())
        tr = np.zeros(ndim) if translate is None else np.asarray(translate, np.float64).ravel()
        if sp.size != ndim or tr.size != ndim:
            raise ParameterError(f"scale and translate need one value per spatial axis {spatial!r}")
        if not np.all(np.isfinite(sp)) or np.any(sp <= 0) or not np.all(np.isfinite(tr)):
            raise ParameterError(f"scale must be finite and > 0 and translate finite, got {tuple(sp)}, {tuple(tr)}")
        if unit != "px":
            geometry = Geometry.from_scale(spatial, sp, tr, units=normalize_unit(unit))
    if intensity is None and arr is not None:
        intensity = intensity_of_image(arr, img_axes, channel_names)
    if cancel is not None:
        cancel.raise_if_cancelled()

    info: dict[str, Any] = {}
    timings: dict[str, float] = {}
    model_name = dev = reason = ""
    classes = scores = None
    boxes = None
    if labels is not None:
        kind, class_names = "labels", [DEFAULT_CLASS]
        info["score"] = "1.0: objects came from a label image, not from a model"
    else:
        from ..models.registry import resolve_model_or_auto

        rgb = "S" in img_axes and int(arr.shape[img_axes.index("S")]) in (3, 4)
        minfo = resolve_model_or_auto(model, rgb, what="segmentation model", image_kind=image_kind,
                                      kinds=("instance", "semantic", "detection"))
        kind = minfo.card.kind
        t = time.perf_counter()
        if kind == "detection":
            from .box_detection import detect_iter as boxes_iter

            if "Z" in img_axes:
                raise ModelError(f"detection model {minfo.name!r} takes 2D images; this one has axes {img_axes!r}")
            res = yield from _relay(boxes_iter(arr, minfo.path, axes=img_axes, device=device,
                                               score_threshold=score_threshold, tile_size=tile_size,
                                               batch_size=batch_size, cancel=cancel), 1)
            boxes = np.asarray(res.boxes, np.float32)
            class_names = list(res.class_names)
            classes, scores = res.classes, np.asarray(res.scores, np.float64)
            info.update(res.info)
            info["score"] = "peak centre-heatmap probability of the box (detector)"
        elif kind in ("instance", "semantic"):
            from ..inference.segment import segment_iter

            seg_scale = None if geometry is None or not is_length(geometry.length_unit) else tuple(sp)
            seg_units = None if seg_scale is None else (geometry.length_unit,) * ndim
            res = yield from _relay(segment_iter(arr, minfo.path, axes=img_axes, scale=seg_scale, units=seg_units,
                                                 device=device, tile_size=tile_size, batch_size=batch_size,
                                                 return_probabilities=True, cancel=cancel), 1)
            info.update(res.info)
            card_names = [str(c) for c in minfo.card.output.get("class_names", [])]
            if kind == "instance":
                lab = np.asarray(res.labels)
                class_names = [DEFAULT_CLASS]
                info["score"] = "mean foreground probability over the object's pixels"
            else:
                lab, classes, scores = semantic_objects(res.labels, res.probabilities, card_names)
                class_names = list(card_names[1:]) or sorted(set(classes))
                info["score"] = "mean probability of the object's class over its pixels"
        else:
            raise ModelError(f"model {minfo.name!r} has kind {kind!r}; expected instance, semantic or detection")
        timings["model"] = time.perf_counter() - t
        model_name, dev, reason = res.model_name, res.device, res.device_reason

    yield Progress(0, 1, "measuring objects", {"stage": "measure"})
    if cancel is not None:
        cancel.raise_if_cancelled()
    t = time.perf_counter()
    if kind == "detection":
        chans = _normalise_intensity(intensity, sp_shape)
        table = box_table(boxes, classes, scores, spacing=sp, translate=tr, unit=unit, intensity=chans)
    else:
        if geometry is not None:
            table = measure(lab, intensity, geometry=geometry, properties=properties)
        else:
            table = measure(lab, intensity, spacing=sp, units=unit, translate=tr, properties=properties)
        table = table.rename(columns={"label": "id"})
        ids = np.asarray(table["id"], np.int64)
        if kind == "semantic":
            table.insert(1, "class", np.asarray(classes, dtype=object)[ids - 1] if len(ids) else [])
            table.insert(2, "score", np.asarray(scores)[ids - 1] if len(ids) else [])
        else:
            table.insert(1, "class", np.full(len(ids), DEFAULT_CLASS, dtype=object))
            if kind == "instance" and res.probabilities is not None:
                table.insert(2, "score", _mean_per_object(lab, res.probabilities[0], ids))
            else:
                table.insert(2, "score", np.ones(len(ids)))
    timings["measure"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    table = order_columns(table)
    return ObjectsResult(table, kind, None if kind == "detection" else lab, boxes, class_names, unit,
                         tuple(float(v) for v in sp), tuple(float(v) for v in tr), spatial, model_name, dev,
                         reason, timings, info, geometry)


def detect(
    image: Any = None,
    model: str | os.PathLike = "auto",
    *,
    labels: Any = None,
    scale: Sequence[float] | float | None = None,
    units: str | Sequence[str] | None = None,
    axes: str | None = None,
    device: str = "auto",
    progress: Callable[[Progress], Any] | None = None,
    **kwargs: Any,
) -> ObjectsResult:
    """Detect, measure and tabulate the objects of an image (or of a label image).

    The model's kind chooses the path: segmentation models (``instance``,
    ``semantic``) give labels that are measured, detection models give boxes;
    with ``labels`` no model runs.  See :func:`detect_iter` for every
    parameter (``intensity``, ``translate``, ``channel_names``,
    ``score_threshold``, ``tile_size``, ``batch_size``, ``cancel``...).

    Returns
    -------
    ObjectsResult
        ``.table`` (pandas DataFrame, one row per object), ``.labels`` or
        ``.boxes``, ``.counts()``.

    Examples
    --------
    >>> import napari_medseg as ms                                         # doctest: +SKIP
    >>> res = ms.detect(rgb, "bccd")                                       # doctest: +SKIP
    >>> res.counts()                                                       # doctest: +SKIP
    {'WBC': 1, 'RBC': 14, 'Platelets': 2}
    >>> res = ms.detect(labels=lab, intensity=img, scale=(0.5, 0.5), units="µm")  # doctest: +SKIP
    >>> res.table[["id", "area_um2", "mean_intensity"]]                    # doctest: +SKIP
    """
    return run(detect_iter(image, model, labels=labels, scale=scale, units=units, axes=axes, device=device,
                           **kwargs), progress)


def write_objects_csv(path: str | os.PathLike, table: Any) -> Path:
    """Write an objects table as CSV (UTF-8, header row, no index), atomically.

    Parameters
    ----------
    path : str or path-like
        Destination (``<stem>_objects.csv``).  Written to a temporary file in
        the same folder and renamed, so a failure never leaves half a file.
    table : pandas.DataFrame or mapping of str to 1D array
        One row per object.  Floats keep full precision (shortest repr).

    Returns
    -------
    Path
        The written file.
    """
    import pandas as pd

    path = Path(path)
    if not hasattr(table, "columns"):
        if not isinstance(table, Mapping):
            raise ParameterError(f"expected a DataFrame or a mapping of columns, got {type(table).__name__}")
        table = pd.DataFrame({str(k): np.asarray(v) for k, v in table.items()})
    if path.parent and not path.parent.is_dir():
        raise ParameterError(f"folder {path.parent} does not exist")
    from ..io.atomic import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            table.to_csv(f, index=False, lineterminator="\n")

    return atomic_write(path, write)


__all__ = ["DEFAULT_CLASS", "ObjectsResult", "box_table", "detect", "detect_iter", "write_objects_csv"]
