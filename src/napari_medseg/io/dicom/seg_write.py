"""Labels on a DICOM series' grid -> a DICOM Segmentation (SEG) file, with highdicom.

:func:`write_dicom_seg` writes one segment per label id.  The labels are
``(Z, Y, X)`` in *our* slice order: the order in which
:func:`~napari_medseg.io.dicom.read_dicom` stacks the series (along the slice
normal, gaps of whole slices filled with blank ones).  The source files are
put into that order with the reader's own code (:func:`.header.frames_of`,
:func:`.geometry.plan_stack`), so slice ``k`` of the labels becomes the frame
that references the source image at slice ``k``; a labels :class:`Volume`
whose geometry is not the series' grid is refused.

The SEG references every source SOP instance and the frame of reference, and
names its algorithm ("napari-medseg", family Artificial Intelligence) unless
``algorithm_type="MANUAL"``.  BINARY (one bit-packed frame per segment and
slice it touches; read by every SEG reader) is the default; LABELMAP (one
frame per slice, pixel value = segment number; DICOM 2024) is smaller and
faster for many segments but not yet read everywhere.

highdicom (a dependency of napari-medseg: pure Python plus pyjpegls, no
heavy libraries) is imported on first use only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import MedsegError, ParameterError, ReaderError
from ...geometry import LPS, Geometry, Volume
from ..atomic import atomic_write
from .geometry import lps_affine_zyx, plan_stack
from .header import FileHeader, frames_of
from .mosaic import is_mosaic
from .pixels import pixel_format

#: Corner mismatch (mm) under which a labels Volume counts as lying on the series grid.
GRID_TOL_MM = 1e-2
#: Longest SegmentLabel (VR LO).
MAX_LABEL = 64
SEGMENTATION_TYPES = ("BINARY", "LABELMAP")
ALGORITHM_TYPES = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")
#: Display colours (sRGB) given to segments in turn; viewers such as 3D Slicer and OHIF show them.
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
           (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
           (0, 0, 128), (128, 128, 128))


class MissingDependencyError(MedsegError, ImportError):
    """An optional library that this feature needs is not installed; the message says what to install."""


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError as exc:
        raise MissingDependencyError("writing DICOM-SEG needs highdicom: pip install 'highdicom>=0.22' "
                                     "(a dependency of napari-medseg; reinstall it to get it)") from exc
    return highdicom


class SeriesGrid:
    """A DICOM series' source datasets in the reader's slice order, and its grid.

    Attributes
    ----------
    datasets : list of pydicom.Dataset
        Source images (headers), in the order given.
    z_of_frame : list of list of int
        For each dataset, the slice index of each of its frames.
    shape : tuple of int
        ``(Z, Y, X)`` of the stacked series.
    geometry : Geometry
        Index -> LPS ``(z, y, x)`` mm, as the reader computes it.
    filled : list of int
        Blank slices the reader inserts in gaps (no source image).
    """

    def __init__(self, datasets: list[Any], z_of_frame: list[list[int]], shape: tuple[int, int, int],
                 geometry: Geometry, filled: list[int]) -> None:
        self.datasets = datasets
        self.z_of_frame = z_of_frame
        self.shape = shape
        self.geometry = geometry
        self.filled = filled


def _source_datasets(source: Any, series_uid: str | None) -> list[tuple[str, Any]]:
    """(name, header dataset) of the image files of one series."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError

    if hasattr(source, "metadata") and hasattr(source, "axes") and not isinstance(source, Dataset):
        files = source.metadata.get("files")
        if not files:
            raise ParameterError(f"{getattr(source, 'name', 'volume')}: not read from DICOM files "
                                 "(no metadata['files']); give the series folder")
        items: list[Any] = list(files)
        strict = True
    elif isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            items = [os.path.join(r, n) for r, ds, ns in sorted(os.walk(p)) for n in sorted(ns)
                     if not n.startswith(".") and n.upper() != "DICOMDIR"]
            strict = False
        elif p.is_file():
            items, strict = [str(p)], True
        else:
            raise ParameterError(f"source series {p} does not exist")
    elif isinstance(source, Dataset):
        items, strict = [source], True
    else:
        items, strict = list(source), True
    out: list[tuple[str, Any]] = []
    for i, it in enumerate(items):
        if isinstance(it, Dataset):
            out.append((f"dataset {i}", it))
            continue
        try:
            ds = pydicom.dcmread(it, stop_before_pixels=True)
        except InvalidDicomError as exc:
            if strict:
                raise ParameterError(f"source {it}: not a DICOM file") from exc
            continue
        except Exception as exc:  # pydicom signals broken files with many exception types
            raise ReaderError(f"source {it}: unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
        out.append((str(it), ds))
    images = [(n, ds) for n, ds in out if "Rows" in ds and "Columns" in ds
              and str(ds.get("Modality", "")) not in ("SEG", "RTSTRUCT", "SR", "RTPLAN", "PR", "KO")]
    if not images:
        raise ParameterError(f"source {source}: no DICOM image files")
    by_series: dict[str, list[tuple[str, Any]]] = {}
    for n, ds in images:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((n, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise ParameterError(f"source {source}: no series {series_uid} (found {sorted(by_series)})")
        return by_series[series_uid]
    if len(by_series) > 1:
        desc = "; ".join(f"{uid} ({str(v[0][1].get('SeriesDescription', '') or '')!r}, {len(v)} files)"
                         for uid, v in by_series.items())
        raise ParameterError(f"source {source}: holds {len(by_series)} series ({desc}); pass series_uid= or "
                             "the files of one series")
    return next(iter(by_series.values()))


def series_grid(source: Any, series_uid: str | None = None) -> SeriesGrid:
    """Source datasets of a series and where the reader puts each of their frames.

    Parameters
    ----------
    source : folder, file, list of files or pydicom Datasets, or Volume
        The series (a Volume read by :func:`~napari_medseg.io.dicom.read_dicom`
        stands for its ``metadata["files"]``).
    series_uid : str, optional
        Which series, when the folder holds several.

    Raises
    ------
    ParameterError
        No image files, several series, no patient geometry, several
        orientations or frame sizes, a time series, a Siemens mosaic, or
        several multi-frame files.
    """
    named = _source_datasets(source, series_uid)
    frames = []
    owner: list[int] = []
    for d, (name, ds) in enumerate(named):
        if is_mosaic(ds):
            raise ParameterError(f"{name}: Siemens mosaic sources are not supported for DICOM-SEG export")
        hdr = FileHeader(path=name, ds=ds, fmt=pixel_format(ds, name))
        fs = frames_of(hdr)
        frames.extend(fs)
        owner.extend([d] * len(fs))
    multi = [n for n, ds in named if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi and len(named) > 1:
        raise ParameterError(f"source series mixes {len(named)} files with multi-frame ones ({multi[:3]}); "
                             "DICOM-SEG export needs single-frame files or one multi-frame file")
    if any(f.ipp is None or f.iop is None for f in frames):
        raise ParameterError("source images without ImagePositionPatient/ImageOrientationPatient: a SEG "
                             "needs a patient grid")
    iop = frames[0].iop
    if any(not np.allclose(f.iop, iop, atol=1e-4) for f in frames):
        raise ParameterError("source images have several orientations; pass the files of one stack")
    if any((f.rows, f.cols) != (frames[0].rows, frames[0].cols) for f in frames):
        raise ParameterError("source images have several frame sizes; pass the files of one stack")
    layout = plan_stack(np.array([f.ipp for f in frames]), iop, [f.time_key for f in frames],
                        single_slice_spacing=frames[0].slice_spacing)
    if layout.n_times > 1:
        raise ParameterError(f"source series has {layout.n_times} images per slice position (a time series); "
                             "DICOM-SEG export takes one 3D stack")
    z_of = np.full(len(frames), -1, dtype=np.int64)
    for z, i in enumerate(layout.order[0]):
        if i >= 0:
            z_of[i] = z
    per_ds: list[list[int]] = [[] for _ in named]
    for i, d in enumerate(owner):
        per_ds[d].append(int(z_of[i]))
    affine = lps_affine_zyx(layout.origin, iop, frames[0].pixel_spacing or (1.0, 1.0), layout.step)
    geometry = Geometry("ZYX", affine, ("mm", "mm", "mm"), LPS)
    shape = (layout.n_slices, frames[0].rows, frames[0].cols)
    filled = [z for z, i in enumerate(layout.order[0]) if i < 0]
    return SeriesGrid([ds for _, ds in named], per_ds, shape, geometry, filled)


def _labels_on_grid(labels: Any, grid: SeriesGrid) -> np.ndarray:
    """The labels as an integer ``(Z, Y, X)`` array on the series grid."""
    from .refs import place_on_grid

    if isinstance(labels, Volume) or (hasattr(labels, "geometry") and hasattr(labels, "axes")):
        if labels.axes != "ZYX":
            raise ParameterError(f"labels {labels.name!r} have axes {labels.axes!r}; expected 'ZYX'")
        g = labels.geometry
        arr = np.asarray(labels.data)
        if g.calibrated and g.frame == LPS:
            same = arr.shape == grid.shape and np.allclose(g.corners(arr.shape), grid.geometry.corners(grid.shape),
                                                           atol=GRID_TOL_MM, rtol=0)
            if not same:
                try:
                    arr, how = place_on_grid(labels, grid.geometry, grid.shape)
                except ReaderError as exc:
                    raise ParameterError(f"labels {labels.name!r}: {exc}") from exc
                if "resampled" in how:
                    raise ParameterError(f"labels {labels.name!r} (shape {labels.shape}) are not on the source "
                                         f"series' grid {grid.shape} nor a part of it: resample them onto the "
                                         "series first")
    else:
        arr = np.asarray(labels)
    if arr.ndim == 2 and grid.shape[0] == 1:
        arr = arr[None]
    if arr.shape != grid.shape:
        raise ParameterError(f"labels of shape {arr.shape} do not fit the source series (Z, Y, X) = {grid.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ParameterError(f"labels must be integers, got {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ParameterError("labels must not be negative")
    if grid.filled and np.any(arr[grid.filled]):
        raise ParameterError(f"labels on slice(s) {grid.filled}, which the series lacks (blank slices the reader "
                             "inserted in a gap): no source image to reference")
    return arr


def _code(value: Any, default: Any) -> Any:
    from pydicom.sr.coding import Code

    if value is None:
        return default
    if isinstance(value, (tuple, list)) and len(value) == 3:
        return Code(str(value[0]), str(value[1]), str(value[2]))
    return value


def _clean_label(name: str) -> str:
    return str(name).replace("\\", "/").replace("\n", " ").strip()[:MAX_LABEL] or "segment"


def write_dicom_seg(path: str | os.PathLike, labels: Any, source: Any,
                    segment_names: Mapping[int, str] | None = None, *,
                    segmentation_type: str = "BINARY", series_uid: str | None = None,
                    series_description: str = "napari-medseg segmentation", series_number: int = 1000,
                    algorithm_type: str = "AUTOMATIC", algorithm_name: str = "napari-medseg",
                    algorithm_version: str | None = None, property_category: Any = None,
                    property_type: Any = None, content_label: str = "SEGMENTATION",
                    content_description: str | None = None) -> Path:
    """Write labels on a DICOM series' grid as a DICOM-SEG file.

    Parameters
    ----------
    path : str or path-like
        Output file (conventionally ``*.seg.dcm``), written atomically.
    labels : array or Volume
        Integer ``(Z, Y, X)`` labels (0 = background) in the reader's slice
        order of ``source``; a Volume must lie on that grid (its shape and
        corners, 0.01 mm), or on a part of it (e.g. a SEG read back).
    source : folder, file, list of files or pydicom Datasets, or Volume
        The segmented series (a Volume from ``read_dicom`` stands for its
        files).  A folder may hold other objects (SEG, RTSTRUCT...) but one
        image series unless ``series_uid`` picks one.
    segment_names : mapping, optional
        ``{label id: name}`` (SegmentLabel); missing ids are named
        ``"lesion <id>"``.  Ids not in ``labels`` are ignored.
    segmentation_type : {"BINARY", "LABELMAP"}
        See the module docstring.
    series_uid : str, optional
        Source series to use when ``source`` holds several.
    series_description, series_number : optional
        Of the new SEG series.
    algorithm_type : {"AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"}
        How the segments were made; MANUAL ones carry no algorithm identification.
    algorithm_name, algorithm_version : str
        AlgorithmIdentificationSequence (default "napari-medseg" and its version).
    property_category, property_type : pydicom Code or (value, scheme, meaning), optional
        SegmentedPropertyCategory/Type of every segment; default
        "Morphologically abnormal structure" / "Lesion" (SNOMED CT).
    content_label, content_description : str, optional
        ContentLabel (CS, upper case) and ContentDescription.

    Returns
    -------
    Path
        ``path``.  Segments are numbered 1..N in increasing label id; each
        segment's TrackingID is ``"label <id>"`` so the original ids survive
        when they were not 1..N.

    Raises
    ------
    ParameterError
        No labelled voxel, labels off the series grid, a source that is not
        one 3D stack (see :func:`series_grid`), or a bad option.
    MissingDependencyError
        highdicom is not installed.
    """
    seg_type = str(segmentation_type).upper()
    if seg_type not in SEGMENTATION_TYPES:
        raise ParameterError(f"segmentation_type must be one of {SEGMENTATION_TYPES}, got {segmentation_type!r}")
    alg_type = str(algorithm_type).upper()
    if alg_type not in ALGORITHM_TYPES:
        raise ParameterError(f"algorithm_type must be one of {ALGORITHM_TYPES}, got {algorithm_type!r}")
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    from ... import __version__

    grid = series_grid(source, series_uid)
    arr = _labels_on_grid(labels, grid)
    ids = np.unique(arr)
    ids = ids[ids > 0]
    if ids.size == 0:
        raise ParameterError("the labels are empty: a DICOM-SEG needs at least one segment")
    if ids.size > 65535:
        raise ParameterError(f"{ids.size} segments: a DICOM-SEG holds at most 65535")
    lut = np.zeros(int(ids[-1]) + 1, dtype=np.uint8 if ids.size < 256 else np.uint16)
    lut[ids] = np.arange(1, ids.size + 1)
    names = {int(k): str(v) for k, v in (segment_names or {}).items()}
    category = _code(property_category, codes.SCT.MorphologicallyAbnormalStructure)
    prop_type = _code(property_type, codes.SCT.Lesion)
    algorithm = None
    if alg_type != "MANUAL":
        algorithm = hd.AlgorithmIdentificationSequence(name=algorithm_name,
                                                       family=codes.cid7162.ArtificialIntelligence,
                                                       version=algorithm_version or __version__)
    descriptions = []
    for n, lid in enumerate(ids.tolist(), start=1):
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=_clean_label(names.get(lid, f"lesion {lid}")),
            segmented_property_category=category, segmented_property_type=prop_type,
            algorithm_type=alg_type, algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=f"label {lid}",
            display_color=hd.color.CIELabColor.from_rgb(*PALETTE[(n - 1) % len(PALETTE)])))
    # one pixel frame per source frame, in the source's own order
    frames = [lut[arr[z]] for zs in grid.z_of_frame for z in zs]
    pixel_array = np.stack(frames)
    seg = hd.seg.Segmentation(
        source_images=grid.datasets, pixel_array=pixel_array, segmentation_type=seg_type,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=int(series_number),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-medseg",
        manufacturer_model_name="napari-medseg", software_versions=__version__, device_serial_number="0",
        content_label=str(content_label).upper()[:16], content_description=content_description,
        omit_empty_frames=True)
    seg.SeriesDescription = str(series_description)[:64]
    return atomic_write(path, lambda tmp: seg.save_as(tmp))


__all__ = ["MissingDependencyError", "SeriesGrid", "series_grid", "write_dicom_seg"]
