"""DICOM reader: a file, a multi-frame file, a folder of series or a DICOMDIR -> Volumes.

Geometry convention (exact, tested against dcm2niix on real GE and Siemens data):
``Volume.axes`` is ``"ZYX"`` (slice, row, column) or ``"TZYX"``; ``Volume.affine``
maps a data index ``(k, i, j)`` (``(t, k, i, j)``) to patient **LPS** millimetres
ordered **(z, y, x)** (time in seconds first).  Columns of the 4x4 part:
``d/dj = PixelSpacing[1] * row_cosine``, ``d/di = PixelSpacing[0] * column_cosine``,
``d/dk = ImagePositionPatient[k+1] - ImagePositionPatient[k]`` (sorted along the
slice normal), translation = ImagePositionPatient of slice 0, each reordered
xyz -> zyx.  ``scale``/``translate`` are None (napari uses the affine).

Slice order is the distance of ImagePositionPatient along the slice normal
(as ITK/GDCM's IPP sorter and dcm2niix do), never InstanceNumber or file
name.  When every position holds the same number ``n`` of images the series is
4D (``n`` time points, e.g. fMRI); within one position images are ordered by
(TemporalPositionIdentifier, acquisition date/time, InstanceNumber).  dcm2niix
sorts a series by InstanceNumber (after splitting acquisitions/echoes) and cuts
it into volumes of ``n_slices`` consecutive images; grouping by position first
gives the same result on the GE regression data (where all files share one
AcquisitionTime) without depending on how instances were numbered.  Unequal
repeat counts are refused (or split by AcquisitionNumber when that makes them
consistent).  Gaps of a whole number of median spacings are filled with blank
slices (exact geometry, reported); other uneven spacing loads with the first
slice + median spacing and a warning saying by how much slices are misplaced.

DICOM-SEG is read as a label volume (value = segment number); RTSTRUCT, SR,
RT Plan and other objects without pixel data are refused with a message naming
them (skipped inside folders).

Stages: find files (:func:`_collect_files`) -> parse headers
(:mod:`.header`) -> group frames into series -> order slices and time
(:mod:`.geometry`) -> read pixels in parallel into one preallocated array
(:mod:`.pixels`) -> rescale to real values.  DICOM-SEG files become label
volumes (:mod:`.seg`).  Nothing here imports napari or torch.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ReaderError
from ...geometry import LPS, Volume
from .geometry import StackLayout, lps_affine_zyx, plan_stack, time_affine
from .header import (
    KEEP_TAGS,
    MEDIA_STORAGE_DIRECTORY,
    NON_IMAGE_MODALITIES,
    FileHeader,
    Frame,
    NotDicomError,
    frame_notes,
    frames_of,
    read_header,
)
from .mosaic import unpack_mosaic
from .pixels import check_rescale_range, decode, invert_monochrome1, read_native_into, rescale, stored_dtype
from .tags import nums, text

log = logging.getLogger(__name__)

__all__ = ["is_dicom_path", "read_dicom", "DicomWarning"]

#: How many files :func:`is_dicom_path` looks at in a folder before giving up.
PROBE_FILES = 64
#: How deep :func:`is_dicom_path` descends into sub-folders.
PROBE_DEPTH = 3
GEOMETRY = "LPS (z, y, x) mm"
#: File names that say "DICOM": such a file that is empty or not DICOM is reported, never skipped silently.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", ".dic")


class DicomWarning(UserWarning):
    """Something about a DICOM series deserves attention (gaps, uneven spacing, skipped files)."""


# ------------------------------------------------------------------------------------------------
# is_dicom_path
# ------------------------------------------------------------------------------------------------

def is_dicom_path(path: str | os.PathLike) -> bool:
    """Cheap check: a DICOM file, a DICOMDIR, or a folder holding at least one DICOM file.

    A file qualifies when it has ``DICM`` at byte 128 (DICOM Part 10) or is
    named ``DICOMDIR``.  A folder qualifies when one of the first
    :data:`PROBE_FILES` files met breadth-first, down to :data:`PROBE_DEPTH`
    levels of sub-folders, does.  Never raises.
    """
    try:
        p = Path(path)
        if p.is_file():
            return p.name.upper() == "DICOMDIR" or _has_dicm(p)
        if not p.is_dir():
            return False
        budget = PROBE_FILES
        level = [p]
        for _ in range(PROBE_DEPTH + 1):
            nxt = []
            for d in level:
                try:
                    entries = sorted(os.scandir(d), key=lambda e: e.name)
                except OSError:
                    continue
                for e in entries:
                    if e.name.startswith("."):
                        continue
                    try:
                        if e.is_dir():
                            nxt.append(Path(e.path))
                        elif e.is_file():
                            if e.name.upper() == "DICOMDIR" or _has_dicm(Path(e.path)):
                                return True
                            budget -= 1
                            if budget <= 0:
                                return False
                    except OSError:
                        continue
            level = nxt
            if not level:
                break
        return False
    except Exception:  # documented as never raising (used by the napari get_reader hook)
        log.debug("is_dicom_path(%r) failed", path, exc_info=True)
        return False


def _has_dicm(p: Path) -> bool:
    try:
        with open(p, "rb") as fp:
            head = fp.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


# ------------------------------------------------------------------------------------------------
# read_dicom
# ------------------------------------------------------------------------------------------------

def read_dicom(path: str | os.PathLike) -> list[Volume]:
    """Read every image series under ``path``.

    Parameters
    ----------
    path : str or path-like
        A DICOM file (single- or multi-frame), a DICOMDIR, or a folder searched
        recursively (non-DICOM files are skipped).

    Returns
    -------
    list of Volume
        One per image series (split further when orientation, size, pixel format
        or echo differ), ordered by SeriesNumber.  ``data`` is a numpy array with
        axes ``ZYX``/``TZYX`` (``S`` last for colour); slices are ordered along
        the slice normal; values are rescaled (CT in HU) to int16 / int32 when
        integral, else float32; MONOCHROME1 is inverted.  ``affine`` maps index
        to LPS (z, y, x) mm, see the module docstring.  DICOM-SEG files give
        ``layer_type="labels"`` volumes.  ``metadata["warnings"]`` lists problems
        (missing slices, uneven spacing, skipped files or series), which are also
        issued with :func:`warnings.warn` (:class:`DicomWarning`).

    Raises
    ------
    ReaderError
        Nothing readable: not DICOM, no image series, corrupt/truncated data,
        unsupported compression, inconsistent duplicate slices.  When a folder
        holds several series and only some fail, the others are returned and the
        failures are reported as warnings (never a partially filled Volume).
    """
    p = Path(path)
    if not p.exists():
        raise ReaderError(f"{p} does not exist")
    files, single = _collect_files(p)
    if not files:
        raise ReaderError(f"{p}: empty folder" if p.is_dir() else f"{p}: the DICOMDIR lists no existing files")
    headers, notes, broken = _scan(files, single)
    image_headers = [h for h in headers if h.fmt is not None]
    groups, bad = _group_series(image_headers, strict=single)
    broken += bad
    damaged, loose = _attribute(broken, groups, headers)
    if loose:
        shown = "; ".join(m for _, m, _ in loose[:3]) + (f"; ... ({len(loose) - 3} more)" if len(loose) > 3 else "")
        notes.append(f"skipped {len(loose)} unreadable DICOM file(s): {shown}")
    if not groups:
        if broken:
            more = f" (and {len(broken) - 1} more damaged file(s))" if len(broken) > 1 else ""
            raise ReaderError(f"{p}: no readable DICOM image: {broken[0][1]}{more}")
        kinds = sorted({_describe_non_image(h) for h in headers})
        what = f" (found only: {', '.join(kinds)})" if kinds else ""
        detail = f"; {notes[0]}" if notes else ""
        raise ReaderError(f"{p}: no DICOM image data{what}{detail}")
    volumes: list[tuple[tuple, Volume]] = []
    failures: list[str] = []
    for key, name, frames in groups:
        try:
            if key[-2] in damaged:
                msgs = damaged[key[-2]]
                raise ReaderError(f"{p}: series {name!r} would be incomplete, a file of it is damaged: {msgs[0]}"
                                  + (f" (and {len(msgs) - 1} more)" if len(msgs) > 1 else "")
                                  + "; remove or replace the damaged file(s) to read the series")
            vols = _build_volumes(frames, name, p)
        except ReaderError as exc:
            msg = str(exc)
            if str(p) not in msg and not any(f.file.path in msg for f in frames):
                msg = f"{p}: series {name!r}: {msg}"
            if len(groups) == 1:
                if msg != str(exc):
                    raise ReaderError(msg) from exc
                raise
            failures.append(f"series {name!r} skipped: {msg}")
            continue
        for i, v in enumerate(vols):
            volumes.append(((key, i), v))
    if not volumes:
        raise ReaderError(f"{p}: no series could be read: " + " | ".join(failures))
    volumes.sort(key=lambda kv: kv[0])
    out = [v for _, v in volumes]
    extra = notes + failures
    for msg in extra:
        warnings.warn(f"{p}: {msg}", DicomWarning, stacklevel=2)
    for v in out:
        for msg in v.metadata.get("warnings", []):
            warnings.warn(f"{v.name}: {msg}", DicomWarning, stacklevel=2)
        if extra:
            v.metadata.setdefault("warnings", []).extend(extra)
    return out


def _attribute(broken: list[tuple[str, str, str | None]], groups: list[tuple[tuple, str, list[Frame]]],
               headers: list[FileHeader]) -> tuple[dict[str, list[str]], list[tuple[str, str, str | None]]]:
    """Which series each damaged file belongs to: ``({series key: [messages]}, files that belong to none)``.

    A damaged file belongs to a series when its header still says so (SeriesInstanceUID), or when it
    lies in a folder whose readable files are all of that one series (a series folder).  Such a series
    is never returned incomplete; a damaged file in a folder holding several series is reported as a
    warning naming it.
    """
    by_uid: dict[str, str] = {}
    dir_series: dict[str, set[str]] = defaultdict(set)
    if not broken:
        return {}, []
    for key, _name, frames in groups:
        uid = key[-2]
        for h in {id(f.file): f.file for f in frames}.values():
            by_uid.setdefault(text(h.ds, "SeriesInstanceUID") or uid, uid)
            dir_series[os.path.dirname(h.path)].add(uid)
    for h in headers:  # non-image files (RTSTRUCT, SR...) in the folder make it a mixed folder
        if h.fmt is None:
            dir_series[os.path.dirname(h.path)].add(f"other:{text(h.ds, 'SeriesInstanceUID') or h.path}")
    damaged: dict[str, list[str]] = defaultdict(list)
    loose = []
    for path, msg, uid in broken:
        target = by_uid.get(uid) if uid else None
        if target is None and not (uid and not uid.startswith("file:")):  # a series of its own: reported only
            in_dir = dir_series.get(os.path.dirname(path), set())
            if len(in_dir) == 1 and not next(iter(in_dir)).startswith("other:"):
                target = next(iter(in_dir))
        if target is None:
            loose.append((path, msg, uid))
        else:
            damaged[target].append(msg)
    return dict(damaged), loose


def _describe_non_image(h: FileHeader) -> str:
    mod = h.modality
    if mod in NON_IMAGE_MODALITIES:
        return f"{mod} ({NON_IMAGE_MODALITIES[mod]}, not an image)"
    return f"{mod} without pixel data" if mod else "files without pixel data"


def _collect_files(p: Path) -> tuple[list[str], bool]:
    """Files to parse and whether ``p`` named one file (so errors should not be skipped)."""
    if p.is_dir():
        files = []
        for root, dirs, names in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for n in sorted(names):
                f = os.path.join(root, n)
                if not n.startswith(".") and n.upper() != "DICOMDIR" and _is_regular(f):
                    files.append(f)
        return files, False
    if p.name.upper() == "DICOMDIR" or _is_dicomdir(p):
        return _dicomdir_files(p), False
    return [str(p)], True


def _is_regular(path: str) -> bool:
    """A regular file (after symlinks): FIFOs, sockets, devices and dangling links are never opened."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _is_dicomdir(p: Path) -> bool:
    if not _has_dicm(p):
        return False
    try:
        import pydicom

        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=[0x00020002])
        return str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY
    except Exception:  # noqa: BLE001
        return False


