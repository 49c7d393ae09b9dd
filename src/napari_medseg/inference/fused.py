"""The U-Net's forward pass with oneDNN fusions, for CPU inference (torch eager, no compiler).

A folded U-Net (:func:`~napari_medseg.inference.predictor.fold_batchnorm`:
every block is conv -> ReLU -> conv -> ReLU) spends much of its CPU time
outside the convolutions: in-place ReLUs over full-size activations, the
skip-connection ``torch.cat`` (a strided copy in channels_last) and the
transposed convolutions.  :class:`FusedUNet` runs the same arithmetic with
the oneDNN fused operators that ship inside torch's CPU build
(``torch.ops.mkldnn._convolution_pointwise``, the ones ``torch.compile``'s
CPU backend emits, callable here without any compiler):

* conv + ReLU as one operator (ReLU as a oneDNN post-op);
* no concatenation: the first convolution of each decoder block is split by
  input channels, ``conv(cat(skip, up), W) = conv(skip, W_skip) +
  conv(up, W_up)``; the second half adds the first and applies the ReLU as
  post-ops (binary add + ReLU).

Same result as the eager network to float rounding (checked on a small input
when the fused copy is built; any mismatch or missing operator keeps eager).
2D U-Nets (:class:`~napari_medseg.models.unet.UNet`, batch norm folded or no
norm) only; anything else runs eager.
"""

from __future__ import annotations

from typing import Any

#: Largest allowed |fused - eager| relative to the output's range in the self-check
CHECK_TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}


def fusable(net: Any) -> bool:
    """True for a 2D :class:`~napari_medseg.models.unet.UNet` whose blocks are conv -> ReLU -> conv -> ReLU."""
    from torch import nn

    from ..models.unet import UNet

    if not isinstance(net, UNet) or net.dims != 2:
        return False
    for block in [*net.down, *net.up]:
        kinds = [type(m) for m in block.children()]
        if kinds != [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU]:
            return False
    return all(_ops_available())


def _ops_available() -> tuple[bool, bool]:
    import torch

    mk = getattr(torch.ops, "mkldnn", None)
    try:
        return (hasattr(mk, "_convolution_pointwise") and hasattr(mk, "_convolution_transpose_pointwise"),
                torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):
        return (False, False)


def _conv_args(conv) -> tuple[list[int], list[int], list[int], int]:
    return list(conv.padding), list(conv.stride), list(conv.dilation), int(conv.groups)


def build_fused(net: Any):
    """A :class:`FusedUNet` of a folded 2D U-Net, or None if it cannot be fused or does not match eager.

    ``net`` is left unchanged; its dtype and memory format are kept.
    """
    import torch

    if not fusable(net):
        return None
    try:
        fused = FusedUNet(net)
        p = next(net.parameters())
        x = torch.rand((1, int(net.down[0][0].in_channels), 4 * net.divisor, 4 * net.divisor),
                       generator=torch.Generator().manual_seed(0)).to(p.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ref = net(x).float()
            got = fused(x).float()
        scale = float(ref.abs().max()) or 1.0
        tol = CHECK_TOLERANCE["bfloat16" if p.dtype == torch.bfloat16 else "float32"]
        if got.shape != ref.shape or float((got - ref).abs().max()) > tol * scale:
            return None
        return fused
    except RuntimeError:  # an operator this build of torch lacks or refuses
        return None


class FusedUNet:  # not an nn.Module: a thin runner over the folded network's own weights
    """Forward pass of a folded 2D U-Net with oneDNN conv+ReLU and conv+add+ReLU fusions (inference only).

    Parameters
    ----------
    net : UNet
        Folded (no batch norms), eval mode; channels_last and bfloat16 as
        wanted (the fused pass keeps the input's dtype and memory format).

    Attributes
    ----------
    net : UNet
        The folded network (its ``parameters()`` and ``divisor`` are this runner's).
    """

    def __init__(self, net: Any) -> None:
        self.net = net
        self.depth = int(net.depth)
        self.divisor = int(net.divisor)
        self._down = [(c1, c2) for c1, _, c2, _ in (list(b.children()) for b in net.down)]
        # decoder: the first conv's weight split by input channels (skip first, as in torch.cat([skip, up]))
        self._up = []
        for block in net.up:
            c1, _, c2, _ = list(block.children())
            n_skip = c1.in_channels // 2
            w_skip = c1.weight[:, :n_skip].contiguous(memory_format=_fmt(c1.weight))
            w_up = c1.weight[:, n_skip:].contiguous(memory_format=_fmt(c1.weight))
            self._up.append((c1, w_skip, w_up, c2))

    def parameters(self):
        return self.net.parameters()

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        op = torch.ops.mkldnn._convolution_pointwise
        skips = []
        for i, (c1, c2) in enumerate(self._down):
            x = op(x, c1.weight, c1.bias, *_conv_args(c1), "relu", [], "")
            x = op(x, c2.weight, c2.bias, *_conv_args(c2), "relu", [], "")
            if i < self.depth - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for upconv, (c1, w_skip, w_up, c2) in zip(self.net.upconv, self._up, strict=True):
            up = torch.ops.mkldnn._convolution_transpose_pointwise(
                x, upconv.weight, upconv.bias, list(upconv.padding), list(upconv.output_padding),
                list(upconv.stride), list(upconv.dilation), int(upconv.groups), "none", [], "")
            pad, stride, dil, groups = _conv_args(c1)
            part = op(skips.pop(), w_skip, c1.bias, pad, stride, dil, groups, "none", [], "")
            x = op.binary(up, part, w_up, None, pad, stride, dil, groups, "add", 1.0, "relu", [], "")
            x = op(x, c2.weight, c2.bias, *_conv_args(c2), "relu", [], "")
        return self.net.head(x)


def _fmt(w):
    import torch

    return torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) and w.ndim == 4 \
        else torch.contiguous_format
