"""Whole-slide images: pyramidal SVS, NDPI, SCN, OME-TIFF and other TIFF files, opened lazily.

:func:`open_slide` reads only the file's structure (tifffile series and
levels) and wraps every resolution level in a :mod:`dask` array over
tifffile's zarr store, so opening a 40k x 40k slide takes well under a second
and a tile read decodes only the TIFF tiles it touches.  The pixel size comes
from the vendor metadata (:func:`napari_medseg.io.tiff.read_tiff`: Aperio
``MPP``, Leica SCN XML, OME ``PhysicalSize*``, resolution tags for NDPI and
generic TIFF).  Associated images (label, macro, thumbnail) are left out and
named in ``metadata["associated_images"]``: a slide label often carries the
patient's name.

openslide is not used: tifffile (already a dependency) reads the TIFF-based
formats above, including Aperio's JPEG/JPEG 2000 tiles and NDPI's JPEG
stripes (through imagecodecs); openslide would add a C library for the
non-TIFF formats (MIRAX ``.mrxs``, Hamamatsu ``.vms``, Sakura ``.svslide``)
that no test data here covers.

Coordinates: ``(y, x)`` level-0 pixel indices unless a ``level`` is given;
level ``k`` pixel ``i`` spans level-0 pixels ``[i * d, (i + 1) * d)`` with
``d = downsample(k)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, ReaderError
from ..geometry import Geometry, Volume

#: File name endings of whole-slide formats that tifffile reads (besides ``.tif``/``.tiff`` pyramids).
SLIDE_SUFFIXES: tuple[str, ...] = (".svs", ".ndpi", ".scn", ".bif", ".qptiff")


def is_slide_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` ends in a whole-slide suffix (:data:`SLIDE_SUFFIXES`, case-insensitive)."""
    return str(path).lower().endswith(SLIDE_SUFFIXES)


@dataclass
class Slide:
    """A lazily read multi-resolution image.

    Attributes
    ----------
    levels : list of array-like
        Resolution levels, full resolution first, each ``(Y, X)`` grey or
        ``(Y, X, S)`` RGB(A); dask arrays when opened from a file.
    mpp : tuple of float or None
        Level-0 pixel size ``(y, x)`` in µm; None when the file does not say.
    name : str
    path : str or None
    metadata : dict
        What the reader found (``pixel_size_source``, ``associated_images``...).
    """

    levels: list[Any]
    mpp: tuple[float, float] | None = None
    name: str = "slide"
    path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.levels:
            raise ParameterError("a slide needs at least one level")
        nd = {len(lv.shape) for lv in self.levels}
        if len(nd) != 1 or nd.pop() not in (2, 3):
            raise ParameterError(f"slide levels must all be (Y, X) or (Y, X, S); got shapes "
                                 f"{[tuple(lv.shape) for lv in self.levels]}")
        if self.rgb and self.levels[0].shape[-1] not in (3, 4):
            raise ParameterError(f"a 3D slide level must be (Y, X, 3|4) RGB(A), got {tuple(self.levels[0].shape)}")
        if self.mpp is not None:
            self.mpp = (float(self.mpp[0]), float(self.mpp[1]))
            if not all(np.isfinite(self.mpp)) or min(self.mpp) <= 0:
                raise ParameterError(f"mpp {self.mpp} must be positive µm per pixel")

    # ------------------------------------------------------------------ shape

    @property
    def rgb(self) -> bool:
        """Whether pixels are RGB(A) samples (last axis)."""
        return len(self.levels[0].shape) == 3

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 ``(height, width)`` in pixels."""
        return int(self.levels[0].shape[0]), int(self.levels[0].shape[1])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.levels[0].dtype)

    def level_shape(self, level: int) -> tuple[int, int]:
        """``(height, width)`` of a level in its own pixels."""
        lv = self.levels[self._level(level)]
        return int(lv.shape[0]), int(lv.shape[1])

    def downsample(self, level: int) -> tuple[float, float]:
        """Level-0 pixels per pixel of ``level`` along ``(y, x)``."""
        h, w = self.level_shape(level)
        return self.shape[0] / h, self.shape[1] / w

    def level_for(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (1 % slack)."""
        best = 0
        for k in range(len(self.levels)):
            if max(self.downsample(k)) <= downsample * 1.01:
                best = k
        return best

    def _level(self, level: int) -> int:
        if not 0 <= int(level) < len(self.levels):
            raise ParameterError(f"level {level} does not exist; {self.name} has levels 0..{len(self.levels) - 1}")
        return int(level)

    # ------------------------------------------------------------------ geometry

    @property
    def units(self) -> tuple[str, str]:
        return ("µm", "µm") if self.mpp is not None else ("pixel", "pixel")

    def geometry(self, level: int = 0) -> Geometry:
        """Index -> world (µm, or pixels when uncalibrated) of a level's ``(y, x)`` pixels.

        Level-0 pixel centres sit at ``index * mpp``; a coarser level's pixel
        centres at the centres of the level-0 blocks they cover.
        """
        base = Geometry.from_scale("YX", self.mpp or (1.0, 1.0), units=self.units)
        if level == 0:
            return base
        dy, dx = self.downsample(level)
        return base.zoomed((1 / dy, 1 / dx))

    # ------------------------------------------------------------------ pixels

    def read(self, y0: int, x0: int, height: int, width: int, level: int = 0) -> np.ndarray:
        """Pixels of a rectangle of ``level`` (its own pixel coordinates), clipped to the level.

        Returns
        -------
        ndarray
            ``(h, w)`` or ``(h, w, S)``, the slide's dtype; ``h <= height`` and
            ``w <= width`` where the rectangle leaves the image.
        """
        lv = self.levels[self._level(level)]
        h, w = self.level_shape(level)
        ya, xa = max(0, int(y0)), max(0, int(x0))
        yb, xb = min(h, int(y0) + int(height)), min(w, int(x0) + int(width))
        if yb <= ya or xb <= xa:
            raise ParameterError(f"region y={y0}, x={x0}, {height}x{width} lies outside level {level} ({h}x{w})")
        part = lv[ya:yb, xa:xb]
        return np.asarray(part.compute() if hasattr(part, "compute") else part)

    def thumbnail(self, max_pixels: int = 4_000_000, min_um: float | None = None
                  ) -> tuple[np.ndarray, tuple[float, float]]:
        """A low level read whole: ``(pixels, (dy, dx))``, ``(dy, dx)`` level-0 pixels per thumbnail pixel.

        The finest level with at most ``max_pixels`` pixels and, on a
        calibrated slide, pixels of at least ``min_um`` µm (when a level of
        at most ``max_pixels`` has them).  A slide without a level of at most
        ``max_pixels`` gives its coarsest level subsampled by an integer
        step, which decodes that whole level once (slow for a big one-level
        file).
        """
        small = [k for k in range(len(self.levels)) if np.prod(self.level_shape(k)) <= max_pixels]
        if small:
            coarse = [k for k in small if min_um is None or self.mpp is None
                      or min(self.mpp[0] * self.downsample(k)[0], self.mpp[1] * self.downsample(k)[1]) >= min_um]
            k = coarse[0] if coarse else small[-1]
            h, w = self.level_shape(k)
            return self.read(0, 0, h, w, k), self.downsample(k)
        k = len(self.levels) - 1
        h, w = self.level_shape(k)
        step = int(np.ceil(np.sqrt(h * w / max_pixels)))
        part = self.levels[k][::step, ::step]
        pix = np.asarray(part.compute() if hasattr(part, "compute") else part)
        dy, dx = self.downsample(k)
        return pix, (dy * step, dx * step)

    # ------------------------------------------------------------------ napari

    def volume(self) -> Volume:
        """The slide as a :class:`~napari_medseg.geometry.Volume` (multiscale when it has several levels)."""
        data: Any = list(self.levels) if len(self.levels) > 1 else self.levels[0]
        return Volume(data=data, axes="YXS" if self.rgb else "YX", name=self.name, scale=self.mpp or (1.0, 1.0),
                      units=self.units, metadata=dict(self.metadata))

    def to_layer_data(self) -> tuple[Any, dict[str, Any], str]:
        """napari ``(data, kwargs, "image")``: a multiscale image layer in µm."""
        data, kw, kind = self.volume().to_layer_data()
        kw["metadata"]["slide_mpp"] = self.mpp
        return data, kw, kind


