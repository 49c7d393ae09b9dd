"""Benchmark: whole slides built from real tiles: open time of a >= 40k x 40k pyramid, heat-map localisation.

One figure per line::

    open_first_s_<edge>=...      the first open_slide() in a fresh Python (dask, zarr, imagecodecs imported by it)
    open_s_<edge>=...            open_slide() of the pyramidal OME-TIFF (median of --repeats, after imports)
    read_tiff_s_<edge>=...       the TIFF reader (napari's .tif path) on the same file
    tile_read_ms_<edge>=...      one 224 x 224 level-0 tile read (median of 50 random tissue tiles)
    tissue_s_<edge>=...          tissue detection on a low level; tissue_iou_<edge>= vs the layout
    heat_tiles_per_s=...         CNN tile classification throughput (tissue tiles, with test-time flips)
    iou_<grid>_<rule>=...        adenocarcinoma region vs truth, on the lc25000 val mosaic

Slides are written outside the repository (``--work``, default /tmp/medseg_slides); the big one is a
JPEG-compressed pyramid (levels 1/2 ... 1/32) of 224-px cells, each an LC25000 train tile or a DSB2018
histology crop, on an ellipse of tissue over glass.  The localisation mosaic is 20 x 20 cells of
``lc25000_lung/val`` tiles (each used once): ``lung_n`` tissue with an adenocarcinoma disc and a squamous
carcinoma disc, classified with ``medseg classify SLIDE --tiles 224`` (the CLI, end to end) by a CNN trained
here on ``lc25000_lung/train`` (``--model`` to reuse one).  Its weights stay in ``--work``: LC25000's
licence is unverified, nothing trained on it is shipped.  ``--offset 112`` shifts the mosaic by half a
tile so that the classification grid straddles four source tiles (real slides are never aligned).

Run: ``nice -n 10 python benchmarks/bench_slides.py --edge 40960 10240 --train-minutes 10``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))
CELL = 224
LEVELS = 5  # reductions 2 ... 32


# --------------------------------------------------------------------------- sources

def _lc_rows(split: str) -> list[dict]:
    return list(csv.DictReader((DATA / "lc25000_lung" / split / "labels.csv").open()))


def _read_rgb(path: Path) -> np.ndarray:
    from skimage.io import imread

    a = imread(path)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return np.ascontiguousarray(a[..., :3]).astype(np.uint8)


def _fit(a: np.ndarray) -> np.ndarray:
    """A 224 x 224 crop (or resize when smaller) of an RGB image."""
    from skimage.transform import resize

    if min(a.shape[:2]) < CELL:
        return (resize(a, (CELL, CELL), anti_aliasing=True, preserve_range=True)).astype(np.uint8)
    y, x = (a.shape[0] - CELL) // 2, (a.shape[1] - CELL) // 2
    return np.ascontiguousarray(a[y:y + CELL, x:x + CELL])


def _pyramid_cells(cells: list[np.ndarray]) -> list[np.ndarray]:
    """``out[k]``: (n, 224 / 2**k, 224 / 2**k, 3) block means of every cell, k = 0..LEVELS."""
    base = np.stack(cells).astype(np.float32)
    out = [base.astype(np.uint8)]
    cur = base
    for _ in range(LEVELS):
        n, h, w, c = cur.shape
        cur = cur.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
        out.append(np.rint(cur).astype(np.uint8))
    return out


GLASS = np.array((236, 234, 238), np.uint8)


def _band(layout: np.ndarray, cells_k: np.ndarray, y0: int, h: int, width: int, cell: int,
          offset: int = 0) -> np.ndarray:
    """Rows ``y0 .. y0 + h`` of the mosaic at a level whose cells are ``cell`` px (``-1`` = glass)."""
    band = np.empty((h, width, 3), np.uint8)
    band[:] = GLASS
    r0, r1 = max(0, (y0 - offset) // cell), min(layout.shape[0], (y0 + h - offset - 1) // cell + 1)
    for r in range(r0, r1):
        ya, yb = offset + r * cell, offset + (r + 1) * cell
        sa, sb = max(ya, y0), min(yb, y0 + h)
        if sb <= sa:
            continue
        row = layout[r]
        for c in np.nonzero(row >= 0)[0]:
            xa = offset + c * cell
            xb = min(xa + cell, width)
            if xb <= xa:
                continue
            band[sa - y0:sb - y0, xa:xb] = cells_k[row[c], sa - ya:sb - ya, :xb - xa]
    return band


def write_mosaic(path: Path, layout: np.ndarray, cells: list[np.ndarray], mpp: float, edge: int | None = None,
                 offset: int = 0, compression: str = "jpeg", tile: int = 512) -> Path:
    """A pyramidal OME-TIFF of the mosaic (levels written band by band: memory stays one tile row)."""
    import tifffile

    pyr = _pyramid_cells(cells)
    edge0 = edge or (offset + layout.shape[0] * CELL)
    width0 = edge or (offset + layout.shape[1] * CELL)

    def tiles(k: int):
        h, w = -(-edge0 // 2**k), -(-width0 // 2**k)
        cell, off = CELL >> k, offset >> k
        for y in range(0, h, tile):
            band = _band(layout, pyr[k], y, min(tile, h - y), w, cell, off)
            if band.shape[0] < tile:
                band = np.concatenate([band, np.broadcast_to(GLASS, (tile - band.shape[0], w, 3))])
            for x in range(0, w, tile):
                t = band[:, x:x + tile]
                if t.shape[1] < tile:
                    t = np.concatenate([t, np.broadcast_to(GLASS, (tile, tile - t.shape[1], 3))], axis=1)
                yield np.ascontiguousarray(t)

    opts = {"tile": (tile, tile), "photometric": "rgb", "compression": compression, "dtype": np.uint8}
    if compression == "jpeg":
        opts["compressionargs"] = {"level": 85}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(tiles(0), shape=(edge0, width0, 3), subifds=LEVELS,
                 metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}, **opts)
        for k in range(1, LEVELS + 1):
            tw.write(tiles(k), shape=(-(-edge0 // 2**k), -(-width0 // 2**k), 3), subfiletype=1, **opts)
    return path


# --------------------------------------------------------------------------- big slide: open time

def big_layout(n: int, n_cells: int, seed: int = 0) -> np.ndarray:
    """An ellipse of tissue (about 40 % of the slide) of random cell indices; -1 = glass."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] / n
    tissue = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.33) ** 2 <= 1
    lay = np.where(tissue, rng.integers(0, n_cells, (n, n)), -1)
    return lay.astype(np.int64)


