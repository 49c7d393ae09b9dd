"""Image preparation for the engine: axes, scale, channels, zoom to the model, the tile plan.

Everything :func:`~napari_medseg.inference.segment.segment_iter` and the
3D-from-2D path (:mod:`.ortho3d`) decide about an image before any tile is
read: which array to read (:func:`unpack_image`), what its axes are
(:func:`infer_axes`, :func:`check_axes`), whether ``scale`` and ``out`` fit
it (:func:`check_scale`, :func:`check_out`), which of its channels the model
takes (:func:`model_channels`), how far its pixels are from the model's
(:func:`zoom_to_model`, or :func:`zoom_for_diameter` when the user gives
the objects' size) and how it is cut into tiles (:func:`plan_tiles`).
:func:`prepare_image` runs the image checks in the engine's order.  Only
numpy is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelError, ParameterError
from ..geometry import convert, is_length, is_pixel, is_volume, normalize_unit, per_axis
from .tiling import TileGrid, unet_receptive_radius

#: Largest tile edge (pixels) by model dimensionality when ``tile_size`` is None.
DEFAULT_TILE = {2: 1024, 3: 128}
#: ... for 2D models on the CPU: bigger tiles spend less on halos (4096^2 image: 1.18x the
#: pixels through the network instead of 1.31x with 1024), at ~0.8 GB for one 2048^2 bfloat16 pass.
#: Smaller tiles run faster per pixel (caches: 4.5 MPx/s on 936^2 vs 3.2-3.4 on 1480^2,
#: ``benchmarks/bench_tile_size.py``), but measured end to end 1024 was no faster (8.28 vs 8.29 s on
#: 4096^2: the per-tile work around the network grew with 25 tiles instead of 9); BENCHMARKS.md, issue 17.
DEFAULT_CPU_TILE_2D = 2048


def default_tile_size(mdims: int, device_type: str) -> int:
    """Largest tile edge when the caller gives none: :data:`DEFAULT_CPU_TILE_2D` for 2D on the CPU, else :data:`DEFAULT_TILE`."""
    return DEFAULT_CPU_TILE_2D if mdims == 2 and device_type == "cpu" else DEFAULT_TILE[mdims]
#: Relative pixel-size mismatch above which tiles are resampled.
RESAMPLE_TOLERANCE = 0.05
#: Largest resampling factor accepted (beyond it the units are probably wrong).
MAX_ZOOM = 16.0


def unpack_image(image, axes: str | None, scale, units):
    """``(array, axes, scale, units)`` from a Volume, a multiscale list (level 0 is used) or an array-like.

    A :class:`~napari_medseg.geometry.Volume` fills in ``axes``, and ``scale`` /
    ``units`` of its Z, Y, X axes where they were not given: the length of
    each axis' step in the world (the affine's column norms, so DICOM and
    NIfTI volumes, whose spacing lives in the affine, are right too).
    """
    if is_volume(image):
        vol = image
        image = vol.data[0] if isinstance(vol.data, list) else vol.data
        axes = axes or vol.axes
        if scale is None:
            g = vol.spatial_geometry()
            if g.calibrated:
                scale = [float(s) for s in g.spacing]
                if units is None:
                    units = list(g.units)
    if isinstance(image, (list, tuple)) and image and hasattr(image[0], "shape"):
        image = image[0]  # multiscale pyramid (napari layer data): full resolution
    if not hasattr(image, "shape") or not hasattr(image, "__getitem__"):
        image = np.asarray(image)
    return image, axes, scale, units


def check_scale(scale: Sequence[float] | None, spatial_axes: str) -> list[float] | None:
    """``scale`` as floats, one positive finite pixel size per spatial axis (None stays None)."""
    if scale is None:
        return None
    scale = [float(s) for s in scale]
    if len(scale) != len(spatial_axes):
        raise ParameterError(f"scale {tuple(scale)} needs one value per spatial axis {spatial_axes!r}")
    if any(not (s > 0 and math.isfinite(s)) for s in scale):
        raise ParameterError(f"scale {tuple(scale)} must be positive")
    return scale


def check_out(out, spatial_shape: Sequence[int], spatial_axes: str) -> None:
    """Raise ParameterError unless ``out`` (if given) is an integer array of the labels' shape."""
    if out is None:
        return
    if tuple(out.shape) != tuple(spatial_shape):
        raise ParameterError(f"out has shape {tuple(out.shape)}; the labels need {tuple(spatial_shape)} "
                             f"({spatial_axes})")
    if not np.issubdtype(np.dtype(out.dtype), np.integer):
        raise ParameterError(f"out must have an integer dtype, not {out.dtype}")


