"""The block grid of a whole-image job, the blocks that touch tissue, and the image a job reads.

A whole slide is cut into square *cores* on a regular grid (``block`` pixels,
a multiple of the output's chunk edge, so that each core is written to whole
chunks of the labels and no two tasks ever write the same chunk).  Around
each core:

* the *keep box*: the core plus ``halo`` pixels (the largest object), where an
  object owned by the block (centroid in the core) can reach;
* the *read box*: the keep box plus ``context`` pixels (the network's
  receptive-field radius), so that the network sees around every pixel of
  the keep box what it would see on the whole image.

Both margins are multiples of :data:`ALIGN` so that every read box starts on
the U-Net's divisor grid and the tiled network gives, pixel for pixel, the
maps it gives on the whole image (see :mod:`napari_medseg.inference.tiling`).

Images come from :class:`SourceSpec`: a file (TIFF/OME-TIFF pyramid, DICOM,
picture; reopened in each worker process) at a pyramid level, or an array
(numpy, zarr, dask, a tifffile ``aszarr`` level) with its axes and geometry.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError, ReaderError
from ..geometry import Geometry

Box = tuple[slice, ...]

#: Read boxes start on multiples of this (the U-Net's divisor 2**(depth-1) for depth <= 5).
ALIGN = 16


def round_up(n: float, d: int = ALIGN) -> int:
    """Smallest multiple of ``d`` that is >= ``n``."""
    return int(math.ceil(n / d)) * d


@dataclass(frozen=True)
class BlockGrid:
    """Square cores on a regular grid over a ``(Y, X)`` image, with their keep and read boxes.

    Attributes
    ----------
    shape : tuple of int
        ``(Y, X)`` size of the image (pixels of the level the job runs on).
    block : int
        Core edge in pixels (the last row / column of cores may be smaller).
    halo : int
        Keep margin: the largest object's diameter (pixels), a multiple of :data:`ALIGN`.
    context : int
        Extra read margin for the network (pixels), a multiple of :data:`ALIGN`.
    """

    shape: tuple[int, int]
    block: int
    halo: int
    context: int

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ParameterError(f"block grids are 2D (Y, X); got shape {self.shape}")
        if self.block < 1 or self.halo < 0 or self.context < 0:
            raise ParameterError(f"block {self.block} must be >= 1 and halo {self.halo}, context "
                                 f"{self.context} >= 0")
        if self.halo >= self.block:
            raise ParameterError(f"the block edge ({self.block} px) must be larger than the largest object "
                                 f"({self.halo} px): give a larger block size")

    @property
    def counts(self) -> tuple[int, int]:
        """Cores per axis."""
        return tuple(math.ceil(s / self.block) for s in self.shape)

    def __len__(self) -> int:
        return int(np.prod(self.counts))

    def position(self, i: int) -> tuple[int, int]:
        """Row and column of core ``i`` (raster order)."""
        return tuple(int(v) for v in np.unravel_index(i, self.counts))

    def core(self, i: int) -> Box:
        """Core ``i`` in image pixels (half-open slices)."""
        return tuple(slice(p * self.block, min((p + 1) * self.block, s))
                     for p, s in zip(self.position(i), self.shape, strict=True))

    def grow(self, box: Box, margin: int) -> Box:
        """``box`` grown by ``margin`` on every side, clipped to the image."""
        return tuple(slice(max(0, b.start - margin), min(s, b.stop + margin))
                     for b, s in zip(box, self.shape, strict=True))

    def keep_box(self, i: int) -> Box:
        return self.grow(self.core(i), self.halo)

    def read_box(self, i: int) -> Box:
        return self.grow(self.core(i), self.halo + self.context)

    def neighbours(self, i: int) -> list[int]:
        """Blocks whose keep box meets core ``i``: ``i`` first, then the others in raster order."""
        reach = math.ceil(self.halo / self.block)
        pos = self.position(i)
        rng = [range(max(0, p - reach), min(n, p + reach + 1)) for p, n in zip(pos, self.counts, strict=True)]
        others = [int(np.ravel_multi_index((a, b), self.counts)) for a in rng[0] for b in rng[1]]
        return [i] + [j for j in others if j != i]


def tissue_blocks(grid: BlockGrid, tissue: Any | None) -> list[int]:
    """The blocks whose core meets ``tissue``; all blocks without a mask.

    Parameters
    ----------
    grid : BlockGrid
    tissue : array-like of bool, shape (h, w), optional
        A low-resolution tissue mask over the same field of view as the
        image (e.g. from a thumbnail level): mask pixel ``(r, c)`` covers
        image pixels ``[r * Y / h, (r + 1) * Y / h) x [c * X / w, ...)``.

    Returns
    -------
    list of int
        Block indices in raster order.
    """
    if tissue is None:
        return list(range(len(grid)))
    mask = np.asarray(tissue).astype(bool, copy=False)
    if mask.ndim != 2:
        raise ParameterError(f"the tissue mask must be 2D (Y, X), got shape {mask.shape}")
    fy, fx = (m / s for m, s in zip(mask.shape, grid.shape, strict=True))
    out = []
    for i in range(len(grid)):
        ys, xs = grid.core(i)
        sub = mask[int(math.floor(ys.start * fy)):max(int(math.ceil(ys.stop * fy)), int(math.floor(ys.start * fy)) + 1),
                   int(math.floor(xs.start * fx)):max(int(math.ceil(xs.stop * fx)), int(math.floor(xs.start * fx)) + 1)]
        if sub.any():
            out.append(i)
    return out


# ---------------------------------------------------------------- images
@dataclass(frozen=True)
class SourceSpec:
    """The image a whole-image job reads: a file at a pyramid level, or an array.

    Attributes
    ----------
    path : str, optional
        A TIFF / OME-TIFF (pyramids open lazily), DICOM or picture file
        (:func:`napari_medseg.io.read`); each worker process opens it itself.
    level : int
        Pyramid level (0 = full resolution) of a file.
    array : array-like, optional
        Instead of ``path``: numpy, zarr, dask or a tifffile ``aszarr`` level
        (anything with ``shape`` and basic slicing); sent to the workers with
        the task (zarr and dask arrays travel as references, numpy as bytes).
    axes : str, optional
        ``array``'s axes (``YX``, ``YXS`` for RGB, ``CYX``); guessed when None.
    geometry : Geometry, optional
        ``array``'s ``YX`` geometry (pixel size in µm...); None: pixels.
    """

    path: str | None = None
    level: int = 0
    array: Any = None
    axes: str | None = None
    geometry: Geometry | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.array is None):
            raise ParameterError("give an image file (path) or an array, not both or neither")
        if self.level < 0:
            raise ParameterError(f"pyramid level must be >= 0, got {self.level}")

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path is not None else "array"

    def levels(self) -> tuple[list, str, Geometry]:
        """Every pyramid level (full resolution first; one for arrays and flat files), their axes, level 0's geometry.

        A file's levels are lazy (read on slicing); used to find the tissue on
        a coarse level (:mod:`napari_medseg.batch.tissue`).
        """
        if self.path is not None:
            st = os.stat(self.path)
            return _file_levels(os.path.abspath(self.path), st.st_mtime_ns, st.st_size)
        img = self.open()
        return [img.data], img.axes, img.geometry

    def open(self) -> OpenedImage:
        """The level's array, axes and geometry (a file is opened once per process)."""
        if self.path is not None:
            st = os.stat(self.path)
            return _open_file(os.path.abspath(self.path), self.level, st.st_mtime_ns, st.st_size)
        from ..inference.prepare import check_axes, infer_axes

        shape = tuple(int(s) for s in self.array.shape)
        axes = check_axes(self.axes if self.axes is not None else infer_axes(shape), len(shape))
        return OpenedImage(self.array, axes, _check_geometry(self.geometry, axes), self.name)


