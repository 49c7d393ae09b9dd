"""The network and card a fine-tuning run starts from: base model or scratch, class names, new heads.

Part of :mod:`napari_medseg.training.finetune`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import ModelError, ParameterError

MODES = ("instance", "semantic")
#: U-Net of a model trained from scratch.
SCRATCH_ARCH = {"base_channels": 16, "depth": 4, "norm": "batch"}
DEFAULT_NORMALIZATION = {"kind": "percentile", "low": 1.0, "high": 99.8}


def full_class_names(class_names, labels: Sequence[np.ndarray], mode: str) -> list[str]:
    """Full class-name list (background first) for the labels.

    Parameters
    ----------
    class_names : sequence of str, optional
        The user's names of classes 1, 2, ... (a leading ``background`` is dropped).
    labels : sequence of ndarray
        The painted labels (semantic: class ids).
    mode : {"instance", "semantic"}

    Returns
    -------
    list of str
        ``["background", name]`` for instance mode (``object`` by default);
        for semantic mode one name per class up to the highest painted one,
        ``class_N`` where none was given.

    Raises
    ------
    ParameterError
        When the labels use more classes than names were given.
    """
    if mode == "instance":
        names = list(class_names or [])
        return ["background", names[-1] if names else "object"]
    top = max(int(np.max(lab, initial=0)) for lab in labels)
    names = [str(c).strip() for c in (class_names or []) if str(c).strip()]
    if names and names[0].lower() == "background":
        names = names[1:]
    if names and top > len(names):
        raise ParameterError(f"the labels use class {top} but only {len(names)} class name(s) were given: {names}")
    n = max(top, len(names), 1)
    names += [f"class_{i}" for i in range(len(names) + 1, n + 1)]
    return ["background", *names]


def load_base(base, mode: str, channels: int, rgb: bool, n_out: int, seed: int) -> tuple[Any, Any, str | None, bool]:
    """The network to train and a card to start from: a base model, or a new U-Net.

    Parameters
    ----------
    base : None, str or path
        None, ``""``, ``"scratch"`` or ``"none"``: a new U-Net
        (:data:`SCRATCH_ARCH`); else a model name or folder.
    mode : {"instance", "semantic"}
    channels : int
        Input channels of the training images.
    rgb : bool
        Whether they are RGB.
    n_out : int
        Output channels needed (2 for instance; the number of classes for semantic).
    seed : int
        Seed of the initial weights of a new network or head.

    Returns
    -------
    net : torch.nn.Module
        On the CPU; a copy, never a cached inference network.
    card : ModelCard
        The base model's card (a copy), or a scratch card.
    base_label : str or None
        The base model's name (or path); None from scratch.
    head_reinitialised : bool
        Whether the base's head was replaced (other outputs or kind).

    Raises
    ------
    ModelError
        A base model that is 3D, not a segmentation model, or takes other channels.
    """
    import torch

    from ...models.spec import ModelCard, build_network, load_model

    if base is None or (isinstance(base, str) and base.strip().lower() in ("", "scratch", "none")):
        arch = {"type": "unet", "dims": 2, "in_channels": channels, "out_channels": n_out, **SCRATCH_ARCH}
        color = "grey" if channels == 1 else "rgb" if (channels == 3 and rgb) else "multichannel"
        card = ModelCard(name="scratch", architecture=arch,
                         input={"channels": channels, "color": color, "normalization": dict(DEFAULT_NORMALIZATION),
                                "pixel_size": None, "pixel_unit": "µm"},
                         output={"kind": mode, "postprocess": {}})
        torch.manual_seed(seed)
        return build_network(card), card, None, False
    from ...models.registry import resolve_model

    info = resolve_model(base)
    net, card = load_model(info.path, "cpu")  # our own copy: the inference cache's nets are never trained
    card = copy.deepcopy(card)
    label = info.name if info.source != "path" else str(info.path)
    if card.dims != 2:
        raise ModelError(f"base model {info.name!r} is {card.dims}D; fine-tuning trains 2D models (3D data are "
                         "trained slice by slice): choose a 2D base model or train from scratch")
    if card.kind not in MODES:
        raise ModelError(f"base model {info.name!r} is a {card.kind!r} model; choose a segmentation model")
    if card.in_channels != channels:
        what = "RGB" if rgb else f"{channels}-channel" if channels > 1 else "single-channel (grey)"
        raise ModelError(
            f"base model {info.name!r} takes {card.in_channels}-channel ({card.input.get('color', '?')}) images "
            f"but the training images are {what}: choose a matching base model or train from scratch")
    if mode == "instance" and card.kind == "instance" and (card.output.get("representation") or {}).get("kind") \
            == "contour" and n_out == 2:
        # a contour base's first two outputs are foreground and distance: keep them, drop the boundary
        old = net.head
        net.head = type(old)(old.in_channels, 2, 1)
        with torch.no_grad():
            net.head.weight.copy_(old.weight[:2])
            net.head.bias.copy_(old.bias[:2])
        card.architecture = {**card.architecture, "out_channels": 2}
        card.output = {k: v for k, v in card.output.items() if k != "representation"}
        return net, card, label, False
    if int(card.architecture.get("out_channels", 0)) != n_out or card.kind != mode:
        torch.manual_seed(seed)
        old = net.head
        net.head = type(old)(old.in_channels, n_out, 1)  # a new head (same conv kind), other layers kept
        card.architecture = {**card.architecture, "out_channels": n_out}
        return net, card, label, True
    return net, card, label, False


def set_prior_bias(net, samples, n_classes: int) -> None:
    """Start a new semantic head at the painted class frequencies (bias = log frequency).

    Lesions often cover < 1 % of the pixels; starting from uniform class
    probabilities wastes the first of the few hundred steps a CPU budget
    allows on learning that most pixels are background (cf. the prior
    initialisation of focal-loss detectors, Lin et al. 2017).

    Parameters
    ----------
    net : torch.nn.Module
        A network with a ``head`` convolution; its bias is set in place.
    samples : sequence of Sample
        Training samples; pixels with ``weight > 0`` are counted.
    n_classes : int
        Number of classes (background included).
    """
    import torch

    counts = np.zeros(n_classes)
    for s in samples:
        counts += np.bincount(s.labels[s.weight > 0].ravel(), minlength=n_classes)[:n_classes]
    freq = np.clip(counts / max(counts.sum(), 1.0), 1e-3, 1.0)
    with torch.no_grad():
        net.head.bias.copy_(torch.from_numpy(np.log(freq / freq.sum())).to(net.head.bias))


def output_section(base_card, mode: str, names: list[str], postprocess: dict | None = None) -> dict:
    """The ``output`` section of the new model's card.

    Parameters
    ----------
    base_card : ModelCard
        Card of the base model (an instance base's post-processing is kept).
    mode : {"instance", "semantic"}
    names : list of str
        Full class names, background first.
    postprocess : dict, optional
        Semantic mode: the ``output.postprocess`` of the new card
        (:mod:`napari_medseg.inference.classes` keys); default none.

    Returns
    -------
    dict
        ``kind``, ``channels``, ``class_names`` and ``postprocess``.
    """
    from ...inference.instances import DEFAULT_POSTPROCESS

    if mode == "instance":
        pp = dict(base_card.output.get("postprocess") or {}) if base_card.kind == "instance" else {}
        # the new model has foreground + distance outputs: no contour / star keys
        pp = {k: v for k, v in pp.items() if k not in ("boundary_weight", "prob_threshold", "nms_threshold")}
        return {"kind": "instance", "channels": ["foreground", "distance"], "class_names": names,
                "postprocess": {**DEFAULT_POSTPROCESS, **pp}}
    return {"kind": "semantic", "channels": list(names), "class_names": list(names),
            "postprocess": dict(postprocess or {})}
