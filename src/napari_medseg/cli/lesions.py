"""``medseg lesions``: lesions as objects, with RECIST axes and volumes in the image's true geometry.

::

    medseg lesions IN... -o OUTDIR [--model NAME|PATH | --labels FILE_OR_DIR]
                                   [--min-size MM] [--score-threshold F] [--threshold F] [--[no-]tta]
                                   [--connectivity N] [--split] [--dicom-seg] [--device ...] [--quiet]

For every input (DICOM series, NIfTI, NRRD, TIFF, picture) this writes
``OUTDIR/<stem>_lesions.csv`` (one row per lesion: id, class, score,
per-class probabilities, volume in mm³ and mL (area in mm² in 2D),
``long_axis_mm`` / ``short_axis_mm`` (RECIST), ``max_diameter_mm``,
centroid in patient LPS mm and in voxel index, bounding box, slice range,
intensity, sphericity, elongation; see :mod:`napari_medseg.analysis.lesions`)
and ``OUTDIR/<stem>_lesions.nii.gz`` on the input's geometry (``.tif`` with
the pixel size for microscopy and pictures).  ``--labels`` measures existing
lesion labels (one file, or a folder with files named like the inputs:
``<stem>.<ext>``, ``<stem>_labels.<ext>`` or ``<stem>_lesions.<ext>``)
instead of running a model.  ``--dicom-seg`` also writes
``OUTDIR/<stem>_lesions.seg.dcm``, a DICOM Segmentation (one segment per
lesion, named ``lesion <id> (<class>)``, referencing the input series) when
the input is a DICOM series.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from .common import (
    Command,
    check_output_folder,
    drain,
    fraction,
    labels_geometry,
    positive_int,
    read_inputs,
    stem,
    write_labels_like,
)

HELP = "lesions as objects: <stem>_lesions.csv (class, score, RECIST axes, volume) and <stem>_lesions.nii.gz"

#: Names a lesion-label file of input ``<stem>`` may have in a ``--labels`` folder (any readable suffix).
LABEL_STEMS = ("{stem}", "{stem}_labels", "{stem}_lesions", "{stem}_label")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``medseg lesions``."""
    p.add_argument("inputs", nargs="+", metavar="IN",
                   help="DICOM file/folder, NIfTI, NRRD, TIFF, or a JPEG/PNG picture")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", type=Path,
                   help="folder for <stem>_lesions.csv and the lesion labels (created if needed)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, metavar="NAME|PATH",
                     help="semantic lesion model (see `medseg models`), e.g. ms-lesions")
    src.add_argument("--labels", type=Path, default=None, metavar="FILE_OR_DIR",
                     help="measure existing lesion labels (a file, or a folder of files named like the inputs)")
    p.add_argument("--min-size", type=float, default=None, metavar="MM",
                   help="smallest lesion kept, in mm³ (3D) or mm² (2D; pixel² without a pixel size); "
                        "default: the model card's (output.lesions), else 0")
    p.add_argument("--score-threshold", type=fraction, default=None, metavar="F",
                   help="keep lesions whose score (mean class probability over the lesion) is at least F; "
                        "default: the model card's, else 0")
    p.add_argument("--threshold", type=fraction, default=None, metavar="F",
                   help="a voxel is lesion when the lesion classes' probability exceeds F "
                        "(default: the model card's, else arg-max)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the model over mirror images (~4x the time); default: the model card's, else no")
    p.add_argument("--connectivity", type=positive_int, default=None, metavar="N",
                   help="1 = faces only ... 3 = faces, edges and corners (default: full)")
    p.add_argument("--split", action="store_true", help="split touching lesions (distance-map watershed)")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write <stem>_lesions.seg.dcm, a DICOM-SEG of the lesions (DICOM series inputs only)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--tile-size", type=positive_int, default=None, metavar="N", help="largest tile edge in pixels")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def find_labels(folder: Path, name: str) -> Path:
    """The lesion-label file of input ``name`` in ``folder`` (see :data:`LABEL_STEMS`).

    Raises
    ------
    ParameterError
        None, or several, match.
    """
    wanted = {pattern.format(stem=name) for pattern in LABEL_STEMS}
    hits = sorted(p for p in folder.iterdir() if p.is_file() and stem(p) in wanted)
    if not hits:
        raise ParameterError(f"--labels {folder}: no file named like {name!r} ({', '.join(sorted(wanted))})")
    if len(hits) > 1:
        raise ParameterError(f"--labels {folder}: several files for {name!r}: {[h.name for h in hits]}")
    return hits[0]


