"""Per-object measurements of a label image, in physical units, vectorised.

:func:`measure` turns an integer label image (2D ``YX`` or 3D ``ZYX``, 0 =
background, ids need not be consecutive) and optional intensity images into a
table with one row per object: centroid, bounding box, area or volume,
equivalent diameter, perimeter (2D) or surface area (3D), eccentricity (2D),
solidity, major/minor axis lengths and mean/min/max/std intensity of every
channel.  Lengths are in the layer's physical units, with the unit in the
column name (``area_um2``, ``centroid_y_um``); anisotropic spacing is honoured.

The values follow :func:`skimage.measure.regionprops` definitions (the tests
compare every column with it), but are computed for all objects at once:
one pass over the foreground pixels with ``np.bincount`` / ``ufunc.at``
(counts, centroids, second moments, intensity statistics), a vectorised
border-pixel classification for the perimeter, and a vectorised exact
lattice-point count of each object's convex hull for the solidity.  Only the
3D surface area and 3D solidity loop over objects (marching cubes and Qhull on
each object's bounding box).  On 10,000 objects in a 4096 x 4096 image this is
several times faster than ``regionprops_table`` (``benchmarks/bench_measure.py``).

Column names (2D; 3D adds ``z`` columns, replaces ``area`` by ``volume`` and
``perimeter`` by ``surface_area``; ``um`` stands for the unit)::

    label                              object id
    centroid_y, centroid_x             centroid, pixel index (float)
    centroid_y_um, centroid_x_um       centroid, world position (translate + index * spacing)
    bbox_y0, bbox_x0, bbox_y1, bbox_x1 bounding box, pixel index, half-open [y0, y1)
    bbox_y0_um, ..., bbox_x1_um        bounding box edges in the world (outer pixel edges)

(the world columns ``centroid_*_<unit>`` and ``bbox_*_<unit>`` only with a
physical unit: in pixel units they would repeat the pixel columns, shifted
by half a pixel for the box)
    n_pixels                           number of pixels (voxels)
    area_um2 / volume_um3              n_pixels * prod(spacing)
    equivalent_diameter_um             diameter of the disc (ball) of the same area (volume)
    perimeter_um / surface_area_um2    see :func:`perimeter_weights`; marching cubes in 3D
    eccentricity                       2D only, of the ellipse with the same second moments
    solidity                           n_pixels / pixels in the convex hull
    major_axis_length_um, minor_axis_length_um
    mean_<ch>, min_<ch>, max_<ch>, std_<ch>   intensity of each channel (std with ddof=0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..geometry import Geometry
from ..geometry.units import ascii_unit, common_unit, per_axis

#: Measurement groups :func:`measure` can compute (all by default).
PROPERTIES: tuple[str, ...] = (
    "centroid",
    "bbox",
    "area",  # n_pixels and area (2D) / volume (3D)
    "equivalent_diameter",
    "perimeter",  # perimeter (2D) / surface area (3D)
    "eccentricity",  # 2D only
    "solidity",
    "axis_lengths",
    "intensity",
)

def unit_suffix(units: str | Sequence[str] | None, ndim: int, default: str = "px") -> str:
    """ASCII suffix for column names from a unit name or one unit per axis.

    ``"µm"`` -> ``"um"``, ``"millimeter"`` -> ``"mm"``, ``"pixel"`` -> ``"px"``;
    other names are lower-cased with non-alphanumerics removed.  One unit per
    axis must name the same unit on every axis.

    Raises
    ------
    ParameterError
        If the axes have different units or a name is empty.
    """
    if units is None:
        return default
    per = per_axis(units, ndim)
    return ascii_unit(common_unit(per))


# --------------------------------------------------------------------------- input checks


def _check_labels(labels: Any) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ParameterError(f"labels must be an integer label image, got dtype {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise ParameterError(
            f"labels must be 2D (YX) or 3D (ZYX), got {labels.ndim} dimensions {labels.shape}; "
            "measure each time point or channel separately"
        )
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ParameterError("labels has negative values; object ids must be >= 0")
    return labels


def _check_vector(name: str, value: Any, ndim: int, default: float, positive: bool) -> np.ndarray:
    if value is None:
        return np.full(ndim, float(default))
    if np.isscalar(value):
        value = [value] * ndim
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.size != ndim:
        raise ParameterError(f"{name} has {arr.size} entries, expected {ndim} (one per axis of labels)")
    if not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
        raise ParameterError(f"{name} must be finite{' and > 0' if positive else ''}, got {tuple(arr)}")
    return arr


def intensity_channels(
    image: Any,
    shape: tuple[int, ...],
    channel_names: Sequence[str] | None,
    channel_axis: int | None,
) -> list[tuple[str, np.ndarray]]:
    """Normalise the ``image`` argument of :func:`measure` to ``[(name, array of shape)]``."""
    if image is None:
        return []
    if isinstance(image, Mapping):
        items = list(image.items())
    elif isinstance(image, (list, tuple)) and all(
        isinstance(it, tuple) and len(it) == 2 and isinstance(it[0], str) for it in image
    ):
        items = list(image)
    else:
        items = None
    if items is not None:
        if channel_names is not None:
            raise ParameterError("channel_names is only used with a single image array; names come from the pairs")
        out: list[tuple[str, np.ndarray]] = []
        for name, arr in items:
            sub = intensity_channels(arr, shape, None, channel_axis)
            if len(sub) == 1:
                out.append((str(name), sub[0][1]))
            else:
                out.extend((f"{name}_{cname}", a) for cname, a in sub)
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise ParameterError(f"channel names must be unique, got {names}")
        return out

    arr = np.asarray(image)
    if arr.shape == shape:
        chans = [arr]
    elif arr.ndim == len(shape) + 1:
        if channel_axis is None:
            last, first = arr.shape[:-1] == shape, arr.shape[1:] == shape
            if last and first:
                raise ParameterError(
                    f"image {arr.shape} could have its channels first or last for labels {shape}; "
                    "give channel_axis"
                )
            if not (last or first):
                raise ParameterError(f"image shape {arr.shape} does not match labels {shape} plus a channel axis")
            channel_axis = -1 if last else 0
        moved = np.moveaxis(arr, channel_axis, 0)
        if moved.shape[1:] != shape:
            raise ParameterError(
                f"image shape {arr.shape} with channel_axis={channel_axis} does not match labels {shape}"
            )
        chans = list(moved)
    else:
        raise ParameterError(
            f"image shape {arr.shape} does not match labels {shape} (with at most one channel axis)"
        )
    if channel_names is not None:
        names = [str(n) for n in channel_names]
        if len(names) != len(chans):
            raise ParameterError(f"{len(names)} channel_names for {len(chans)} channels")
    elif len(chans) == 1:
        names = ["intensity"]
    else:
        names = [f"ch{i}" for i in range(len(chans))]
    if len(set(names)) != len(names):
        raise ParameterError(f"channel names must be unique, got {names}")
    for name, c in zip(names, chans, strict=False):
        if not (np.issubdtype(c.dtype, np.number) or c.dtype == bool) or np.iscomplexobj(c):
            raise ParameterError(f"intensity image {name!r} must be real numbers, got dtype {c.dtype}")
    return list(zip(names, chans, strict=False))


# --------------------------------------------------------------------------- pixel table


class _Pixels:
    """Foreground pixels of a label image in raster order, with their object index.

    Attributes: ``ids`` (n,) object ids sorted; ``flat`` (N,) flat indices into
    the label image; ``obj`` (N,) object index in ``ids`` of each pixel;
    ``coords`` list of (N,) int64 arrays, one per axis; ``counts`` (n,).
    """

    def __init__(self, labels: np.ndarray):
        shape = labels.shape
        lab = np.ascontiguousarray(labels).reshape(-1, shape[-1])  # rows x last axis
        per_row = np.count_nonzero(lab, axis=1)
        flat = np.flatnonzero(lab)
        values = lab.ravel()[flat]
        row = np.repeat(np.arange(lab.shape[0], dtype=np.int64), per_row)
        last = flat - row * shape[-1]
        lead = np.unravel_index(np.arange(lab.shape[0], dtype=np.int64), shape[:-1])
        self.coords = [c[row] for c in lead] + [last]
        self.flat = flat
        # object ids -> 0..n-1; a lookup table is faster than np.unique when ids are dense
        vmax = int(values.max()) if values.size else 0
        if vmax <= 4 * values.size + 1_000_000:
            present = np.bincount(values, minlength=vmax + 1) > 0
            present[0] = False
            self.ids = np.flatnonzero(present).astype(np.int64)
            lut = np.zeros(vmax + 1, dtype=np.int64)
            lut[self.ids] = np.arange(self.ids.size)
            self.obj = lut[values]
        else:
            self.ids, self.obj = np.unique(values, return_inverse=True)
            self.ids = self.ids.astype(np.int64)
            self.obj = self.obj.astype(np.int64)
        self.n = self.ids.size
        self.counts = np.bincount(self.obj, minlength=self.n).astype(np.int64)

    def sum(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.obj, weights=weights, minlength=self.n)

    def reduce(self, ufunc: np.ufunc, values: np.ndarray, init: float) -> np.ndarray:
        out = np.full(self.n, init, dtype=values.dtype)
        ufunc.at(out, self.obj, values)
        return out


# --------------------------------------------------------------------------- 2D perimeter


def perimeter_weights(n_hv: tuple[np.ndarray, np.ndarray], n_diag: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Length contributed by each border pixel to the perimeter (2D).

    This is the definition of :func:`skimage.measure.perimeter` (4-connected
    border, weights 1, sqrt(2), (1 + sqrt(2)) / 2 by the pattern of border
    neighbours), generalised to anisotropic pixels: a pixel contributes half of
    the length of the links to its border neighbours, a link along Y being
    ``spacing[0]`` long, along X ``spacing[1]``, a diagonal ``hypot`` of both.
    With isotropic spacing ``s`` this equals skimage's weights times ``s``.

    Parameters
    ----------
    n_hv : (ndarray, ndarray)
        Number of 4-neighbours (0-2 each) along X (horizontal) and along Y
        (vertical) that are border pixels of the same object.
    n_diag : ndarray
        Number of diagonal neighbours (0-4) that are border pixels of the same object.
    spacing : (sy, sx)
        Pixel size along Y and X.

    Returns
    -------
    ndarray of float64
    """
    nh, nv = (np.asarray(a) for a in n_hv)
    nd = np.asarray(n_diag)
    sy, sx = float(spacing[0]), float(spacing[1])
    diag = float(np.hypot(sy, sx))
    n4 = nh + nv
    links = nh * sx + nv * sy  # sum of the lengths of the 4-links
    w = np.zeros(n4.shape, dtype=np.float64)
    # skimage codes 5, 7, 15, 17, 25, 27 (weight 1): 2-3 four-neighbours, at most 2 diagonal
    m = ((n4 == 2) | (n4 == 3)) & (nd <= 2)
    w[m] = links[m] / n4[m]
    # codes 13, 23 (weight (1 + sqrt 2) / 2): one four-neighbour, 1-2 diagonal
    m = (n4 == 1) & ((nd == 1) | (nd == 2))
    w[m] = links[m] / 2 + diag / 2
    # codes 21, 33 (weight sqrt 2): two diagonal and no four-neighbour, or one and three
    m = ((n4 == 0) & (nd == 2)) | ((n4 == 1) & (nd == 3))
    w[m] = diag
    return w


