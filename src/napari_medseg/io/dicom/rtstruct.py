"""RT Structure Sets (RTSTRUCT) as label volumes on the grid of the image they were drawn on.

An RTSTRUCT holds no pixels: each ROI (StructureSetROISequence: number, name)
has contours (ROIContourSequence -> ContourSequence), CLOSED_PLANAR polygons
whose vertices are patient LPS (x, y, z) millimetres.  :func:`read_rtstruct`
rasterises them onto the referenced image's grid:

* every vertex goes to index space with the image's
  :meth:`~napari_medseg.geometry.Geometry.world_to_index` (oblique and
  gantry-tilted grids included);
* a contour belongs to the slice nearest to its plane, which must lie within
  half a slice of it (else the contour is off the image: an error, or dropped
  with ``outside="skip"``) and be parallel to the slices (its vertices span at
  most :data:`PLANE_TOL_SLICES` of a slice);
* the in-plane indices are filled with :func:`skimage.draw.polygon` (the
  pixels whose centres lie inside), and the contours of one ROI on one slice
  are combined by even-odd (XOR), so a contour inside another is a hole;
* each ROI is one label, 1..n in StructureSetROISequence order, named by its
  ROIName (``metadata["segment_names"]``).  One label image cannot hold
  overlapping ROIs: where they overlap the smaller ROI (fewer voxels) is
  kept, so organs inside BODY or EXTERNAL stay visible, and a warning says
  how many voxels that concerned; ``rois=`` picks the ROIs to read.

Open and point-like contours (OPEN_PLANAR, OPEN_NONPLANAR, POINT) enclose
nothing and are skipped with a note.  Nothing here imports napari or torch;
pydicom and scikit-image are imported on first use.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ParameterError, ReaderError
from ...geometry import LPS, Volume
from .tags import text

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: How far (in slices) the vertices of one contour may spread along the slice axis.
PLANE_TOL_SLICES = 0.25
#: Contour types that enclose an area.
CLOSED = ("CLOSED_PLANAR", "CLOSED_PLANAR_XOR")


def is_rtstruct_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM file holding an RT Structure Set.  Never raises."""
    try:
        p = Path(path)
        if not p.is_file():
            return False
        with open(p, "rb") as fp:
            head = fp.read(132)
        if len(head) < 132 or head[128:132] != b"DICM":
            return False
        import pydicom

        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=[0x00080016, 0x00080060])
        return str(ds.get("SOPClassUID", "")) == RTSTRUCT_SOP_CLASS or str(ds.get("Modality", "")) == "RTSTRUCT"
    except Exception:  # noqa: BLE001 - documented as never raising (used to dispatch reads)
        return False


def _image_for(path: Path, image: Any, refs: Any) -> Volume:
    from .refs import find_referenced_image
    from .series import DicomWarning, read_dicom

    if image is None:
        return find_referenced_image(path.parent, refs)
    if isinstance(image, Volume) or (hasattr(image, "spatial_geometry") and hasattr(image, "axes")):
        return image
    where = Path(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DicomWarning)
        vols = [v for v in read_dicom(where) if v.layer_type == "image"]
    if len(vols) == 1:
        return vols[0]
    return find_referenced_image(where, refs)


