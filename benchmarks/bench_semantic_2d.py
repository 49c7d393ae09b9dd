"""2D semantic (lesion) training from a few annotations: PH2 dermoscopy, 10 training images, a CPU time budget.

What ``medseg train --mode semantic`` / the Train widget's semantic mode
reach on ``../shared/datasets/ph2_dev`` (100 RGB dermoscopy images with
binary lesion masks and a diagnosis) when trained on 10 images for a few
CPU minutes and scored on 40 others:

* a fixed split per ``--seed``: 10 training images (4 common nevi, 4 atypical
  nevi, 2 melanomas: stratified by diagnosis, drawn with
  ``numpy.random.default_rng(seed)``) and 40 test images (16 / 16 / 8) disjoint
  from them;
* per setting: :func:`napari_medseg.training.finetune.train` (what the CLI and
  the widget run) on the 10 images for ``--minutes``, then
  :func:`napari_medseg.segment` on each test image, Dice of the binary
  foreground (:func:`napari_medseg.analysis.metrics.dice`);
* settings (``--settings``, comma-separated, run in that order, one change at
  a time): ``baseline`` pins the semantic defaults before this benchmark
  (16 px region margin, no post-processing, full resolution, scratch U-Net 16,
  H&E stain jitter, 20 % held out); each further setting adds one change;
  ``default`` is whatever the current defaults are.

Prints one figure per line (Dice mean / median on the test images, training
seconds and steps, segmentation seconds per image).  The images are used in
memory only (research-use terms: nothing derived from them is written to the
repository; models go to a temporary folder and are deleted).

Usage::

    python benchmarks/bench_semantic_2d.py --minutes 3 --seed 0 --settings baseline,default
    python benchmarks/bench_semantic_2d.py --list
    python benchmarks/bench_semantic_2d.py --radiology lung1 brain1 --minutes 1.5 --cli
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as medseg train does, before torch is imported

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "datasets" / "ph2_dev"

#: The semantic defaults before this benchmark, pinned (what ``baseline`` runs).
def _aug(**kw):
    from napari_medseg.training.augment import AugmentConfig

    return AugmentConfig(**{"zoom": (0.8, 1.25), **kw})


OLD = {"margin": 16, "postprocess": {}, "patch_size": 128, "batch_size": 8, "val_fraction": 0.2,
       "augment": lambda: _aug(p_stain=0.5)}
KEEP = {"keep_largest": True, "fill_holes": True}


#: name -> (what it changes, parent setting or None, changes of ``train``'s keywords on top of the parent).
#: ``downscale`` (a benchmark key): train at this many times the images' pixel size (``pixel_size=``); the images
#: get a nominal 1 µm pixel size then (PH2 carries none) so that the engine resamples them to the model.
SETTINGS: dict[str, tuple[str, str | None, dict]] = {
    "baseline": ("semantic defaults before this work", None, dict(OLD)),
    "default": ("the current defaults of medseg train --mode semantic", None, {}),
    "+region": ("region margin = the lesion box's longer side (regions.default_margin)", "baseline",
                {"margin": None}),
    "+keep": ("keep the largest lesion, fill holes", "+region", {"postprocess": KEEP}),
    "+color": ("colour jitter (hue, saturation, white balance) instead of H&E stain jitter", "+keep",
               {"augment": lambda: _aug(p_stain=0.0, p_color=0.8)}),
    "+he-base": ("nuclei-he U-Net (ours, CC0 data) as initialisation", "+keep", {"base": "nuclei-he"}),
    "+noval": ("no held-out images (all 10 train, last weights kept)", "+keep", {"val_fraction": 0.0}),
    "+color+noval+he": ("colour jitter, no held-out images and the nuclei-he base together", "+color",
                        {"val_fraction": 0.0, "base": "nuclei-he"}),
    "+color+noval": ("colour jitter and no held-out images", "+color", {"val_fraction": 0.0}),
    "wide": ("the defaults with the whole slice as the region (margin 4096 px; for --radiology)", "default",
             {"margin": 4096}),
    "+half": ("train at half resolution (nominal 1 um pixels, model at 2 um)", "+keep", {"downscale": 2.0}),
}


def resolve(name: str) -> dict:
    """The keywords of a setting: its parent's, updated by its own changes."""
    what, parent, changes = SETTINGS[name]
    kw = resolve(parent) if parent else {}
    kw.update({k: (v() if callable(v) else v) for k, v in changes.items()})
    return kw


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image  # benchmark-only (Pillow comes with napari / scikit-image)

    return np.asarray(Image.open(path).convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    m = np.asarray(Image.open(path))
    return (m[..., 0] if m.ndim == 3 else m) > 0


def split(data: Path, seed: int, n_train: int = 10, n_test: int = 40) -> tuple[list[str], list[str]]:
    """Stratified by diagnosis: per class round(n * class share) training and test ids, disjoint."""
    with open(data / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by: dict[str, list[str]] = {}
    for r in rows:
        by.setdefault(r["diagnosis"], []).append(r["id"])
    rng = np.random.default_rng(seed)
    train, test = [], []
    for d in sorted(by):
        ids = sorted(by[d])
        perm = [ids[i] for i in rng.permutation(len(ids))]
        k, t = round(n_train * len(ids) / len(rows)), round(n_test * len(ids) / len(rows))
        train += perm[:k]
        test += perm[k:k + t]
    assert not set(train) & set(test)
    return sorted(train), sorted(test)


def run_setting(name: str, kwargs: dict, train_ids, test_ids, data: Path, minutes: float, threads: int,
                pixel_size: float | None) -> dict:
    from napari_medseg import segment
    from napari_medseg.analysis.metrics import dice
    from napari_medseg.inference.classes import postprocess_classes, semantic_options
    from napari_medseg.training.finetune import train

    imgs = [read_rgb(data / "images" / f"{i}.png") for i in train_ids]
    labs = [read_mask(data / "masks" / f"{i}.png").astype(np.uint8) for i in train_ids]
    kw = dict(kwargs)
    down = kw.pop("downscale", None)
    if down is not None:
        pixel_size = pixel_size or 1.0
        kw["pixel_size"] = [pixel_size * down] * 2
    scale = None if pixel_size is None else [pixel_size, pixel_size]
    with tempfile.TemporaryDirectory(prefix="bench-sem2d-") as tmp:
        t = time.perf_counter()
        res = train(imgs, labs, mode="semantic", minutes=minutes, out=Path(tmp) / "m", name="bench-sem2d",
                    class_names=["lesion"], threads=threads, scale=scale, names=list(train_ids), **kw)
        t_train = time.perf_counter() - t
        steps = res.card.training.get("steps")
        opts = semantic_options(res.card.output.get("postprocess"))
        off = dict.fromkeys(opts, 0)
        d, d_raw, t_seg = [], [], 0.0
        for i in test_ids:
            img = read_rgb(data / "images" / f"{i}.png")
            true = read_mask(data / "masks" / f"{i}.png")
            t = time.perf_counter()
            raw = np.asarray(segment(img, res.model_path, scale=scale, units=None if scale is None else "µm",
                                     postprocess=off))
            pred = postprocess_classes(raw, **opts)  # what segment() gives with the card's post-processing
            t_seg += time.perf_counter() - t
            d.append(dice(true, pred))
            d_raw.append(dice(true, raw))
    d, d_raw = np.array(d), np.array(d_raw)
    return {"name": name, "mean": float(d.mean()), "median": float(np.median(d)), "min": float(d.min()),
            "mean_raw": float(d_raw.mean()), "median_raw": float(np.median(d_raw)), "pp": opts,
            "train_s": t_train, "steps": steps, "epochs": len(res.history),
            "best_epoch": None if res.best is None else res.best["epoch"],
            "seg_s": t_seg / len(test_ids), "dice": d}


RADIOLOGY = ROOT.parent / "shared" / "datasets" / "radiology_lesions"


def run_cli(image: Path, painted: np.ndarray, geometry, tmp: Path, minutes: float, threads: int,
            epochs: int | None = None) -> tuple:
    """``medseg train --mode semantic`` on the painted labels (written as NRRD), then ``medseg segment``.

    Returns the predicted labels (Z, Y, X) and the card's training steps.
    """
    import subprocess

    from napari_medseg.io import read
    from napari_medseg.io.radiology import write_labels_nrrd
    from napari_medseg.models.spec import load_model

    lab_path = write_labels_nrrd(tmp / "painted_label.nrrd", painted, geometry)
    cli = [sys.executable, "-m", "napari_medseg.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    budget = ["--minutes", str(minutes)] if epochs is None else ["--epochs", str(epochs)]
    subprocess.run([*cli, "train", "--mode", "semantic", "--images", str(image), "--labels", str(lab_path),
                    "--classes", "tumour", *budget, "--out", str(tmp / "m"), "--threads", str(threads), "--quiet"],
                   check=True, env=env)
    subprocess.run([*cli, "segment", str(image), "-o", str(tmp / "out"), "--model", str(tmp / "m"), "--quiet"],
                   check=True, env=env)
    (out,) = sorted((tmp / "out").iterdir())
    steps = load_model(tmp / "m")[1].training.get("steps")
    return np.asarray(read(out)[0].data), steps


def run_radiology(case: str, minutes: float, threads: int, extra: dict, cli: bool = False,
                  epochs: int | None = None) -> dict:
    """``train(mode="semantic")`` on every other tumour slice of a CT/MR case, Dice on the others.

    The tumour slices (labels > 0) in order; slices 0, 2, 4... of them are
    painted for training (the others are left unpainted), the model segments
    the whole volume and Dice is pooled over the held-out tumour slices
    (whole slices, so false positives anywhere in them count).  ``cli``: the
    same through ``medseg train`` and ``medseg segment`` (:func:`run_cli`,
    with their defaults; ``extra`` is not used).  ``epochs``: that budget
    instead of ``minutes`` (the same work on a loaded machine).
    """
    from napari_medseg import segment
    from napari_medseg.analysis.metrics import dice
    from napari_medseg.io import read
    from napari_medseg.training.finetune import train

    image = RADIOLOGY / f"{case}_image.nrrd"
    vol = read(image)[0]
    lab = (np.asarray(read(RADIOLOGY / f"{case}_label.nrrd")[0].data) > 0).astype(np.uint8)
    zs = [int(z) for z in np.flatnonzero(lab.reshape(lab.shape[0], -1).any(1))]
    train_z, test_z = zs[0::2], zs[1::2]
    painted = np.zeros_like(lab)
    painted[train_z] = lab[train_z]
    with tempfile.TemporaryDirectory(prefix="bench-sem-rad-") as tmp:
        t = time.perf_counter()
        if cli:
            pred, steps = run_cli(image, painted, vol.spatial_geometry(), Path(tmp), minutes, threads, epochs)
            t_train = time.perf_counter() - t  # training and segmentation
        else:
            budget = {"minutes": minutes} if epochs is None else {"epochs": epochs, "minutes": None}
            res = train(vol, painted, mode="semantic", out=Path(tmp) / "m", class_names=["tumour"],
                        threads=threads, **budget, **extra)
            t_train = time.perf_counter() - t
            steps = res.card.training.get("steps")
            pred = np.asarray(segment(vol, res.model_path))
    per = [dice(lab[z], pred[z]) for z in test_z]
    return {"case": case, "train_z": train_z, "test_z": test_z, "dice": dice(lab[test_z], pred[test_z]),
            "per_slice": per, "train_s": t_train, "steps": steps,
            "fp_px_other": int((pred[[z for z in range(lab.shape[0]) if z not in zs]] > 0).sum()),
            "spacing": [round(float(v), 4) for v in vol.spatial_geometry().spacing]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="split seed(s) (default 0)")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per setting (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--settings", default="baseline,default", help="comma-separated setting names (see --list)")
    ap.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                    help="give the images this pixel size (µm; PH2 carries none); default: uncalibrated")
    ap.add_argument("--list", action="store_true", help="list the settings and exit")
    ap.add_argument("--radiology", nargs="*", default=None, metavar="CASE",
                    help="instead of PH2: train on every other tumour slice of these radiology_lesions cases "
                         "(default lung1 brain1) with the first of --settings, Dice on the other tumour slices")
    ap.add_argument("--cli", action="store_true",
                    help="with --radiology: run `medseg train --mode semantic` and `medseg segment` (their "
                         "defaults; --settings is not used) instead of the API")
    ap.add_argument("--epochs", type=int, default=None,
                    help="with --radiology: train for this many epochs instead of --minutes (load-independent)")
    ap.add_argument("--per-image", action="store_true", help="also print the Dice of each test image")
    args = ap.parse_args(argv)
    if args.list:
        for k, (what, parent, kw) in SETTINGS.items():
            print(f"{k:12s} {what} ({'on top of ' + parent if parent else 'from the defaults'}): {kw}")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        ap.error(f"unknown settings {unknown}; see --list")
    if args.radiology is not None:
        kw = resolve(names[0])
        kw.pop("downscale", None)
        for case in args.radiology or ["lung1", "brain1"]:
            r = run_radiology(case, args.minutes, args.threads, kw, cli=args.cli, epochs=args.epochs)
            print(f"{case} ({'CLI' if args.cli else names[0]}) dice {r['dice']:.4f} on tumour slices {r['test_z']} (per slice "
                  + " ".join(f"{x:.3f}" for x in r["per_slice"]) + f"), trained on slices {r['train_z']}, "
                  f"train_s {r['train_s']:.0f}  steps {r['steps']}  foreground px on tumour-free slices "
                  f"{r['fp_px_other']}  spacing {r['spacing']} mm", flush=True)
        return 0
    if not (args.data / "labels.csv").exists():
        print(f"no PH2 data in {args.data}", file=sys.stderr)
        return 1
    print(f"# machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads; "
          f"budget {args.minutes} min; pixel size {args.pixel_size or 'none (uncalibrated)'}")
    for seed in args.seed:
        train_ids, test_ids = split(args.data, seed)
        print(f"# seed {seed}: train {' '.join(train_ids)}")
        for n in names:
            r = run_setting(n, resolve(n), train_ids, test_ids, args.data, args.minutes, args.threads,
                            args.pixel_size)
            print(f"seed {seed} {n:14s} dice_mean {r['mean']:.4f}  dice_median {r['median']:.4f}  "
                  f"dice_min {r['min']:.3f}  (without post-processing {r['mean_raw']:.4f} / "
                  f"{r['median_raw']:.4f})  train_s {r['train_s']:.0f}  steps {r['steps']}  "
                  f"epochs {r['epochs']} (best {r['best_epoch']})  segment_s_per_image {r['seg_s']:.2f}",
                  flush=True)
            if args.per_image:
                print("  per image: " + " ".join(f"{x:.2f}" for x in r["dice"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
