"""The pixels a whole-image job estimates its normalisation percentiles on: a bounded sample of the job's level.

Why not a small pyramid level: the percentiles the network was trained with
are those of pixels at the resolution it sees.  A coarse level of a slide is
averaged (nuclei fade into the stroma, the noise shrinks, so the 1st and
99.8th percentiles move inwards), and a small tissue window on a big slide is
only a few coarse pixels, mixed with glass; estimating there made the same
tissue get other limits, and other objects, on a bigger slide.

How others do it: stardist normalises the whole image before tiling
(``predict_instances_big`` takes limits computed once); QuPath's StarDist
extension normalises each tile by default, which makes the network see
nuclei in empty tiles, and offers limits from a downsampled whole image;
cellpose normalises per image (``lowhigh`` fixes them for distributed runs).
Here the limits are those of the job's own pixels, estimated once per job:

1. The level the job runs on is cut into a fixed grid of :data:`PATCH` x
   :data:`PATCH` patches from its top-left pixel.
2. With a tissue mask (a coarse mask over the same field of view), the mask
   is first eroded (8-connected; outside the image counts as glass) by
   :data:`MARGIN` pixels of the level, rounded up to whole mask pixels and at
   least one, so that the coarse pixels at the tissue's border, part glass,
   are not sampled, and so that masks of other resolutions (a bigger slide's
   mask is coarser) leave about the same tissue; when that leaves fewer than
   :data:`MIN_PIXELS` level pixels, the mask eroded by one mask pixel, then
   the mask as it is.  Candidate patches are those that meet the mask; in
   each, only the pixels whose mask pixel (nearest neighbour) is tissue are
   kept.  Without a mask every patch is a candidate.
3. Candidates are taken in the order of a hash of their grid position and a
   seed (splitmix64), not of a random draw over the list: the order of two
   patches does not depend on the image's size or on the other candidates,
   so the same tissue at the same place on a larger slide gives the same
   sample, and the same run gives the same sample (deterministic).
4. Patches are read one at a time (basic slicing: a tiled TIFF decodes only
   the tiles a patch touches) until :data:`SAMPLE_PIXELS` pixels are kept (the
   last patch is cut to fit) or twice as many patches as full ones would
   fill the sample are read (512 by default).

Memory is one patch plus the sample (``SAMPLE_PIXELS`` x channels of the
image's dtype: 12 MB for RGB uint8), whatever the image's size; reading is at
most 512 patches of 128 x 128 pixels.  A tissue area of fewer than ``SAMPLE_PIXELS``
pixels is sampled whole, so an image of at most that many pixels (without a
mask) gives the limits :func:`~napari_medseg.inference.normalize.normalization_limits`
gives on the whole image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ParameterError

#: Patch edge (pixels of the job's level); divides the usual TIFF tile edges (256, 512).
PATCH = 128
#: Pixels the percentiles are estimated on (that many per channel at most), as the whole-image estimate.
SAMPLE_PIXELS = 2**22
#: The tissue mask is eroded by this many pixels of the job's level (at least one mask pixel).
MARGIN = 32
#: An eroded mask with fewer level pixels than this is not used (a less eroded one instead).
MIN_PIXELS = 1000


def normalization_sample(data: Any, axes: str, tissue: Any = None, *, n_pixels: int = SAMPLE_PIXELS,
                         patch: int = PATCH, max_patches: int | None = None, seed: int = 0
                         ) -> tuple[np.ndarray, str]:
    """A bounded, deterministic sample of ``data``'s (tissue) pixels for the normalisation percentiles.

    Parameters
    ----------
    data : array-like
        One 2D image level with axes ``axes`` (``YX``, ``YXS``, ``YXC``,
        ``CYX``...): numpy, zarr, dask, a tifffile ``aszarr`` level; only
        basic slicing of one patch at a time is used.
    axes : str
        ``data``'s axes: ``Y``, ``X`` and at most one channel axis (``C`` or ``S``).
    tissue : array-like of bool, shape (h, w), optional
        Coarse tissue mask over ``data``'s field of view: mask pixel
        ``(r, c)`` covers pixels ``[r * Y / h, (r + 1) * Y / h) x [c * X / w,
        (c + 1) * X / w)`` (as :func:`~napari_medseg.batch.plan.tissue_blocks`).
        None: the whole image.  An empty mask: the whole image.
    n_pixels : int
        Most pixels in the sample.
    patch : int
        Patch edge in pixels.
    max_patches : int, optional
        Most patches read; default twice ``n_pixels / patch**2`` (at least 1).
    seed : int
        Seed of the patch order.

    Returns
    -------
    sample : ndarray, shape (1, n) or (1, n, C), ``data``'s dtype
        The sampled pixels (``n <= n_pixels``), channels last.
    axes : str
        ``"YX"`` or ``"YXC"``: the sample is a one-row image, for
        :func:`~napari_medseg.inference.normalize.normalization_limits`.

    Raises
    ------
    ParameterError
        Axes without ``Y`` and ``X`` or with other spatial axes, a mask that
        is not 2D, or non-positive sizes.
    """
    axes = axes.upper()
    if "Y" not in axes or "X" not in axes or "Z" in axes or "T" in axes:
        raise ParameterError(f"the normalisation sample is taken on a 2D image (Y, X, channels); axes {axes!r}")
    if n_pixels < 1 or patch < 1:
        raise ParameterError(f"n_pixels ({n_pixels}) and patch ({patch}) must be >= 1")
    yi, xi = axes.index("Y"), axes.index("X")
    ch = next((i for i, a in enumerate(axes) if a in "CS"), None)
    h, w = int(data.shape[yi]), int(data.shape[xi])
    mask = _sampling_mask(tissue, (h, w))
    rows, cols = math.ceil(h / patch), math.ceil(w / patch)
    if mask is None:
        cand = np.arange(rows * cols)
    else:
        cand = np.flatnonzero(_patches_meeting(mask, (h, w), patch, (rows, cols)))
    r, c = np.divmod(cand, cols)
    order = cand[np.argsort(_priority(r, c, seed), kind="stable")]
    if max_patches is None:
        max_patches = max(1, 2 * math.ceil(n_pixels / patch**2))
    parts, n = [], 0
    for k in order[:max_patches]:
        if n >= n_pixels:
            break
        pr, pc = divmod(int(k), cols)
        ys = slice(pr * patch, min((pr + 1) * patch, h))
        xs = slice(pc * patch, min((pc + 1) * patch, w))
        idx = tuple(ys if i == yi else xs if i == xi else slice(None) for i in range(len(axes)))
        pix = np.asarray(data[idx]).transpose([yi, xi] + ([ch] if ch is not None else []))
        if mask is not None:
            my = np.minimum((np.arange(ys.start, ys.stop) * mask.shape[0]) // h, mask.shape[0] - 1)
            mx = np.minimum((np.arange(xs.start, xs.stop) * mask.shape[1]) // w, mask.shape[1] - 1)
            pix = pix[mask[np.ix_(my, mx)]]
        else:
            pix = pix.reshape((-1,) + pix.shape[2:])
        pix = pix[:n_pixels - n]
        parts.append(pix)
        n += len(pix)
    sample = np.concatenate(parts) if parts else np.zeros((0,) + ((int(data.shape[ch]),) if ch is not None else ()),
                                                          np.dtype(data.dtype))
    return sample[None], "YX" + ("C" if ch is not None else "")


def _sampling_mask(tissue: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """The mask sampled: ``tissue`` eroded by :data:`MARGIN` level pixels, by one mask pixel, or as it is; None: all."""
    if tissue is None:
        return None
    mask = np.asarray(tissue).astype(bool, copy=False)
    if mask.ndim != 2:
        raise ParameterError(f"the tissue mask must be 2D (Y, X), got shape {mask.shape}")
    if not mask.any():
        return None
    from scipy import ndimage as ndi

    edge = min(shape[0] / mask.shape[0], shape[1] / mask.shape[1])  # level pixels per mask pixel
    per_mask_pixel = shape[0] * shape[1] / mask.size
    for n in dict.fromkeys((max(1, math.ceil(MARGIN / edge)), 1)):
        eroded = ndi.binary_erosion(mask, structure=np.ones((3, 3), bool), iterations=n, border_value=0)
        if eroded.sum() * per_mask_pixel >= MIN_PIXELS:
            return eroded
    return mask


def _patches_meeting(mask: np.ndarray, shape: tuple[int, int], patch: int, grid: tuple[int, int]) -> np.ndarray:
    """Per patch of the grid (raster order), whether one of its pixels' mask pixels is tissue."""
    h, w = shape
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)

    def span(n: int, size: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        first = np.arange(n) * patch
        last = np.minimum(first + patch, size) - 1
        return (first * m) // size, (last * m) // size + 1  # mask rows of the first and past the last pixel

    y0, y1 = span(grid[0], h, mask.shape[0])
    x0, x1 = span(grid[1], w, mask.shape[1])
    total = sat[y1][:, x1] - sat[y0][:, x1] - sat[y1][:, x0] + sat[y0][:, x0]
    return (total > 0).ravel()


def _priority(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    """A splitmix64 hash of ``(row, col, seed)``: the order patches are taken in (uint64)."""
    m = np.uint64(0xFFFFFFFFFFFFFFFF)
    z = (np.asarray(rows, np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ \
        (np.asarray(cols, np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)) ^ (np.uint64(int(seed) & int(m)))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


__all__ = ["MARGIN", "MIN_PIXELS", "PATCH", "SAMPLE_PIXELS", "normalization_sample"]
