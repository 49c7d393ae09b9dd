"""Intensity normalisation of network inputs, as the model card asks.

``{"kind": "percentile", "low": 1, "high": 99.8}`` maps the per-channel
``low``-th percentile to 0 and the ``high``-th to 1 (no clipping), as
csbdeep/stardist do; with ``"nonzero": true`` the percentiles are taken over
the non-zero pixels only (skull-stripped MR: the brain, not the empty
background, so e.g. ``low 1, high 50`` maps the brain's median to 1 whatever
share of the volume the brain fills and however many bright lesions it has).
Percentiles come from a strided subsample of at most
:data:`MAX_SAMPLES` pixels, read with basic slicing, so dask, zarr and memmap
images are never loaded whole.  ``{"kind": "none"}`` (or no entry) leaves the
values as they are; ``{"kind": "fixed", "low": a, "high": b}`` uses fixed
limits (e.g. CT Hounsfield windows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ModelError

#: Largest number of pixels per channel read to estimate the percentiles.
MAX_SAMPLES = 2**22


def subsample(data, axes: str, max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """Strided subsample of ``data`` with at most ``max_samples`` pixels per channel.

    Returns the sample with the channel axis (``C``/``S``) first, shape ``(C, n)``.
    """
    axes = axes.upper()
    spatial = [i for i, a in enumerate(axes) if a in "ZYX"]
    n = int(np.prod([data.shape[i] for i in spatial]))
    step = max(1, math.ceil((n / max_samples) ** (1.0 / len(spatial))))
    idx = tuple(slice(None, None, step) if i in spatial else slice(None) for i in range(len(axes)))
    sample = np.asarray(data[idx])
    ch = [i for i, a in enumerate(axes) if a in "CS"]
    sample = np.moveaxis(sample, ch[0], 0).reshape(sample.shape[ch[0]], -1) if ch else sample.reshape(1, -1)
    return sample


def normalization_limits(data, axes: str, spec: dict | None, channels: Sequence[int] | None = None,
                         max_samples: int = MAX_SAMPLES) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Per-channel ``(low, high)`` intensities for a card's ``input.normalization``.

    Parameters
    ----------
    data : array-like
        Image (numpy, dask, zarr, memmap).
    axes : str
        Its axes (``ZYXCS`` letters).
    spec : dict or None
        The card's normalisation entry.
    channels : sequence of int, optional
        Channels used by the model (e.g. ``[0, 1, 2]`` to drop alpha).

    Returns
    -------
    low, high : ndarray of float32, shape (n_channels,), or (None, None) for no normalisation.
    """
    kind = (spec or {}).get("kind", "none")
    if kind in ("none", None):
        return None, None
    if kind == "fixed":
        lo, hi = float(spec["low"]), float(spec["high"])
        n = len(channels) if channels is not None else 1
        return np.full(n, lo, np.float32), np.full(n, hi, np.float32)
    if kind != "percentile":
        raise ModelError(f"unknown input normalization {kind!r} in the model card; expected 'percentile', 'fixed' or 'none'")
    sample = subsample(data, axes, max_samples)
    if channels is not None:
        sample = sample[list(channels)]
    qs = [float(spec.get("low", 1.0)), float(spec.get("high", 99.8))]
    sample = sample.astype(np.float32)
    if not spec.get("nonzero", False):
        q = np.percentile(sample, qs, axis=1)
        return q[0].astype(np.float32), q[1].astype(np.float32)
    q = np.zeros((2, sample.shape[0]), np.float32)
    for c, row in enumerate(sample):
        nz = row[row != 0]
        q[:, c] = np.percentile(nz if nz.size else row, qs)
    return q[0], q[1]


def normalized_channels_first(image: np.ndarray, spec: dict | None) -> np.ndarray:
    """A whole 2D image normalised as a card's ``input.normalization`` says, as the network's input layout.

    Parameters
    ----------
    image : ndarray, ``(Y, X)`` or ``(Y, X, C)``
        Any numeric dtype, already holding the channels the model takes.
    spec : dict or None
        The card's normalisation entry (see :func:`normalization_limits`).

    Returns
    -------
    ndarray of float32, shape ``(C, Y, X)``
        ``(image - low) / (high - low)`` per channel (no clipping).
    """
    x = image[..., None] if image.ndim == 2 else image
    lo, hi = normalization_limits(x, "YXC", spec)
    z = x.astype(np.float32) if lo is None else (x.astype(np.float32) - lo) / (hi - lo)
    return np.ascontiguousarray(np.moveaxis(z, -1, 0), dtype=np.float32)