def _dicomdir_files(p: Path) -> list[str]:
    import pydicom
    from pydicom.fileset import FileSet

    try:
        fs = FileSet(pydicom.dcmread(p))
        paths = [str(inst.path) for inst in fs]
    except KeyError as exc:
        raise ReaderError(f"{p}: damaged DICOMDIR: a directory record points to byte offset {exc.args[0]}, where "
                          "no record starts (truncated or edited file); open the folder holding the series "
                          "instead") from exc
    except Exception as exc:  # pydicom's FileSet fails in many ways on damaged DICOMDIRs
        raise ReaderError(f"{p}: damaged DICOMDIR ({type(exc).__name__}: {exc}); open the folder holding the "
                          "series instead") from exc
    existing = [f for f in paths if _is_regular(f)]
    if paths and not existing:
        raise ReaderError(f"{p}: DICOMDIR lists {len(paths)} files but none exists next to it")
    return existing + [f for f in paths if f not in set(existing)]  # the others are reported by _scan


def _scan(files: list[str], single: bool) -> tuple[list[FileHeader], list[str], list[tuple[str, str, str | None]]]:
    """Parse headers: the headers, notes, and damaged files ``(path, message, SeriesInstanceUID or None)``.

    Files that are not DICOM are skipped silently (README, thumbnails...), unless their name says DICOM
    (:data:`DICOM_SUFFIXES`) or they are empty: those are damaged files, as are DICOM files that cannot
    be parsed or are truncated.
    """
    headers: list[FileHeader] = []
    broken: list[tuple[str, str, str | None]] = []
    for f in files:
        if not single and not _is_regular(f):  # listed by a DICOMDIR but missing, or a pipe/device
            what = "missing" if not os.path.lexists(f) else "not a regular file"
            broken.append((f, f"{f}: listed in the DICOMDIR but {what}", None))
            continue
        try:
            headers.append(read_header(f))
        except NotDicomError as exc:
            if single:
                raise
            if f.lower().endswith(DICOM_SUFFIXES) or _is_empty(f):
                broken.append((f, str(exc), None))
            continue  # README, thumbnails, ... (as the GE folders have)
        except ReaderError as exc:
            if single:
                raise
            broken.append((f, str(exc), getattr(exc, "series_uid", None)))
    notes = []
    # the same instance twice (copied files): keep the first
    seen: dict[str, str] = {}
    unique = []
    dupes = 0
    for h in headers:
        uid = text(h.ds, "SOPInstanceUID") or ""
        if uid and uid in seen:
            dupes += 1
            continue
        if uid:
            seen[uid] = h.path
        unique.append(h)
    if dupes:
        notes.append(f"ignored {dupes} file(s) repeating an SOPInstanceUID already read")
    return unique, notes, broken


