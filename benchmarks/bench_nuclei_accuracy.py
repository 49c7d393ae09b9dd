#!/usr/bin/env python
"""Nuclei accuracy on dsb2018/val: shipped models vs a classical baseline.

    python benchmarks/bench_nuclei_accuracy.py [--datasets ../shared/datasets] [--device cpu] \
        [--model LABEL=FOLDER ...] [--only-models] [--no-tta]

For every modality of ``dsb2018/val`` (fluo, brightfield, histo) it scores,
on the same images in the same run:

- the shipped model a user gets for that image (``nuclei`` for grey images,
  ``nuclei-he`` for RGB histology; also ``nuclei`` on the histology converted
  to grey), through :func:`napari_medseg.api.segment`;
- the same with test-time augmentation (``tta=True``: maps averaged over 4
  mirror images);
- a classical baseline: Otsu threshold (foreground = the minority side, so
  bright and dark nuclei both work), hole filling, small-object removal,
  then the scikit-image distance-transform watershed (seeds = local maxima of
  the Euclidean distance, at least 4 px apart).

``--model LABEL=FOLDER`` adds a model folder (grey models get the grey
images and the grey of the RGB ones; RGB models the RGB histology), e.g.
candidates trained with ``scripts/train_default_models.py --output contour``
or ``--output star``; ``--only-models`` leaves out the shipped models and
the baseline, ``--no-tta`` the test-time-augmentation rows.

Prints a markdown table: AP@0.5, AP@0.75, mean AP over IoU 0.5:0.05:0.9
(DSB definition TP/(TP+FP+FN), mean over images; pooled AP@0.5 in the last
column), foreground Dice, and the number of images.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def otsu_watershed(image: np.ndarray, min_size: int = 16, min_distance: int = 4) -> np.ndarray:
    """Classical nuclei segmentation (scikit-image only) -> int32 labels."""
    from scipy import ndimage as ndi
    from skimage.color import rgb2gray
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label
    from skimage.segmentation import watershed

    grey = rgb2gray(image[..., :3]) if image.ndim == 3 else image.astype(np.float32)
    grey = gaussian(grey, 1.0)
    t = threshold_otsu(grey)
    fg = grey > t
    if fg.mean() > 0.5:  # nuclei are the minority class: dark nuclei on a light background
        fg = ~fg
    fg = ndi.binary_fill_holes(fg)
    sizes = np.bincount(label(fg).ravel())
    fg &= (sizes >= min_size)[label(fg)]
    dist = ndi.distance_transform_edt(fg)
    comp = label(fg)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=comp, exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    lab = watershed(-dist, markers, mask=fg)
    return lab.astype(np.int32)


def main(argv=None) -> int:
    import tifffile
    from skimage.color import rgb2gray

    from napari_medseg.analysis.evaluation import overall_scores, score_image
    from napari_medseg.api import segment

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", action="append", default=[], metavar="LABEL=FOLDER",
                    help="also score this model folder (repeatable)")
    ap.add_argument("--only-models", action="store_true", help="only the --model rows")
    ap.add_argument("--no-tta", action="store_true", help="no test-time augmentation rows")
    args = ap.parse_args(argv)
    from napari_medseg.models.spec import ModelCard

    extra = []
    for item in args.model:
        label, sep, folder = item.partition("=")
        if not sep or not Path(folder, "model.json").is_file():
            ap.error(f"--model {item!r}: give LABEL=FOLDER with a model.json in FOLDER")
        extra.append((label, folder, ModelCard.from_json(Path(folder, "model.json")).in_channels == 3))
    root = Path(args.datasets) / "dsb2018" / "val"
    if not root.exists():
        print(f"dataset not found: {root}", file=sys.stderr)
        return 2
    rows = list(csv.DictReader((root / "index.csv").read_text().splitlines()))
    methods: dict[tuple[str, str], list[dict]] = {}
    seconds: dict[tuple[str, str], float] = {}

    def add(mod, method, true, fn, name):
        t = time.perf_counter()
        pred = fn()
        seconds[(mod, method)] = seconds.get((mod, method), 0.0) + time.perf_counter() - t
        methods.setdefault((mod, method), []).append(score_image(true, np.asarray(pred).astype(np.int64), name))

    for r in rows:
        img = tifffile.imread(root / "images" / f"{r['id']}.tif")
        true = tifffile.imread(root / "masks" / f"{r['id']}.tif").astype(np.int64)
        mod = r["modality"]
        for label, folder, rgb_model in extra:
            if img.ndim == 3:
                x = img[..., :3] if rgb_model else (rgb2gray(img[..., :3]) * 255).astype(np.float32)
            elif rgb_model:
                continue
            else:
                x = img
            add(mod, label, true, lambda x=x, f=folder: segment(x, f, device=args.device), r["id"])
        if args.only_models:
            continue
        if img.ndim == 3:
            rgb = img[..., :3]
            add(mod, "nuclei-he (shipped, RGB)", true, lambda: segment(rgb, "nuclei-he", device=args.device), r["id"])  # noqa: B023
            grey = (rgb2gray(rgb) * 255).astype(np.float32)
            add(mod, "nuclei (shipped, grey of RGB)", true, lambda: segment(grey, "nuclei", device=args.device),  # noqa: B023
                r["id"])
            if not args.no_tta:
                add(mod, "nuclei-he (shipped, RGB) + tta", true,
                    lambda: segment(rgb, "nuclei-he", device=args.device, tta=True), r["id"])  # noqa: B023
        else:
            add(mod, "nuclei (shipped)", true, lambda: segment(img, "nuclei", device=args.device), r["id"])  # noqa: B023
            if not args.no_tta:
                add(mod, "nuclei (shipped) + tta", true,
                    lambda: segment(img, "nuclei", device=args.device, tta=True), r["id"])  # noqa: B023
        add(mod, "Otsu + watershed (skimage)", true, lambda: otsu_watershed(img), r["id"])  # noqa: B023

    print("| modality | method | n images | AP@0.5 | AP@0.75 | mAP 0.5:0.9 | Dice | pooled AP@0.5 | s/image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (mod, method), rs in sorted(methods.items()):
        o = overall_scores(rs)
        print(f"| {mod} | {method} | {o['n_images']} | {o['ap50']:.3f} | {o['ap75']:.3f} | {o['map']:.3f} | "
              f"{o['dice']:.3f} | {o['ap50_pooled']:.3f} | {seconds[(mod, method)] / o['n_images']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
