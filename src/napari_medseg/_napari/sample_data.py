"""npe2 sample-data contributions: small real images behind *File > Open Sample*.

Each function reads the files shipped in ``napari_medseg/sample_data/`` (the
repository's top-level ``sample_data/`` folder, see ``setup.py``) with
the same reader code that *File > Open* uses (:func:`napari_medseg.io.read`)
and returns napari LayerData tuples ``(data, kwargs, layer_type)``.  Where a
ground-truth annotation exists it is returned as a second, ``labels`` layer.
Sources, licences and changes are listed in ``sample_data/PROVENANCE.md``.

Importing this module is cheap: no napari, Qt or torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ReaderError
from ..io.samples import (
    HE_IMAGE,
    HE_LABELS,
    MR_SERIES,
    NUCLEI_IMAGE,
    NUCLEI_LABELS,
    SAMPLE_DIR,  # noqa: F401  (re-exported: tests and the wheel check read it here)
    sample_path,
)

LayerData = tuple[Any, dict[str, Any], str]

#: Opacity of a sample's ground-truth labels: a tint over the image, which stays readable (napari's
#: default 0.7 hides it); the Segment widget puts its prediction under them.
GROUND_TRUTH_OPACITY = 0.35


def _read_single(name: str, layer_name: str, *, labels: bool = False) -> LayerData:
    """Read one shipped TIFF through :func:`napari_medseg.io.read` as one layer."""
    from ..io import read

    path = sample_path(name)
    vols = read(path)
    if len(vols) != 1:
        raise ReaderError(f"sample {path} should hold one image, the reader found {len(vols)}")
    vol = dataclasses.replace(vols[0], name=layer_name)
    if labels:
        # a writable in-memory integer array, so the ground truth can be painted on
        data = np.array(vol.data)
        if not np.issubdtype(data.dtype, np.integer):
            raise ReaderError(f"sample labels {path} have dtype {data.dtype}, expected integers")
        vol = dataclasses.replace(vol, data=data, layer_type="labels", contrast_limits=None, colormap=None)
    data, kwargs, layer_type = vol.to_layer_data()
    if labels:
        kwargs["opacity"] = GROUND_TRUTH_OPACITY
    return data, kwargs, layer_type


def nuclei_sample() -> list[LayerData]:
    """Fluorescence nuclei (DSB2018 ``val``, CC0: not trained on) with its ground-truth instance labels.

    Returns
    -------
    list of LayerData
        An image layer (grey ``uint8``, 520 x 696, axes Y, X) and a labels layer
        (``uint16``, same shape, 0 = background, 136 nuclei).  The pixel size is
        not known: both open with unit ``pixel`` and scale 1.
    """
    return [
        _read_single(NUCLEI_IMAGE, "nuclei (DSB2018 fluorescence)"),
        _read_single(NUCLEI_LABELS, "nuclei ground truth", labels=True),
    ]


def he_sample() -> list[LayerData]:
    """H&E-like stained tissue tile (DSB2018 ``val``, CC0: not trained on) with its ground-truth nuclei labels.

    Returns
    -------
    list of LayerData
        An RGB image layer (``uint8``, 256 x 320 x 3, axes Y, X, S) and a labels
        layer (``uint16``, 256 x 320, 17 nuclei).  Unit ``pixel``, scale 1.
    """
    return [
        _read_single(HE_IMAGE, "H&E tile (DSB2018)"),
        _read_single(HE_LABELS, "H&E nuclei ground truth", labels=True),
    ]


def mr_sample() -> list[LayerData]:
    """Real GE MR EPI series (dcm_qa_nih, BSD-2): 45 DICOM files, 3 time points x 15 slices.

    The folder goes through the DICOM series reader, so the layer carries the
    patient geometry from the headers (3.75 x 3.75 mm pixels, 5 mm slice
    spacing, in millimetres) and the stored display window.

    Returns
    -------
    list of LayerData
        One image layer per series found in the folder (one here).
    """
    from ..io import read

    path = sample_path(MR_SERIES)
    vols = read(path)
    if not vols:
        raise ReaderError(f"sample {path}: the DICOM reader found no image series")
    return [v.to_layer_data() for v in vols]