def read_rtstruct(path: str | os.PathLike, image: Any = None, *, rois: Sequence[str] | None = None,
                  outside: str = "error") -> Volume:
    """Rasterise an RT Structure Set onto the grid of its image (see the module docstring).

    Parameters
    ----------
    path : str or path-like
        The RTSTRUCT file.
    image : Volume, str or path-like, optional
        The image the contours were drawn on: a Volume from
        :func:`~napari_medseg.io.dicom.read_dicom`, or a file/folder to read
        it from.  When None, the referenced series (RTReferencedSeriesSequence,
        else the ContourImageSequence's SOP instances, else the
        FrameOfReferenceUID) is looked for in the RTSTRUCT's folder.
    rois : sequence of str, optional
        ROINames to read (exact names); all by default.
    outside : {"error", "skip"}
        What to do with a contour more than half a slice off the image's
        slices: raise, or drop it (counted in ``metadata["contours_outside"]``).

    Returns
    -------
    Volume
        ``layer_type="labels"``, axes ``ZYX``, the image's affine (LPS mm);
        ``metadata``: ``segment_names`` {label: ROIName}, ``roi_numbers``
        {label: ROINumber}, ``roi_colors`` {label: [r, g, b]}, ``voxels``
        {label: count}, ``image`` (its name), ``warnings``.

    Raises
    ------
    ReaderError
        Not an RTSTRUCT, no image to put it on (or another frame of
        reference), a contour not parallel to the slices, or (``outside="error"``)
        a contour off the image.
    ParameterError
        An unknown ROI name in ``rois`` or a bad ``outside``.
    """
    import pydicom
    from skimage.draw import polygon

    from .refs import rtstruct_references
    from .series import DicomWarning

    if outside not in ("error", "skip"):
        raise ParameterError(f"outside must be 'error' or 'skip', got {outside!r}")
    p = Path(path)
    if not p.is_file():
        raise ReaderError(f"{p} does not exist" if not p.exists() else f"{p} is not a file")
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:  # pydicom signals corrupt files with many exception types
        raise ReaderError(f"{p}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS and str(ds.get("Modality", "")) != "RTSTRUCT":
        raise ReaderError(f"{p}: not an RT Structure Set (SOP class {ds.get('SOPClassUID', '?')})")
    refs = rtstruct_references(ds)
    img = _image_for(p, image, refs)
    refs.check_frame_of_reference(img, p)
    geometry = img.spatial_geometry()
    if geometry.axes != "ZYX" or geometry.frame != LPS:
        raise ReaderError(f"{p}: image {img.name!r} has no 3D patient grid (axes {geometry.axes!r}, frame "
                          f"{geometry.frame!r}); contours cannot be placed on it")
    shape = tuple(int(img.shape[img.axes.index(a)]) for a in "ZYX")
    names: dict[int, str] = {}
    for item in ds.get("StructureSetROISequence") or []:
        try:
            names[int(item.ROINumber)] = str(item.get("ROIName", "") or f"ROI {int(item.ROINumber)}")
        except (AttributeError, TypeError, ValueError):
            continue
    if rois is not None:
        unknown = sorted(set(rois) - set(names.values()))
        if unknown:
            raise ParameterError(f"{p}: no ROI named {unknown}; it has {sorted(names.values())}")
    numbers = [n for n in names if rois is None or names[n] in rois]
    label_of = {n: i for i, n in enumerate(numbers, start=1)}
    contours: dict[int, list[Any]] = {n: [] for n in numbers}
    colors: dict[int, list[int]] = {}
    for rc in ds.get("ROIContourSequence") or []:
        num = rc.get("ReferencedROINumber")
        if num is None or int(num) not in label_of:
            continue
        contours[int(num)].extend(rc.get("ContourSequence") or [])
        if "ROIDisplayColor" in rc:
            colors[label_of[int(num)]] = [int(v) for v in rc.ROIDisplayColor]
    nz = shape[0]
    slice_mm = float(geometry.spacing[0])
    masks: dict[int, dict[int, np.ndarray]] = {}
    skipped_open: dict[str, int] = {}
    n_outside = 0
    n_contours = 0
    for num in numbers:
        per_slice: dict[int, np.ndarray] = {}
        for c in contours[num]:
            kind = str(c.get("ContourGeometricType", "CLOSED_PLANAR") or "CLOSED_PLANAR").upper()
            if kind not in CLOSED:
                skipped_open[kind] = skipped_open.get(kind, 0) + 1
                continue
            try:
                pts = _points(c)
            except (AttributeError, TypeError, ValueError) as exc:
                raise ReaderError(f"{p}: ROI {names[num]!r} has a contour with malformed ContourData") from exc
            if len(pts) < 3:
                skipped_open["fewer than 3 points"] = skipped_open.get("fewer than 3 points", 0) + 1
                continue
            idx = np.atleast_2d(geometry.world_to_index(pts[:, ::-1]))
            k = idx[:, 0]
            if np.ptp(k) > PLANE_TOL_SLICES:
                raise ReaderError(f"{p}: ROI {names[num]!r} has a contour that is not parallel to the slices of "
                                  f"{img.name!r} (its vertices span {np.ptp(k):.2f} slices)")
            kc = float(k.mean())
            z = int(np.floor(kc + 0.5))
            if not 0 <= z < nz:
                if outside == "skip":
                    n_outside += 1
                    continue
                off = -kc if kc < 0 else kc - (nz - 1)
                raise ReaderError(f"{p}: ROI {names[num]!r} has a contour at slice index {kc:.2f}, "
                                  f"{off * slice_mm:.2f} mm beyond the {nz} slice(s) of {img.name!r} "
                                  f"({slice_mm:.3g} mm apart; half a slice is allowed); pass outside='skip' to "
                                  "drop such contours")
            rr, cc = polygon(idx[:, 1], idx[:, 2], shape=shape[1:])
            m = per_slice.get(z)
            if m is None:
                m = per_slice[z] = np.zeros(shape[1:], dtype=bool)
            m[rr, cc] ^= True  # even-odd: a contour inside another is a hole
            n_contours += 1
        masks[label_of[num]] = per_slice
    counts = {lab: int(sum(int(m.sum()) for m in sl.values())) for lab, sl in masks.items()}
    labels = np.zeros(shape, dtype=np.uint8 if len(numbers) < 256 else np.uint16)
    overlap = 0
    for lab in sorted(masks, key=lambda lab: (-counts[lab], lab)):  # biggest first: smaller ROIs stay on top
        for z, m in masks[lab].items():
            overlap += int(np.count_nonzero(labels[z][m]))
            labels[z][m] = lab
    warn_list: list[str] = []
    if overlap:
        warn_list.append(f"ROIs overlap on {overlap} voxels; the smaller ROI was kept there")
    if skipped_open:
        what = ", ".join(f"{v} {k}" for k, v in sorted(skipped_open.items()))
        warn_list.append(f"skipped contours that enclose no area ({what})")
    if n_outside:
        warn_list.append(f"dropped {n_outside} contour(s) more than half a slice off the image's slices")
    empty = [names[n] for n in numbers if counts[label_of[n]] == 0]
    if empty:
        warn_list.append(f"ROI(s) without voxels on this image: {empty}")
    name = str(ds.get("StructureSetLabel", "") or "").strip() or p.stem
    meta: dict[str, Any] = {
        "source": str(p),
        "image": img.name,
        "segment_names": {label_of[n]: names[n] for n in numbers},
        "roi_numbers": {label_of[n]: n for n in numbers},
        "roi_colors": colors,
        "voxels": counts,
        "contours": n_contours,
        "contours_outside": n_outside,
        "labels": "ROI (1..n in StructureSetROISequence order, 0 = background); where ROIs overlap the smaller "
                  "ROI is kept",
        "dicom": {k: str(ds.get(k)) for k in ("Modality", "SOPClassUID", "SOPInstanceUID", "StructureSetLabel",
                                                "StructureSetDate", "SeriesInstanceUID", "StudyInstanceUID")
                  if k in ds},
        "frame_of_reference": sorted(refs.frame_uids),
        "geometry": "LPS (z, y, x) mm",
        "warnings": warn_list,
    }
    for msg in warn_list:
        warnings.warn(f"{name}: {msg}", DicomWarning, stacklevel=2)
    return Volume(data=labels, axes="ZYX", name=name, affine=geometry.affine.copy(), units=geometry.units,
                  layer_type="labels", metadata=meta, frame=LPS)


def _points(contour: Any) -> np.ndarray:
    """ContourData as an ``(N, 3)`` float array, parsed from the raw text (pydicom's DS objects are ~10x slower)."""
    raw = text(contour, "ContourData")
    if not raw:
        return np.zeros((0, 3))
    v = np.array(raw.split("\\"), dtype=np.float64)
    if v.size % 3:
        raise ValueError(f"{v.size} coordinates are not (x, y, z) triples")
    return v.reshape(-1, 3)
