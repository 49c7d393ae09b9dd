"""``medseg segment``: label TIFFs for a batch of images.

::

    medseg segment IN... -o OUTDIR [--model NAME|PATH] [--device auto|cpu|cuda|mps]
                                   [--tile-size N] [--batch-size N] [--channel N] [--tta] [--3d]
                                   [--kind KIND] [--voxel-size Z Y X [--unit um]] [--diameter D]
                                   [--prob-threshold F] [--seed-threshold F] [--quiet]

For every input image this writes ``OUTDIR/<stem>_labels.tif`` with the
input's pixel size; a file holding several images (a DICOM folder with
several series) gives ``<stem>_0``, ``<stem>_1``...  Time series are
segmented frame by frame.

The knobs Cellpose and StarDist users expect: ``--voxel-size`` for files
that carry no pixel size (so ``--3d`` knows the Z step and physical models
see the right scale; the labels are written with it), ``--diameter`` (the
objects' size: the image is resampled to the size the model was trained
on, its card's ``typical_object_diameter_px``), ``--prob-threshold`` and
``--seed-threshold`` (the card's ``output.postprocess`` ``fg_threshold`` and
``seed_threshold``).  The values used are printed with each output.  Inputs sharing a stem
(``a/same.tif b/same.tif``) give ``same`` and ``same_2``.  Every input and the output folder are
checked before the first image is segmented.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from .common import (
    Command,
    UsageError,
    add_kind_argument,
    check_inputs,
    drain,
    engine_scale,
    fraction,
    labels_geometry,
    length_or_pixels,
    path_arg,
    positive_float,
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
                   help="model name (see `medseg models`) or folder; default: auto (nuclei-he for RGB, nuclei for "
                        "grey, a model made for --kind when given; radiology images need a model made for them)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--tile-size", type=positive_int, default=None, metavar="N",
                   help="largest tile edge in pixels (default 2048 for 2D models on the CPU, else 1024 in 2D, "
                        "128 in 3D)")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="network arithmetic (auto: bfloat16 on GPUs and on CPUs with native BF16, else float32)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                   help="what runs the network (auto: torch; onnxruntime: CPU, float32, needs "
                        "pip install \"napari-medseg[export]\")")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help="tiles per forward pass")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="use only channel N of multichannel (C axis) images")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over 4 mirror images (~4x slower, slightly better)")
    p.add_argument("--3d", dest="do_3d", action="store_true",
                   help="3D objects in Z stacks from a 2D instance model: predict on planes along Z, Y and X "
                        "(Z resampled to the X/Y pixel size), label in 3D; the stack must fit in memory")
    add_kind_argument(p)
    knobs = p.add_argument_group("object size, pixel size and thresholds (default: the model card's; "
                                 "`medseg models` lists them)")
    knobs.add_argument("--voxel-size", "--scale", dest="voxel_size", nargs="+", type=positive_float, default=None,
                       metavar="S", help="pixel size per spatial axis, Z Y X (or Y X; one value: all axes), in "
                                         "--unit, for files that carry none (a TIFF without metadata); replaces a "
                                         "microscopy file's own; --3d uses it for the Z/XY ratio")
    knobs.add_argument("--unit", default="µm", metavar="U", help="unit of --voxel-size (default µm; nm, mm...)")
    knobs.add_argument("--diameter", type=length_or_pixels, default=None, metavar="D",
                       help="typical object diameter: pixels (12, 12px) or a length (6um, needs the pixel size); "
                            "the image is resampled so objects match the diameter the model was trained on")
    knobs.add_argument("--prob-threshold", type=fraction, default=None, metavar="F",
                       help="foreground probability above which a pixel is in an object; lower finds more and "
                            "larger objects")
    knobs.add_argument("--seed-threshold", type=fraction, default=None, metavar="F",
                       help="normalised distance to the object's edge that seeds one object (0 edge, 1 centre); "
                            "higher splits touching objects more, lower less")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _apply_voxel_size(vol: Any, args: argparse.Namespace, desc: str) -> None:
    """Give ``vol`` the ``--voxel-size`` (its Z/Y/X scale and units); T keeps its own."""
    import sys

    from ..geometry import is_length, normalize_unit

    sizes = args.voxel_size
    if sizes is None:
        return
    unit = normalize_unit(args.unit)
    if not is_length(unit):
        raise UsageError(f"--unit {args.unit!r} is not a length unit (µm, nm, mm...)")
    if vol.frame is not None or vol.affine is not None:
        raise UsageError(f"{desc}: a radiology volume carries its voxel spacing in its header "
                         f"({', '.join(f'{v:g}' for v in vol.spatial_geometry().spacing)} mm); --voxel-size is for "
                         "files that carry none")
    spatial = [a for a in vol.world_axes if a in "ZYX"]
    if len(sizes) == 1:
        sizes = sizes * len(spatial)
    if len(sizes) != len(spatial):
        raise UsageError(f"{desc}: --voxel-size has {len(sizes)} values for the {len(spatial)} spatial axes "
                         f"{''.join(spatial)} of this image")
    if vol.spatial_geometry().calibrated:
        g = vol.spatial_geometry()
        print(f"medseg segment: note: {desc} has its own pixel size "
              f"({' x '.join(f'{v:g}' for v in g.spacing)} {g.length_unit}); --voxel-size replaces it", file=sys.stderr)
    old_scale = list(vol.scale) if vol.scale is not None else [1.0] * len(vol.world_axes)
    old_units = list(vol.units) if vol.units is not None else ["s" if a == "T" else "pixel" for a in vol.world_axes]
    it = iter(sizes)
    vol.scale = tuple(float(next(it)) if a in "ZYX" else float(sc) for a, sc in zip(vol.world_axes, old_scale,
                                                                                     strict=True))
    vol.units = tuple(unit if a in "ZYX" else u for a, u in zip(vol.world_axes, old_units, strict=True))


def _segment_volume(vol: Any, args: argparse.Namespace, bar_desc: str):
    """Labels for one volume (looping over T); returns (labels, axes, results)."""
    import numpy as np

    from ..inference.dispatch import segment_any_iter
    from ..models.kinds import kind_of_volume

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
    kind = getattr(args, "kind", None) or kind_of_volume(vol)
    extra: dict[str, Any] = {}
    if getattr(args, "diameter", None) is not None:
        from ..inference.prepare import diameter_in_pixels

        extra["diameter"] = diameter_in_pixels(*args.diameter, scale, units)
    pp = {k: v for k, v in (("fg_threshold", getattr(args, "prob_threshold", None)),
                            ("seed_threshold", getattr(args, "seed_threshold", None))) if v is not None}
    if pp:
        extra["postprocess"] = pp
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
                                 precision=getattr(args, "precision", "auto"), backend=getattr(args, "backend", "auto"),
                                 tta=getattr(args, "tta", False), do_3d=getattr(args, "do_3d", False),
                                 image_kind=kind, **extra),
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


def _settings(res: Any) -> str:
    """``" (prob 0.5, seed 0.4, zoom 1.25)"``: the thresholds and resampling a run used."""
    info = res.info or {}
    pp = info.get("postprocess") or {}
    parts = [f"{name} {pp[k]:g}" for k, name in (("fg_threshold", "prob"), ("seed_threshold", "seed")) if k in pp]
    if info.get("seed_threshold_3d") is not None:
        parts.append(f"3D seed {info['seed_threshold_3d']:.3g}")
    zoom = info.get("zoom")
    if info.get("resampled") and zoom:
        parts.append("zoom " + "x".join(f"{z:.3g}" for z in zoom))
    return f" ({', '.join(parts)})" if parts else ""


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
            _apply_voxel_size(vol, args, name)
            lab, axes, results = _segment_volume(vol, args, name)
            dest = write_labels_like(args.output / f"{name}_labels", lab, axes, labels_geometry(vol, axes))
            r = results[-1]
            n_obj = sum(int(x.info.get("n_labels", 0)) for x in results)
            print(f"{dest}: {n_obj} labels, shape {tuple(lab.shape)}, model {r.model_name}{_settings(r)}, "
                  f"{r.device_reason}, {time.perf_counter() - t0:.1f} s")
    return 0


COMMAND = Command("segment", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "run"]
