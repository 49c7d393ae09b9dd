"""Lesions as objects: components of a semantic model's classes, with a score and the sizes radiologists report.

A lesion is a connected region of one class (2D ``(Y, X)`` or 3D
``(Z, Y, X)``), measured in the image's true geometry (a
:class:`~napari_medseg.geometry.Geometry`: anisotropic and oblique voxels
included).  One table row per lesion (:func:`lesion_table`)::

    id, class, score                   score: mean probability of its class over its voxels (ranks lesions
                                       for FROC and thresholds; float16 maxima tie at 1.0, means rarely do)
    max_probability                    highest probability of its class over its voxels
    p_<class>                          mean probability of every class over its voxels
    n_voxels, volume_mm3, volume_ml    (2D: n_pixels, area_mm2)
    long_axis_mm                       RECIST long axis: the longest in-plane diameter over all slices
    short_axis_mm                      the longest diameter perpendicular to it, on that slice
    recist_slice                       slice index (Z) of the long axis (3D)
    max_diameter_mm                    longest 3D diameter (3D)
    slice_first, slice_last, n_slices  slice range (3D)
    centroid_z_mm, ... / centroid_z    centroid in world (patient LPS mm for radiology) and in voxel index
    bbox_*                             index and world bounding box (see measure())
    surface_area_mm2, sphericity       marching-cubes surface; pi^(1/3) (6 V)^(2/3) / A (3D)
    elongation                         minor / major axis length of the same-moment ellipse/ellipsoid
    mean_<image>, std_, min_, max_     intensity (HU for CT) when an image is given

Diameters are measured edge to edge, as a calliper on the image: the
largest distance between two lesion pixel centres plus one pixel's width
along that direction (the width of the ellipse inscribed in the pixel: one
pixel side in every direction for square pixels).  On a digital disc or
ellipse each end is then within half a pixel of the true boundary, so the
diameter is within one pixel of the true one (``tests/core/test_lesions.py``);
like a calliper it reads half a pixel long on average.  The short axis is the longest chord perpendicular to the long
axis: lesion pixels are grouped in strips one pixel wide along the long axis,
the widest strip (across) gives it.  Nothing here imports torch or napari.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..geometry import Geometry
from .measure import measure

#: Columns that lead every lesion table, in this order (when present).
LEADING_COLUMNS = ("id", "class", "score", "max_probability")


# --------------------------------------------------------------------------- diameters


def _in_plane_metric(geometry: Geometry) -> np.ndarray:
    """``L`` with ``|[dy, dx] @ L|`` = the world length of an in-plane index step (Cholesky of the Gram matrix)."""
    lin = geometry.linear
    m = lin[:, -2:]  # world steps of the Y and X index axes
    return np.linalg.cholesky(m.T @ m)


def _extent(u: np.ndarray, basis: np.ndarray) -> float:
    """Width of one pixel/voxel along the unit vector ``u``: of the ellipse (ellipsoid) inscribed in it.

    ``basis`` rows are the world steps of the index axes in an orthonormal
    frame (``q = index @ basis``); the inscribed ellipse is the image of the
    disc of diameter 1, whose width along ``u`` is ``|basis @ u|``: one pixel
    side in every direction for square pixels.
    """
    return float(np.linalg.norm(basis @ u))


def _farthest_pair(q: np.ndarray) -> tuple[float, np.ndarray]:
    """Largest distance between two of the points ``q`` ``(n, d)`` and the unit direction between them."""
    n, d = q.shape
    if n == 1:
        u = np.zeros(d)
        u[-1] = 1.0
        return 0.0, u
    cand = q
    if n > 64:
        from scipy.spatial import ConvexHull, QhullError

        try:
            cand = q[ConvexHull(q).vertices]
        except (QhullError, ValueError):  # flat or collinear: the extreme points along the main axes suffice
            c = q - q.mean(axis=0)
            _, _, vt = np.linalg.svd(c, full_matrices=False)
            proj = c @ vt.T
            keep = np.unique(np.concatenate([np.argsort(proj[:, k])[[0, -1]] for k in range(proj.shape[1])]))
            cand = q[keep]
            if len(cand) < 2:  # pragma: no cover - n > 64 distinct points always give two
                cand = q[:2]
    best, pair = -1.0, (0, 1)
    for i in range(0, len(cand), 256):  # chunked: bounded memory for large hulls
        diff = cand[i:i + 256, None, :] - cand[None, :, :]
        dist = np.einsum("ijk,ijk->ij", diff, diff)
        j = int(np.argmax(dist))
        a, b = divmod(j, dist.shape[1])
        if dist[a, b] > best:
            best, pair = float(dist[a, b]), (i + a, b)
    v = cand[pair[1]] - cand[pair[0]]
    length = float(np.sqrt(best))
    if length == 0:
        u = np.zeros(d)
        u[-1] = 1.0
        return 0.0, u
    return length, v / length


def recist_axes_2d(yx: np.ndarray, metric: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Long and short axis of one slice's lesion pixels (see the module docstring).

    Parameters
    ----------
    yx : ndarray of int, shape (n, 2)
        Pixel indices (row, column) of the lesion on the slice.
    metric : ndarray, shape (2, 2)
        :func:`_in_plane_metric`: maps index steps to an orthonormal in-plane frame.

    Returns
    -------
    long_axis, short_axis : float
        In world units (mm for radiology).
    direction : ndarray, shape (2,)
        Unit direction of the long axis in the in-plane frame.
    """
    q = yx.astype(np.float64) @ metric
    length, u = _farthest_pair(q)
    long_axis = length + _extent(u, metric)
    nrm = np.array([-u[1], u[0]])
    w_u, w_n = _extent(u, metric), _extent(nrm, metric)
    t, s = q @ u, q @ nrm
    # strips one pixel wide along the long axis: pixels whose centres lie within half a pixel
    # of a line across it; two half-width bins side by side make one strip
    half = max(w_u / 2, 1e-12)
    b = np.floor((t - t.min()) / half).astype(np.int64)
    nb = int(b.max()) + 2
    lo = np.full(nb, np.inf)
    hi = np.full(nb, -np.inf)
    np.minimum.at(lo, b, s)
    np.maximum.at(hi, b, s)
    lo2 = np.minimum(lo[:-1], lo[1:])
    hi2 = np.maximum(hi[:-1], hi[1:])
    width = hi2 - lo2
    short = float(np.max(width[np.isfinite(width)])) + w_n
    return float(long_axis), min(short, float(long_axis)), u


