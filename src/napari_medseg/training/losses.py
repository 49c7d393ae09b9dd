"""Losses for instance models, all with a per-pixel weight map.

A weight of 0 removes a pixel from the loss *and* its gradient exactly (for
partial annotation: unannotated pixels), so every term is a weighted sum
divided by the total weight, never a plain mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the weight (soft targets allowed)."""
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


def weighted_soft_dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, eps: float = 1.0
                       ) -> torch.Tensor:
    """``1 - Dice`` of sigmoid(logits) vs target, pixels weighted, pooled over the batch."""
    p = torch.sigmoid(logits)
    inter = (weight * p * target).sum()
    denom = (weight * p).sum() + (weight * target).sum()
    return 1.0 - (2.0 * inter + eps) / (denom + eps)


def instance_loss(
    logits: torch.Tensor,
    fg: torch.Tensor,
    dist: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    dice_weight: float = 1.0,
    dist_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of an instance model (2 output channels: foreground, distance).

    Parameters
    ----------
    logits : tensor (N, 2, Y, X)
        Network output: channel 0 foreground logit, channel 1 distance logit.
    fg, dist : tensor (N, Y, X)
        Targets from :func:`napari_medseg.training.targets.instance_targets`.
    weight : tensor (N, Y, X), optional
        Per-pixel weight (0 = ignore).  Default all ones.
    dice_weight, dist_weight : float
        Relative weights of the soft-Dice and distance terms.

    Returns
    -------
    loss : scalar tensor
        ``BCE(fg) + dice_weight * softDice(fg) + dist_weight * BCE(dist)``.
        The distance is a soft target in [0, 1] fitted with BCE on its logit
        (the predicted map is its sigmoid).
    parts : dict
        The three terms as floats, for logging.
    """
    if weight is None:
        weight = torch.ones_like(fg)
    logits = logits.float()
    f, d = logits[:, 0], logits[:, 1]
    l_bce = weighted_bce(f, fg, weight)
    l_dice = weighted_soft_dice(f, fg, weight)
    l_dist = weighted_bce(d, dist, weight)
    loss = l_bce + dice_weight * l_dice + dist_weight * l_dist
    return loss, {"bce": float(l_bce.detach()), "dice": float(l_dice.detach()), "dist": float(l_dist.detach())}
