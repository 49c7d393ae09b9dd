"""Slice ordering and the index -> patient (LPS) affine of a DICOM image stack.

Pure numpy, no pydicom.  Conventions (the same as ``read_dicom``):

* a stack is indexed ``(slice k, row i, column j)`` (plus time ``t`` first for 4D);
* ``ImageOrientationPatient[:3]`` (row cosine) is the direction of increasing
  *column* j, ``[3:]`` (column cosine) the direction of increasing *row* i;
* slices are sorted by the projection of ImagePositionPatient on the slice
  normal ``cross(row_cosine, column_cosine)``, ascending; InstanceNumber and file
  names are never used for the spatial order (like ITK/GDCM's IPP sorter and
  dcm2niix, which also sort by distance along the normal);
* world coordinates are patient LPS millimetres ordered ``(z, y, x)`` so that
  they line up with the ``(k, i, j)`` index order in napari.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ReaderError

#: Frames closer than this along the normal (mm) share one slice position.
POSITION_TOL_MM = 0.01
#: A gap larger than this many median spacings means missing slices.
GAP_FACTOR = 1.5
#: Spacings that differ from the median by more than this fraction are "uneven".
UNEVEN_REL_TOL = 0.01
UNEVEN_ABS_TOL_MM = 1e-3


def slice_normal(iop: np.ndarray) -> np.ndarray:
    """Unit normal ``cross(row_cosine, column_cosine)`` of an ImageOrientationPatient, LPS (x, y, z)."""
    iop = np.asarray(iop, dtype=float)
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    if not np.isfinite(norm) or norm < 1e-6:
        raise ReaderError(f"ImageOrientationPatient {iop.tolist()} has parallel or zero row/column cosines")
    return n / norm


def lps_affine_zyx(origin: np.ndarray, iop: np.ndarray, pixel_spacing: tuple[float, float],
                   step: np.ndarray) -> np.ndarray:
    """4x4 affine from index ``(k, i, j)`` to LPS ``(z, y, x)`` mm.

    Parameters
    ----------
    origin : (3,) array
        ImagePositionPatient (x, y, z) of slice 0, i.e. the centre of pixel (0, 0, 0).
    iop : (6,) array
        ImageOrientationPatient: row cosine then column cosine.
    pixel_spacing : (float, float)
        DICOM PixelSpacing: (distance between rows, distance between columns) mm.
    step : (3,) array
        Vector (x, y, z) from slice k to slice k + 1, mm (not necessarily along
        the normal: a gantry tilt gives a sheared affine).
    """
    iop = np.asarray(iop, dtype=float)
    m = np.column_stack([np.asarray(step, float), pixel_spacing[0] * iop[3:], pixel_spacing[1] * iop[:3]])
    a = np.eye(4)
    a[:3, :3] = m[::-1]  # rows x, y, z -> z, y, x
    a[:3, 3] = np.asarray(origin, dtype=float)[::-1]
    return a


def time_affine(spatial: np.ndarray, dt: float) -> np.ndarray:
    """5x5 affine for ``(t, k, i, j)``: time first with step ``dt``, then the 4x4 ``spatial``."""
    a = np.eye(5)
    a[0, 0] = dt
    a[1:, 1:] = spatial
    return a


@dataclass
class StackLayout:
    """Where each frame goes in a ``(T, Z)`` stack and the stack's geometry.

    Attributes
    ----------
    order : ndarray of int
        ``(T, Z)`` index into the input frame list, ``-1`` for a missing slice
        that is filled with blank pixels.
    distances : ndarray
        ``(Z,)`` position of each slice along the normal (mm), filled ones included.
    origin : ndarray
        ImagePositionPatient (x, y, z) of slice 0.
    step : ndarray
        (x, y, z) vector between consecutive slices (mm).
    normal : ndarray
        Unit slice normal (x, y, z).
    warnings : list of str
        Human-readable notes on missing slices / uneven spacing.
    info : dict
        Figures for the metadata (median spacing, filled slices, tilt...).
    """

    order: np.ndarray
    distances: np.ndarray
    origin: np.ndarray
    step: np.ndarray
    normal: np.ndarray
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_times(self) -> int:
        return int(self.order.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.order.shape[1])


def plan_stack(positions: np.ndarray, iop: np.ndarray, time_keys: list[Any],
               single_slice_spacing: float | None = None, fill_missing: bool = True) -> StackLayout:
    """Sort frames of one orientation into a ``(T, Z)`` stack.

    Parameters
    ----------
    positions : (N, 3) array
        ImagePositionPatient of each frame, LPS (x, y, z) mm.
    iop : (6,) array
        The common ImageOrientationPatient.
    time_keys : list
        One sortable key per frame; orders frames that share a position (time).
    single_slice_spacing : float, optional
        Slice step used when there is only one position (SpacingBetweenSlices or
        SliceThickness); 1.0 when not given.
    fill_missing : bool
        Whether gaps that are a whole multiple of the median spacing get blank
        slices (``order == -1``) so that the affine stays exact.

    Returns
    -------
    StackLayout

    Raises
    ------
    ReaderError
        When positions repeat but not the same number of times at every
        position (not a consistent time series), or frames at the same slice
        location have different in-plane positions.
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    n = slice_normal(iop)
    d = pos @ n
    idx = np.argsort(d, kind="stable")
    clusters: list[list[int]] = []
    for i in idx:
        if clusters and d[i] - d[clusters[-1][0]] <= POSITION_TOL_MM:
            clusters[-1].append(int(i))
        else:
            clusters.append([int(i)])
    for c in clusters:
        spread = np.abs(pos[c] - pos[c[0]]).max()
        if spread > max(10 * POSITION_TOL_MM, 1e-3):
            raise ReaderError(f"{len(c)} images lie at the same slice location ({d[c[0]]:.3f} mm along the normal) "
                              f"but up to {spread:.3f} mm apart in-plane: not one stack")
    counts = np.array([len(c) for c in clusters])
    if not (counts == counts[0]).all():
        hist = {int(k): int(v) for k, v in zip(*np.unique(counts, return_counts=True), strict=False)}
        desc = ", ".join(f"{v} position(s) with {k} image(s)" for k, v in hist.items())
        raise ReaderError(f"duplicate slice positions that are not a consistent time series ({desc}); "
                          "refusing to guess how to stack them")
    n_t = int(counts[0])
    cols = [sorted(c, key=lambda i: time_keys[i]) for c in clusters]
    order = np.array(cols, dtype=np.int64).T  # (T, Z)
    dist = np.array([d[c].mean() for c in clusters])
    origin = pos[cols[0][0]]
    warnings: list[str] = []
    info: dict[str, Any] = {}
    if len(clusters) == 1:
        sp = float(single_slice_spacing) if single_slice_spacing and single_slice_spacing > 0 else 1.0
        return StackLayout(order, dist, origin, n * sp, n, warnings, {"slice_spacing_mm": sp})
    diffs = np.diff(dist)
    med = float(np.median(diffs))
    # Missing slices: a gap of about k median spacings (k >= 2) hides k - 1 slices.
    grid_index = np.zeros(len(dist), dtype=np.int64)
    filled: list[int] = []
    k_total = 0
    gaps = []
    for g, dd in enumerate(diffs):
        ratio = dd / med
        k = int(round(ratio))
        if ratio > GAP_FACTOR:
            gaps.append((g, dd))
            if fill_missing and abs(ratio - k) <= 0.1:
                filled.extend(range(k_total + 1, k_total + k))
                k_total += k
            else:
                k_total += 1
        else:
            k_total += 1
        grid_index[g + 1] = k_total
    if gaps:
        where = "; ".join(f"{dd:.3f} mm between slice positions {dist[g]:.3f} and {dist[g + 1]:.3f}"
                          for g, dd in gaps)
        msg = f"missing slices: gap(s) larger than {GAP_FACTOR}x the median spacing {med:.4g} mm ({where})"
        if filled:
            msg += f"; {len(filled)} blank slice(s) inserted at index {filled} so that the geometry stays exact"
        warnings.append(msg)
    n_z = int(grid_index[-1]) + 1
    full_order = np.full((n_t, n_z), -1, dtype=np.int64)
    full_order[:, grid_index] = order
    grid_diffs = np.diff(dist) / np.diff(grid_index)
    dev = np.abs(grid_diffs - med)
    uneven = bool(dev.max() > max(UNEVEN_REL_TOL * med, UNEVEN_ABS_TOL_MM))
    first, last = pos[cols[0][0]], pos[cols[-1][0]]
    if uneven:
        direction = (last - first) / (dist[-1] - dist[0])  # normal component 1, keeps any shear
        step = direction * med
        predicted = dist[0] + grid_index * med
        err = float(np.abs(predicted - dist).max())
        warnings.append(f"uneven slice spacing: {grid_diffs.min():.4g} to {grid_diffs.max():.4g} mm "
                        f"(median {med:.4g} mm); loaded anyway with the affine of the first slice and the "
                        f"median spacing, so slices are misplaced by up to {err:.3g} mm")
        info["max_position_error_mm"] = err
    else:
        # least-squares step over the real slices: robust to rounding of the printed positions
        k = grid_index.astype(float)
        kc = k - k.mean()
        p0 = np.array([pos[c[0]] for c in cols])
        step = (kc[:, None] * (p0 - p0.mean(axis=0))).sum(axis=0) / (kc ** 2).sum()
    dist_full = dist[0] + np.arange(n_z) * (step @ n)
    dist_full[grid_index] = dist
    info["slice_spacing_mm"] = float(step @ n)
    tilt = float(np.degrees(np.arccos(np.clip(abs(step @ n) / np.linalg.norm(step), -1.0, 1.0))))
    if tilt > 0.01:
        info["gantry_tilt_deg"] = tilt
    if filled:
        info["filled_slices"] = filled
    return StackLayout(full_order, dist_full, origin, step, n, warnings, info)