def _max_diameter_3d(zyx: np.ndarray, geometry: Geometry) -> float:
    """Longest 3D diameter (edge to edge) of lesion voxels ``(n, 3)`` in ``geometry`` (world units)."""
    lin = geometry.linear
    q = zyx.astype(np.float64) @ lin.T
    length, u = _farthest_pair(q)
    return length + _extent(u, lin.T)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a background face neighbour (the only ones a diameter can end on)."""
    from scipy import ndimage as ndi

    return mask & ~ndi.binary_erosion(mask, border_value=0)


# --------------------------------------------------------------------------- lesions from probabilities


@dataclass
class Lesions:
    """Lesions found in class probabilities, before measuring.

    Attributes
    ----------
    labels : ndarray of uint16/uint32
        ``(Z,) Y, X`` lesion ids 1..n, 0 background.
    classes : ndarray of object
        Class name of lesions 1..n.
    scores : ndarray of float
        Mean probability of its class over each lesion's voxels (the ranking score).
    max_probability : ndarray of float
        Highest probability of its class over each lesion's voxels.
    class_probabilities : ndarray of float, shape (n, K)
        Mean probability of every class (background first) over each lesion.
    class_names : list of str
        The K class names, background first.
    """

    labels: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    max_probability: np.ndarray
    class_probabilities: np.ndarray
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)


def lesions_from_probabilities(
    probabilities: Any,
    geometry: Geometry,
    class_names: Sequence[str] | None = None,
    *,
    threshold: float | None = None,
    min_size: float = 0.0,
    connectivity: int | None = None,
    split_touching: bool = False,
) -> Lesions:
    """Connected components of each lesion class of a semantic model's probabilities.

    Parameters
    ----------
    probabilities : array-like of float, shape (K, (Z,) Y, X)
        Class probabilities, background first (softmax of the model).
    geometry : Geometry
        Index -> world of the spatial axes (``"ZYX"`` or ``"YX"``).
    class_names : sequence of str, optional
        K names, background first (default ``background, class_1...``).
    threshold : float, optional
        A voxel is lesion when the summed probability of the lesion classes
        exceeds it (its class: the most probable lesion class).  Default: the
        arg-max of all classes (background included).
    min_size : float
        Smallest lesion kept, in world units squared (2D) or cubed (3D), e.g. mm³.
    connectivity : int, optional
        1 (faces) to ndim (faces, edges, corners); default ndim.
    split_touching : bool
        Split touching lesions of one class with a distance-transform watershed.

    Returns
    -------
    Lesions

    Raises
    ------
    ParameterError
        Shapes, geometry or parameters that do not fit.
    """
    from skimage.measure import label as cc_label

    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim not in (3, 4) or p.shape[0] < 2:
        raise ParameterError(f"probabilities must be (K >= 2, (Z,) Y, X), got shape {p.shape}")
    ndim = p.ndim - 1
    if geometry.ndim != ndim:
        raise ParameterError(f"geometry {geometry!r} does not fit {ndim}D probabilities")
    k = p.shape[0]
    names = list(class_names) if class_names is not None else ["background"] + [f"class_{i}" for i in range(1, k)]
    if len(names) != k:
        raise ParameterError(f"{len(names)} class names for {k} probability maps")
    conn = ndim if connectivity is None else int(connectivity)
    if not 1 <= conn <= ndim:
        raise ParameterError(f"connectivity must be 1..{ndim}, got {connectivity}")
    if threshold is None:
        cls = np.argmax(p, axis=0)
    else:
        if not 0.0 < threshold < 1.0:
            raise ParameterError(f"threshold must be in (0, 1), got {threshold}")
        cls = np.argmax(p[1:], axis=0) + 1
        cls[p[1:].sum(axis=0) <= threshold] = 0
    labels = np.zeros(cls.shape, np.int64)
    n = 0
    for c in range(1, k):
        mask = cls == c
        if not mask.any():
            continue
        comp = cc_label(mask, connectivity=conn)
        if split_touching:
            comp = _split(mask, comp, geometry)
        nz = comp > 0
        labels[nz] = comp[nz] + n
        n += int(comp.max())
    # drop small lesions; renumber 1..n: classes in order, each class's components in raster order
    cell = geometry.voxel_size
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    keep = np.flatnonzero(counts[1:] * cell >= min_size) + 1
    relabel = np.zeros(n + 1, np.int64)
    relabel[keep] = np.arange(1, len(keep) + 1)
    labels = relabel[labels]
    n = len(keep)
    dtype = np.uint16 if n < 65535 else np.uint32
    labels = labels.astype(dtype)
    flat = labels.ravel()
    fg = flat > 0
    ids = flat[fg].astype(np.int64)
    cls_flat = cls.ravel()[fg]
    cnt = np.bincount(ids, minlength=n + 1)[1:].astype(np.float64)
    cls_of = np.zeros(n + 1, np.int64)
    cls_of[ids] = cls_flat
    cls_of = cls_of[1:]
    probs = np.zeros((n, k))
    for c in range(k):
        probs[:, c] = np.bincount(ids, weights=p[c].ravel()[fg], minlength=n + 1)[1:] / np.maximum(cnt, 1)
    own = p.reshape(k, -1)[:, fg][cls_flat, np.arange(len(ids))] if len(ids) else np.zeros(0)
    score = np.zeros(n + 1)
    np.maximum.at(score, ids, own)
    mean = probs[np.arange(n), cls_of] if n else np.zeros(0)
    return Lesions(labels, np.asarray([names[c] for c in cls_of], dtype=object), mean, score[1:], probs, names)


def _split(mask: np.ndarray, comp: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Touching lesions of one component apart: watershed of the (anisotropic) distance map."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(mask, sampling=geometry.spacing)
    footprint = np.ones((3,) * mask.ndim, bool)
    peaks = peak_local_max(dist, labels=comp, footprint=footprint, exclude_border=False,
                           min_distance=max(1, int(round(2.0 / float(geometry.spacing.min())))))
    markers = np.zeros(mask.shape, np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    out = watershed(-dist, markers, mask=mask)
    # components without a peak keep their own id after the split ones
    missing = (out == 0) & mask
    if missing.any():
        extra = ndi.label(missing)[0]
        out[missing] = extra[missing] + out.max()
    return out


# --------------------------------------------------------------------------- the table


def lesion_table(
    labels: Any,
    geometry: Geometry,
    *,
    lesions: Lesions | None = None,
    classes: Sequence[str] | None = None,
    image: Any = None,
    image_name: str = "image",
    properties: Sequence[str] | None = None,
) -> Any:
    """One row per lesion of a label image: class, score and the sizes of the module docstring.

    Parameters
    ----------
    labels : array-like of int, shape ((Z,) Y, X)
        Lesion ids, 0 background (ids need not be consecutive).
    geometry : Geometry
        Index -> world of ``labels``, axes ``"ZYX"`` or ``"YX"``; its unit
        names the columns (``volume_mm3`` for mm).
    lesions : Lesions, optional
        Where the labels came from a model: classes, scores, probabilities.
    classes : sequence of str, optional
        Class name per row (sorted ids) when ``lesions`` is not given (default ``"lesion"``).
    image : array-like, optional
        Intensity image of the labels' shape (HU for CT).
    image_name : str
        Name of its columns (``mean_<image_name>``...).
    properties : sequence of str, optional
        :func:`~napari_medseg.analysis.measure.measure` groups (default: all
        but ``solidity``, whose 3D hull is slow on large lesions; intensity
        only with an ``image``).

    Returns
    -------
    pandas.DataFrame
        Sorted by id.

    Raises
    ------
    ParameterError
        If the labels and geometry do not fit.
    """
    import pandas as pd

    lab = np.asarray(labels)
    if lab.ndim not in (2, 3) or not np.issubdtype(lab.dtype, np.integer):
        raise ParameterError(f"lesion labels must be a 2D/3D integer image, got {lab.dtype} {lab.shape}")
    if not isinstance(geometry, Geometry) or geometry.ndim != lab.ndim:
        raise ParameterError(f"geometry {geometry!r} does not fit {lab.ndim}D labels")
    ndim = lab.ndim
    intensity = None if image is None else [(image_name, np.asarray(image))]
    props = properties or ("centroid", "bbox", "area", "equivalent_diameter", "perimeter", "axis_lengths",
                           "intensity", *(("eccentricity",) if ndim == 2 else ()))
    if intensity is None:
        props = tuple(p for p in props if p != "intensity")
    props = tuple(dict.fromkeys((*props, "bbox", "area")))  # slice range, volume: always
    t = measure(lab, intensity, geometry=geometry, properties=props)
    t = t.rename(columns={"label": "id"})
    ids = np.asarray(t["id"], np.int64)
    unit = _unit_suffix(t)
    n = len(ids)
    if lesions is not None:
        if n and ids.max() > len(lesions):
            raise ParameterError(f"labels have id {ids.max()} but only {len(lesions)} lesions were found")
        sel = ids - 1
        t.insert(1, "class", lesions.classes[sel] if n else np.zeros(0, object))
        t.insert(2, "score", lesions.scores[sel] if n else np.zeros(0))
        t.insert(3, "max_probability", lesions.max_probability[sel] if n else np.zeros(0))
        for c, name in enumerate(lesions.class_names):
            t[f"p_{name}"] = lesions.class_probabilities[sel, c] if n else np.zeros(0)
    else:
        cl = np.full(n, "lesion", dtype=object) if classes is None else np.asarray(list(classes), dtype=object)
        if len(cl) != n:
            raise ParameterError(f"{len(cl)} classes for {n} lesions")
        t.insert(1, "class", cl)
        t.insert(2, "score", np.ones(n))
    if ndim == 3:
        t["volume_ml"] = t[f"volume_{unit}3"] * _ml_per(unit) if unit in ("mm", "cm", "um") else np.nan
    long_ax, short_ax, rec_slice, max_d = _axes(lab, ids, geometry)
    t[f"long_axis_{unit}"] = long_ax
    t[f"short_axis_{unit}"] = short_ax
    if ndim == 3:
        t["recist_slice"] = rec_slice
        t[f"max_diameter_{unit}"] = max_d
        t["slice_first"] = np.asarray(t["bbox_z0"], np.int64)
        t["slice_last"] = np.asarray(t["bbox_z1"], np.int64) - 1
        t["n_slices"] = t["slice_last"] - t["slice_first"] + 1
        area = np.asarray(t.get(f"surface_area_{unit}2", np.full(n, np.nan)), np.float64)
        vol = np.asarray(t[f"volume_{unit}3"], np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            t["sphericity"] = np.pi ** (1 / 3) * (6 * vol) ** (2 / 3) / area
    if f"major_axis_length_{unit}" in t:
        with np.errstate(invalid="ignore", divide="ignore"):
            major = np.asarray(t[f"major_axis_length_{unit}"], np.float64)
            t["elongation"] = np.where(major > 0, np.asarray(t[f"minor_axis_length_{unit}"]) / major, 1.0)
    lead = [c for c in LEADING_COLUMNS if c in t.columns]
    key = [c for c in (f"volume_{unit}3", "volume_ml", f"area_{unit}2", f"long_axis_{unit}", f"short_axis_{unit}",
                       f"max_diameter_{unit}", "recist_slice", "slice_first", "slice_last", "n_slices")
           if c in t.columns]
    rest = [c for c in t.columns if c not in lead and c not in key]
    return pd.DataFrame(t[lead + key + rest]).reset_index(drop=True)


def _unit_suffix(t: Any) -> str:
    for c in t.columns:
        for pre in ("volume_", "area_"):
            if c.startswith(pre) and c[-1] in "23":
                return c[len(pre):-1]
    return "px"  # pragma: no cover - measure always gives area/volume with "area" in props


def _ml_per(unit: str) -> float:
    """Millilitres per cubic ``unit``."""
    return {"mm": 1e-3, "cm": 1.0, "um": 1e-12}[unit]


def _axes(lab: np.ndarray, ids: np.ndarray, geometry: Geometry
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RECIST long/short axis, their slice, and the 3D diameter of every lesion (NaN where not defined)."""
    from scipy import ndimage as ndi

    n = len(ids)
    long_ax, short_ax = np.zeros(n), np.zeros(n)
    rec_slice = np.zeros(n, np.int64)
    max_d = np.full(n, np.nan)
    metric = _in_plane_metric(geometry)
    slices = ndi.find_objects(lab)
    for r, i in enumerate(ids):
        sl = slices[i - 1]
        mask = lab[sl] == i
        off = np.array([s.start for s in sl])
        if lab.ndim == 2:
            pts = np.argwhere(_boundary(mask)) + off
            long_ax[r], short_ax[r], _ = recist_axes_2d(pts, metric)
            continue
        best = (-1.0, 0.0, 0)
        for z in range(mask.shape[0]):
            plane = mask[z]
            if not plane.any():
                continue
            pts = np.argwhere(_boundary(plane)) + off[1:]
            la, sa, _ = recist_axes_2d(pts, metric)
            if la > best[0]:
                best = (la, sa, z + off[0])
        long_ax[r], short_ax[r], rec_slice[r] = best
        surface = np.argwhere(_boundary(mask)) + off
        max_d[r] = _max_diameter_3d(surface, geometry)
    return long_ax, short_ax, rec_slice, max_d