def _is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0 and "." not in os.path.basename(path)
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------
# series grouping
# ------------------------------------------------------------------------------------------------

def _series_sort_key(h: FileHeader) -> tuple:
    num = nums(h.ds, "SeriesNumber")
    n = num[0] if num else float("inf")
    return (n, text(h.ds, "SeriesDescription") or "", text(h.ds, "SeriesInstanceUID") or h.path)


def _series_name(h: FileHeader) -> str:
    ds = h.ds
    desc = (text(ds, "SeriesDescription") or "").strip()
    num = (text(ds, "SeriesNumber") or "").strip()
    mod = h.modality
    if desc and num:
        return f"{num}: {desc}"
    if desc:
        return desc
    if num:
        return f"{mod or 'DICOM'} series {num}"
    return Path(h.path).stem or "DICOM"


def _group_series(headers: list[FileHeader], strict: bool = False
                  ) -> tuple[list[tuple[tuple, str, list[Frame]]], list[tuple[str, str, str | None]]]:
    """Frames grouped by series, orientation, frame size, pixel format and echo.

    Returns the groups (sort key, name, frames) and the files whose frames
    could not be described, as ``(path, message, SeriesInstanceUID)`` (raised
    instead when ``strict``).
    """
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    first_header: dict[tuple, FileHeader] = {}
    notes: list[tuple[str, str, str | None]] = []
    for h in headers:
        try:
            frames = frames_of(h)
        except ReaderError as exc:
            if strict:
                raise
            notes.append((h.path, str(exc), text(h.ds, "SeriesInstanceUID") or f"file:{h.path}"))
            continue
        fmt = h.fmt
        uid = text(h.ds, "SeriesInstanceUID") or f"file:{h.path}"
        if h.is_seg:
            uid = f"seg:{text(h.ds, 'SOPInstanceUID') or h.path}"
        echo = text(h.ds, "EchoNumbers") or ""
        for f in frames:
            ori = tuple(np.round(f.iop, 4)) if f.iop is not None and f.ipp is not None else None
            sub = (("orientation", ori), ("size", (f.rows, f.cols)),
                   ("format", (fmt.rgb, fmt.photometric, str(stored_dtype(fmt)))), ("echo", echo))
            if ori is None and not h.is_seg:
                sub += (("file", h.path),)  # images without geometry are never stacked across files
            key = (uid,) + sub
            groups[key].append(f)
            first_header.setdefault(key, h)
    by_series: dict[str, list[tuple]] = defaultdict(list)
    for key in groups:
        by_series[key[0]].append(key)
    out = []
    for keys in by_series.values():
        keys.sort(key=_sortable)
        order = _series_sort_key(first_header[keys[0]])  # SeriesNumber, description, UID
        for n, key in enumerate(keys):
            name = _series_name(first_header[key])
            if len(keys) > 1:
                subs = [dict(k[1:]) for k in keys]
                differs = [part for part in ("orientation", "size", "format", "echo", "file")
                           if len({repr(s.get(part)) for s in subs}) > 1]
                name = f"{name} [{n + 1}/{len(keys)}: {', '.join(differs) or 'part'}]"
            out.append((order + (key[0], n), name, groups[key]))
    out.sort(key=lambda t: t[0])
    return out, notes


