#!/usr/bin/env python
"""Nuclei accuracy on dsb2018/val: shipped models vs StarDist, Cellpose and a classical baseline.

    python benchmarks/bench_nuclei_accuracy.py [--datasets ../shared/datasets] [--device cpu] \
        [--model LABEL=FOLDER ...] [--only-models] [--no-tta] \
        [--peers-root /work/peers] [--peers-python /work/peers-venv/bin/python] [--threads N] [--no-peers] \
        [--per-modality N]

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
  the Euclidean distance, at least 4 px apart);
- the peers, StarDist (grey and H&E RGB) and Cellpose 3 (grey), each trained
  here from scratch on exactly our training split by ``benchmarks/peers/``
  (see its README): in this run each predicts ``val`` in its own venv (a
  subprocess writing label TIFFs under ``--peers-root``), and the labels are
  scored here by the same matcher.  A peer whose venv or trained model is
  absent is skipped with a line on stderr.

``--model LABEL=FOLDER`` adds a model folder (grey models get the grey
images and the grey of the RGB ones; RGB models the RGB histology), e.g.
candidates trained with ``scripts/train_default_models.py --output contour``
or ``--output star`` (each also with test-time augmentation, ``LABEL + tta``);
``--only-models`` leaves out the shipped models and the baseline, ``--no-tta``
the test-time-augmentation rows.

Prints a markdown table: AP@0.5, AP@0.75, mean AP over IoU 0.5:0.05:0.9
(DSB definition TP/(TP+FP+FN), mean over images), foreground Dice, pooled
AP@0.5, seconds per image and inference throughput in megapixels per second
(whole prediction: normalisation, network, post-processing; for ours through
``api.segment``, after one untimed warm-up call per model; for the peers as
timed inside their process, also after a warm-up), and the number of images.
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
PEERS_DIR = Path(__file__).resolve().parent / "peers"


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


def run_peers(args, add_scored) -> list[str]:
    """Predict ``val`` with each trained peer in its venv, score it here; return lines on what ran or was skipped."""
    sys.path.insert(0, str(PEERS_DIR))
    import peerdata

    root, python = Path(args.peers_root), Path(args.peers_python)
    notes = []
    for peer in peerdata.PEERS.values():
        why = peerdata.stop_reason(peer, root, python)
        if why is not None:
            print(f"peer {peer.name} skipped: {why}", file=sys.stderr)
            notes.append(f"{peer.name}: skipped ({why})")
            continue
        cmd = [str(python), str(PEERS_DIR / "predict.py"), "--peer", peer.name, "--root", str(root),
               "--datasets", args.datasets]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.per_modality:
            cmd += ["--per-modality", str(args.per_modality)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"peer {peer.name} failed (exit {r.returncode}):\n{r.stderr[-3000:]}", file=sys.stderr)
            notes.append(f"{peer.name}: prediction failed (exit {r.returncode})")
            continue
        preds, times = peerdata.read_predictions(root / peer.name / "pred")
        card = times["model"]
        label = f"{peer.label}, {card['budget_min']:g} min"
        if card.get("smoke_subset"):
            label += f", SMOKE: {card['n_train_images']} train images"
        elif card.get("n_tuned_on") == 0:
            label += ", SMOKE: default thresholds"
        for name, t in times["images"].items():
            add_scored(t["modality"], label, name, preds[name], t["seconds"])
        versions = ", ".join(f"{k} {v}" for k, v in card["versions"].items())
        notes.append(f"{peer.name}: {versions}; trained {card['train_seconds'] / 60:.1f} min on "
                     f"{card['n_train_images']} train images (hold-out {card['n_holdout']}), "
                     f"thresholds {card['thresholds']}")
    return notes


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
    ap.add_argument("--peers-root", default=os.environ.get("MEDSEG_PEERS_ROOT", "/work/peers"),
                    help="folder of the trained peers (benchmarks/peers/README.md)")
    ap.add_argument("--peers-python", default=os.environ.get("MEDSEG_PEERS_PYTHON", "/work/peers-venv/bin/python"),
                    help="Python of the peers' venv (TensorFlow + StarDist, torch + Cellpose)")
    ap.add_argument("--no-peers", action="store_true", help="skip StarDist and Cellpose")
    ap.add_argument("--per-modality", type=int, default=None,
                    help="score only the first N val images of each modality (smoke runs; default: all)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for every method (torch here, TensorFlow/torch in the peers); default: all")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
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
    if args.per_modality:  # the first N of each modality, in index order (predict.py takes the same)
        rows = [r for r in rows if [q["modality"] for q in rows[:rows.index(r) + 1]].count(r["modality"])
                <= args.per_modality]
    methods: dict[tuple[str, str], list[dict]] = {}
    seconds: dict[tuple[str, str], float] = {}
    pixels: dict[tuple[str, str], int] = {}
    truth: dict[str, np.ndarray] = {}

    def add_scored(mod, method, name, pred, s):
        true = truth[name]
        seconds[(mod, method)] = seconds.get((mod, method), 0.0) + s
        pixels[(mod, method)] = pixels.get((mod, method), 0) + true.size
        methods.setdefault((mod, method), []).append(score_image(true, np.asarray(pred).astype(np.int64), name))

    def add(mod, method, true, fn, name):
        t = time.perf_counter()
        pred = fn()
        add_scored(mod, method, name, pred, time.perf_counter() - t)

    # one untimed call per model first: loading the weights is not inference
    warm = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    segment(warm[..., 0].astype(np.float32), "nuclei", device=args.device)
    segment(warm, "nuclei-he", device=args.device)

    for r in rows:
        img = tifffile.imread(root / "images" / f"{r['id']}.tif")
        true = tifffile.imread(root / "masks" / f"{r['id']}.tif").astype(np.int64)
        truth[r["id"]] = true
        mod = r["modality"]
        for label, folder, rgb_model in extra:
            if img.ndim == 3:
                x = img[..., :3] if rgb_model else (rgb2gray(img[..., :3]) * 255).astype(np.float32)
            elif rgb_model:
                continue
            else:
                x = img
            add(mod, label, true, lambda x=x, f=folder: segment(x, f, device=args.device), r["id"])
            if not args.no_tta:
                add(mod, f"{label} + tta", true, lambda x=x, f=folder: segment(x, f, device=args.device, tta=True),
                    r["id"])
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

    notes = [] if args.no_peers else run_peers(args, add_scored)
    print("| modality | method | n images | AP@0.5 | AP@0.75 | mAP 0.5:0.9 | Dice | pooled AP@0.5 | s/image | MPx/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (mod, method), rs in sorted(methods.items()):
        o = overall_scores(rs)
        s = seconds[(mod, method)]
        print(f"| {mod} | {method} | {o['n_images']} | {o['ap50']:.3f} | {o['ap75']:.3f} | {o['map']:.3f} | "
              f"{o['dice']:.3f} | {o['ap50_pooled']:.3f} | {s / o['n_images']:.2f} | "
              f"{pixels[(mod, method)] / max(s, 1e-9) / 1e6:.3f} |")
    for line in notes:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
