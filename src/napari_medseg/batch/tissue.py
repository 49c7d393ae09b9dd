"""The tissue mask of a whole-image job: found on a coarse pyramid level, given, or none.

A whole-slide job over a folder must not segment glass: the blocks that show
only glass are skipped and the normalisation percentiles come from the
tissue (:mod:`napari_medseg.batch.sampling`).  :func:`job_tissue` resolves the
job's ``tissue`` setting:

``"auto"`` (the default of ``medseg batch`` and ``segment_blockwise``)
    Find the tissue (:func:`napari_medseg.slides.tissue.detect_tissue`:
    saturation + Otsu + morphology) when the image is an RGB(A) brightfield
    slide: RGB samples and either a pyramid (more than one level, as every
    slide scanner writes) or at least :data:`AUTO_MIN_PIXELS` pixels at full
    resolution.  Grey and multichannel (fluorescence) images, and flat RGB
    images below that size (crops, tiles, photographs, which are usually all
    tissue), are run whole, as before.  A mask found empty (a slide of glass
    only) is kept: no block runs, and the summary's tissue mode says
    ``"empty"`` (``medseg batch`` prints a note; ``tissue="none"`` runs the
    whole image, for unstained or very pale tissue).
``"on"``
    Always find it (grey images: tissue brighter than the background, as in
    fluorescence); a multichannel image is an error.
``"none"`` or None
    The whole image.
an array of bool
    A mask given by the caller (as :func:`~napari_medseg.batch.plan.tissue_blocks`).

The mask is computed on the finest level of at most ``max_pixels`` (4
million) pixels with pixels of at least 4 µm
(:meth:`~napari_medseg.slides.pyramid.Slide.thumbnail`), so memory is that
level's whatever the slide's size; a flat image is subsampled by an integer
step (one pass over it).  On an uncalibrated image the morphology sizes are in
pixels of that level (:data:`UNCALIBRATED_SIZES`) instead of µm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError
from .plan import SourceSpec

#: The modes ``tissue`` takes as a string.
MODES = ("auto", "on", "none")
#: A flat (one-level) RGB image of at least this many pixels is a slide for ``"auto"`` (8192 x 8192).
AUTO_MIN_PIXELS = 8192**2
#: Morphology sizes on an uncalibrated image, in pixels of the mask's level (closing, specks, holes).
UNCALIBRATED_SIZES = {"closing_um": 2.0, "min_area_um2": 64.0, "hole_area_um2": 64.0}


@dataclass(frozen=True)
class JobTissue:
    """The tissue setting of a job, resolved.

    Attributes
    ----------
    mask : ndarray of bool or None
        Coarse mask over the image's field of view (None: the whole image).
    mode : str
        ``"detected"``, ``"given"``, ``"none"`` or ``"empty"`` (detected, no
        tissue found: an all-False mask, nothing is run).
    fraction : float or None
        Share of the image area that is tissue (None without a mask).
    downsample : tuple of float or None
        Level-0 pixels per mask pixel ``(y, x)`` of a detected mask.
    """

    mask: np.ndarray | None
    mode: str
    fraction: float | None = None
    downsample: tuple[float, float] | None = None

    def record(self) -> dict:
        """JSON-able summary: ``tissue`` (the mode) and ``tissue_fraction``."""
        return {"tissue": self.mode, "tissue_fraction": None if self.fraction is None else round(self.fraction, 6)}


def job_tissue(source: SourceSpec, tissue: Any = "auto", *, max_pixels: int = 4_000_000) -> JobTissue:
    """Resolve a job's ``tissue`` setting (see the module docstring) into a mask.

    Parameters
    ----------
    source : SourceSpec
        The job's image (the mask covers its field of view, at any level).
    tissue : {"auto", "on", "none"}, None or array-like of bool
        The setting.
    max_pixels : int
        Largest mask level, in pixels.

    Returns
    -------
    JobTissue

    Raises
    ------
    ParameterError
        An unknown mode, or ``"on"`` for an image that is neither RGB nor grey.
    """
    if tissue is None:
        return JobTissue(None, "none")
    if not isinstance(tissue, str):
        mask = np.asarray(tissue).astype(bool, copy=False)
        return JobTissue(mask, "given", float(mask.mean()) if mask.size else 0.0)
    mode = tissue.strip().lower()
    if mode not in MODES:
        raise ParameterError(f"tissue must be one of {', '.join(MODES)} or a bool mask, got {tissue!r}")
    if mode == "none":
        return JobTissue(None, "none")
    levels, axes, geometry = source.levels()
    rgb = axes == "YXS" and int(levels[0].shape[-1]) in (3, 4)
    if mode == "auto":
        big = int(levels[0].shape[0]) * int(levels[0].shape[1]) >= AUTO_MIN_PIXELS
        if not (rgb and (len(levels) > 1 or big)):
            return JobTissue(None, "none")
    elif not rgb and axes != "YX":
        raise ParameterError(f"tissue detection needs a grey (YX) or RGB (YXS) image; {source.name} has axes "
                             f"{axes!r} (give a mask, or tissue='none')")
    from ..slides.pyramid import Slide, mpp_of
    from ..slides.tissue import detect_tissue

    slide = Slide(levels=list(levels), mpp=mpp_of(geometry), name=source.name, path=source.path)
    sizes = {} if slide.mpp is not None else UNCALIBRATED_SIZES
    found = detect_tissue(slide, max_pixels=max_pixels, **sizes)
    if not found.mask.any():
        return JobTissue(found.mask, "empty", 0.0, found.downsample)
    return JobTissue(found.mask, "detected", found.fraction, found.downsample)


__all__ = ["AUTO_MIN_PIXELS", "MODES", "UNCALIBRATED_SIZES", "JobTissue", "job_tissue"]
