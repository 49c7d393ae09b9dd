"""Train the shipped ``ms-lesions`` model: MS white-matter lesions on brain MR, FLAIR only.

A 2D semantic U-Net (background / ms_lesion, base 16, depth 4, batch norm) on
axial slices at 1 mm; the engine applies it plane by plane to a ``ZYX``
volume (:func:`napari_medseg.segment`), resampling other in-plane spacings to
1 mm.  Each FLAIR volume is normalised *whole*, exactly as the engine does
(:func:`~napari_medseg.inference.normalize.normalization_limits`, percentiles
1 / 99.8 of the volume), so training sees what inference sees.

Class imbalance (lesions are 0.1-2 % of the brain):

* slices with lesions get 80 % of the patches (split equally between the
  training cases), slices of brain without lesions 20 %;
* 80 % of the patches are centred near a lesion, and the lesion is drawn
  *per 2D connected component* (not per voxel), so the many small lesions
  are seen as often as one large confluent lesion;
* the loss is cross-entropy plus soft Dice of the lesion class (the
  package's :func:`~napari_medseg.training.semantic.semantic_loss`), and the
  head starts at the lesion frequency (:func:`set_prior_bias`).

Robustness to other scanners / normalisations: the package's intensity
augmentations (contrast 0.7-1.4, gamma 0.7-1.5, brightness, blur, noise) on
the normalised image, plus flips, rotations and zoom 0.8-1.25.

Model selection: blocks of slices of the training cases (``--val``) are held
out, with ``--gap`` slices on each side removed from training too.  Every
``--eval-every`` seconds the network predicts those slices; score = mean of
the voxel Dice and the lesion-wise F1 (3D components in the slab, a hit is
any overlap, probability > 0.5).  The best network is written to ``--out``
(``model.json`` + ``weights.safetensors``) at every improvement, so a run that
is killed keeps its best checkpoint.

Runs used for the shipped model (see BENCHMARKS.md, "MS lesions")::

    # (1) leave-one-out check: train on patient19, patient07 never seen
    python scripts/train_ms_lesions.py --train patient19 --val patient19:62-69,patient19:112-119 \\
        --minutes 25 --threads 2 --out /tmp/ms-lesions-loo
    python benchmarks/bench_ms_lesions.py --model /tmp/ms-lesions-loo --case patient07 --json /tmp/loo.json
    # (2) the shipped model: both cases; its card carries run (1)'s figures
    python scripts/train_ms_lesions.py --train patient19,patient07 \\
        --val patient19:112-119,patient07:92-99 --minutes 36 --threads 2 --out /tmp/ms-lesions
    cp /tmp/ms-lesions/* src/napari_medseg/models/shipped/ms-lesions/
    S=src/napari_medseg/models/shipped/ms-lesions
    python scripts/train_ms_lesions.py --attach-metrics /tmp/loo.json --out $S
    # the shipped model on its own training cases (a fit, not a generalisation figure)
    python benchmarks/bench_ms_lesions.py --model ms-lesions --case patient07 --json /tmp/p07.json
    python scripts/train_ms_lesions.py --attach-metrics /tmp/p07.json --metrics-key training_case_patient07 --out $S

The card's operating point (``output.lesions``: voxel threshold, smallest lesion, lowest score, test-time
flips), chosen on the shipped model's held-out slabs (BENCHMARKS.md, "MS lesions: 2.5D..."), and the
leave-one-out figures at run (1)'s own point, chosen on its held-out slabs of patient19::

    python benchmarks/bench_ms_lesions.py --model ms-lesions --case patient07 --tta \
        --tune-on patient19:112-119,patient07:92-99 --json /tmp/ship_p07.json
    python scripts/train_ms_lesions.py --set-operating-point /tmp/ship_p07.json --out $S
    python benchmarks/bench_ms_lesions.py --model /tmp/ms-lesions-loo --case patient07 --tta \
        --tune-on patient19:62-69,patient19:112-119 --json /tmp/loo_tta.json
    python scripts/train_ms_lesions.py --attach-metrics /tmp/loo_tta.json --out $S

Data: ``../shared/datasets/ms_lesions`` (or ``$MEDSEG_DATASETS/ms_lesions``):
Lesjak et al. 2017, CC-BY, MNI-registered, skull-stripped, N4-corrected.
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
FLAIR = "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
GOLD = "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"
NAME = "ms-lesions"
CLASS_NAMES = ["background", "ms_lesion"]
#: ``--norm volume`` (the first shipped model): the whole volume's 1st / 99.8th percentiles.  The 99.8th
#: percentile moves with the lesion load and the brain's share of the volume (patient19, 50 mL of lesions: 97;
#: patient07, 1.3 mL: 118, while its brain median is 89 vs 66), so normal tissue of a case with few lesions
#: comes out brighter, closer to lesion intensities.
NORMALIZATIONS = {
    "volume": {"kind": "percentile", "low": 1.0, "high": 99.8},
    #: ``--norm brain``: the non-zero (brain) voxels' 1st percentile -> 0 and median -> 1 (skull-stripped input)
    "brain": {"kind": "percentile", "low": 1.0, "high": 50.0, "nonzero": True},
}
NORMALIZATION = NORMALIZATIONS["volume"]
CITATION = ('Lesjak, Z., Pernus, F., Likar, B., Spiclin, Z. "A Novel Public MR Image Dataset of Multiple Sclerosis '
            'Patients With Lesion Segmentations Based on Multi-rater Consensus", Neuroinformatics (2017), '
            'DOI: 10.1007/s12021-017-9348-7')


def description(slices: int = 1, norm: str = "volume", cases: int = 2) -> str:
    """The card's description for a model with ``slices`` planes per input and normalisation ``norm``."""
    planes = ("a 2D semantic U-Net applied to each axial slice at 1 mm" if slices == 1 else
              f"a 2.5D semantic U-Net: each axial slice at 1 mm is read with its {slices // 2} neighbour(s) on "
              f"either side as {slices} channels")
    words = {1: "one", 2: "two", 3: "three"}.get(cases, str(cases))
    how = ("the volume is normalised by its 1st / 99.8th intensity percentiles" if norm == "volume" else
           "the brain (non-zero voxels) is normalised by its 1st percentile (-> 0) and median (-> 1)")
    return (
        f"Multiple-sclerosis white-matter lesions on brain MR from the FLAIR image alone: {planes} (other "
        "spacings are resampled by the engine), classes background / ms_lesion. Trained on "
        f"{words} skull-stripped, N4-corrected, MNI-registered 3D FLAIR volume"
        f"{'s' if cases != 1 else ''} (Lesjak et al. 2017); {how}. Use on skull-stripped axial FLAIR; "
        "output.lesions holds the recommended operating point (voxel threshold, smallest lesion in mm³, lowest "
        "lesion score, test-time flips), chosen on held-out slices of the training cases; lesion figures in 'metrics' come from a "
        "leave-one-out run (the same recipe trained on one case, measured on the other). Known limits: small "
        "lesions (< 10 voxels) are often missed, and false positives (small bright spots, most under 10 voxels) "
        f"are many; a model from {words} case{'s' if cases != 1 else ''}. Research use only, not a medical device."
    )

