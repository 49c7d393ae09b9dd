"""Siemens mosaic images: one DICOM frame that tiles all slices of a volume.

A mosaic (``ImageType`` contains ``MOSAIC``) stores ``n`` slices of
``rows x cols`` pixels as a ``k x k`` grid of tiles (``k = ceil(sqrt(n))``),
row-major, unused tiles blank.  Its ImagePositionPatient refers to the top-left
corner of the *whole* mosaic, so the position of the first slice is (as in
nibabel's ``dicomwrappers`` and dcm2niix)::

    pos_0 = IPP + col_cosine * ps_row * (M_rows - rows) / 2
                + row_cosine * ps_col * (M_cols - cols) / 2

and slice ``s`` lies at ``pos_0 + s * spacing * SliceNormalVector`` where the
normal comes from the CSA header (its sign tells the slice order, which the
cross product of ImageOrientationPatient cannot) and ``spacing`` is
SpacingBetweenSlices (else SliceThickness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ReaderError
from .csa import csa_image_header
from .tags import text


@dataclass(frozen=True)
class MosaicInfo:
    """How to cut one mosaic frame into slices.

    Attributes
    ----------
    n_slices : int
        Number of real slices (tiles in use).
    grid : int
        Tiles per side of the mosaic.
    rows, cols : int
        Size of one slice in pixels.
    positions : ndarray
        ``(n_slices, 3)`` ImagePositionPatient of each slice, LPS (x, y, z) mm.
    normal : ndarray
        Unit slice normal (x, y, z) from the CSA header.
    """

    n_slices: int
    grid: int
    rows: int
    cols: int
    positions: np.ndarray
    normal: np.ndarray


def is_mosaic(ds: Any) -> bool:
    """Whether a pydicom dataset is a Siemens mosaic (``MOSAIC`` in ImageType)."""
    return "MOSAIC" in (text(ds, "ImageType") or "").upper().split("\\")


def mosaic_info(ds: Any, source: str = "") -> MosaicInfo:
    """Geometry of the slices packed in a mosaic dataset.

    Parameters
    ----------
    ds : pydicom.Dataset
        Header of the mosaic file, including the private Siemens elements.
    source : str
        File name for error messages.

    Raises
    ------
    ReaderError
        When the number of slices, the orientation or the spacing is missing, or
        the mosaic does not divide into whole tiles.
    """
    where = f"{source}: " if source else ""
    csa = csa_image_header(ds) or {}
    n = _first(csa.get("NumberOfImagesInMosaic"))
    if n is None:
        priv = ds.get((0x0019, 0x100A))  # Siemens 'NumberOfImagesInMosaic' (SIEMENS MR HEADER)
        n = priv.value if priv is not None else None
    try:
        n = int(n) if n is not None else 0
    except (TypeError, ValueError):
        n = 0
    if n <= 0:
        raise ReaderError(f"{where}Siemens mosaic without NumberOfImagesInMosaic (CSA header missing or "
                          "anonymised): cannot unpack its slices")
    grid = math.ceil(math.sqrt(n))
    m_rows, m_cols = int(ds.Rows), int(ds.Columns)
    if m_rows % grid or m_cols % grid:
        raise ReaderError(f"{where}mosaic of {m_rows}x{m_cols} pixels does not divide into {grid}x{grid} tiles "
                          f"for {n} slices")
    rows, cols = m_rows // grid, m_cols // grid
    try:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        ps = np.asarray(ds.PixelSpacing, dtype=float)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ReaderError(f"{where}mosaic without ImageOrientationPatient/ImagePositionPatient/PixelSpacing") from exc
    if iop.shape != (6,) or ipp.shape != (3,) or ps.shape != (2,):
        raise ReaderError(f"{where}malformed mosaic geometry tags")
    row_cos, col_cos = iop[:3], iop[3:]
    if not np.isfinite(iop).all() or min(np.linalg.norm(row_cos), np.linalg.norm(col_cos)) < 1e-6:
        raise ReaderError(f"{where}mosaic with an unusable ImageOrientationPatient {iop.tolist()}")
    # unit, orthogonal cosines (the header check refuses deviations beyond rounding)
    row_cos = row_cos / np.linalg.norm(row_cos)
    col_cos = col_cos - (col_cos @ row_cos) * row_cos
    col_cos = col_cos / max(np.linalg.norm(col_cos), 1e-12)
    normal = np.asarray(csa.get("SliceNormalVector") or [], dtype=float)
    if normal.shape != (3,) or not np.isfinite(normal).all() or np.linalg.norm(normal) < 0.5:
        normal = np.cross(row_cos, col_cos)
    normal = normal / np.linalg.norm(normal)
    spacing = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    if spacing is None or float(spacing) <= 0:
        raise ReaderError(f"{where}mosaic without SpacingBetweenSlices/SliceThickness: slice positions unknown")
    first = ipp + col_cos * ps[0] * (m_rows - rows) / 2 + row_cos * ps[1] * (m_cols - cols) / 2
    positions = first[None, :] + np.arange(n)[:, None] * float(spacing) * normal[None, :]
    return MosaicInfo(n_slices=n, grid=grid, rows=rows, cols=cols, positions=positions, normal=normal)


def unpack_mosaic(frame: np.ndarray, info: MosaicInfo) -> np.ndarray:
    """Cut a mosaic frame ``(M_rows, M_cols[, S])`` into ``(n_slices, rows, cols[, S])`` (a copy)."""
    g, r, c = info.grid, info.rows, info.cols
    tail = frame.shape[2:]
    tiles = frame.reshape((g, r, g, c) + tail).swapaxes(1, 2).reshape((g * g, r, c) + tail)
    return np.ascontiguousarray(tiles[: info.n_slices])


def _first(values: Any) -> Any:
    if isinstance(values, (list, tuple)):
        return values[0] if values else None
    return values