def mpp_of(geometry: Geometry) -> tuple[float, float] | None:
    """A ``YX`` geometry's pixel size ``(y, x)`` in µm (a :class:`Slide`'s ``mpp``); None unless both are lengths."""
    from ..geometry import convert, is_length

    if not all(is_length(u) for u in geometry.units):
        return None
    return tuple(float(convert(s, u, "µm")) for s, u in zip(geometry.spacing, geometry.units, strict=True))


def open_slide(path: str | os.PathLike) -> Slide:
    """Open a whole-slide (or any tifffile-readable pyramidal / large 2D) image lazily.

    Parameters
    ----------
    path : str or path-like
        SVS, NDPI, SCN, BIF, QPTIFF, OME-TIFF or plain TIFF.

    Returns
    -------
    Slide
        The largest image series of the file (by level-0 pixels), with its
        levels as dask arrays; singleton Z/T/C axes dropped.

    Raises
    ------
    ReaderError
        Not a readable TIFF, or its main image is not a 2D grey/RGB image
        (a multichannel or 3D stack: open it with the TIFF reader).
    """
    from ..io.tiff import read_tiff

    p = Path(path)
    vols = read_tiff(p, lazy=True)
    vol = max(vols, key=lambda v: int(np.prod([v.shape[v.axes.index(a)] for a in "YX"])))
    levels = vol.data if isinstance(vol.data, list) else [vol.data]
    axes = vol.axes
    squeeze = tuple(i for i, a in enumerate(axes) if a in "TZC" and levels[0].shape[i] == 1)
    left = "".join(a for i, a in enumerate(axes) if i not in squeeze)
    if left not in ("YX", "YXS"):
        raise ReaderError(f"{p}: its main image has axes {axes} and shape {tuple(levels[0].shape)}; a slide is a "
                          "2D grey or RGB image (open stacks and multichannel files with the TIFF reader)")
    if squeeze:
        levels = [lv.squeeze(axis=squeeze) for lv in levels]
    world = vol.world_axes
    mpp = None
    units = vol.units or ()
    if len(units) == len(world) and all(units[world.index(a)] == "µm" for a in "YX"):
        mpp = (float(vol.scale[world.index("Y")]), float(vol.scale[world.index("X")]))
    meta = {k: v for k, v in vol.metadata.items() if k in ("source_path", "pixel_size_source", "associated_images",
                                                            "tiff_kind", "tiff_series_name", "series_index")}
    meta["slide_levels"] = [tuple(int(s) for s in lv.shape[:2]) for lv in levels]
    return Slide(levels=levels, mpp=mpp, name=vol.name.split(" [")[0] if len(vols) == 1 else vol.name, path=str(p),
                 metadata=meta)


__all__ = ["SLIDE_SUFFIXES", "Slide", "is_slide_path", "open_slide"]
