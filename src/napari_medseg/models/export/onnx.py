"""Export a napari-medseg network to ONNX with a dynamic batch and spatial size, and run/check it.

The file takes ``(N, C, Y, X)`` (2D) or ``(N, C, Z, Y, X)`` (3D) float32 and
returns the network's raw outputs (logits / regressions, same spatial size),
exactly as the torch network does; each spatial size must be a multiple of
the U-Net's divisor (``2 ** (depth - 1)``, 8 for the shipped models), as in
torch.  Normalisation is *not* in the graph: apply the card's
``input.normalization`` first (:func:`napari_medseg.inference.normalize`);
the card travels inside the file as metadata (``napari_medseg.card``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ModelError
from . import require

#: Opset written by default (ONNX Runtime >= 1.14 runs it; the torch exporter's native level).
DEFAULT_OPSET = 18
#: Input and output names inside the file.
INPUT_NAME = "input"
OUTPUT_NAME = "output"
#: Metadata key holding the model card as JSON.
CARD_KEY = "napari_medseg.card"


def export_onnx(net: Any, path: str | os.PathLike, *, in_channels: int, dims: int, opset: int = DEFAULT_OPSET,
                card: Any = None, example_size: int | None = None) -> Path:
    """Write ``net`` as an ONNX file whose batch and spatial sizes are dynamic.

    Parameters
    ----------
    net : torch.nn.Module
        The network (e.g. from :func:`napari_medseg.load_model`); exported
        on CPU in eval mode, itself left unchanged.
    path : path-like
        ONNX file to write (parent folders are created; an existing file is replaced).
    in_channels : int
        Input channels ``C``.
    dims : {2, 3}
        Spatial dimensions: input ``(N, C, Y, X)`` or ``(N, C, Z, Y, X)``.
    opset : int
        ONNX opset version (default :data:`DEFAULT_OPSET`).
    card : ModelCard, optional
        Model card stored in the file's metadata (key :data:`CARD_KEY`), so
        normalisation and output meaning travel with it.
    example_size : int, optional
        Spatial size of the tracing example (default: 4 x the network's divisor).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    MissingDependencyError
        onnx / onnxscript are not installed (``pip install "napari-medseg[export]"``).
    ModelError
        Bad ``dims`` / ``in_channels``, or the exporter failed.
    """
    import torch

    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
    if dims not in (2, 3):
        raise ModelError(f"export_onnx: dims must be 2 or 3, got {dims!r}")
    if int(in_channels) < 1:
        raise ModelError(f"export_onnx: in_channels must be >= 1, got {in_channels!r}")
    path = Path(path)
    divisor = int(getattr(net, "divisor", 8))
    size = int(example_size or 4 * divisor)
    example = torch.zeros((2, int(in_channels), *([size] * dims)), dtype=torch.float32)
    dynamic = {0: torch.export.Dim.DYNAMIC, **{2 + i: torch.export.Dim.DYNAMIC for i in range(dims)}}
    was_training = net.training
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    net = net.to("cpu").eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=(dynamic,), opset_version=opset,
                                        verbose=False, optimize=True, external_data=False)
    except Exception as e:  # the exporter raises many kinds  # noqa: BLE001
        raise ModelError(f"ONNX export of the network failed: {type(e).__name__}: {e}") from None
    finally:
        net.to(device).train(was_training)
    model = program.model_proto
    _name_dims(model, ["batch", *("z", "y", "x")[3 - dims:]])
    meta = {"napari_medseg.dims": str(dims), "napari_medseg.in_channels": str(int(in_channels)),
            "napari_medseg.divisor": str(divisor)}
    if card is not None:
        meta[CARD_KEY] = json.dumps(card.to_dict() if hasattr(card, "to_dict") else card)
    strip_debug_info(model)
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    _save(model, path)
    return path


def strip_debug_info(model: Any) -> None:
    """Drop what only debugging needs from an ONNX model in place: per-node metadata (the torch exporter's stack
    traces and module paths), doc strings and intermediate shape annotations (ONNX Runtime infers them again).

    About 40 kB of a 0.5 MB model; in an int8 file it is the difference between 0.39 and 0.33 of the float32 size.
    """
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]


def _name_dims(model: Any, names: list[str]) -> None:
    """Rename the exporter's symbolic sizes (``s77``...) of the input's dynamic axes to ``batch``, ``y``, ``x``..."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dynamic = [i for i, d in enumerate(dims) if d.dim_param]
    rename = {dims[i].dim_param: names[k] for k, i in enumerate(dynamic[: len(names)])} if len(dynamic) == len(
        names) else {}
    if not rename:
        return
    for info in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for d in info.type.tensor_type.shape.dim:
            if d.dim_param in rename:
                d.dim_param = rename[d.dim_param]


def _save(model: Any, path: Path) -> None:
    onnx = require("onnx", "ONNX export")
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(model, str(tmp))
    onnx.checker.check_model(str(tmp))
    tmp.replace(path)


class _quiet_exporter:
    """Silence the torch exporter's log lines (torchvision ops skipped, progress marks)."""

    def __enter__(self):
        self._loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        for lg, level in zip(self._loggers, self._levels, strict=True):
            lg.setLevel(level)
        return False


def onnx_session(path: str | os.PathLike, *, threads: int | None = None):
    """An ONNX Runtime CPU session for an exported file.

    Parameters
    ----------
    path : path-like
        ONNX file.
    threads : int, optional
        Intra-op threads (default: ONNX Runtime's choice).

    Returns
    -------
    onnxruntime.InferenceSession
    """
    ort = require("onnxruntime", "Running an ONNX model")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types  # noqa: BLE001
        raise ModelError(f"{path}: ONNX Runtime cannot load the file: {e}") from None


def run_onnx(session: Any, x: np.ndarray) -> np.ndarray:
    """Run an ONNX session on one float32 batch.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        From :func:`onnx_session`.
    x : ndarray, float32, ``(N, C, Y, X)`` or ``(N, C, Z, Y, X)``
        Normalised input, spatial sizes multiples of the divisor.

    Returns
    -------
    ndarray, float32
        The network's raw output ``(N, out_channels, ...)``.
    """
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def read_card(path: str | os.PathLike) -> dict[str, Any] | None:
    """The model card stored in an exported ONNX file's metadata, or None if it carries none."""
    ort = require("onnxruntime", "Reading an ONNX model")
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return json.loads(meta[CARD_KEY]) if CARD_KEY in meta else None


def onnx_network(path: str | os.PathLike, *, threads: int | None = None):
    """An exported ONNX file as a CPU ``torch.nn.Module`` (ONNX Runtime inside), for code that takes a network.

    It takes and returns what the torch network does (float32 ``(N, C, ...)``
    -> raw outputs) and has the network's ``divisor``, so
    :func:`napari_medseg.inference.predictor.predict_whole` and benchmarks
    can run the float32 or int8 file in place of the torch network.  Gradients
    do not flow through it.

    Parameters
    ----------
    path : path-like
        ONNX file written by :func:`export_onnx` (or quantised from one).
    threads : int, optional
        ONNX Runtime intra-op threads.
    """
    import torch

    session = onnx_session(path, threads=threads)
    meta = session.get_modelmeta().custom_metadata_map

    class OnnxNetwork(torch.nn.Module):
        """A network run by ONNX Runtime (CPU)."""

        def __init__(self) -> None:
            super().__init__()
            self.session = session
            self.path = Path(path)
            self.divisor = int(meta.get("napari_medseg.divisor", 8))
            # one empty parameter: code that asks a network for its device gets the CPU
            self.register_parameter("_device_marker", torch.nn.Parameter(torch.empty(0), requires_grad=False))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
            return torch.from_numpy(run_onnx(self.session, x.detach().cpu().float().contiguous().numpy()))

    return OnnxNetwork().eval()
