"""Random-weight models for tests and benchmarks (no training, no download)."""

from __future__ import annotations

import os
from pathlib import Path

from .spec import ModelCard, save_model


def make_random_model(
    folder: str | os.PathLike,
    *,
    name: str = "tiny",
    in_channels: int = 1,
    dims: int = 2,
    kind: str = "instance",
    n_classes: int = 2,
    base_channels: int = 4,
    depth: int = 2,
    seed: int = 0,
    norm: str = "batch",
    pixel_size: list[float] | None = None,
    postprocess: dict | None = None,
) -> Path:
    """Write a model with random (seeded) weights and a valid card into ``folder``.

    Parameters
    ----------
    folder : path
        Model folder to create (``model.json`` + ``weights.safetensors``).
    name : str
        Card name.
    in_channels : int
        1 (grey, ``color="grey"``), 3 (``color="rgb"``) or more (``multichannel``).
    dims : {2, 3}
        Spatial dimensionality.
    kind : {"instance", "semantic"}
        ``instance``: 2 output channels (foreground logit, distance logit);
        ``semantic``: ``n_classes`` logits, class 0 background.
    n_classes : int
        Number of classes for ``semantic``.
    base_channels, depth, norm
        U-Net size (see :class:`~napari_medseg.models.unet.UNet`).
    seed : int
        Seed of the weight initialisation (same seed, same weights).
    pixel_size : list of float, optional
        Pixel size the model pretends to be trained at (µm), None = scale-free.
    postprocess : dict, optional
        ``output.postprocess`` of the card.

    Returns
    -------
    Path
        The model folder.
    """
    import torch

    from .unet import UNet

    if kind not in ("instance", "semantic"):
        raise ValueError(f"kind must be 'instance' or 'semantic', got {kind!r}")
    out_channels = 2 if kind == "instance" else int(n_classes)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = UNet(in_channels, out_channels, dims=dims, base_channels=base_channels, depth=depth, norm=norm)
    finally:
        torch.random.set_rng_state(gen_state)
    color = "grey" if in_channels == 1 else "rgb" if in_channels == 3 else "multichannel"
    output: dict = {"kind": kind, "postprocess": dict(postprocess or {})}
    if kind == "instance":
        output["channels"] = ["foreground", "distance"]
        output["class_names"] = ["background", "object"]
    else:
        output["channels"] = [f"class_{i}" for i in range(out_channels)]
        output["class_names"] = ["background", *[f"class_{i}" for i in range(1, out_channels)]]
    card = ModelCard(
        name=name,
        description="random weights, for tests only",
        architecture={"type": "unet", "dims": dims, "in_channels": in_channels, "out_channels": out_channels,
                      "base_channels": base_channels, "depth": depth, "norm": norm},
        input={"channels": in_channels, "color": color,
               "normalization": {"kind": "percentile", "low": 1.0, "high": 99.8},
               "pixel_size": None if pixel_size is None else [float(p) for p in pixel_size], "pixel_unit": "µm"},
        output=output,
        training={"data": "none (random weights)", "seed": seed},
    )
    return save_model(folder, net, card)