def model_channels(card, n_img_ch: int, is_rgb: bool, axes: str) -> list[int] | None:
    """Image channels to feed ``card``'s model: None (all), ``[0, 1, 2]`` (RGBA without alpha); else ModelError.

    A 2.5D model (``card.slices > 1``) takes ``in_channels / slices`` channels per plane.
    """
    m_ch = card.image_channels
    if n_img_ch == m_ch:
        return None
    if is_rgb and n_img_ch == 4 and m_ch == 3:
        return [0, 1, 2]  # drop alpha
    what = "RGB" if is_rgb else f"{n_img_ch}-channel"
    raise ModelError(
        f"model {card.name!r} takes {m_ch}-channel ({card.input.get('color', '?')}) images but this is a "
        f"{what} image (axes {axes!r}); choose a matching model or pick the channel(s) first"
    )


def infer_axes(shape: Sequence[int]) -> str:
    """Axes of an image from its shape alone.

    2D -> ``YX``; 3D with a last axis of 3 or 4 -> ``YXS`` (RGB/RGBA);
    other 3D -> ``ZYX``; 4D with a last axis of 3 or 4 -> ``ZYXS``.
    Anything else needs explicit ``axes``.
    """
    nd = len(shape)
    if nd == 2:
        return "YX"
    if nd == 3:
        return "YXS" if shape[-1] in (3, 4) else "ZYX"
    if nd == 4 and shape[-1] in (3, 4):
        return "ZYXS"
    raise ParameterError(
        f"cannot guess the axes of an image of shape {tuple(shape)}; pass axes= (e.g. 'CYX', 'ZCYX', 'ZYX')"
    )


def check_axes(axes: str, ndim: int) -> str:
    """``axes`` upper-cased, after checking it fits an image with ``ndim`` dimensions.

    Each of ``Z Y X C S`` at most once, ``Y`` and ``X`` present, not both
    ``C`` and ``S``, no ``T`` (one time point at a time); else ParameterError.
    """
    axes = axes.upper()
    if len(axes) != ndim:
        raise ParameterError(f"axes {axes!r} have {len(axes)} letters for an image with {ndim} dimensions")
    if "T" in axes:
        raise ParameterError("segment one time point at a time: select an index along T first")
    bad = set(axes) - set("ZYXCS")
    if bad or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes) or ("C" in axes and "S" in axes):
        raise ParameterError(f"axes {axes!r} must use each of Z, Y, X, C (or S) at most once and include Y and X")
    return axes


@dataclass(frozen=True)
class PreparedImage:
    """An image as the engine reads it, after :func:`prepare_image`'s checks.

    Attributes
    ----------
    data : array-like
        The array to read tiles from (level 0 of a pyramid, a Volume's data).
    axes : str
        One upper-case letter per axis of ``data`` (``Z Y X C S``).
    spatial_axes : str
        The ``Z``/``Y``/``X`` letters of ``axes``, in order.
    spatial_shape : tuple of int
        Size along each of ``spatial_axes`` (the labels' shape).
    n_channels : int
        Size of the ``C``/``S`` axis, 1 without one.
    is_rgb : bool
        An ``S`` axis of 3 or 4 (RGB/RGBA samples).
    scale : list of float or None
        Pixel size per spatial axis (checked positive).
    units : str, sequence of str or None
        Unit(s) of ``scale``, as given.
    """

    data: Any
    axes: str
    spatial_axes: str
    spatial_shape: tuple[int, ...]
    n_channels: int
    is_rgb: bool
    scale: list[float] | None
    units: Any


def prepare_image(image, axes: str | None = None, scale: Sequence[float] | None = None, units=None,
                  out=None) -> PreparedImage:
    """Unpack ``image``, settle its axes and check ``scale`` and ``out`` against it.

    ``image``, ``axes``, ``scale``, ``units`` and ``out`` mean what they mean
    for :func:`~napari_medseg.inference.segment.segment_iter`; None axes are
    guessed by :func:`infer_axes`.  Raises ParameterError for bad axes, an
    empty image, a bad ``scale`` or an ``out`` of the wrong shape or dtype.
    """
    image, axes, scale, units = unpack_image(image, axes, scale, units)
    shape = tuple(int(s) for s in image.shape)
    axes = check_axes(axes if axes is not None else infer_axes(shape), len(shape))
    spatial_axes = "".join(a for a in axes if a in "ZYX")
    spatial_shape = tuple(shape[axes.index(a)] for a in spatial_axes)
    if min(spatial_shape) < 1:
        raise ParameterError(f"the image is empty (shape {shape})")
    ch_axis = next((i for i, a in enumerate(axes) if a in "CS"), None)
    n_img_ch = 1 if ch_axis is None else shape[ch_axis]
    is_rgb = "S" in axes and n_img_ch in (3, 4)
    scale = check_scale(scale, spatial_axes)
    check_out(out, spatial_shape, spatial_axes)
    return PreparedImage(image, axes, spatial_axes, spatial_shape, n_img_ch, is_rgb, scale, units)


