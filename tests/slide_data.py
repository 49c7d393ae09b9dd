"""Small real pyramids written by tifffile (SVS-like, OME-TIFF) and a tiny tile classifier, for the slide tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GLASS = (236, 234, 238)
CLASSES = ("normal", "tumour")


def tile_pixels(kind: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """An H&E-like RGB uint8 tile: pale pink ``normal`` or dark purple ``tumour`` with nuclei."""
    base = np.array((205, 110, 200) if kind == "tumour" else (232, 170, 215), float)
    t = rng.normal(0, 10, (size, size, 3)) + base
    yy, xx = np.mgrid[:size, :size]
    for _ in range(6 if kind == "tumour" else 2):
        cy, cx = rng.integers(0, size, 2)
        t[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2] = (80, 30, 120)
    return np.clip(t, 0, 255).astype(np.uint8)


def mosaic(truth: np.ndarray, tissue: np.ndarray, tile: int = 32, seed: int = 0) -> np.ndarray:
    """An RGB slide ``(rows * tile, cols * tile, 3)``: tumour tiles where ``truth``, normal on the rest of
    ``tissue``, glass elsewhere."""
    rng = np.random.default_rng(seed)
    rows, cols = truth.shape
    img = np.empty((rows * tile, cols * tile, 3), np.uint8)
    img[:] = GLASS
    for r in range(rows):
        for c in range(cols):
            if tissue[r, c]:
                img[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = tile_pixels(
                    "tumour" if truth[r, c] else "normal", rng, tile)
    return img


def write_svs_like(path: Path, img: np.ndarray, mpp: float = 0.5, factors=(4, 16)) -> Path:
    """An Aperio-style file: tiled baseline with ``MPP`` in its description, thumbnail, reduced levels,
    label (subfile 1) and macro (subfile 9), in the page order tifffile's SVS parser expects."""
    import tifffile

    desc = (f"Aperio Image Library v12.0.15\n{img.shape[1]}x{img.shape[0]} (256x256) JPEG/RGB Q=70|AppMag = 20|"
            f"MPP = {mpp}|Filename = test")
    opts = {"photometric": "rgb", "compression": "zlib", "metadata": None}
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, tile=(256, 256), description=desc, **opts)
        tw.write(np.ascontiguousarray(img[::32, ::32]), description="Aperio Image Library thumbnail", **opts)
        for k in factors:
            tw.write(np.ascontiguousarray(img[::k, ::k]), tile=(64, 64), description=f"Aperio level {k}", **opts)
        tw.write(np.full((60, 80, 3), 200, np.uint8), subfiletype=1, description="Aperio label", **opts)
        tw.write(np.full((60, 160, 3), 100, np.uint8), subfiletype=9, description="Aperio macro", **opts)
    return path


def write_ome_pyramid(path: Path, img: np.ndarray, mpp: float = 0.25, factors=(2, 4, 8), tile: int = 256) -> Path:
    """A pyramidal OME-TIFF: level 0 with ``PhysicalSizeX/Y`` (µm) and its reductions as SubIFDs."""
    import tifffile

    axes = "YXS" if img.ndim == 3 else "YX"
    opts = {"tile": (tile, tile), "photometric": "rgb" if img.ndim == 3 else "minisblack", "compression": "zlib"}
    with tifffile.TiffWriter(path, ome=True, bigtiff=True) as tw:
        tw.write(img, subifds=len(factors), metadata={"axes": axes, "PhysicalSizeX": mpp, "PhysicalSizeY": mpp},
                 **opts)
        for k in factors:
            tw.write(np.ascontiguousarray(img[::k, ::k]), subfiletype=1, **opts)
    return path


def train_tiny(out: Path, seed: int = 0) -> Path:
    """A 2-class CNN (16 px input, depth 2) trained in seconds on :func:`tile_pixels` tiles."""
    from napari_medseg.progress import run
    from napari_medseg.training.classifier import train_classifier_iter

    rng = np.random.default_rng(seed)
    kinds = list(CLASSES) * 12
    items = [tile_pixels(k, rng) for k in kinds]
    res = run(train_classifier_iter(items, kinds, size=16, depth=2, base_channels=4, epochs=12, minutes=None,
                                    batch_size=8, lr=5e-3, patience=12, seed=seed, device="cpu", out=out,
                                    name=out.name, augment=False))
    return res.model_path
