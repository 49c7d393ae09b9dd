"""DICOM headers -> per-frame records (position, orientation, spacing, rescale, time).

One :class:`FileHeader` per file (parsed once with pydicom, pixel data not
read), expanded into one :class:`Frame` per 2D image: a single-frame file gives
one, an enhanced multi-frame file one per frame (from the shared and per-frame
functional groups), a Siemens mosaic one per tile, an RT dose one per
GridFrameOffsetVector entry.  Series grouping and stacking work on frames only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ReaderError
from .mosaic import MosaicInfo, is_mosaic, mosaic_info
from .pixels import DEFLATED, PixelFormat, native_offset, pixel_format
from .tags import nums as _nums
from .tags import text

INF = math.inf
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: Label Map Segmentation Storage (DICOM 2024: SegmentationType LABELMAP, pixel value = segment number).
LABELMAP_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

#: SOP classes with pixel data that is not an image to show on a patient grid
#: (not used to refuse anything, only to give a better message).
NON_IMAGE_MODALITIES = {"RTSTRUCT": "RT Structure Set (contours)", "RTPLAN": "RT Plan", "SR": "Structured Report",
                        "PR": "Presentation State", "KO": "Key Object Selection", "ECG": "waveform",
                        "REG": "Registration", "RTRECORD": "RT Treatment Record"}

#: DICOM attributes copied into ``Volume.metadata["dicom"]`` when present (no patient identity).
KEEP_TAGS = (
    "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName", "InstitutionName", "StudyDescription",
    "StudyDate", "StudyInstanceUID", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID", "ProtocolName",
    "BodyPartExamined", "PatientPosition", "ImageType", "ImageOrientationPatient", "PixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle",
    "MagneticFieldStrength", "ScanningSequence", "SequenceName", "MRAcquisitionType", "KVP", "ConvolutionKernel",
    "FrameOfReferenceUID", "PhotometricInterpretation", "BitsStored", "PixelRepresentation", "RescaleType",
    "Units", "DoseUnits", "DoseType", "NumberOfTemporalPositions", "AcquisitionNumber", "EchoNumbers",
)

#: Everything the reader looks at (besides KEEP_TAGS): only these are parsed (``specific_tags``),
#: which halves the header time of a CT series.  Mosaics are re-read in full for the CSA header.
_READ_KEYWORDS = (
    "SOPInstanceUID", "ImageType", "InstanceNumber", "AcquisitionNumber", "AcquisitionDate", "AcquisitionTime",
    "AcquisitionDateTime", "TemporalPositionIdentifier", "ImagePositionPatient", "ImagerPixelSpacing",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "Rows", "Columns", "SamplesPerPixel",
    "NumberOfFrames", "BitsAllocated", "BitsStored", "HighBit", "PlanarConfiguration",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData",
    "PaletteColorLookupTableUID", "GridFrameOffsetVector", "DoseGridScaling", "FrameTime",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "SegmentSequence", "SegmentationType",
    "MaximumFractionalValue", "FrameIncrementPointer", "ImagesInAcquisition",
)


@functools.lru_cache(maxsize=1)
def _specific_tags() -> list[int]:
    from pydicom.datadict import tag_for_keyword

    tags = {tag_for_keyword(k) for k in KEEP_TAGS + _READ_KEYWORDS}
    tags.discard(None)
    return sorted(tags)


class NotDicomError(ReaderError):
    """The file is not DICOM Part 10 at all (skipped silently inside folders)."""


@dataclass(eq=False)
class FileHeader:
    """One parsed DICOM file (header only).

    Attributes
    ----------
    path : str
        File path.
    ds : pydicom.Dataset
        Header up to the pixel data.
    fmt : PixelFormat or None
        Image pixel module; None when the file holds no pixel data.
    offset : int or None
        File offset of the first pixel byte for the fast native path.
    mosaic : MosaicInfo or None
        Set for Siemens mosaic files.
    """

    path: str
    ds: Any
    fmt: PixelFormat | None
    offset: int | None = None
    mosaic: MosaicInfo | None = None

    @property
    def modality(self) -> str:
        return text(self.ds, "Modality") or ""

    @property
    def is_seg(self) -> bool:
        return text(self.ds, "SOPClassUID") in (SEG_SOP_CLASS, LABELMAP_SEG_SOP_CLASS)


@dataclass(eq=False)
class Frame:
    """One 2D image: where it lies and how its values scale.

    Attributes
    ----------
    file : FileHeader
        The file holding its pixels.
    index : int
        Frame number in the file, or tile number of a mosaic (0-based).
    ipp : ndarray or None
        ImagePositionPatient (x, y, z) mm of the first pixel's centre.
    iop : ndarray or None
        ImageOrientationPatient (row cosine, column cosine).
    pixel_spacing : tuple of float or None
        (between rows, between columns) mm.
    slice_spacing : float or None
        SpacingBetweenSlices, else SliceThickness (used for a single slice only).
    slope, intercept : float
        Modality rescale.
    window : tuple of float or None
        (center, width) of the first VOI window.
    time_key : tuple
        Sort key of frames that share a position.
    acquisition : int or None
        AcquisitionNumber (used to split inconsistent series).
    segment : int or None
        Referenced segment number (DICOM-SEG).
    """

    file: FileHeader
    index: int
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    slope: float = 1.0
    intercept: float = 0.0
    window: tuple[float, float] | None = None
    time_key: tuple = ()
    acquisition: int | None = None
    segment: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.file.mosaic.rows if self.file.mosaic else self.file.fmt.rows

    @property
    def cols(self) -> int:
        return self.file.mosaic.cols if self.file.mosaic else self.file.fmt.cols


def read_header(path: str) -> FileHeader:
    """Parse one DICOM file up to its pixel data.

    Raises
    ------
    ReaderError
        Not a DICOM file, or a header pydicom cannot parse (truncated, corrupt).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_specific_tags())
            fmt = None
            offset = None
            if _has_pixel_data(fp, ds):
                fmt = pixel_format(ds, path)
                offset = native_offset(fp, fmt)
    except ReaderError:
        raise
    except InvalidDicomError as exc:
        raise NotDicomError(f"{path}: not a DICOM file (no 'DICM' marker at byte 128)") from exc
    except Exception as exc:  # pydicom signals corrupt/truncated headers with many exception types
        raise ReaderError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
    hdr = FileHeader(path=path, ds=ds, fmt=fmt, offset=offset)
    if fmt is not None and is_mosaic(ds):
        if fmt.n_frames != 1:
            raise ReaderError(f"{path}: multi-frame Siemens mosaic is not supported")
        try:
            full = pydicom.dcmread(path, stop_before_pixels=True)  # private CSA header and (0019,100A)
        except Exception as exc:
            raise ReaderError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
        hdr.mosaic = mosaic_info(full, path)
    return hdr


