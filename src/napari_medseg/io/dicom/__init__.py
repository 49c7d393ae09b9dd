"""DICOM reading: a file, a multi-frame file, a folder of series or a DICOMDIR -> Volumes.

Public entry points are :func:`read_dicom`, :func:`is_dicom_path` and
:class:`DicomWarning` (defined in :mod:`.series`, which also documents the
geometry convention).  The stages live in sibling modules:

* :mod:`.series`: find files, group frames into series, build the volumes;
* :mod:`.header`: DICOM headers -> per-frame records;
* :mod:`.geometry`: slice ordering and the index -> patient (LPS) affine;
* :mod:`.pixels`: pixel data and the rescale to real values;
* :mod:`.mosaic` and :mod:`.csa`: Siemens mosaics and their CSA header;
* :mod:`.seg`: DICOM-SEG objects as label volumes (:func:`read_dicom_seg`: on the referenced image's grid);
* :mod:`.seg_write`: labels on a series grid -> DICOM-SEG (:func:`write_dicom_seg`, highdicom);
* :mod:`.rtstruct`: RT Structure Sets rasterised onto their image (:func:`read_rtstruct`);
* :mod:`.refs`: the image a SEG/RTSTRUCT references, label grids moved onto image grids;
* :mod:`.tags`: fast access to string-valued elements.

:func:`read_dicom` reads images (and SEGs) and refuses an RTSTRUCT, which
has no pixels; :func:`napari_medseg.io.read` (and the napari reader) send a
single RTSTRUCT file to :func:`read_rtstruct` instead.

Importing this package is cheap: pydicom is imported on first read, and
nothing here imports napari or torch.
"""

from __future__ import annotations

import os
from typing import Any

from .series import DicomWarning, is_dicom_path, read_dicom


def read_rtstruct(path: str | os.PathLike, image: Any = None, **kwargs: Any) -> Any:
    """RTSTRUCT contours as labels on the grid of their image (see :func:`.rtstruct.read_rtstruct`)."""
    from .rtstruct import read_rtstruct as read

    return read(path, image, **kwargs)


def read_dicom_seg(path: str | os.PathLike, image: Any = None) -> Any:
    """A DICOM-SEG as labels on the grid of its image (see :func:`.seg.read_dicom_seg`)."""
    from .seg import read_dicom_seg as read

    return read(path, image)


def write_dicom_seg(path: str | os.PathLike, labels: Any, source: Any, segment_names: Any = None,
                    **kwargs: Any) -> Any:
    """Labels on a DICOM series' grid -> a DICOM-SEG file (see :func:`.seg_write.write_dicom_seg`)."""
    from .seg_write import write_dicom_seg as write

    return write(path, labels, source, segment_names, **kwargs)


def is_rtstruct_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM RT Structure Set file (see :func:`.rtstruct.is_rtstruct_file`).  Never raises."""
    from .rtstruct import is_rtstruct_file as check

    return check(path)


__all__ = ["DicomWarning", "is_dicom_path", "is_rtstruct_file", "read_dicom", "read_dicom_seg", "read_rtstruct",
           "write_dicom_seg"]
