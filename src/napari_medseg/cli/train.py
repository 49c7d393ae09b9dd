"""``medseg train``: train or fine-tune a segmentation model on painted label images.

::

    medseg train --images A.tif B.tif --labels A_lab.tif B_lab.tif [--base NAME|PATH|scratch]
                 [--mode instance|semantic] [--out MODEL_DIR | --name NAME] [--minutes M] [--epochs N]
                 [--roi BOX [BOX ...]] [--classes a,b] [--lr LR] [--no-augment] [--no-early-stopping]
                 [--val-fraction F]
                 [--device auto|cpu|cuda|mps] [--overwrite] [--quiet]

The model folder it writes is usable at once: ``medseg segment IMG -o OUT
--model MODEL_DIR`` (or ``--model NAME`` when saved in the user model folder).
Only the annotated region of each labels image is used (the painted labels'
bounding box + 16 px; in ``--mode semantic`` the whole image, or the whole
painted slices of a volume); inside it unpainted pixels count as background.
``--roi`` gives that region explicitly as a pixel box per image
(``y0:y1,x0:x1`` or ``z0:z1,y0:y1,x0:x1``, ends exclusive; ``all`` = the
default region), as a Shapes rectangle does in the Train widget.

Registered in :data:`napari_medseg.cli.main.COMMANDS` as :data:`COMMAND`;
:func:`add_parser` adds it to any argparse subparsers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ParameterError
from .common import Command, UsageError, check_inputs, path_arg, positive_float, positive_int, progress_bar, read_one

HELP = "train or fine-tune a segmentation model on painted label images"


def roi_box(text: str) -> tuple[tuple[int, int], ...] | None:
    """Parse ``"y0:y1,x0:x1"`` / ``"z0:z1,y0:y1,x0:x1"`` (pixel indices, ends exclusive); ``"all"`` -> None."""
    if text.strip().lower() in ("all", "none", "-"):
        return None
    parts = [q.strip() for q in text.split(",")]
    box = []
    for q in parts:
        ends = q.split(":")
        try:
            lo, hi = (int(e) for e in ends)
        except ValueError:
            lo = hi = None
        if len(ends) != 2 or lo is None or not 0 <= lo < hi:
            raise argparse.ArgumentTypeError(
                f"ROI {text!r}: expected y0:y1,x0:x1 or z0:z1,y0:y1,x0:x1 with 0 <= start < end, or 'all'")
        box.append((lo, hi))
    if len(box) not in (2, 3):
        raise argparse.ArgumentTypeError(f"ROI {text!r}: give 2 (Y, X) or 3 (Z, Y, X) ranges")
    return tuple(box)


def box_polygons(box: tuple[tuple[int, int], ...]) -> list:
    """ROI polygons (as :func:`napari_medseg.training.regions.roi_mask` takes them) of a pixel box."""
    import numpy as np

    (y0, y1), (x0, x1) = box[-2:]
    rect = np.array([[y0, x0], [y0, x1 - 1], [y1 - 1, x1 - 1], [y1 - 1, x0]], float)
    if len(box) == 2:
        return [rect]
    z0, z1 = box[0]
    return [np.c_[np.full(4, float(z)), rect] for z in range(z0, z1)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``p``."""
    p.add_argument("--images", nargs="+", default=None, metavar="IMG", type=Path,
                   help="training images (TIFF or DICOM), 2D or 3D (instance and semantic modes)")
    p.add_argument("--labels", nargs="+", default=None, metavar="LAB", type=Path,
                   help="painted labels, one per image in the same order (0 = not painted)")
    p.add_argument("--table", type=Path, default=None, metavar="TRAIN.csv",
                   help="classify mode: a CSV with columns file,class (files relative to its folder) and optionally "
                        "group (items of one group, e.g. copies of one original, stay on one side of the "
                        "held-out split)")
    p.add_argument("--base", default="scratch", metavar="NAME|PATH",
                   help="model to start from (name or folder), or 'scratch' (default) for a new U-Net")
    p.add_argument("--mode", choices=["instance", "semantic", "classify"], default="instance",
                   help="instance: one id per object; semantic: label value = class id; classify: a CNN "
                        "classifier from --table (default instance)")
    p.add_argument("--out", type=path_arg, default=None, metavar="MODEL_DIR",
                   help="model folder to write (default: the user model folder / --name)")
    p.add_argument("--name", default=None, help="model name (default: the --out folder's name, or finetuned-N)")
    p.add_argument("--minutes", type=positive_float, default=None, metavar="M",
                   help="time budget in minutes (default 2 when --epochs is not given)")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N", help="number of epochs")
    p.add_argument("--roi", nargs="+", type=roi_box, default=None, metavar="BOX",
                   help="region used for training, one per image (or one for all): y0:y1,x0:x1 or "
                        "z0:z1,y0:y1,x0:x1 in pixels, ends exclusive; 'all' = the painted labels' bounding region")
    p.add_argument("--classes", default=None, metavar="a,b",
                   help="semantic mode: names of classes 1, 2, ... separated by commas")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="peak learning rate (default 1e-3)")
    p.add_argument("--no-augment", action="store_true", help="no flips, rotations, zoom or intensity changes")
    p.add_argument("--no-early-stopping", action="store_true",
                   help="train for the whole budget (classify mode: already so when --minutes is given)")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="share of the annotation held out for validation (default 0.2; 0 = none)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="training arithmetic (default auto: bfloat16 autocast on CPUs with native BF16, "
                        "AVX-512 BF16 or AMX; mixed precision on CUDA; float32 elsewhere)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="patches per step (default 8 CPU, 16 GPU)")
    p.add_argument("--patch-size", type=positive_int, default=None,
                   help="patch side in pixels, a multiple of 8 (default 128 CPU, 256 GPU, capped by the region)")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in the target folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``medseg train``; returns the exit status (0 = a model was written)."""
    if "torch" not in sys.modules:
        # OpenMP spin-waiting makes torch's threads crawl when anything else runs (our patch thread included)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    mode = getattr(args, "mode", "instance")
    if mode == "classify":
        from .classify import train_classifier

        return train_classifier(args)
    from ..progress import run as drain
    from ..training.finetune import finetune_iter, model_folder
    from ..training.finetune.loop import check_settings

    if not args.images or not args.labels:
        raise ParameterError(f"--mode {mode} needs --images and --labels")
    if len(args.images) != len(args.labels):
        raise ParameterError(f"{len(args.images)} --images but {len(args.labels)} --labels: give one labels file "
                             "per image, in the same order")
    # everything that can be checked without reading an image, before reading one
    check_settings(args.lr, args.minutes, args.epochs, args.patch_size, args.batch_size)
    if args.classes is not None and args.mode != "semantic":
        raise UsageError("--classes names semantic classes; it has no effect with --mode instance")
    check_inputs(args.images, "image")
    check_inputs(args.labels, "labels")
    model_folder(args.out, args.name, args.overwrite)
    images, labels = [], []
    for ip, lp in zip(args.images, args.labels, strict=False):
        img = read_one(ip, "image")
        lab = read_one(lp, "labels")
        if any(a in lab.axes for a in "CST"):
            raise ParameterError(f"labels {lp} have axes {lab.axes!r}; expected (Z,) Y, X")
        img.name = ip.name
        images.append(img)
        labels.append(lab.data[0] if isinstance(lab.data, list) else lab.data)
    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    roi = None
    if args.roi is not None:
        boxes = list(args.roi)
        if len(boxes) == 1:
            boxes = boxes * len(labels)
        if len(boxes) != len(labels):
            raise ParameterError(f"{len(args.roi)} --roi boxes for {len(labels)} images: give one per image "
                                 "(or one for all; 'all' = no ROI for that image)")
        for b, lab, lp in zip(boxes, labels, args.labels, strict=False):
            if b is not None:
                if len(b) != lab.ndim:
                    raise ParameterError(f"--roi {b} has {len(b)} ranges but labels {lp} are {lab.ndim}D")
                if any(lo >= n for (lo, _), n in zip(b, lab.shape, strict=False)):
                    raise ParameterError(f"--roi {b} starts outside labels {lp} of shape {tuple(lab.shape)}")
        roi = [None if b is None else box_polygons(b) for b in boxes]

    def report(p) -> None:
        info = p.info or {}
        if "region" in info:
            print(info["region"], file=sys.stderr)
            print(f"device: {info.get('device')}", file=sys.stderr)
            return
        if "base_val_score" in info:
            print(f"base model: val {info['base_val_score']:.4f} on the held-out annotation (kept unless an epoch "
                  "does at least as well)", file=sys.stderr)
            return
        if bar is not None:
            bar.total = p.total
            bar.n = p.step
            val = info.get("val_score")
            bar.set_postfix_str(f"epoch {info.get('epoch')} loss {info['loss']:.3f}"
                                + ("" if val is None else f" val {val:.3f}"), refresh=False)
            bar.refresh()
        if info.get("epoch_end") and (bar is None or args.quiet):
            return
        if info.get("epoch_end"):
            val = info.get("val_score")
            bar.write(f"epoch {info['epoch']}: loss {info['epoch_loss']:.4f}"
                      + ("" if val is None else f", val {val:.4f} (best {info['best']:.4f})"))

    with progress_bar("train", quiet=args.quiet, total=0, leave=True) as bar:
        res = drain(finetune_iter(images, labels, base=None if args.base == "scratch" else args.base, mode=args.mode,
                                  class_names=classes, roi=roi, minutes=args.minutes, epochs=args.epochs, lr=args.lr,
                                  augment=not args.no_augment, val_fraction=args.val_fraction,
                                  early_stopping=not args.no_early_stopping, device=args.device, out=args.out,
                                  name=args.name, overwrite=args.overwrite, threads=args.threads,
                                  precision=args.precision, batch_size=args.batch_size,
                                  patch_size=args.patch_size), report)
    card = res.card
    score = ", ".join(f"{k} {v}" for k, v in card.metrics.items() if isinstance(v, (int, float)))
    how = "cancelled" if res.cancelled else "stopped early" if res.stopped_early else "done"
    print(f"{res.model_path}: model {card.name!r} ({card.kind}), {len(res.history)} epoch(s), {how}"
          + (f", best epoch {res.best['epoch']}: {score}" if res.best else ", no validation"))
    if card.training.get("kept_base_weights"):
        from ..training.finetune import KEPT_BASE_ADVICE

        print(KEPT_BASE_ADVICE.replace("(e.g. 3e-4)", "(--lr 3e-4)").replace("(more minutes or epochs)",
                                                                              "(--minutes, --epochs)"))
    print(f"use it with: medseg segment IMAGE -o OUTDIR --model {res.model_path}")
    return 0


COMMAND = Command("train", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "box_polygons", "roi_box", "run"]
