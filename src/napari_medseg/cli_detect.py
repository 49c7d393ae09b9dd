"""``medseg detect``: objects tables (and labels) for a batch of images.

::

    medseg detect IN... -o OUTDIR [--model NAME|PATH] [--device auto|cpu|cuda|mps]
                                  [--score-threshold F] [--channel N]
                                  [--tile-size N] [--batch-size N] [--quiet]

For every input image this writes ``OUTDIR/<stem>_objects.csv`` (one row per
object: id, class, score, centroid and bounding box in pixels and in physical
units, size, shape and intensity measurements; see
:mod:`napari_medseg.analysis.objects_api`) and, when the model is a
segmentation model, ``OUTDIR/<stem>_labels.tif`` (the objects' label image
with the input's pixel size).  A file holding several images (a DICOM folder
with several series) gives ``<stem>_0``, ``<stem>_1``...

Inputs: TIFF and DICOM through :func:`napari_medseg.io.read` (with their pixel
size), and the common 2D picture formats (JPEG, PNG, BMP, GIF, WebP: pixel
units) through :func:`skimage.io.imread`.

Registered in :mod:`napari_medseg.cli` as ``COMMANDS["detect"] = (HELP,
add_arguments, run)``; :func:`add_parser` adds it to any argparse subparsers.
Errors meant for the user are :class:`~napari_medseg.errors.MedsegError`
(exit status 2 through ``medseg``'s main).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .cli import _positive_int  # shared argparse type (cli imports this module lazily: no cycle)
from .errors import ParameterError, ReaderError

HELP = "detect, measure and count objects; write <stem>_objects.csv (and <stem>_labels.tif)"

#: Picture formats read with scikit-image (no pixel size in them).
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``medseg detect``."""
    p.add_argument("inputs", nargs="+", metavar="IN",
                   help="TIFF, DICOM file/folder/DICOMDIR, or a JPEG/PNG/BMP picture")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", type=Path,
                   help="folder for <stem>_objects.csv and <stem>_labels.tif (created if needed)")
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="segmentation or detection model name (see `medseg models`) or folder; "
                        "default: auto (the default segmentation model for the image)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--score-threshold", type=_fraction, default=None, metavar="F",
                   help="detection models: smallest box score kept (default: the model's)")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="feed only channel N of multichannel (C axis) images to the model "
                        "(all channels are still measured)")
    p.add_argument("--tile-size", type=_positive_int, default=None, metavar="N", help="largest tile edge in pixels")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N", help="tiles per forward pass")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``detect`` to an ``argparse`` subparsers object; ``args._run`` is :func:`run`."""
    p = subparsers.add_parser("detect", help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(_run=run)
    return p


def read_inputs(path: Path) -> list[Any]:
    """Volumes of one input: TIFF/DICOM via :func:`napari_medseg.io.read`, pictures via scikit-image.

    Raises
    ------
    ReaderError
        Missing or unreadable input.
    """
    from .io import read
    from .volume import Volume

    if not path.exists():
        raise ReaderError(f"{path} does not exist")
    if path.is_file() and path.suffix.lower() in PICTURE_SUFFIXES:
        import numpy as np
        from skimage.io import imread

        try:
            data = np.asarray(imread(str(path)))
        except Exception as exc:  # imageio/PIL raise many types for damaged files
            raise ReaderError(f"cannot read picture {path}: {exc}") from exc
        if data.ndim == 3 and data.shape[-1] in (3, 4):
            axes = "YXS"
        elif data.ndim == 2:
            axes = "YX"
        else:
            raise ReaderError(f"{path}: a picture of shape {data.shape} is neither grey nor RGB(A)")
        return [Volume(data, axes, name=path.stem, metadata={"source": str(path)})]
    return read(path)


def _spatial_geometry(vol: Any) -> tuple[list[float] | None, list[float] | None, list[str] | None]:
    keep = [i for i, a in enumerate(vol.world_axes) if a in "ZYX"]
    scale = None if vol.scale is None else [float(vol.scale[i]) for i in keep]
    translate = None if vol.translate is None else [float(vol.translate[i]) for i in keep]
    units = None if vol.units is None else [str(vol.units[i]) for i in keep]
    if units is not None and all(u in ("", "px", "pixel", "pixels") for u in units):
        units = None  # pixel-unit images are measured in px
    return scale, translate, units


def _detect_volume(vol: Any, args: argparse.Namespace, desc: str):
    """Run :func:`~napari_medseg.analysis.objects_api.detect_iter` on one volume under a progress bar."""
    from .analysis.objects import detect_iter, intensity_of_image as _intensity_of_image
    from .progress import run as drain

    data = vol.data[0] if isinstance(vol.data, list) else vol.data
    axes = vol.axes
    if "T" in axes:
        raise ParameterError(f"{desc}: has a time axis (axes {axes!r}); detect works on one 2D/3D image at a time")
    scale, translate, units = _spatial_geometry(vol)
    # without units the pixel size means nothing physical: measure in pixels then
    if units is None:
        scale = translate = None
    intensity = _intensity_of_image(data, axes, vol.channel_names)
    model_input, model_axes = data, axes
    if args.channel is not None:
        if "C" not in axes:
            raise ParameterError(f"{desc}: --channel given but the image has no channel axis (axes {axes!r})")
        ci = axes.index("C")
        if not 0 <= args.channel < data.shape[ci]:
            raise ParameterError(f"{desc}: --channel {args.channel} out of range 0..{data.shape[ci] - 1}")
        model_input = data[(slice(None),) * ci + (args.channel,)]
        model_axes = axes.replace("C", "")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=1, desc=desc, unit="step", leave=False, file=sys.stderr)

    def update(p):
        if bar is not None:
            bar.total = p.total
            bar.n = p.step
            bar.set_postfix_str(p.message, refresh=False)
            bar.refresh()

    try:
        return drain(detect_iter(model_input, args.model, axes=model_axes, intensity=intensity, scale=scale,
                                 translate=translate, units=units, device=args.device,
                                 score_threshold=args.score_threshold, tile_size=args.tile_size,
                                 batch_size=args.batch_size), update)
    finally:
        if bar is not None:
            bar.close()


