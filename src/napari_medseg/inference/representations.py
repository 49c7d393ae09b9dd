"""Instance representations: what an instance model's output channels mean and how they become objects.

A card's ``output.representation`` names one (absent = ``distance``, the
cards written before there was a choice):

``distance``
    2 channels: foreground probability and the per-object normalised
    distance to the background; seeded watershed
    (:func:`~napari_medseg.inference.instances.instances_from_maps`).
``contour``
    3 channels: the two above plus a boundary probability (pixels on an
    object's edge, in particular where two objects touch).  The boundary
    lowers the distance map (``dist * (1 - boundary_weight * boundary)``)
    before seeding and flooding, so a bridge between two touching nuclei
    cannot join their seeds and the watershed line follows the predicted
    contour (:func:`instances_from_contour`).
``star``
    ``1 + n_rays`` channels, StarDist-like: an object probability (the
    normalised distance to the background, high at object centres) and the
    distances from each pixel to its object's edge along ``n_rays`` equally
    spaced directions (divided by ``ray_max`` pixels, so in [0, 1]).  Pixels
    above ``prob_threshold`` are candidate centres; their star-convex
    polygons are kept greedily by decreasing probability, dropping any that
    overlap the kept ones by more than ``nms_threshold`` of their area
    (:func:`~napari_medseg.inference.star.instances_from_star`).

Every channel is a sigmoid in [0, 1], so the engine's tiling, float16 cache,
and block-wise stitching (:mod:`.stitch`) treat all three alike; only
:meth:`Representation.instances` differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError

#: Representation names a card's ``output.representation.kind`` may give.
KINDS = ("distance", "contour", "star")


@dataclass(frozen=True)
class Representation:
    """One instance representation (see the module docstring).

    Attributes
    ----------
    kind : {"distance", "contour", "star"}
    n_rays : int
        Star-convex rays (``star`` only; 0 otherwise).
    ray_max : float
        Pixels that a ray value of 1 stands for (``star`` only).
    """

    kind: str = "distance"
    n_rays: int = 0
    ray_max: float = 64.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelError(f"unknown instance representation {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind == "star" and self.n_rays < 3:
            raise ModelError(f"a star representation needs at least 3 rays, got {self.n_rays}")

    @property
    def channels(self) -> list[str]:
        """Names of the network's output channels, in order."""
        if self.kind == "distance":
            return ["foreground", "distance"]
        if self.kind == "contour":
            return ["foreground", "distance", "boundary"]
        return ["object_probability", *(f"ray_{i}" for i in range(self.n_rays))]

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def postprocess_defaults(self) -> dict:
        """Default post-processing keywords of :meth:`instances` (a card's ``output.postprocess`` overrides them)."""
        if self.kind == "distance":
            return {"fg_threshold": 0.5, "seed_threshold": 0.5, "seed_h": 0.0, "min_size": 16}
        if self.kind == "contour":
            return {"fg_threshold": 0.5, "seed_threshold": 0.5, "boundary_weight": 1.0, "seed_h": 0.0, "min_size": 16}
        return {"prob_threshold": 0.5, "nms_threshold": 0.3, "min_size": 16}

    @property
    def threshold_key(self) -> str:
        """The post-processing threshold that matters most (tried at each validation during training)."""
        return "prob_threshold" if self.kind == "star" else "seed_threshold"

    @property
    def validation_thresholds(self) -> tuple[float, ...]:
        """Values of :attr:`threshold_key` tried at each validation during training.

        ``star`` starts lower: its object probability is the normalised
        distance to the background, which early in training peaks well
        below 1 (about 0.3 after 400 steps), so a grid from 0.3 left such a
        network with no candidates at all.
        """
        return (0.1, 0.2, 0.3, 0.4, 0.5, 0.6) if self.kind == "star" else (0.3, 0.4, 0.5, 0.6)

    @property
    def default_block(self) -> int:
        """Largest post-processing block edge (2D): ``star`` keeps ``1 + n_rays`` maps per pixel, so smaller blocks."""
        return 1024 if self.kind == "star" else 2048

    def to_card(self) -> dict:
        """The card's ``output.representation`` entry."""
        if self.kind == "star":
            return {"kind": "star", "n_rays": self.n_rays, "ray_max": self.ray_max}
        return {"kind": self.kind}

    def angles(self) -> np.ndarray:
        """Ray directions (radians; ray ``i`` points along ``(sin a_i, cos a_i)`` in (row, col))."""
        return 2 * math.pi * np.arange(self.n_rays) / max(self.n_rays, 1)

    def flip_permutation(self, axes: Sequence[int]) -> np.ndarray:
        """Channel order after mirroring the image along ``axes`` (-1 = columns, -2 = rows).

        The maps of a mirrored image, mirrored back, carry ray ``i`` in the
        channel of its mirror ray; test-time augmentation averages them
        after this re-indexing.  The identity except for ``star``.
        """
        perm = np.arange(self.n_channels)
        if self.kind != "star":
            return perm
        n = self.n_rays
        k = np.arange(n)
        for ax in axes:
            # columns: angle a -> pi - a (index n/2 - k); rows: a -> -a (index -k)
            k = (n // 2 - k) % n if ax == -1 else (-k) % n
            if ax == -1 and n % 2:
                raise ModelError("mirroring a star model with an odd number of rays is not supported")
        perm[1:] = 1 + k
        return perm

    def check_2d(self, what: str) -> None:
        """Raise ModelError if this representation has no 3D post-processing (``star``)."""
        if self.kind == "star":
            raise ModelError(f"{what}: star-convex (polygon) models are 2D only; use a distance or contour model")

    def keywords(self, pp: dict) -> dict:
        """Only the keys of ``pp`` that :meth:`instances` takes, over the defaults."""
        base = self.postprocess_defaults
        return {k: pp.get(k, v) for k, v in base.items()}

    def instances(self, maps: Sequence[np.ndarray], **pp) -> np.ndarray:
        """Labels (int32, 0 background) of one block from its ``(K, Y, X)`` maps (sigmoid outputs)."""
        from .instances import instances_from_maps

        kw = self.keywords(pp)
        if self.kind == "distance":
            return instances_from_maps(maps[0], maps[1], **kw)
        if self.kind == "contour":
            return instances_from_contour(maps[0], maps[1], maps[2], **kw)
        from .star import instances_from_star

        return instances_from_star(maps[0], maps[1:], ray_max=self.ray_max, angles=self.angles(), **kw)


def instances_from_contour(fg_prob: np.ndarray, dist: np.ndarray, boundary: np.ndarray, *, fg_threshold: float = 0.5,
                           seed_threshold: float = 0.5, boundary_weight: float = 1.0, min_size: float = 16,
                           seed_h: float = 0.0) -> np.ndarray:
    """Instance labels from foreground, distance and boundary probabilities (2D or 3D).

    The distance map is lowered where the boundary is likely,
    ``dist * clip(1 - boundary_weight * boundary, 0, 1)``, then seeded and
    flooded as :func:`~napari_medseg.inference.instances.instances_from_maps`
    does: a thin bridge of high distance between two touching nuclei is cut
    by their shared contour.

    Parameters
    ----------
    fg_prob, dist, boundary : ndarray of float, (Y, X) or (Z, Y, X)
        Sigmoid outputs in [0, 1].
    fg_threshold, seed_threshold, min_size, seed_h
        As :func:`~napari_medseg.inference.instances.instances_from_maps`
        (``seed_h > 0``: h-maxima seeds of the lowered distance).
    boundary_weight : float
        How strongly the boundary lowers the distance (0 = ignore it).

    Returns
    -------
    ndarray of int32
    """
    from .instances import instances_from_maps

    boundary = np.asarray(boundary, np.float32)
    damp = np.clip(1.0 - np.float32(boundary_weight) * boundary, 0.0, 1.0)
    return instances_from_maps(fg_prob, np.asarray(dist, np.float32) * damp, fg_threshold=fg_threshold,
                               seed_threshold=seed_threshold, min_size=min_size, seed_h=seed_h)


def representation_of(card) -> Representation:
    """The :class:`Representation` of an instance model's card (``output.representation``; default ``distance``).

    Raises ModelError when it does not match ``architecture.out_channels``.
    """
    spec = (card.output or {}).get("representation") or {"kind": "distance"}
    if isinstance(spec, str):
        spec = {"kind": spec}
    rep = Representation(kind=str(spec.get("kind", "distance")), n_rays=int(spec.get("n_rays", 0)),
                         ray_max=float(spec.get("ray_max", 64.0)))
    n_out = int(card.architecture.get("out_channels", 2))
    if n_out != rep.n_channels:
        raise ModelError(f"model {card.name!r}: a {rep.kind!r} representation has {rep.n_channels} output channels "
                         f"but architecture.out_channels is {n_out}")
    return rep
