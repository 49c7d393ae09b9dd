"""``medseg classify`` and ``medseg train --mode classify``: a CNN classifier for images, tiles and crops.

::

    medseg train --mode classify --table TRAIN.csv --out MODEL_DIR [--minutes M] [--base MODEL] [--epochs N]
    medseg classify FILES... --model MODEL_DIR [--model MODEL_DIR2 ...] -o OUT.csv [--saliency DIR]
    medseg classify SLIDE... --model MODEL_DIR --tiles PX -o OUT [--level L] [--threshold P] [--region-class C]

``TRAIN.csv`` has columns ``file,class`` (``file`` relative to the CSV's
folder, or absolute) and optionally ``group`` (items of one group, e.g.
copies of one original tile or one patient's images, are never split
between training and the held-out part that early stopping and
calibration use).  ``OUT.csv`` has one row per file:
``file,class,p_<class>...`` (calibrated probabilities; several ``--model``
folders average as an ensemble).  ``--saliency DIR`` also writes each file's
Grad-CAM map as ``DIR/<stem>_saliency.tif``.

With ``--tiles PX`` each input is a whole slide (SVS, NDPI, SCN, OME-TIFF
pyramid...): its tissue is found on a low level, its non-overlapping
``PX`` x ``PX`` tiles (full resolution, or ``--level L``) with tissue are
classified, and ``OUT`` (a folder) receives ``<stem>_tiles.csv``
(``y0,x0,class,p_<class>...``, tile top-left in level-0 pixels),
``<stem>_heatmap.ome.tif`` (probabilities per class, pixel size = tile),
``<stem>_regions.geojson`` (QuPath annotations) and ``<stem>_regions.csv``
(class, mean probability, area mm², longest diameter mm); see
:mod:`napari_medseg.slides.job`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from .common import Command, drain, fraction, positive_int, prepare_output_folder, stem

HELP = "classify images with a CNN classifier: OUT.csv with file, class and p_<class> per file"


def read_table(path: Path) -> tuple[list[Path], list[str], list[str] | None]:
    """Files, classes and groups (None without a ``group`` column) of a ``file,class[,group]`` CSV
    (:func:`~napari_medseg.analysis.image_classify.read_class_table`)."""
    from ..analysis.image_classify import read_class_table

    return read_class_table(path, with_groups=True)


def load_item(path: Path) -> Any:
    """The pixels of one image file (:func:`~napari_medseg.analysis.image_classify.load_image_item`)."""
    from ..analysis.image_classify import load_image_item

    return load_image_item(path)


def train_classifier(args: argparse.Namespace) -> int:
    """``medseg train --mode classify``: returns 0 when a model was written."""
    from ..training.classifier import train_classifier_iter

    if args.table is None:
        raise ParameterError("--mode classify needs --table TRAIN.csv (columns file,class)")
    if args.out is None and args.name is None:
        raise ParameterError("--mode classify needs --out MODEL_DIR (or --name NAME for the user model folder)")
    if args.out is not None and (args.out / "model.json").exists() and not args.overwrite:
        raise ParameterError(f"{args.out} already holds a model; pass --overwrite to replace it")
    files, classes, groups = read_table(args.table)
    items = [load_item(p) for p in files]
    minutes = args.minutes if args.minutes is not None or args.epochs is not None else 2.0
    res = drain(train_classifier_iter(items, classes, base=None if args.base == "scratch" else args.base,
                                      minutes=minutes, epochs=args.epochs, lr=args.lr or 2e-3,
                                      val_fraction=args.val_fraction, groups=groups, augment=not args.no_augment,
                                      early_stopping=False if args.no_early_stopping else None,
                                      device=args.device, out=args.out, name=args.name or (args.out.name if args.out
                                                                                          else None),
                                      batch_size=args.batch_size or 32, threads=args.threads,
                                      precision=args.precision,
                                      training_data=f"{args.table} ({len(files)} items)"),
                "train", quiet=args.quiet, total=0, leave=True, postfix=lambda p: p.message)
    m = res.metrics
    print(f"{res.model_path}: classifier {', '.join(res.class_names)}, {len(res.history)} epoch(s)"
          f"{' (cancelled)' if res.cancelled else ''}, best epoch {m['best_epoch']}: "
          f"val accuracy {m['val_accuracy']:.3f}, AUC {m['val_auc']:.3f}, ECE {m['ece_before']:.3f} -> "
          f"{m['ece_after']:.3f} (temperature {m['temperature']:.2f})")
    print(f"use it with: medseg classify FILES... --model {res.model_path} -o OUT.csv")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``medseg classify``."""
    p.add_argument("inputs", nargs="+", metavar="FILE", help="images (TIFF, DICOM, NIfTI, JPEG, PNG...)")
    p.add_argument("--model", action="append", required=True, metavar="MODEL_DIR",
                   help="classification model (name or folder); repeat for an ensemble")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.csv",
                   help="the table to write (with --tiles: the output folder)")
    p.add_argument("--no-tta", action="store_true", help="no test-time flips")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--saliency", type=Path, default=None, metavar="DIR",
                   help="also write each file's Grad-CAM map (first model) as DIR/<stem>_saliency.tif")
    g = p.add_argument_group("whole slides (--tiles)")
    g.add_argument("--tiles", type=positive_int, default=None, metavar="PX",
                   help="inputs are whole slides: classify their non-overlapping PX x PX tiles into a heat map")
    g.add_argument("--level", type=int, default=0, metavar="L", help="pyramid level the tiles are read from (0)")
    g.add_argument("--threshold", type=fraction, default=0.5, metavar="P",
                   help="probability at or above which a tile joins a class region (0.5)")
    g.add_argument("--region-class", action="append", default=None, metavar="CLASS",
                   help="outline regions of this class only (repeatable; default every class)")
    g.add_argument("--min-tissue", type=fraction, default=0.25, metavar="F",
                   help="classify tiles with at least this tissue fraction (0.25)")
    g.add_argument("--no-tissue", action="store_true", help="classify every tile (no tissue detection)")
    g.add_argument("--smooth", type=float, default=0.0, metavar="TILES",
                   help="Gaussian smoothing of the heat map before thresholding, in tiles (0)")


