"""DICOM Segmentation objects (SEG) as napari label volumes.

A SEG file stores, per segment, one binary (or fractional) frame per slice it
touches, each frame with its own PlanePositionSequence.  The frames are put on
one slice grid (sorted along the normal like any image stack; slices no segment
touches are blank) and merged into one integer label image whose value is the
segment number (0 = background).  Where segments overlap, the higher segment
number wins and a warning says how many pixels that concerned.  A LABELMAP
SEG (Label Map Segmentation Storage) has one frame per slice whose pixel values
are the segment numbers.

``metadata["segment_names"]`` maps each segment number to its SegmentLabel.
The volume spans the slices the SEG's frames cover (a SEG omits empty frames),
placed in patient space like any image, so it overlays its source series;
:func:`read_dicom_seg` puts it onto the referenced image's full grid instead.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ReaderError
from ...geometry import LPS, Geometry, Volume
from .geometry import POSITION_TOL_MM, StackLayout, lps_affine_zyx, plan_stack, slice_normal
from .header import KEEP_TAGS, Frame, frame_notes, frames_of
from .pixels import decode

#: Largest index mismatch (pixels) under which a SEG frame counts as lying exactly on an image slice.
GRID_TOL_PX = 1e-2


def build_seg_volume(frames: list[Frame], name: str, meta: dict[str, Any]) -> Volume:
    """Label volume ``(Z, Y, X)`` from the frames of one SEG file.

    Parameters
    ----------
    frames : list of Frame
        All frames of one SEG instance (one orientation).
    name : str
        Layer name.
    meta : dict
        Base metadata (source, DICOM tags); completed here.

    Raises
    ------
    ReaderError
        Frames without position/orientation, or a segment number that is not
        declared in the SegmentSequence.
    """
    segments, seg_type = _check_frames(frames)
    iop = frames[0].iop
    n = slice_normal(iop)
    d = np.array([f.ipp @ n for f in frames])
    # one representative frame per slice position
    reps: list[int] = []
    slot = np.empty(len(frames), dtype=np.int64)
    for i in np.argsort(d, kind="stable"):
        if reps and d[i] - d[reps[-1]] <= POSITION_TOL_MM:
            slot[i] = len(reps) - 1
        else:
            reps.append(int(i))
            slot[i] = len(reps) - 1
    layout = _seg_layout(np.array([frames[i].ipp for i in reps]), iop, frames[0].slice_spacing)
    grid_of_rep = {int(r): z for z, r in enumerate(layout.order[0]) if r >= 0}
    z_of = [grid_of_rep[int(slot[i])] for i in range(len(frames))]
    labels, warn_list = _paint(frames, z_of, (layout.n_slices, frames[0].rows, frames[0].cols), segments, seg_type)
    warn_list = frame_notes(frames) + [w for w in layout.warnings if not w.startswith("missing slices")] + warn_list
    spacing = frames[0].pixel_spacing or (1.0, 1.0)
    affine = lps_affine_zyx(layout.origin, iop, spacing, layout.step)
    meta = dict(meta)
    meta.update({
        "segments": segments,
        "segment_names": {k: v for k, v in segments.items() if k > 0},
        "segmentation_type": seg_type,
        "slice_normal_lps_xyz": [float(v) for v in layout.normal],
        "slice_positions_mm": [float(v) for v in layout.distances],
        "warnings": warn_list,
        "labels": "segment number (0 = background)",
    })
    # frames a SEG leaves out are empty slices, not missing data: no gap warning needed
    if layout.info.get("filled_slices"):
        meta["empty_slices"] = layout.info["filled_slices"]
    return Volume(data=labels, axes="ZYX", name=name, affine=affine, units=("mm", "mm", "mm"),
                  layer_type="labels", metadata=meta, frame=LPS)


def _check_frames(frames: list[Frame]) -> tuple[dict[int, str], str]:
    """The SegmentSequence ({number: SegmentLabel}) and SegmentationType; ReaderError when inconsistent."""
    hdr = frames[0].file
    ds = hdr.ds
    if any(f.ipp is None or f.iop is None for f in frames):
        raise ReaderError(f"{hdr.path}: DICOM-SEG frames without PlanePositionSequence/PlaneOrientationSequence "
                          "cannot be placed on a patient grid")
    segments = {}
    try:
        for item in ds.get("SegmentSequence") or []:
            num = int(item.get("SegmentNumber", 0) or 0)
            segments[num] = str(item.get("SegmentLabel", "") or f"segment {num}")
    except Exception as exc:  # pydicom parses the sequence on first access; damaged items fail in many ways  # noqa: BLE001
        raise ReaderError(f"{hdr.path}: unreadable SegmentSequence ({type(exc).__name__}: {exc})") from exc
    seg_type = str(ds.get("SegmentationType", "BINARY")).upper()
    if seg_type != "LABELMAP" and any(f.segment is None for f in frames):
        missing = [f.index + 1 for f in frames if f.segment is None]
        raise ReaderError(f"{hdr.path}: DICOM-SEG frame(s) {missing[:5]} name no segment "
                          "(SegmentIdentificationSequence / ReferencedSegmentNumber missing or damaged)")
    if seg_type == "LABELMAP" and hdr.fmt is not None and hdr.fmt.rgb:
        raise ReaderError(f"{hdr.path}: LABELMAP SEG with PALETTE COLOR pixels is not supported")
    if seg_type != "LABELMAP" and any(f.segment not in segments for f in frames):
        raise ReaderError(f"{hdr.path}: frames reference segments {sorted({f.segment for f in frames})} but the "
                          f"SegmentSequence declares {sorted(segments)}")
    return segments, seg_type


def _seg_layout(positions: np.ndarray, iop: np.ndarray, spacing_hint: float | None) -> StackLayout:
    """:func:`plan_stack` for SEG frames, which skip empty slices anywhere (not only whole-spacing gaps).

    ``plan_stack`` finds the slice step from the median gap, which the
    omitted frames distort (frames on slices 1, 2 and 4 look unevenly
    spaced).  Here the step is SpacingBetweenSlices (else SliceThickness), or
    the smallest gap, when every position is a whole number of it from the
    first: the frames then sit exactly on their slices with blank ones between.
    """
    layout = plan_stack(positions, iop, [(0,)] * len(positions), single_slice_spacing=spacing_hint)
    if len(positions) < 2:
        return layout
    normal = layout.normal
    d = positions @ normal
    gaps = np.diff(np.sort(d))
    for sp in (spacing_hint, float(gaps.min()) if gaps.size else None):
        if not sp or sp <= POSITION_TOL_MM:
            continue
        k = np.round((d - d[0]) / sp).astype(np.int64)
        if k.min() != 0 or np.unique(k).size != k.size or \
                np.abs(d - d[0] - k * sp).max() > max(0.02 * sp, POSITION_TOL_MM):
            continue
        n_z = int(k.max()) + 1
        order = np.full((1, n_z), -1, dtype=np.int64)
        order[0, k] = np.arange(len(positions))
        kc = k - k.mean()
        step = (kc[:, None] * (positions - positions.mean(axis=0))).sum(axis=0) / (kc ** 2).sum()
        origin = positions[int(np.argmin(k))]
        dist = d[0] + np.arange(n_z) * float(step @ normal)
        dist[k] = d
        filled = [z for z in range(n_z) if order[0, z] < 0]
        info = {"slice_spacing_mm": float(step @ normal)}
        if filled:
            info["filled_slices"] = filled
        return StackLayout(order, dist, origin, step, normal, [], info)
    return layout


def _paint(frames: list[Frame], z_of: list[int], shape: tuple[int, int, int], segments: dict[int, str],
           seg_type: str) -> tuple[np.ndarray, list[str]]:
    """Merge the frames into one label image: frame ``i`` goes onto slice ``z_of[i]``."""
    hdr = frames[0].file
    ds = hdr.ds
    n_seg = max(segments) if segments else 1
    if seg_type == "LABELMAP":
        n_seg = max(n_seg, (1 << min(hdr.fmt.bits_stored, 16)) - 1)
    labels = np.zeros(shape, dtype=np.uint8 if n_seg < 256 else np.uint16)
    pixels = decode(hdr.path, hdr.fmt, hdr.offset, ds)
    threshold = 1
    if seg_type == "FRACTIONAL":
        threshold = max(1, int(ds.get("MaximumFractionalValue", 255) or 255) // 2)
    by_slice: dict[int, list[Frame]] = defaultdict(list)
    for f, z in zip(frames, z_of, strict=True):
        by_slice[z].append(f)
    overlap = 0
    undeclared: set[int] = set()
    for z, fs in by_slice.items():
        if seg_type == "LABELMAP":  # pixel value = segment number, one frame per slice
            for f in fs:
                values = pixels[f.index]
                undeclared.update(int(v) for v in np.unique(values) if v and int(v) not in segments)
                labels[z][values > 0] = values[values > 0]
            continue
        for f in sorted(fs, key=lambda f: f.segment):
            mask = pixels[f.index] >= threshold
            overlap += int(np.count_nonzero(labels[z][mask]))
            labels[z][mask] = f.segment
    warn_list = []
    if overlap:
        warn_list.append(f"segments overlap on {overlap} pixels; the higher segment number was kept there")
    if undeclared:
        warn_list.append(f"label map values {sorted(undeclared)} are not declared in the SegmentSequence")
    return labels, warn_list


def _frames_on_grid(frames: list[Frame], geometry: Geometry, shape: tuple[int, ...]) -> list[int] | None:
    """The image slice of each frame when every frame is exactly one slice of the grid, else None."""
    if geometry.axes != "ZYX" or any((f.rows, f.cols) != tuple(shape[1:]) for f in frames):
        return None
    out = []
    for f in frames:
        ps = f.pixel_spacing or (1.0, 1.0)
        corners = np.array([f.ipp, f.ipp + (f.rows - 1) * ps[0] * f.iop[3:], f.ipp + (f.cols - 1) * ps[1] * f.iop[:3]])
        idx = geometry.world_to_index(corners[:, ::-1])
        k = int(round(float(idx[0, 0])))
        want = np.array([[k, 0, 0], [k, f.rows - 1, 0], [k, 0, f.cols - 1]], dtype=float)
        if not 0 <= k < shape[0] or np.abs(idx - want).max() > GRID_TOL_PX:
            return None
        out.append(k)
    return out


def read_dicom_seg(path: str | Path, image: Volume | None = None) -> Volume:
    """A DICOM-SEG file as a label volume on the grid of the image it segments.

    Parameters
    ----------
    path : str or Path
        The SEG file.
    image : Volume, optional
        The segmented image (as :func:`~napari_medseg.io.dicom.read_dicom`
        returns it).  When None, the series the SEG references
        (ReferencedSeriesSequence, else its SOP instances, else the
        FrameOfReferenceUID) is looked for among the DICOM files in the SEG's
        folder; when none is there the SEG keeps its own grid (the slices its
        frames cover) and ``metadata["grid"]`` says so.

    Returns
    -------
    Volume
        ``layer_type="labels"``, value = segment number,
        ``metadata["segment_names"]`` = {segment number: SegmentLabel}; with an
        image, its shape and affine: each frame goes onto the image slice it
        lies on when the grids share their pixels (exact), else the SEG's own
        volume is resampled (nearest neighbour) and ``metadata["grid"]`` says so.

    Raises
    ------
    ReaderError
        Not a SEG file, unreadable, or an ``image`` in another frame of reference.
    """
    from .header import read_header
    from .refs import find_referenced_image, place_on_grid, seg_references
    from .series import read_dicom

    p = Path(path)
    hdr = read_header(str(p))
    if not hdr.is_seg or hdr.fmt is None:
        raise ReaderError(f"{p}: not a DICOM-SEG file")
    refs = seg_references(p)
    if image is None:
        image = find_referenced_image(p.parent, refs, required=False)
    if image is None:
        seg = read_dicom(p)[0]
        seg.metadata["grid"] = "the SEG frames' own extent (no referenced image found next to it)"
        return seg
    refs.check_frame_of_reference(image, p)
    geometry = image.spatial_geometry()
    shape = tuple(int(image.shape[image.axes.index(a)]) for a in geometry.axes)
    frames = frames_of(hdr)
    segments, seg_type = _check_frames(frames)
    z_of = _frames_on_grid(frames, geometry, shape)
    if z_of is not None:  # exact: paint each frame onto its image slice (one decode, no compact volume)
        data, warn_list = _paint(frames, z_of, shape, segments, seg_type)
        ds = hdr.ds
        tags = {k: str(ds.get(k)) for k in KEEP_TAGS if k in ds and isinstance(ds.get(k), (str, int, float))}
        desc, num = str(ds.get("SeriesDescription", "") or "").strip(), str(ds.get("SeriesNumber", "") or "")
        name = f"{num}: {desc}" if desc and num else desc or p.stem
        meta: dict[str, Any] = {"source": str(p), "files": [str(p)], "n_files": 1, "dicom": tags,
                                "geometry": "LPS (z, y, x) mm", "segments": segments,
                                "segment_names": {k: v for k, v in segments.items() if k > 0},
                                "segmentation_type": seg_type, "labels": "segment number (0 = background)",
                                "warnings": warn_list}
        how = "each frame on the image slice it lies on"
    else:
        seg = read_dicom(p)[0]
        name, meta = seg.name, dict(seg.metadata)
        data, how = place_on_grid(seg, geometry, shape)
    meta["grid"] = f"the grid of {image.name!r} ({how})"
    meta["image"] = image.name
    return Volume(data=data, axes=geometry.axes, name=name, affine=geometry.affine.copy(),
                  units=geometry.units, layer_type="labels", metadata=meta, frame=geometry.frame)
