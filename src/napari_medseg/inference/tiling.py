"""Streaming tiled inference: tiles with a halo, crop-to-core blending.

Blending choice
---------------
Each tile is the *core* (the part of the image it is responsible for) plus a
*halo* on every side; the network runs on the whole tile and only the core of
its output is kept.  Cores tile the image without overlap, so nothing is
averaged.  When the halo is at least the network's receptive-field radius and
tile positions are multiples of the U-Net's divisor (``2 ** (depth - 1)``),
the result is *exactly* (to float rounding) what the network gives on the
whole image, whatever the tile size: convolution padding artefacts at tile
edges never reach the core.  Gaussian blending (MONAI's ``mode="gaussian"``)
only hides those artefacts, costs a full-size float accumulator and weight
map, and needs ~25 % overlap; crop-to-core needs neither.

Borders
-------
The image is extended beyond its edges by mirror reflection without edge
repeat (numpy's ``mode="reflect"``, repeated for halos larger than the image;
a 1-pixel axis is repeated).  So "the network on the whole image" means the
network on that infinite mirror extension, evaluated on the image grid: a
definition that does not depend on tiling.

Tiles
-----
The planner (:class:`TileGrid`) picks the fewest cores per axis that fit the
maximum tile size and then makes them as small as possible (balanced, rounded
up to the divisor), so a 2048-pixel axis with a 1024 maximum tile and a
56-pixel halo uses three 800-pixel tiles rather than three 1024 ones.  All
tiles have the same shape, so they batch.

Memory
------
Tiles are read from any array-like (numpy, ``np.memmap``, zarr, dask) one
batch at a time; nothing full-size in float is ever made here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

Box = tuple[slice, ...]


def round_up(n: int, d: int) -> int:
    """Smallest multiple of ``d`` that is >= ``n``."""
    return -(-int(n) // int(d)) * int(d)


def unet_receptive_radius(depth: int) -> int:
    """Receptive-field radius (pixels) of :class:`~napari_medseg.models.unet.UNet`.

    Sum over layers of ``(kernel - 1) * stride-product``: two 3x3 convs per
    level on both paths, a 2x2 pool and a 2x2 transposed conv between levels.
    Depth 4 gives a 103-pixel field, radius 52.
    """
    enc = sum(4 * 2**lv for lv in range(depth))
    dec = sum(4 * 2**lv for lv in range(depth - 1))
    pool_up = 2 * sum(2**lv for lv in range(depth - 1))
    return math.ceil((1 + enc + dec + pool_up) / 2)


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes
    ----------
    index : int
        Position in raster (C) order.
    start : tuple of int
        Image coordinate of the tile's first pixel (may be negative: halo
        beyond the image border).
    core : tuple of slice
        Image region this tile is responsible for, clipped to the image.
    core_in_tile : tuple of slice
        The same region in tile coordinates.
    """

    index: int
    start: tuple[int, ...]
    core: Box
    core_in_tile: Box


