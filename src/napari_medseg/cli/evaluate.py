"""``medseg evaluate``: score a model (or existing label images) against ground-truth masks."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Command, UsageError, add_kind_argument, check_input_folder, check_output_file, drain, path_arg

HELP = "score a model or existing labels against instance masks (AP@0.5, AP@0.75, mAP 0.5:0.9, Dice)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to ``p``."""
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of images")
    p.add_argument("--masks", required=True, type=Path, metavar="DIR",
                   help="folder of ground-truth instance label images, paired with the images by file stem: "
                        "image a.tif goes with a.<suffix> or a_labels.<suffix> (TIFF, PNG, NIfTI, NRRD)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, metavar="NAME|PATH",
                     help="model to segment each image with (default: picked from the image, grey vs RGB)")
    src.add_argument("--labels", type=Path, default=None, metavar="DIR",
                     help="compare existing label images instead of running a model, e.g. the -o folder of "
                          "`medseg segment` or `medseg detect` (<stem>_labels.tif / <stem>_labels.nii.gz)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("-o", "--output", type=path_arg, default=None, metavar="report.csv",
                   help="write per-image rows and the overall row as CSV")
    p.add_argument("--summary-only", action="store_true", help="print only the overall lines")
    p.add_argument("--lesions", action="store_true",
                   help="lesion-wise scores instead: sensitivity, FP per case, FROC/CPM, Dice, volume error "
                        "(a predicted lesion hits a true one when they share a voxel, or IoU >= --min-iou)")
    p.add_argument("--min-iou", type=float, default=0.0, metavar="F",
                   help="with --lesions: IoU a hit needs (default 0: any overlap)")
    add_kind_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``medseg evaluate``: print the scores (and write the CSV); returns 0."""
    from ..analysis.evaluation import evaluate_iter

    if args.lesions:
        from .lesions import evaluate_lesions

        return evaluate_lesions(args)
    for name in ("images", "masks") + (("labels",) if args.labels is not None else ()):
        check_input_folder(getattr(args, name), name)
    if args.output is not None:
        check_output_file(args.output)  # before the images are segmented
    model = None if args.labels is not None else (args.model or "auto")
    extra = {} if model is None or args.kind is None else {"image_kind": args.kind}
    gen = evaluate_iter(args.images, args.masks, model=model, labels=args.labels, device=args.device, **extra)
    report = drain(gen, "evaluate", quiet=args.quiet, unit="image", total=0, leave=True,
                   postfix=lambda p: p.message[-40:])
    print(report.format_table(per_image=not args.summary_only))
    if args.output is not None:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"-o {args.output}: cannot create its folder: {e.strerror or e}") from None
        report.to_csv(args.output)
        print(f"wrote {args.output}")
    return 0


COMMAND = Command("evaluate", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "run"]