def big_sources(limit: int = 160) -> list[np.ndarray]:
    rows = _lc_rows("train")[:limit]
    cells = [_fit(_read_rgb(DATA / "lc25000_lung" / "train" / "images" / r["file"])) for r in rows]
    idx = list(csv.DictReader((DATA / "dsb2018" / "train" / "index.csv").open()))
    histo = [r for r in idx if "histo" in r.values()][:40]
    key = next(iter(idx[0]))
    for r in histo:
        cells.append(_fit(_read_rgb(DATA / "dsb2018" / "train" / "images" / f"{r[key]}.tif")))
    return cells


_OPEN = """
import sys, time, statistics
sys.path.insert(0, {src!r})
import numpy as np
from napari_medseg.slides.pyramid import open_slide
from napari_medseg.io.tiff import read_tiff
p = {path!r}
a = time.perf_counter(); open_slide(p); first = time.perf_counter() - a  # imports dask, zarr, imagecodecs
t = []
for _ in range({repeats}):
    a = time.perf_counter(); s = open_slide(p); t.append(time.perf_counter() - a)
r = []
for _ in range({repeats}):
    a = time.perf_counter(); read_tiff(p); r.append(time.perf_counter() - a)
rng = np.random.default_rng(0)
h, w = s.shape
reads = []
for _ in range(50):
    y, x = int(rng.integers(int(h * 0.3), int(h * 0.7))), int(rng.integers(int(w * 0.3), int(w * 0.7)))
    a = time.perf_counter(); s.read(y, x, 224, 224); reads.append(time.perf_counter() - a)
print(first, statistics.median(t), statistics.median(r), 1000 * statistics.median(reads), s.shape, len(s.levels), s.mpp)
"""


