"""npe2 reader contributions.  ``napari_get_reader`` style: return a callable or None, never raise.

Importing this module must stay cheap (no torch, no napari).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ..errors import ReaderError

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | list[str]


def _single(path: PathOrPaths) -> str | None:
    if isinstance(path, (list, tuple)):
        return str(path[0]) if len(path) == 1 else None
    return str(path)


def get_tiff_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return a reader for a single TIFF path, or None if this is not one."""
    from ..io import is_tiff_path

    p = _single(path)
    if p is None or not is_tiff_path(p) or not os.path.isfile(p):
        return None
    return _read_tiff_layers


def get_slide_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return a reader for a single whole-slide file (SVS, NDPI, SCN, BIF, QPTIFF), or None.

    TIFF and OME-TIFF pyramids open with :func:`get_tiff_reader`, which also
    makes them multiscale layers in µm.
    """
    from ..slides.pyramid import is_slide_path

    p = _single(path)
    if p is None or not is_slide_path(p) or not os.path.isfile(p):
        return None
    return read_slide_layers


def read_slide_layers(path: PathOrPaths) -> list[LayerData]:
    """The slide as one multiscale RGB (or grey) image layer, ``(y, x)`` in µm; associated images left out."""
    from ..slides.pyramid import open_slide

    return [open_slide(_single(path)).to_layer_data()]


def get_dicom_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return a reader for a DICOM file, series folder or DICOMDIR, or None."""
    from ..io.dicom import is_dicom_path

    p = _single(path)
    if p is None:
        return None
    try:
        ok = is_dicom_path(p)
    except Exception:  # never raise from the get_reader hook
        log.debug("is_dicom_path failed for %s", p, exc_info=True)
        return None
    return _read_dicom_layers if ok else None


def get_volume_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return a reader for a single NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``) file, or None."""
    from ..io.radiology import is_nifti_path, is_nrrd_path

    p = _single(path)
    if p is None or not (is_nifti_path(p) or is_nrrd_path(p)) or not os.path.isfile(p):
        return None
    return read_volume_layers


def read_volume_layers(path: PathOrPaths) -> list[LayerData]:
    """Layers of a NIfTI or NRRD file: data ``(Z, Y, X)``, affine to LPS ``(z, y, x)`` mm."""
    from ..io.radiology import is_nifti_path, read_nifti, read_nrrd

    p = _single(path)
    vols = read_nifti(p) if is_nifti_path(p) else read_nrrd(p)
    return [v.to_layer_data() for v in vols]


def _read_tiff_layers(path: PathOrPaths) -> list[LayerData]:
    from ..io.tiff import read_tiff

    p = _single(path)
    return [v.to_layer_data() for v in read_tiff(p)]


def _read_dicom_layers(path: PathOrPaths) -> list[LayerData]:
    from ..io.dicom import is_rtstruct_file, read_dicom, read_rtstruct

    p = _single(path)
    vols = [read_rtstruct(p, outside="skip")] if is_rtstruct_file(p) else read_dicom(p)
    if not vols:
        raise ReaderError(f"{p}: no DICOM image series found")
    return [with_segment_features(v.to_layer_data()) for v in vols]


def with_segment_features(layer: LayerData) -> LayerData:
    """Give a labels layer whose metadata names its segments (DICOM-SEG, RTSTRUCT) napari ``features``.

    One row per label value (``index``, background 0 included) with its
    ``name``, so napari shows the SegmentLabel / ROIName under the cursor.
    """
    data, kw, kind = layer
    names = (kw.get("metadata") or {}).get("segment_names")
    if kind == "labels" and names:
        ids = sorted(int(k) for k in names)
        kw["features"] = {"index": [0, *ids], "name": ["background", *(str(names[i]) for i in ids)]}
    return data, kw, kind
