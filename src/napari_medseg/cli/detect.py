"""``medseg detect``: objects tables (and labels) for a batch of images.

::

    medseg detect IN... -o OUTDIR [--model NAME|PATH | --labels LAB...|DIR] [--device auto|cpu|cuda|mps]
                                  [--score-threshold F] [--channel N]
                                  [--tile-size N] [--batch-size N] [--kind KIND] [--quiet]

For every input image this writes ``OUTDIR/<stem>_objects.csv`` (one row per
object: id, class, score, centroid and bounding box in pixels and in physical
units, size, shape and intensity measurements; see
:mod:`napari_medseg.analysis.objects`) and, when the model is a
segmentation model, ``OUTDIR/<stem>_labels.tif`` (the objects' label image
with the input's pixel size).  A file holding several images (a DICOM folder
with several series) gives ``<stem>_0``, ``<stem>_1``...

``--labels`` measures existing label images instead of running a model (no
``<stem>_labels`` file is written then): one file per input, in order, or
one folder whose ``<stem>_labels.<suffix>`` (what ``medseg segment``
writes) or ``<stem>.<suffix>`` files pair with the inputs by stem.

Inputs: TIFF and DICOM through :func:`napari_medseg.io.read` (with their pixel
size), and the common 2D picture formats (JPEG, PNG, BMP, GIF, WebP: pixel
units) through :func:`skimage.io.imread`.

Registered in :data:`napari_medseg.cli.main.COMMANDS` as :data:`COMMAND`;
:func:`add_parser` adds it to any argparse subparsers.  Errors meant for the
user are :class:`~napari_medseg.errors.MedsegError` (exit status 2 through
``medseg``'s main).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from .common import (
    PICTURE_SUFFIXES,
    Command,
    UsageError,
    add_kind_argument,
    check_inputs,
    check_output_folder,
    drain,
    fraction,
    labels_geometry,
    path_arg,
    positive_int,
    prepare_output_folder,
    read_inputs,
    stem,
    unique_stems,
    write_labels_like,
)

HELP = "detect, measure and count objects; write <stem>_objects.csv (and <stem>_labels.tif)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``medseg detect``."""
    p.add_argument("inputs", nargs="+", metavar="IN",
                   help="TIFF, DICOM file/folder/DICOMDIR, or a JPEG/PNG/BMP picture")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", type=path_arg,
                   help="folder for <stem>_objects.csv and <stem>_labels.tif (created if needed)")
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="segmentation or detection model name (see `medseg models`) or folder; "
                        "default: auto (the default segmentation model for the image; with --kind blood_smear "
                        "the bccd detector)")
    p.add_argument("--labels", nargs="+", type=Path, default=None, metavar="LAB",
                   help="measure these label images instead of running a model: one per input in order, or a "
                        "folder of <stem>_labels.* files (e.g. the -o folder of `medseg segment`)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--score-threshold", type=fraction, default=None, metavar="F",
                   help="detection models: smallest box score kept (default: the model's)")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="feed only channel N of multichannel (C axis) images to the model "
                        "(all channels are still measured)")
    p.add_argument("--tile-size", type=positive_int, default=None, metavar="N", help="largest tile edge in pixels")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help="tiles per forward pass")
    add_kind_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _labels_files(args: argparse.Namespace) -> list[Path] | None:
    """The label file of each input (``--labels``), or None without the option."""
    if args.labels is None:
        return None
    if len(args.labels) == 1 and args.labels[0].is_dir():
        from ..analysis.evaluation import IMAGE_SUFFIXES, match_by_stem

        folder = args.labels[0]
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
        return match_by_stem([stem(Path(p)) for p in args.inputs], files, f"--labels {folder}")
    if len(args.labels) != len(args.inputs):
        raise ParameterError(f"{len(args.inputs)} inputs but {len(args.labels)} --labels: give one label file per "
                             "input, in the same order, or one folder")
    return list(args.labels)


def _read_labels(path: Path, desc: str) -> Any:
    """The label array of ``path`` (one image, integer, (Z,) Y, X)."""
    import numpy as np

    from .common import read_one

    lab = read_one(path, "labels")
    if any(a in lab.axes for a in "CST"):
        raise ParameterError(f"{desc}: labels {path} have axes {lab.axes!r}; expected (Z,) Y, X")
    data = np.asarray(lab.data[0] if isinstance(lab.data, list) else lab.data)
    if not np.issubdtype(data.dtype, np.integer):
        raise ParameterError(f"{desc}: labels {path} are {data.dtype}, not an integer label image")
    return np.squeeze(data) if data.ndim == 3 and data.shape[0] == 1 else data


