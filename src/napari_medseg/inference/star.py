"""Star-convex polygons -> instance labels (greedy polygon non-maximum suppression).

The ``star`` representation (:mod:`.representations`) predicts, at every
pixel, an object probability and the distances to the object's edge along
``n_rays`` directions, as StarDist does (Schmidt et al., MICCAI 2018).
:func:`instances_from_star` makes objects from them:

1. candidates: pixels with ``prob > prob_threshold`` (object centres, since
   the probability is the normalised distance to the background);
2. in order of decreasing probability, a candidate whose pixel is already
   covered by a kept polygon is skipped at once (one array read); then 3
   probe points per ray (at radii splitting the polygon into equal areas)
   estimate how much of it is covered, and one covered beyond
   ``nms_threshold`` is dropped; otherwise its polygon is rasterised
   (:func:`skimage.draw.polygon`) and kept when at most ``nms_threshold`` of
   its area is covered by kept polygons, its free pixels becoming a new
   object (so a later polygon never overwrites an earlier, more probable
   one).

StarDist suppresses by polygon IoU computed exactly in C; the covered-pixel
test here is its rasterised counterpart (intersection over the candidate's
area), which needs no compiled code and, because nearly every candidate
lies inside an already kept polygon, rasterises only about one polygon per
object.  Memory: the label image and the candidates' coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ParameterError


def polygon_vertices(y: float, x: float, rays: np.ndarray, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertex rows and columns of the star-convex polygon centred at ``(y, x)`` with ray lengths ``rays`` (pixels)."""
    return y + rays * np.sin(angles), x + rays * np.cos(angles)


def instances_from_star(
    prob: np.ndarray,
    rays: Sequence[np.ndarray] | np.ndarray,
    *,
    ray_max: float,
    angles: np.ndarray,
    prob_threshold: float = 0.5,
    nms_threshold: float = 0.3,
    min_size: float = 16,
) -> np.ndarray:
    """Instance labels from an object-probability map and per-pixel ray distances.

    Parameters
    ----------
    prob : ndarray of float, (Y, X)
        Object probability in [0, 1] (high at object centres).
    rays : ndarray of float, (R, Y, X)
        Ray distances divided by ``ray_max`` (sigmoid outputs in [0, 1]).
    ray_max : float
        Pixels a ray value of 1 stands for.
    angles : ndarray of float, (R,)
        Ray directions in radians (ray ``i`` along ``(sin, cos)`` in row, col).
    prob_threshold : float
        Candidates are the pixels above it.
    nms_threshold : float
        A candidate polygon is dropped when more than this share of its
        pixels is already taken by more probable objects.
    min_size : float
        Objects with fewer pixels are removed.

    Returns
    -------
    labels : ndarray of int32, (Y, X)
        0 = background, objects numbered from 1 by decreasing probability.
    """
    from skimage.draw import polygon

    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ParameterError(f"star-convex post-processing is 2D; got maps of shape {prob.shape}")
    n_rays = len(angles)
    if len(rays) != n_rays:
        raise ParameterError(f"{len(rays)} ray maps for {n_rays} angles")
    for name, v in (("prob_threshold", prob_threshold), ("nms_threshold", nms_threshold)):
        if not 0.0 <= float(v) <= 1.0:
            raise ParameterError(f"{name} must be in [0, 1], got {v}")
    shape = prob.shape
    labels = np.zeros(shape, np.int32)
    ys, xs = np.nonzero(prob > prob_threshold)
    if len(ys) == 0:
        return labels
    p = prob[ys, xs].astype(np.float32)
    order = np.argsort(-p, kind="stable")
    ys, xs = ys[order], xs[order]
    # ray lengths of the candidates only (not a (R, Y, X) float32 copy)
    dist = np.stack([np.asarray(r)[ys, xs] for r in rays], axis=1).astype(np.float32) * np.float32(ray_max)
    sin, cos = np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)
    flat = labels.ravel()
    h, width = shape
    # coverage probes: 3 points per ray at radii splitting the polygon into equal areas
    frac = np.sqrt((np.arange(3, dtype=np.float32) + 0.5) / 3)
    sizes = [0]
    next_id = 1
    max_taken = float(nms_threshold)
    for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist(), strict=True)):
        if flat[y * width + x]:
            continue  # inside a more probable object
        d = dist[i]
        # cheap estimate of the covered share first: most rejected candidates stop here
        py = np.clip(np.rint(y + np.outer(frac, d * sin)), 0, h - 1).astype(np.intp)
        px = np.clip(np.rint(x + np.outer(frac, d * cos)), 0, width - 1).astype(np.intp)
        if np.count_nonzero(flat[(py * width + px).ravel()]) > max_taken * py.size:
            continue
        rr, cc = polygon(y + d * sin, x + d * cos, shape)
        if len(rr) == 0:
            continue
        idx = rr * width + cc
        taken = flat[idx] != 0
        n_taken = int(taken.sum())
        if n_taken > max_taken * len(idx):
            continue
        free = idx[~taken] if n_taken else idx
        flat[free] = next_id
        sizes.append(len(free))
        next_id += 1
    if next_id == 1:
        return labels
    keep = np.asarray(sizes, np.float64) >= min_size
    keep[0] = False
    lut = np.zeros(next_id, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]
