"""Synthetic whole slides from real dsb2018 tiles, written as pyramidal OME-TIFF (for the batch benchmarks).

Not a benchmark itself: :mod:`bench_wsi_memory` and :mod:`bench_batch` import it.
Tissue is a mosaic of real ``dsb2018`` H&E (``histo``) or fluorescence
(``fluo``) tiles, randomly flipped; the glass around it is white (histo) or
black (fluo).  Slides go to a temporary folder, never into the repository.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
TILE = 512  # TIFF tile edge


def dsb_tiles(modality: str, split: str = "train", edge: int = 256) -> list[np.ndarray]:
    """Every ``dsb2018/<split>`` image of ``modality`` cropped to ``edge`` x ``edge`` (RGB for histo, grey for fluo)."""
    import tifffile

    root = DATASETS / "dsb2018" / split
    if not root.is_dir():
        sys.exit(f"dsb2018 not found under {DATASETS} (../shared/datasets): these benchmarks need it")
    out = []
    with open(root / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["modality"] != modality or int(row["height"]) < edge or int(row["width"]) < edge:
                continue
            img = tifffile.imread(root / "images" / f"{row['id']}.tif")
            img = img[..., :3] if modality == "histo" else (img if img.ndim == 2 else img[..., 0])
            out.append(np.ascontiguousarray(img[:edge, :edge]))
    return out


def mosaic(tiles: Sequence[np.ndarray], shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A ``shape`` mosaic of randomly chosen and flipped ``tiles`` (same dtype and channels)."""
    rng = np.random.default_rng(seed)
    e = tiles[0].shape[0]
    ny, nx = math.ceil(shape[0] / e), math.ceil(shape[1] / e)
    rows = []
    for _ in range(ny):
        row = []
        for _ in range(nx):
            t = tiles[int(rng.integers(len(tiles)))]
            if rng.random() < 0.5:
                t = t[::-1]
            if rng.random() < 0.5:
                t = t[:, ::-1]
            row.append(t)
        rows.append(np.concatenate(row, axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[: shape[0], : shape[1]])


def level_sizes(size: int, smallest: int = 1024) -> list[int]:
    sizes = [size]
    while sizes[-1] > smallest:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def write_slide(path: Path, size: int, islands: Sequence[tuple[int, int, np.ndarray]], pixel_um: float = 0.5,
                background: int = 255) -> Path:
    """Write a ``size`` x ``size`` pyramidal OME-TIFF (JPEG tiles) with ``islands`` ``(y, x, array)`` of tissue.

    Level ``k`` is every ``2**k``-th pixel; the pixel size is in the OME
    metadata (µm) and the resolution tags.
    """
    import tifffile

    rgb = islands[0][2].ndim == 3
    sizes = level_sizes(size)

    def tiles(k: int) -> Iterator[np.ndarray]:
        f = 2**k
        small = [(y // f, x // f, a[::f, ::f]) for y, x, a in islands]
        n = sizes[k]
        for ty in range(0, n, TILE):
            for tx in range(0, n, TILE):
                t = np.full((TILE, TILE, 3) if rgb else (TILE, TILE), background, np.uint8)
                for y, x, a in small:
                    y0, x0 = max(ty, y), max(tx, x)
                    y1, x1 = min(ty + TILE, y + a.shape[0]), min(tx + TILE, x + a.shape[1])
                    if y0 < y1 and x0 < x1:
                        t[y0 - ty:y1 - ty, x0 - tx:x1 - tx] = a[y0 - y:y1 - y, x0 - x:x1 - x]
                yield t

    opts = {"tile": (TILE, TILE), "photometric": "rgb" if rgb else "minisblack", "compression": "jpeg",
            "compressionargs": {"level": 90}, "dtype": np.uint8, "resolutionunit": "CENTIMETER"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        for k, n in enumerate(sizes):
            shape = (n, n, 3) if rgb else (n, n)
            res = (1e4 / (pixel_um * 2**k),) * 2
            if k == 0:
                meta = {"axes": "YXS" if rgb else "YX", "PhysicalSizeX": pixel_um, "PhysicalSizeXUnit": "µm",
                        "PhysicalSizeY": pixel_um, "PhysicalSizeYUnit": "µm"}
                tw.write(tiles(0), shape=shape, subifds=len(sizes) - 1, metadata=meta, resolution=res, **opts)
            else:
                tw.write(tiles(k), shape=shape, subfiletype=1, metadata=None, resolution=res, **opts)
    return path


def tissue_mask(path: Path, min_side: int = 1024) -> np.ndarray:
    """A tissue mask from the smallest level with a side >= ``min_side``: pixels darker than the glass."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        levels = tf.series[0].levels
        lv = next(lv for lv in reversed(levels) if max(lv.shape[:2]) >= min_side)
        img = lv.asarray()
    grey = img.min(axis=-1) if img.ndim == 3 else img
    return grey < 230 if img.ndim == 3 else grey > 25
