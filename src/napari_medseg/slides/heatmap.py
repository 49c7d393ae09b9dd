"""A CNN tile classifier swept over a slide: a class-probability heat map aligned with the slide.

The grid has non-overlapping tiles of ``tile`` pixels of a chosen pyramid
level, starting at the slide's top-left corner; only whole tiles are
classified (the last partial row and column, less than a tile, are not).
With a :class:`~napari_medseg.slides.tissue.TissueMask`, tiles whose tissue
fraction is below ``min_tissue`` are skipped (their probabilities are NaN).
Heat-map pixel ``(i, j)`` is the tile covering level-0 pixels
``[i * T, (i + 1) * T) x [j * T, (j + 1) * T)``, ``T`` = tile edge in level-0
pixels; :attr:`HeatMap.geometry` places it on the slide.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..geometry import Geometry
from ..progress import CancelToken, Progress


@dataclass
class HeatMap:
    """Class probabilities of each tile of a grid over a slide.

    Attributes
    ----------
    probabilities : ndarray of float32, shape (rows, cols, n_classes)
        Calibrated probabilities; NaN for tiles not classified (no tissue).
    class_names : list of str
    tile : (float, float)
        Tile edge ``(y, x)`` in level-0 pixels.
    level : int
        Pyramid level the tiles were read from.
    mpp : (float, float) or None
        Level-0 pixel size of the slide (µm).
    geometry : Geometry
        Heat-map index -> slide world.
    """

    probabilities: np.ndarray
    class_names: list[str]
    tile: tuple[float, float]
    level: int
    mpp: tuple[float, float] | None
    geometry: Geometry

    @property
    def classified(self) -> np.ndarray:
        """``(rows, cols)`` bool: tiles that were classified."""
        return np.isfinite(self.probabilities[..., 0])

    def class_map(self) -> np.ndarray:
        """``(rows, cols)`` int: index of the most probable class, -1 where not classified."""
        p = np.nan_to_num(self.probabilities, nan=-1.0)
        out = p.argmax(axis=-1).astype(np.int64)
        out[~self.classified] = -1
        return out

    def table(self) -> Any:
        """One row per classified tile: ``y0, x0`` (top-left, level-0 px), ``class``, ``p_<class>``..."""
        import pandas as pd

        rows, cols = np.nonzero(self.classified)
        cm = self.class_map()
        t = pd.DataFrame({"y0": np.round(rows * self.tile[0]).astype(np.int64),
                          "x0": np.round(cols * self.tile[1]).astype(np.int64),
                          "class": [self.class_names[k] for k in cm[rows, cols]]})
        for k, n in enumerate(self.class_names):
            t[f"p_{n}"] = self.probabilities[rows, cols, k].astype(np.float64)
        return t


def tile_grid(slide: Any, tile: int, level: int = 0) -> tuple[tuple[int, int], tuple[float, float]]:
    """``((rows, cols), (ty, tx))``: whole tiles of ``tile`` px at ``level`` and their edge in level-0 px."""
    if int(tile) != tile or tile < 8:
        raise ParameterError(f"tile size must be a whole number of pixels >= 8, got {tile}")
    h, w = slide.level_shape(level)
    rows, cols = h // int(tile), w // int(tile)
    if rows == 0 or cols == 0:
        raise ParameterError(f"tiles of {tile} px do not fit in level {level} of {slide.name} ({h}x{w} px)")
    dy, dx = slide.downsample(level)
    return (rows, cols), (tile * dy, tile * dx)


def classify_slide_iter(slide: Any, model: str | os.PathLike | Sequence[str | os.PathLike], *, tile: int = 224,
                        level: int = 0, tissue: Any = None, min_tissue: float = 0.25, tta: bool = True,
                        batch_size: int = 64, cancel: CancelToken | None = None
                        ) -> Generator[Progress, None, HeatMap]:
    """Classify the tiles of a slide with a CNN classifier; yields one :class:`Progress` per tile row.

    Parameters
    ----------
    slide : Slide
    model : str or path, or a sequence (ensemble)
        Classification model(s) (``medseg train --mode classify``).
    tile : int
        Tile edge in pixels of ``level`` (resized to the model's input).
    level : int
        Pyramid level to read tiles from (0 = full resolution).
    tissue : TissueMask, optional
        Classify only tiles with at least ``min_tissue`` tissue.
    tta : bool
        Average over test-time flips.

    Returns
    -------
    HeatMap
    """
    from ..analysis.image_classify import load_classifiers, predict_probabilities

    (rows, cols), (ty, tx) = tile_grid(slide, tile, level)
    if not 0.0 <= min_tissue <= 1.0:
        raise ParameterError(f"min_tissue must be in [0, 1], got {min_tissue}")
    loaded = load_classifiers(model)
    names = list(loaded[0][1].output["class_names"])
    todo = np.ones((rows, cols), bool) if tissue is None else tissue.tile_fraction((ty, tx), (rows, cols)) >= min_tissue
    probs = np.full((rows, cols, len(names)), np.nan, np.float32)
    t = int(tile)
    total = int(todo.any(axis=1).sum())
    done = 0
    for r in range(rows):
        if cancel is not None:
            cancel.raise_if_cancelled()
        cs = np.nonzero(todo[r])[0]
        if not len(cs):
            continue
        band = slide.read(r * t, cs[0] * t, t, (cs[-1] + 1 - cs[0]) * t, level)
        items = [band[:, (c - cs[0]) * t:(c - cs[0] + 1) * t] for c in cs]
        probs[r, cs] = predict_probabilities(loaded, items, tta=tta, batch_size=batch_size)
        done += 1
        yield Progress(done, total, f"tile row {r + 1}/{rows}: {len(cs)} tile(s)")
    geometry = slide.geometry().zoomed((1 / ty, 1 / tx))
    return HeatMap(probabilities=probs, class_names=names, tile=(ty, tx), level=int(level), mpp=slide.mpp,
                   geometry=geometry)


def write_heatmap_tiff(path: str | os.PathLike, heat: HeatMap) -> Any:
    """Write the heat map as a float32 OME-TIFF ``(C, Y, X)``, one channel per class, named by class.

    Its pixel size is the tile edge (µm when the slide is calibrated), so
    heat-map pixel ``(i, j)`` covers the same area of the slide as tile
    ``(i, j)`` when both images are placed by their top-left corner (Fiji,
    QuPath).  Tiles not classified are NaN.
    """
    import tifffile

    from ..io.atomic import atomic_write

    data = np.ascontiguousarray(np.moveaxis(heat.probabilities, -1, 0).astype(np.float32))
    meta: dict[str, Any] = {"axes": "CYX", "Channel": {"Name": list(heat.class_names)}}
    if heat.mpp is not None:
        meta.update(PhysicalSizeY=heat.tile[0] * heat.mpp[0], PhysicalSizeYUnit="µm",
                    PhysicalSizeX=heat.tile[1] * heat.mpp[1], PhysicalSizeXUnit="µm")

    def write(tmp: Any) -> None:
        tifffile.imwrite(tmp, data, ome=True, metadata=meta, compression="zlib")

    return atomic_write(path, write)


__all__ = ["HeatMap", "classify_slide_iter", "tile_grid", "write_heatmap_tiff"]