def _has_pixel_data(fp: Any, ds: Any) -> bool:
    """Whether ``dcmread(stop_before_pixels=True)`` stopped at a pixel data element."""
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts == DEFLATED:
        # pydicom inflates deflated files in memory: the raw file position means nothing here
        return "Rows" in ds and "Columns" in ds
    pos = fp.tell()
    head = fp.read(4)
    fp.seek(pos)
    if len(head) < 4:
        return False
    order = "big" if ts == "1.2.840.10008.1.2.2" else "little"
    group, elem = int.from_bytes(head[:2], order), int.from_bytes(head[2:], order)
    return group == 0x7FE0 and elem in (0x0008, 0x0009, 0x0010)


def frames_of(hdr: FileHeader) -> list[Frame]:
    """Split a file into :class:`Frame` records (see module docstring)."""
    ds = hdr.ds
    fmt = hdr.fmt
    if fmt is None:
        return []
    base_time = _time_key(ds)
    acq = _int(_nums(ds, "AcquisitionNumber"))
    if hdr.mosaic is not None:
        m = hdr.mosaic
        iop = _vec(_nums(ds, "ImageOrientationPatient"), 6)
        ps = _spacing(ds)
        window, slope, intercept = _window(ds), *_rescale(ds)
        return [Frame(hdr, t, m.positions[t].copy(), iop, ps, _slice_spacing(ds), slope, intercept, window,
                      base_time + (t,), acq) for t in range(m.n_slices)]
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return _enhanced_frames(hdr)
    ipp = _vec(_nums(ds, "ImagePositionPatient"), 3)
    iop = _vec(_nums(ds, "ImageOrientationPatient"), 6)
    ps = _spacing(ds)
    slope, intercept = _rescale(ds)
    window = _window(ds)
    n = fmt.n_frames
    positions: list[np.ndarray | None] = [ipp] * n
    offsets = _nums(ds, "GridFrameOffsetVector")
    if n > 1 and ipp is not None and iop is not None and "GridFrameOffsetVector" in ds:
        if offsets is None:
            raise ReaderError(f"{hdr.path}: invalid GridFrameOffsetVector")
        off = np.asarray(offsets, dtype=float)
        if off.shape != (n,):
            raise ReaderError(f"{hdr.path}: GridFrameOffsetVector has {off.size} values for {n} frames")
        normal = np.cross(iop[:3], iop[3:])
        # relative offsets (first 0) or absolute z (first == IPP z): both give IPP + (o_k - o_0) * normal
        positions = [ipp + (o - off[0]) * normal for o in off]
    return [Frame(hdr, k, None if positions[k] is None else positions[k].copy(), iop, ps, _slice_spacing(ds),
                  slope, intercept, window, base_time + (k,), acq) for k in range(n)]