class TileGrid:
    """Plan of equal tiles (core + halo) covering an image.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the image (Y, X) or (Z, Y, X).
    max_tile : int or sequence of int
        Largest tile (core + 2 halo) per axis, in pixels.
    halo : int or sequence of int
        Margin on each side of a core, per axis; rounded up to ``divisor``.
    divisor : int or sequence of int
        Tile starts and sizes are multiples of it (the U-Net's pooling
        factor), per axis.

    Raises
    ------
    ParameterError
        If a tile leaves no core (``max_tile <= 2 * halo``).
    """

    def __init__(self, shape: Sequence[int], max_tile: int | Sequence[int], halo: int | Sequence[int],
                 divisor: int | Sequence[int] = 1) -> None:
        self.shape = tuple(int(s) for s in shape)
        nd = len(self.shape)
        mt = _per_axis(max_tile, nd, "tile size")
        ha = _per_axis(halo, nd, "halo")
        dv = _per_axis(divisor, nd, "divisor")
        if any(s < 1 for s in self.shape):
            raise ParameterError(f"cannot tile an empty image of shape {self.shape}")
        if any(h < 0 for h in ha) or any(d < 1 for d in dv):
            raise ParameterError(f"halo {ha} must be >= 0 and divisor {dv} >= 1")
        self.divisor = dv
        self.halo = tuple(round_up(h, d) for h, d in zip(ha, dv, strict=False))
        core, counts = [], []
        for L, t, h, d in zip(self.shape, mt, self.halo, dv, strict=False):
            max_core = (t - 2 * h) // d * d
            if max_core < d:
                raise ParameterError(
                    f"tile size {t} leaves no core with a halo of {h} on each side; "
                    f"use a tile size of at least {2 * h + d}"
                )
            n = math.ceil(L / max_core)
            c = min(round_up(math.ceil(L / n), d), max_core)
            n = math.ceil(L / c)
            core.append(c)
            counts.append(n)
        self.core_shape = tuple(core)
        self.counts = tuple(counts)
        self.tile_shape = tuple(c + 2 * h for c, h in zip(self.core_shape, self.halo, strict=False))

    def __len__(self) -> int:
        return int(np.prod(self.counts))

    def __iter__(self):
        for i, pos in enumerate(itertools.product(*(range(n) for n in self.counts))):
            start = tuple(k * c - h for k, c, h in zip(pos, self.core_shape, self.halo, strict=False))
            core = tuple(slice(k * c, min((k + 1) * c, L)) for k, c, L in zip(pos, self.core_shape, self.shape, strict=False))
            cit = tuple(slice(h, h + (s.stop - s.start)) for s, h in zip(core, self.halo, strict=False))
            yield Tile(i, start, core, cit)

    @property
    def padded_pixels(self) -> int:
        """Pixels the network processes in all (tiles x tile size)."""
        return len(self) * int(np.prod(self.tile_shape))

    def __repr__(self) -> str:
        return (f"TileGrid(shape={self.shape}, tiles={self.counts}, tile={self.tile_shape}, "
                f"core={self.core_shape}, halo={self.halo})")