def _spatial(vol: Any) -> tuple[Any, str]:
    """The volume's grey data ``(Z,) Y, X`` (RGB: as is) and its axes."""
    data = vol.data[0] if isinstance(vol.data, list) else vol.data
    axes = vol.axes
    if "T" in axes:
        raise ParameterError(f"{vol.name}: has a time axis (axes {axes!r}); give one time point")
    return data, axes


def _measure_labels(vol: Any, lab_path: Path):
    """Lesion table of existing labels ``lab_path`` on the grid of ``vol``."""
    import numpy as np

    from ..analysis.lesions import lesion_table
    from ..io import read

    lab_vols = read(lab_path)
    if len(lab_vols) != 1:
        raise ParameterError(f"{lab_path}: holds {len(lab_vols)} images; give one label image")
    data, axes = _spatial(vol)
    lab = np.asarray(lab_vols[0].data)
    spatial = "".join(a for a in axes if a in "ZYX")
    shape = tuple(int(data.shape[axes.index(a)]) for a in spatial)
    if lab.shape != shape:
        raise ParameterError(f"{lab_path}: labels of shape {lab.shape} do not fit {vol.name} (spatial {shape})")
    g = vol.spatial_geometry()
    lg = lab_vols[0].spatial_geometry()
    if g.calibrated and lg.calibrated and lg.frame == g.frame and not np.allclose(
            lg.corners(shape), g.corners(shape), atol=1e-2):
        raise ParameterError(f"{lab_path}: its grid is not the grid of {vol.name} (corners differ by "
                             f"{np.abs(lg.corners(shape) - g.corners(shape)).max():.3g} mm)")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ParameterError(f"{lab_path}: labels must be integers, got {lab.dtype}")
    image = np.asarray(data) if len(spatial) == data.ndim else None
    return lab, spatial, lesion_table(lab, g, image=image, image_name="intensity")


def run(args: argparse.Namespace) -> int:
    """Run ``medseg lesions``; returns 0, raises :class:`~napari_medseg.errors.MedsegError` on bad input."""
    from ..analysis.lesions import lesions_iter
    from ..analysis.objects import write_objects_csv

    out: Path = args.output
    check_output_folder(out, ParameterError)
    if args.labels is None and args.model is None:
        raise ParameterError("give a lesion model (--model, see `medseg models`) or existing labels (--labels)")
    if args.labels is not None and not args.labels.exists():
        raise ParameterError(f"--labels {args.labels} does not exist")
    if args.labels is not None and args.labels.is_file() and len(args.inputs) != 1:
        raise ParameterError("--labels FILE goes with one input; give a folder for several")
    if args.model is not None:
        from ..models.registry import resolve_model

        args.model = resolve_model(args.model).path  # a bad model name fails before any file is read
    if getattr(args, "dicom_seg", False):
        from ..io.dicom import is_dicom_path

        not_dicom = [s for s in args.inputs if not is_dicom_path(s)]
        if not_dicom:
            raise ParameterError(f"--dicom-seg needs DICOM series inputs; not DICOM: {', '.join(not_dicom)}")
    out.mkdir(parents=True, exist_ok=True)
    for src in args.inputs:
        path = Path(src)
        t0 = time.perf_counter()
        vols = read_inputs(path)
        name0 = stem(path)
        for i, vol in enumerate(vols):
            name = name0 if len(vols) == 1 else f"{name0}_{i}"
            if args.labels is not None:
                lab_path = args.labels if args.labels.is_file() else find_labels(args.labels, name)
                lab, axes, table = _measure_labels(vol, lab_path)
                model_name = f"labels {lab_path.name}"
            else:
                data, axes_in = _spatial(vol)
                res = drain(lesions_iter(vol, args.model, threshold=args.threshold, min_size=args.min_size,
                                         connectivity=args.connectivity, split_touching=args.split,
                                         device=args.device, tile_size=args.tile_size, tta=args.tta), name,
                             quiet=args.quiet)
                lab, table = res.refilter(score_threshold=args.score_threshold, min_size=args.min_size or 0.0)
                axes = res.geometry.axes
                model_name = f"model {res.model_name}, {res.device_reason}"
            csv = write_objects_csv(out / f"{name}_lesions.csv", table)
            written = write_labels_like(out / f"{name}_lesions", lab, axes, labels_geometry(vol, axes))
            total = ""
            vol_col = "volume_ml" if "volume_ml" in table else None
            if vol_col is not None and len(table):
                total = f", {float(table[vol_col].sum()):.3g} mL in all"
            files = [csv.name, written.name]
            if getattr(args, "dicom_seg", False):
                seg = write_lesions_seg(out / f"{name}_lesions.seg.dcm", lab, axes, table, vol, model_name)
                files += [seg.name] if seg is not None else []
            print(f"{out / name}: {len(table)} lesions{total} -> {' + '.join(files)}; {model_name}, "
                  f"{time.perf_counter() - t0:.1f} s")
    return 0