def _enhanced_frames(hdr: FileHeader) -> list[Frame]:
    ds = hdr.ds
    n = hdr.fmt.n_frames
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != n:
        raise ReaderError(f"{hdr.path}: inconsistent file: {len(per_frame)} per-frame functional groups for "
                          f"{n} frame(s) (NumberOfFrames)")
    acq = _int(_nums(ds, "AcquisitionNumber"))
    top_window, (top_slope, top_intercept) = _window(ds), _rescale(ds)
    frames = []
    for k in range(n):
        item = per_frame[k] if per_frame else None

        def grp(name: str, item: Any = item) -> Any:
            g = _first_item(item.get(name)) if item is not None and name in item else None
            if g is None and shared is not None and name in shared:
                g = _first_item(shared.get(name))
            return g

        pos = grp("PlanePositionSequence")
        ori = grp("PlaneOrientationSequence")
        meas = grp("PixelMeasuresSequence")
        pvt = grp("PixelValueTransformationSequence")
        voi = grp("FrameVOILUTSequence")
        content = grp("FrameContentSequence")
        seg = grp("SegmentIdentificationSequence")
        ipp = _vec(_nums(pos if pos is not None else ds, "ImagePositionPatient"), 3)
        iop = _vec(_nums(ori if ori is not None else ds, "ImageOrientationPatient"), 6)
        ps = _spacing(meas) if meas is not None else _spacing(ds)
        slice_sp = _slice_spacing(meas) if meas is not None else _slice_spacing(ds)
        slope, intercept = _rescale(pvt) if pvt is not None else (top_slope, top_intercept)
        window = _window(voi) if voi is not None else top_window
        tkey: tuple = (INF, INF, k)
        if content is not None:
            tpi = _float(content.get("TemporalPositionIndex"))
            when = _dt_seconds(text(content, "FrameAcquisitionDateTime"))
            tkey = (INF if tpi is None else tpi, INF if when is None else when, k)
        segment = _int(seg.get("ReferencedSegmentNumber")) if seg is not None else None
        frames.append(Frame(hdr, k, ipp, iop, ps, slice_sp, slope, intercept, window, tkey, acq, segment))
    return frames