def _per_axis(v: int | Sequence[int], nd: int, what: str) -> tuple[int, ...]:
    if np.isscalar(v):
        return (int(v),) * nd
    v = tuple(int(x) for x in v)
    if len(v) != nd:
        raise ParameterError(f"{what} {v} must have one value per spatial axis ({nd})")
    return v


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map integer positions on an infinite mirror extension back into ``[0, n)``.

    Mirror without edge repeat (numpy ``np.pad(mode="reflect")``), period
    ``2 * (n - 1)``; a length-1 axis maps everything to 0.
    """
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


class ArraySource:
    """Read normalised, channel-first, mirror-padded regions of an array-like.

    Parameters
    ----------
    data : array-like
        numpy, ``np.memmap``, zarr or dask array (anything with ``shape`` and
        numpy-style basic slicing).  Only the regions asked for are read.
    axes : str
        One letter per axis of ``data`` from ``Z``, ``Y``, ``X``, ``C`` and
        ``S`` (RGB samples).  ``C``/``S`` become the channel axis.
    channels : sequence of int, optional
        Channels to keep, in this order (e.g. ``[0, 1, 2]`` drops alpha).
    low, high : ndarray of float, optional
        Per-channel intensities mapped to 0 and 1: ``(x - low) / (high - low)``.
    """

    def __init__(self, data, axes: str, channels: Sequence[int] | None = None,
                 low: np.ndarray | None = None, high: np.ndarray | None = None) -> None:
        axes = axes.upper()
        if len(axes) != len(data.shape):
            raise ParameterError(f"axes {axes!r} do not match an image with {len(data.shape)} dimensions")
        self.data = data
        self.axes = axes
        self.spatial_axes = [i for i, a in enumerate(axes) if a in "ZYX"]
        ch = [i for i, a in enumerate(axes) if a in "CS"]
        if len(ch) > 1:
            raise ParameterError(f"axes {axes!r} have more than one channel axis (C and S)")
        self.channel_axis = ch[0] if ch else None
        n_ch = 1 if self.channel_axis is None else int(data.shape[self.channel_axis])
        self.channels = list(range(n_ch)) if channels is None else [int(c) for c in channels]
        self.shape = tuple(int(data.shape[i]) for i in self.spatial_axes)
        self.low = None if low is None else np.asarray(low, np.float32).reshape(-1)
        self.high = None if high is None else np.asarray(high, np.float32).reshape(-1)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def read_raw(self, box: Box) -> np.ndarray:
        """Region inside the image (no padding) as ``(C, *spatial)`` in the source dtype."""
        idx: list = [slice(None)] * len(self.axes)
        for ax, s in zip(self.spatial_axes, box, strict=False):
            idx[ax] = s
        block = np.asarray(self.data[tuple(idx)])
        order = ([self.channel_axis] if self.channel_axis is not None else []) + self.spatial_axes
        block = block.transpose(order)
        if self.channel_axis is None:
            block = block[None]
        elif self.channels != list(range(block.shape[0])):
            block = block[self.channels]
        return block

    def read(self, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        """Normalised float32 ``(C, *shape)`` region starting at ``start``, mirror-padded."""
        box, takes = [], []
        for s, t, L in zip(start, shape, self.shape, strict=False):
            if s >= 0 and s + t <= L:
                box.append(slice(s, s + t))
                takes.append(None)
            else:
                m = reflect_index(np.arange(s, s + t), L)
                lo, hi = int(m.min()), int(m.max()) + 1
                box.append(slice(lo, hi))
                takes.append(m - lo)
        block = self.read_raw(tuple(box))
        for ax, take in enumerate(takes):
            if take is not None:
                block = np.take(block, take, axis=ax + 1)
        return self.normalize(block)

    def normalize(self, block: np.ndarray) -> np.ndarray:
        """Apply the per-channel limits to a ``(C, ...)`` block; returns float32."""
        out = block.astype(np.float32, copy=True)
        if self.low is not None:
            shp = (-1,) + (1,) * (out.ndim - 1)
            scale = 1.0 / np.maximum(self.high - self.low, 1e-6)
            out -= self.low.reshape(shp)
            out *= scale.reshape(shp).astype(np.float32)
        return out


class SliceStackSource:
    """2.5D input: each plane read with its ``k`` neighbours on either side along the first axis, as channels.

    Wraps an :class:`ArraySource` of a ``(Z, Y, X)`` image read by a 2D model
    plane by plane (tiles one plane thick along Z).  A tile at plane ``z``
    becomes ``(C * (2k + 1), 1, *tile)``: the channels of planes ``z - k``
    ... ``z + k`` in that order, mirrored at the volume's ends (as
    :func:`reflect_index`; training must stack slices the same way:
    :func:`slice_stack`).

    Parameters
    ----------
    source : ArraySource
    slices : int
        Planes per input, odd (``2k + 1``).
    """

    def __init__(self, source: ArraySource, slices: int) -> None:
        if slices < 1 or slices % 2 == 0:
            raise ParameterError(f"a 2.5D model needs an odd number of slices, got {slices}")
        self.source = source
        self.k = (int(slices) - 1) // 2
        self.shape = source.shape

    @property
    def n_channels(self) -> int:
        return self.source.n_channels * (2 * self.k + 1)

    def read(self, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        """Normalised float32 ``(C * slices, 1, *shape[1:])`` input of the plane ``start[0]``."""
        if int(shape[0]) != 1:
            raise ParameterError(f"2.5D tiles are one plane thick along Z, got {tuple(shape)}")
        z = int(start[0])
        planes = reflect_index(np.arange(z - self.k, z + self.k + 1), self.shape[0])
        return np.concatenate([self.source.read((int(p), *start[1:]), shape) for p in planes], axis=0)


def slice_stack(volume: np.ndarray, slices: int) -> np.ndarray:
    """``(Z, Y, X)`` -> ``(Z, Y, X, slices)``: each plane with its neighbours as channels (:class:`SliceStackSource`).

    Planes ``z - k`` ... ``z + k`` (``k = (slices - 1) // 2``), mirrored at the ends as the engine reads them;
    the training side of a 2.5D model.
    """
    k = (int(slices) - 1) // 2
    n = volume.shape[0]
    idx = reflect_index(np.arange(n)[:, None] + np.arange(-k, k + 1)[None, :], n)
    return np.moveaxis(volume[idx], 1, -1)


def read_batch(source: ArraySource, grid: TileGrid, tiles: Sequence[Tile]) -> np.ndarray:
    """Stack the tiles' inputs into ``(B, C, *tile_shape)`` float32."""
    return np.stack([source.read(t.start, grid.tile_shape) for t in tiles])