def bench_open(edge: int, work: Path, repeats: int) -> None:
    from napari_medseg.slides.pyramid import open_slide
    from napari_medseg.slides.tissue import detect_tissue

    path = work / f"slide_{edge}.ome.tif"
    n = -(-edge // CELL)
    lay = big_layout(n, 200)
    if not path.exists():
        t = time.perf_counter()
        write_mosaic(path, lay, big_sources(), mpp=0.25, edge=edge)
        print(f"# wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s", flush=True)
    out = subprocess.run([sys.executable, "-c", _OPEN.format(src=str(REPO / "src"), path=str(path),
                                                               repeats=repeats)],
                         capture_output=True, text=True, check=True).stdout.split()
    print(f"open_first_s_{edge}={float(out[0]):.3f}  # first open in a fresh process: imports dask/zarr")
    print(f"open_s_{edge}={float(out[1]):.3f}")
    print(f"read_tiff_s_{edge}={float(out[2]):.3f}")
    print(f"tile_read_ms_{edge}={float(out[3]):.1f}")
    s = open_slide(path)
    detect_tissue(s)  # the first call imports scikit-image's filters and morphology
    t = time.perf_counter()
    m = detect_tissue(s)
    print(f"tissue_s_{edge}={time.perf_counter() - t:.2f}")
    # truth: the layout's tissue cells rasterised onto the mask grid
    truth_cells = lay >= 0
    yy = np.minimum(((np.arange(m.mask.shape[0]) + 0.5) * m.downsample[0] // CELL).astype(int), n - 1)
    xx = np.minimum(((np.arange(m.mask.shape[1]) + 0.5) * m.downsample[1] // CELL).astype(int), n - 1)
    truth = truth_cells[np.ix_(yy, xx)]
    print(f"tissue_iou_{edge}={(m.mask & truth).sum() / (m.mask | truth).sum():.4f}")
    print(f"# {edge}: levels {s.metadata['slide_levels']}, mask {m.mask.shape} (downsample {m.downsample[0]:.1f})",
          flush=True)


# --------------------------------------------------------------------------- localisation

def val_mosaic(n: int = 20, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """``(layout, cells, aca_truth, scc_truth)``: lung_n everywhere, an aca disc and an scc disc."""
    rng = np.random.default_rng(seed)
    rows = _lc_rows("val")
    by = {c: [r for r in rows if r["class"] == c] for c in ("lung_aca", "lung_n", "lung_scc")}
    for v in by.values():
        rng.shuffle(v)
    yy, xx = np.mgrid[:n, :n]
    aca = (yy - 6.5) ** 2 + (xx - 7.0) ** 2 <= 4.6**2
    scc = ((yy - 14.0) ** 2 + (xx - 14.5) ** 2 <= 3.4**2) & ~aca
    cls = np.where(aca, "lung_aca", np.where(scc, "lung_scc", "lung_n"))
    cells, lay = [], np.full((n, n), -1, np.int64)
    used = dict.fromkeys(by, 0)
    for r in range(n):
        for c in range(n):
            k = str(cls[r, c])
            row = by[k][used[k] % len(by[k])]
            used[k] += 1
            lay[r, c] = len(cells)
            cells.append(_fit(_read_rgb(DATA / "lc25000_lung" / "val" / "images" / row["file"])))
    print(f"# mosaic {n}x{n}: aca {aca.sum()} tiles, scc {scc.sum()}, normal {(~aca & ~scc).sum()}; "
          f"reuse: {max(0, max(used[k] - len(by[k]) for k in by))} tile(s) used twice", flush=True)
    return lay, cells, aca, scc


def train_model(work: Path, minutes: float) -> Path:
    out = work / "lc_model"
    if (out / "model.json").exists():
        return out
    table = work / "train.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class"])
        for r in _lc_rows("train"):
            w.writerow([DATA / "lc25000_lung" / "train" / "images" / r["file"], r["class"]])
    subprocess.run([sys.executable, "-m", "napari_medseg.cli", "train", "--mode", "classify", "--table", str(table),
                    "--out", str(out), "--minutes", str(minutes), "--device", "cpu", "--quiet"], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    return out


def bench_localisation(work: Path, model: Path | list[Path], offsets: list[int], smooth: float) -> None:
    models = [model] if isinstance(model, Path) else list(model)
    from napari_medseg.analysis.image_classify import classify_items

    lay, cells, aca, scc = val_mosaic()
    # the model on the val tiles themselves (no grid): per-class accuracy
    rows = _lc_rows("val")
    names_true = [r["class"] for r in rows]
    items = [_read_rgb(DATA / "lc25000_lung" / "val" / "images" / r["file"]) for r in rows]
    t = time.perf_counter()
    probs, names = classify_items(items, [str(m) for m in models])
    dt = time.perf_counter() - t
    pred = [names[i] for i in probs.argmax(1)]
    print(f"val_accuracy={np.mean([p == q for p, q in zip(pred, names_true, strict=True)]):.3f}")
    for c in names:
        sel = [i for i, q in enumerate(names_true) if q == c]
        print(f"val_recall_{c}={np.mean([pred[i] == c for i in sel]):.3f}")
    print(f"heat_tiles_per_s={len(items) / dt:.1f}")
    for off in offsets:
        path = write_mosaic(work / f"mosaic_off{off}.ome.tif", lay, cells, mpp=0.5, offset=off, compression="zlib")
        out = work / f"out_off{off}"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "napari_medseg.cli", "classify", str(path),
                        *[a for m in models for a in ("--model", str(m))],
                        "--tiles", "224", "-o", str(out), "--region-class", "lung_aca", "-q"], check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stdout=subprocess.DEVNULL)
        print(f"# offset {off}: medseg classify --tiles 224 took {time.perf_counter() - t:.0f} s", flush=True)
        _score(path, out, off, aca, smooth)


def _score(path: Path, out: Path, off: int, aca: np.ndarray, smooth: float) -> None:
    """IoU on a 16-px raster of level 0 between the true aca cells and the predicted aca tiles / regions."""
    import json

    from napari_medseg.slides.geojson import read_geojson
    from napari_medseg.slides.heatmap import HeatMap
    from napari_medseg.slides.pyramid import open_slide
    from napari_medseg.slides.regions import heatmap_regions

    s = open_slide(path)
    g = 16
    h, w = s.shape[0] // g, s.shape[1] // g
    truth = np.zeros((h, w), bool)
    cy = ((np.arange(h) + 0.5) * g - off) // CELL
    cx = ((np.arange(w) + 0.5) * g - off) // CELL
    ok_y, ok_x = (cy >= 0) & (cy < aca.shape[0]), (cx >= 0) & (cx < aca.shape[1])
    sub = aca[np.clip(cy, 0, aca.shape[0] - 1).astype(int)][:, np.clip(cx, 0, aca.shape[1] - 1).astype(int)]
    truth[np.ix_(ok_y, ok_x)] = sub[np.ix_(ok_y, ok_x)]
    rows = list(csv.DictReader((out / f"{path.name[:-8]}_tiles.csv").open()))
    names = [k[2:] for k in rows[0] if k.startswith("p_")]
    nr, nc = s.shape[0] // CELL, s.shape[1] // CELL
    probs = np.full((nr, nc, len(names)), np.nan, np.float32)
    for r in rows:
        probs[int(r["y0"]) // CELL, int(r["x0"]) // CELL] = [float(r[f"p_{n}"]) for n in names]

    def iou(tile_mask: np.ndarray) -> float:
        ty = np.minimum(((np.arange(h) + 0.5) * g) // CELL, nr - 1).astype(int)
        tx = np.minimum(((np.arange(w) + 0.5) * g) // CELL, nc - 1).astype(int)
        inside = (((np.arange(h) + 0.5) * g) < nr * CELL)[:, None] & (((np.arange(w) + 0.5) * g) < nc * CELL)[None]
        pred = tile_mask[np.ix_(ty, tx)] & inside
        return float((pred & truth).sum() / (pred | truth).sum())

    k = names.index("lung_aca")
    argmax = np.nan_to_num(probs, nan=-1).argmax(-1) == k
    print(f"iou_off{off}_argmax={iou(argmax & np.isfinite(probs[..., 0])):.3f}")
    heat = HeatMap(probabilities=probs, class_names=names, tile=(CELL, CELL), level=0, mpp=s.mpp,
                   geometry=s.geometry().zoomed((1 / CELL, 1 / CELL)))
    for sig in (0.0, smooth):
        regs, labels = heatmap_regions(heat, ["lung_aca"], sigma=sig)
        big = max(regs, key=lambda r: r.n_tiles) if regs else None
        mask = labels == big.id if big else np.zeros((nr, nc), bool)
        print(f"iou_off{off}_largest_region_sigma{sig:g}={iou(mask):.3f}  "
              f"# {len(regs)} region(s); largest {big.area if big else 0:.2f} mm2, "
              f"longest {big.longest_diameter if big else 0:.2f} mm; true aca {aca.sum() * (CELL * s.mpp[0] / 1000) ** 2:.2f} mm2")
    true_p = np.zeros((nr, nc, len(names)), np.float32)  # the true disc as a heat map of its own cells (any offset:
    true_p[..., names.index("lung_n")] = 1.0  # the same disc in mm): its area and longest diameter, as measured
    true_p[np.nonzero(aca)] = np.eye(len(names), dtype=np.float32)[k]
    tr = heatmap_regions(HeatMap(probabilities=true_p, class_names=names, tile=(CELL, CELL), level=0, mpp=s.mpp,
                                 geometry=heat.geometry), ["lung_aca"])[0]
    print(f"# truth as a region: {len(tr)} region(s), {tr[0].area:.2f} mm2, "
          f"longest {tr[0].longest_diameter:.2f} mm")
    objs = read_geojson(out / f"{path.name[:-8]}_regions.geojson")
    print(f"# geojson: {len(objs)} annotation(s), classes {sorted({o.class_name for o in objs})}; "
          f"{json.dumps(objs[0].measurements) if objs else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edge", type=int, nargs="*", default=[40960, 10240], help="big slide edges (px)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medseg_slides"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", type=Path, nargs="+", default=None,
                    help="an LC25000 classifier, or several (an ensemble); default: train one")
    ap.add_argument("--train-minutes", type=float, default=10.0)
    ap.add_argument("--offset", type=int, nargs="*", default=[0, 112])
    ap.add_argument("--smooth", type=float, default=1.0, help="heat-map smoothing (tiles) also scored")
    ap.add_argument("--skip-localisation", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "src"))
    for e in args.edge:
        bench_open(e, args.work, args.repeats)
    if not args.skip_localisation:
        model = args.model or train_model(args.work, args.train_minutes)
        bench_localisation(args.work, model, args.offset, args.smooth)


if __name__ == "__main__":
    main()