def _perimeter_2d(labels: np.ndarray, px: _Pixels, spacing: np.ndarray) -> np.ndarray:
    """Perimeter of every object (skimage definition, 4-connected border), vectorised.

    A border pixel has a 4-neighbour outside its object; each border pixel
    adds :func:`perimeter_weights` of its same-object border neighbours.
    """
    h, w = labels.shape
    wp = w + 2
    pad = np.zeros((h + 2, wp), dtype=labels.dtype)
    pad[1:-1, 1:-1] = labels
    core = pad[1:-1, 1:-1]
    border = core != pad[:-2, 1:-1]
    border |= core != pad[2:, 1:-1]
    border |= core != pad[1:-1, :-2]
    border |= core != pad[1:-1, 2:]
    border &= core != 0
    is_border = np.zeros(pad.shape, dtype=bool)
    is_border[1:-1, 1:-1] = border
    padf, bf = pad.ravel(), is_border.ravel()
    pb = np.flatnonzero(bf)
    lb = padf[pb]

    def count(offsets: Sequence[int]) -> np.ndarray:
        n = np.zeros(pb.size, dtype=np.int8)
        for off in offsets:
            q = pb + off
            n += (padf[q] == lb) & bf[q]
        return n

    nh = count((-1, 1))
    nv = count((-wp, wp))
    nd = count((-wp - 1, -wp + 1, wp - 1, wp + 1))
    weights = perimeter_weights((nh, nv), nd, spacing)
    return np.bincount(np.searchsorted(px.ids, lb), weights=weights, minlength=px.n)


