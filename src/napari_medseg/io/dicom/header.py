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
import os
import stat
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ReaderError
from .mosaic import MosaicInfo, is_mosaic, mosaic_info
from .pixels import DEFLATED, PixelFormat, check_pixel_extent, native_offset, pixel_element, pixel_format
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


class DamagedDicomError(ReaderError):
    """A DICOM file that cannot be read completely (truncated, corrupt); ``series_uid`` when it could be read."""

    def __init__(self, message: str, series_uid: str | None = None) -> None:
        super().__init__(message)
        self.series_uid = series_uid


#: Largest deviation of ImageOrientationPatient from two orthogonal unit vectors taken as rounding
#: (normalised silently); up to IOP_WARN_TOL it is normalised with a warning, beyond it refused.
IOP_ROUNDING_TOL = 1e-4
IOP_WARN_TOL = 1e-3
#: SOP classes (by pydicom's name) that carry pixel data besides "... Image Storage".
_PIXEL_SOP_NAMES = ("Segmentation Storage", "RT Dose Storage", "Parametric Map Storage")


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
        sop = text(self.ds, "SOPClassUID") or str(getattr(getattr(self.ds, "file_meta", None),
                                                          "MediaStorageSOPClassUID", "") or "")
        return sop in (SEG_SOP_CLASS, LABELMAP_SEG_SOP_CLASS)


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

    Besides parsing, this checks what the header declares against the file:
    a declared image (Rows x Columns x frames x bits) that does not fit the
    bytes present, compressed data cut short, or an image SOP class whose
    file ends before its pixel data are refused here, before any pixel
    buffer is allocated.

    Raises
    ------
    NotDicomError
        Not a DICOM Part 10 file.
    DamagedDicomError
        A DICOM file that is truncated, corrupt or declares an image its bytes cannot hold.
    ReaderError
        Not a regular file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        st = os.stat(path)
    except OSError as exc:
        raise ReaderError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ReaderError(f"{path}: not a regular file (a pipe, socket, device or folder)")
    uid = None
    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_specific_tags())
            uid = _series_uid(ds)
            _check_vrs(ds, path)
            fmt = None
            offset = None
            ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
            el = pixel_element(fp, ts)
            if _has_pixel_data(fp, ds, el):
                fmt = pixel_format(ds, path, el.tag if el is not None else None)
                check_pixel_extent(path, fmt, el, fp)
                offset = native_offset(fp, fmt)
            else:
                _check_not_truncated(ds, path, fp, st.st_size)
    except ReaderError as exc:
        if isinstance(exc, DamagedDicomError):
            raise
        raise DamagedDicomError(str(exc), uid) from exc
    except InvalidDicomError as exc:
        if st.st_size == 0:
            raise NotDicomError(f"{path}: empty file (0 bytes)") from exc
        raise NotDicomError(f"{path}: not a DICOM file (no 'DICM' marker at byte 128)") from exc
    except Exception as exc:  # pydicom signals corrupt/truncated headers with many exception types
        raise DamagedDicomError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})", uid) from exc
    hdr = FileHeader(path=path, ds=ds, fmt=fmt, offset=offset)
    if fmt is not None and is_mosaic(ds):
        if fmt.n_frames != 1:
            raise DamagedDicomError(f"{path}: multi-frame Siemens mosaic is not supported", uid)
        try:
            full = pydicom.dcmread(path, stop_before_pixels=True)  # private CSA header and (0019,100A)
        except Exception as exc:
            raise DamagedDicomError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})", uid) from exc
        try:
            hdr.mosaic = mosaic_info(full, path)
        except ReaderError as exc:
            raise DamagedDicomError(str(exc) if path in str(exc) else f"{path}: {exc}", uid) from exc
    return hdr


def _series_uid(ds: Any) -> str | None:
    try:
        return text(ds, "SeriesInstanceUID") or None
    except Exception:  # noqa: BLE001 - only used to say which series a damaged file belongs to
        return None


@functools.lru_cache(maxsize=1)
def _known_vrs() -> frozenset[str]:
    from pydicom.valuerep import VR

    return frozenset(v.value for v in VR)


def _check_vrs(ds: Any, path: str) -> None:
    """ReaderError for an element whose value representation pydicom cannot convert (e.g. ``IU``)."""
    known = _known_vrs()
    # pydicom keeps the parsed (raw) elements in Dataset._dict; reading it is 100x faster than elements(),
    # which goes through get_item per element (a tenth of the header time of a CT series)
    raw = getattr(ds, "_dict", None)
    for elem in (raw.values() if isinstance(raw, dict) else ds.elements()):
        vr = getattr(elem, "VR", None)
        if vr is not None and str(vr) not in known:
            raise ReaderError(f"{path}: element ({elem.tag >> 16:04X},{elem.tag & 0xFFFF:04X}) has the unknown "
                              f"value representation {vr!r}: the header is damaged")


