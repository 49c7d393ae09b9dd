"""A CNN classifier: the U-Net's encoder with a pooled head, so it can start from any U-Net we ship.

The encoder is exactly :class:`~napari_medseg.models.unet.UNet`'s down path
(``down.{i}``: two 3x3 convolutions, normalisation and ReLU per level, 2x max
pooling between levels), so its weights load from a segmentation model of the
same ``base_channels``/``norm``/``in_channels`` (transfer learning from the
nuclei models to cells, from one classifier to another).  The head is global
average pooling, dropout and one linear layer giving class logits; softmax of
``logits / temperature`` (the card's calibration) gives the probabilities.
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import ConvBlock


class EncoderClassifier(nn.Module):
    """CNN classifier for 2D or 3D patches.

    Parameters
    ----------
    in_channels : int
        1 grey, 3 RGB, n multichannel.
    n_classes : int
        Number of classes (>= 2).
    dims : {2, 3}
    base_channels : int
        Channels of the first level; doubled at each level down.
    depth : int
        Resolution levels (>= 2); the patch edge is divided by ``2 ** (depth - 1)``.
    norm : {"batch", "instance", "group", "none"}
    dropout : float
        Dropout before the linear head (training only).
    """

    def __init__(self, in_channels: int = 3, n_classes: int = 2, dims: int = 2, base_channels: int = 16,
                 depth: int = 5, norm: str = "batch", dropout: float = 0.2) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.dims, self.depth = dims, depth
        chs = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chs:
            self.down.append(ConvBlock(dims, cin, c, norm))
            cin = c
        self.pool = (nn.MaxPool2d if dims == 2 else nn.MaxPool3d)(2)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(chs[-1], n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last encoder level's feature maps, ``(N, C, *spatial / 2**(depth-1))`` (Grad-CAM's target)."""
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth - 1:
                x = self.pool(x)
        return x

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, n_classes)`` from :meth:`features`."""
        pooled = feats.mean(dim=tuple(range(2, feats.ndim)))
        return self.fc(self.drop(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.head(self.features(x))


def load_encoder(net: EncoderClassifier, state: dict[str, torch.Tensor]) -> int:
    """Copy a U-Net's (or classifier's) encoder weights (``down.*``) into ``net``; returns tensors copied.

    Tensors whose shapes differ (another ``in_channels`` at the first level,
    a deeper level the source lacks) are left as initialised.
    """
    own = net.state_dict()
    copied = {k: v for k, v in state.items() if k.startswith("down.") and k in own and own[k].shape == v.shape}
    own.update(copied)
    net.load_state_dict(own)
    return len(copied)


__all__ = ["EncoderClassifier", "load_encoder"]
