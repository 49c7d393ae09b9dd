"""The image a DICOM-SEG or RTSTRUCT refers to, and label grids moved onto image grids.

A SEG or an RT Structure Set names the image it was drawn on by UIDs: the
series (SeriesInstanceUID), the SOP instances (slices) and the frame of
reference (FrameOfReferenceUID, the patient coordinate system).
:func:`find_referenced_image` reads the DICOM files of a folder and picks the
image series those UIDs point at (series first, then slices, then frame of
reference); :func:`place_on_grid` moves a label volume onto that image's grid
(an exact slice shift when the grids share their pixel axes, else
nearest-neighbour resampling in patient space).  Nothing here imports napari
or torch; pydicom is imported on first use.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ReaderError
from ...geometry import Geometry, Volume

#: Largest index-space mismatch (in pixels) under which two grids count as the same pixel axes.
GRID_TOL_PX = 1e-2


@dataclass
class References:
    """UIDs by which a derived object (SEG, RTSTRUCT) names its image.

    Attributes
    ----------
    series_uids : set of str
        Referenced SeriesInstanceUIDs.
    sop_uids : set of str
        Referenced SOPInstanceUIDs (the slices).
    frame_uids : set of str
        FrameOfReferenceUIDs the object's coordinates are in.
    """

    series_uids: set[str] = field(default_factory=set)
    sop_uids: set[str] = field(default_factory=set)
    frame_uids: set[str] = field(default_factory=set)

    def check_frame_of_reference(self, image: Volume, source: str | Path) -> None:
        """Raise when ``image`` declares a FrameOfReferenceUID that is not the object's.

        Raises
        ------
        ReaderError
            The image lies in another patient coordinate system.
        """
        uid = str((image.metadata.get("dicom") or {}).get("FrameOfReferenceUID") or "")
        if uid and self.frame_uids and uid not in self.frame_uids:
            raise ReaderError(f"{source}: drawn in frame of reference {sorted(self.frame_uids)}, but image "
                              f"{image.name!r} is in {uid}: its coordinates do not apply to that image")


def _uids(items: Any, keyword: str) -> set[str]:
    out = set()
    for it in items or []:
        v = str(it.get(keyword, "") or "").strip()
        if v:
            out.add(v)
    return out


def seg_references(path: str | Path) -> References:
    """What a DICOM-SEG file references (ReferencedSeriesSequence, FrameOfReferenceUID)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    refs = References()
    for series in ds.get("ReferencedSeriesSequence") or []:
        refs.series_uids |= _uids([series], "SeriesInstanceUID")
        refs.sop_uids |= _uids(series.get("ReferencedInstanceSequence"), "ReferencedSOPInstanceUID")
    refs.frame_uids |= _uids([ds], "FrameOfReferenceUID")
    return refs


def rtstruct_references(ds: Any) -> References:
    """What an RT Structure Set dataset references (frames of reference, series, contour images)."""
    refs = References()
    for fr in ds.get("ReferencedFrameOfReferenceSequence") or []:
        refs.frame_uids |= _uids([fr], "FrameOfReferenceUID")
        for study in fr.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                refs.series_uids |= _uids([series], "SeriesInstanceUID")
                refs.sop_uids |= _uids(series.get("ContourImageSequence"), "ReferencedSOPInstanceUID")
    refs.frame_uids |= _uids(ds.get("StructureSetROISequence"), "ReferencedFrameOfReferenceUID")
    for roi in ds.get("ROIContourSequence") or []:
        for c in roi.get("ContourSequence") or []:
            refs.sop_uids |= _uids(c.get("ContourImageSequence"), "ReferencedSOPInstanceUID")
    return refs


def _sop_uids_of(vol: Volume) -> set[str]:
    import pydicom

    out = set()
    for f in vol.metadata.get("files") or []:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=[0x00080018])
        except Exception:  # noqa: BLE001 - a file that cannot be re-read simply does not match
            continue
        uid = str(ds.get("SOPInstanceUID", "") or "")
        if uid:
            out.add(uid)
    return out