def _sortable(key: tuple) -> tuple:
    return tuple(repr(k) if not isinstance(k, (int, float)) else k for k in key)


# ------------------------------------------------------------------------------------------------
# volume assembly
# ------------------------------------------------------------------------------------------------

def _build_volumes(frames: list[Frame], name: str, source: Path) -> list[Volume]:
    hdr = frames[0].file
    if hdr.is_seg:
        from .seg import build_seg_volume

        return [build_seg_volume(frames, name, _metadata(frames, source))]
    if all(f.ipp is not None and f.iop is not None for f in frames):
        try:
            return [_build_stack(frames, name, source)]
        except ReaderError as exc:
            split = _split_by_acquisition(frames)
            if split is None:
                raise
            log.info("%s: %s; splitting by AcquisitionNumber", name, exc)
            return [_build_stack(fs, f"{name} (acquisition {acq})", source) for acq, fs in split]
    return [_build_flat(frames, name, source)]


def _split_by_acquisition(frames: list[Frame]) -> list[tuple[int, list[Frame]]] | None:
    acqs = {f.acquisition for f in frames}
    if len(acqs) < 2 or None in acqs:
        return None
    return [(a, [f for f in frames if f.acquisition == a]) for a in sorted(acqs)]


def _build_stack(frames: list[Frame], name: str, source: Path) -> Volume:
    first = frames[0]
    iop = first.iop
    positions = np.array([f.ipp for f in frames])
    layout = plan_stack(positions, iop, [f.time_key for f in frames], single_slice_spacing=first.slice_spacing)
    fmt = first.file.fmt
    spacing = first.pixel_spacing
    warn_list = frame_notes(frames) + list(layout.warnings)
    if spacing is None:
        spacing = (1.0, 1.0)
        warn_list.append("no PixelSpacing: pixels assumed 1 mm apart")
    elif any(f.pixel_spacing != first.pixel_spacing for f in frames):
        warn_list.append("PixelSpacing differs between slices; the first slice's value is used")
    data, cl, value_meta = _pixels(frames, layout.order, warn_list)
    affine = lps_affine_zyx(layout.origin, iop, spacing, layout.step)
    meta = _metadata(frames, source)
    meta.update(value_meta)
    meta["slice_normal_lps_xyz"] = [float(v) for v in layout.normal]
    meta["slice_positions_mm"] = [float(v) for v in layout.distances]
    meta.update(layout.info)
    if layout.n_times > 1:
        dt, unit, how = _time_step(frames, layout)
        meta["time_step"] = how
        affine = time_affine(affine, dt)
        axes, units = "TZYX", (unit, "mm", "mm", "mm")
    else:
        data = data[0]
        axes, units = "ZYX", ("mm", "mm", "mm")
    if fmt.rgb:
        axes += "S"
    meta["warnings"] = warn_list
    return Volume(data=data, axes=axes, name=name, affine=affine, units=units, contrast_limits=cl, metadata=meta,
                  frame=LPS)


