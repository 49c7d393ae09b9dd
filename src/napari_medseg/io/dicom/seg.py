"""DICOM Segmentation objects (SEG) as napari label volumes.

A SEG file stores, per segment, one binary (or fractional) frame per slice it
touches, each frame with its own PlanePositionSequence.  The frames are put on
one slice grid (sorted along the normal like any image stack; slices no segment
touches are blank) and merged into one integer label image whose value is the
segment number (0 = background).  Where segments overlap, the higher segment
number wins and a warning says how many pixels that concerned.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ...errors import ReaderError
from ...geometry import LPS, Volume
from .geometry import POSITION_TOL_MM, lps_affine_zyx, plan_stack, slice_normal
from .header import Frame, frame_notes
from .pixels import decode


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
    except Exception as exc:  # pydicom parses the sequence on first access; damaged items fail in many ways
        raise ReaderError(f"{hdr.path}: unreadable SegmentSequence ({type(exc).__name__}: {exc})") from exc
    if any(f.segment is None for f in frames):
        missing = [f.index + 1 for f in frames if f.segment is None]
        raise ReaderError(f"{hdr.path}: DICOM-SEG frame(s) {missing[:5]} name no segment "
                          "(SegmentIdentificationSequence / ReferencedSegmentNumber missing or damaged)")
    if any(f.segment not in segments for f in frames):
        raise ReaderError(f"{hdr.path}: frames reference segments {sorted({f.segment for f in frames})} but the "
                          f"SegmentSequence declares {sorted(segments)}")
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
    layout = plan_stack(np.array([frames[i].ipp for i in reps]), iop, [(0,)] * len(reps),
                        single_slice_spacing=frames[0].slice_spacing)
    grid_of_rep = {int(r): z for z, r in enumerate(layout.order[0]) if r >= 0}
    n_seg = max(segments) if segments else 1
    dtype = np.uint8 if n_seg < 256 else np.uint16
    labels = np.zeros((layout.n_slices, frames[0].rows, frames[0].cols), dtype=dtype)
    pixels = decode(hdr.path, hdr.fmt, hdr.offset, ds)
    seg_type = str(ds.get("SegmentationType", "BINARY")).upper()
    threshold = 1
    if seg_type == "FRACTIONAL":
        threshold = max(1, int(ds.get("MaximumFractionalValue", 255) or 255) // 2)
    by_slice: dict[int, list[Frame]] = defaultdict(list)
    for i, f in enumerate(frames):
        by_slice[grid_of_rep[int(slot[i])]].append(f)
    overlap = 0
    for z, fs in by_slice.items():
        for f in sorted(fs, key=lambda f: f.segment):
            mask = pixels[f.index] >= threshold
            overlap += int(np.count_nonzero(labels[z][mask]))
            labels[z][mask] = f.segment
    warn_list = frame_notes(frames) + [w for w in layout.warnings if not w.startswith("missing slices")]
    if overlap:
        warn_list.append(f"segments overlap on {overlap} pixels; the higher segment number was kept there")
    spacing = frames[0].pixel_spacing or (1.0, 1.0)
    affine = lps_affine_zyx(layout.origin, iop, spacing, layout.step)
    meta = dict(meta)
    meta.update({
        "segments": segments,
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