def zoom_to_model(card, scale, units, n_extra: int) -> list[float]:
    """Image pixel size / model pixel size per model axis (1.0 where unknown).

    Parameters
    ----------
    card : ModelCard
        Gives ``pixel_size`` (one value per model axis) and ``pixel_unit``.
    scale : sequence of float or None
        The image's pixel size per spatial axis (Z, Y, X order).
    units : str, sequence of str or None
        Unit of ``scale`` (one for all or one per spatial axis); None: the
        card's unit.  A pixel unit (``"px"``, ``"pixel"``...) means
        uncalibrated: all 1.0.  Units are compared through the one unit table
        (:mod:`napari_medseg.geometry.units`): a µm model gets a mm image at
        the right size, exactly.
    n_extra : int
        Leading spatial axes the model does not see (Z for a 2D model on a
        stack); their scale is ignored.

    Returns
    -------
    list of float
        One factor per model axis; > 1 when the image's pixels are larger.

    Raises
    ------
    ParameterError
        Units that cannot be compared, or a factor beyond :data:`MAX_ZOOM`.
    """
    mdims = card.dims
    ps = card.pixel_size
    if ps is None or scale is None:
        return [1.0] * mdims
    if len(ps) != mdims:
        raise ModelError(f"model {card.name!r}: pixel_size {ps} needs {mdims} values")
    m_unit = normalize_unit(card.input.get("pixel_unit", "µm"))
    if is_pixel(m_unit):
        return [1.0] * mdims
    img_scale = list(scale[n_extra:])
    if units is not None:
        us = list(per_axis(units, len(scale)))[n_extra:]
        if any(is_pixel(u) for u in us):
            return [1.0] * mdims  # uncalibrated image: nothing to match
        if is_length(m_unit) and all(is_length(u) for u in us):
            img_scale = [convert(s, u, m_unit) for s, u in zip(img_scale, us, strict=True)]
        elif any(u != m_unit for u in us):
            raise ParameterError(f"cannot compare the image's units {tuple(us)} with the model's {m_unit!r}")
    zoom = [s / p for s, p in zip(img_scale, ps, strict=False)]
    if any(not (1 / MAX_ZOOM <= z <= MAX_ZOOM) for z in zoom):
        raise ParameterError(
            f"image pixel size {tuple(img_scale)} {m_unit} is {max(max(zoom), 1 / min(zoom)):.0f}x away from the "
            f"model's {tuple(ps)} {m_unit}: check the image's scale/units (or pass scale=None to skip resampling)"
        )
    return zoom


def card_object_diameter(card) -> float | None:
    """The typical object diameter (model pixels) the model was trained on, from its card; None if unknown.

    ``input.typical_object_diameter_px`` or ``training.typical_object_diameter_px``
    (the median equivalent-circle diameter of the training objects, written
    by ``scripts/train_default_models.py`` and by fine-tuning).
    """
    for part in (card.input, card.training):
        v = (part or {}).get("typical_object_diameter_px")
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v) and v > 0:
            return v
    return None


def diameter_in_pixels(diameter: float, unit: str | None, scale: Sequence[float] | None,
                       units: str | Sequence[str] | None) -> list[float]:
    """An object diameter in image pixels along Y and X (the last two spatial axes).

    Parameters
    ----------
    diameter : float
        The objects' typical diameter, in ``unit``.
    unit : str or None
        ``None``, ``"px"`` or ``"pixel"``: already pixels; a length unit
        (``"µm"``, ``"mm"``...): converted with the image's pixel size.
    scale, units
        The image's pixel size per spatial axis (Z, Y, X order) and unit(s);
        needed for a length ``unit``.

    Raises
    ------
    ParameterError
        A non-positive diameter, a length diameter on an image without a
        physical pixel size, or units that do not compare.
    """
    d = float(diameter)
    if not (d > 0 and math.isfinite(d)):
        raise ParameterError(f"the object diameter must be a positive number, got {diameter}")
    if unit is None or is_pixel(normalize_unit(unit)):
        return [d, d]
    u = normalize_unit(unit)
    if not is_length(u):
        raise ParameterError(f"diameter unit {unit!r} is not a length (µm, mm, nm...) or px")
    us = None if units is None else list(per_axis(units, len(scale))) if scale is not None else None
    if scale is None or us is None or any(not is_length(x) for x in us[-2:]):
        raise ParameterError(f"a diameter of {d:g} {u} needs the image's pixel size, and this image has none: "
                             "give the diameter in pixels, or the pixel size (medseg segment --voxel-size)")
    return [convert(d, u, us[i]) / float(scale[i]) for i in (-2, -1)]


