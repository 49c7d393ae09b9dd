"""The ``medseg`` command: the same verbs as the napari widgets, for scripts and clusters.

::

    medseg segment IN... -o OUTDIR [--model NAME|PATH] [--device auto|cpu|cuda|mps]
                                   [--tile-size N] [--batch-size N] [--channel N] [--tta] [--3d] [--quiet]
    medseg models
    medseg evaluate --images DIR --masks DIR [--model NAME|PATH | --labels DIR] [-o report.csv]
    medseg train --images A.tif... --labels A_lab.tif... [--base NAME] --mode instance|semantic --out DIR
    medseg detect IN... -o OUTDIR [--model NAME|PATH]
    medseg lesions IN... -o OUTDIR [--model NAME|PATH | --labels FILE_OR_DIR] [--min-size MM]
    medseg classify FILES... --model MODEL_DIR -o OUT.csv
    medseg export MODEL --format onnx|bioimageio -o PATH [--int8 [--calibrate IMAGE...]] [--check IMAGE...] [--test]
    medseg import PACKAGE [--name NAME] [-o FOLDER]
    medseg batch IN... -o OUTDIR [--job detect|segment] [--workers N | --scheduler ADDRESS] [--level L]
    medseg demo [nuclei|he|mr] [--run]

Exit status: 0 success, 2 bad usage or input, or a system error such as a
full disk (one-line message on stderr, no traceback), 1 out of memory (one
line) or an unexpected error (with traceback and an "unexpected error (a
bug)" line, please report it), 130 interrupted.  Warnings meant for the user (a model made for other images...)
are one ``medseg VERB: warning: ...`` line on stderr each.

Each verb lives in its own module (:mod:`~napari_medseg.cli.segment`,
:mod:`~napari_medseg.cli.models`...), which defines a
:class:`~napari_medseg.cli.common.Command` named ``COMMAND``;
:data:`COMMANDS` below lists them once, in ``medseg --help`` order.  A new
verb is a new module plus one entry there.  The verb modules import only
:mod:`napari_medseg.cli.common` (never this module) and keep torch and napari
imports inside their ``run``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .. import __version__
from ..errors import MedsegError, MedsegWarning
from . import batch, classify, demo, detect, evaluate, export, importing, lesions, models, segment, train
from .common import Command

#: The registry of subcommands: name -> :class:`~napari_medseg.cli.common.Command`, in ``--help`` order.
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (segment.COMMAND, models.COMMAND, evaluate.COMMAND, train.COMMAND, detect.COMMAND, lesions.COMMAND,
              classify.COMMAND, batch.COMMAND, export.COMMAND, importing.COMMAND, demo.COMMAND)
}


def build_parser() -> argparse.ArgumentParser:
    """The ``medseg`` argument parser, with one subparser per entry of :data:`COMMANDS`.

    Returns
    -------
    argparse.ArgumentParser
        Parsed arguments carry ``command`` (the verb) and ``_run`` (its ``run``).
    """
    parser = argparse.ArgumentParser(prog="medseg", description="Deep-learning segmentation for microscopy, "
                                     "pathology and radiology images (napari-medseg).")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in COMMANDS.values():
        cmd.add_parser(sub)
    return parser


@contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Print each distinct :class:`~napari_medseg.errors.MedsegWarning` once as ``medseg VERB: warning: ...``."""
    seen: set[str] = set()
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, MedsegWarning):
            return shown(message, category, filename, lineno, file, line)
        text = str(message)
        if text not in seen:
            seen.add(text)
            print(f"medseg {command}: warning: {text}", file=sys.stderr)
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("always", MedsegWarning)
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medseg``.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``medseg`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 ok (also ``--help``/``--version``), 2 bad usage or
        input (:class:`~napari_medseg.errors.MedsegError`: one line on
        stderr), 1 unexpected error (traceback on stderr), 130 interrupted.
    """
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # "medseg: warning: ...", not a source line
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = previous  # main() may run inside another program (the tests)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 0 for --help/--version, 2 for usage errors
        return int(e.code or 0)
    try:
        with _warnings_as_lines(args.command):
            return int(args._run(args) or 0)
    except MedsegError as e:
        print(f"medseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"medseg {args.command}: error: out of memory (try a smaller --tile-size / --batch-size, or a "
              "machine with more memory)", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, a file vanished or became unreadable mid-run: the system's, not a bug
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"medseg {args.command}: error:{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print("medseg: unexpected error (a bug): please report it with the traceback above", file=sys.stderr)
        return 1
    except BaseException as e:  # a Rust decoder's panic (pyo3 PanicException) is a BaseException
        if isinstance(e, (SystemExit, GeneratorExit)):
            raise
        traceback.print_exc()
        print("medseg: unexpected error (a bug): please report it with the traceback above", file=sys.stderr)
        return 1


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"medseg: warning: {message}\n"


__all__ = ["COMMANDS", "build_parser", "main"]
