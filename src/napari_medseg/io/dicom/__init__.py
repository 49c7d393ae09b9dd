"""DICOM reading: a file, a multi-frame file, a folder of series or a DICOMDIR -> Volumes.

Public entry points are :func:`read_dicom`, :func:`is_dicom_path` and
:class:`DicomWarning` (defined in :mod:`.series`, which also documents the
geometry convention).  The stages live in sibling modules:

* :mod:`.series`: find files, group frames into series, build the volumes;
* :mod:`.header`: DICOM headers -> per-frame records;
* :mod:`.geometry`: slice ordering and the index -> patient (LPS) affine;
* :mod:`.pixels`: pixel data and the rescale to real values;
* :mod:`.mosaic` and :mod:`.csa`: Siemens mosaics and their CSA header;
* :mod:`.seg`: DICOM-SEG objects as label volumes;
* :mod:`.tags`: fast access to string-valued elements.

Importing this package is cheap: pydicom is imported on first read, and
nothing here imports napari or torch.
"""

from __future__ import annotations

from .series import DicomWarning, is_dicom_path, read_dicom

__all__ = ["DicomWarning", "is_dicom_path", "read_dicom"]