# --------------------------------------------------------------------------- 2D convex hull


def _lower_hull(values: np.ndarray, start: np.ndarray, length: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower convex hull of many integer point sequences at once (monotone chain).

    Sequence ``o`` holds points ``(k, values[start[o] + k])`` for ``k < length[o]``
    where ``valid`` is set.  All sequences advance in lockstep, so the Python
    loop runs ``max(length)`` times (plus pops), each step vectorised over the
    sequences still running.  Collinear points are dropped.

    Returns ``(stack, size)``: the hull of sequence ``o`` is the local indices
    ``stack[start[o] : start[o] + size[o]]``, increasing.
    """
    n = length.size
    order = np.argsort(-length, kind="stable")
    neg_sorted = -length[order]
    stack = np.zeros(values.size, dtype=np.int64)
    size = np.zeros(n, dtype=np.int64)
    for k in range(int(length.max()) if n else 0):
        act = order[: np.searchsorted(neg_sorted, -k, side="left")]  # sequences with length > k
        act = act[valid[start[act] + k]]
        if act.size == 0:
            continue
        cand, xc = act, values[start[act] + k]
        while cand.size:
            sel = size[cand] >= 2
            cand, xc = cand[sel], xc[sel]
            if not cand.size:
                break
            s0 = start[cand] + size[cand]
            a, b = stack[s0 - 2], stack[s0 - 1]
            xa, xb = values[start[cand] + a], values[start[cand] + b]
            # pop b unless it lies strictly below the segment from a to the new point
            pop = (xb - xa) * (k - a) >= (xc - xa) * (b - a)
            cand, xc = cand[pop], xc[pop]
            size[cand] -= 1
        stack[start[act] + size[act]] = k
        size[act] += 1
    return stack, size


def _ceil_envelope(values: np.ndarray, start: np.ndarray, length: np.ndarray, valid: np.ndarray,
                   obj_q: np.ndarray, k_q: np.ndarray) -> np.ndarray:
    """``ceil(env(k) / 2)`` of the lower convex envelope at query points, exactly (integers)."""
    stack, size = _lower_hull(values, start, length, valid)
    owner = np.repeat(np.arange(length.size), length)
    local = np.arange(values.size) - start[owner]
    keep = local < size[owner]
    hull_k = stack[keep]
    hull_pos = start[owner[keep]] + hull_k  # increasing
    q = start[obj_q] + k_q
    seg = np.searchsorted(hull_pos, q, side="right") - 1
    pa, pb = hull_pos[seg], hull_pos[seg + 1]
    ka, kb = pa - start[obj_q], pb - start[obj_q]
    den = 2 * (kb - ka)
    num = values[pa] * (kb - ka) + (values[pb] - values[pa]) * (k_q - ka)
    return -((-num) // den)


def _convex_counts_2d(px: _Pixels, bbox_lo: np.ndarray, bbox_hi: np.ndarray) -> np.ndarray:
    """Number of pixels in each object's convex hull image, as :func:`skimage.morphology.convex_hull_image`.

    skimage takes the convex hull of every object pixel's four edge midpoints
    (pixel centre +- 0.5 along each axis) and keeps the pixel centres inside
    it or on its boundary.  Per row of an object only the leftmost and
    rightmost pixels matter, so the hull's left boundary ``L(y)`` is the lower
    convex envelope of the points ``(y - 0.5, xl)``, ``(y, xl - 0.5)``,
    ``(y + 0.5, xl)`` over the rows (right boundary likewise).  In doubled
    coordinates all these are integers, so ``ceil(L)`` and ``floor(R)`` at
    every pixel row are computed exactly, and the count is their sum.  This is
    written out instead of calling ``convex_hull_image`` per object because
    that loop dominates ``regionprops`` time; the tests check equality.
    """
    n = px.n
    y, x = px.coords
    y0 = bbox_lo[:, 0]
    height = bbox_hi[:, 0] - y0
    row_start = np.concatenate([[0], np.cumsum(height)[:-1]])
    key = row_start[px.obj] + (y - y0[px.obj])
    n_rows = int(height.sum())
    big = np.iinfo(np.int64).max // 8
    xl = np.full(n_rows, big, dtype=np.int64)
    xr = np.full(n_rows, -big, dtype=np.int64)
    np.minimum.at(xl, key, x)
    np.maximum.at(xr, key, x)
    present = xl != big

    # samples k = 0..2h per object: k = 2i + 1 is pixel row i, k = 2i its upper edge
    length = 2 * height + 1
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    row_obj = np.repeat(np.arange(n), height)
    row_i = np.arange(n_rows) - row_start[row_obj]
    odd = start[row_obj] + 2 * row_i + 1
    total = int(length.sum())
    left = np.full(total, big, dtype=np.int64)
    right = np.full(total, big, dtype=np.int64)  # holds -2 * x of the right boundary
    r_ok = np.flatnonzero(present)
    left[odd[r_ok]] = 2 * xl[r_ok] - 1
    right[odd[r_ok]] = -(2 * xr[r_ok] + 1)
    for edge in (odd[r_ok] - 1, odd[r_ok] + 1):
        np.minimum.at(left, edge, 2 * xl[r_ok])
        np.minimum.at(right, edge, -2 * xr[r_ok])
    valid_l = left != big
    valid_r = right != big

    k_q = 2 * row_i + 1
    lo = _ceil_envelope(left, start, length, valid_l, row_obj, k_q)  # first column inside
    hi = -_ceil_envelope(right, start, length, valid_r, row_obj, k_q)  # last column inside
    per_row = np.maximum(hi - lo + 1, 0)
    return np.bincount(row_obj, weights=per_row, minlength=n).astype(np.int64)


# --------------------------------------------------------------------------- 3D per-object


def _convex_count_3d(mask: np.ndarray) -> int:
    """Voxels in the convex hull image of a 3D mask (skimage's ``convex_hull_image``).

    Same algorithm as skimage (hull of the voxels' face centres, voxel centres
    inside within 1e-10), except that flat (coplanar) objects, for which skimage
    returns an empty hull, get the hull of their face centres as well.
    """
    from scipy.spatial import ConvexHull, QhullError

    coords = np.argwhere(mask).astype(np.float64)
    try:
        hull0 = ConvexHull(coords)
        coords = hull0.points[hull0.vertices]
    except (QhullError, ValueError):
        pass
    offsets = np.zeros((6, 3))
    for v, (axis, off) in enumerate((a, o) for a in range(3) for o in (-0.5, 0.5)):
        offsets[v, axis] = off
    pts = np.unique((coords[:, None, :] + offsets).reshape(-1, 3), axis=0)
    hull = ConvexHull(pts)
    grid = np.reshape(np.mgrid[tuple(slice(0, s) for s in mask.shape)], (3, -1)).astype(np.float64)
    inside = np.ones(grid.shape[1], dtype=bool)
    for eq in hull.equations:
        inside &= (eq[:3] @ grid + eq[3]) < 1e-10
    return int(inside.sum())


def _surface_area_3d(mask: np.ndarray, spacing: np.ndarray) -> float:
    """Area of the marching-cubes surface (level 0.5) of a 3D mask, in squared physical units.

    This is PyRadiomics' ``SurfaceArea`` definition.  Exact for boxes (faces,
    45-degree edge strips, corner triangles); on smooth objects the staircase
    makes it about 8 % larger than the sphere of the same volume.
    """
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    # vertices sit on half-voxel positions (exact in float32); scale and sum in float64
    return float(mesh_surface_area(verts.astype(np.float64) * np.asarray(spacing, dtype=np.float64), faces))


# --------------------------------------------------------------------------- public


def measure(
    labels: Any,
    image: Any = None,
    spacing: Sequence[float] | float | None = None,
    units: str | Sequence[str] | None = None,
    channel_names: Sequence[str] | None = None,
    properties: Sequence[str] = PROPERTIES,
    *,
    translate: Sequence[float] | None = None,
    geometry: Geometry | None = None,
    channel_axis: int | None = None,
    as_dict: bool = False,
) -> Any:
    """Measure every object of a label image; one row per object.

    Parameters
    ----------
    labels : array-like of int, shape (Y, X) or (Z, Y, X)
        Label image, 0 = background; ids need not be consecutive.  numpy,
        dask or zarr (read into memory).
    image : array-like, mapping or list of (name, array), optional
        Intensity image(s) for ``mean_/min_/max_/std_<channel>`` columns.  An
        array of the labels' shape is one channel (named ``"intensity"``
        unless ``channel_names`` says otherwise); an array with one more axis
        has channels along ``channel_axis`` (guessed first or last when
        unambiguous; named ``ch0, ch1...`` or by ``channel_names``).  A mapping
        or list of ``(name, array)`` pairs names each array; an array with
        channels in it gives ``<name>_ch0...``.
    spacing : float or sequence of float, optional
        Pixel size along each axis of ``labels`` (Z, Y, X order), in ``units``.
        Default 1.
    units : str or sequence of str, optional
        Physical unit (``"µm"``, ``"mm"``...; one per axis allowed if all are
        equal).  Default ``"px"`` when neither ``spacing`` nor ``translate`` is
        given, else ``"µm"``.
    channel_names : sequence of str, optional
        Names of the channels of a single ``image`` array.
    properties : sequence of str
        Which groups of columns to compute, from :data:`PROPERTIES`
        (``"eccentricity"`` is ignored in 3D).  ``label`` is always present.
    translate : sequence of float, optional
        World position of the centre of pixel 0 (napari's ``translate``), in
        ``units``.  Default 0.
    geometry : Geometry, optional
        The labels' full index -> world mapping (axes ``"YX"`` or ``"ZYX"``),
        e.g. a DICOM/NIfTI series' oblique affine in LPS mm.  Replaces
        ``spacing``, ``translate`` and ``units`` (give none of them with it).
        Sizes come from the affine's linear part: lengths along each axis from
        its column norms, area/volume of a pixel from ``|det|``; the world
        columns (``centroid_z_mm``...) are the affine applied to the pixel
        index (patient LPS ``(z, y, x)`` for radiology), and the world
        bounding box is that of the mapped pixel-box corners.
    channel_axis : int, optional
        Channel axis of a multi-channel ``image`` array.
    as_dict : bool
        Return ``dict[str, ndarray]`` instead of a ``pandas.DataFrame``.

    Returns
    -------
    pandas.DataFrame or dict of str to ndarray
        One row per object, sorted by label id; columns as listed in the
        module docstring (e.g. ``area_um2``, ``centroid_y_um``,
        ``mean_DAPI``).  Lengths are in ``units``, areas in ``units``
        squared, volumes cubed.  Intensity statistics are float64.

    Raises
    ------
    ParameterError
        If ``labels`` is not a 2D/3D non-negative integer image, or the other
        arguments do not match it.

    Notes
    -----
    Definitions follow :func:`skimage.measure.regionprops` with ``spacing``:
    centroid and second moments of the pixel centres, ``axis_major_length`` /
    ``axis_minor_length`` / ``eccentricity`` from the inertia tensor,
    ``equivalent_diameter_area``, ``solidity`` (convex hull of pixel edge
    midpoints), ``perimeter`` (4-connected border, generalised to anisotropic
    pixels by :func:`perimeter_weights`, where skimage refuses).  The 3D
    surface area is the marching-cubes mesh (level 0.5) of each object padded
    with background, as PyRadiomics' ``SurfaceArea`` (exact for boxes, about
    8 % above the true area of smooth objects).  skimage's 3D solidity is
    infinite for flat (single-plane) objects; here their hull is built from
    the voxel face centres as for all others, so it stays finite.

    Examples
    --------
    >>> lab = np.zeros((5, 6), int); lab[1:4, 1:5] = 7
    >>> t = measure(lab, spacing=(2.0, 0.5), units="µm")
    >>> float(t["area_um2"][0]), float(t["centroid_y_um"][0])
    (12.0, 4.0)
    """
    labels = _check_labels(labels)
    ndim = labels.ndim
    props = list(properties)
    unknown = [p for p in props if p not in PROPERTIES]
    if unknown:
        raise ParameterError(f"unknown properties {unknown}; choose from {list(PROPERTIES)}")
    if geometry is not None:
        if spacing is not None or translate is not None or units is not None:
            raise ParameterError("give either geometry or spacing/translate/units, not both")
        if not isinstance(geometry, Geometry) or geometry.ndim != ndim or set(geometry.axes) - set("ZYX"):
            raise ParameterError(f"geometry {geometry!r} does not fit {ndim}D labels (axes YX or ZYX)")
        unit = ascii_unit(geometry.length_unit)
        sp = geometry.spacing
        cell = geometry.voxel_size
        to_world = geometry.index_to_world
    else:
        default_unit = "px" if spacing is None and translate is None else "um"
        unit = unit_suffix(units, ndim, default=default_unit)
        sp = _check_vector("spacing", spacing, ndim, 1.0, positive=True)
        tr = _check_vector("translate", translate, ndim, 0.0, positive=False)
        cell = float(np.prod(sp))

        def to_world(idx: np.ndarray) -> np.ndarray:
            return tr + idx * sp
    channels = intensity_channels(image, labels.shape, channel_names, channel_axis) if "intensity" in props else []
    axes = "zyx"[3 - ndim:]

    px = _Pixels(labels)
    n = px.n
    cols: dict[str, np.ndarray] = {"label": px.ids}
    counts = px.counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = np.stack([px.sum(c) / counts for c in px.coords], axis=1) if n else np.zeros((0, ndim))
    need_bbox = any(p in props for p in ("bbox", "solidity", "perimeter"))
    if need_bbox:
        lo = np.stack([px.reduce(np.minimum, c, np.iinfo(np.int64).max) for c in px.coords], axis=1)
        hi = np.stack([px.reduce(np.maximum, c, -1) for c in px.coords], axis=1) + 1

    world_cols = unit != "px"  # a pixel grid's world columns would repeat the pixel ones
    if "centroid" in props:
        for i, a in enumerate(axes):
            cols[f"centroid_{a}"] = centroid[:, i]
        if world_cols:
            world = to_world(centroid) if n else np.zeros((0, ndim))
            for i, a in enumerate(axes):
                cols[f"centroid_{a}_{unit}"] = world[:, i]
    if "bbox" in props:
        for j, arr in enumerate((lo, hi)):
            for i, a in enumerate(axes):
                cols[f"bbox_{a}{j}"] = arr[:, i].astype(np.int64)
        if world_cols:
            w_lo, w_hi = _world_box(to_world, lo - 0.5, hi - 0.5)
            for j, arr in enumerate((w_lo, w_hi)):
                for i, a in enumerate(axes):
                    cols[f"bbox_{a}{j}_{unit}"] = arr[:, i]

    size = counts * cell
    size_name = f"area_{unit}2" if ndim == 2 else f"volume_{unit}3"
    if "area" in props:
        cols["n_pixels"] = px.counts
        cols[size_name] = size
    if "equivalent_diameter" in props:
        cols[f"equivalent_diameter_{unit}"] = (2 * ndim * size / np.pi) ** (1 / ndim)
    if "perimeter" in props:
        if ndim == 2:
            cols[f"perimeter_{unit}"] = _perimeter_2d(labels, px, sp)
        else:
            cols[f"surface_area_{unit}2"] = np.array(
                [_surface_area_3d(labels[_box(lo[i], hi[i])] == px.ids[i], sp) for i in range(n)], dtype=np.float64
            )

    if any(p in props for p in ("eccentricity", "axis_lengths")):
        ev = _inertia_eigvals(px, centroid, sp)
        if "eccentricity" in props and ndim == 2:
            l1, l2 = ev[:, 0], ev[:, 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                cols["eccentricity"] = np.where(l1 == 0, 0.0, np.sqrt(1 - l2 / np.where(l1 == 0, 1, l1)))
        if "axis_lengths" in props:
            if ndim == 2:
                major, minor = 4 * np.sqrt(ev[:, 0]), 4 * np.sqrt(ev[:, -1])
            else:
                major = np.sqrt(np.maximum(0, 10 * (ev[:, 0] + ev[:, 1] - ev[:, 2])))
                minor = np.sqrt(np.maximum(0, 10 * (-ev[:, 0] + ev[:, 1] + ev[:, 2])))
            cols[f"major_axis_length_{unit}"] = major
            cols[f"minor_axis_length_{unit}"] = minor

    if "solidity" in props:
        if ndim == 2:
            hull = _convex_counts_2d(px, lo, hi) if n else np.zeros(0, np.int64)
        else:
            hull = np.array([_convex_count_3d(labels[_box(lo[i], hi[i])] == px.ids[i]) for i in range(n)], np.int64)
        cols["solidity"] = counts / hull

    for name, chan in channels:
        vals = np.asarray(chan).ravel()[px.flat].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = px.sum(vals) / counts
            std = np.sqrt(px.sum((vals - mean[px.obj]) ** 2) / counts)
        cols[f"mean_{name}"] = mean
        cols[f"min_{name}"] = px.reduce(np.minimum, vals, np.inf)
        cols[f"max_{name}"] = px.reduce(np.maximum, vals, -np.inf)
        cols[f"std_{name}"] = std

    if as_dict:
        return cols
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - pandas comes with napari
        raise ParameterError("pandas is not installed; call measure(..., as_dict=True)") from err
    return pd.DataFrame(cols)


def _world_box(to_world: Any, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World min/max over the ``2**ndim`` corners of index boxes ``[lo, hi]`` (pixel edges), ``(n, ndim)`` each."""
    n, ndim = lo.shape
    if n == 0:
        return np.zeros((0, ndim)), np.zeros((0, ndim))
    corners = []
    for bits in np.ndindex(*(2,) * ndim):
        pick = np.array(bits, bool)
        corners.append(to_world(np.where(pick, hi, lo).astype(np.float64)))
    stack = np.stack(corners)
    return stack.min(axis=0), stack.max(axis=0)


