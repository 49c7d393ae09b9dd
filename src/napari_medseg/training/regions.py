"""Which pixels of a partly annotated image are used for training, and which for validation.

Users of human-in-the-loop training paint a few objects (or one lesion) and
leave the rest of the image unpainted.  Unpainted pixels far from the paint
are *unknown*, not background, so training reads only an **annotated
region** per image:

* by default the bounding box of the painted labels, grown along Y and X
  (not along Z) and clipped to the image: by :data:`DEFAULT_MARGIN` pixels;
  for semantic 2D labels (a lesion painted on a photo) the whole image, or
  on huge images the box's own longer side (:func:`default_margin`), so
  that the skin, tissue or organ around a lesion is seen as background;
  for semantic 3D labels (a lesion painted on some slices of a CT / MR
  volume) the same in-plane rule on **the painted slices only**: a slice
  with no paint between painted ones is not assumed lesion-free (users
  paint every other slice), so it is not used;
* or the union of polygons / rectangles the user drew (a napari Shapes layer),
  in the image's data coordinates (pixel indices).

Inside the region unpainted pixels are background (instance mode) or class 0
(semantic mode); outside it every pixel has weight 0 in the loss and its label
is never read (labels outside are set to 0 before targets are made), so
whatever is painted or not painted there cannot change training.

A part of the annotated pixels is held out for validation
(:func:`split_validation`): whole images when there are at least four, else a
block of slices (3D) or a strip at one end of each region along its longer
side (2D).

Regions are kept as a bounding box plus a boolean mask cropped to that box,
so memory grows with the annotated area, not the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

#: Pixels added around the bounding box of the painted labels, along Y and X.
DEFAULT_MARGIN = 16
#: Semantic 2D labels of images up to this many pixels: the whole image is the region.  With the 16 px margin a
#: model trained on painted dermoscopy lesions never saw the skin far from a lesion (nor the dark vignetted
#: corners) and labelled it lesion (PH2 test Dice 0.719 -> 0.782 with the wider region, BENCHMARKS.md); a CT
#: tumour painted on two slices: Dice 0.25 with the 16 px margin, 0.91 with the whole slices.
SEMANTIC_2D_WHOLE_IMAGE_PX = 4096 * 4096
#: Larger semantic 2D images (and 3D slices) (slides, mosaics): the box is grown by this many times its longer side.
SEMANTIC_2D_MARGIN_FACTOR = 1.0
#: Fewest annotated objects (instance mode) for an automatic validation split.
MIN_VAL_OBJECTS = 4
#: Fewest images for holding out whole images (with 3, one image would be a third of the data).
MIN_IMAGES_WHOLE_HOLDOUT = 4


@dataclass
class Region:
    """The annotated region of one image.

    Attributes
    ----------
    index : int
        Position of the image in the list given.
    name : str
        Name used in reports.
    shape : tuple of int
        Spatial shape of the image, ``(Y, X)`` or ``(Z, Y, X)``.
    box : tuple of slice
        Bounding box of the region (one slice per spatial axis).
    mask : ndarray of bool
        Region pixels inside ``box`` (shape of the box).
    source : {"labels", "roi", "empty"}
        How the region was found: bounding box of the paint, user ROI, or
        nothing painted (the image is not used).
    val : ndarray of bool or None
        Pixels of ``mask`` held out for validation (same shape), None if none.
    val_note : str
        How the validation part was chosen.
    n_objects : int
        Painted objects (instance) or painted classes (semantic) in the region.
    n_shapes : int
        Polygons the ROI was made of (0 for a labels box).
    """

    index: int
    name: str
    shape: tuple[int, ...]
    box: tuple[slice, ...]
    mask: np.ndarray
    source: str
    val: np.ndarray | None = None
    val_note: str = ""
    n_objects: int = 0
    n_shapes: int = 0

    @property
    def area(self) -> int:
        """Pixels (voxels) in the region."""
        return int(self.mask.sum())

    @property
    def train(self) -> np.ndarray:
        """Region pixels used for training (the region minus the validation part)."""
        return self.mask if self.val is None else self.mask & ~self.val

    @property
    def fraction(self) -> float:
        """Share of the image inside the region."""
        return self.area / max(1, math.prod(self.shape))


def box_of(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the True pixels of ``mask`` (None if there are none).

    Parameters
    ----------
    mask : ndarray of bool

    Returns
    -------
    tuple of slice or None
        One half-open slice per axis.
    """
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        hit = np.flatnonzero(mask.any(axis=other) if other else mask)
        if hit.size == 0:
            return None
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def labels_box(labels: np.ndarray, margin: int = DEFAULT_MARGIN) -> tuple[slice, ...] | None:
    """Bounding box of the painted (non-zero) labels grown by ``margin`` along Y and X.

    Parameters
    ----------
    labels : ndarray of int, (Y, X) or (Z, Y, X)
    margin : int
        Pixels added on each side along the last two axes (Z is not grown:
        slices next to the painted ones are not assumed annotated).

    Returns
    -------
    tuple of slice or None
        None when nothing is painted.
    """
    box = box_of(np.asarray(labels) != 0)
    if box is None:
        return None
    shape = labels.shape
    grown = []
    for ax, s in enumerate(box):
        m = margin if ax >= labels.ndim - 2 else 0
        grown.append(slice(max(0, s.start - m), min(shape[ax], s.stop + m)))
    return tuple(grown)