# --------------------------------------------------------------------------- from an image and a model


@dataclass
class LesionsResult:
    """What :func:`lesions_iter` returns.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per lesion (see the module docstring).
    lesions : Lesions
        Labels, classes, scores and class probabilities.
    probabilities : ndarray of float16 or None
        ``(K, (Z,) Y, X)`` class probabilities of the model (kept so that a
        new threshold or minimum size needs no new network run).
    geometry : Geometry
        Index -> world of the labels.
    model_name, device, device_reason : str
    seconds : float
    score_threshold : float
        The lowest lesion score the model's card recommends (:func:`lesion_defaults`; 0 = keep all), the
        default of :meth:`refilter`.
    """

    table: Any
    lesions: Lesions
    probabilities: np.ndarray | None
    geometry: Geometry
    model_name: str = ""
    device: str = ""
    device_reason: str = ""
    seconds: float = 0.0
    score_threshold: float = 0.0

    def refilter(self, *, score_threshold: float | None = None, min_size: float = 0.0) -> tuple[np.ndarray, Any]:
        """Labels and table of the lesions scoring >= ``score_threshold`` and at least ``min_size`` (world units).

        ``score_threshold`` None: the model card's (:attr:`score_threshold`, see :func:`lesion_defaults`).
        Ids keep their numbers (the table's ``id``), so a row still names its
        lesion; no network or connected-component run happens.
        """
        if score_threshold is None:
            score_threshold = self.score_threshold
        t = self.table
        size_col = next(c for c in t.columns if c.startswith(("volume_", "area_")) and c[-1] in "23")
        keep = (np.asarray(t["score"]) >= score_threshold) & (np.asarray(t[size_col]) >= min_size)
        ids = np.asarray(t["id"], np.int64)[keep]
        lut = np.zeros(len(self.lesions) + 1, self.lesions.labels.dtype)
        lut[ids] = ids
        return lut[self.lesions.labels], t[keep].reset_index(drop=True)


