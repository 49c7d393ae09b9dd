"""int8 ONNX models: static quantisation (QDQ, per-channel int8 weights, uint8 activations) with calibration inputs.

Convolutions of the U-Net need *static* quantisation to run in int8 on the
CPU: activation ranges are measured once, on calibration inputs (normalised
images like those the model will see, e.g. crops of its training images),
and written into the file as quantize/dequantize pairs that ONNX Runtime
fuses into int8 kernels.  Weights are int8 per output channel.  The file is
a drop-in for the float32 one (same input and output, float32).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ...errors import ModelError, ParameterError
from . import require
from .onnx import INPUT_NAME, strip_debug_info

#: Calibration methods ONNX Runtime offers (``minmax``: full observed range; ``percentile``: clips outliers).
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, calibration: Iterable[np.ndarray], *,
                  method: str = "minmax", per_channel: bool = True, percentile: float = 99.999) -> Path:
    """Write an int8 copy of a float32 ONNX file, calibrated on ``calibration`` inputs.

    Parameters
    ----------
    src : path-like
        Float32 ONNX file (:func:`~napari_medseg.models.export.onnx.export_onnx`).
    dst : path-like
        int8 file to write.
    calibration : iterable of ndarray
        Normalised network inputs, float32 ``(C, Y, X)`` or ``(N, C, Y, X)``,
        spatial sizes multiples of the network's divisor (sizes may differ).
    method : {"minmax", "percentile", "entropy"}
        How activation ranges are set from the calibration outputs.
    per_channel : bool
        One weight scale per output channel (more accurate; default).
    percentile : float
        Percentile kept by ``method="percentile"``.

    Returns
    -------
    Path
        ``dst``.

    Raises
    ------
    MissingDependencyError
        onnxruntime is not installed.
    ParameterError
        Unknown method, or no calibration input.
    """
    require("onnxruntime", "int8 quantisation")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ParameterError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    batches = [_batch(a) for a in calibration]
    if not batches:
        raise ParameterError("int8 quantisation needs at least one calibration input (normalised image crops)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    extra = {"CalibPercentile": float(percentile)} if method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="medseg-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, calibrate_method=calib,
                            extra_options=extra)
        except Exception as e:  # onnxruntime raises many kinds  # noqa: BLE001
            raise ModelError(f"int8 quantisation of {src} failed: {type(e).__name__}: {e}") from None
    _copy_metadata(src, dst)
    return dst


def _batch(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ParameterError(f"a calibration input must be (C, Y, X) or (N, C, Y, X), got shape {a.shape}")
    return np.ascontiguousarray(a)


def _copy_metadata(src: str | os.PathLike, dst: Path) -> None:
    """Carry the float32 file's metadata (card, divisor...) into the int8 file, marked ``napari_medseg.int8``;
    drop the debugging annotations quantisation adds."""
    onnx = require("onnx", "int8 quantisation")
    model_src = onnx.load(str(src), load_external_data=False)
    model = onnx.load(str(dst))
    have = {p.key for p in model.metadata_props}
    for p in model_src.metadata_props:
        if p.key not in have:
            entry = model.metadata_props.add()
            entry.key, entry.value = p.key, p.value
    entry = model.metadata_props.add()
    entry.key, entry.value = "napari_medseg.int8", "static QDQ, per-channel int8 weights, uint8 activations"
    strip_debug_info(model)
    onnx.save_model(model, str(dst))


def calibration_crops(images: Sequence[np.ndarray], size: int, divisor: int, *, per_image: int = 1,
                      seed: int = 0) -> list[np.ndarray]:
    """Random square crops of normalised ``(C, Y, X)`` images, each side a multiple of ``divisor`` (at most ``size``).

    Parameters
    ----------
    images : sequence of ndarray, float32 ``(C, Y, X)``
        Normalised images (the card's normalisation applied).
    size : int
        Largest crop side (pixels).
    divisor : int
        The network's divisor.
    per_image : int
        Crops per image.
    seed : int
        Seed of the crop positions.
    """
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        sides = [min(size, s) // divisor * divisor for s in img.shape[1:]]
        if min(sides) < divisor:
            continue
        for _ in range(per_image):
            y0 = int(rng.integers(0, img.shape[1] - sides[0] + 1))
            x0 = int(rng.integers(0, img.shape[2] - sides[1] + 1))
            out.append(np.ascontiguousarray(img[:, y0:y0 + sides[0], x0:x0 + sides[1]], dtype=np.float32))
    return out
