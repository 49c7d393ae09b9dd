"""Inputs of fine-tuning: (image, labels) pairs put in (spatial..., channels-last) order and checked.

Part of :mod:`napari_medseg.training.finetune`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ParameterError
from ...geometry import convert, is_length, is_volume


@dataclass
class TrainingPair:
    """One (image, labels) training pair, checked and put in (spatial..., channels-last) order.

    Attributes
    ----------
    image : array-like
        Spatial axes then channels last: ``(Y, X[, C])`` or ``(Z, Y, X[, C])``;
        numpy or dask, raw intensities.
    labels : ndarray of int
        ``(Y, X)`` or ``(Z, Y, X)``, the image's spatial shape; 0 = not painted.
    name : str
        Name for reports and the model card.
    channels : int
        Number of image channels (1 without a channel axis; alpha dropped).
    rgb : bool
        Whether the channels are RGB.
    scale_yx : tuple of float, optional
        Pixel size (Y, X); None when unknown.
    """

    image: Any  # array-like, spatial axes then channels last: (Y,X,C) / (Z,Y,X,C); C may be absent
    labels: np.ndarray  # (Y,X) / (Z,Y,X) int
    name: str
    channels: int
    rgb: bool
    scale_yx: tuple[float, float] | None


def as_pair(image, labels, name: str, scale) -> TrainingPair:
    """Put an image and its labels in (spatial..., channels-last) order and check them.

    Parameters
    ----------
    image : array-like or Volume
        ``(Y, X)``, ``(Y, X, C)``, ``(Z, Y, X)`` or ``(Z, Y, X, C)``; channels
        first is recognised too.  A Volume gives its axes, name and pixel size.
    labels : array-like of int, or Volume
        ``(Y, X)`` or ``(Z, Y, X)`` on the image grid.
    name : str
        Name of the pair ("" to take a Volume's name).
    scale : sequence of float, optional
        Pixel size ((Z,) Y, X).

    Returns
    -------
    TrainingPair

    Raises
    ------
    ParameterError
        Non-integer or negative labels, a time axis, or shapes that do not match.
    """
    axes = None
    if is_volume(image):
        vol = image
        image, axes = (vol.data[0] if isinstance(vol.data, list) else vol.data), vol.axes.upper()
        name = name or vol.name or ""
        g = vol.spatial_geometry()
        if scale is None and g.calibrated and all(is_length(u) for u in g.units):
            scale = [convert(s, u, "µm") for s, u in zip(g.spacing, g.units, strict=False)]  # training works in µm
    if is_volume(labels):
        labels = labels.data[0] if isinstance(labels.data, list) else labels.data
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise ParameterError(f"labels of {name!r} must be integers, got dtype {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise ParameterError(f"labels of {name!r} must be 2D (Y, X) or 3D (Z, Y, X), got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ParameterError(f"labels of {name!r} have negative values")
    if not hasattr(image, "shape") or not hasattr(image, "__getitem__"):
        image = np.asarray(image)
    shape = tuple(int(s) for s in image.shape)
    if axes is not None:
        if "T" in axes:
            raise ParameterError(f"image {name!r} has a time axis: pick one time point first")
        ch = next((i for i, a in enumerate(axes) if a in "CS"), None)
        if ch is not None and ch != len(axes) - 1:
            image = _moveaxis(image, ch, -1)
            shape = tuple(int(s) for s in image.shape)
    elif shape != labels.shape and len(shape) == labels.ndim + 1 and shape[:-1] != labels.shape:
        # channels first: (C, Y, X) or (Z, C, Y, X)
        if shape[1:] == labels.shape:
            image = _moveaxis(image, 0, -1)
        elif labels.ndim == 3 and shape[0] == labels.shape[0] and shape[2:] == labels.shape[1:]:
            image = _moveaxis(image, 1, -1)
        shape = tuple(int(s) for s in image.shape)
    if shape == labels.shape:
        channels, rgb = 1, False
    elif len(shape) == labels.ndim + 1 and shape[:-1] == labels.shape:
        channels = shape[-1]
        rgb = channels in (3, 4)
        if channels == 4:
            image = image[..., :3]  # drop alpha
            channels = 3
    else:
        raise ParameterError(
            f"image {name!r} of shape {shape} does not match its labels of shape {labels.shape}: the labels need "
            "the image's spatial shape ((Z,) Y, X); channels may come first or last")
    scale_yx = None
    if scale is not None:
        s = [float(v) for v in scale]
        if len(s) < 2 or any(not (v > 0 and math.isfinite(v)) for v in s):
            raise ParameterError(f"scale of {name!r} must be positive pixel sizes ((Z,) Y, X), got {scale}")
        scale_yx = (s[-2], s[-1])
    return TrainingPair(image, labels, name, channels, rgb, scale_yx)


def _moveaxis(a, src: int, dst: int):
    if isinstance(a, np.ndarray):
        return np.moveaxis(a, src, dst)
    try:  # dask and friends
        import dask.array as da

        return da.moveaxis(da.asarray(a), src, dst)
    except ImportError:  # pragma: no cover
        return np.moveaxis(np.asarray(a), src, dst)


def per_image(value, n: int, what: str) -> list:
    """One entry per image: ``value`` repeated when it is None or one vector of numbers, else its items.

    Parameters
    ----------
    value : None, sequence of float, or sequence of per-image values
        E.g. a pixel size for all images, or one per image.
    n : int
        Number of images.
    what : str
        Name of the argument, for the error message.

    Returns
    -------
    list
        ``n`` entries.

    Raises
    ------
    ParameterError
        When a per-image sequence does not have ``n`` entries.
    """
    if value is None:
        return [None] * n
    if np.ndim(value) == 1 and all(np.isscalar(v) for v in value):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ParameterError(f"{what} has {len(value)} entries for {n} images")
    return value