#: ``output.lesions`` of a semantic model's card: the operating point it recommends (threshold: None = arg-max;
#: tta: average the network over mirror images, see the engine's ``tta``).
LESION_DEFAULTS = {"threshold": None, "min_size": 0.0, "score_threshold": 0.0, "tta": False}


def lesion_defaults(card: Any) -> dict[str, float | None]:
    """The lesion operating point a semantic model's card recommends, filled with :data:`LESION_DEFAULTS`.

    The card's ``output.lesions`` may hold ``threshold`` (voxel probability in (0, 1), or null for the
    arg-max), ``min_size`` (smallest lesion in the image's world units cubed (3D) or squared (2D), e.g. mm³),
    ``score_threshold`` (lowest lesion score kept, in [0, 1]) and ``tta`` (true: probabilities averaged over
    the engine's mirror images, ~4x the time), chosen on data the model was not trained on.

    Raises
    ------
    ModelError
        A value of the wrong type or out of range (named with the model).
    """
    from ..errors import ModelError

    given = (card.output or {}).get("lesions") or {}
    if not isinstance(given, dict):
        raise ModelError(f"model {card.name!r}: output.lesions must be an object, got {type(given).__name__}")
    unknown = sorted(set(given) - set(LESION_DEFAULTS))
    if unknown:
        raise ModelError(f"model {card.name!r}: output.lesions has unknown keys {unknown} "
                         f"(known: {', '.join(LESION_DEFAULTS)})")
    out = {**LESION_DEFAULTS, **given}
    thr, size, score, tta = out["threshold"], out["min_size"], out["score_threshold"], out["tta"]
    ok = ((thr is None or (isinstance(thr, (int, float)) and 0.0 < thr < 1.0))
          and isinstance(size, (int, float)) and size >= 0.0
          and isinstance(score, (int, float)) and 0.0 <= score <= 1.0 and isinstance(tta, bool))
    if not ok:
        raise ModelError(f"model {card.name!r}: output.lesions {given} is out of range (threshold in (0, 1) or "
                         "null, min_size >= 0, score_threshold in [0, 1], tta true or false)")
    return {"threshold": None if thr is None else float(thr), "min_size": float(size),
            "score_threshold": float(score), "tta": tta}


