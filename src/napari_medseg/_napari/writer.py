"""npe2 writer contributions: save a labels layer as a TIFF with its pixel size, or as NIfTI/NRRD
with the patient geometry of the image it was drawn on.

Importing this module must stay cheap (no torch, no napari, no Qt).
"""

from __future__ import annotations

from typing import Any

from ..errors import ParameterError
from .layers import geometry_from_state

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
    axes = _axes_from_meta(meta.get("metadata") or {}, ndim)
    # the pixel size is the length of each axis' step in the world: for a DICOM/NIfTI layer it
    # lives in the affine (scale 1); a TIFF cannot hold an oblique orientation or the origin
    geometry = geometry_from_state(axes or _default_axes(ndim), meta)
    written = write_labels_tiff(path, data, scale=tuple(float(s) for s in geometry.spacing),
                                units=list(geometry.units), axes=axes)
    return [str(written)]


def write_labels_volume(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer as NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``) with its full geometry.

    The layer's data -> world transform (``affine``, ``scale``, ``translate``,
    ``rotate``, ``shear``) becomes the file's voxel -> patient affine (LPS
    world converted to NIfTI's RAS), so the labels overlay their DICOM, NIfTI
    or NRRD series in napari, 3D Slicer, ITK-SNAP or nibabel.  A 4D (time)
    labels layer cannot be written this way.

    Parameters
    ----------
    path : str
        Destination; written atomically.
    data : array-like or list of array-like
        ``layer.data``: integer label ids, ``(Z, Y, X)`` or ``(Y, X)``.
    meta : dict
        The layer's attributes as napari gives them to writers.

    Returns
    -------
    list of str
        ``[path]``.
    """
    from ..io.radiology import write_labels_file

    if isinstance(data, list):
        data = data[0]
    ndim = len(data.shape)
    axes = _axes_from_meta(meta.get("metadata") or {}, ndim) or _default_axes(ndim)
    if axes not in ("ZYX", "YX"):
        raise ParameterError(f"{path}: NIfTI/NRRD labels are ZYX or YX, this layer has axes {axes!r}; "
                             "save one time point, or save as TIFF")
    geometry = geometry_from_state(axes, meta)
    return [str(write_labels_file(path, data, geometry))]


def _default_axes(ndim: int) -> str:
    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(ndim)
    if axes is None:
        raise ParameterError(f"labels with {ndim} dimensions cannot be saved; 2 to 4 (T, Z, Y, X) are supported")
    return axes


def _axes_from_meta(metadata: dict[str, Any], ndim: int) -> str | None:
    """Axes of the labels from the layer metadata, without C/S (labels have neither), if they fit."""
    axes = metadata.get("axes")
    if not isinstance(axes, str):
        return None
    world = "".join(a for a in axes.upper() if a not in "CS")
    if len(world) == ndim and set(world) <= set(_WORLD) and len(set(world)) == ndim and world.endswith("YX"):
        return world
    return None
