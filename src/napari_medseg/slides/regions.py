"""Lesion regions from a heat map: thresholded, connected tiles with class, mean probability, area and diameter.

A region of class ``c`` is a connected group (8-neighbourhood) of classified
tiles whose probability of ``c`` (optionally smoothed over neighbouring tiles
with a Gaussian of ``sigma`` tiles) is at least ``threshold``.  Its area is
the number of tiles times the tile area; its longest diameter is the largest
distance between two corners of its tiles (the maximum Feret diameter of the
union of tile squares); both in mm when the slide is calibrated, else in
level-0 pixels.  Its outline is traced through tile edges (marching squares,
so a convex corner is cut diagonally across half a tile) in level-0 pixel
coordinates ``(x, y)`` with the origin at the slide's top-left corner, the
convention of QuPath's GeoJSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError


@dataclass
class Region:
    """One lesion region of a heat map.

    Attributes
    ----------
    id : int
        1-based id (value in the labels grid).
    class_name : str
    mean_probability : float
        Mean (unsmoothed) probability of the class over the region's tiles.
    n_tiles : int
    area : float
        mm² (or level-0 px² when uncalibrated, see ``unit``).
    longest_diameter : float
        mm (or level-0 px).
    unit : str
        ``"mm"`` or ``"pixel"``.
    polygons : list of list of ndarray
        Polygons (:func:`~napari_medseg.slides.outline.mask_polygons`): each ``[outline, holes...]``, rings
        ``(N, 2)`` closed ``(x, y)`` level-0 pixel coordinates.
    """

    id: int
    class_name: str
    mean_probability: float
    n_tiles: int
    area: float
    longest_diameter: float
    unit: str
    polygons: list[list[np.ndarray]] = field(default_factory=list)


def _smooth(p: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage as ndi

    num = ndi.gaussian_filter(np.where(valid, p, 0.0), sigma, mode="constant")
    den = ndi.gaussian_filter(valid.astype(np.float64), sigma, mode="constant")
    return np.where(valid, num / np.maximum(den, 1e-12), np.nan)


def _longest(mask: np.ndarray, sy: float, sx: float) -> float:
    from scipy.spatial import ConvexHull

    r, c = np.nonzero(mask)
    pts = np.concatenate([np.stack([(r + a) * sy, (c + b) * sx], axis=1) for a in (0, 1) for b in (0, 1)])
    pts = pts[ConvexHull(pts).vertices]  # the corners of unit squares are never collinear
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d**2).sum(-1)).max())


def heatmap_regions(heat: Any, classes: Sequence[str] | None = None, *, threshold: float = 0.5,
                    sigma: float = 0.0, min_tiles: int = 1, fill_holes: bool = False
                    ) -> tuple[list[Region], np.ndarray]:
    """Regions of a :class:`~napari_medseg.slides.heatmap.HeatMap`.

    Parameters
    ----------
    heat : HeatMap
    classes : sequence of str, optional
        Classes to outline (default: all).
    threshold : float
        Probability at or above which a tile belongs to a class region.
    sigma : float
        Gaussian smoothing of each class's probabilities, in tiles (0: none).
    min_tiles : int
        Smaller regions are dropped.
    fill_holes : bool
        Fill holes inside each region.

    Returns
    -------
    regions : list of Region
        Ordered by class (as in ``classes``), then by area, largest first.
    labels : ndarray of int32, shape (rows, cols)
        Region id of each tile (0: none); with overlapping classes (a
        threshold below 0.5), later classes overwrite earlier ones.
    """
    from scipy import ndimage as ndi

    from .outline import mask_polygons

    names = list(heat.class_names)
    chosen = names if classes is None else list(classes)
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ParameterError(f"classes {unknown} are not among the heat map's classes {names}")
    if not 0.0 < threshold <= 1.0:
        raise ParameterError(f"threshold must be in (0, 1], got {threshold}")
    valid = heat.classified
    ty, tx = heat.tile
    if heat.mpp is not None:
        sy, sx, unit = heat.mpp[0] * ty / 1000.0, heat.mpp[1] * tx / 1000.0, "mm"
    else:
        sy, sx, unit = float(ty), float(tx), "pixel"
    labels = np.zeros(valid.shape, np.int32)
    regions: list[Region] = []
    for name in chosen:
        p = np.where(valid, heat.probabilities[..., names.index(name)].astype(np.float64), np.nan)
        ps = _smooth(p, valid, sigma) if sigma > 0 else p
        mask = np.nan_to_num(ps, nan=0.0) >= threshold
        lab, n = ndi.label(mask, structure=np.ones((3, 3), bool))
        found = []
        for i in range(1, n + 1):
            m = lab == i
            if fill_holes:
                m = ndi.binary_fill_holes(m)
            k = int(m.sum())
            if k < min_tiles:
                continue
            found.append((k, m))
        for k, m in sorted(found, key=lambda km: -km[0]):
            rid = len(regions) + 1
            labels[m] = rid
            regions.append(Region(id=rid, class_name=name, mean_probability=float(np.nanmean(p[m])), n_tiles=k,
                                  area=k * sy * sx, longest_diameter=_longest(m, sy, sx), unit=unit,
                                  polygons=mask_polygons(m, (ty, tx))))
    return regions, labels


def regions_table(regions: Sequence[Region]) -> Any:
    """A DataFrame: ``id, class, mean_probability, n_tiles, area_mm2, longest_diameter_mm`` (``_px`` when uncalibrated)."""
    import pandas as pd

    unit = regions[0].unit if regions else "mm"
    a, d = ("area_mm2", "longest_diameter_mm") if unit == "mm" else ("area_px2", "longest_diameter_px")
    return pd.DataFrame({"id": [r.id for r in regions], "class": [r.class_name for r in regions],
                         "mean_probability": [r.mean_probability for r in regions],
                         "n_tiles": [r.n_tiles for r in regions], a: [r.area for r in regions],
                         d: [r.longest_diameter for r in regions]})


__all__ = ["Region", "heatmap_regions", "regions_table"]