def _build_flat(frames: list[Frame], name: str, source: Path) -> Volume:
    """Images without a patient position (secondary capture, US, CR...): pixel grid only."""
    ds = frames[0].file.ds
    fmt = frames[0].file.fmt
    order = np.arange(len(frames), dtype=np.int64)[None, :]
    warn_list: list[str] = frame_notes(frames)
    data, cl, value_meta = _pixels(frames, order, warn_list)
    data = data[0]
    spacing = frames[0].pixel_spacing
    meta = _metadata(frames, source)
    meta.update(value_meta)
    meta["geometry"] = "pixel grid (no ImagePositionPatient/ImageOrientationPatient)"
    if spacing is None:
        ips = ds.get("ImagerPixelSpacing")
        try:
            spacing = (float(ips[0]), float(ips[1])) if ips is not None else None
            if spacing is not None:
                meta["geometry"] += "; spacing from ImagerPixelSpacing (at the detector)"
        except (TypeError, ValueError, IndexError):
            spacing = None
    yx_scale = tuple(spacing) if spacing else (1.0, 1.0)
    yx_units = ("mm", "mm") if spacing else ("", "")
    if len(frames) == 1:
        data = data[0]
        axes, scale, units = "YX", yx_scale, yx_units
    else:
        ft = _frame_time_s(ds)
        if ft is not None or text(ds, "Modality") in ("US", "XA", "RF", "ES", "XC"):
            axes, scale, units = "TYX", (ft or 1.0,) + yx_scale, ("s" if ft else "",) + yx_units
        else:
            axes, scale, units = "ZYX", (1.0,) + yx_scale, ("",) + yx_units
    if fmt.rgb:
        axes += "S"
    meta["warnings"] = warn_list
    return Volume(data=data, axes=axes, name=name, scale=scale, translate=(0.0,) * len(scale), units=units,
                  contrast_limits=cl, metadata=meta)


