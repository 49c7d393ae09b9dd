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


def he_nuclei(shape: tuple[int, int], n: int, seed: int = 0) -> np.ndarray:
    """H&E-like RGB uint8 tissue: noisy pink stroma with ``n`` dark purple flat-topped nuclei (radius 5-9 px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    w = np.zeros(shape, np.float32)
    for _ in range(n):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(5, 9)
        w = np.maximum(w, np.exp(-((((yy - cy) ** 2 + (xx - cx) ** 2) / r**2) ** 3)))
    stroma, nucleus = np.array((232, 165, 210), np.float32), np.array((75, 35, 125), np.float32)
    img = stroma + w[..., None] * (nucleus - stroma) + rng.normal(0, 8, shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_window_slide(path: Path, size: int, window: np.ndarray, corner: tuple[int, int], mpp: float = 0.5,
                       smallest: int = 256, tile: int = 256) -> Path:
    """A ``size`` x ``size`` RGB OME-TIFF pyramid of glass (:data:`GLASS`) with ``window`` at ``corner`` (y, x).

    Levels halve down to ``smallest`` px; each is the 2 x 2 mean of the one above (as scanners average),
    computed on a glass canvas around the window only, so that a big slide costs no more memory than a small
    one.  Tiles are written one at a time (zlib).
    """
    import tifffile

    n_levels = 1
    while size // 2**n_levels >= smallest:
        n_levels += 1
    f = 2 ** (n_levels - 1)
    y0, x0 = corner[0] // f * f, corner[1] // f * f  # a canvas aligned to the coarsest level's pixels
    y1, x1 = -(-(corner[0] + window.shape[0]) // f) * f, -(-(corner[1] + window.shape[1]) // f) * f
    canvas = np.empty((y1 - y0, x1 - x0, 3), np.float64)
    canvas[:] = GLASS
    canvas[corner[0] - y0:corner[0] - y0 + window.shape[0], corner[1] - x0:corner[1] - x0 + window.shape[1]] = window
    levels = [canvas]
    for _ in range(1, n_levels):
        c = levels[-1]
        levels.append(c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2, 3).mean(axis=(1, 3)))
    levels = [np.clip(np.round(c), 0, 255).astype(np.uint8) for c in levels]

    def tiles(k: int):
        n, d = size // 2**k, 2**k
        cy, cx, c = y0 // d, x0 // d, levels[k]
        for ty in range(0, n, tile):
            for tx in range(0, n, tile):
                t = np.empty((tile, tile, 3), np.uint8)
                t[:] = GLASS
                ya, yb = max(ty, cy), min(ty + tile, cy + c.shape[0])
                xa, xb = max(tx, cx), min(tx + tile, cx + c.shape[1])
                if ya < yb and xa < xb:
                    t[ya - ty:yb - ty, xa - tx:xb - tx] = c[ya - cy:yb - cy, xa - cx:xb - cx]
                yield t

    opts = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib", "dtype": np.uint8}
    with tifffile.TiffWriter(path, ome=True, bigtiff=True) as tw:
        for k in range(n_levels):
            shape = (size // 2**k, size // 2**k, 3)
            if k == 0:
                tw.write(tiles(0), shape=shape, subifds=n_levels - 1, **opts,
                         metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp})
            else:
                tw.write(tiles(k), shape=shape, subfiletype=1, metadata=None, **opts)
    return path


#: :func:`write_tissue_and_debris_slide`: the tissue square (y0, x0, edge) and the debris area (from y, x to the end)
TISSUE_SQUARE = (32, 32, 400)
DEBRIS_FROM = 600


def write_tissue_and_debris_slide(path: Path, size: int = 1024, mpp: float = 0.5) -> Path:
    """An RGB OME-TIFF pyramid (levels /1, /2, /4, /8) of glass with a square of H&E-like tissue
    (:data:`TISSUE_SQUARE`, :func:`he_nuclei`) and eight nucleus-coloured specks (radius 7 px) on the glass
    past (:data:`DEBRIS_FROM`, :data:`DEBRIS_FROM`): debris a nuclei model segments when it runs on glass."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = GLASS
    y0, x0, edge = TISSUE_SQUARE
    img[y0:y0 + edge, x0:x0 + edge] = he_nuclei((edge, edge), 120, seed=1)
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in np.random.default_rng(0).uniform(DEBRIS_FROM + 20, size - 24, (8, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 49] = (75, 35, 125)
    return write_ome_pyramid(path, img, mpp=mpp, factors=(2, 4, 8))
