"""The training loop of instance models, as a generator of :class:`Progress`.

:func:`train_iter` trains any 2D instance :class:`~napari_medseg.models.unet.UNet`
(new, or loaded with :func:`~napari_medseg.models.spec.load_model` for
fine-tuning) on in-memory :class:`~napari_medseg.training.data.Sample` lists:

- fixed seeds (torch, numpy, the patch stream), AdamW, linear warm-up then
  cosine decay of the learning rate over the step or time budget;
- augmented patches made in a background thread while the network steps;
- per-pixel weights (0 = unannotated) through the loss;
- optional validation on whole images (AP@0.5, AP@0.75, mean AP, Dice via
  :mod:`napari_medseg.analysis.metrics`), keeping the best checkpoint;
- cancellable through a :class:`~napari_medseg.progress.CancelToken` (and
  ``generator.close()``): the best checkpoint so far is kept and returned;
- any instance representation of
  :mod:`~napari_medseg.training.representations` (the card's
  ``output.representation``: foreground + distance, + boundary, or
  star-convex rays);
- bfloat16 autocast on CPUs with AVX-512 BF16 / AMX, float16 on CUDA;
  channels-last memory layout and an explicit intra-op thread count on CPU;
- resumable: a checkpoint (weights, optimiser, step, time spent;
  :mod:`.checkpoint`) written every few minutes, and ``resume`` to go on
  from one.

The budget, device set-up and optimiser step are shared with the semantic
and detection loops (:mod:`.steps`); the patches come from
:class:`~.data.PatchSampler`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..progress import CancelToken, Progress
from .augment import AugmentConfig
from .data import PatchSampler, Sample, prepare_image
from .steps import StepBudget, StepLoop, StepRunner, check_budget
from .steps import set_seeds as _set_seeds  # noqa: F401  (the name other modules imported)


@dataclass
class SegmentationTrainConfig:
    """Settings of one segmentation training run (instance or semantic U-Net).

    Used by :func:`train_iter` (instance) and :func:`~.semantic.semantic_train_iter`
    (semantic); box detection has its own :class:`~.detection.DetectionTrainConfig`.

    Attributes
    ----------
    steps : int, optional
        Number of optimiser steps.  At least one of ``steps``/``minutes``.
    minutes : float, optional
        Wall-clock budget for the optimisation (validation time included).
    batch_size, patch_size : int
        Patches per step and their side (a multiple of the net's divisor).
    lr, weight_decay : float
        AdamW peak learning rate and weight decay.
    warmup_steps : int
        Linear warm-up length; then cosine decay to ``lr * final_lr_ratio``.
    final_lr_ratio : float
    steps_per_epoch : int
        Steps reported as one "epoch" (patch sampling has no natural epoch).
    val_every : int
        Validate every this many steps (and at the end); 0 = only at the end.
    seed : int
    augment : AugmentConfig
    p_object : float
        Share of patches centred on an object.
    group_weights : dict, optional
        Sampling weight per ``Sample.group``.
    dice_weight, dist_weight : float
        Loss term weights (see :func:`~napari_medseg.training.losses.instance_loss`).
    device : str
        ``auto``, ``cpu``, ``cuda``, ``mps``.
    num_threads : int, optional
        torch intra-op CPU threads (default: physical cores).
    val_seed_thresholds : tuple of float or "auto", optional
        Thresholds (the representation's
        :attr:`~napari_medseg.inference.representations.Representation.threshold_key`)
        tried at each validation, best reported; ``"auto"`` (default): the
        representation's
        :attr:`~napari_medseg.inference.representations.Representation.validation_thresholds`;
        None: the card's ``output.postprocess`` value only.
    precision : {"auto", "float32", "bfloat16", "float16"}
        Autocast of the forward pass (:func:`~.steps.training_amp_dtype`):
        ``auto`` = bfloat16 on CPUs with AVX-512 BF16 / AMX, float16 on CUDA.
    checkpoint : path, optional
        Resumable checkpoint file (:mod:`.checkpoint`), written every
        ``checkpoint_every_s`` seconds and when the run ends.
    checkpoint_every_s : float
    resume : path or Checkpoint, optional
        Go on from this checkpoint: its weights, optimiser state, step count
        and seconds spent.  ``steps`` / ``minutes`` are then the *total*
        budget over all sittings (the learning-rate schedule runs over it).
    """

    steps: int | None = None
    minutes: float | None = None
    batch_size: int = 8
    patch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    final_lr_ratio: float = 0.02
    steps_per_epoch: int = 100
    val_every: int = 500
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    p_object: float = 0.8
    group_weights: dict[str, float] | None = None
    dice_weight: float = 1.0
    dist_weight: float = 1.0
    device: str = "auto"
    num_threads: int | None = None
    val_seed_thresholds: tuple[float, ...] | str | None = "auto"
    precision: str = "auto"
    checkpoint: str | Path | None = None
    checkpoint_every_s: float = 300.0
    resume: Any = None

    def __post_init__(self) -> None:
        check_budget(self.steps, self.minutes)
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class TrainResult:
    """What :func:`train_iter` returns.

    Attributes
    ----------
    net : torch.nn.Module
        The network with the best weights (best validation score, or the last
        step when there is no validation), in eval mode on the CPU.
    card : ModelCard
        The input card updated with ``training`` provenance and ``metrics``.
    path : Path or None
        Folder where the best model was saved (``out``), if any.
    steps : int
        Optimiser steps done.
    best : dict or None
        Validation scores of the kept weights.
    history : list of dict
        One entry per validation: step, seconds, loss, scores.
    cancelled : bool
        Whether the run stopped early on request.
    """

    net: Any
    card: Any
    path: Path | None
    steps: int
    best: dict | None
    history: list[dict]
    cancelled: bool = False


def lr_factor(progress: float, step: int, warmup_steps: int, final_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine from 1 to ``final_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(max(progress, 0.0), 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def predict_maps(net, image_chw: np.ndarray, device=None, max_tile: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whole-image forward pass of an instance network -> ``(fg_prob, dist)`` (Y, X) float32.

    ``image_chw`` is normalised (C, Y, X).  The image is mirror-padded to a
    multiple of the network's divisor (numpy ``reflect``, as the tiled
    engine), so the result does not depend on tiling
    (:func:`~napari_medseg.inference.predictor.predict_whole`).  For
    validation during training; users go through
    :func:`napari_medseg.api.segment`.
    """
    from ..inference.predictor import predict_whole

    dev = next(net.parameters()).device if device is None else device
    # at least 16 px of context on each side, as the engine's halo gives.
    y = predict_whole(net, image_chw, margin=16, activation="sigmoid", channels_last=dev.type == "cpu", device=dev)
    return y[0], y[1]


def predict_all_maps(net, image_chw: np.ndarray, device=None) -> np.ndarray:
    """Whole-image forward pass -> every sigmoid output map, float32 (K, Y, X) (see :func:`predict_maps`)."""
    from ..inference.predictor import predict_whole

    dev = next(net.parameters()).device if device is None else device
    return predict_whole(net, image_chw, margin=16, activation="sigmoid", channels_last=dev.type == "cpu", device=dev)


def segment_with_net(net, card, image: np.ndarray, **postprocess) -> np.ndarray:
    """Labels for one raw image (Y, X) or (Y, X, C) with a network and its card (any representation)."""
    from ..inference.representations import representation_of

    rep = representation_of(card)
    maps = predict_all_maps(net, prepare_image(image, card.input.get("normalization")))
    return rep.instances(maps, **{**card.output.get("postprocess", {}), **postprocess})


def validate(net, card, samples: Sequence[Sample], maps: list | None = None,
             seed_thresholds: Sequence[float] | None = None, **postprocess) -> dict:
    """Scores of ``net`` on whole validation images (mean over images).

    Returns a dict with ``ap50``, ``ap75``, ``map`` (mean AP over IoU
    0.5:0.05:0.9) and ``dice`` averaged over images, ``n_images``, the same
    per ``Sample.group`` under ``by_group``, and the ``seed_threshold`` used.
    ``seed_thresholds``, when given, are all tried on the same network maps
    and the best by mean AP@0.5 is reported (the distance map's level varies
    during training, so a fixed threshold would make checkpoint selection
    noisy); ``"auto"`` tries the representation's ``validation_thresholds``.  ``maps``, when a list, receives each image's maps: ``(fg_prob,
    dist)`` for the ``distance`` representation, else the (K, Y, X) array.
    For a ``star`` model the thresholds tried are ``prob_threshold``
    values (the representation's :attr:`threshold_key`), reported under
    ``seed_threshold`` too.
    """
    from ..analysis.metrics import MAP_THRESHOLDS, average_precision, dice
    from ..inference.representations import representation_of

    rep = representation_of(card)
    key = rep.threshold_key
    pp = rep.keywords({**card.output.get("postprocess", {}), **postprocess})
    if isinstance(seed_thresholds, str):
        if seed_thresholds != "auto":
            raise ParameterError(f"seed_thresholds must be a sequence of floats, 'auto' or None, got {seed_thresholds!r}")
        seed_thresholds = rep.validation_thresholds
    candidates = [float(t) for t in seed_thresholds] if seed_thresholds else [float(pp[key])]
    rows: dict[float, list[dict]] = {t: [] for t in candidates}
    for s in samples:
        y = predict_all_maps(net, prepare_image(s.image, card.input.get("normalization")))
        if maps is not None:
            maps.append((y[0], y[1]) if rep.kind == "distance" else y)
        for t in candidates:
            pred = rep.instances(y, **{**pp, key: t})
            aps = average_precision(s.labels, pred, MAP_THRESHOLDS)
            rows[t].append({"group": s.group, "ap50": float(aps[0]), "ap75": float(aps[5]),
                            "map": float(aps.mean()), "dice": dice(s.labels, pred)})
    results = {t: summarize(r) | {"seed_threshold": t, key: t} for t, r in rows.items()}
    return max(results.values(), key=lambda r: (r.get("ap50", 0.0), r.get("map", 0.0)))


def summarize(rows: list[dict]) -> dict:
    """Mean scores over per-image rows, overall and per group."""
    keys = ("ap50", "ap75", "map", "dice")

    def mean(rs):
        return {k: float(np.mean([r[k] for r in rs])) for k in keys} | {"n_images": len(rs)}

    out = mean(rows) if rows else {"n_images": 0}
    groups = sorted({r["group"] for r in rows})
    out["by_group"] = {g: mean([r for r in rows if r["group"] == g]) for g in groups}
    return out


def train_iter(
    net,
    card,
    train: Sequence[Sample],
    val: Sequence[Sample] | None = None,
    config: SegmentationTrainConfig | None = None,
    *,
    out: str | Path | None = None,
    cancel: CancelToken | None = None,
    log: Callable[[str], Any] | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train an instance network; yields :class:`Progress` every step.

    Parameters
    ----------
    net : UNet
        2D, with the output channels of the card's representation
        (:func:`~napari_medseg.inference.representations.representation_of`;
        default foreground and distance).  Trained in place.
    card : ModelCard
        Its card (``input.normalization`` is used for the data,
        ``output.representation`` for the targets and loss); a copy with
        ``training`` and ``metrics`` filled in is saved and returned.
    train : sequence of Sample
        Training images (raw; normalised here as the card says).
    val : sequence of Sample, optional
        Whole validation images; the best weights by mean AP@0.5 are kept.
    config : SegmentationTrainConfig
        Budget and hyper-parameters (default: 200 steps).
    out : path, optional
        Model folder: the best model is saved there (``save_model``) at each
        improvement, so a cut-off run still leaves a usable model.
    cancel : CancelToken, optional
        Checked every step; stops cleanly keeping the best weights.
    log : callable, optional
        Receives one-line text reports (validation results).

    Yields
    ------
    Progress
        ``step``/``total`` steps (``total`` is estimated from the measured
        speed under a time budget); ``info`` has ``epoch``, ``loss`` (running
        mean), ``lr``, ``val`` (last validation AP@0.5 or None),
        ``best`` and ``elapsed_s``.

    Returns
    -------
    TrainResult
    """
    from ..models.spec import save_model
    from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from .representations import representation_for

    cfg = config or SegmentationTrainConfig(steps=200)
    cancel = cancel or CancelToken()
    if card.kind != "instance":
        raise ParameterError("train_iter trains instance models")
    trep = representation_for(card)  # ModelError when out_channels do not match
    key = trep.rep.threshold_key
    divisor = int(getattr(net, "divisor", 1))
    if cfg.patch_size % divisor:
        raise ParameterError(f"patch_size {cfg.patch_size} must be a multiple of the network divisor {divisor}")
    if any(s.channels != card.in_channels for s in train):
        raise ParameterError(f"training images must have {card.in_channels} channel(s) for model {card.name!r}")

    if trep.rep.kind == "distance" and (cfg.dice_weight, cfg.dist_weight) != (1.0, 1.0):
        from .losses import instance_loss

        def loss_fn(out, t, w):
            return instance_loss(out, t[:, 0], t[:, 1], w, dice_weight=cfg.dice_weight, dist_weight=cfg.dist_weight)
    else:
        loss_fn = trep.loss
    resume = cfg.resume
    if resume is not None and not isinstance(resume, Checkpoint):
        resume = load_checkpoint(resume)
    if resume is not None:
        net.load_state_dict(resume.model)
    runner = StepRunner.for_config(net, cfg)
    if resume is not None:
        runner.opt.load_state_dict(resume.optimizer)
    start_step = resume.step if resume is not None else 0
    reason = runner.reason
    # a resumed run draws new patches (the stream is seeded by the step it starts at)
    sampler = PatchSampler(list(train), patch_size=cfg.patch_size, normalization=card.input.get("normalization"),
                           augment=cfg.augment, p_object=cfg.p_object, group_weights=cfg.group_weights,
                           seed=cfg.seed + start_step, targets=trep.targets)
    batches = sampler.prefetch(cfg.batch_size)
    budget = StepBudget(cfg.steps, cfg.minutes, offset_s=resume.elapsed_s if resume is not None else 0.0)

    def batch_loss(b):
        return b.image, lambda out: loss_fn(out, runner.tensor(b.targets), runner.tensor(b.weight))

    steps = StepLoop(runner, budget, batches, batch_loss, cancel=cancel, start_step=start_step,
                     lr_at=lambda f, i: cfg.lr * lr_factor(f, i, cfg.warmup_steps, cfg.final_lr_ratio))
    history: list[dict] = []
    best: dict | None = None
    best_state = None
    step = start_step
    sittings = list(resume.info.get("sittings", []) if resume is not None else [])
    last_ckpt = budget.elapsed()
    cancelled = False
    out_path = Path(out) if out is not None else None
    elapsed = budget.elapsed

    def finished_card(scores: dict | None):
        c = copy.deepcopy(card)
        c.training = {**c.training, "steps": step, "batch_size": cfg.batch_size, "patch_size": cfg.patch_size,
                      "lr": cfg.lr, "seed": cfg.seed, "seconds": round(elapsed(), 1), "device": reason,
                      "n_train_images": len(train), "n_val_images": len(val or [])}
        if scores is not None:
            c.metrics = {**c.metrics, "val_during_training": scores}
            if key in scores:  # the threshold that scored best on val
                c.output = {**c.output, "postprocess": {**c.output.get("postprocess", {}), key: scores[key]}}
        return c

    def write_checkpoint() -> None:
        nonlocal last_ckpt
        last_ckpt = budget.elapsed()
        if cfg.checkpoint is None:
            return
        model = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
        info = {"sittings": [*sittings, {"steps": step - start_step, "seconds": round(elapsed() - budget.offset_s, 1),
                                         "precision": str(runner.amp_dtype or "float32").replace("torch.", "")}],
                "best": best}
        save_checkpoint(cfg.checkpoint, Checkpoint(model, runner.opt.state_dict(), step, elapsed(),
                                                   finished_card(None).to_dict(), info))

    def run_validation() -> dict:
        nonlocal best, best_state
        net.eval()
        scores = validate(net, card, val, seed_thresholds=cfg.val_seed_thresholds)
        net.train()
        scores = {"step": step, **scores}
        history.append({"step": step, "seconds": round(elapsed(), 1),
                        "loss": steps.running_loss, **scores})
        if best is None or scores["ap50"] > best["ap50"]:
            best = scores
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
            if out_path is not None:
                save_model(out_path, _cpu_copy(net, best_state), finished_card(best))
        if log:
            log(f"step {step} ({elapsed():.0f} s): val AP50 {scores['ap50']:.3f} AP75 {scores['ap75']:.3f} "
                f"mAP {scores['map']:.3f} dice {scores['dice']:.3f} seed {scores['seed_threshold']} "
                + " ".join(f"{g}:{v['ap50']:.3f}" for g, v in scores["by_group"].items())
                + (" *best*" if best is scores else ""))
        return scores

    net.train()
    last_val = None
    try:
        for done in steps:
            step = done.step
            if val and cfg.val_every and step % cfg.val_every == 0:
                last_val = run_validation()
            if cfg.checkpoint is not None and elapsed() - last_ckpt >= cfg.checkpoint_every_s:
                write_checkpoint()
            yield Progress(step, budget.total_estimate(step), f"training {card.name}: step {step}",
                           {"epoch": step // cfg.steps_per_epoch, "loss": steps.running_loss, "lr": done.lr,
                            "val": None if last_val is None else last_val["ap50"],
                            "best": None if best is None else best["ap50"], "elapsed_s": round(elapsed(), 1)})
        cancelled = steps.cancelled
    except GeneratorExit:
        cancelled = True
        batches.close()
        raise
    finally:
        batches.close()

    if cfg.checkpoint is not None and step > start_step:
        write_checkpoint()  # the last weights (before the best ones are put back)
    if val and step > 0 and (last_val is None or last_val["step"] != step) and not (cancelled and best is not None):
        last_val = run_validation()
    if best_state is not None:
        net.load_state_dict(best_state)
    runner.release()
    final = finished_card(best)
    final = replace(final, training={**final.training, "steps_total": step, "best_step": None if best is None else best["step"],
                                     "cancelled": cancelled,
                                     "precision": str(runner.amp_dtype or "float32").replace("torch.", "")})
    if out_path is not None:
        save_model(out_path, net, final)
    return TrainResult(net=net, card=final, path=out_path, steps=step, best=best, history=history, cancelled=cancelled)


def _cpu_copy(net, state):
    """A CPU copy of ``net`` holding ``state`` (to save while training goes on)."""
    import torch

    c = copy.deepcopy(net).to("cpu")
    c.load_state_dict(state)
    return c.to(memory_format=torch.contiguous_format)
