"""Training side of the instance representations: targets and losses per output layout.

:mod:`napari_medseg.inference.representations` says what the channels mean
and turns them into objects; this module makes the matching training
targets from a label image and the loss on the network's logits:

``distance`` (2 channels)
    targets foreground, normalised distance; loss :func:`.losses.instance_loss`.
``contour`` (3)
    plus the boundary (:func:`.targets.boundary_target`); its loss adds
    ``boundary_weight * (BCE + soft Dice)`` of the boundary channel.
``star`` (1 + R)
    targets the object probability (normalised distance), the ray
    distances / ``ray_max`` (:func:`.targets.star_distances`) and the mask
    of pixels where rays were computed (every ``ray_stride``-th row and
    column, as StarDist's grid: the ray walk is the costly part of the
    patch loader); loss BCE of the probability plus ``ray_weight`` times
    the mean absolute error of the sigmoid rays over the masked object
    pixels (StarDist's masked MAE), plus a small pull of background rays
    towards 0.

All targets are float32 ``(K_t, Y, X)`` so that one batch type carries any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..inference.representations import Representation, representation_of
from .targets import boundary_target, instance_targets, normalized_distance, star_distances

#: Defaults of :func:`representation_for`.
DEFAULT_RAYS = 32
DEFAULT_RAY_MAX = 64.0


@dataclass(frozen=True)
class TrainingRepresentation:
    """Targets and loss of one :class:`~napari_medseg.inference.representations.Representation`.

    Attributes
    ----------
    rep : Representation
    boundary_weight : float
        Weight of the boundary terms (``contour``).
    ray_weight : float
        Weight of the ray MAE (``star``; rays are in units of ``ray_max``).
    ray_stride : int
        Rays are computed (and trained) on every ``ray_stride``-th row and column.
    """

    rep: Representation
    boundary_weight: float = 1.0
    ray_weight: float = 10.0
    ray_stride: int = 2

    @property
    def name(self) -> str:
        return self.rep.kind

    @property
    def n_channels(self) -> int:
        return self.rep.n_channels

    def targets(self, labels: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Training targets of one label image (Y, X) -> float32 (K_t, Y, X).

        ``rng`` draws the phase of the ``star`` ray grid (default: phase 0).
        """
        if self.rep.kind == "star":
            s = self.ray_stride
            oy, ox = (0, 0) if rng is None else (int(v) for v in rng.integers(0, s, size=2))
            prob = normalized_distance(labels)
            rays = star_distances(labels, self.rep.angles(), self.rep.ray_max, stride=s, offset=(oy, ox))
            rays /= np.float32(self.rep.ray_max)
            mask = np.zeros((1, *labels.shape), np.float32)
            mask[0, oy::s, ox::s] = 1.0
            return np.concatenate([prob[None], rays, mask], axis=0)
        fg, dist = instance_targets(labels)
        if self.rep.kind == "contour":
            return np.stack([fg, dist, boundary_target(labels)])
        return np.stack([fg, dist])

    def loss(self, logits, targets, weight):
        """``(loss, parts)`` for network logits (N, K, Y, X), targets (N, K_t, Y, X) and pixel weights (N, Y, X)."""
        from .losses import instance_loss, weighted_bce, weighted_soft_dice

        logits = logits.float()
        if self.rep.kind == "star":
            import torch

            l_prob = weighted_bce(logits[:, 0], targets[:, 0], weight)
            grid = targets[:, -1] * weight
            inside = (targets[:, 0] > 0).float()
            obj = inside * grid
            err = (torch.sigmoid(logits[:, 1:]) - targets[:, 1:-1]).abs().mean(dim=1)
            l_rays = (err * obj).sum() / obj.sum().clamp_min(1.0)
            bg = (1.0 - inside) * grid
            l_bg = (err * bg).sum() / bg.sum().clamp_min(1.0)
            loss = l_prob + self.ray_weight * (l_rays + 0.01 * l_bg)
            return loss, {"prob": float(l_prob.detach()), "rays": float(l_rays.detach())}
        loss, parts = instance_loss(logits[:, :2], targets[:, 0], targets[:, 1], weight)
        if self.rep.kind == "contour":
            b, tb = logits[:, 2], targets[:, 2]
            l_b = weighted_bce(b, tb, weight) + weighted_soft_dice(b, tb, weight)
            loss = loss + self.boundary_weight * l_b
            parts = {**parts, "boundary": float(l_b.detach())}
        return loss, parts


def representation_for(kind_or_card, n_rays: int = DEFAULT_RAYS, ray_max: float = DEFAULT_RAY_MAX
                       ) -> TrainingRepresentation:
    """The training representation of a card (its ``output.representation``) or of a kind name.

    ``n_rays`` and ``ray_max`` are used for a ``"star"`` name only (a card carries its own).
    """
    if isinstance(kind_or_card, str):
        rep = Representation(kind_or_card, n_rays=n_rays if kind_or_card == "star" else 0, ray_max=ray_max)
    else:
        rep = representation_of(kind_or_card)
    return TrainingRepresentation(rep)