def write_lesions_seg(path: Path, lab: Any, axes: str, table: Any, vol: Any, how: str) -> Path | None:
    """Write the lesion labels as a DICOM-SEG referencing the input series; None (and a note) when no lesion.

    Raises
    ------
    ParameterError
        The input is not a 3D DICOM series with patient geometry.
    """
    from ..io.dicom.seg_write import write_dicom_seg

    files = vol.metadata.get("files")
    if not files or vol.frame is None or axes != "ZYX" or "dicom" not in vol.metadata:
        raise ParameterError(f"--dicom-seg: {vol.name} is not a 3D DICOM series with patient geometry "
                             f"(axes {axes!r}); a DICOM-SEG needs one")
    if not len(table):
        print(f"{path.name}: no lesions, no DICOM-SEG written")
        return None
    names = {}
    for _, row in table.iterrows():
        cls = row.get("class")
        names[int(row["id"])] = f"lesion {int(row['id'])}" + (f" ({cls})" if isinstance(cls, str) and cls else "")
    manual = how.startswith("labels ")
    return write_dicom_seg(path, lab, files, names, algorithm_type="MANUAL" if manual else "AUTOMATIC",
                           series_description="napari-medseg lesions", content_label="LESIONS")


def evaluate_lesions(args: argparse.Namespace) -> int:
    """``medseg evaluate --lesions``: lesion-wise detection figures over the image/mask pairs.

    Masks are paired with images by stem (as ``--labels`` files: ``<stem>``,
    ``<stem>_labels``, ``<stem>_lesions``); their connected lesions are the
    truth (a binary mask's components, an integer mask's ids).  Predictions
    are ``--labels`` files (score 1 each) or the ``--model``'s lesions (score:
    highest class probability, which the FROC sweeps).
    """
    import csv

    import numpy as np
    from skimage.measure import label as cc_label

    from ..analysis.lesion_eval import format_report, lesion_report, match_lesions
    from ..analysis.lesions import lesions_iter
    from ..io import read
    from .common import check_input_folder

    for name in ("images", "masks") + (("labels",) if args.labels is not None else ()):
        check_input_folder(getattr(args, name), name)
    if not 0.0 <= args.min_iou < 1.0:
        raise ParameterError(f"--min-iou must be in [0, 1), got {args.min_iou}")
    images = sorted(p for p in args.images.iterdir() if not p.name.startswith("."))
    if not images:
        raise ParameterError(f"--images {args.images}: empty folder")
    cases, names = [], []
    for img_path in images:
        name = stem(img_path)
        true = np.asarray(read(find_labels(args.masks, name))[0].data)
        if true.max() <= 1:
            true = cc_label(true > 0, connectivity=true.ndim)
        if args.labels is not None:
            pred = np.asarray(read(find_labels(args.labels, name))[0].data)
            if pred.max() <= 1:
                pred = cc_label(pred > 0, connectivity=pred.ndim)
            scores = None
        else:
            vol = read_inputs(img_path)[0]
            res = drain(lesions_iter(vol, args.model or "auto", device=args.device), name, quiet=args.quiet)
            pred, scores = res.lesions.labels, res.lesions.scores
        if true.shape != pred.shape:
            raise ParameterError(f"{name}: mask {true.shape} and prediction {pred.shape} differ in shape")
        if scores is not None:  # lesions_iter numbers its lesions 1..n in the order of ``scores``
            cases.append(match_lesions(true, pred, scores, min_iou=args.min_iou))
        else:
            cases.append(match_lesions(true, pred, min_iou=args.min_iou))
        names.append(name)
    report = lesion_report(cases, names)
    print(format_report(report))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(report["rows"][0]))
            w.writeheader()
            w.writerows(report["rows"])
        print(f"wrote {args.output}")
    return 0


COMMAND = Command("lesions", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "LABEL_STEMS", "add_arguments", "add_parser", "evaluate_lesions", "find_labels", "run",
           "write_lesions_seg"]