def _frame_time_s(ds: Any) -> float | None:
    try:
        ft = float(ds.get("FrameTime")) if ds.get("FrameTime") not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return ft / 1000.0 if ft and ft > 0 else None


def _time_step(frames: list[Frame], layout: StackLayout) -> tuple[float, str, str]:
    """(seconds per time point, unit, how it was found) for a 4D stack."""
    ds = frames[0].file.ds
    tr = ds.get("RepetitionTime")
    try:
        tr = float(tr) if tr not in (None, "") else None
    except (TypeError, ValueError):
        tr = None
    if tr and tr > 0 and text(ds, "Modality") == "MR":
        return tr / 1000.0, "s", "RepetitionTime"
    # median difference of acquisition times between consecutive time points
    when = np.array([[frames[i].time_key[1] if i >= 0 else np.nan for i in row] for row in layout.order], float)
    when[~np.isfinite(when)] = np.nan
    if np.isfinite(when).any():
        per_t = np.nanmean(when, axis=1)
        d = np.diff(per_t)
        if d.size and np.isfinite(d).all() and np.median(d) > 0:
            return float(np.median(d)), "s", "median AcquisitionTime difference"
    return 1.0, "", "unknown (index)"


def _pixels(frames: list[Frame], order: np.ndarray, warn_list: list[str]
            ) -> tuple[np.ndarray, tuple[float, float] | None, dict[str, Any]]:
    """Read, invert (MONOCHROME1) and rescale the frames into a ``(T, Z, Y, X[, S])`` array.

    Returns the array, the contrast limits and metadata about the values.
    """
    fmt = frames[0].file.fmt
    frame_shape = (frames[0].rows, frames[0].cols) + ((3,) if fmt.rgb else ())
    stored = np.empty(order.shape + frame_shape, dtype=stored_dtype(fmt))
    missing = order < 0
    if missing.any():
        stored[missing] = 0
    _load_into(stored, frames, order)
    meta: dict[str, Any] = {}
    if fmt.photometric == "MONOCHROME1":
        invert_monochrome1(stored, fmt)
        lo, hi = fmt.stored_range
        meta["monochrome1_inverted"] = (f"MONOCHROME1 (white = minimum) inverted so that higher = brighter: "
                                        f"stored value x replaced by {lo + hi} - x (BitsStored range "
                                        f"[{lo}, {hi}]) before the rescale; the window is mirrored the same way")
    slopes = np.where(missing, 1.0, [[frames[i].slope if i >= 0 else 1.0 for i in row] for row in order])
    intercepts = np.where(missing, 0.0, [[frames[i].intercept if i >= 0 else 0.0 for i in row] for row in order])
    if not fmt.rgb:  # before any arithmetic: absurd values would overflow or give inf
        for (slope, intercept), path in {(f.slope, f.intercept): f.file.path for f in reversed(frames)}.items():
            check_rescale_range(path, np.array([slope]), np.array([intercept]), fmt.stored_range)
    data = rescale(stored, slopes, intercepts, frame_axes=2, stored_range=fmt.stored_range) if not fmt.rgb else stored
    if missing.any():
        data[missing] = data[~missing].min()
    if not fmt.rgb:
        s0, b0 = float(slopes[~missing].flat[0]), float(intercepts[~missing].flat[0])
        if (slopes[~missing] == s0).all() and (intercepts[~missing] == b0).all():
            meta["rescale"] = {"slope": s0, "intercept": b0}
        else:
            meta["rescale"] = "per frame (RescaleSlope/RescaleIntercept differ between frames)"
    meta["dtype"] = str(data.dtype)
    cl = None
    if not fmt.rgb:
        first = frames[int(order[~missing].flat[0])]
        if first.window is not None:
            c, w = first.window
            if fmt.photometric == "MONOCHROME1":
                lo, hi = fmt.stored_range
                c = first.slope * (lo + hi) + 2 * first.intercept - c
            cl = (c - w / 2.0, c + w / 2.0)
            meta["contrast_limits_from"] = "WindowCenter/WindowWidth"
        else:
            cl = _sample_range(data)
            meta["contrast_limits_from"] = "min/max of a sample of slices"
    return data, cl, meta