def zoom_for_diameter(card, diameter: float | Sequence[float], mdims: int) -> list[float]:
    """Zoom per model axis that makes objects of ``diameter`` image pixels the card's typical diameter.

    ``card_diameter / diameter`` (> 1 enlarges small objects); one value, or
    one per model axis (Y, X; a 3D model takes the first for Z too).

    Raises
    ------
    ParameterError
        The card says nothing of its objects' size, or the zoom is beyond
        :data:`MAX_ZOOM`.
    """
    ref = card_object_diameter(card)
    if ref is None:
        raise ParameterError(f"model {card.name!r} does not say how large its objects were "
                             "(no typical_object_diameter_px in its card): give the pixel size instead of a diameter")
    ds = [float(diameter)] * 2 if np.isscalar(diameter) else [float(v) for v in diameter]
    if len(ds) == 1:
        ds = ds * 2
    if any(not (v > 0 and math.isfinite(v)) for v in ds):
        raise ParameterError(f"the object diameter must be positive, got {diameter}")
    ds = ds[-2:] if mdims == 2 else [ds[0], *ds[-2:]]
    zoom = [ref / v for v in ds]
    if any(not (1 / MAX_ZOOM <= z <= MAX_ZOOM) for z in zoom):
        raise ParameterError(f"objects of {tuple(round(v, 3) for v in ds)} px are more than {MAX_ZOOM:g}x away from "
                             f"the {ref:g} px the model {card.name!r} was trained on: check the diameter")
    return zoom


def plan_tiles(spatial_shape: Sequence[int], mdims: int, divisor: int, depth: int,
               tile_size: int | Sequence[int] | None = None, halo: int | Sequence[int] | None = None,
               zoom: Sequence[float] | None = None) -> tuple[TileGrid, list[int] | None]:
    """The tile plan :func:`~napari_medseg.inference.segment.segment_iter` uses (see its ``tile_size`` and ``halo``).

    Returns the :class:`TileGrid` over the image's spatial axes (leading axes
    beyond the model's dimensionality get 1-pixel tiles) and, when ``zoom``
    (image / model pixel size per model axis) is given, the tile shape the
    network sees after resampling.
    """
    d = int(divisor)
    n_extra = len(spatial_shape) - mdims
    if tile_size is None:
        tmax = [DEFAULT_TILE[mdims]] * mdims
    else:
        tmax = [int(tile_size)] * mdims if np.isscalar(tile_size) else [int(v) for v in tile_size]
        if len(tmax) != mdims:
            raise ParameterError(f"tile_size {tuple(tmax)} needs one value per model axis ({mdims})")
        if any(v < d for v in tmax):
            raise ParameterError(f"tile_size {tuple(tmax)} must be at least {d} (the network's divisor)")
    rf = unet_receptive_radius(depth)
    if halo is None:
        # exact (receptive-field) halo unless that would eat more than half the tile
        hal = [min(rf, (v // 4) // d * d) for v in tmax]
    else:
        hal = [int(halo)] * mdims if np.isscalar(halo) else [int(v) for v in halo]
        if len(hal) != mdims:
            raise ParameterError(f"halo {tuple(hal)} needs one value per model axis ({mdims})")
    if zoom is not None:  # plan in image pixels; tiles are resized to multiples of d
        g_tile = [max(1, int(v / z)) for v, z in zip(tmax, zoom, strict=False)]
        g_halo = [math.ceil(h / z) for h, z in zip(hal, zoom, strict=False)]
        g_div = [1] * mdims
    else:
        g_tile, g_halo, g_div = tmax, hal, [d] * mdims
    grid = TileGrid(spatial_shape, [1] * n_extra + g_tile, [0] * n_extra + g_halo, [1] * n_extra + g_div)
    model_tile = None
    if zoom is not None:
        model_tile = [max(d, int(round(t * z / d)) * d) for t, z in zip(grid.tile_shape[n_extra:], zoom, strict=False)]
    return grid, model_tile
