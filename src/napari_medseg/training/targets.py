"""Instance label image -> training targets of instance models.

The two targets match the network's two output channels (see
:mod:`napari_medseg.inference.instances`, the one place that reads the
predicted maps):

``foreground``
    1 inside any object, 0 elsewhere.
``distance``
    for each object pixel, the Euclidean distance to the nearest pixel *not
    in that object* (background or another object, so touching objects get a
    valley between them), divided by the object's maximum: 1 at the centre,
    falling towards the border, 0 outside objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi


def normalized_distance(labels: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Per-object distance to the object's outside, normalised to max 1.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background.  An object touching the array edge
        is treated as ending there (the edge counts as outside).
    spacing : sequence of float, optional
        Pixel size per axis for anisotropic data.

    Returns
    -------
    ndarray of float32, same shape
        In [0, 1]; exactly 1 at each object's most central pixel(s).
    """
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.float32)
    # One small EDT per object on its bounding box (+1 px margin so the box
    # edge is outside): a few ms for hundreds of objects, exact for touching ones.
    for i, box in enumerate(ndi.find_objects(labels), 1):
        if box is None:
            continue
        big = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        obj = labels[big] == i
        padded = np.pad(obj, 1)  # array edge counts as outside
        d = ndi.distance_transform_edt(padded, sampling=spacing)[(slice(1, -1),) * obj.ndim]
        m = d.max()
        if m > 0:
            region = out[big]
            region[obj] = (d[obj] / m).astype(np.float32)
    return out


def instance_targets(labels: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(foreground, distance)`` float32 targets for an instance label image.

    See the module docstring for their definition.
    """
    labels = np.asarray(labels)
    return (labels > 0).astype(np.float32), normalized_distance(labels, spacing)


def boundary_target(labels: np.ndarray) -> np.ndarray:
    """1 on each object's inner edge (pixels next to background or another object), else 0; float32.

    Face connectivity, so the contour is one pixel thick inside each object
    and two touching objects get a two-pixel line between them.
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    return (find_boundaries(labels, connectivity=1, mode="inner") & (labels > 0)).astype(np.float32)


def star_distances(labels: np.ndarray, angles: np.ndarray, ray_max: float, stride: int = 1,
                   offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Distance (pixels) from each object pixel to its object's edge along each ray; float32 (R, Y, X).

    A ray from pixel ``p`` along ``(sin a, cos a)`` is followed in 1-pixel
    steps (nearest pixel) until it reaches a pixel of another label or the
    array edge; the distance is the step count minus 0.5 (the edge lies
    between the last pixel inside and the first outside), capped at
    ``ray_max``.  0 outside objects.  StarDist's ``star_dist`` does the same
    walk in C; here all pixels walk together, and only those still inside
    take the next step.  ``stride`` > 1 computes only the pixels whose row
    and column are multiples of it (the others stay 0), as StarDist trains
    on a subsampled grid: ``stride**2`` times less work.  ``offset`` (row,
    column), each in ``[0, stride)``, is the grid's phase: the computed
    pixels are ``offset + stride * k``.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    out = np.zeros((len(angles), h, w), np.float32)
    oy, ox = (int(o) for o in offset)
    if not (0 <= oy < stride and 0 <= ox < stride):
        raise ValueError(f"offset {offset} must lie in [0, stride={stride})")
    grid = labels[oy::stride, ox::stride]
    ys, xs = np.nonzero(grid)
    ys, xs = ys * stride + oy, xs * stride + ox
    if len(ys) == 0:
        return out
    n, r = len(ys), len(angles)
    # every (pixel, ray) pair walks at once; only pairs still inside take the next step
    pix = np.repeat(np.arange(n), r)
    ray = np.tile(np.arange(r), n)
    dy = np.sin(np.asarray(angles, np.float64))[ray]
    dx = np.cos(np.asarray(angles, np.float64))[ray]
    y0, x0 = ys[pix].astype(np.float64), xs[pix].astype(np.float64)
    own = labels[ys, xs][pix]
    res = np.full(n * r, np.float32(ray_max))
    active = np.arange(n * r)
    t = 1
    flat = labels.ravel()
    while len(active) and t <= ray_max:
        yy = np.rint(y0[active] + t * dy[active]).astype(np.intp)
        xx = np.rint(x0[active] + t * dx[active]).astype(np.intp)
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        same = ok.copy()
        same[ok] = flat[yy[ok] * w + xx[ok]] == own[active[ok]]
        res[active[~same]] = t - 0.5
        active = active[same]
        t += 1
    out[:, ys, xs] = np.minimum(res, np.float32(ray_max)).reshape(n, r).T
    return out
