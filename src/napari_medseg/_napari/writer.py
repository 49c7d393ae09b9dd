"""npe2 writer contribution: save a labels layer as a TIFF with its pixel size.

Importing this module must stay cheap (no torch, no napari, no Qt).
"""

from __future__ import annotations

from typing import Any

_WORLD = "TZYX"


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer to ``path`` (napari's single-layer writer hook).

    Parameters
    ----------
    path : str
        Destination ``.tif``/``.tiff`` file; napari has already asked about
        overwriting.  The file is written atomically.
    data : array-like or list of array-like
        ``layer.data``: integer label ids, 2 to 4 dimensions.  For a multiscale
        layer the full-resolution level (first) is written.
    meta : dict
        ``layer._get_state()``-like attributes: ``scale`` (one per axis),
        ``units`` (pint units or strings, one per axis) and ``metadata``,
        whose ``axes`` (e.g. ``"ZYX"``, or the image's ``"CZYX"`` it was drawn
        on) names the axes when it fits the data.

    Returns
    -------
    list of str
        ``[path]``.
    """
    from ..io.tiff import write_labels_tiff

    if isinstance(data, list):
        data = data[0]
    ndim = len(data.shape)
    scale = meta.get("scale")
    units = meta.get("units")
    if units is not None:
        units = [str(u) for u in units]
    axes = _axes_from_meta(meta.get("metadata") or {}, ndim)
    written = write_labels_tiff(path, data, scale=scale, units=units, axes=axes)
    return [str(written)]


def _axes_from_meta(metadata: dict[str, Any], ndim: int) -> str | None:
    """Axes of the labels from the layer metadata, without C/S (labels have neither), if they fit."""
    axes = metadata.get("axes")
    if not isinstance(axes, str):
        return None
    world = "".join(a for a in axes.upper() if a not in "CS")
    if len(world) == ndim and set(world) <= set(_WORLD) and len(set(world)) == ndim and world.endswith("YX"):
        return world
    return None