@dataclass(frozen=True)
class OpenedImage:
    """An opened source: ``data`` (one level), its ``axes``, ``geometry`` (YX), ``name``."""

    data: Any
    axes: str
    geometry: Geometry
    name: str

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(self.data.shape[self.axes.index(a)]) for a in "YX")

    def read(self, box: Box) -> np.ndarray:
        """The pixels of the ``(Y, X)`` box, all channels, as numpy in the image's axis order."""
        idx = tuple(box[0] if a == "Y" else box[1] if a == "X" else slice(None) for a in self.axes)
        return np.asarray(self.data[idx])


def _check_geometry(geometry: Geometry | None, axes: str) -> Geometry:
    spatial = "".join(a for a in axes if a in "ZYX")
    if spatial != "YX":
        raise ParameterError(f"whole-image jobs run on 2D images (Y, X, optional channels); this one has axes "
                             f"{axes!r}")
    if geometry is None:
        return Geometry.identity("YX")
    if not isinstance(geometry, Geometry) or geometry.axes != "YX":
        raise ParameterError(f"geometry {geometry!r} must be a Geometry of the axes 'YX'")
    return geometry


@functools.lru_cache(maxsize=8)
def _file_levels(path: str, mtime_ns: int, size: int) -> tuple[list, str, Geometry]:
    """Every pyramid level of ``path`` (lazy), its axes and level 0's ``YX`` geometry (cached per process)."""
    from ..io import read
    from ..io.picture import PICTURE_SUFFIXES, read_picture

    vols = read_picture(path) if os.path.splitext(path)[1].lower() in PICTURE_SUFFIXES else read(path)
    if len(vols) != 1:
        raise ReaderError(f"{path} holds {len(vols)} images; whole-image jobs take files with one image")
    vol = vols[0]
    levels = vol.data if isinstance(vol.data, list) else [vol.data]
    if "T" in vol.axes or "Z" in vol.axes:
        raise ParameterError(f"{path}: whole-image jobs run on 2D images; this one has axes {vol.axes!r}")
    return levels, vol.axes, vol.spatial_geometry()


