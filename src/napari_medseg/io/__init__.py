"""File readers and writers: paths in, :class:`~napari_medseg.geometry.Volume` out.

No napari, Qt or torch here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ReaderError

if TYPE_CHECKING:  # the package stays cheap to import (the CLI reads its picture suffixes at start-up)
    from ..geometry import Volume

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")


def is_tiff_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a TIFF file by its suffix."""
    return str(path).lower().endswith(TIFF_SUFFIXES)


def read(path: str | os.PathLike) -> list[Volume]:
    """Read a TIFF, NIfTI or NRRD file, a DICOM file, a DICOM series folder or a DICOMDIR.

    A DICOM-SEG file gives a label volume (value = segment number); a DICOM
    RT Structure Set file gives its contours rasterised onto the image series
    it references in the same folder (:func:`~napari_medseg.io.dicom.read_rtstruct`,
    with contours off that series' slices dropped and reported).

    Parameters
    ----------
    path : str or path-like
        File or folder.

    Returns
    -------
    list of Volume
        One entry per image (a folder with several DICOM series gives several).

    Raises
    ------
    ReaderError
        When the path holds nothing this package can read; the message says why.
    """
    p = Path(path)
    if not p.exists():
        raise ReaderError(f"{p} does not exist")
    if p.is_file() and is_tiff_path(p):
        from .tiff import read_tiff

        return read_tiff(p)
    from .radiology import is_nifti_path, is_nrrd_path, read_nifti, read_nrrd

    if p.is_file() and is_nifti_path(p):
        return read_nifti(p)
    if p.is_file() and is_nrrd_path(p):
        return read_nrrd(p)
    from .dicom import is_dicom_path, is_rtstruct_file, read_dicom, read_rtstruct

    if p.is_file() and is_rtstruct_file(p):
        # contours rasterised onto the image series next to it; contours off its slices dropped with a warning
        return [read_rtstruct(p, outside="skip")]
    if is_dicom_path(p):
        return read_dicom(p)
    raise ReaderError(f"{p} is neither a TIFF, NIfTI or NRRD file nor DICOM data (file, series folder or DICOMDIR)")