def find_referenced_image(folder: str | Path, refs: References, *, required: bool = True) -> Volume | None:
    """The image series in ``folder`` (searched recursively) that ``refs`` points at.

    Candidates are the 3D image series with patient geometry that
    :func:`~napari_medseg.io.dicom.read_dicom` finds there.  The series whose
    SeriesInstanceUID is referenced wins; else the one holding referenced
    SOP instances; else the one in the referenced frame of reference.

    Parameters
    ----------
    folder : str or Path
        Where to look.
    refs : References
        What the SEG / RTSTRUCT references.
    required : bool
        Whether no match is an error (else None is returned).

    Raises
    ------
    ReaderError
        No (``required``) or several equally good candidates.
    """
    from .series import DicomWarning, read_dicom

    folder = Path(folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DicomWarning)
            vols = read_dicom(folder)
    except ReaderError as exc:
        if required:
            raise ReaderError(f"{folder}: no image series to put the contours on ({exc}); pass the image "
                              "explicitly") from exc
        return None
    cands = [v for v in vols if v.layer_type == "image" and v.frame is not None
             and "Z" in v.world_axes and "Y" in v.world_axes and "X" in v.world_axes]

    def tag(v: Volume, name: str) -> str:
        return str((v.metadata.get("dicom") or {}).get(name) or "")

    levels = [
        ("SeriesInstanceUID", [v for v in cands if tag(v, "SeriesInstanceUID") in refs.series_uids]),
    ]
    if refs.sop_uids and not levels[0][1]:
        levels.append(("referenced SOP instances", [v for v in cands if _sop_uids_of(v) & refs.sop_uids]))
    levels.append(("FrameOfReferenceUID", [v for v in cands if tag(v, "FrameOfReferenceUID") in refs.frame_uids]))
    for how, hits in levels:
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = ", ".join(repr(v.name) for v in hits)
            raise ReaderError(f"{folder}: {len(hits)} image series match the {how} referenced ({names}); "
                              "pass the image explicitly")
    if required:
        found = ", ".join(repr(v.name) for v in cands) or "none"
        raise ReaderError(f"{folder}: none of the image series found ({found}) is the one referenced "
                          f"(series {sorted(refs.series_uids)}, frame of reference {sorted(refs.frame_uids)}); "
                          "pass the image explicitly")
    return None


def place_on_grid(vol: Volume, geometry: Geometry, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The labels of ``vol`` on the grid ``geometry`` / ``shape`` (3D, patient space).

    Returns the array and how it got there: ``"same grid"``, ``"shifted by k
    slices"`` (the grids share their pixel axes: exact copy) or
    ``"nearest-neighbour resampled"``.

    Raises
    ------
    ReaderError
        The volume or the grid is not ZYX, or they are in different frames
        (``"LPS"`` vs pixel space).
    """
    if vol.axes != "ZYX" or geometry.axes != "ZYX" or len(shape) != 3:
        raise ReaderError(f"{vol.name}: only ZYX label volumes can be put on a ZYX image grid "
                          f"(got {vol.axes!r} onto {geometry.axes!r})")
    src = vol.geometry
    if src.frame != geometry.frame:
        raise ReaderError(f"{vol.name}: its frame {src.frame!r} is not the image's {geometry.frame!r}")
    data = np.asarray(vol.data)
    m = np.linalg.solve(src.affine, geometry.affine)  # target index -> source index
    lin, off = m[:3, :3], m[:3, 3]
    out = np.zeros(tuple(int(s) for s in shape), dtype=data.dtype)
    shift = np.round(off).astype(int)
    extent = np.abs(lin - np.eye(3)).max() * max(shape)
    if extent <= GRID_TOL_PX and np.abs(off - shift).max() <= GRID_TOL_PX:
        # target index t <-> source index t + shift: copy the overlap
        t0 = np.maximum(0, -shift)
        t1 = np.minimum(np.asarray(shape), np.asarray(data.shape) - shift)
        if np.all(t1 > t0):
            out[tuple(slice(a, b) for a, b in zip(t0, t1, strict=True))] = \
                data[tuple(slice(a + s, b + s) for a, b, s in zip(t0, t1, shift, strict=True))]
        dropped = int(np.count_nonzero(data)) - int(np.count_nonzero(out))
        if dropped:
            vol.metadata.setdefault("warnings", []).append(
                f"{dropped} labelled voxels lie outside the image grid and were dropped")
        how = "same grid" if not shift.any() else f"shifted by {shift.tolist()} voxels (exact)"
        return out, how
    # nearest neighbour, one target slice at a time: round the source index (no edge tolerance games)
    ii, jj = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    plane = np.stack([np.zeros_like(ii), ii, jj], axis=-1).reshape(-1, 3).astype(np.float64)
    for z in range(shape[0]):
        plane[:, 0] = z
        src_idx = np.rint(plane @ lin.T + off).astype(np.int64)
        ok = np.all((src_idx >= 0) & (src_idx < np.asarray(data.shape)), axis=1)
        if ok.any():
            flat = out[z].reshape(-1)
            flat[ok] = data[src_idx[ok, 0], src_idx[ok, 1], src_idx[ok, 2]]
    return out, "nearest-neighbour resampled"
