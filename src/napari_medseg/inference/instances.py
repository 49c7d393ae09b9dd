"""Network output maps -> instance label images (the single place that reads them).

Instance models (``card.output.kind == "instance"``) predict two maps per pixel:

``foreground``
    logit of "this pixel belongs to an object"; the engine applies a sigmoid
    and passes the probability in [0, 1] as ``fg_prob``.
``distance``
    logit of the per-object normalised distance to the background: the
    Euclidean distance of each object pixel to the nearest pixel outside that
    object, divided by the object's maximum (1 at the centre, 0 outside
    objects; see :func:`napari_medseg.training.targets.instance_targets`).  The
    engine applies a sigmoid and passes it as ``dist`` in [0, 1].

:func:`instances_from_maps` turns them into labels by a seeded watershed:
seeds are the connected components of ``dist > seed_threshold`` inside the
foreground, and they grow over ``-dist`` within the foreground mask.  Because
the distance is normalised per object, a single threshold separates the
cores of touching objects whatever their size.

With ``seed_h > 0`` the seeds are instead the *h-maxima* of the distance
(as :func:`skimage.morphology.h_maxima`): the top of every peak that rises
at least ``seed_h`` above the saddle joining it to a higher peak.  One
threshold cannot suit two touching nuclei whose valley is higher than the
peak of a small neighbour; the height of a peak over its valley can.  On
the held-out DSB2018 training fluorescence images this raised a contour
model's AP@0.5 from 0.868 (threshold seeds, tuned) to 0.878 (BENCHMARKS.md,
issue 16, session 7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from ..errors import ParameterError

#: Default post-processing keyword arguments (a model card's
#: ``output.postprocess`` overrides them).
DEFAULT_POSTPROCESS = {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_size": 16}


def instances_from_maps(
    fg_prob: np.ndarray,
    dist: np.ndarray,
    *,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: float = 16,
    spacing: Sequence[float] | None = None,
    seed_h: float = 0.0,
) -> np.ndarray:
    """Instance labels from a foreground probability and a distance map.

    Parameters
    ----------
    fg_prob : ndarray of float, shape (Y, X) or (Z, Y, X)
        Foreground probability in [0, 1] (sigmoid of the network's channel 0).
    dist : ndarray of float, same shape
        Normalised distance-to-background in [0, 1] (sigmoid of channel 1):
        about 1 at object centres, falling to 0 at their borders.
    fg_threshold : float
        Pixels with ``fg_prob > fg_threshold`` are foreground.
    seed_threshold : float
        Connected components (face connectivity) of
        ``(dist > seed_threshold) & foreground`` seed one object each.
        Foreground components that contain no seed become one object each,
        so no foreground is lost.
    min_size : float
        Objects smaller than this are removed.  In pixels (voxels) when
        ``spacing`` is None, else in physical area (volume) units, i.e.
        ``n_pixels * prod(spacing)``.
    spacing : sequence of float, optional
        Physical size of a pixel along each axis (same order as the array).
    seed_h : float
        0 (default): seeds are the components above ``seed_threshold``.
        Above 0: seeds are the h-maxima of ``dist`` in the foreground (the
        top plateau of each peak rising at least ``seed_h`` above the
        saddle to any higher peak of its foreground component; full
        connectivity, as :func:`skimage.morphology.h_maxima`), where
        ``dist > seed_threshold`` (so ``seed_threshold`` becomes a floor
        under the peaks).  Only the foreground components holding two or
        more local maxima are searched; the others are one object each.

    Returns
    -------
    labels : ndarray of int32, same shape
        0 = background, objects numbered consecutively from 1: seeded
        objects in raster order of their seeds' first pixel (with
        ``seed_h``: by component, then raster order within it), then the
        unseeded foreground components.

    Raises
    ------
    ParameterError
        If the maps have different shapes, are not 2D/3D, or a threshold is
        outside [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> fg = np.zeros((5, 9)); fg[1:4, 1:8] = 1
    >>> d = np.zeros((5, 9)); d[2, 2] = d[2, 6] = 1
    >>> instances_from_maps(fg, d, min_size=1)[2]
    array([0, 1, 1, 1, 1, 2, 2, 2, 0], dtype=int32)
    """

    fg_prob = np.asarray(fg_prob)
    dist = np.asarray(dist)
    if fg_prob.shape != dist.shape:
        raise ParameterError(f"fg_prob {fg_prob.shape} and dist {dist.shape} must have the same shape")
    if fg_prob.ndim not in (2, 3):
        raise ParameterError(f"maps must be 2D (Y, X) or 3D (Z, Y, X), got shape {fg_prob.shape}")
    for name, v in (("fg_threshold", fg_threshold), ("seed_threshold", seed_threshold), ("seed_h", seed_h)):
        if not 0.0 <= float(v) <= 1.0:
            raise ParameterError(f"{name} must be in [0, 1], got {v}")
    if min_size < 0:
        raise ParameterError(f"min_size must be >= 0, got {min_size}")
    if spacing is not None and len(spacing) != fg_prob.ndim:
        raise ParameterError(f"spacing {tuple(spacing)} must have one value per axis of shape {fg_prob.shape}")

    fg = _above(fg_prob, fg_threshold)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    labels, n_total = _seeded_watershed(fg, dist, seed_threshold, float(seed_h))

    # Size filter and consecutive relabelling in one vectorised pass.
    sizes = np.bincount(labels.ravel(), minlength=n_total + 1).astype(np.float64)
    if spacing is not None:
        sizes *= float(np.prod(np.asarray(spacing, dtype=np.float64)))
    keep = sizes >= min_size
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return _relabel_in_place(labels, lut)


def _relabel_in_place(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[labels]`` written back into ``labels`` (int32) slab by slab along the first axis.

    ``lut[labels]`` at once would allocate a second full-size int32 array
    (19 MB for a 2176^2 post-processing block) while the first is alive.
    """
    step = max(1, (1 << 20) // max(1, int(np.prod(labels.shape[1:]))))
    for a in range(0, labels.shape[0], step):
        labels[a:a + step] = lut[labels[a:a + step]]
    return labels


def _above(a: np.ndarray, threshold: float) -> np.ndarray:
    """``a > threshold``; float16 maps are compared in float32, as the float32 maps they were made from.

    numpy compares a float16 array with a Python float in float16, which rounds
    the threshold (0.45 -> 0.44995): a pixel equal to the rounded value would
    flip.  The engine keeps block maps in float16 (:mod:`.segment`) and its
    labels must not depend on that.  For a threshold >= 0 the comparison is
    done on the float16 bit patterns (:func:`_float16_above`), which numpy
    vectorises (float16 arithmetic it does not: ~9x faster on a 2176^2 map).
    """
    if a.dtype == np.float16:
        if threshold >= 0:
            return _float16_above(a, threshold)
        return a > np.float32(threshold)
    return a > threshold


def _float16_above(a: np.ndarray, threshold: float) -> np.ndarray:
    """``a.astype(float32) > float32(threshold)`` for a float16 array and ``threshold >= 0``, on bit patterns.

    Non-negative float16 values (``+0`` to ``+inf``, bit patterns 0x0000 to
    0x7C00) are ordered as their patterns read as uint16; negative values and
    NaNs (sign bit set, or above 0x7C00) are never above a non-negative
    threshold.  So ``a > t`` iff ``h <= bits(a) <= 0x7C00``, where ``h`` is
    the pattern of the smallest float16 whose float32 value exceeds ``t``
    (checked against the float32 comparison for all 65,536 patterns in the
    tests).
    """
    t = np.float32(threshold)
    h = np.float16(t)  # nearest float16: the smallest one above t, or the largest one at or below it
    if np.float32(h) <= t:
        h = np.nextafter(h, np.float16(np.inf))
    bits = a.view(np.uint16)
    return (bits >= h.view(np.uint16)) & (bits <= np.uint16(0x7C00))


def _seeded_watershed(fg: np.ndarray, dist: np.ndarray, seed_threshold: float,
                      seed_h: float = 0.0) -> tuple[np.ndarray, int]:
    """Seeded watershed of ``-dist`` inside ``fg``, run only where it matters.

    Equivalent to ``skimage.segmentation.watershed(-dist, seeds, mask=fg)``
    (face connectivity) plus one label per seedless foreground component, but
    much faster: a foreground component holding one seed is that seed's object
    and one without a seed is its own object, so the watershed only runs on
    the bounding box of each component that holds two or more seeds (touching
    objects).  skimage's watershed costs ~0.5 s of set-up per call on a
    4096x4096 image plus a heap operation per masked pixel; this keeps the
    whole map at ~1 s (measured in tests/core/test_instances.py's docstring).

    Returns ``(labels int32, number of labels)``; labels may be non-consecutive
    only in that their count is returned unfiltered.  ``seed_h > 0``: the
    seeds are :func:`_h_maxima_seeds`.
    """
    from skimage.segmentation import watershed

    structure = ndi.generate_binary_structure(fg.ndim, 1)
    comp, n_comp = ndi.label(fg, structure=structure)
    if seed_h > 0:
        seeds, n_seeds = _h_maxima_seeds(comp, dist, seed_h, seed_threshold)
    else:
        seeds, n_seeds = ndi.label(fg & _above(dist, seed_threshold), structure=structure)
    # Component of each seed (every pixel of a seed lies in one component).
    seed_comp = np.zeros(n_seeds + 1, np.int64)
    seed_px = seeds > 0
    seed_comp[seeds[seed_px]] = comp[seed_px]
    del seed_px
    n_in_comp = np.bincount(seed_comp[1:], minlength=n_comp + 1)
    # Component -> label: its seed for one seed, a new label for none.
    comp_lut = np.zeros(n_comp + 1, np.int32)
    one = np.flatnonzero(n_in_comp == 1)
    one = one[one > 0]
    order = np.argsort(seed_comp[1:], kind="stable")  # seeds grouped by component
    first_seed = np.searchsorted(seed_comp[1:][order], one)
    comp_lut[one] = order[first_seed] + 1
    none = np.flatnonzero(n_in_comp[1:] == 0) + 1
    comp_lut[none] = np.arange(n_seeds + 1, n_seeds + 1 + len(none), dtype=np.int32)

    # Few full-size arrays at a time (the engine labels 2k blocks beside the network):
    # the watershed of -dist per box, not over the whole map; its result (seed ids)
    # goes into `seeds`, and `comp` becomes the labels in place.
    many = np.flatnonzero(n_in_comp[1:] >= 2) + 1
    if len(many):
        boxes = ndi.find_objects(comp)
        for c in many:
            box = boxes[c - 1]
            inside = comp[box] == c
            ws = watershed(-dist[box].astype(np.float32), np.where(inside, seeds[box], 0), mask=inside)
            seeds[box][inside] = ws[inside]  # only component c's pixels: the other components' seeds stay
    labels = _relabel_in_place(comp, comp_lut)  # components with several seeds -> 0, ...
    if len(many):
        grown = (labels == 0) & fg  # ... which are exactly their pixels
        labels[grown] = seeds[grown]
    return labels, n_seeds + len(none)


def _h_maxima_seeds(comp: np.ndarray, dist: np.ndarray, h: float, floor: float) -> tuple[np.ndarray, int]:
    """Seeds (int32, their count): the h-maxima of ``dist`` above ``floor`` in each component of ``comp``.

    Only components holding two or more local maxima (pixels not below any
    face neighbour: every regional maximum is among them, so none is
    missed) are searched, each on its bounding box with the rest of the
    image at 0, so that a component's seeds depend on its own pixels only
    (what keeps block-wise post-processing exact).  Components left without
    a seed become one object each in :func:`_seeded_watershed`.
    """
    face = ndi.generate_binary_structure(comp.ndim, 1)
    full = ndi.generate_binary_structure(comp.ndim, comp.ndim)  # plateaus and seeds: as skimage's h_maxima
    fg = comp > 0
    d = np.where(fg, dist, 0).astype(np.float32)
    top = fg & (d >= ndi.maximum_filter(d, footprint=face, mode="constant"))
    del d
    tops, n_tops = ndi.label(top, structure=full)
    code = np.unique(comp[top].astype(np.int64) * (n_tops + 1) + tops[top])
    del tops, top
    per_comp = np.bincount(code // (n_tops + 1), minlength=int(comp.max()) + 1)
    seeds = np.zeros(comp.shape, np.int32)
    n = 0
    boxes = ndi.find_objects(comp)
    for c in np.flatnonzero(per_comp >= 2):
        box = boxes[c - 1]
        inside = comp[box] == c
        f = np.where(inside, dist[box], 0).astype(np.float32)
        mark = inside & (_h_residue(f, h) >= np.float32(h)) & _above(dist[box], floor)
        # labelled per component: a plateau touching another component's diagonally stays its own seed
        lab, k = ndi.label(mark, structure=full)
        seeds[box][mark] = lab[mark] + n
        n += k
    return seeds, n


def _h_residue(f: np.ndarray, h: float) -> np.ndarray:
    """``f - R(f - h)``: ``f`` minus its grey reconstruction by dilation from ``f - h`` (>= 0, float32).

    The top of a peak rising ``>= h`` above its saddle keeps a residue of
    ``h`` (the h-maxima are where it is ``>= h``), lower peaks less.  The
    marker is lowered by two float32 resolutions of ``f``, as
    :func:`skimage.morphology.h_maxima` does, so rounding cannot lift it
    above ``f - h``.  The reconstruction iterates a 3^n maximum (outside the
    box counting as 0), clipped by ``f``, until nothing changes: about as
    many passes as the object is wide, on the object's box only, in
    preallocated buffers (on boxes of a few hundred pixels the per-call
    overhead of :func:`scipy.ndimage.maximum_filter` was most of the time).
    """
    shift = np.float32(h) + 2 * np.float32(np.finfo(np.float32).resolution) * f
    r = np.maximum(f - shift, np.float32(0))
    x, y = np.empty_like(r), np.empty_like(r)
    shifts = _shifts(f.ndim)
    while True:
        src = r
        for k, (lo, hi) in enumerate(shifts):  # separable 3^n maximum, one axis at a time
            dst = (x, y)[k % 2]
            np.copyto(dst, src)
            np.maximum(dst[lo], src[hi], out=dst[lo])
            np.maximum(dst[hi], src[lo], out=dst[hi])
            src = dst
        np.minimum(src, f, out=src)
        if np.array_equal(src, r):
            return f - r
        old, r = r, src
        x, y = (old, y) if src is x else (x, old)


def _shifts(ndim: int) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Per axis, the ``(1:, :-1)`` slice pair that shifts an array by one pixel along it."""
    return [(tuple(slice(1, None) if i == ax else slice(None) for i in range(ndim)),
             tuple(slice(None, -1) if i == ax else slice(None) for i in range(ndim))) for ax in range(ndim)]