#: Share of patches from slices with lesions (the rest: brain slices without lesions); ``--p-lesion-slices``.
#: The shipped model and its leave-one-out check used 0.8 / 0.8; they make many small false positives
#: (lesion-wise precision 0.5 on the held-out slabs), so lower values are the first thing to try next.
P_LESION_SLICES = 0.8
#: Share of patches centred near a lesion component (the rest: anywhere in the slice); ``--p-object``.
P_OBJECT = 0.8
#: Pixels drawn per 2D lesion component for the patch-centre index (components equally likely).
PIXELS_PER_COMPONENT = 64
#: A slice is "brain" when it has at least this many non-zero voxels.
MIN_BRAIN_VOXELS = 500


def load_case(root: Path, case: str, normalization: dict = NORMALIZATION
              ) -> tuple[np.ndarray, np.ndarray, object, np.ndarray]:
    """``(normalised FLAIR (Z, Y, X) float32, lesion mask (Z, Y, X) uint8, geometry, brain voxels per slice)``."""
    from napari_medseg.inference.normalize import normalization_limits
    from napari_medseg.io.radiology import read_nifti

    vol = read_nifti(root / case / FLAIR)[0]
    gold = read_nifti(root / case / GOLD)[0]
    img = np.asarray(vol.data, np.float32)
    lab = (np.asarray(gold.data) > 0).astype(np.uint8)
    if img.shape != lab.shape:
        raise SystemExit(f"{case}: FLAIR {img.shape} and mask {lab.shape} differ")
    low, high = normalization_limits(img, "ZYX", normalization)
    brain_voxels = (np.abs(img) > 1e-6).reshape(img.shape[0], -1).sum(axis=1)
    img = (img - low[0]) / max(float(high[0] - low[0]), 1e-6)
    return img.astype(np.float32), lab, vol.spatial_geometry(), brain_voxels


