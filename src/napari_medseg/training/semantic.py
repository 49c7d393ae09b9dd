"""Semantic (class-per-pixel) training: patches, a weighted loss and the step loop.

The counterpart of :mod:`.data` / :mod:`.losses` / :func:`.loop.train_iter`
for semantic models (``n_classes`` logits, class 0 = background), built on
the same pieces: :class:`~.data.Sample` (``labels`` hold class ids here),
the one-pass geometric warp and intensity augmentations of :mod:`.augment`,
the patch placement and background thread of :class:`~.data.PatchSampler`
(:meth:`~.data.PatchSampler.warped_patch`, :meth:`~.data.PatchSampler.prefetch`),
:class:`~.loop.SegmentationTrainConfig` and its learning-rate schedule, and the
optimisation steps of :mod:`.steps`.

The loss is a weighted cross-entropy plus a weighted soft Dice over the
foreground classes; like the instance losses, a pixel of weight 0 contributes
exactly nothing to the loss or its gradient.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..progress import CancelToken, Progress
from .augment import pixel_augment
from .data import PatchSampler, Sample
from .loop import SegmentationTrainConfig, TrainResult, lr_factor
from .steps import StepBudget, StepLoop, StepRunner


@dataclass
class SemanticBatch:
    """``image`` (N, C, P, P) float32, ``classes`` (N, P, P) int64, ``weight`` (N, P, P) float32."""

    image: np.ndarray
    classes: np.ndarray
    weight: np.ndarray


class SemanticPatchSampler(PatchSampler):
    """Random augmented patches with class-id targets (see :class:`~.data.PatchSampler`).

    Patches are centred on a painted (non-zero class) pixel with probability
    ``p_object``, which keeps small lesions in view.
    """

    batch_type = SemanticBatch

    def patch(self, rng: np.random.Generator | None = None, index: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One patch: ``(image (C,P,P) float32, classes (P,P) int64, weight (P,P) float32)``."""
        rng = self._rng if rng is None else rng
        im, lab, wt = self.warped_patch(rng, index)
        return pixel_augment(im, rng, self.augment), lab.astype(np.int64), np.ascontiguousarray(wt)


def semantic_loss(logits, classes, weight, *, dice_weight: float = 1.0):
    """Weighted cross-entropy + weighted soft Dice of the foreground classes.

    Parameters
    ----------
    logits : tensor (N, K, Y, X)
        K class logits (class 0 background).
    classes : tensor of int64 (N, Y, X)
        Target class per pixel.
    weight : tensor (N, Y, X)
        Per-pixel weight, 0 = ignored (exactly: no loss, no gradient).
    dice_weight : float
        Weight of the Dice term.

    Returns
    -------
    loss : scalar tensor
    parts : dict
        ``ce`` and ``dice`` as floats.
    """
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    k = logits.shape[1]
    ce = F.cross_entropy(logits, classes, reduction="none")
    wsum = weight.sum().clamp_min(1.0)
    l_ce = (ce * weight).sum() / wsum
    if k > 1 and dice_weight:
        p = torch.softmax(logits, dim=1)[:, 1:]
        onehot = F.one_hot(classes.clamp(0, k - 1), k).permute(0, 3, 1, 2)[:, 1:].to(p.dtype)
        w = weight[:, None]
        inter = (w * p * onehot).sum(dim=(0, 2, 3))
        denom = (w * p).sum(dim=(0, 2, 3)) + (w * onehot).sum(dim=(0, 2, 3))
        l_dice = (1.0 - (2.0 * inter + 1.0) / (denom + 1.0)).mean()
    else:
        l_dice = logits.new_zeros(())
    loss = l_ce + dice_weight * l_dice
    return loss, {"ce": float(l_ce.detach()), "dice": float(l_dice.detach())}


def predict_classes(net, image_chw: np.ndarray) -> np.ndarray:
    """Whole-image arg-max class map (Y, X) int64 of a semantic network (reflect padding, 16 px margin)."""
    from ..inference.predictor import predict_whole

    logits = predict_whole(net, image_chw, margin=16)
    return np.argmax(logits, axis=0).astype(np.int64, copy=False)


def semantic_train_iter(
    net,
    card,
    train: Sequence[Sample],
    config: SegmentationTrainConfig,
    *,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train a 2D semantic network in place; yields :class:`Progress` every step.

    Mirrors :func:`~.loop.train_iter` (seeds, AdamW, warm-up + cosine
    learning rate over the step or time budget, background patch thread,
    CUDA mixed precision, channels-last on CPU, cancel checked every step)
    without validation: the caller validates between steps.  ``info`` holds
    ``step_loss`` (this step), ``loss`` (mean of the last 50), ``lr`` and
    ``elapsed_s``.
    """
    cfg = config
    cancel = cancel or CancelToken()
    k = int(card.architecture["out_channels"])
    if any(int(s.labels.max(initial=0)) >= k for s in train):
        raise ParameterError(f"labels hold class ids >= {k}, the model's number of classes")
    runner = StepRunner.for_config(net, cfg)
    sampler = SemanticPatchSampler(list(train), patch_size=cfg.patch_size, normalization=card.input.get("normalization"),
                                   augment=cfg.augment, p_object=cfg.p_object, group_weights=cfg.group_weights,
                                   seed=cfg.seed)
    batches = sampler.prefetch(cfg.batch_size)
    budget = StepBudget(cfg.steps, cfg.minutes)

    def batch_loss(b: SemanticBatch):
        return b.image, lambda out: semantic_loss(out, runner.tensor(b.classes), runner.tensor(b.weight),
                                                  dice_weight=cfg.dice_weight)

    steps = StepLoop(runner, budget, batches, batch_loss, cancel=cancel,
                     lr_at=lambda f, i: cfg.lr * lr_factor(f, i, cfg.warmup_steps, cfg.final_lr_ratio))
    net.train()
    try:
        for done in steps:
            yield Progress(done.step, budget.total_estimate(done.step), f"training {card.name}: step {done.step}",
                           {"step_loss": done.loss, "loss": steps.running_loss, "lr": done.lr,
                            "elapsed_s": round(budget.elapsed(), 1), "device": runner.reason})
    finally:
        batches.close()
    runner.release()
    return TrainResult(net=net, card=card, path=None, steps=steps.step, best=None, history=[],
                       cancelled=steps.cancelled)
