"""The best IoU a tile grid allows on the LC25000 val mosaic of ``bench_slides.py`` (no classifier).

A "perfect" classifier labels each non-overlapping 224-px tile adenocarcinoma when at least half of it
(``--rule ge``) or more than half (``gt``) is adenocarcinoma; the IoU with the true disc is scored on the
16-px raster of ``bench_slides._score``.  With ``--offset 112`` every tile straddles four source cells.

Run: ``python benchmarks/heatmap_grid_ceiling.py --offset 0 112``.
"""

from __future__ import annotations

import argparse

import numpy as np

CELL, RASTER, N = 224, 16, 20


def ceiling(offset: int) -> dict[str, float]:
    yy, xx = np.mgrid[:N, :N]
    aca = (yy - 6.5) ** 2 + (xx - 7.0) ** 2 <= 4.6**2  # bench_slides.val_mosaic's disc
    edge = offset + N * CELL
    h = edge // RASTER
    cy = ((np.arange(h) + 0.5) * RASTER - offset) // CELL
    ok = (cy >= 0) & (cy < N)
    idx = np.clip(cy, 0, N - 1).astype(int)
    truth = np.zeros((h, h), bool)
    truth[np.ix_(ok, ok)] = aca[np.ix_(idx, idx)][np.ix_(ok, ok)]
    nr = edge // CELL
    full = np.zeros((edge, edge), bool)
    full[offset:, offset:] = np.kron(aca, np.ones((CELL, CELL), bool))
    share = full[:nr * CELL, :nr * CELL].reshape(nr, CELL, nr, CELL).mean(axis=(1, 3))
    ty = np.minimum(((np.arange(h) + 0.5) * RASTER) // CELL, nr - 1).astype(int)
    inside = ((np.arange(h) + 0.5) * RASTER) < nr * CELL
    out = {}
    for rule, tiles in (("ge", share >= 0.5), ("gt", share > 0.5)):
        pred = tiles[np.ix_(ty, ty)] & inside[:, None] & inside[None]
        out[rule] = float((pred & truth).sum() / (pred | truth).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offset", type=int, nargs="+", default=[0, 112])
    for off in ap.parse_args().offset:
        c = ceiling(off)
        print(f"ceiling_iou_off{off}: at least half aca {c['ge']:.3f}, more than half {c['gt']:.3f}")


if __name__ == "__main__":
    main()