def default_margin(labels: np.ndarray, mode: str = "instance") -> int:
    """The margin :func:`find_region` grows the painted labels' box by when none is given.

    :data:`DEFAULT_MARGIN` (16 px) for instance labels; for semantic labels
    the whole image or slice (up to :data:`SEMANTIC_2D_WHOLE_IMAGE_PX` pixels
    per slice), else ``max(DEFAULT_MARGIN, SEMANTIC_2D_MARGIN_FACTOR * longer
    side of the painted box)``: a painted lesion says that what lies around
    it is background.  (Instance users paint a few of many objects, so
    unpainted pixels far from the paint are unknown; a semantic annotation
    of a slice is usually every lesion on it.)  3D semantic labels: Y, X
    only (see :func:`find_region` for Z); with the 16 px margin a CT tumour
    painted on two slices reached Dice 0.25, with whole slices 0.91
    (BENCHMARKS.md).

    Parameters
    ----------
    labels : ndarray of int, (Y, X) or (Z, Y, X)
    mode : {"instance", "semantic"}

    Returns
    -------
    int
        Pixels along Y and X.
    """
    labels = np.asarray(labels)
    if mode != "semantic" or labels.ndim not in (2, 3):
        return DEFAULT_MARGIN
    box = box_of(labels != 0)
    if box is None:
        return DEFAULT_MARGIN
    plane = labels.shape[-2:]
    if math.prod(plane) <= SEMANTIC_2D_WHOLE_IMAGE_PX:
        return max(DEFAULT_MARGIN, *plane)
    side = max(s.stop - s.start for s in box[-2:])
    return max(DEFAULT_MARGIN, int(math.ceil(SEMANTIC_2D_MARGIN_FACTOR * side)))


