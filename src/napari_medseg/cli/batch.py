"""``medseg batch``: segment or detect objects in many (or huge) 2D images on a dask cluster.

::

    medseg batch IN... -o OUTDIR [--job detect|segment] [--model NAME|PATH]
                                 [--workers N | --scheduler ADDRESS] [--level L]
                                 [--tissue auto|on|none] [--block-size PX] [--max-object-size PX] [--device auto|cpu|cuda|mps]
                                 [--tile-size N] [--batch-size N] [--quiet]

Every input (a file, or a folder of TIFF / OME-TIFF / slide / picture files)
is segmented block by block (:mod:`napari_medseg.batch.blockwise`): objects
across block borders are stitched (none split, none duplicated), memory stays
that of one block per worker whatever the image size.  Per input:
``OUTDIR/<stem>.zarr`` (the labels as an OME-Zarr multiscale pyramid, which
napari opens lazily) and, with ``--job detect`` (the default),
``OUTDIR/<stem>_objects.csv``.  For the batch: ``OUTDIR/batch_report.csv``
(one row per input: done / skipped / failed, objects, seconds, error) and
``OUTDIR/objects.csv`` (every input's objects, with a leading ``file`` column).

Only the tissue is segmented (``--tissue auto``, the default): on an RGB
slide (a pyramid, or a flat RGB image of at least 8192 x 8192 pixels) the
tissue is found on a coarse level (saturation + Otsu, about 4 µm pixels) and
the blocks that show only glass are skipped; grey, fluorescence and small RGB
images (crops, tiles) run whole.  ``--tissue on`` finds it on every image
(grey: tissue brighter than the background), ``--tissue none`` runs every
block.  The report gives per input the tissue mode and fraction and the blocks
skipped.

The tasks run on dask.distributed: a LocalCluster of ``--workers`` processes
(default 2; 0 runs in this process, without dask) or the scheduler at
``--scheduler`` (its workers must see the same paths).  Running the same
command again resumes: finished inputs, blocks and pyramid tiles are skipped.
An input that cannot be read or segmented is reported and the others go on;
the exit status is then 2.

Why one verb and not a ``--scheduler`` option on ``segment`` / ``detect``:
those write one whole-image TIFF per input from memory; a batch needs its own
output layout (chunked pyramids, resumable parts, a report), cluster options
and failure policy, which live here once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ParameterError
from .common import (
    PICTURE_SUFFIXES,
    Command,
    UsageError,
    check_inputs,
    check_output_folder,
    drain,
    non_negative_int,
    path_arg,
    positive_int,
    prepare_output_folder,
    unique_stems,
)

HELP = "segment / detect objects in many or huge 2D images, block by block, on a dask cluster (resumable)"

#: Files a folder input contributes (TIFF-based slides and the common pictures).
SLIDE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".svs", ".ndpi", ".scn")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``medseg batch``."""
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files, or folders of them (TIFF, OME-TIFF, "
                   "SVS/NDPI/SCN slides tifffile reads, JPEG/PNG...)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", type=path_arg,
                   help="folder for <stem>.zarr, <stem>_objects.csv, batch_report.csv, objects.csv")
    p.add_argument("--job", choices=["detect", "segment"], default="detect",
                   help="detect: labels and objects tables (default); segment: labels only")
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="2D instance segmentation model (see `medseg models`); default: nuclei-he for RGB, "
                        "nuclei for grey images")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=non_negative_int, default=2, metavar="N",
                       help="worker processes of a local dask cluster (default 2; 0: this process, no dask)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="address of a running dask scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--level", type=non_negative_int, default=0, metavar="L",
                   help="pyramid level to segment (0 = full resolution)")
    p.add_argument("--tissue", choices=["auto", "on", "none"], default="auto",
                   help="segment only the tissue: auto (default) finds it on RGB slides (pyramids or images of "
                        ">= 8192x8192 px) and runs grey / fluorescence / small images whole; on: find it on every "
                        "image; none: every block")
    p.add_argument("--block-size", type=positive_int, default=2048, metavar="PX",
                   help="block edge in pixels (default 2048; memory per worker grows with its square)")
    p.add_argument("--max-object-size", type=positive_int, default=None, metavar="PX",
                   help="largest object diameter in pixels (default: the model's, 64 at its pixel size); "
                        "larger objects may be cut at block borders")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--tile-size", type=positive_int, default=None, metavar="N", help="largest tile edge in pixels")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help="tiles per forward pass")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files of the inputs: each file as is, each folder's image files (sorted, not recursive)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and f.name.lower().endswith(SLIDE_SUFFIXES + tuple(PICTURE_SUFFIXES)))
            if not found:
                raise ParameterError(f"folder {p} holds no image files ({', '.join(SLIDE_SUFFIXES)}, pictures)")
            files += found
        else:
            files.append(p)
    return files


def run(args: argparse.Namespace) -> int:
    """Run ``medseg batch``; returns 0, or 2 when some inputs failed (reported in batch_report.csv)."""
    out: Path = args.output
    files = expand_inputs(check_inputs(args.inputs))
    check_output_folder(out, UsageError)
    if args.model != "auto":
        from ..models.registry import resolve_model

        args.model = str(resolve_model(args.model).path)
    from ..batch.plan import SourceSpec
    from ..batch.runner import make_executor, run_batch_iter

    prepare_output_folder(out)
    specs = [SourceSpec(path=str(f), level=args.level) for f in files]
    executor = make_executor(args.workers, args.scheduler)
    where = (f"dask scheduler {args.scheduler}" if args.scheduler else
             f"a local dask cluster of {args.workers} workers" if args.workers else "this process")
    try:
        res = drain(run_batch_iter(specs, out, executor=executor, names=unique_stems(files), model=args.model,
                                   detect=args.job == "detect", tissue=args.tissue, block_size=args.block_size,
                                   max_object_size=args.max_object_size, device=args.device,
                                   tile_size=args.tile_size, batch_size=args.batch_size),
                    "batch", quiet=args.quiet, unit="task")
    finally:
        executor.close()
    counts = res.report["status"].value_counts().to_dict()
    n_obj = int(res.report["objects"].fillna(0).sum())
    print(f"{out}: {len(files)} inputs on {where}: {counts.get('done', 0)} done, {counts.get('skipped', 0)} skipped "
          f"(finished before), {counts.get('failed', 0)} failed; {n_obj} objects; {res.seconds:.1f} s -> "
          f"{res.report_path.name}" + (f" + {res.objects_path.name}" if res.objects_path else ""))
    for name, err, tissue in zip(res.report["file"], res.report["error"], res.report["tissue"], strict=True):
        if isinstance(err, str) and err:
            print(f"medseg batch: error: {name}: {err}", file=sys.stderr)
        elif tissue == "empty":
            print(f"medseg batch: note: {name}: no tissue found (glass only?), nothing segmented; "
                  "--tissue none runs the whole image", file=sys.stderr)
    return 2 if res.failed else 0


COMMAND = Command("batch", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "expand_inputs", "run"]
