"""A plain, configurable U-Net for 2D and 3D images (PyTorch).

Input ``(N, C, Y, X)`` or ``(N, C, Z, Y, X)`` float32; each spatial size must be
divisible by ``2 ** (depth - 1)`` (the tiler pads for you).  Output has the
same spatial size and ``out_channels`` channels of raw logits/regressions; the
meaning of each channel is set by the model card's ``output`` section.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _norm(dims: int, norm: str, ch: int) -> nn.Module:
    if norm == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(ch)
    if norm == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(ch, affine=True)
    if norm == "group":
        return nn.GroupNorm(min(8, ch), ch)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; use 'batch', 'instance', 'group' or 'none'")


class ConvBlock(nn.Sequential):
    """Two 3x3(x3) convolutions, each followed by normalisation and ReLU."""

    def __init__(self, dims: int, cin: int, cout: int, norm: str) -> None:
        conv = _conv(dims)
        super().__init__(
            conv(cin, cout, 3, padding=1, bias=norm == "none"),
            _norm(dims, norm, cout),
            nn.ReLU(inplace=True),
            conv(cout, cout, 3, padding=1, bias=norm == "none"),
            _norm(dims, norm, cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with same-size padding.

    Parameters
    ----------
    in_channels : int
        Number of input channels (1 grey, 3 RGB, n multichannel).
    out_channels : int
        Number of output channels (see the model card for their meaning).
    dims : {2, 3}
        Spatial dimensionality.
    base_channels : int
        Feature channels at the first level; doubled at each level down.
    depth : int
        Number of resolution levels (>= 2).  Tiles must be divisible by
        ``2 ** (depth - 1)``.
    norm : {"batch", "instance", "group", "none"}
        Normalisation after each convolution.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        dims: int = 2,
        base_channels: int = 32,
        depth: int = 4,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.dims = dims
        self.depth = depth
        chs = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chs:
            self.down.append(ConvBlock(dims, cin, c, norm))
            cin = c
        self.pool = (nn.MaxPool2d if dims == 2 else nn.MaxPool3d)(2)
        convt = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in range(depth - 1, 0, -1):
            self.upconv.append(convt(chs[i], chs[i - 1], 2, stride=2))
            self.up.append(ConvBlock(dims, 2 * chs[i - 1], chs[i - 1], norm))
        self.head = _conv(dims)(chs[0], out_channels, 1)

    @property
    def divisor(self) -> int:
        """Every spatial input size must be a multiple of this."""
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth - 1:
                skips.append(x)
                x = self.pool(x)
        for upconv, block in zip(self.upconv, self.up, strict=False):
            x = upconv(x)
            x = block(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)
