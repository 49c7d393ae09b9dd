"""Object measurements: napari_medseg.analysis.measure vs skimage.measure.regionprops_table.

Builds a 4096 x 4096 label image with 10,000 ellipses of varied size, aspect
and orientation (one per cell of a 100 x 100 grid) and a float32 intensity
image, then times both implementations on the same properties in the same run
(median of --repeats, runs interleaved), checks that every shared column agrees, and prints one
line per figure.

    python benchmarks/bench_measure.py [--size 4096] [--grid 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from skimage.draw import ellipse
from skimage.measure import regionprops_table

from napari_medseg.analysis.measure import measure

SKIMAGE_PROPS = (
    "label", "centroid", "bbox", "area", "equivalent_diameter_area", "perimeter", "eccentricity",
    "solidity", "axis_major_length", "axis_minor_length",
    "intensity_mean", "intensity_min", "intensity_max", "intensity_std",
)
# our column -> skimage column, for the agreement check
PAIRS = {
    "centroid_y": "centroid-0", "centroid_x": "centroid-1",
    "bbox_y0": "bbox-0", "bbox_x0": "bbox-1", "bbox_y1": "bbox-2", "bbox_x1": "bbox-3",
    "area_px2": "area", "equivalent_diameter_px": "equivalent_diameter_area", "perimeter_px": "perimeter",
    "eccentricity": "eccentricity", "solidity": "solidity",
    "major_axis_length_px": "axis_major_length", "minor_axis_length_px": "axis_minor_length",
    "mean_intensity": "intensity_mean", "min_intensity": "intensity_min",
    "max_intensity": "intensity_max", "std_intensity": "intensity_std",
}


def make_labels(size: int, grid: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``grid**2`` ellipses (radius 4 to cell/2 - 2 px, aspect 0.5-1, any angle) and a noisy image."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    cell = size / grid
    k = 0
    for i in range(grid):
        for j in range(grid):
            k += 1
            r = rng.uniform(4, cell / 2 - 2)
            c = rng.uniform(0.5, 1.0) * r
            cy = (i + 0.5) * cell + rng.uniform(-1.5, 1.5)
            cx = (j + 0.5) * cell + rng.uniform(-1.5, 1.5)
            rr, cc = ellipse(cy, cx, r, c, shape=labels.shape, rotation=rng.uniform(0, np.pi))
            labels[rr, cc] = k
    image = (rng.normal(100, 10, labels.shape) + 50 * (labels > 0)).astype(np.float32)
    return labels, image


def timed_pair(fn_a, fn_b, repeats: int) -> tuple[float, float, object, object]:
    """Median run time of two functions, runs interleaved (a, b, a, b...) so load changes hit both."""
    ta, tb, out_a, out_b = [], [], None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out_a = fn_a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out_b = fn_b()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb), out_a, out_b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--grid", type=int, default=100, help="objects = grid**2")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    labels, image = make_labels(args.size, args.grid)
    n_obj = len(np.unique(labels)) - 1
    print(f"image {labels.shape}, objects {n_obj}, foreground {100 * np.mean(labels > 0):.1f}%")

    # warm-up on a corner (imports, caches) so that neither side pays for them in the timings
    measure(labels[:256, :256], image[:256, :256])
    regionprops_table(labels[:256, :256], image[:256, :256], properties=SKIMAGE_PROPS)
    t_ours, t_sk, ours, sk = timed_pair(
        lambda: measure(labels, image),
        lambda: regionprops_table(labels, image, properties=SKIMAGE_PROPS),
        args.repeats,
    )
    print(f"napari_medseg measure:          {t_ours:.3f} s (median of {args.repeats})")
    print(f"skimage regionprops_table:      {t_sk:.3f} s (median of {args.repeats})")
    print(f"speed-up (regionprops / ours):  {t_sk / t_ours:.1f}x")

    assert np.array_equal(ours["label"].to_numpy(), sk["label"])
    worst = {"geometry": (0.0, ""), "intensity": (0.0, "")}
    for a, b in PAIRS.items():
        ref = np.asarray(sk[b], dtype=np.float64)
        err = float(np.max(np.abs(ours[a].to_numpy() - ref) / np.maximum(1.0, np.abs(ref))))
        kind = "intensity" if b.startswith("intensity") else "geometry"
        worst[kind] = max(worst[kind], (err, a))
    print(f"max relative difference, geometry columns:  {worst['geometry'][0]:.1e} ({worst['geometry'][1]})")
    print(
        f"max relative difference, intensity columns: {worst['intensity'][0]:.1e} ({worst['intensity'][1]}; "
        "skimage averages float32 images in float32, ours in float64)"
    )

if __name__ == "__main__":
    main()
