"""``medseg export``: a model as an ONNX file (float32 or int8) or a BioImage Model Zoo package.

::

    medseg export MODEL --format onnx -o nuclei.onnx [--check IMAGE...]
    medseg export MODEL --format onnx --int8 --calibrate TRAIN_IMAGES... -o nuclei.int8.onnx
    medseg export MODEL --format bioimageio -o nuclei.zip [--sample IMAGE] [--test]

The ONNX file is checked against the torch network on real images (the
shipped sample, or ``--check`` images) and the largest absolute difference of
the raw outputs is printed.  Needs the ``[export]`` extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import Command, UsageError, check_inputs, check_output_file, path_arg, positive_int

HELP = "export a model as ONNX (float32 or int8) or as a BioImage Model Zoo package"

#: Largest calibration / check crop side (pixels).
CROP = 256


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``export`` options to ``p``."""
    p.add_argument("model", metavar="MODEL", help="model name (see `medseg models`) or model folder")
    p.add_argument("--format", required=True, choices=["onnx", "bioimageio"],
                   help="onnx: one .onnx file, dynamic batch and size; bioimageio: a zoo package (.zip, or a folder)")
    p.add_argument("-o", "--output", required=True, type=path_arg, metavar="PATH",
                   help="file to write (.onnx; .zip for bioimageio, any other name makes a package folder)")
    p.add_argument("--int8", action="store_true",
                   help="onnx: quantise to int8 (static, per-channel weights), calibrated on --calibrate images")
    p.add_argument("--calibrate", nargs="+", type=path_arg, default=None, metavar="IMAGE",
                   help="--int8: images (or folders of images) like those the model will see, e.g. its training "
                        "images (default: the shipped sample image only)")
    p.add_argument("--check", nargs="+", type=path_arg, default=None, metavar="IMAGE",
                   help="onnx: images to compare the file with the torch network on (default: the shipped sample)")
    p.add_argument("--sample", type=path_arg, default=None, metavar="IMAGE",
                   help="bioimageio: image for the test tensors and the cover (default: the shipped sample)")
    p.add_argument("--test", action="store_true",
                   help="bioimageio: also run bioimageio.core's test_model on the package (every weight format)")
    p.add_argument("--opset", type=positive_int, default=None, metavar="N", help="ONNX opset (default 18)")


def run(args: argparse.Namespace) -> int:
    """Run ``medseg export``; returns 0."""
    if args.format == "bioimageio" and (args.int8 or args.calibrate or args.check):
        raise UsageError("--int8, --calibrate and --check go with --format onnx")
    if args.format == "onnx" and (args.sample or args.test):
        raise UsageError("--sample and --test go with --format bioimageio")
    if args.calibrate and not args.int8:
        raise UsageError("--calibrate goes with --int8")
    if args.format == "onnx" or args.output.suffix == ".zip":
        check_output_file(args.output)
    for opt in ("calibrate", "check"):
        if getattr(args, opt):
            check_inputs(getattr(args, opt), f"--{opt}")
    if args.sample:
        check_inputs([args.sample], "--sample")

    from ..api import load_model

    net, card = load_model(args.model)
    return _onnx(args, net, card) if args.format == "onnx" else _bioimageio(args, net, card)


def _onnx(args: argparse.Namespace, net: Any, card: Any) -> int:
    import tempfile

    from ..inference.normalize import normalized_channels_first
    from ..models.export.onnx import DEFAULT_OPSET, export_onnx
    from ..models.export.quantize import calibration_crops, quantize_onnx

    opset = args.opset or DEFAULT_OPSET
    d = int(net.divisor)
    norm = card.input.get("normalization")
    if not args.int8:
        export_onnx(net, args.output, in_channels=card.in_channels, dims=card.dims, opset=opset, card=card)
    else:
        images = [normalized_channels_first(a, norm) for a in _images(args.calibrate, card)]
        crops = calibration_crops(images, CROP, d, per_image=1 if args.calibrate else 8, seed=0)
        if not args.calibrate:
            print("medseg export: calibrating on the shipped sample only; give --calibrate with images like "
                  "your own (e.g. the training images) for the best int8 accuracy")
        with tempfile.TemporaryDirectory(prefix="medseg-export-") as tmp:
            f32 = export_onnx(net, Path(tmp) / "float32.onnx", in_channels=card.in_channels, dims=card.dims,
                              opset=opset, card=card)
            quantize_onnx(f32, args.output, crops)
        print(f"calibrated on {len(crops)} crop(s) of {len(images)} image(s)")
    raw, prob, n = _check(args.output, net, card, [normalized_channels_first(a, norm) for a in _images(args.check, card)])
    what = "probabilities (sigmoid)" if card.kind == "instance" else "probabilities (softmax)"
    print(f"checked against torch on {n} real image(s): max abs difference {raw:.3g} (raw outputs), "
          f"{prob:.3g} ({what})")
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size / 1e6:.2f} MB, {'int8' if args.int8 else 'float32'}, opset {opset}, "
          f"input 'input' (batch, {card.in_channels}, y, x) float32 normalised as "
          f"{(norm or {}).get('kind', 'none')}; y and x multiples of {d})")
    return 0


