"""``medseg segment``: label TIFFs for a batch of images.

::

    medseg segment IN... -o OUTDIR [--model NAME|PATH] [--device auto|cpu|cuda|mps]
                                   [--tile-size N] [--batch-size N] [--channel N] [--tta] [--3d] [--quiet]

For every input image this writes ``OUTDIR/<stem>_labels.tif`` with the
input's pixel size; a file holding several images (a DICOM folder with
several series) gives ``<stem>_0``, ``<stem>_1``...  Inputs sharing a stem
(``a/same.tif b/same.tif``) give ``same`` and ``same_2``.  Time series are
segmented frame by frame.  Every input and the output folder are checked
before the first image is segmented.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from .common import (
    Command,
    UsageError,
    check_inputs,
    drain,
    engine_scale,
    labels_geometry,
    path_arg,
    positive_int,
    prepare_output_folder,
    unique_stems,
    write_labels_like,
)

HELP = "segment images with a U-Net model and write label TIFFs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``segment`` options to ``p``."""
    p.add_argument("inputs", nargs="+", metavar="IN", help="TIFF file, DICOM file, DICOM series folder or DICOMDIR")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", type=path_arg,
                   help="folder for the <input stem>_labels.tif files (created if needed)")
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="model name (see `medseg models`) or folder; default: auto (nuclei-he for RGB, nuclei for grey)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--tile-size", type=positive_int, default=None, metavar="N",
                   help="largest tile edge in pixels (default 1024 in 2D, 128 in 3D)")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help="tiles per forward pass")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="use only channel N of multichannel (C axis) images")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over 4 mirror images (~4x slower, slightly better)")
    p.add_argument("--3d", dest="do_3d", action="store_true",
                   help="3D objects in Z stacks from a 2D instance model: predict on planes along Z, Y and X "
                        "(Z resampled to the X/Y pixel size), label in 3D; the stack must fit in memory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _segment_volume(vol: Any, args: argparse.Namespace, bar_desc: str):
    """Labels for one volume (looping over T); returns (labels, axes, results)."""
    import numpy as np

    from ..inference.dispatch import segment_any_iter

    data = vol.data[0] if isinstance(vol.data, list) else vol.data
    axes = vol.axes
    if args.channel is not None:
        if "C" not in axes:
            raise UsageError(f"{bar_desc}: --channel given but the image has no channel axis (axes {axes!r})")
        ci = axes.index("C")
        if not 0 <= args.channel < data.shape[ci]:
            raise UsageError(f"{bar_desc}: --channel {args.channel} out of range 0..{data.shape[ci] - 1}")
        data = data[(slice(None),) * ci + (args.channel,)]
        axes = axes.replace("C", "")
    scale, units = engine_scale(vol)
    n_t = data.shape[axes.index("T")] if "T" in axes else 1
    results, labels = [], []
    for t in range(n_t):
        frame, f_axes = data, axes
        if "T" in axes:
            ti = axes.index("T")
            frame = data[(slice(None),) * ti + (t,)]
            f_axes = axes.replace("T", "")
        desc = bar_desc if n_t == 1 else f"{bar_desc} t={t}"
        res = drain(segment_any_iter(frame, args.model, axes=f_axes, scale=scale, units=units, device=args.device,
                                 tile_size=args.tile_size, batch_size=args.batch_size,
                                 tta=getattr(args, "tta", False), do_3d=getattr(args, "do_3d", False)),
                    desc, quiet=args.quiet)
        results.append(res)
        labels.append(res.labels)
    out_axes = "".join(a for a in axes if a in "ZYX")
    if n_t > 1:
        lab = np.stack(labels)
        out_axes = "T" + out_axes
    else:
        lab = labels[0]
    return lab, out_axes, results


def run(args: argparse.Namespace) -> int:
    """Run ``medseg segment``; returns 0, raises :class:`~napari_medseg.errors.MedsegError` on bad input."""
    from ..io import read

    paths = check_inputs(args.inputs)  # every path checked before the first image is segmented
    prepare_output_folder(args.output)
    for path, name0 in zip(paths, unique_stems(paths), strict=True):  # a/same.tif, b/same.tif -> same, same_2
        t0 = time.perf_counter()
        vols = read(path)
        for i, vol in enumerate(vols):
            name = name0 if len(vols) == 1 else f"{name0}_{i}"
            lab, axes, results = _segment_volume(vol, args, name)
            dest = write_labels_like(args.output / f"{name}_labels", lab, axes, labels_geometry(vol, axes))
            r = results[-1]
            n_obj = sum(int(x.info.get("n_labels", 0)) for x in results)
            print(f"{dest}: {n_obj} labels, shape {tuple(lab.shape)}, model {r.model_name}, "
                  f"{r.device_reason}, {time.perf_counter() - t0:.1f} s")
    return 0


COMMAND = Command("segment", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "run"]
