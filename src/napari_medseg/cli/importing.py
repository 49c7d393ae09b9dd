"""``medseg import``: a BioImage Model Zoo package of napari-medseg's U-Net -> a model usable by name.

::

    medseg import nuclei.zip [--name NAME] [-o FOLDER]

The model folder goes into the user model folder (``medseg models`` lists
it) unless ``-o`` says where.  Needs the ``[export]`` extra.
"""

from __future__ import annotations

import argparse

from .common import Command, UsageError, check_inputs, path_arg

HELP = "import a BioImage Model Zoo package (a napari-medseg U-Net) as a model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``import`` options to ``p``."""
    p.add_argument("package", type=path_arg, metavar="PACKAGE", help="zoo package: .zip, folder or its rdf.yaml")
    p.add_argument("--name", default=None, help="model name (default: the package's napari-medseg name or its own)")
    p.add_argument("-o", "--output", type=path_arg, default=None, metavar="FOLDER",
                   help="model folder to write (default: <user model folder>/<name>)")


def run(args: argparse.Namespace) -> int:
    """Run ``medseg import``; returns 0."""
    import math
    import shutil
    import tempfile
    from pathlib import Path

    from ..models.registry import user_models_dir
    from ..models.spec import ModelCard, refuse_shipped_folder, valid_model_name
    from ..zoo.importer import import_bioimageio

    check_inputs([args.package], "package")
    if args.name is not None and not valid_model_name(args.name):
        raise UsageError(f"--name {args.name!r} is not a model name (letters, digits, '.', '_', '+', '-')")
    if args.output is not None:
        _check_free(args.output)  # before the package is read
    with tempfile.TemporaryDirectory(prefix="medseg-import-") as tmp:
        staged, diff = import_bioimageio(args.package, Path(tmp) / "model", name=args.name)
        card = ModelCard.from_json(staged / "model.json")
        dest = args.output or user_models_dir() / card.name
        refuse_shipped_folder(dest)
        _check_free(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for f in staged.iterdir():
            shutil.copy2(f, dest / f.name)
    check = ("no test tensors in the package" if math.isnan(diff)
             else f"its test output reproduced, max abs difference {diff:.3g}")
    print(f"imported {card.name!r} ({card.kind}, {card.in_channels} channel(s)) into {dest}; {check}")
    return 0


def _check_free(dest) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} exists and is not an empty folder: give --name or -o for another folder")


COMMAND = Command("import", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "run"]