def run(args: argparse.Namespace) -> int:
    """Run ``medseg detect``; returns 0, raises :class:`~napari_medseg.errors.MedsegError` on bad input."""
    from .analysis.objects import write_objects_csv
    from .cli import _stem
    from .io.tiff import write_labels_tiff

    out: Path = args.output
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output {out} exists and is not a folder")
    if args.model != "auto":  # a bad model name fails before any file is read
        from .models.registry import resolve_model

        args.model = resolve_model(args.model).path
    out.mkdir(parents=True, exist_ok=True)
    for src in args.inputs:
        path = Path(src)
        t0 = time.perf_counter()
        vols = read_inputs(path)
        stem = _stem(path)
        for i, vol in enumerate(vols):
            name = stem if len(vols) == 1 else f"{stem}_{i}"
            res = _detect_volume(vol, args, name)
            csv = write_objects_csv(out / f"{name}_objects.csv", res.table)
            written = [csv.name]
            if res.labels is not None and res.kind in ("instance", "semantic"):
                scale, _, units = _spatial_geometry(vol)
                lab = write_labels_tiff(out / f"{name}_labels.tif", res.labels,
                                        scale=scale if units is not None else None, units=units, axes=res.axes)
                written.append(lab.name)
            counts = ", ".join(f"{c} {n}" for c, n in res.counts().items())
            print(f"{out / name}: {len(res)} objects ({counts}) -> {' + '.join(written)}; model {res.model_name}, "
                  f"{res.device_reason}, {time.perf_counter() - t0:.1f} s")
    return 0


__all__ = ["HELP", "add_arguments", "add_parser", "read_inputs", "run"]
