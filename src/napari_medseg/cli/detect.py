"""``medseg detect``: objects tables (and labels) for a batch of images.

::

    medseg detect IN... -o OUTDIR [--model NAME|PATH] [--device auto|cpu|cuda|mps]
                                  [--score-threshold F] [--channel N]
                                  [--tile-size N] [--batch-size N] [--quiet]

For every input image this writes ``OUTDIR/<stem>_objects.csv`` (one row per
object: id, class, score, centroid and bounding box in pixels and in physical
units, size, shape and intensity measurements; see
:mod:`napari_medseg.analysis.objects`) and, when the model is a
segmentation model, ``OUTDIR/<stem>_labels.tif`` (the objects' label image
with the input's pixel size).  A file holding several images (a DICOM folder
with several series) gives ``<stem>_0``, ``<stem>_1``...

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
import time
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from .common import (
    PICTURE_SUFFIXES,
    Command,
    UsageError,
    check_inputs,
    check_output_folder,
    drain,
    fraction,
    labels_geometry,
    path_arg,
    positive_int,
    prepare_output_folder,
    read_inputs,
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
                        "default: auto (the default segmentation model for the image)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--score-threshold", type=fraction, default=None, metavar="F",
                   help="detection models: smallest box score kept (default: the model's)")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="feed only channel N of multichannel (C axis) images to the model "
                        "(all channels are still measured)")
    p.add_argument("--tile-size", type=positive_int, default=None, metavar="N", help="largest tile edge in pixels")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help="tiles per forward pass")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _detect_volume(vol: Any, args: argparse.Namespace, desc: str):
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
    return drain(detect_iter(model_input, args.model, axes=model_axes, intensity=intensity, geometry=geometry,
                             device=args.device,
                             score_threshold=args.score_threshold, tile_size=args.tile_size,
                             batch_size=args.batch_size), desc, quiet=args.quiet)


def run(args: argparse.Namespace) -> int:
    """Run ``medseg detect``; returns 0, raises :class:`~napari_medseg.errors.MedsegError` on bad input."""
    from ..analysis.objects import write_objects_csv
    out: Path = args.output
    paths = check_inputs(args.inputs)  # every path checked before any work
    check_output_folder(out, UsageError)
    if args.model != "auto":  # a bad model name fails before any file is read
        from ..models.registry import resolve_model

        args.model = resolve_model(args.model).path
    prepare_output_folder(out)
    for path, name0 in zip(paths, unique_stems(paths), strict=True):  # a/same.tif, b/same.tif -> same, same_2
        t0 = time.perf_counter()
        vols = read_inputs(path)
        for i, vol in enumerate(vols):
            name = name0 if len(vols) == 1 else f"{name0}_{i}"
            res = _detect_volume(vol, args, name)
            csv = write_objects_csv(out / f"{name}_objects.csv", res.table)
            written = [csv.name]
            if res.labels is not None and res.kind in ("instance", "semantic"):
                lab = write_labels_like(out / f"{name}_labels", res.labels, res.axes, labels_geometry(vol, res.axes))
                written.append(lab.name)
            counts = ", ".join(f"{c} {n}" for c, n in res.counts().items())
            print(f"{out / name}: {len(res)} objects ({counts}) -> {' + '.join(written)}; model {res.model_name}, "
                  f"{res.device_reason}, {time.perf_counter() - t0:.1f} s")
    return 0


COMMAND = Command("detect", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "PICTURE_SUFFIXES", "add_arguments", "add_parser", "read_inputs", "run"]
