"""Tissue detection on a low pyramid level, and the tissue fraction of each tile of a grid.

Brightfield (RGB) slides: tissue is stained, glass is grey-white, so the HSV
saturation of a smoothed thumbnail is thresholded with Otsu's method, kept
within [:data:`MIN_SATURATION`, :data:`MAX_SATURATION`]: the floor keeps a
slide of glass only from being split in two by noise, the cap keeps pale
tissue (lung alveoli, fat, mucin) when there is little glass and Otsu would
split the tissue into pale and dark stains instead.  Otsu's split is trusted only
when the means of its two classes differ by at least :data:`MIN_CONTRAST`: on
a slide of glass only (or nearly only) the histogram has one mode, Otsu cuts
that mode in half, and on tinted glass (saturation above the floor) half the
glass would become tissue; an untrusted split thresholds at
:data:`MAX_SATURATION` instead (glass below it, any stained tissue above).
Grey images: Otsu on intensity, tissue bright (fluorescence) unless
``bright=False``.  Morphology then closes gaps of ``closing_um``, removes
specks smaller than ``min_area_um2`` and fills holes smaller than
``hole_area_um2`` (sizes in µm, converted with the slide's pixel size; in
pixels of the level when the slide is uncalibrated); both areas are capped
at :data:`MAX_SPECK_SHARE` of the image, so that the small tissue of a
small image is not removed as a speck.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..geometry import Geometry

#: Lowest saturation (0..1) ever called tissue on RGB slides, whatever Otsu says.
MIN_SATURATION = 0.05
#: Highest saturation threshold on RGB slides: anything more saturated is tissue, whatever Otsu says.
MAX_SATURATION = 0.15
#: Least difference of the mean saturations of Otsu's two classes for its split to be taken (RGB slides).
#: Measured on synthetic glass (grey or tinted, noise s.d. 2-12 grey levels): at most 0.024 for glass alone,
#: at least 0.157 with tissue on it (0.2-100 % of the area); 0.23-0.44 for LC25000 tiles with or without glass.
MIN_CONTRAST = 0.08
#: Largest speck (and filled hole), as a share of the image area, whatever ``min_area_um2`` says.
MAX_SPECK_SHARE = 0.005


@dataclass
class TissueMask:
    """A tissue mask on a coarse grid over the slide.

    Attributes
    ----------
    mask : ndarray of bool, shape (Y, X)
        True on tissue.
    downsample : tuple of float
        Level-0 pixels per mask pixel along ``(y, x)``.
    geometry : Geometry
        Mask index -> slide world (µm when the slide is calibrated).
    threshold : float
        The threshold used (saturation in [0, 1], or intensity).
    """

    mask: np.ndarray
    downsample: tuple[float, float]
    geometry: Geometry
    threshold: float

    @property
    def fraction(self) -> float:
        """Share of the slide area that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def tile_fraction(self, tile: int | tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
        """Tissue fraction of each tile of a grid of ``tile`` level-0 pixels starting at the slide's corner.

        Parameters
        ----------
        tile : int or (int, int)
            Tile edge ``(y, x)`` in level-0 pixels.
        grid : (int, int)
            Number of tile rows and columns.

        Returns
        -------
        ndarray of float64, shape ``grid``
            Mean of the mask over each tile's footprint (mask pixels whose
            centre falls inside the tile); tiles smaller than a mask pixel
            take the mask pixel they lie in.
        """
        ty, tx = (tile, tile) if np.isscalar(tile) else tile
        out = np.zeros(grid, np.float64)
        sat = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.float64)
        sat[1:, 1:] = np.cumsum(np.cumsum(self.mask, axis=0), axis=1)
        dy, dx = self.downsample

        def edges(n: int, t: float, d: float, size: int) -> tuple[np.ndarray, np.ndarray]:
            lo = np.clip(np.ceil(np.arange(n) * t / d - 0.5), 0, size).astype(np.int64)
            hi = np.clip(np.ceil((np.arange(n) + 1) * t / d - 0.5), 0, size).astype(np.int64)
            empty = hi <= lo  # a tile between two mask-pixel centres: the pixel it lies in
            centre = np.clip(((np.arange(n) + 0.5) * t / d).astype(np.int64), 0, size - 1)
            lo[empty], hi[empty] = centre[empty], centre[empty] + 1
            return lo, hi

        y0, y1 = edges(grid[0], ty, dy, self.mask.shape[0])
        x0, x1 = edges(grid[1], tx, dx, self.mask.shape[1])
        area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
        total = sat[y1][:, x1] - sat[y0][:, x1] - sat[y1][:, x0] + sat[y0][:, x0]
        np.divide(total, area, out=out, where=area > 0)
        return out