def lesions_iter(
    image: Any,
    model: Any,
    geometry: Geometry | None = None,
    *,
    axes: str | None = None,
    threshold: float | None = None,
    min_size: float | None = None,
    connectivity: int | None = None,
    split_touching: bool = False,
    device: str = "auto",
    tile_size: int | None = None,
    cancel: Any = None,
    tta: bool | None = None,
) -> Any:
    """Run a semantic lesion model on an image and measure its lesions (a generator).

    Parameters
    ----------
    image : array-like or Volume
        ``(Z,) Y, X`` grey, or with channels (see the engine's ``axes``); a
        :class:`~napari_medseg.geometry.Volume` brings its geometry.
    model : str or path
        A semantic model (its card's ``kind`` is ``semantic``).
    geometry : Geometry, optional
        Index -> world of the spatial axes (default: the Volume's, else pixels).
    threshold, min_size, connectivity, split_touching
        See :func:`lesions_from_probabilities`; ``threshold`` / ``min_size`` None: the model card's
        (:func:`lesion_defaults`; arg-max / 0 when it has none).  The card's ``score_threshold`` becomes the
        result's :attr:`LesionsResult.score_threshold`.
    device, tile_size, cancel
        Passed to the engine.
    tta : bool, optional
        Average the probabilities over the engine's mirror images (~4x the time); None: the card's
        (``output.lesions.tta``, default False).

    Yields
    ------
    Progress

    Returns
    -------
    LesionsResult

    Raises
    ------
    ModelError
        If the model is not a semantic model.
    """
    import time

    from ..errors import ModelError
    from ..geometry import is_volume
    from ..inference.dispatch import segment_any_iter
    from ..models.registry import resolve_model
    from ..progress import Progress

    t0 = time.perf_counter()
    info = resolve_model(model)
    if info.card.kind != "semantic":
        raise ModelError(f"model {info.name!r} is a {info.card.kind} model; lesions need a semantic model")
    defaults = lesion_defaults(info.card)
    threshold = defaults["threshold"] if threshold is None else threshold
    min_size = defaults["min_size"] if min_size is None else min_size
    tta = defaults["tta"] if tta is None else bool(tta)
    intensity = None
    if is_volume(image):
        if geometry is None:
            geometry = image.spatial_geometry()
        data = image.data[0] if isinstance(image.data, list) else image.data
        axes = axes or image.axes
    else:
        data = image
    scale = units = None
    if geometry is not None and geometry.calibrated:
        scale, units = [float(v) for v in geometry.spacing], list(geometry.units)
    res = yield from segment_any_iter(data, info.path, axes=axes, scale=scale, units=units, device=device,
                                      tile_size=tile_size, return_probabilities=True, cancel=cancel, tta=tta)
    probs = np.asarray(res.probabilities)
    spatial = probs.shape[1:]
    if geometry is None:
        geometry = Geometry.identity("ZYX"[3 - len(spatial):])
    yield Progress(0, 1, "measuring lesions", {"stage": "lesions"})
    names = ["background", *[str(c) for c in info.card.output.get("class_names", [])[1:]]]
    if len(names) != probs.shape[0]:
        names = ["background"] + [f"class_{i}" for i in range(1, probs.shape[0])]
    les = lesions_from_probabilities(probs, geometry, names, threshold=threshold, min_size=min_size,
                                     connectivity=connectivity, split_touching=split_touching)
    if np.ndim(data) == len(spatial):
        intensity = np.asarray(data)
    table = lesion_table(les.labels, geometry, lesions=les, image=intensity)
    yield Progress(1, 1, "measuring lesions", {"stage": "lesions"})
    return LesionsResult(table, les, res.probabilities, geometry, res.model_name, res.device, res.device_reason,
                         time.perf_counter() - t0, defaults["score_threshold"])


