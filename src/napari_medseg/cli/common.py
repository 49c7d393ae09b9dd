"""Helpers shared by the ``medseg`` subcommands.

Everything here is cheap to import (no numpy, torch or napari at module
level): ``medseg --help`` imports every subcommand module.

* :class:`Command`: one registry entry (name, help, arguments, run), as
  :mod:`napari_medseg.cli.main` lists them;
* :class:`UsageError`: bad command-line input (exit status 2);
* argparse types: :func:`positive_int`, :func:`non_negative_int`, :func:`positive_float`, :func:`fraction`, :func:`path_arg`,
  :func:`length_or_pixels`, :func:`image_kind`;
* paths, checked before any work: :func:`stem`, :func:`unique_stems`, :func:`check_inputs`,
  :func:`check_input_folder`, :func:`check_output_folder`, :func:`prepare_output_folder`,
  :func:`check_output_file`;
* inputs: :func:`read_inputs` (TIFF/DICOM/pictures), :func:`read_one`;
* geometry of a :class:`~napari_medseg.geometry.Volume`: :func:`engine_scale`,
  :func:`labels_geometry`, :func:`write_labels_like` (NIfTI for patient
  coordinates, TIFF with pixel size otherwise);
* progress: :func:`progress_bar`, :func:`show_progress`, :func:`drain`.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import MedsegError, ParameterError, ReaderError
from ..io.picture import PICTURE_SUFFIXES  # picture formats read with scikit-image (no pixel size in them)

T = TypeVar("T")



class UsageError(MedsegError):
    """Bad command-line input (exit status 2)."""


@dataclass(frozen=True)
class Command:
    """One ``medseg`` subcommand.

    Attributes
    ----------
    name : str
        The verb (``medseg NAME ...``).
    help : str
        One line for ``medseg --help`` (also the subcommand's description).
    add_arguments : callable
        ``add_arguments(parser)`` adds the subcommand's options.
    run : callable
        ``run(args) -> int`` runs it; returns the exit status and raises
        :class:`~napari_medseg.errors.MedsegError` for bad input.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    def add_parser(self, subparsers: Any) -> argparse.ArgumentParser:
        """Add this subcommand to an ``argparse`` subparsers object.

        Parameters
        ----------
        subparsers
            What :meth:`argparse.ArgumentParser.add_subparsers` returned.

        Returns
        -------
        argparse.ArgumentParser
            The subcommand's parser; parsed arguments have ``_run`` set to :attr:`run`.
        """
        p = subparsers.add_parser(self.name, help=self.help, description=self.help)
        self.add_arguments(p)
        p.set_defaults(_run=self.run)
        return p


# ---------------------------------------------------------------- argparse types
def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    Raises
    ------
    argparse.ArgumentTypeError
        Not an integer, or < 1.
    """
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (``--workers 0``, ``--level 0``).

    Raises
    ------
    argparse.ArgumentTypeError
        Not an integer, or < 0.
    """
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, lowest: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if v < lowest:
        raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a number > 0.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a number, or <= 0.
    """
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return v


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1].

    Raises
    ------
    argparse.ArgumentTypeError
        Not a number, or outside [0, 1].
    """
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {v}")
    return v


def length_or_pixels(text: str) -> tuple[float, str | None]:
    """argparse type: a positive size with an optional unit: ``12``, ``12px``, ``6um``, ``6µm``, ``0.01mm``.

    Returns ``(value, unit)``; unit None for plain numbers and ``px``.
    """
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([^\d\s][^\s]*)?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected a size such as 12, 12px or 6um, got {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    if unit is not None:
        from ..geometry import is_length, is_pixel, normalize_unit

        try:
            u = normalize_unit(unit)
        except Exception:  # noqa: BLE001
            u = None
        if u is None or not (is_length(u) or is_pixel(u)):
            raise argparse.ArgumentTypeError(f"{text!r}: {unit!r} is not px or a length unit (um, µm, nm, mm)")
        unit = None if is_pixel(u) else u
    return value, unit


def image_kind(text: str) -> str:
    """argparse type: a kind of image (:mod:`napari_medseg.models.kinds`, e.g. ``MR``, ``blood_smear``)."""
    from ..errors import ParameterError
    from ..models.kinds import normalize_kind

    try:
        return normalize_kind(text)
    except ParameterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_kind_argument(p: argparse.ArgumentParser) -> None:
    """The ``--kind`` option: what the images are, for ``auto`` and for the wrong-model warning."""
    p.add_argument("--kind", type=image_kind, default=None, metavar="KIND",
                   help="what the images are: fluorescence, brightfield, histology, blood_smear, microscopy, CT, MR, "
                        "radiology... (default: radiology for DICOM/NIfTI/NRRD, with the DICOM modality; else "
                        "microscopy). --model auto picks a model made for it; a model made for other images warns")


def path_arg(text: str) -> Path:
    """argparse type: a non-empty path (``type=Path`` would turn ``''`` into the current folder).

    Raises
    ------
    argparse.ArgumentTypeError
        An empty or blank path, or one with a NUL byte.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path: give a file or folder name")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"path {text!r} holds a NUL byte")
    return Path(text)


# ---------------------------------------------------------------- paths
def stem(path: Path) -> str:
    """Name of ``path`` without its image suffix (``a.ome.tif``, ``a.nii.gz`` -> ``a``), for output file names."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".dcm", ".btf", ".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.is_file() else name


def check_input_folder(folder: Path, option: str) -> None:
    """Raise :class:`UsageError` ``"--OPTION FOLDER: not a folder"`` unless ``folder`` is a folder."""
    if not folder.is_dir():
        raise UsageError(f"--{option} {folder}: not a folder")


def check_output_folder(folder: Path, error: type[MedsegError] = ParameterError) -> None:
    """Raise ``error`` when ``folder`` cannot become an output folder (a missing one is fine).

    Refused: an empty path, an existing file, a path under a file, and a folder (or the nearest
    existing parent of a missing one) that is not writable.
    """
    problem = _folder_problem(folder)
    if problem:
        raise error(f"output {folder}: {problem}")


def _folder_problem(folder: Path) -> str | None:
    if str(folder) == "":
        return "empty path: give a folder"
    if folder.exists() and not folder.is_dir():
        return "exists and is not a folder"
    parent = _nearest_existing(folder)
    if parent is None:
        return None
    if not parent.is_dir():
        return f"{parent} is a file, so no folder can be made under it"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable"
    return None


def _nearest_existing(path: Path) -> Path | None:
    for p in (path, *path.parents):
        try:
            if p.exists():
                return p
        except OSError:
            return None
    return None


def prepare_output_folder(folder: Path, option: str = "-o") -> Path:
    """Check an output folder and create it, before any work (a typo must not cost minutes first).

    Raises
    ------
    UsageError
        See :func:`check_output_folder`; also when the folder cannot be created (read-only file
        system, permissions); the message names the option and the path.
    """
    problem = _folder_problem(folder)
    if problem:
        raise UsageError(f"{option} {folder}: {problem}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option} {folder}: cannot create the folder: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {folder}: the folder is not writable")
    return folder


def check_output_file(path: Path, option: str = "-o") -> None:
    """Check an output file path before any work: not empty, not a folder, its folder makeable and writable.

    Raises
    ------
    UsageError
        The message names the option and the path.
    """
    if str(path) == "":
        raise UsageError(f"{option}: empty path: give a file name")
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise UsageError(f"{option} {path}: exists and is not a regular file")
    problem = _folder_problem(path.parent)
    if problem:
        raise UsageError(f"{option} {path}: its folder {path.parent}: {problem}")


def check_inputs(paths: list[Any], what: str = "input") -> list[Path]:
    """Every input exists and is a file or folder (pipes and devices would block), before any work.

    Raises
    ------
    ReaderError
        The first input that does not exist or is neither a regular file nor a folder.
    """
    out = []
    for src in paths:
        p = Path(src)
        if not p.exists():
            raise ReaderError(f"{what} {p} does not exist")
        try:
            mode = p.stat().st_mode
        except OSError as e:
            raise ReaderError(f"{what} {p}: cannot be read: {e.strerror or e}") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ReaderError(f"{what} {p} is not a regular file or folder (a pipe, socket or device)")
        out.append(p)
    return out


def unique_stems(paths: list[Path]) -> list[str]:
    """Output stems, one per input: :func:`stem`, with ``_2``, ``_3``... when inputs share a stem.

    ``a/same.tif`` and ``b/same.tif`` give ``same`` and ``same_2`` (never one file written twice);
    the comparison ignores case, as macOS and Windows file systems do.
    """
    taken: set[str] = set()
    out = []
    for p in paths:
        base = stem(p)
        name, k = base, 1
        while name.casefold() in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name.casefold())
        out.append(name)
    return out


# ---------------------------------------------------------------- inputs
def read_inputs(path: Path) -> list[Any]:
    """Volumes of one input: TIFF/DICOM via :func:`napari_medseg.io.read`, pictures via scikit-image.

    Parameters
    ----------
    path : Path
        TIFF file, DICOM file / series folder / DICOMDIR, or a 2D picture
        (:data:`PICTURE_SUFFIXES`: pixel units, axes ``YX`` or ``YXS``).

    Returns
    -------
    list of Volume
        One entry per image in ``path``.

    Raises
    ------
    ReaderError
        Missing or unreadable input.
    """
    from ..io import read
    from ..io.picture import read_picture

    if not path.exists():
        raise ReaderError(f"{path} does not exist")
    if path.is_file() and path.suffix.lower() in PICTURE_SUFFIXES:
        return read_picture(path)
    return read(path)


def read_one(path: Path, what: str) -> Any:
    """The single image of a TIFF/DICOM input (:func:`napari_medseg.io.read`).

    Parameters
    ----------
    path : Path
        The input.
    what : str
        What it is, for the error message (``"image"``, ``"labels"``).

    Returns
    -------
    Volume

    Raises
    ------
    ParameterError
        ``path`` holds several images.
    ReaderError
        Missing or unreadable input.
    """
    from ..io import read

    vols = read(path)
    if len(vols) != 1:
        raise ParameterError(f"{what} {path} holds {len(vols)} images; give one file per image")
    return vols[0]


# ---------------------------------------------------------------- geometry
def engine_scale(vol: Any) -> tuple[list[float] | None, list[str] | None]:
    """Pixel size and units of a Volume's Z/Y/X axes for the engine; ``(None, None)`` when uncalibrated.

    The size of each axis is the length of its step in the world (the column
    norms of the volume's affine), so DICOM/NIfTI volumes, whose spacing lives
    in the affine, are right too.

    Returns
    -------
    scale : list of float or None
    units : list of str or None
        One entry per spatial axis, in Z, Y, X order.
    """
    g = vol.spatial_geometry()
    if not g.calibrated:
        return None, None
    return [float(s) for s in g.spacing], list(g.units)


def labels_geometry(vol: Any, axes: str) -> Any:
    """The geometry of labels with ``axes`` (``"ZYX"``, ``"TZYX"``...) computed on ``vol``."""
    return vol.geometry.subset(axes)


def write_labels_like(dest_stem: Path, labels: Any, axes: str, geometry: Any) -> Path:
    """Write labels with the geometry of their source image; returns the file written.

    Labels over patient coordinates (DICOM, NIfTI, NRRD sources) become
    ``<dest_stem>.nii.gz`` with the source affine (LPS -> RAS), so they
    overlay the series in napari and any radiology viewer; all others become
    ``<dest_stem>.tif`` with their pixel size (ImageJ/OME readable).
    """
    from ..io.radiology import labels_suffix, write_labels_nifti
    from ..io.tiff import write_labels_tiff

    if labels_suffix(geometry) == ".nii.gz" and axes in ("ZYX", "TZYX", "YX"):
        return write_labels_nifti(dest_stem.with_name(dest_stem.name + ".nii.gz"), labels, geometry)
    calibrated = geometry is not None and geometry.calibrated
    return write_labels_tiff(dest_stem.with_name(dest_stem.name + ".tif"), labels,
                             scale=[float(s) for s in geometry.spacing] if calibrated else None,
                             units=list(geometry.units) if calibrated else None, axes=axes)


# ---------------------------------------------------------------- progress
@contextmanager
def progress_bar(desc: str, *, quiet: bool = False, unit: str = "step", total: int = 1,
                 leave: bool = False) -> Iterator[Any]:
    """A tqdm bar on stderr (``None`` when ``quiet``), closed on exit.

    Parameters
    ----------
    desc : str
        Text before the bar.
    quiet : bool
        No bar (yields None).
    unit : str
    total : int
        Initial total; :func:`show_progress` sets it from each Progress.
    leave : bool
        Keep the finished bar on screen.

    Yields
    ------
    tqdm.tqdm or None
    """
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def show_progress(bar: Any, p: Any, postfix: str | None = None) -> None:
    """Move ``bar`` (or nothing when None) to a :class:`~napari_medseg.progress.Progress`.

    Parameters
    ----------
    bar : tqdm.tqdm or None
    p : Progress
    postfix : str, optional
        Text after the bar (default ``p.message``).
    """
    if bar is None:
        return
    bar.total = p.total
    bar.n = p.step
    bar.set_postfix_str(p.message if postfix is None else postfix, refresh=False)
    bar.refresh()


def drain(gen: Generator[Any, Any, T], desc: str, *, quiet: bool = False, unit: str = "step", total: int = 1,
          leave: bool = False, postfix: Callable[[Any], str] | None = None) -> T:
    """Run a progress generator to its result under a :func:`progress_bar`.

    Parameters
    ----------
    gen : generator
        Yields :class:`~napari_medseg.progress.Progress`, returns the result
        (as :func:`napari_medseg.progress.run` drains them).
    desc, quiet, unit, total, leave
        As for :func:`progress_bar`.
    postfix : callable, optional
        ``postfix(progress) -> str``, the text after the bar (default: the message).

    Returns
    -------
    The generator's return value.
    """
    from ..progress import run

    with progress_bar(desc, quiet=quiet, unit=unit, total=total, leave=leave) as bar:
        return run(gen, lambda p: show_progress(bar, p, None if postfix is None else postfix(p)))


__all__ = [
    "PICTURE_SUFFIXES", "Command", "UsageError", "add_kind_argument", "check_input_folder", "check_inputs",
    "check_output_file", "check_output_folder", "drain", "engine_scale", "fraction", "image_kind",
    "labels_geometry", "length_or_pixels", "non_negative_int", "path_arg", "positive_float", "positive_int",
    "prepare_output_folder", "progress_bar", "read_inputs", "read_one", "show_progress", "stem", "unique_stems", "write_labels_like",
]