def parse_val(spec: str) -> dict[str, list[tuple[int, int]]]:
    """``"patient19:62-69,patient07:92-99"`` -> ``{case: [(z0, z1 inclusive), ...]}``."""
    out: dict[str, list[tuple[int, int]]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        case, rng = part.split(":")
        a, b = (int(v) for v in rng.split("-"))
        out.setdefault(case, []).append((min(a, b), max(a, b)))
    return out


def make_sampler(samples, slice_weight, comp_index, patch, augment, seed, p_object=P_OBJECT):
    """Patches drawn with our slice weights, centred on lesion components drawn equally (see the docstring)."""
    from napari_medseg.training.semantic import SemanticPatchSampler

    class ComponentBalancedSampler(SemanticPatchSampler):
        """:class:`SemanticPatchSampler` with given per-slice weights and lesion-centre pixel indices."""

        def __init__(self, samples, slice_weights, centre_index, **kwargs) -> None:
            super().__init__(samples, **kwargs)
            if len(slice_weights) != len(samples) or len(centre_index) != len(samples):
                raise ValueError("one weight and one centre index per sample")
            self._fg_index = [np.asarray(i, np.int64) for i in centre_index]
            w = np.asarray(slice_weights, np.float64)
            self._p = w / w.sum()

    return ComponentBalancedSampler(samples, slice_weight, comp_index, patch_size=patch,
                                    normalization={"kind": "none"}, augment=augment, p_object=p_object, seed=seed)


def component_index(lab2d: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Flat pixel indices with every 8-connected lesion component equally represented, and the count."""
    from scipy import ndimage as ndi

    comp, n = ndi.label(lab2d > 0, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(0, np.int64), 0
    flat = comp.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=n + 1)
    starts = np.cumsum(counts) - counts
    idx = []
    for c in range(1, n + 1):
        pix = order[starts[c]:starts[c] + counts[c]]
        idx.append(rng.choice(pix, PIXELS_PER_COMPONENT, replace=True))
    return np.concatenate(idx).astype(np.int64), n


def as_channels(img: np.ndarray, slices: int) -> np.ndarray:
    """``(Z, Y, X)`` -> ``(Z, C, Y, X)`` network inputs: the plane alone, or with its neighbours (2.5D)."""
    from napari_medseg.inference.tiling import slice_stack

    return img[:, None] if slices == 1 else np.ascontiguousarray(np.moveaxis(slice_stack(img, slices), -1, 1))


def validate(net, val_slabs) -> dict:
    """Dice and lesion-wise F1 on the held-out slabs (probability > 0.5, 3D components, hit = any overlap).

    ``val_slabs``: ``(inputs (Z, C, Y, X), labels (Z, Y, X))`` pairs.
    """
    import torch
    from skimage.measure import label as cc_label

    from napari_medseg.analysis.lesion_eval import case_summary, match_lesions
    from napari_medseg.inference.predictor import predict_whole

    was = net.training
    net.eval()
    inter = tot = 0
    det = n_true = fp = n_pred = 0
    with torch.inference_mode():
        for img, lab in val_slabs:
            prob = np.stack([predict_whole(net, img[z], margin=16, activation="softmax")[1]
                             for z in range(img.shape[0])])
            pred = prob > 0.5
            inter += int((pred & (lab > 0)).sum())
            tot += int(pred.sum() + (lab > 0).sum())
            t = cc_label(lab > 0, connectivity=3)
            p = cc_label(pred, connectivity=3)
            s = case_summary(match_lesions(t, p))
            det, n_true, fp, n_pred = det + s["detected"], n_true + s["n_true"], fp + s["false_positives"], \
                n_pred + s["n_pred"]
    net.train(was)
    dice = 2.0 * inter / tot if tot else 1.0
    sens = det / n_true if n_true else 1.0
    prec = (n_pred - fp) / n_pred if n_pred else 0.0
    f1 = 2 * sens * prec / (sens + prec) if sens + prec > 0 else 0.0
    return {"dice": dice, "sensitivity": sens, "precision": prec, "f1": f1, "false_positives": fp,
            "n_true": n_true, "score": 0.5 * (dice + f1)}


def init_from(net, folder: Path, raw_case: np.ndarray, norm: dict, slices: int) -> str:
    """Start ``net`` from the weights of a 2D model of this recipe (``--init``), keeping its function.

    * Another normalisation (e.g. ``volume`` -> ``brain``): both are affine maps of the raw intensity, so
      with ``raw_case``'s limits (the first training case) the first convolution is rescaled and the
      constant it then misses is moved into the following batch norm's running mean: on that case the
      network computes what it did (up to the zero padding at the image border, which is background).
    * A 2D (1-channel) model into a 2.5D one: the weights go to the centre channel and the neighbours'
      weights start at 0, so the network starts as the 2D model and learns to use the neighbours.

    Returns a sentence for the card.
    """
    import torch

    from napari_medseg.inference.normalize import normalization_limits
    from napari_medseg.models.spec import load_model

    src, card = load_model(folder)
    state = {k: v.clone() for k, v in src.state_dict().items()}
    w = state["down.0.0.weight"]  # (out, in, 3, 3), no bias: batch norm down.0.1 follows
    old = card.input.get("normalization") or {}
    steps = card.training.get("steps_total") or card.training.get("steps")
    notes = [f"weights from {folder} ({card.name}, {steps} steps)"]
    if old != norm:
        lo_o, hi_o = (float(v[0]) for v in normalization_limits(raw_case, "ZYX", old))
        lo_n, hi_n = (float(v[0]) for v in normalization_limits(raw_case, "ZYX", norm))
        # x_old = a * x_new + b
        a = (hi_n - lo_n) / max(hi_o - lo_o, 1e-6)
        b = (lo_n - lo_o) / max(hi_o - lo_o, 1e-6)
        state["down.0.1.running_mean"] -= b * w.sum(dim=(1, 2, 3))
        w = w * a
        notes.append(f"first convolution refit from {old} to {norm} on the first training case "
                     f"(x_old = {a:.4f} x_new + {b:.4f})")
    if slices > w.shape[1]:
        k = slices // 2
        w3 = torch.zeros((w.shape[0], slices, *w.shape[2:]), dtype=w.dtype)
        w3[:, k:k + 1] = w
        w = w3
        notes.append(f"1-channel weights on the centre of {slices} slices, neighbours' weights 0")
    state["down.0.0.weight"] = w
    net.load_state_dict(state)
    return "; ".join(notes)


def build_card(args, extra: dict):
    from napari_medseg.models.spec import ModelCard

    return ModelCard(
        name=NAME,
        description=description(args.slices, args.norm, len([c for c in args.train.split(",") if c.strip()])),
        architecture={"type": "unet", "dims": 2, "in_channels": args.slices, "out_channels": 2,
                      "base_channels": args.base, "depth": args.depth, "norm": "batch"},
        input={"channels": args.slices, "color": "grey", "normalization": dict(NORMALIZATIONS[args.norm]),
               "pixel_size": [1.0, 1.0], "pixel_unit": "mm", "modality": "MR", "contrast": "FLAIR",
               **({"slices": args.slices} if args.slices > 1 else {}),
               "notes": "skull-stripped axial FLAIR as a ZYX volume"
                        + ("; the whole volume's percentiles normalise it" if args.norm == "volume" else
                           "; its non-zero (brain) voxels' 1st percentile and median normalise it")
                        + (f"; each axial plane is read with its {args.slices // 2} neighbour(s) on either side "
                           "as channels (2.5D)" if args.slices > 1 else "")},
        output={"kind": "semantic", "channels": list(CLASS_NAMES), "class_names": list(CLASS_NAMES),
                "postprocess": {}},
        training=extra,
    )


def attach_metrics(bench_json: Path, folder: Path, key: str = "unseen_case") -> int:
    """Copy a benchmark's figures (``bench_ms_lesions.py --json``) into the card's ``metrics[key]``.

    ``unseen_case``: figures of the leave-one-out model (its card, named by the
    benchmark's ``model``, gives the run); any other key: figures of this
    model on a case it was trained on (a fit, not a generalisation figure).
    """
    from napari_medseg.models.spec import CARD_NAME, ModelCard

    card = ModelCard.from_json(folder / CARD_NAME)
    res = json.loads(bench_json.read_text(encoding="utf-8"))
    if key == "unseen_case":
        loo_card = Path(str(res.get("model", ""))) / CARD_NAME
        trained_on = "another case"
        if loo_card.is_file():
            loo = ModelCard.from_json(loo_card)
            trained_on = ", ".join(c["case"] for c in loo.training.get("cases", []))
            res["run"] = {"training_command": loo.training.get("command"),
                          "steps": loo.training.get("steps_total"), "best_step": loo.training.get("best_step"),
                          "seconds": loo.training.get("seconds_total"),
                          "held_out_slabs": loo.metrics.get("held_out_slabs")}
        res["note"] = (f"leave-one-out run: the same recipe trained on {trained_on} only, measured on "
                       f"{res.get('case')}, which it never saw. This model was trained on both cases, so it has no "
                       "unseen-case figure of its own; see the training_case_* entries for it on its training "
                       "cases.")
    else:
        res["note"] = (f"this model on {res.get('case')}, a case it was trained on: a fit, not a generalisation "
                       "figure.")
    res.pop("model", None)
    card.metrics = {**card.metrics, key: res}
    card.to_json(folder / CARD_NAME)
    print(f"metrics of {bench_json} written into {folder / CARD_NAME} as {key!r}")
    return 0


def set_operating_point(bench_json: Path, folder: Path) -> int:
    """Write a tuned operating point (``bench_ms_lesions.py --tune-on ... --json``) into the card's ``output.lesions``.

    The card then tells :func:`napari_medseg.analysis.lesions.lesions_iter`, ``medseg lesions`` and the
    Lesions widget which voxel threshold, smallest lesion (mm³), lowest lesion score and test-time flips
    (the benchmark's ``--tta``) to start from;
    ``training.operating_point`` records where it was chosen.
    """
    from napari_medseg.analysis.lesions import lesion_defaults
    from napari_medseg.models.spec import CARD_NAME, ModelCard

    res = json.loads(bench_json.read_text(encoding="utf-8"))
    if not res.get("tune_on"):
        raise SystemExit(f"{bench_json}: not a --tune-on result (the operating point must be chosen on held-out "
                         "slices of the training cases)")
    card = ModelCard.from_json(folder / CARD_NAME)
    card.output = {**card.output, "lesions": {"threshold": res["threshold"], "min_size": res["min_size_mm3"],
                                              "score_threshold": res["score_threshold"],
                                              "tta": bool(res.get("tta", False))}}
    lesion_defaults(card)  # fails on values out of range
    card.training = {**card.training, "operating_point": {
        "tuned_on": res["tune_on"], "rule": "best mean of voxel Dice and lesion-wise F1 pooled over the slabs",
        "grid": "bench_ms_lesions.tune", "slabs": res.get("tuned_on_slabs"), "command": res.get("command")}}
    card.to_json(folder / CARD_NAME)
    print(f"operating point {card.output['lesions']} of {bench_json} written into {folder / CARD_NAME}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default="patient19,patient07", help="training cases (comma-separated)")
    ap.add_argument("--val", default="patient19:112-119,patient07:92-99",
                    help="held-out slabs case:z0-z1 (inclusive), comma-separated; '' = none")
    ap.add_argument("--gap", type=int, default=2, help="slices next to a held-out slab also left out of training")
    ap.add_argument("--data", type=Path, default=DATASETS / "ms_lesions")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ms-lesions"))
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget of the optimisation")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=float, default=150.0, help="seconds between validations")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--p-lesion-slices", type=float, default=P_LESION_SLICES,
                    help="share of patches from slices with lesions")
    ap.add_argument("--p-object", type=float, default=P_OBJECT, help="share of patches centred on a lesion")
    ap.add_argument("--slices", type=int, default=1,
                    help="planes per input: 1 (2D) or an odd number (2.5D: neighbours as channels)")
    ap.add_argument("--norm", choices=sorted(NORMALIZATIONS), default="volume",
                    help="input normalisation: volume (percentiles 1 / 99.8 of the volume) or brain (non-zero "
                         "voxels' 1st percentile and median)")
    ap.add_argument("--init", type=Path, default=None, metavar="MODEL_DIR",
                    help="start from this model's weights (same architecture; see init_from), not at random")
    ap.add_argument("--warmup", type=int, default=50, help="learning-rate warm-up steps")
    ap.add_argument("--attach-metrics", type=Path, default=None,
                    help="only write this bench_ms_lesions.py --json file into --out's card metrics, then exit")
    ap.add_argument("--set-operating-point", type=Path, default=None, metavar="BENCH_JSON",
                    help="only write the operating point of this bench_ms_lesions.py --tune-on --json file "
                         "(threshold, min size, min score) into --out's card output.lesions, then exit")
    ap.add_argument("--metrics-key", default="unseen_case",
                    help="with --attach-metrics: the card's metrics entry (unseen_case, or training_case_<case>)")
    args = ap.parse_args(argv)
    if args.attach_metrics is not None:
        return attach_metrics(args.attach_metrics, args.out, args.metrics_key)
    if args.set_operating_point is not None:
        return set_operating_point(args.set_operating_point, args.out)

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from napari_medseg.models.spec import build_network, save_model
    from napari_medseg.training.augment import AugmentConfig
    from napari_medseg.training.data import Sample
    from napari_medseg.training.finetune.model import set_prior_bias
    from napari_medseg.training.loop import lr_factor
    from napari_medseg.training.semantic import semantic_loss
    from napari_medseg.training.steps import StepBudget, StepLoop, StepRunner, set_seeds

    torch.set_num_threads(args.threads)
    set_seeds(args.seed)
    rng = np.random.default_rng(args.seed)
    cases = [c.strip() for c in args.train.split(",") if c.strip()]
    val = parse_val(args.val)
    unknown = set(val) - set(cases)
    if unknown:
        raise SystemExit(f"held-out slabs of cases not in --train: {sorted(unknown)}")

    t0 = time.perf_counter()
    samples, weights, index = [], [], []
    val_slabs, data_info = [], []
    per_case_lesion_w = args.p_lesion_slices / len(cases)
    bg_slices = []
    for case in cases:
        img, lab, _geo, brain_voxels = load_case(args.data, case, NORMALIZATIONS[args.norm])
        x = as_channels(img, args.slices)  # (Z, C, Y, X)
        held = np.zeros(img.shape[0], bool)
        excluded = np.zeros(img.shape[0], bool)
        for a, b in val.get(case, []):
            held[a:b + 1] = True
            excluded[max(0, a - args.gap):b + 1 + args.gap] = True
            val_slabs.append((x[a:b + 1], lab[a:b + 1]))
        brain = brain_voxels >= MIN_BRAIN_VOXELS
        case_lesion = []
        n_bg = 0
        for z in np.flatnonzero(brain & ~excluded):
            idx, n = component_index(lab[z], rng)
            s = Sample(img[z] if args.slices == 1 else np.moveaxis(x[z], 0, -1), lab[z].astype(np.int64),
                       np.ones(lab[z].shape, np.float32), name=f"{case}:z{z}")
            samples.append(s)
            index.append(idx)
            if n:
                case_lesion.append((len(samples) - 1, n))
                weights.append(0.0)
            else:
                bg_slices.append(len(samples) - 1)
                weights.append(0.0)
                n_bg += 1
        n_comp = sum(n for _, n in case_lesion)
        for i, n in case_lesion:
            weights[i] = per_case_lesion_w * n / n_comp
        data_info.append({"case": case, "train_slices": int((brain & ~excluded).sum()),
                          "lesion_slices": len(case_lesion), "lesion_components_2d": n_comp,
                          "held_out_slabs": [list(v) for v in val.get(case, [])],
                          "excluded_slices": int((excluded & brain).sum())})
    for i in bg_slices:
        weights[i] = (1.0 - args.p_lesion_slices) / len(bg_slices)
    print(f"data: {len(samples)} training slices, {len(val_slabs)} held-out slabs, "
          f"loaded in {time.perf_counter() - t0:.1f} s; {data_info}", flush=True)

    augment = AugmentConfig(zoom=(0.8, 1.25))
    sampler = make_sampler(samples, weights, index, args.patch, augment, args.seed, args.p_object)
    extra = {
        "data": "Lesjak et al. 2017 MS lesion database (open_ms_data cross_sectional/MNI, 3D FLAIR, consensus "
                "masks); cases " + ", ".join(cases),
        "data_licence": "CC-BY (Creative Commons Attribution)",
        "citation": CITATION,
        "cases": data_info,
        "inputs": "FLAIR only (axial 2D slices, 1 mm, " + ("one channel)" if args.slices == 1 else
                                                            f"{args.slices} neighbouring slices as channels)"),
        "normalization": args.norm,
        "loss": "cross-entropy + soft Dice of the lesion class (semantic_loss, dice_weight 1), head bias at the "
                "lesion prior",
        "sampling": {"p_lesion_slices": args.p_lesion_slices, "p_object": args.p_object,
                     "lesion_centres": "uniform over 2D connected components",
                     "lesion_slices_weight": "split equally between cases, per component within a case"},
        "augmentation": {"flip": True, "rot90": True, "rotate": True, "zoom": [0.8, 1.25],
                         "contrast": [0.7, 1.4], "gamma": [0.7, 1.5], "brightness": 0.1, "p_blur": 0.2,
                         "p_noise": 0.3, "noise_std": 0.05},
        "optimizer": f"AdamW lr {args.lr} wd 1e-4, warm-up {args.warmup} steps, cosine to 0.02x over the budget",
        "batch_size": args.batch, "patch_size": args.patch, "seed": args.seed,
        "model_selection": "mean of voxel Dice and lesion-wise F1 (3D components, any overlap, p > 0.5) on "
                           "the held-out slabs",
        "torch": torch.__version__, "threads": args.threads,
        "machine": "2-core AMD EPYC VM, CPU only, shared with other jobs",
        "command": "python scripts/train_ms_lesions.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }

    net = build_network(build_card(args, {}))
    if args.init is None:
        set_prior_bias(net, samples, 2)
    else:
        from napari_medseg.io.radiology import read_nifti

        raw = np.asarray(read_nifti(args.data / cases[0] / FLAIR)[0].data, np.float32)
        extra["init"] = init_from(net, args.init, raw, NORMALIZATIONS[args.norm], args.slices)
        del raw
        print(extra["init"], flush=True)
    from napari_medseg.models.device import select_device

    device, reason = select_device("cpu")
    runner = StepRunner.create(net, device, reason, lr=args.lr, weight_decay=1e-4)
    budget = StepBudget(args.steps, args.minutes)
    batches = sampler.prefetch(args.batch)

    def batch_loss(b):
        return b.image, lambda out: semantic_loss(out, runner.tensor(b.classes), runner.tensor(b.weight))

    loop = StepLoop(runner, budget, batches, batch_loss,
                    lr_at=lambda f, i: args.lr * lr_factor(f, i, args.warmup, 0.02))
    best = None
    history = []
    t_train = time.perf_counter()
    last_eval = t_train
    args.out.mkdir(parents=True, exist_ok=True)

    def evaluate(step: int) -> None:
        nonlocal best
        if not val_slabs:
            return
        sc = validate(runner.net, val_slabs)
        entry = {"step": step, "seconds": round(time.perf_counter() - t_train, 1),
                 "loss": loop.running_loss, **{k: round(float(v), 4) for k, v in sc.items()}}
        history.append(entry)
        improved = best is None or sc["score"] >= best["score"]
        if improved:
            best = entry
            card = build_card(args, {**extra, "steps": step, "best_step": step, "seconds": entry["seconds"],
                                     "history": history})
            card.metrics = {"held_out_slabs": {k: entry[k] for k in ("dice", "sensitivity", "precision", "f1",
                                                                    "false_positives", "n_true", "score")}}
            save_model(args.out, runner.net, card)
        print(f"val step {step}: dice {sc['dice']:.3f} sens {sc['sensitivity']:.3f} prec {sc['precision']:.3f} "
              f"f1 {sc['f1']:.3f} score {sc['score']:.3f}{' *' if improved else ''}", flush=True)

    try:
        for done in loop:
            if done.step % args.log_every == 0:
                print(f"step {done.step} loss {loop.running_loss:.4f} lr {done.lr:.2e} "
                      f"{time.perf_counter() - t_train:.0f}s {done.parts}", flush=True)
            if time.perf_counter() - last_eval >= args.eval_every:
                evaluate(done.step)
                last_eval = time.perf_counter()
        evaluate(loop.step)
    finally:
        batches.close()
    total = time.perf_counter() - t0
    if best is None:  # no validation: keep the last weights
        card = build_card(args, {**extra, "steps": loop.step, "seconds": round(total, 1)})
        save_model(args.out, runner.net, card)
    else:  # record the full run in the kept card
        from napari_medseg.models.spec import CARD_NAME, ModelCard

        card = ModelCard.from_json(args.out / CARD_NAME)
        card.training.update({"steps_total": loop.step, "seconds_total": round(total, 1), "history": history,
                              "finished": True})
        card.to_json(args.out / CARD_NAME)
    print(f"done: {loop.step} steps in {total / 60:.1f} min; best {best}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
