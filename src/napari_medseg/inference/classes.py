"""Post-processing of semantic (class-per-pixel) label maps: keep the main lesion, fill its holes.

A semantic model's arg-max map often has a few stray pixels or blobs of a
foreground class away from the lesion (hair, a dark vignetted corner, a
vessel) and pinholes inside it.  When an image shows one main lesion (a
dermoscopy photo, a pathology tile centred on a tumour), keeping the largest
connected foreground component and filling its holes removes both.  The
card's ``output.postprocess`` says what to do (``segment``'s ``postprocess``
argument overrides it):

* ``keep_largest`` (bool): keep only the largest connected component of the
  foreground (every class > 0 together, so a lesion made of two classes stays
  whole); the other components become background;
* ``fill_holes`` (bool): background pixels enclosed by foreground become
  foreground, each taking the class of the nearest foreground pixel;
* ``min_size`` (pixels, model pixels in the card): foreground components
  smaller than this become background (0 = keep all).

All three act on each 2D plane of a 2D model's output (a Z stack segmented
plane by plane), and in 3D for a 3D model.  Only numpy and scipy are used.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: The semantic post-processing keys of a card's ``output.postprocess`` (all off by default).
SEMANTIC_KEYS = ("keep_largest", "fill_holes", "min_size")


def semantic_options(postprocess: Mapping | None) -> dict:
    """The semantic keys of a post-processing dict with their types (``{}`` when none is on).

    Parameters
    ----------
    postprocess : mapping, optional
        A card's ``output.postprocess`` (other keys are ignored).

    Returns
    -------
    dict
        ``keep_largest`` / ``fill_holes`` (bool) and ``min_size`` (float),
        only the ones that do something.
    """
    pp = dict(postprocess or {})
    out: dict = {}
    if pp.get("keep_largest"):
        out["keep_largest"] = True
    if pp.get("fill_holes"):
        out["fill_holes"] = True
    if float(pp.get("min_size") or 0) > 0:
        out["min_size"] = float(pp["min_size"])
    return out


def postprocess_classes(classes: np.ndarray, *, keep_largest: bool = False, fill_holes: bool = False,
                        min_size: float = 0) -> np.ndarray:
    """Clean one class map (2D or 3D; connectivity: faces and edges, 8 in 2D, 18 in 3D).

    Parameters
    ----------
    classes : ndarray of int
        Class per pixel, 0 = background.
    keep_largest : bool
        Keep only the largest connected foreground component (ties: the
        first in raster order).
    fill_holes : bool
        Enclosed background becomes the class of the nearest foreground pixel.
    min_size : float
        Remove foreground components with fewer pixels (applied before
        ``keep_largest``; 0 = none).

    Returns
    -------
    ndarray
        A new array of ``classes``' dtype and shape (``classes`` itself when
        nothing is asked or there is no foreground).
    """
    from scipy import ndimage as ndi

    classes = np.asarray(classes)
    if not (keep_largest or fill_holes or min_size > 0):
        return classes
    fg = classes > 0
    if not fg.any():
        return classes
    out = classes.copy()
    structure = ndi.generate_binary_structure(classes.ndim, 2)
    if keep_largest or min_size > 0:
        comp, n = ndi.label(fg, structure)
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        sizes[0] = 0
        keep = sizes >= max(float(min_size), 1.0)
        if keep_largest:
            keep[:] = False
            keep[int(np.argmax(sizes))] = True
        keep[0] = False
        fg = keep[comp]
        out[~fg] = 0
    if fill_holes and fg.any():
        holes = ndi.binary_fill_holes(fg) & ~fg
        if holes.any():
            if out.max() == 1:
                out[holes] = 1
            else:
                _, idx = ndi.distance_transform_edt(~fg, return_indices=True)
                out[holes] = out[tuple(i[holes] for i in idx)]
    return out


def postprocess_planes(classes: np.ndarray, mdims: int, options: Mapping) -> np.ndarray:
    """:func:`postprocess_classes` on each ``mdims``-D block of ``classes`` (2D planes of a stack); in place when possible.

    Parameters
    ----------
    classes : ndarray of int
        ``(..., Y, X)`` (or ``(..., Z, Y, X)`` for a 3D model).
    mdims : int
        The model's dimensionality: the last ``mdims`` axes are processed together.
    options : mapping
        Keywords of :func:`postprocess_classes` (see :func:`semantic_options`).

    Returns
    -------
    ndarray
        ``classes`` with every plane cleaned.
    """
    if not options:
        return classes
    lead = classes.shape[:classes.ndim - mdims]
    for idx in np.ndindex(*lead):
        classes[idx] = postprocess_classes(classes[idx], **options)
    return classes