def run_slides(args: argparse.Namespace, models: list[Any]) -> int:
    """``medseg classify SLIDE... --tiles PX -o OUT``: heat map, tiles table and regions per slide; returns 0."""
    from ..slides.job import classify_slide_job_iter

    if args.saliency is not None:
        raise ParameterError("--saliency is for image files; slides (--tiles) get a heat map instead")
    if args.level < 0:
        raise ParameterError(f"--level must be >= 0, got {args.level}")
    if args.smooth < 0:
        raise ParameterError(f"--smooth must be >= 0 tiles, got {args.smooth}")
    out = prepare_output_folder(args.output)
    for s in args.inputs:
        res = drain(classify_slide_job_iter(Path(s), models, out, tile=args.tiles, level=args.level,
                                            tissue=not args.no_tissue, min_tissue=args.min_tissue,
                                            threshold=args.threshold, classes=args.region_class, sigma=args.smooth,
                                            tta=not args.no_tta),
                    f"classify {Path(s).name}", quiet=args.quiet, total=0)
        heat = res.heatmap
        n = int(heat.classified.sum())
        print(f"{Path(s).name}: {n} of {heat.classified.size} tile(s) classified, {len(res.regions)} region(s) -> "
              + ", ".join(str(f) for f in res.files.values()), file=sys.stdout)
        if n == 0 and res.tissue is not None:
            found = ("no tissue found (glass only?)" if not res.tissue.mask.any() else
                     f"no tile has {args.min_tissue:g} tissue (tissue {res.tissue.fraction:.2%} of the slide)")
            print(f"medseg classify: note: {Path(s).name}: {found}, nothing classified; --no-tissue classifies "
                  "every tile", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``medseg classify``; returns 0."""
    from ..analysis.image_classify import classify_items, gradcam
    from ..analysis.objects import write_objects_csv
    from ..models.registry import resolve_model

    if args.tiles is None and args.output.exists() and args.output.is_dir():
        raise ParameterError(f"-o {args.output} is a folder; give a .csv file name")
    models = [resolve_model(m).path for m in args.model]  # a bad model fails before any file is read
    if args.tiles is not None:
        return run_slides(args, models)
    paths = [Path(s) for s in args.inputs]
    items = [load_item(p) for p in paths]
    probs, names = classify_items(items, models, tta=not args.no_tta)
    import pandas as pd

    table = pd.DataFrame({"file": [str(p) for p in paths], "class": [names[i] for i in probs.argmax(axis=1)]})
    for k, n in enumerate(names):
        table[f"p_{n}"] = probs[:, k]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_objects_csv(args.output, table)
    if args.saliency is not None:
        import tifffile

        args.saliency.mkdir(parents=True, exist_ok=True)
        for p, cam in zip(paths, gradcam(items, models[0]), strict=True):
            tifffile.imwrite(args.saliency / f"{stem(p)}_saliency.tif", cam)
    counts = table["class"].value_counts().to_dict()
    print(f"{args.output}: {len(table)} file(s): " + ", ".join(f"{c} {n}" for c, n in sorted(counts.items())),
          file=sys.stdout)
    return 0


COMMAND = Command("classify", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "load_item", "read_table", "run", "run_slides",
           "train_classifier"]