def _bioimageio(args: argparse.Namespace, net: Any, card: Any) -> int:
    from ..zoo.package import export_bioimageio

    sample = _images([args.sample], card)[0] if args.sample else None
    out = export_bioimageio(net, card, args.output, sample=sample, opset=args.opset or 18)
    print(f"wrote {out}: validated by bioimageio.spec (rdf.yaml, weights pytorch_state_dict + torchscript + onnx, "
          "test tensors, cover, README)")
    if args.test:
        from ..models.export import require

        core = require("bioimageio.core", "Testing a BioImage Model Zoo package")
        summary = core.test_model(str(out / "rdf.yaml" if out.is_dir() else out))
        for d in summary.details:
            if d.status != "passed" or d.name.startswith("Reproduce"):
                print(f"  {d.status}: {d.name}" + "".join(f"\n    {e.msg}" for e in d.errors))
        print(f"bioimageio.core test_model: {summary.status}")
        return 0 if summary.status == "passed" else 1
    return 0


def _images(paths: list[Path] | None, card: Any) -> list[Any]:
    """Images as ``(Y, X)`` or ``(Y, X, C)`` arrays fitting the model; the shipped sample without ``paths``."""
    import numpy as np

    from ..errors import ReaderError
    from ..io.picture import PICTURE_SUFFIXES
    from ..io.samples import HE_IMAGE, NUCLEI_IMAGE, sample_path
    from .common import read_inputs

    if not paths:
        paths = [sample_path(HE_IMAGE if card.in_channels == 3 else NUCLEI_IMAGE)]
    files: list[Path] = []
    for p in paths:
        files += sorted(f for f in p.iterdir() if f.suffix.lower() in (*PICTURE_SUFFIXES, ".tif", ".tiff")) \
            if p.is_dir() else [p]
    out = []
    for f in files:
        for vol in read_inputs(f):
            a = np.asarray(vol.data)
            axes = vol.axes.upper()
            if axes not in ("YX", "YXS", "YXC"):
                raise ReaderError(f"{f}: axes {vol.axes!r}; export checks and calibration take 2D images (YX or YXS)")
            if card.in_channels == 1 and a.ndim == 3:
                from skimage.color import rgb2gray

                a = (rgb2gray(a[..., :3]) * 255).astype(np.float32)
            if card.in_channels > 1 and (a.ndim != 3 or a.shape[-1] < card.in_channels):
                raise ReaderError(f"{f}: model {card.name!r} takes {card.in_channels}-channel images, "
                                  f"this one has shape {a.shape}")
            out.append(a[..., :card.in_channels] if a.ndim == 3 else a)
    if not out:
        raise ReaderError(f"no images found in {', '.join(map(str, paths))}")
    return out


def _check(path: Path, net: Any, card: Any, images: list[Any]) -> tuple[float, float, int]:
    """Largest ``|onnx - torch|`` over whole images: raw outputs and activated ones."""
    import numpy as np

    from ..inference.predictor import predict_whole
    from ..models.export.onnx import onnx_network

    onnx_net = onnx_network(path)
    act = "sigmoid" if card.kind == "instance" else "softmax"
    raw = prob = 0.0
    for x in images:
        a, b = predict_whole(net, x), predict_whole(onnx_net, x)
        raw = max(raw, float(np.max(np.abs(a - b))))
        pa, pb = predict_whole(net, x, activation=act), predict_whole(onnx_net, x, activation=act)
        prob = max(prob, float(np.max(np.abs(pa - pb))))
    return raw, prob, len(images)


COMMAND = Command("export", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "run"]