def _has_pixel_data(fp: Any, ds: Any, el: Any) -> bool:
    """Whether ``dcmread(stop_before_pixels=True)`` stopped at a pixel data element."""
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts == DEFLATED:
        # pydicom inflates deflated files in memory: the raw file position means nothing here
        return "Rows" in ds and "Columns" in ds
    return el is not None


def _check_not_truncated(ds: Any, path: str, fp: Any, size: int) -> None:
    """ReaderError when a file that declares an image (by its SOP class or Rows) ends before its pixel data."""
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    sop = text(ds, "SOPClassUID") or str(getattr(meta, "MediaStorageSOPClassUID", "") or "")
    name = UID(sop).name if sop else ""
    image_class = name.endswith("Image Storage") or "Image Storage -" in name or name in _PIXEL_SOP_NAMES
    if not sop and len(ds) == 0:
        raise ReaderError(f"{path}: the file ends right after its DICOM preamble/meta information, before any "
                          "data element: it is truncated (incomplete copy or download?)")
    if not (image_class or "Rows" in ds):
        return  # RT structure sets, reports, plans...: no pixel data expected
    at = fp.tell()
    where = "ends" if at >= size else f"has no pixel data element (stops at byte {at:,} of {size:,})"
    raise ReaderError(f"{path}: the file is a {name or 'DICOM image'} but {where} before its pixel data: it is "
                      "truncated (incomplete copy or download?) or damaged")


def frames_of(hdr: FileHeader) -> list[Frame]:
    """Split a file into :class:`Frame` records (see module docstring).

    Raises
    ------
    DamagedDicomError
        Position, orientation, spacing or rescale values that are present but unusable, or
        functional groups pydicom cannot parse; the message names the file.
    """
    try:
        return _frames_of(hdr)
    except DamagedDicomError:
        raise
    except ReaderError as exc:
        msg = str(exc) if hdr.path in str(exc) else f"{hdr.path}: {exc}"
        raise DamagedDicomError(msg, _series_uid(hdr.ds)) from exc
    except Exception as exc:  # pydicom parses nested sequences on first access and fails in many ways
        raise DamagedDicomError(f"{hdr.path}: unreadable DICOM header ({type(exc).__name__}: {exc})",
                                _series_uid(hdr.ds)) from exc


def _frames_of(hdr: FileHeader) -> list[Frame]:
    ds = hdr.ds
    fmt = hdr.fmt
    if fmt is None:
        return []
    base_time = _time_key(ds)
    acq = _int(_nums(ds, "AcquisitionNumber"))
    path = hdr.path
    if hdr.mosaic is not None:
        m = hdr.mosaic
        iop, note = _orientation(ds, path)
        ps = _spacing(ds, path)
        window, slope, intercept = _window(ds), *_rescale(ds, path)
        return [Frame(hdr, t, m.positions[t].copy(), iop, ps, _slice_spacing(ds), slope, intercept, window,
                      base_time + (t,), acq, extra=_notes(note)) for t in range(m.n_slices)]
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return _enhanced_frames(hdr)
    ipp = _position(ds, path)
    iop, note = _orientation(ds, path)
    ps = _spacing(ds, path)
    slope, intercept = _rescale(ds, path)
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
                  slope, intercept, window, base_time + (k,), acq, extra=_notes(note)) for k in range(n)]


def _enhanced_frames(hdr: FileHeader) -> list[Frame]:
    ds = hdr.ds
    n = hdr.fmt.n_frames
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != n:
        raise ReaderError(f"{hdr.path}: inconsistent file: {len(per_frame)} per-frame functional groups for "
                          f"{n} frame(s) (NumberOfFrames)")
    acq = _int(_nums(ds, "AcquisitionNumber"))
    path = hdr.path
    top_window, (top_slope, top_intercept) = _window(ds), _rescale(ds, path)
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
        ipp = _position(pos if pos is not None else ds, path, k)
        iop, note = _orientation(ori if ori is not None else ds, path, k)
        ps = _spacing(meas, path, k) if meas is not None else _spacing(ds, path)
        slice_sp = _slice_spacing(meas) if meas is not None else _slice_spacing(ds)
        slope, intercept = _rescale(pvt, path) if pvt is not None else (top_slope, top_intercept)
        window = _window(voi) if voi is not None else top_window
        tkey: tuple = (INF, INF, k)
        if content is not None:
            tpi = _float(content.get("TemporalPositionIndex"))
            when = _dt_seconds(text(content, "FrameAcquisitionDateTime"))
            tkey = (INF if tpi is None else tpi, INF if when is None else when, k)
        segment = _int(seg.get("ReferencedSegmentNumber")) if seg is not None else None
        frames.append(Frame(hdr, k, ipp, iop, ps, slice_sp, slope, intercept, window, tkey, acq, segment,
                            extra=_notes(note)))
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