def _sample_range(data: np.ndarray) -> tuple[float, float]:
    flat = data.reshape((-1,) + data.shape[-2:])
    step = max(1, flat.shape[0] // 16)
    sample = flat[::step]
    lo, hi = float(sample.min()), float(sample.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _load_into(out: np.ndarray, frames: list[Frame], order: np.ndarray) -> None:
    """Decode every needed file once (in parallel threads) and copy its frames into ``out``."""
    jobs: dict[FileHeader, list[tuple[int, tuple[int, int]]]] = {}
    for (t, z), i in np.ndenumerate(order):
        if i < 0:
            continue
        f = frames[i]
        jobs.setdefault(f.file, []).append((f.index, (t, z)))

    def work(item: tuple[FileHeader, list[tuple[int, tuple[int, int]]]]) -> None:
        hdr, targets = item
        if hdr.offset is not None and hdr.mosaic is None and out.shape[2:] == (hdr.fmt.rows, hdr.fmt.cols) \
                and out.dtype == stored_dtype(hdr.fmt):
            read_native_into(hdr.path, hdr.fmt, hdr.offset, [(sub, out[dest]) for sub, dest in targets])
            return
        arr = decode(hdr.path, hdr.fmt, hdr.offset, hdr.ds)
        if hdr.mosaic is not None:
            arr = unpack_mosaic(arr[0], hdr.mosaic)
        if arr.shape[1:] != out.shape[2:]:
            raise ReaderError(f"{hdr.path}: frame shape {arr.shape[1:]} differs from the series' {out.shape[2:]}")
        if arr.dtype != out.dtype:
            raise ReaderError(f"{hdr.path}: pixel type {arr.dtype} differs from the series' {out.dtype}")
        for sub, dest in targets:
            out[dest] = arr[sub]

    items = list(jobs.items())
    workers = min(len(items), max(1, min(8, (os.cpu_count() or 1) * 2)))
    if workers <= 1:
        for it in items:
            work(it)
        return
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for _ in ex.map(work, items):
            pass


def _metadata(frames: list[Frame], source: Path) -> dict[str, Any]:
    ds = frames[0].file.ds
    tags: dict[str, Any] = {}
    for name in KEEP_TAGS:
        if name in ds:
            try:
                tags[name] = _plain(ds.get(name))
            except Exception:  # noqa: BLE001 - a value pydicom cannot convert is left out of the metadata
                tags[name] = text(ds, name)
    files = list(dict.fromkeys(f.file.path for f in frames))
    meta: dict[str, Any] = {"source": str(source), "files": files, "n_files": len(files), "dicom": tags,
                            "geometry": GEOMETRY}
    if frames[0].file.mosaic is not None:
        m = frames[0].file.mosaic
        meta["mosaic"] = {"slices": m.n_slices, "grid": m.grid, "tile": (m.rows, m.cols),
                          "slice_normal_lps_xyz": [float(v) for v in m.normal]}
    return meta


def _plain(val: Any) -> Any:
    """pydicom values -> plain Python (str/float/int/list) for the metadata dict."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import IS, DSfloat

    if isinstance(val, (MultiValue, list, tuple)):
        return [_plain(v) for v in val]
    if isinstance(val, DSfloat):
        return float(val)
    if isinstance(val, IS):
        return int(val)
    if isinstance(val, (int, float)):
        return val
    return str(val)
