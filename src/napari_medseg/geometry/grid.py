"""Where an array's pixels are in the world: one affine from pixel index to physical position.

A :class:`Geometry` is what every reader, layer, measurement and writer of
napari-medseg agrees on.  Pixel ``i`` along an axis is the *centre* of that
pixel (napari's and ITK's convention); ``world = affine @ [index, 1]``.

* Microscopy grids are axis aligned: the affine is diagonal (pixel size) plus
  a translation, in µm; ``frame`` is None.
* Radiology grids may be oblique: the affine's linear part is
  ``direction @ diag(spacing)`` in millimetres, patient coordinates **LPS**
  (DICOM's), with the world axes ordered ``(z, y, x)`` like the data axes
  ``(slice, row, column)``; ``frame`` is ``"LPS"``.

Lengths and sizes always come from the affine's linear part: the spacing of
an axis is the length of its column, the size of a pixel (area or volume) is
``|det|``.  Nothing here imports napari or torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError
from .units import PIXEL, common_unit, factor, is_length, napari_unit, normalize_unit, per_axis

#: The patient frame of DICOM (and of NIfTI/NRRD after the RAS -> LPS flip).
LPS = "LPS"
#: Relative tolerance under which an off-diagonal affine entry counts as zero.
AXIS_ALIGNED_RTOL = 1e-9


@dataclass(frozen=True, eq=False)
class Geometry:
    """Index -> world mapping of an array's spatial (and time) axes.

    Parameters
    ----------
    axes : str
        One letter per index axis, e.g. ``"ZYX"``, ``"YX"``, ``"TZYX"``
        (no ``C``/``S``: channels and RGB samples have no position).  The
        world axes are named and ordered the same way.
    affine : ndarray, shape (n + 1, n + 1)
        Homogeneous matrix, float64: ``world = affine @ [i0, ..., i(n-1), 1]``.
    units : tuple of str
        Unit of each world axis (normalised by
        :func:`~napari_medseg.geometry.units.normalize_unit`).
    frame : str, optional
        ``"LPS"`` when the world is patient coordinates in mm (DICOM, NIfTI,
        NRRD), None for a microscope's stage or a plain pixel grid.

    Examples
    --------
    >>> g = Geometry.from_scale("ZYX", (2.0, 0.5, 0.5), units="µm")
    >>> g.spacing.tolist(), float(g.voxel_size)
    ([2.0, 0.5, 0.5], 0.5)
    >>> g.index_to_world([[1, 2, 3]]).tolist()
    [[2.0, 1.0, 1.5]]
    """

    axes: str
    affine: np.ndarray
    units: tuple[str, ...]
    frame: str | None = None

    def __post_init__(self) -> None:
        a = np.array(self.affine, dtype=np.float64)
        n = len(self.axes)
        if len(set(self.axes)) != n or set(self.axes) - set("TZYX"):
            raise ParameterError(f"geometry axes {self.axes!r} must be distinct letters of T, Z, Y, X")
        if a.shape != (n + 1, n + 1):
            raise ParameterError(f"affine of shape {a.shape} does not fit {n} axes {self.axes!r}")
        if not np.all(np.isfinite(a)):
            raise ParameterError("affine has non-finite entries")
        if not np.allclose(a[n], np.eye(n + 1)[n]):
            raise ParameterError(f"affine's last row must be [0, ..., 0, 1], got {a[n].tolist()}")
        if n and abs(np.linalg.det(a[:n, :n])) == 0:
            raise ParameterError("affine is singular: some pixel step has zero length")
        a.setflags(write=False)
        object.__setattr__(self, "affine", a)
        units = per_axis(self.units, n) or (PIXEL,) * n
        object.__setattr__(self, "units", units)

    # ------------------------------------------------------------------ construction

    @classmethod
    def identity(cls, axes: str) -> Geometry:
        """Pixel grid without physical calibration (unit ``pixel``)."""
        return cls(axes, np.eye(len(axes) + 1), (PIXEL,) * len(axes))

    @classmethod
    def from_scale(cls, axes: str, scale: Sequence[float] | None = None, translate: Sequence[float] | None = None,
                   units: str | Sequence[str] | None = None, frame: str | None = None) -> Geometry:
        """Axis-aligned geometry from napari-style ``scale`` and ``translate`` (one value per axis)."""
        return cls.from_napari(axes, scale=scale, translate=translate, units=units, frame=frame)

    @classmethod
    def from_napari(cls, axes: str, *, scale: Sequence[float] | None = None,
                    translate: Sequence[float] | None = None, affine: Any = None,
                    rotate: Any = None, shear: Any = None,
                    units: str | Sequence[str] | None = None, frame: str | None = None) -> Geometry:
        """Geometry of a napari layer's ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine``.

        napari maps data to world as ``affine @ (translate + rotate @ shear @ scale)``;
        this composes the same.  ``affine`` may be ``(n, n)`` (linear) or
        ``(n + 1, n + 1)``; ``rotate`` an ``(n, n)`` matrix; ``shear`` an upper
        triangular ``(n, n)`` matrix or its ``n(n-1)/2`` upper entries.
        Missing units mean ``pixel``.
        """
        n = len(axes)
        s = _vector("scale", scale, n, 1.0)
        if np.any(s == 0):
            raise ParameterError(f"scale {tuple(s)} has a zero entry")
        t = _vector("translate", translate, n, 0.0)
        lin = np.diag(s)
        if shear is not None:
            lin = _shear_matrix(shear, n) @ lin
        if rotate is not None:
            r = np.asarray(rotate, dtype=np.float64)
            if r.shape != (n, n):
                raise ParameterError(f"rotate of shape {r.shape} does not fit {n} axes")
            lin = r @ lin
        inner = np.eye(n + 1)
        inner[:n, :n] = lin
        inner[:n, n] = t
        if affine is not None:
            outer = np.asarray(getattr(affine, "affine_matrix", affine), dtype=np.float64)
            if outer.shape == (n, n):
                full = np.eye(n + 1)
                full[:n, :n] = outer
                outer = full
            elif outer.shape != (n + 1, n + 1):
                raise ParameterError(f"affine of shape {outer.shape} does not fit {n} axes {axes!r}")
            inner = outer @ inner
        return cls(axes, inner, per_axis(units, n) or (PIXEL,) * n, frame)

    # ------------------------------------------------------------------ properties

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.axes)

    @property
    def linear(self) -> np.ndarray:
        """``(n, n)`` linear part: column ``j`` is the world step of one pixel along axis ``j``."""
        n = self.ndim
        return self.affine[:n, :n]

    @property
    def origin(self) -> np.ndarray:
        """World position of the centre of pixel ``(0, ..., 0)``."""
        return self.affine[: self.ndim, self.ndim].copy()

    @property
    def spacing(self) -> np.ndarray:
        """Length of one pixel step along each axis (norm of the affine's columns), in ``units``."""
        return np.linalg.norm(self.linear, axis=0)

    @property
    def direction(self) -> np.ndarray:
        """``(n, n)`` unit direction of each index axis in the world (columns)."""
        return self.linear / self.spacing

    @property
    def voxel_size(self) -> float:
        """Area (2D) or volume (3D) of one pixel, ``|det(linear)|``, in ``length_unit`` to the n."""
        return float(abs(np.linalg.det(self.linear)))

    @property
    def is_axis_aligned(self) -> bool:
        """Whether the linear part is diagonal (a plain scale, possibly negative)."""
        lin = self.linear
        off = lin - np.diag(np.diag(lin))
        return bool(np.all(np.abs(off) <= AXIS_ALIGNED_RTOL * np.abs(lin).max()))

    @property
    def is_orthogonal(self) -> bool:
        """Whether the pixel axes are perpendicular in the world (no shear, e.g. no gantry tilt)."""
        d = self.direction
        return bool(np.allclose(d.T @ d, np.eye(self.ndim), atol=1e-6))

    @property
    def calibrated(self) -> bool:
        """Whether every axis has a physical unit."""
        return all(u != PIXEL for u in self.units)

    @property
    def length_unit(self) -> str:
        """The unit of the spatial (Z/Y/X) axes; ``pixel`` when uncalibrated.

        Raises
        ------
        ParameterError
            If the spatial axes have different length units.
        """
        us = [u for u, a in zip(self.units, self.axes, strict=False) if a != "T"]
        if not us:
            return PIXEL
        if any(u == PIXEL for u in us):
            return PIXEL
        return common_unit(us)

    def scale_translate(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(scale, translate)`` when the grid is axis aligned, else None."""
        if not self.is_axis_aligned:
            return None
        return tuple(float(v) for v in np.diag(self.linear)), tuple(float(v) for v in self.origin)

    # ------------------------------------------------------------------ mapping

    def index_to_world(self, index: Any) -> np.ndarray:
        """World positions of pixel indices, ``(..., n)`` -> ``(..., n)`` float64."""
        p = np.asarray(index, dtype=np.float64)
        if p.shape[-1] != self.ndim:
            raise ParameterError(f"points with {p.shape[-1]} coordinates for a {self.ndim}-axis geometry")
        return p @ self.linear.T + self.origin

    def world_to_index(self, world: Any) -> np.ndarray:
        """Pixel indices (float) of world positions, ``(..., n)`` -> ``(..., n)``."""
        p = np.asarray(world, dtype=np.float64)
        if p.shape[-1] != self.ndim:
            raise ParameterError(f"points with {p.shape[-1]} coordinates for a {self.ndim}-axis geometry")
        return np.linalg.solve(self.linear, (p - self.origin).T).T if p.ndim > 1 else \
            np.linalg.solve(self.linear, p - self.origin)

    def corners(self, shape: Sequence[int]) -> np.ndarray:
        """World positions of the centres of the ``2**n`` corner pixels of an array of ``shape``."""
        if len(shape) != self.ndim:
            raise ParameterError(f"shape {tuple(shape)} does not fit axes {self.axes!r}")
        grid = np.array(np.meshgrid(*[[0, int(s) - 1] for s in shape], indexing="ij")).reshape(self.ndim, -1).T
        return self.index_to_world(grid)

    def lengths(self, steps: Any) -> np.ndarray:
        """Physical lengths of index-space displacements ``(..., n)`` -> ``(...)``."""
        d = np.asarray(steps, dtype=np.float64)
        return np.linalg.norm(d @ self.linear.T, axis=-1)

    # ------------------------------------------------------------------ derived geometries

    def subset(self, axes: str) -> Geometry:
        """The geometry of the ``axes`` alone (e.g. ``"ZYX"`` of a ``"TZYX"`` series).

        Raises
        ------
        ParameterError
            If an axis is missing, or a kept axis moves along a dropped one in
            the world (the dropped axes would change the kept positions).
        """
        missing = [a for a in axes if a not in self.axes]
        if missing:
            raise ParameterError(f"axes {missing} not in geometry axes {self.axes!r}")
        keep = [self.axes.index(a) for a in axes]
        drop = [i for i in range(self.ndim) if i not in keep]
        lin = self.linear
        if drop and (np.any(lin[np.ix_(keep, drop)] != 0) or np.any(lin[np.ix_(drop, keep)] != 0)):
            raise ParameterError(f"axes {axes!r} are not separable from the others in {self.axes!r}")
        n = len(keep)
        a = np.eye(n + 1)
        a[:n, :n] = lin[np.ix_(keep, keep)]
        a[:n, n] = self.origin[keep]
        return Geometry(axes, a, tuple(self.units[i] for i in keep), self.frame)

    def with_length_unit(self, unit: str) -> Geometry:
        """The same grid with every length axis (Z/Y/X) expressed in ``unit`` (exact decimal factors)."""
        unit = normalize_unit(unit)
        rows = np.ones(self.ndim)
        units = list(self.units)
        for i, (a, u) in enumerate(zip(self.axes, self.units, strict=False)):
            if a != "T" and is_length(u):
                rows[i] = factor(u, unit)
                units[i] = unit
            elif a != "T":
                raise ParameterError(f"axis {a} has no length unit ({u!r}); cannot express it in {unit}")
        a = self.affine.copy()
        a[: self.ndim, :] *= rows[:, None]
        return Geometry(self.axes, a, tuple(units), self.frame)

    def zoomed(self, zoom: Sequence[float]) -> Geometry:
        """Geometry of the array resampled by ``zoom`` (new pixels per old pixel, per axis), same field of view.

        Pixel centres follow ``scipy.ndimage.zoom(..., grid_mode=True)``:
        new index ``k`` sits at old index ``(k + 0.5) / zoom - 0.5``.
        """
        z = _vector("zoom", zoom, self.ndim, 1.0)
        if np.any(z <= 0):
            raise ParameterError(f"zoom {tuple(z)} must be positive")
        m = np.eye(self.ndim + 1)
        m[: self.ndim, : self.ndim] = np.diag(1 / z)
        m[: self.ndim, self.ndim] = 0.5 / z - 0.5
        return Geometry(self.axes, self.affine @ m, self.units, self.frame)

    # ------------------------------------------------------------------ exchange

    def napari_kwargs(self) -> dict[str, Any]:
        """Layer keyword arguments: ``scale``/``translate`` when axis aligned with positive
        steps, else ``affine``; ``units`` (pint names) and ``axis_labels`` (lower-case axes)."""
        kw: dict[str, Any] = {}
        st = self.scale_translate()
        if st is not None and all(s > 0 for s in st[0]):
            kw["scale"], kw["translate"] = st
        else:
            kw["affine"] = self.affine.copy()
        kw["units"] = tuple(napari_unit(u) for u in self.units)
        kw["axis_labels"] = tuple(self.axes.lower())
        return kw

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (``axes``, ``affine`` as nested lists, ``units``, ``frame``)."""
        return {"axes": self.axes, "affine": self.affine.tolist(), "units": list(self.units), "frame": self.frame}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ParameterError
            If a field is missing or malformed.
        """
        try:
            return cls(str(d["axes"]), np.asarray(d["affine"], dtype=np.float64), tuple(d["units"]), d.get("frame"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"malformed geometry description: {exc}") from exc

    def allclose(self, other: Geometry, atol: float = 1e-6) -> bool:
        """Same axes, units, frame and affine within ``atol`` (world units)."""
        return (self.axes == other.axes and self.units == other.units and self.frame == other.frame
                and np.allclose(self.affine, other.affine, atol=atol, rtol=0))

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:g}" for s in self.spacing)
        return f"Geometry(axes={self.axes!r}, spacing=({sp}), units={self.units}, frame={self.frame!r})"


def _vector(name: str, value: Any, n: int, default: float) -> np.ndarray:
    if value is None:
        return np.full(n, float(default))
    v = np.asarray(value, dtype=np.float64).ravel()
    if v.size != n:
        raise ParameterError(f"{name} has {v.size} entries, expected {n}")
    if not np.all(np.isfinite(v)):
        raise ParameterError(f"{name} {tuple(v)} has non-finite entries")
    return v


def _shear_matrix(shear: Any, n: int) -> np.ndarray:
    s = np.asarray(shear, dtype=np.float64)
    if s.shape == (n, n):
        return s
    m = np.eye(n)
    iu = np.triu_indices(n, 1)
    if s.size != len(iu[0]):
        raise ParameterError(f"shear with {s.size} entries does not fit {n} axes")
    m[iu] = s.ravel()
    return m