# --- small tag helpers -------------------------------------------------------------------------

def _first_item(seq: Any) -> Any:
    try:
        return seq[0] if seq is not None and len(seq) else None
    except (TypeError, IndexError):
        return None


def _vec(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        v = np.asarray([float(x) for x in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return v if v.shape == (n,) and np.isfinite(v).all() else None


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
            value = value[0] if len(value) else None
        f = float(value) if value is not None else None
    except (TypeError, ValueError, IndexError):
        return None
    return f if f is not None and math.isfinite(f) else None


def _int(value: Any) -> int | None:
    f = _float(value)
    return int(f) if f is not None else None


def _spacing(ds: Any) -> tuple[float, float] | None:
    v = _vec(_nums(ds, "PixelSpacing"), 2)
    if v is None or (v <= 0).any():
        return None
    return float(v[0]), float(v[1])


def _slice_spacing(ds: Any) -> float | None:
    for name in ("SpacingBetweenSlices", "SliceThickness"):
        f = _float(_nums(ds, name))
        if f is not None and f > 0:
            return f
    return None


def _rescale(ds: Any) -> tuple[float, float]:
    slope = _float(_nums(ds, "RescaleSlope"))
    intercept = _float(_nums(ds, "RescaleIntercept"))
    if slope is None and text(ds, "Modality") == "RTDOSE":
        slope = _float(_nums(ds, "DoseGridScaling"))
    if slope is None or slope == 0:
        slope = 1.0
    return slope, intercept if intercept is not None else 0.0


def _window(ds: Any) -> tuple[float, float] | None:
    c, w = _float(_nums(ds, "WindowCenter")), _float(_nums(ds, "WindowWidth"))
    if c is None or w is None or w <= 0:
        return None
    return c, w


def _tm_seconds(value: Any) -> float | None:
    """DICOM TM ``HHMMSS.FFFFFF`` (or the old ``HH:MM:SS``) to seconds."""
    s = str(value or "").strip().replace(":", "")
    if len(s) < 2:
        return None
    try:
        h = int(s[:2])
        m = int(s[2:4]) if len(s) >= 4 else 0
        sec = float(s[4:]) if len(s) > 4 else 0.0
    except ValueError:
        return None
    return h * 3600 + m * 60 + sec


def _da_days(value: Any) -> int | None:
    s = str(value or "").strip().replace(".", "")
    if len(s) != 8 or not s.isdigit():
        return None
    import datetime

    try:
        return datetime.date(int(s[:4]), int(s[4:6]), int(s[6:])).toordinal()
    except ValueError:
        return None


def _dt_seconds(value: Any) -> float | None:
    """DICOM DT ``YYYYMMDDHHMMSS.FFFFFF[&ZZXX]`` to seconds (time zone ignored)."""
    s = str(value or "").strip()
    for sep in ("+", "-"):
        if sep in s[8:]:
            s = s[: 8 + s[8:].index(sep)]
    days = _da_days(s[:8])
    if days is None:
        return None
    t = _tm_seconds(s[8:]) if len(s) > 8 else 0.0
    return days * 86400.0 + (t or 0.0)


def _time_key(ds: Any) -> tuple:
    """(TemporalPositionIdentifier, acquisition date+time in s, InstanceNumber) with inf for missing."""
    tpi = _float(_nums(ds, "TemporalPositionIdentifier"))
    when = _dt_seconds(text(ds, "AcquisitionDateTime"))
    if when is None:
        t = _tm_seconds(text(ds, "AcquisitionTime"))
        if t is not None:
            days = _da_days(text(ds, "AcquisitionDate")) or 0
            when = days * 86400.0 + t
    inst = _float(_nums(ds, "InstanceNumber"))
    return (INF if tpi is None else tpi, INF if when is None else when, INF if inst is None else inst)
