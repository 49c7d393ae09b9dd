"""The ``medseg`` command: the same verbs as the napari widgets, for scripts and clusters.

::

    medseg segment IN... -o OUTDIR [--model NAME|PATH] [--device auto|cpu|cuda|mps]
                                   [--tile-size N] [--batch-size N] [--channel N] [--tta] [--3d] [--quiet]
    medseg models
    medseg evaluate --images DIR --masks DIR [--model NAME|PATH | --labels DIR] [-o report.csv]
    medseg train --images A.tif... --labels A_lab.tif... [--base NAME] --mode instance|semantic --out DIR
    medseg detect IN... -o OUTDIR [--model NAME|PATH]
    medseg demo [nuclei|he|mr] [--run]

Exit status: 0 success, 2 bad usage or input (one-line message on stderr, no
traceback), 1 unexpected error (with traceback, please report it), 130
interrupted.  New subcommands register themselves in :data:`COMMANDS`
(``name -> (add_arguments, run)``) so ``evaluate``, ``train`` and ``detect``
slot in without touching the others.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import MedsegError

#: name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


class UsageError(MedsegError):
    """Bad command-line input (exit status 2)."""


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Decorator registering ``run(args) -> int`` as subcommand ``name``."""

    def deco(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, add_arguments, run)
        return run

    return deco


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


# ---------------------------------------------------------------- segment
def _segment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IN", help="TIFF file, DICOM file, DICOM series folder or DICOMDIR")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", type=Path,
                   help="folder for the <input stem>_labels.tif files (created if needed)")
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="model name (see `medseg models`) or folder; default: auto (nuclei-he for RGB, nuclei for grey)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--tile-size", type=_positive_int, default=None, metavar="N",
                   help="largest tile edge in pixels (default 1024 in 2D, 128 in 3D)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N", help="tiles per forward pass")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="use only channel N of multichannel (C axis) images")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over 4 mirror images (~4x slower, slightly better)")
    p.add_argument("--3d", dest="do_3d", action="store_true",
                   help="3D objects in Z stacks from a 2D instance model: predict on planes along Z, Y and X "
                        "(Z resampled to the X/Y pixel size), label in 3D; the stack must fit in memory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".dcm", ".btf"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.is_file() else name


def _spatial(vol) -> tuple[list[float] | None, list[str] | None]:
    world = vol.world_axes
    keep = [i for i, a in enumerate(world) if a in "ZYX"]
    scale = None if vol.scale is None else [float(vol.scale[i]) for i in keep]
    units = None if vol.units is None else [str(vol.units[i]) for i in keep]
    return scale, units


def _segment_volume(vol, args, bar_desc: str):
    """Labels for one volume (looping over T); returns (labels, axes, scale, units, result)."""
    import numpy as np

    from .inference.dispatch import segment_any_iter
    from .progress import run

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
    scale, units = _spatial(vol)
    n_t = data.shape[axes.index("T")] if "T" in axes else 1
    results, labels = [], []
    for t in range(n_t):
        frame, f_axes = data, axes
        if "T" in axes:
            ti = axes.index("T")
            frame = data[(slice(None),) * ti + (t,)]
            f_axes = axes.replace("T", "")
        desc = bar_desc if n_t == 1 else f"{bar_desc} t={t}"
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=1, desc=desc, unit="step", leave=False, file=sys.stderr)

        def update(p, bar=bar):
            if bar is not None:
                bar.total = p.total
                bar.n = p.step
                bar.set_postfix_str(p.message, refresh=False)
                bar.refresh()

        try:
            res = run(segment_any_iter(frame, args.model, axes=f_axes, scale=scale, units=units, device=args.device,
                                   tile_size=args.tile_size, batch_size=args.batch_size,
                                   tta=getattr(args, "tta", False), do_3d=getattr(args, "do_3d", False)), update)
        finally:
            if bar is not None:
                bar.close()
        results.append(res)
        labels.append(res.labels)
    out_axes = "".join(a for a in axes if a in "ZYX")
    if n_t > 1:
        lab = np.stack(labels)
        out_axes = "T" + out_axes
        t_scale = float(vol.scale[vol.world_axes.index("T")]) if vol.scale is not None else 1.0
        t_unit = str(vol.units[vol.world_axes.index("T")]) if vol.units is not None else "s"
        scale = None if scale is None else [t_scale, *scale]
        units = None if units is None else [t_unit, *units]
    else:
        lab = labels[0]
    return lab, out_axes, scale, units, results


@command("segment", "segment images with a U-Net model and write label TIFFs", _segment_args)
def _run_segment(args: argparse.Namespace) -> int:
    from .io import read
    from .io.tiff import write_labels_tiff

    args.output.mkdir(parents=True, exist_ok=True)
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"output {args.output} exists and is not a folder")
    for src in args.inputs:
        path = Path(src)
        t0 = time.perf_counter()
        vols = read(path)
        stem = _stem(path)
        for i, vol in enumerate(vols):
            name = stem if len(vols) == 1 else f"{stem}_{i}"
            lab, axes, scale, units, results = _segment_volume(vol, args, name)
            dest = args.output / f"{name}_labels.tif"
            write_labels_tiff(dest, lab, scale=scale, units=units, axes=axes)
            r = results[-1]
            n_obj = sum(int(x.info.get("n_labels", 0)) for x in results)
            print(f"{dest}: {n_obj} labels, shape {tuple(lab.shape)}, model {r.model_name}, "
                  f"{r.device_reason}, {time.perf_counter() - t0:.1f} s")
    return 0


# ---------------------------------------------------------------- models
def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--paths", action="store_true", help="print only model folders")


@command("models", "list the models available by name", _models_args)
def _run_models(args: argparse.Namespace) -> int:
    from .models.registry import list_models, shipped_models_dir, user_models_dir

    models = list_models()
    if args.paths:
        for m in models:
            print(m.path)
        return 0
    if not models:
        print(f"no models found (shipped: {shipped_models_dir()}, user: {user_models_dir()})")
        return 0
    rows = [("NAME", "SOURCE", "KIND", "INPUT", "PATH")]
    for m in models:
        c = m.card
        ps = c.pixel_size
        inp = f"{c.dims}D {c.input.get('color', '?')} {c.in_channels}ch"
        if ps:
            inp += f" @{'x'.join(f'{p:g}' for p in ps)}{c.input.get('pixel_unit', '')}"
        rows.append((m.name, m.source, c.kind, inp, str(m.path)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


# ---------------------------------------------------------------- main
def _register_subcommand_modules() -> None:
    """Add the subcommands that live in their own modules (imported lazily: cheap ``--help``)."""
    from . import cli_demo, cli_detect, cli_evaluate, cli_train

    for name, mod in (("evaluate", cli_evaluate), ("train", cli_train), ("detect", cli_detect), ("demo", cli_demo)):
        COMMANDS.setdefault(name, (mod.HELP, mod.add_arguments, mod.run))


def build_parser() -> argparse.ArgumentParser:
    _register_subcommand_modules()
    parser = argparse.ArgumentParser(prog="medseg", description="Deep-learning segmentation for microscopy, "
                                     "pathology and radiology images (napari-medseg).")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medseg``; returns the exit status (0 ok, 2 usage/input, 1 unexpected)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 0 for --help/--version, 2 for usage errors
        return int(e.code or 0)
    try:
        return int(args._run(args) or 0)
    except MedsegError as e:
        print(f"medseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("medseg: unexpected error (a bug): please report it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