def _box(lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=False))


def _inertia_eigvals(px: _Pixels, centroid: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending, clipped at 0) of each object's inertia tensor, as skimage.

    Central second moments are summed in physical units in two passes
    (centroid first), so large coordinates lose no precision.
    """
    ndim = len(px.coords)
    counts = px.counts.astype(np.float64)
    d = [(c - np.ascontiguousarray(centroid[:, i])[px.obj]) * spacing[i] for i, c in enumerate(px.coords)]
    cov = np.empty((px.n, ndim, ndim))
    for i in range(ndim):
        for j in range(i, ndim):
            cov[:, i, j] = cov[:, j, i] = px.sum(d[i] * d[j]) / counts
    # skimage: T_ii = sum of the other axes' second moments, T_ij = -mu_ij
    tensor = -cov
    trace = np.trace(cov, axis1=1, axis2=2)
    for i in range(ndim):
        tensor[:, i, i] = trace - cov[:, i, i]
    if px.n == 0:
        return np.zeros((0, ndim))
    ev = np.linalg.eigvalsh(tensor)
    np.clip(ev, 0, None, out=ev)
    return ev[:, ::-1]


def features(table: Any) -> dict[str, np.ndarray]:
    """A measurement table as ``dict[str, ndarray]`` (e.g. for a napari layer's ``features``).

    Accepts a ``pandas.DataFrame`` or a mapping of columns and returns plain
    numpy arrays, in column order.
    """
    if hasattr(table, "columns") and hasattr(table, "__getitem__"):
        return {str(c): np.asarray(table[c]) for c in table.columns}
    if isinstance(table, Mapping):
        return {str(k): np.asarray(v) for k, v in table.items()}
    raise ParameterError(f"expected a DataFrame or a mapping of columns, got {type(table).__name__}")