def tissue_mask_array(image: Any, *, pixel_um: float | None = None, bright: bool | None = None,
                      closing_um: float = 20.0, min_area_um2: float = 20_000.0,
                      hole_area_um2: float = 20_000.0) -> tuple[np.ndarray, float]:
    """Tissue mask of one low-resolution image.

    Parameters
    ----------
    image : array-like
        ``(Y, X, 3|4)`` RGB(A) brightfield or ``(Y, X)`` grey.
    pixel_um : float, optional
        Pixel size in µm; without it the sizes below are in pixels.
    bright : bool, optional
        Grey images: tissue brighter than background (default True).
    closing_um, min_area_um2, hole_area_um2 : float
        Morphology sizes (µm, µm²).

    Returns
    -------
    mask : ndarray of bool, shape (Y, X)
    threshold : float
    """
    from scipy import ndimage as ndi
    from skimage import filters, morphology
    from skimage.color import rgb2hsv

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        rgb = a[..., :3].astype(np.float32)
        if np.issubdtype(a.dtype, np.integer):
            rgb /= float(np.iinfo(a.dtype).max)
        sig = filters.gaussian(rgb2hsv(np.clip(rgb, 0, 1))[..., 1], sigma=1.0)
        t = saturation_threshold(sig)
        mask = sig > t
    elif a.ndim == 2:
        sig = filters.gaussian(a.astype(np.float32), sigma=1.0, preserve_range=True)
        t = float(filters.threshold_otsu(sig)) if np.ptp(sig) > 0 else float(sig.max())
        mask = sig > t if bright is not False else sig < t
    else:
        raise ParameterError(f"tissue detection needs a (Y, X) grey or (Y, X, 3|4) RGB image, got shape {a.shape}")
    px = float(pixel_um) if pixel_um else 1.0
    r = int(round(closing_um / px / 2))
    if r >= 1:
        mask = ndi.binary_closing(np.pad(mask, r, mode="edge"), structure=morphology.disk(r))[r:-r, r:-r]
    cap = MAX_SPECK_SHARE * mask.size
    mask = morphology.remove_small_objects(mask, max_size=max(0, int(min(min_area_um2 / px**2, cap))))
    mask = morphology.remove_small_holes(mask, max_size=max(0, int(min(hole_area_um2 / px**2, cap))))
    return mask, t


def saturation_threshold(sig: np.ndarray) -> float:
    """The tissue threshold of a (smoothed) saturation image in [0, 1] (see the module docstring).

    Otsu's threshold within [:data:`MIN_SATURATION`, :data:`MAX_SATURATION`]
    when its two classes differ by at least :data:`MIN_CONTRAST` in mean
    saturation; :data:`MAX_SATURATION` when they do not (one mode: glass
    only, or tissue only).
    """
    from skimage import filters

    if not np.ptp(sig) > 0:
        return MAX_SATURATION
    otsu = float(filters.threshold_otsu(sig))
    above = sig > otsu
    if not above.any() or above.all() or float(sig[above].mean() - sig[~above].mean()) < MIN_CONTRAST:
        return MAX_SATURATION
    return min(max(otsu, MIN_SATURATION), MAX_SATURATION)


def detect_tissue(slide: Any, *, max_pixels: int = 4_000_000, min_um: float = 4.0, bright: bool | None = None,
                  closing_um: float = 20.0, min_area_um2: float = 20_000.0,
                  hole_area_um2: float = 20_000.0) -> TissueMask:
    """Tissue mask of a :class:`~napari_medseg.slides.pyramid.Slide` from a low level.

    The level is the finest with at most ``max_pixels`` pixels of at least
    ``min_um`` µm (:meth:`~napari_medseg.slides.pyramid.Slide.thumbnail`);
    see :func:`tissue_mask_array` for the method and sizes.
    """
    thumb, (dy, dx) = slide.thumbnail(max_pixels, min_um)
    px = None if slide.mpp is None else float(np.sqrt(slide.mpp[0] * dy * slide.mpp[1] * dx))
    mask, t = tissue_mask_array(thumb, pixel_um=px, bright=bright, closing_um=closing_um,
                                min_area_um2=min_area_um2, hole_area_um2=hole_area_um2)
    return TissueMask(mask=mask, downsample=(dy, dx), geometry=slide.geometry().zoomed((1 / dy, 1 / dx)),
                      threshold=t)


__all__ = ["MAX_SATURATION", "MAX_SPECK_SHARE", "MIN_CONTRAST", "MIN_SATURATION", "TissueMask", "detect_tissue",
           "saturation_threshold", "tissue_mask_array"]
