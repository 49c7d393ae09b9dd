"""One slide, end to end: tissue, tile heat map, regions, and the files ``medseg classify SLIDE --tiles PX`` writes.

Files written in ``out`` (``<stem>`` = the slide's file name without suffix):

* ``<stem>_tiles.csv``: ``y0,x0,class,p_<class>...``, one row per classified tile, ``y0, x0`` its top-left
  corner in level-0 pixels;
* ``<stem>_heatmap.ome.tif``: float32 ``(class, row, col)`` probabilities, pixel size = tile edge (µm);
* ``<stem>_regions.geojson``: the regions as QuPath annotations with class, colour and measurements;
* ``<stem>_regions.csv``: the regions table (class, mean probability, area mm², longest diameter mm).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..progress import CancelToken, Progress


@dataclass
class SlideJobResult:
    """What :func:`classify_slide_job_iter` made."""

    heatmap: Any
    regions: list[Any]
    tissue: Any
    files: dict[str, Path] = field(default_factory=dict)


def slide_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix (``a.ome.tif``, ``a.svs`` -> ``a``)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def classify_slide_job_iter(path: str | os.PathLike, model: Any, out: str | os.PathLike, *, tile: int,
                            level: int = 0, tissue: bool = True, min_tissue: float = 0.25,
                            threshold: float = 0.5, classes: Sequence[str] | None = None, sigma: float = 0.0,
                            min_tiles: int = 1, tta: bool = True, cancel: CancelToken | None = None
                            ) -> Generator[Progress, None, SlideJobResult]:
    """Open a slide, find its tissue, classify its tiles, outline regions and write the files above.

    Parameters are those of :func:`~napari_medseg.slides.heatmap.classify_slide_iter`
    (``tissue=False`` classifies every tile) and
    :func:`~napari_medseg.slides.regions.heatmap_regions`.
    """
    from ..analysis.objects import write_objects_csv
    from .geojson import region_features, write_geojson
    from .heatmap import classify_slide_iter, write_heatmap_tiff
    from .pyramid import open_slide
    from .regions import heatmap_regions, regions_table
    from .tissue import detect_tissue

    slide = open_slide(path)
    mask = detect_tissue(slide) if tissue else None
    heat = yield from classify_slide_iter(slide, model, tile=tile, level=level, tissue=mask, min_tissue=min_tissue,
                                          tta=tta, cancel=cancel)
    regions, _ = heatmap_regions(heat, classes, threshold=threshold, sigma=sigma, min_tiles=min_tiles)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = slide_stem(path)
    files = {"tiles": out / f"{stem}_tiles.csv", "heatmap": out / f"{stem}_heatmap.ome.tif",
             "regions": out / f"{stem}_regions.geojson", "regions_table": out / f"{stem}_regions.csv"}
    write_objects_csv(files["tiles"], heat.table())
    write_heatmap_tiff(files["heatmap"], heat)
    write_geojson(files["regions"], region_features(regions))
    write_objects_csv(files["regions_table"], regions_table(regions))
    return SlideJobResult(heatmap=heat, regions=regions, tissue=mask, files=files)


__all__ = ["SlideJobResult", "classify_slide_job_iter", "slide_stem"]
