"""Import a BioImage Model Zoo package whose network is napari-medseg's U-Net into a napari-medseg model folder.

What is imported: a local package (folder, ``rdf.yaml`` or ``.zip``;
nothing is downloaded) with ``pytorch_state_dict`` weights whose
architecture is :class:`napari_medseg.models.unet.UNet` (callable ``UNet``,
keyword arguments among its parameters), the state dict loading strictly
into it.  The package's architecture code is never run: the weights are
loaded into our own class (``torch.load(weights_only=True)``).

- Packages napari-medseg exported carry their card under
  ``config.napari_medseg``: it comes back unchanged (thresholds, metrics,
  training data).
- Other packages with such a network get a card made from the rdf.yaml:
  input channels and ``scale_range`` (-> percentile) or ``scale_linear``
  (-> fixed) normalisation; a ``sigmoid`` output with channels
  ``foreground, distance`` is an instance model, a ``softmax`` output a
  semantic one (channel names -> class names).  Anything else
  (``zero_mean_unit_variance``, other postprocessing, other architectures,
  e.g. the zoo's ``UNet2d`` from torch-em or its example) is refused with
  the reason.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..models.export import require
from .package import CONFIG_KEY, reference_output

#: Keyword arguments of napari-medseg's UNet that a package's architecture may set.
UNET_KWARGS = ("in_channels", "out_channels", "dims", "base_channels", "depth", "norm")


def import_bioimageio(source: str | os.PathLike, folder: str | os.PathLike, *, name: str | None = None
                      ) -> tuple[Path, float]:
    """Make a napari-medseg model folder from a BioImage Model Zoo package.

    Parameters
    ----------
    source : path-like
        The package: a folder holding ``rdf.yaml``, the ``rdf.yaml`` itself, or a ``.zip``.
    folder : path-like
        Model folder to write (``model.json`` + ``weights.safetensors``), e.g.
        inside :func:`~napari_medseg.models.registry.user_models_dir` to use it by name.
    name : str, optional
        Model name (default: the card's, or one made from the package's name).

    Returns
    -------
    folder : Path
        The model folder written.
    max_abs_diff : float
        Largest absolute difference between the package's test output and
        what the imported model makes of its test input (normalisation,
        network, activation), or NaN when the package has no test tensors.

    Raises
    ------
    MissingDependencyError
        The ``[export]`` extra is not installed.
    ModelError
        Not a valid model package, remote weights, or a network / processing
        napari-medseg cannot run (the message says which).
    """
    import torch

    from ..models.spec import ModelCard, build_network, save_model

    spec = require("bioimageio.spec", "BioImage Model Zoo import")
    descr = spec.load_description(str(source), format_version="latest")
    if not isinstance(descr, spec.model.v0_5.ModelDescr):
        summary = getattr(descr, "validation_summary", None)
        errors = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors) if summary else ""
        raise ModelError(f"{source}: not a valid BioImage Model Zoo model package{': ' + errors if errors else ''}")
    entry = descr.weights.pytorch_state_dict
    if entry is None:
        have = ", ".join(k for k, v in descr.weights if v is not None)
        raise ModelError(f"{source}: no pytorch_state_dict weights (it has: {have}); napari-medseg imports U-Nets "
                         "from their PyTorch state dict")
    kwargs = _unet_kwargs(entry.architecture, source)
    stored = _stored_card(descr)
    card = ModelCard.from_dict(stored or _card_from_rdf(descr, kwargs, source), f"in {source}")
    arch = {k: v for k, v in card.architecture.items() if k != "type"}
    if any(arch.get(k) != v for k, v in kwargs.items()):
        raise ModelError(f"{source}: the architecture kwargs {kwargs} differ from its napari-medseg card {arch}")
    if name is not None:
        card.name = name
    if str(entry.source).startswith(("http://", "https://")):
        raise ModelError(f"{source}: its weights are at {entry.source}; napari-medseg downloads nothing: "
                         "download the package (.zip) and import that")
    state = torch.load(io.BytesIO(entry.get_reader().read()), map_location="cpu", weights_only=True)
    net = build_network(card)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{source}: its state dict does not fit napari-medseg's UNet{kwargs}: {e}") from None
    net.eval()
    diff = _check_test_tensors(descr, net, card)
    return save_model(folder, net, card), diff


def _unet_kwargs(arch: Any, source: Any) -> dict[str, Any]:
    callable_name = str(arch.callable)
    kwargs = dict(arch.kwargs or {})
    where = getattr(arch, "import_from", None) or getattr(arch, "source", "")
    extra = sorted(set(kwargs) - set(UNET_KWARGS))
    if callable_name != "UNet" or extra:
        raise ModelError(f"{source}: its network ({callable_name} from {where}"
                         f"{', kwargs ' + ', '.join(extra) if extra else ''}) is not napari-medseg's UNet; "
                         f"napari-medseg imports only UNet(" + ", ".join(UNET_KWARGS) + ") packages")
    return kwargs


def _stored_card(descr: Any) -> dict | None:
    config = descr.config
    extra = getattr(config, "model_extra", None) or {}
    card = extra.get(CONFIG_KEY) if isinstance(extra, dict) else None
    if card is None and hasattr(config, CONFIG_KEY):
        card = getattr(config, CONFIG_KEY)
    return dict(card) if isinstance(card, dict) else None


def _card_from_rdf(descr: Any, kwargs: dict[str, Any], source: Any) -> dict:
    from ..models.spec import FORMAT

    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise ModelError(f"{source}: {len(descr.inputs)} inputs / {len(descr.outputs)} outputs; "
                         "napari-medseg runs one-input, one-output U-Nets")
    ipt, out = descr.inputs[0], descr.outputs[0]
    ch_in = next((a for a in ipt.axes if a.type == "channel"), None)
    ch_out = next((a for a in out.axes if a.type == "channel"), None)
    n_in = len(ch_in.channel_names) if ch_in is not None else 1
    names = [str(n) for n in ch_out.channel_names] if ch_out is not None else ["class0"]
    arch = {"type": "unet", "dims": 2, "in_channels": n_in, "out_channels": len(names), **kwargs}
    post = [p.id for p in out.postprocessing if p.id != "ensure_dtype"]
    if post == ["sigmoid"] and names == ["foreground", "distance"]:
        output = {"kind": "instance", "channels": names, "class_names": ["background", "object"],
                  "postprocess": {"fg_threshold": 0.5, "seed_threshold": 0.4, "min_size": 16}}
    elif post == ["softmax"]:
        output = {"kind": "semantic", "class_names": names, "postprocess": {}}
    else:
        raise ModelError(f"{source}: output postprocessing {post or 'none'} with channels {names}: napari-medseg "
                         "runs sigmoid (foreground, distance) or softmax (classes) outputs")
    model_name = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(descr.name)).strip("-._+")[:64] or "imported"
    return {"format": FORMAT, "name": model_name, "description": str(descr.description), "architecture": arch,
            "input": {"channels": n_in, "color": "rgb" if n_in == 3 else ("grey" if n_in == 1 else "multichannel"),
                      "normalization": _normalization(ipt.preprocessing, source), "pixel_size": None,
                      "pixel_unit": "px"},
            "output": output,
            "training": {"data": "; ".join(c.text for c in descr.cite), "imported_from": str(source)},
            "metrics": {}}


def _normalization(steps: Any, source: Any) -> dict[str, Any]:
    ops = [p for p in steps if p.id != "ensure_dtype"]
    if not ops:
        return {"kind": "none"}
    if len(ops) == 1 and ops[0].id == "scale_range":
        k = ops[0].kwargs
        if k.axes is not None and sorted(map(str, k.axes)) != ["x", "y"]:
            raise ModelError(f"{source}: scale_range over axes {list(map(str, k.axes))}; napari-medseg normalises "
                             "each channel over y and x")
        return {"kind": "percentile", "low": float(k.min_percentile), "high": float(k.max_percentile)}
    if len(ops) == 1 and ops[0].id == "scale_linear":
        k = ops[0].kwargs
        gain, offset = float(np.ravel(k.gain)[0]), float(np.ravel(k.offset)[0])
        return {"kind": "fixed", "low": -offset / gain, "high": (1.0 - offset) / gain}
    raise ModelError(f"{source}: input preprocessing {[p.id for p in ops]}; napari-medseg knows scale_range "
                     "(percentiles) and scale_linear (fixed limits)")


def _check_test_tensors(descr: Any, net: Any, card: Any) -> float:
    spec_utils = require("bioimageio.spec.utils", "BioImage Model Zoo import")
    ipt, out = descr.inputs[0].test_tensor, descr.outputs[0].test_tensor
    if ipt is None or out is None:
        return float("nan")
    x = np.asarray(spec_utils.load_array(ipt), dtype=np.float32)
    want = np.asarray(spec_utils.load_array(out), dtype=np.float32)
    got = reference_output(net, card, x)
    if got.shape != want.shape:
        raise ModelError(f"the imported model makes {got.shape} of the package's test input, its test output is "
                         f"{want.shape}")
    return float(np.max(np.abs(got - want)))