def _notes(note: str | None) -> dict[str, Any]:
    return {"note": note} if note else {}


def frame_notes(frames: list[Frame]) -> list[str]:
    """The distinct notes of a list of frames (normalised orientations...), for the volume's warnings."""
    return list(dict.fromkeys(f.extra["note"] for f in frames if f.extra.get("note")))


def _present(ds: Any, keyword: str) -> str | None:
    """The raw text of an element when it is present and not empty."""
    t = text(ds, keyword)
    return t if t and t.strip("\\ ") else None


def _frame_note(frame: int | None) -> str:
    return "" if frame is None else f" (frame {frame + 1})"


def _position(ds: Any, path: str, frame: int | None = None) -> np.ndarray | None:
    """ImagePositionPatient; None when absent, ReaderError when present but not 3 plausible numbers."""
    raw = _present(ds, "ImagePositionPatient")
    if raw is None:
        return None
    v = _vec(_nums(ds, "ImagePositionPatient"), 3)
    if v is None or (np.abs(v) > 1e6).any():
        raise ReaderError(f"{path}: ImagePositionPatient {raw!r}{_frame_note(frame)} is not 3 finite positions "
                          "within 1 km of the origin (mm): the header is damaged")
    return v


def _orientation(ds: Any, path: str, frame: int | None = None) -> tuple[np.ndarray | None, str | None]:
    """ImageOrientationPatient as two orthonormal vectors (None when absent) and a note when it was normalised.

    Deviations from unit length / orthogonality up to :data:`IOP_ROUNDING_TOL` (printed decimals) are
    normalised silently, up to :data:`IOP_WARN_TOL` normalised with a note (the reader warns), larger
    ones refused: such vectors would scale or shear the voxel grid.
    """
    raw = _present(ds, "ImageOrientationPatient")
    if raw is None:
        return None, None
    v = _vec(_nums(ds, "ImageOrientationPatient"), 6)
    if v is None:
        raise ReaderError(f"{path}: ImageOrientationPatient {raw!r}{_frame_note(frame)} is not 6 finite numbers: "
                          "the header is damaged")
    r, c = v[:3], v[3:]
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    dev = max(abs(nr - 1.0), abs(nc - 1.0), abs(float(r @ c)) / max(nr * nc, 1e-12))
    if dev > IOP_WARN_TOL or nr < 1e-6 or nc < 1e-6:
        why = "parallel" if abs(float(r @ c)) / max(nr * nc, 1e-12) > 1 - 1e-6 else "not two orthogonal unit vectors"
        raise ReaderError(f"{path}: ImageOrientationPatient {raw!r}{_frame_note(frame)} is {why} (row/column "
                          f"cosine lengths {nr:.6g}, {nc:.6g}, cosine between them {float(r @ c) / max(nr * nc, 1e-12):.3g}): "
                          "the header is damaged; refusing to guess the voxel grid")
    note = None
    if dev > 1e-9:
        r = r / nr
        c = c - (c @ r) * r
        c = c / np.linalg.norm(c)
        if dev > IOP_ROUNDING_TOL:
            note = (f"{path}: ImageOrientationPatient {raw!r} deviates by {dev:.2g} from two orthogonal unit vectors; "
                    "normalised")
    return np.concatenate([r, c]), note


def _spacing(ds: Any, path: str = "", frame: int | None = None) -> tuple[float, float] | None:
    """PixelSpacing (rows, columns) mm; None when absent, ReaderError when present but not 2 positive numbers."""
    raw = _present(ds, "PixelSpacing")
    if raw is None:
        return None
    v = _vec(_nums(ds, "PixelSpacing"), 2)
    if v is None or (v <= 0).any() or (v > 1e5).any():
        raise ReaderError(f"{path}: PixelSpacing {raw!r}{_frame_note(frame)} is not two positive sizes (mm): the "
                          "header is damaged")
    return float(v[0]), float(v[1])


def _slice_spacing(ds: Any) -> float | None:
    for name in ("SpacingBetweenSlices", "SliceThickness"):
        f = _float(_nums(ds, name))
        if f is not None and f > 0:
            return f
    return None


def _rescale(ds: Any, path: str = "") -> tuple[float, float]:
    for name in ("RescaleSlope", "RescaleIntercept"):
        raw = _present(ds, name)
        if raw is not None and _float(_nums(ds, name)) is None:
            raise ReaderError(f"{path}: {name} {raw!r} is not a finite number: the header is damaged")
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