@functools.lru_cache(maxsize=8)
def _open_file(path: str, level: int, mtime_ns: int, size: int) -> OpenedImage:
    """Open ``path`` at ``level`` (cached per process while the file is unchanged)."""
    levels, axes, g0 = _file_levels(path, mtime_ns, size)
    if level >= len(levels):
        raise ParameterError(f"{path} has {len(levels)} pyramid level(s); level {level} does not exist")
    shape0 = [int(levels[0].shape[axes.index(a)]) for a in "YX"]
    shape = [int(levels[level].shape[axes.index(a)]) for a in "YX"]
    geometry = g0.zoomed([s / s0 for s, s0 in zip(shape, shape0, strict=True)]) if level else g0
    return OpenedImage(levels[level], axes, _check_geometry(geometry, axes), os.path.basename(path))


def scale_for_engine(geometry: Geometry) -> tuple[tuple[float, ...] | None, tuple[str, ...] | None]:
    """The pixel size and units the engine resamples with: ``(None, None)`` for a pixel grid."""
    from ..geometry import is_length

    if not geometry.calibrated or not is_length(geometry.length_unit):
        return None, None
    return tuple(float(s) for s in geometry.spacing), tuple(geometry.units)


def shifted(geometry: Geometry, offset: Sequence[int]) -> Geometry:
    """The geometry of a crop whose pixel 0 is pixel ``offset`` of ``geometry``'s image."""
    a = np.array(geometry.affine)
    n = geometry.ndim
    a[:n, n] = geometry.index_to_world([list(offset)])[0]
    return Geometry(geometry.axes, a, geometry.units, geometry.frame)
