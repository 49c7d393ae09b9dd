"""Outlines of binary masks as polygons in level-0 pixel coordinates (QuPath's convention).

Coordinates are ``(x, y)`` with the origin at the top-left corner of the
full-resolution image: level-0 pixel ``(row, col)`` spans ``[col, col + 1) x
[row, row + 1)``.  A mask pixel of a grid with ``scale`` level-0 pixels per
pixel and ``offset`` (level-0 pixels of its top-left corner) spans
``[offset + col * scale, offset + (col + 1) * scale)``.  Outlines are traced by
marching squares through the mask's pixel edges (a convex corner is cut
diagonally across half a pixel).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ring_area(ring: np.ndarray) -> float:
    """Signed area of a closed ``(N, 2)`` ring (shoelace formula)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def mask_polygons(mask: np.ndarray, scale: Sequence[float] = (1.0, 1.0),
                  offset: Sequence[float] = (0.0, 0.0)) -> list[list[np.ndarray]]:
    """Polygons of a 2D mask: each ``[outline, hole, ...]``, rings ``(N, 2)`` closed ``(x, y)`` level-0 pixels.

    Parameters
    ----------
    mask : ndarray of bool, shape (Y, X)
    scale : (float, float)
        Level-0 pixels per mask pixel ``(y, x)``.
    offset : (float, float)
        Level-0 position ``(y, x)`` of the mask's top-left corner.

    Returns
    -------
    list of list of ndarray
        One polygon per 8-connected part, largest first.
    """
    from skimage import measure

    m = np.asarray(mask, bool)
    if not m.any():
        return []
    sy, sx = float(scale[0]), float(scale[1])
    oy, ox = float(offset[0]), float(offset[1])
    rings = []
    for c in measure.find_contours(np.pad(m.astype(np.float64), 1), 0.5, fully_connected="high"):
        r, k = c[:, 0] - 1, c[:, 1] - 1  # mask index coordinates: pixel centres at integers
        ring = np.stack([ox + (k + 0.5) * sx, oy + (r + 0.5) * sy], axis=1)
        if not np.allclose(ring[0], ring[-1]):
            ring = np.vstack([ring, ring[:1]])
        rings.append(ring)
    rings.sort(key=lambda r: -abs(ring_area(r)))
    polygons: list[list[np.ndarray]] = []
    for ring in rings:  # largest first: a ring inside an earlier outline is its hole
        host = next((p for p in polygons if measure.points_in_poly(ring[:1], p[0])[0]
                     and not any(measure.points_in_poly(ring[:1], h)[0] for h in p[1:])), None)
        if host is None:
            polygons.append([ring])
        else:
            host.append(ring)
    return polygons


__all__ = ["mask_polygons", "ring_area"]