# --------------------------------------------------------------------------- from existing labels

#: How :func:`lesions_from_labels` turns label values into lesions.
LABEL_SPLITS = ("auto", "ids", "components")


def lesions_from_labels(
    labels: Any,
    geometry: Geometry,
    *,
    split: str = "auto",
    class_names: dict[int, str] | None = None,
    connectivity: int | None = None,
    image: Any = None,
    image_name: str = "image",
) -> LesionsResult:
    """Existing lesion labels (a NIfTI mask, a DICOM-SEG...) as a :class:`LesionsResult`: measured, re-filterable.

    Parameters
    ----------
    labels : array-like of int, shape ((Z,) Y, X)
        0 background; never modified (the result keeps a reference with ``split="ids"``).
    geometry : Geometry
        Index -> world of ``labels`` (see :func:`lesion_table`).
    split : {"auto", "ids", "components"}
        ``ids``: one lesion per label value, ids kept; ``components``: every
        connected component of every value is a lesion (ids 1..n, values in
        order, each value's components in raster order), its class the
        value's name; ``auto``: components for a mask (one non-zero value),
        else ids.
    class_names : dict of int to str, optional
        Name of label values (e.g. DICOM-SEG segment labels).  Default
        ``"lesion"``, or ``"label <value>"`` for the components of several values.
    connectivity : int, optional
        Of the components: 1 (faces) to ndim (default, corners too).
    image, image_name
        Intensity image of the labels' shape (see :func:`lesion_table`).

    Returns
    -------
    LesionsResult
        Scores 1, no probabilities, ``model_name`` empty.

    Raises
    ------
    ParameterError
        Labels that are not a 2D/3D non-negative integer image, an unknown ``split``.
    """
    import time

    from skimage.measure import label as cc_label

    t0 = time.perf_counter()
    lab = np.asarray(labels)
    if lab.ndim not in (2, 3) or not np.issubdtype(lab.dtype, np.integer):
        raise ParameterError(f"lesion labels must be a 2D/3D integer image, got {lab.dtype} {lab.shape}")
    if split not in LABEL_SPLITS:
        raise ParameterError(f"split must be one of {LABEL_SPLITS}, got {split!r}")
    if lab.size and lab.min() < 0:
        raise ParameterError("lesion labels must not be negative")
    values = np.unique(lab)
    values = values[values > 0]
    names = dict(class_names or {})
    mode = ("components" if values.size <= 1 else "ids") if split == "auto" else split
    if mode == "ids":
        n = int(values.max()) if values.size else 0
        classes = np.asarray([names.get(v, "lesion") for v in range(1, n + 1)], dtype=object)
        out = lab
    else:
        conn = lab.ndim if connectivity is None else int(connectivity)
        if not 1 <= conn <= lab.ndim:
            raise ParameterError(f"connectivity must be 1..{lab.ndim}, got {connectivity}")
        out = np.zeros(lab.shape, np.int64)
        cls: list[str] = []
        for v in values.tolist():
            comp = cc_label(lab == v, connectivity=conn)
            k = int(comp.max())
            nz = comp > 0
            out[nz] = comp[nz] + len(cls)
            cls += [names.get(v, "lesion" if values.size == 1 else f"label {v}")] * k
        n = len(cls)
        out = out.astype(np.uint16 if n < 65535 else np.uint32)
        classes = np.asarray(cls, dtype=object)
    ones = np.ones(n)
    les = Lesions(out, classes, ones, ones.copy(), np.zeros((n, 0)), [])
    present = np.unique(out)
    present = present[present > 0]
    table = lesion_table(out, geometry, classes=classes[present - 1] if present.size else [], image=image,
                         image_name=image_name)
    return LesionsResult(table, les, None, geometry, seconds=time.perf_counter() - t0)


__all__ = ["LABEL_SPLITS", "LEADING_COLUMNS", "Lesions", "LesionsResult", "lesion_table", "lesions_from_labels",
           "lesions_from_probabilities", "lesions_iter", "recist_axes_2d"]
