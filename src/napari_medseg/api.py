"""The public verbs of napari-medseg, usable without napari.

>>> import napari_medseg as ms                                   # doctest: +SKIP
>>> labels = ms.segment(image)                                   # doctest: +SKIP
>>> labels, probs = ms.segment(image, "nuclei", return_probabilities=True)  # doctest: +SKIP
>>> nuclei_3d = ms.segment(stack, "nuclei", scale=(2.0, 0.5, 0.5), do_3d=True)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .progress import Progress, run


def segment(
    image,
    model: str | os.PathLike = "auto",
    *,
    axes: str | None = None,
    scale: Sequence[float] | None = None,
    device: str = "auto",
    tile_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    return_probabilities: bool = False,
    progress: Callable[[Progress], Any] | None = None,
    out=None,
    **kwargs,
):
    """Segment an image (nuclei, cells, organs...) with a U-Net model.

    Parameters
    ----------
    image : array-like or Volume
        ``YX``, ``YXS`` (RGB), ``CYX``, ``ZYX``, ``ZCYX``... numpy, dask,
        zarr or ``np.memmap`` array; large ones are read tile by tile.
    model : str or path
        Model name, model folder, or ``"auto"`` (``nuclei-he`` for RGB,
        ``nuclei`` for grey images).
    axes : str, optional
        Axis letters (``Z Y X C S``); guessed from the shape when None:
        2D -> ``YX``, 3D ending in 3/4 -> ``YXS``, other 3D -> ``ZYX``.
    scale : sequence of float, optional
        Physical pixel size per spatial axis (Z, Y, X order); the image is
        resampled to the model's pixel size when they differ by > 5 %.
    device : {"auto", "cpu", "cuda", "mps"}
    tile_size, batch_size : int, optional
        Largest tile edge (pixels) and tiles per forward pass.
    return_probabilities : bool
        Also return the probability maps, ``(K, (Z,) Y, X)`` float16.
    progress : callable, optional
        Called with each :class:`~napari_medseg.progress.Progress`.
    out : array-like, optional
        Preallocated integer array (e.g. ``np.memmap``, zarr) of the image's
        spatial shape to write the labels into (returned).
    **kwargs
        ``halo``, ``postprocess``, ``cancel``, ``units``, ``precision``,
        ``tta``, ``do_3d``: see
        :func:`napari_medseg.inference.dispatch.segment_any_iter`.  ``do_3d=True``
        gives 3D objects in a Z stack from a 2D instance model (planes along
        Z, Y and X, Z resampled to isotropic voxels from ``scale``; see
        :mod:`napari_medseg.inference.ortho3d`).

    Returns
    -------
    labels : ndarray of uint16/uint32 (or ``out``)
        ``(Z,) Y, X``; 0 background, objects (or classes) from 1.
    probabilities : ndarray of float16
        Only when ``return_probabilities`` is True.

    Examples
    --------
    >>> import numpy as np, napari_medseg as ms                      # doctest: +SKIP
    >>> labels = ms.segment(np.random.rand(256, 256), "nuclei")      # doctest: +SKIP
    """
    from .inference.dispatch import segment_any_iter

    res = run(
        segment_any_iter(image, model, axes=axes, scale=scale, device=device, tile_size=tile_size,
                     batch_size=batch_size, return_probabilities=return_probabilities, out=out, **kwargs),
        progress,
    )
    if return_probabilities:
        return res.labels, res.probabilities
    return res.labels


def list_models():
    """Models available by name (shipped, then user), as :class:`~napari_medseg.models.registry.ModelInfo`."""
    from .models.registry import list_models as _list

    return _list()


def load_model(name_or_path: str | os.PathLike, device: str = "auto"):
    """Load ``(network, card)`` by model name or path, on ``device`` (cached per session).

    The network is in eval mode; do not train the returned object in place
    (it is shared): fine-tuning builds its own copy.
    """
    from .models.cache import get_model
    from .models.device import select_device
    from .models.registry import resolve_model

    info = resolve_model(name_or_path)
    dev, _ = select_device(device)
    return get_model(info.path, dev)
