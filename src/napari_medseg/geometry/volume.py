"""One small type for an image array plus its physical geometry.

Readers return :class:`Volume` objects; the napari layer turns them into
layer-data tuples with :meth:`Volume.to_layer_data`, the CLI and API use the
array and geometry directly.  Nothing here imports napari.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .grid import Geometry
from .units import napari_unit


@dataclass
class Volume:
    """An image (or label) array with the geometry needed to place it in the world.

    Attributes
    ----------
    data : array-like or list of array-like
        Pixel data: numpy, dask or zarr array.  A list means a multiscale
        pyramid, full resolution first.  Axis order is given by ``axes``.
    axes : str
        One letter per axis of ``data``: ``T`` time, ``C`` channel, ``Z``
        slice/plane, ``Y`` row, ``X`` column, ``S`` RGB(A) samples (last).
    name : str
        Layer name.
    scale : tuple of float, optional
        Physical size of one pixel step along each axis of ``data`` *except*
        ``C`` and ``S`` (napari's convention with ``channel_axis`` / ``rgb``),
        in ``units``.
    translate : tuple of float, optional
        Physical position of the first pixel centre, same axes as ``scale``.
    affine : ndarray, optional
        ``(n+1, n+1)`` homogeneous matrix from data index to world position,
        same axes as ``scale``; used instead of scale/translate when the grid is
        oblique (DICOM).
    units : tuple of str, optional
        Unit of each axis in ``scale`` (e.g. ``("µm", "µm")``, ``"s"`` for T).
    channel_names : list of str, optional
        Names of the ``C`` entries; one layer per channel in napari.
    contrast_limits : tuple of float, optional
        Display range (e.g. DICOM window).
    layer_type : {"image", "labels"}
        napari layer type.
    metadata : dict
        Anything else worth keeping (source path, DICOM tags, OME XML...).
    frame : str, optional
        ``"LPS"`` when the world is patient coordinates in mm (DICOM, NIfTI,
        NRRD; see :mod:`napari_medseg.geometry.grid`), None otherwise.
    """

    data: Any
    axes: str
    name: str = "image"
    scale: tuple[float, ...] | None = None
    translate: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    units: tuple[str, ...] | None = None
    channel_names: list[str] | None = None
    contrast_limits: tuple[float, float] | None = None
    colormap: str | list[str] | None = None
    layer_type: str = "image"
    metadata: dict[str, Any] = field(default_factory=dict)
    frame: str | None = None

    def __post_init__(self) -> None:
        base = self.data[0] if isinstance(self.data, list) else self.data
        if len(self.axes) != base.ndim:
            raise ValueError(f"axes {self.axes!r} do not match data with {base.ndim} dimensions")
        n = self.spatial_ndim
        for attr in ("scale", "translate", "units"):
            val = getattr(self, attr)
            if val is not None and len(val) != n:
                raise ValueError(f"{attr} has {len(val)} entries, expected {n} for axes {self.axes!r}")

    @property
    def multiscale(self) -> bool:
        """Whether ``data`` is a list of resolution levels."""
        return isinstance(self.data, list)

    @property
    def rgb(self) -> bool:
        """Whether the last axis holds RGB(A) samples."""
        return self.axes.endswith("S")

    @property
    def channel_axis(self) -> int | None:
        """Index of the ``C`` axis in ``data``, or None."""
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def world_axes(self) -> str:
        """Axes that have a physical position (all but ``C`` and ``S``)."""
        return self.axes.replace("C", "").replace("S", "")

    @property
    def spatial_ndim(self) -> int:
        """Number of axes in ``world_axes``."""
        return len(self.world_axes)

    @property
    def shape(self) -> tuple[int, ...]:
        base = self.data[0] if isinstance(self.data, list) else self.data
        return tuple(base.shape)

    @property
    def geometry(self) -> Geometry:
        """The index -> world mapping of the ``world_axes`` (from ``affine``, or ``scale``/``translate``)."""
        return Geometry.from_napari(self.world_axes, scale=self.scale, translate=self.translate,
                                    affine=self.affine, units=self.units, frame=self.frame)

    def spatial_geometry(self) -> Geometry:
        """The geometry of the Z/Y/X axes alone (time dropped), e.g. for measurements in mm³."""
        return self.geometry.subset("".join(a for a in self.world_axes if a in "ZYX"))

    def to_layer_data(self) -> tuple[Any, dict[str, Any], str]:
        """Return a napari ``(data, kwargs, layer_type)`` tuple.

        Channels become separate layers through ``channel_axis``; physical
        units go into ``metadata['units']`` (and ``units`` for napari >= 0.5).
        """
        kw: dict[str, Any] = {"name": self.name}
        meta = dict(self.metadata)
        meta["axes"] = self.axes
        if self.frame is not None:
            meta["frame"] = self.frame
        if self.units is not None:
            meta["units"] = tuple(self.units)
        if self.affine is not None:
            kw["affine"] = np.asarray(self.affine, dtype=float)
        if self.scale is not None:
            kw["scale"] = tuple(float(s) for s in self.scale)
        if self.translate is not None:
            kw["translate"] = tuple(float(t) for t in self.translate)
        if self.units is not None:
            kw["units"] = tuple(napari_unit(u) for u in self.units)
        kw["axis_labels"] = tuple(self.world_axes.lower())
        if self.multiscale:
            kw["multiscale"] = True
        if self.layer_type == "image":
            if self.rgb:
                kw["rgb"] = True
            if self.contrast_limits is not None:
                kw["contrast_limits"] = tuple(float(c) for c in self.contrast_limits)
            if self.colormap is not None:
                kw["colormap"] = self.colormap
            ax = self.channel_axis
            if ax is not None:
                kw["channel_axis"] = ax
                if self.channel_names:
                    kw["name"] = [f"{self.name} [{c}]" for c in self.channel_names]
                # napari broadcasts metadata to each channel layer
        kw["metadata"] = meta
        return self.data, kw, self.layer_type


def is_volume(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`Volume` (or quacks like one: data, axes, world axes, geometry)."""
    return isinstance(obj, Volume) or all(hasattr(obj, a) for a in ("data", "axes", "world_axes", "geometry"))