def _polygon_list(roi) -> list[np.ndarray]:
    polys = []
    for p in roi:
        a = np.asarray(p, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 3 or a.shape[1] not in (2, 3):
            raise ParameterError(
                f"each ROI shape must be an (N, 2) or (N, 3) array of N >= 3 vertices, got shape {a.shape}")
        polys.append(a)
    return polys


def roi_mask(shape: Sequence[int], roi: Sequence) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Rasterise ROI polygons into a ``(box, mask)`` pair (the union of the polygons).

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the image, ``(Y, X)`` or ``(Z, Y, X)``.
    roi : sequence of array-like
        Polygons (rectangles are 4-vertex polygons) in data coordinates
        (pixel indices, napari Shapes ``data``).  ``(N, 2)`` vertices are
        ``(y, x)`` and, for a 3D image, cover every slice; ``(N, 3)``
        vertices are ``(z, y, x)`` of a shape drawn on one slice (constant z),
        which then covers that slice only.

    Returns
    -------
    (box, mask) or None
        None when no polygon covers any pixel of the image.
    """
    from skimage.draw import polygon2mask

    shape = tuple(int(s) for s in shape)
    polys = _polygon_list(roi)
    if not polys:
        return None
    yx = shape[-2:]
    full_z = len(shape) == 3
    planes: dict[int | None, np.ndarray] = {}
    for p in polys:
        z = None
        if p.shape[1] == 3:
            if len(shape) == 2:
                if not np.allclose(p[:, 0], p[0, 0]):
                    raise ParameterError("a 3D ROI shape was given for a 2D image")
                p = p[:, 1:]
            else:
                zs = np.round(p[:, 0])
                if not np.all(zs == zs[0]):
                    raise ParameterError(
                        "an ROI shape is not drawn on one slice (its vertices have different z); draw ROIs in a "
                        "2D view of the volume")
                z = int(zs[0])
                if not 0 <= z < shape[0]:
                    continue
                p = p[:, 1:]
        m = polygon2mask(yx, p)
        if not m.any():
            continue
        key = z if full_z else None
        planes[key] = planes.get(key, np.zeros(yx, bool)) | m
    if not planes:
        return None
    if full_z:
        full = np.zeros(shape, bool)
        for z, m in planes.items():
            if z is None:
                full |= m[None]
            else:
                full[z] |= m
    else:
        full = planes[None]
    box = box_of(full)
    return box, np.ascontiguousarray(full[box])


def find_region(
    labels: np.ndarray,
    roi: Sequence | None = None,
    *,
    index: int = 0,
    name: str = "",
    mode: str = "instance",
    margin: int | None = None,
) -> Region:
    """The annotated region of one image: the user's ROI, or the painted labels' box.

    Parameters
    ----------
    labels : ndarray of int, (Y, X) or (Z, Y, X)
        Painted labels (instance ids or class ids), 0 = unpainted.
    roi : sequence of polygons, optional
        See :func:`roi_mask`.  When given, only pixels inside are used, painted
        or not.
    index, name : int, str
        For reports.
    mode : {"instance", "semantic"}
        What ``n_objects`` counts (objects or classes), and the default margin.
    margin : int, optional
        Growth of the labels' bounding box along Y and X; default
        :func:`default_margin` (16 px; for semantic labels the whole image or
        slice).  Semantic 3D labels with the default margin use the painted
        slices only (the region's mask is False on unpainted slices between
        painted ones); with a given margin every slice of the box is used.

    Returns
    -------
    Region
        ``source == "empty"`` (and an empty mask) if nothing is painted and no
        ROI covers the image.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ParameterError(f"labels must be 2D (Y, X) or 3D (Z, Y, X), got shape {labels.shape}")
    shape = labels.shape
    n_shapes = 0
    if roi is not None and len(roi):
        n_shapes = len(roi)
        hit = roi_mask(shape, roi)
        if hit is None:
            raise ParameterError(f"image {name or index}: the ROI shapes lie outside the image {shape}")
        box, mask = hit
        source = "roi"
    else:
        box = labels_box(labels, default_margin(labels, mode) if margin is None else int(margin))
        if box is None:
            return Region(index, name, shape, tuple(slice(0, 0) for _ in shape), np.zeros((0,) * len(shape), bool),
                          "empty")
        mask = np.ones(tuple(s.stop - s.start for s in box), bool)
        if mode == "semantic" and labels.ndim == 3 and margin is None:
            painted = (labels[box[0]] != 0).reshape(mask.shape[0], -1).any(axis=1)
            mask[~painted] = False
        source = "labels"
    lab = labels[box]
    ids = np.unique(lab[mask])
    n = int(np.count_nonzero(ids))
    return Region(index, name, shape, box, mask, source, n_objects=n, n_shapes=n_shapes)


def _strip(region: Region, labels_in_box: np.ndarray, fraction: float, mode: str) -> tuple[np.ndarray, str]:
    """Validation strip: ``fraction`` of the region's pixels at one end of its longer side."""
    mask = region.mask
    yx_axes = (mask.ndim - 2, mask.ndim - 1)
    extent = [mask.shape[a] for a in yx_axes]
    ax = yx_axes[int(np.argmax(extent))]
    other = tuple(a for a in range(mask.ndim) if a != ax)
    counts = mask.sum(axis=other)
    cum = np.cumsum(counts)
    total = cum[-1]
    names = {mask.ndim - 1: "columns", mask.ndim - 2: "rows"}
    off = region.box[ax].start
    candidates = []
    # the far end first, then the near end
    cut = int(np.searchsorted(cum, (1.0 - fraction) * total, side="left")) + 1
    cut = min(max(cut, 1), mask.shape[ax] - 1)
    idx = np.arange(mask.shape[ax]).reshape([-1 if a == ax else 1 for a in range(mask.ndim)])
    candidates.append((idx >= cut, f"{names[ax]} {off + cut}-{off + mask.shape[ax] - 1}"))
    cut2 = int(np.searchsorted(cum, fraction * total, side="left")) + 1
    cut2 = min(max(cut2, 1), mask.shape[ax] - 1)
    candidates.append((idx < cut2, f"{names[ax]} {off}-{off + cut2 - 1}"))
    best = None
    for sel, text in candidates:
        val = mask & sel
        train = mask & ~sel
        fg_val = labels_in_box[val]
        fg_train = labels_in_box[train]
        score = (np.count_nonzero(np.unique(fg_val)) > 0 and np.count_nonzero(np.unique(fg_train)) > 0,
                 np.count_nonzero(np.unique(fg_val)))
        if best is None or score > best[0]:
            best = (score, val, text)
    return best[1], best[2]


def _slice_block(region: Region, labels_in_box: np.ndarray, annotated: list[int], fraction: float
                 ) -> tuple[np.ndarray, list[int]]:
    """Hold out ``round(fraction * n)`` consecutive annotated slices, the last block leaving paint on both sides."""
    k = max(1, round(fraction * len(annotated)))
    painted = {z for z in annotated if (labels_in_box[z][region.mask[z]] != 0).any()}
    starts = list(range(len(annotated) - k, -1, -1))
    pick = next((s for s in starts if painted & set(annotated[s:s + k]) and painted - set(annotated[s:s + k])),
                starts[0])
    zs = annotated[pick:pick + k]
    val = np.zeros_like(region.mask)
    val[zs] = region.mask[zs]
    return val, zs


def _slices_text(zs: list[int]) -> str:
    if len(zs) == 1:
        return f"slice {zs[0]}"
    if zs == list(range(zs[0], zs[-1] + 1)):
        return f"slices {zs[0]}-{zs[-1]}"
    return "slices " + ", ".join(map(str, zs))


def split_validation(regions: list[Region], labels: Sequence[np.ndarray], *, fraction: float = 0.2,
                     mode: str = "instance") -> str:
    """Hold out part of the annotations for validation (sets ``Region.val``).

    * at least :data:`MIN_IMAGES_WHOLE_HOLDOUT` (4) usable images: the last
      ``max(1, round(fraction * n))`` images are held out whole;
    * a 3D region with at least 5 annotated slices: ``max(1, round(fraction *
      n))`` consecutive annotated slices, the last such block that leaves
      painted pixels both in it and outside it;
    * otherwise a strip holding ``fraction`` of the region's pixels at one end
      of its longer side (the end that leaves objects on both sides).

    Nothing is held out when ``fraction`` is 0 or the annotation is too small
    (fewer than :data:`MIN_VAL_OBJECTS` objects in instance mode), nor in
    semantic mode when no held-out part holds a painted class (its Dice
    would be 1 for a network that predicts nothing): training then keeps the
    last weights and early stopping is off.

    Returns
    -------
    str
        One sentence saying what was held out.
    """
    if not 0.0 <= fraction < 1.0:
        raise ParameterError(f"val_fraction must be in [0, 1), got {fraction}")
    used = [r for r in regions if r.source != "empty"]
    for r in used:
        r.val, r.val_note = None, ""
    if not used:
        if fraction == 0:
            return "no validation (val_fraction = 0): the last weights are kept"
        return (f"no validation yet: nothing is painted; {100 * fraction:g} % of the annotation will be held out "
                "for validation once there is some")
    if fraction == 0:
        return "no validation (val_fraction = 0): the last weights are kept"
    if mode == "instance" and sum(r.n_objects for r in used) < MIN_VAL_OBJECTS:
        return (f"no validation: fewer than {MIN_VAL_OBJECTS} painted objects; the last weights are kept "
                "(paint more objects for a validation score and early stopping)")
    if len(used) >= MIN_IMAGES_WHOLE_HOLDOUT:
        n_val = max(1, round(fraction * len(used)))
        for r in used[-n_val:]:
            r.val = r.mask.copy()
            r.val_note = "whole image held out"
        names = ", ".join(r.name or str(r.index) for r in used[-n_val:])
        return f"validation on {n_val} held-out image(s): {names}"
    notes = []
    for r in used:
        lab = np.asarray(labels[r.index])[r.box]
        nz = r.mask.shape[0] if r.mask.ndim == 3 else 1
        annotated = [z for z in range(nz) if r.mask.ndim == 3 and r.mask[z].any()]
        if len(annotated) >= 5:
            r.val, zs = _slice_block(r, lab, annotated, fraction)
            r.val_note = f"{_slices_text([r.box[0].start + z for z in zs])} held out"
        else:
            val, text = _strip(r, lab, fraction, mode)
            if not val.any() or not (r.mask & ~val).any():
                r.val_note = "region too small to split: all used for training"
                notes.append(f"{r.name or r.index}: {r.val_note}")
                continue
            r.val = val
            r.val_note = f"strip of {text} held out"
        notes.append(f"{r.name or r.index}: {r.val_note}")
    if not any(r.val is not None and r.val.any() for r in used):
        return "no validation: the regions are too small to split; the last weights are kept"
    if mode == "semantic" and not any((np.asarray(labels[r.index])[r.box][r.val] != 0).any()
                                      for r in used if r.val is not None):
        # a held-out part without any painted class scores an empty prediction 1.0, so it would keep the
        # epoch that predicts nothing (brain1 painted on 4 slices, whole slices as the region: Dice 0)
        for r in used:
            r.val, r.val_note = None, "no painted class in the held-out part: all used for training"
        return ("no validation: the held-out strips would hold no painted class (a lesion far from the "
                "image edges); the last weights are kept")
    return "validation on a held-out part of each region (" + "; ".join(notes) + ")"


def _box_text(box: tuple[slice, ...]) -> str:
    names = ("rows", "cols") if len(box) == 2 else ("slices", "rows", "cols")
    return ", ".join(f"{n} {s.start}-{s.stop - 1}" for n, s in zip(names, box, strict=False))


def describe_regions(regions: Sequence[Region], val_text: str = "", mode: str = "instance") -> str:
    """Plain-text summary of the regions used (one line per image, then the validation split).

    Shown in the Train widget and printed by ``medseg train``.
    """
    lines = []
    what = "objects" if mode == "instance" else "classes"
    for r in regions:
        label = f"'{r.name}'" if r.name else f"#{r.index}"
        if r.source == "empty":
            lines.append(f"image {label}: nothing painted and no ROI: not used")
            continue
        how = (f"inside {r.n_shapes} ROI shape(s)" if r.source == "roi"
               else "bounding box of the painted labels + margin")
        used = ""
        if r.source == "labels" and r.mask.ndim == 3:
            k = int(r.mask.reshape(r.mask.shape[0], -1).any(axis=1).sum())
            if k < r.mask.shape[0]:
                used = f"; {k} of its {r.mask.shape[0]} slices (the painted ones)"
        lines.append(f"image {label}: {how}, {_box_text(r.box)}{used} ({r.area} px, {100 * r.fraction:.0f}% of the "
                     f"image), {r.n_objects} painted {what}")
    lines.append("Inside the region unpainted pixels count as background; outside it nothing is used.")
    if val_text:
        lines.append(val_text[:1].upper() + val_text[1:] + ".")
    return "\n".join(lines)


def describe_region(
    labels: np.ndarray | Sequence[np.ndarray],
    roi: Sequence | None = None,
    *,
    names: Sequence[str] | None = None,
    mode: str = "instance",
    val_fraction: float = 0.2,
    margin: int | None = None,
) -> str:
    """What region of each labels image training would use, as text (no training).

    Parameters
    ----------
    labels : ndarray or sequence of ndarray
        One painted labels image per training image.
    roi : optional
        Polygons for a single image, or one entry (None or polygons) per image.
    names : sequence of str, optional
        Image names for the text.
    mode, val_fraction, margin
        As for :func:`napari_medseg.training.finetune.finetune_iter`.

    Examples
    --------
    >>> lab = np.zeros((100, 100), int); lab[40:50, 40:50] = 1
    >>> print(describe_region(lab).splitlines()[0])
    image #0: bounding box of the painted labels + margin, rows 24-65, cols 24-65 (1764 px, 18% of the image), 1 painted objects
    """
    labs = [labels] if isinstance(labels, np.ndarray) else list(labels)
    rois = per_image_roi(roi, len(labs))
    names = list(names) if names is not None else [""] * len(labs)
    regions = [find_region(lab, r, index=i, name=n, mode=mode, margin=margin)
               for i, (lab, r, n) in enumerate(zip(labs, rois, names, strict=False))]
    val = split_validation(regions, labs, fraction=val_fraction, mode=mode)
    return describe_regions(regions, val, mode)


def per_image_roi(roi, n_images: int) -> list:
    """Normalise the ``roi`` argument to one entry (None or a list of polygons) per image.

    A plain list of polygons is accepted for a single image.
    """
    if roi is None:
        return [None] * n_images
    items = list(roi)
    if items and all(_is_polygon(p) for p in items):
        if n_images != 1:
            raise ParameterError(
                f"roi is one list of polygons but there are {n_images} images: give one entry (None or a list "
                "of polygons) per image")
        return [items]
    if len(items) != n_images:
        raise ParameterError(f"roi has {len(items)} entries for {n_images} images; give one per image (None = no ROI)")
    return [None if r is None or len(r) == 0 else list(r) for r in items]


def _is_polygon(p) -> bool:
    try:
        a = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.ndim == 2 and a.shape[1] in (2, 3)
