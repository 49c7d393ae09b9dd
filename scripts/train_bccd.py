"""Train the shipped blood-cell detector (WBC, RBC, Platelets) on BCCD ``train``.

The U-Net (base 16, depth 4, ~0.5 M parameters) runs on the 640x480 images
block-averaged 4x (160x120, the output stride of CenterNet); see :mod:`napari_medseg.training.detection`.
``--holdout N`` images of ``train`` (chosen with the seed) are kept aside for
model selection, so ``bccd/val`` stays untouched for the benchmark
(``benchmarks/bench_bccd.py``).  The best model by holdout mAP@0.5 is written
to ``--out`` at each evaluation, so a stopped run still leaves a model.

    python scripts/train_bccd.py --minutes 30 --seed 0 --out src/napari_medseg/models/shipped/bccd
    nohup python scripts/train_bccd.py ... > /tmp/train_bccd.log 2>&1 &

Data: ``../shared/datasets/bccd`` (Shenggan/BCCD_Dataset, MIT licence), or
``$MEDSEG_DATASETS/bccd``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))
CLASSES = ["WBC", "RBC", "Platelets"]
DESCRIPTION = (
    'Blood-cell detector for Giemsa/Wright-stained peripheral blood smears (BCCD, 640x480 RGB): boxes of '
    'white cells (WBC), red cells (RBC) and platelets. CenterNet-style heads on a small U-Net run at 1/4 '
    'resolution. Many red cells have no training box, so red-cell negatives outside annotated boxes '
    'were down-weighted.'
)


def main(argv: list[str] | None = None) -> int:
    from napari_medseg.progress import Progress
    from napari_medseg.training.detection import (
        DetectionAugment,
        DetectionTrainConfig,
        load_voc_folder,
        train_detector_iter,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="training time budget (wall clock)")
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps (also sets the LR schedule)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "src/napari_medseg/models/shipped/bccd")
    ap.add_argument("--data", type=Path, default=DATASETS / "bccd")
    ap.add_argument("--holdout", type=int, default=20, help="train images kept aside for model selection")
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--crop", type=int, default=128, help="training crop side, network pixels")
    ap.add_argument("--downsample", type=int, default=4, help="image pixels per network pixel")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--rbc-neg-weight", type=float, default=0.25,
                    help="weight of RBC heat-map negatives outside annotated boxes (RBCs are not all annotated)")
    ap.add_argument("--eval-every", type=float, default=180.0, help="seconds between holdout evaluations")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--log-every", type=int, default=25)
    args = ap.parse_args(argv)

    train_dir = args.data / "train"
    if not train_dir.is_dir():
        print(f"BCCD training data not found at {train_dir}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    samples, dropped = load_voc_folder(train_dir, CLASSES)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(samples))
    hold = [samples[i] for i in sorted(order[: args.holdout])]
    train = [samples[i] for i in sorted(order[args.holdout:])]
    counts = {c: int(sum(int(np.sum(s.class_ids == k)) for s in train)) for k, c in enumerate(CLASSES)}
    print(f"loaded {len(samples)} images in {time.perf_counter() - t:.1f}s: {len(train)} train, {len(hold)} holdout; "
          f"train boxes {counts}; dropped {dropped}", flush=True)

    cfg = DetectionTrainConfig(
        name="bccd", description=DESCRIPTION, base_channels=args.base, depth=args.depth, downsample=args.downsample, batch_size=args.batch, lr=args.lr,
        minutes=None if args.steps is not None and args.minutes <= 0 else args.minutes, max_steps=args.steps,
        eval_every_s=args.eval_every, uncertain_classes=("RBC",), uncertain_weight=args.rbc_neg_weight,
        seed=args.seed, threads=args.threads, device=args.device, augment=DetectionAugment(crop=args.crop),
    )
    extra = {
        "data": "BCCD train (Shenggan/BCCD_Dataset), 640x480 blood smears, Pascal VOC boxes",
        "data_licence": "MIT",
        "holdout": [s.name for s in hold],
        "dropped_boxes": dropped,
        "command": "python scripts/train_bccd.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    gen = train_detector_iter(train, CLASSES, args.out, holdout=hold, config=cfg, card_extra=extra)
    run_loss = []
    while True:
        try:
            p: Progress = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        info = p.info or {}
        if "loss" in info:
            run_loss.append(info["loss"])
        if p.step % args.log_every == 0 and run_loss:
            print(f"step {p.step} t={info.get('seconds', 0):.0f}s loss {np.mean(run_loss):.4f} "
                  f"(heat {info.get('heat', 0):.3f} size {info.get('size', 0):.3f} off {info.get('offset', 0):.3f}) "
                  f"lr {info.get('lr', 0):.2e}", flush=True)
            run_loss = []
        if "eval" in info:
            print("eval", json.dumps(info["eval"]), flush=True)
    print(f"done: {result['steps']} steps in {result['seconds']:.0f}s "
          f"({result['steps'] / max(result['seconds'], 1e-9):.2f} steps/s); best {json.dumps(result['best'])}",
          flush=True)
    print(f"model written to {result['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