def _detect_volume(vol: Any, args: argparse.Namespace, desc: str, labels: Any = None):
    """Run :func:`~napari_medseg.analysis.objects.detect_iter` on one volume under a progress bar."""
    from ..analysis.objects import detect_iter, intensity_of_image

    data = vol.data[0] if isinstance(vol.data, list) else vol.data
    axes = vol.axes
    if "T" in axes:
        raise ParameterError(f"{desc}: has a time axis (axes {axes!r}); detect works on one 2D/3D image at a time")
    geometry = vol.spatial_geometry()  # uncalibrated volumes are measured in pixels
    intensity = intensity_of_image(data, axes, vol.channel_names)
    model_input, model_axes = data, axes
    if args.channel is not None:
        if "C" not in axes:
            raise ParameterError(f"{desc}: --channel given but the image has no channel axis (axes {axes!r})")
        ci = axes.index("C")
        if not 0 <= args.channel < data.shape[ci]:
            raise ParameterError(f"{desc}: --channel {args.channel} out of range 0..{data.shape[ci] - 1}")
        model_input = data[(slice(None),) * ci + (args.channel,)]
        model_axes = axes.replace("C", "")
    if labels is not None:
        sp_shape = tuple(int(data.shape[axes.index(a)]) for a in axes if a in "ZYX")
        if tuple(labels.shape) != sp_shape:
            raise ParameterError(f"{desc}: labels of shape {tuple(labels.shape)} do not fit the image "
                                 f"(spatial shape {sp_shape})")
        return drain(detect_iter(labels=labels, intensity=intensity, geometry=geometry), desc, quiet=args.quiet)
    from ..models.kinds import kind_of_volume

    kind = getattr(args, "kind", None) or kind_of_volume(vol)
    return drain(detect_iter(model_input, args.model, axes=model_axes, intensity=intensity, geometry=geometry,
                             device=args.device, image_kind=kind,
                             score_threshold=args.score_threshold, tile_size=args.tile_size,
                             batch_size=args.batch_size), desc, quiet=args.quiet)


def run(args: argparse.Namespace) -> int:
    """Run ``medseg detect``; returns 0, raises :class:`~napari_medseg.errors.MedsegError` on bad input."""
    from ..analysis.objects import write_objects_csv
    out: Path = args.output
    paths = check_inputs(args.inputs)  # every path checked before any work
    check_output_folder(out, UsageError)
    label_files = _labels_files(args)
    if label_files is not None and args.model != "auto":
        raise ParameterError("give either --model (to detect objects) or --labels (to measure existing ones)")
    if args.model != "auto":  # a bad model name fails before any file is read
        from ..models.registry import resolve_model

        args.model = resolve_model(args.model).path
    from ..models.registry import DEFAULT_RGB

    prepare_output_folder(out)
    noted = False
    for k, (path, name0) in enumerate(zip(paths, unique_stems(paths), strict=True)):  # same, same_2
        t0 = time.perf_counter()
        vols = read_inputs(path)
        given = None
        if label_files is not None:
            if len(vols) != 1:
                raise ParameterError(f"{path} holds {len(vols)} images; --labels needs one image per input")
            given = _read_labels(label_files[k], name0)
        for i, vol in enumerate(vols):
            name = name0 if len(vols) == 1 else f"{name0}_{i}"
            res = _detect_volume(vol, args, name, given)
            csv = write_objects_csv(out / f"{name}_objects.csv", res.table)
            written = [csv.name]
            if res.labels is not None and res.kind in ("instance", "semantic"):
                lab = write_labels_like(out / f"{name}_labels", res.labels, res.axes, labels_geometry(vol, res.axes))
                written.append(lab.name)
            counts = ", ".join(f"{c} {n}" for c, n in res.counts().items())
            how = (f"labels {label_files[k]}" if given is not None
                   else f"model {res.model_name}, {res.device_reason}")
            print(f"{out / name}: {len(res)} objects ({counts}) -> {' + '.join(written)}; {how}, "
                  f"{time.perf_counter() - t0:.1f} s")
            if given is None and args.model == "auto" and args.kind is None and res.model_name == DEFAULT_RGB \
                    and not noted:
                noted = True
                print(f"medseg detect: note: an RGB image is taken for H&E histology ({DEFAULT_RGB}); for blood "
                      "smears give --kind blood_smear (the bccd detector)", file=sys.stderr)
    return 0


COMMAND = Command("detect", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "PICTURE_SUFFIXES", "add_arguments", "add_parser", "read_inputs", "run"]
