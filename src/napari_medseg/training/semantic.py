"""Semantic (class-per-pixel) training: patches, a weighted loss and the step loop.

The counterpart of :mod:`.data` / :mod:`.losses` / :func:`.loop.train_iter`
for semantic models (``n_classes`` logits, class 0 = background), built on
the same pieces: :class:`~.data.Sample` (``labels`` hold class ids here),
the one-pass geometric warp and intensity augmentations of :mod:`.augment`,
the background patch thread of :meth:`~.data.PatchSampler.prefetch`,
:class:`~.loop.TrainConfig` and its learning-rate schedule.

The loss is a weighted cross-entropy plus a weighted soft Dice over the
foreground classes; like the instance losses, a pixel of weight 0 contributes
exactly nothing to the loss or its gradient.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..progress import CancelToken, Progress
from .augment import pixel_augment, random_matrix, warp
from .data import PatchSampler, Sample
from .loop import TrainConfig, TrainResult, _set_seeds, lr_factor


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

    def patch(self, rng: np.random.Generator | None = None, index: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One patch: ``(image (C,P,P) float32, classes (P,P) int64, weight (P,P) float32)``."""
        rng = self._rng if rng is None else rng
        i = int(rng.choice(len(self.samples), p=self._p)) if index is None else index
        s, img = self.samples[i], self._images[i]
        h, w = s.labels.shape
        fg_idx = self._fg_index[i]
        if len(fg_idx) and rng.random() < self.p_object:
            r, c = divmod(int(fg_idx[rng.integers(len(fg_idx))]), w)
            j = self.patch_size / 4
            center = (r + rng.uniform(-j, j), c + rng.uniform(-j, j))
        else:
            center = (rng.uniform(0, h - 1), rng.uniform(0, w - 1))
        m = random_matrix(rng, self.augment)
        weight = np.ones((h, w), np.float32) if s.weight is None else s.weight.astype(np.float32, copy=False)
        im, lab, wt = warp([(img, 1), (s.labels, 0), (weight, 0)], center, m, self.patch_size)
        im = pixel_augment(im, rng, self.augment)
        return im, lab.astype(np.int64), np.ascontiguousarray(wt)

    def batch(self, n: int, rng: np.random.Generator | None = None) -> SemanticBatch:
        parts = [self.patch(rng) for _ in range(n)]
        return SemanticBatch(*(np.stack(x) for x in zip(*parts)))


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
    """Whole-image arg-max class map (Y, X) int64 of a semantic network (reflect padding)."""
    import torch

    dev = next(net.parameters()).device
    c, h, w = image_chw.shape
    d = int(getattr(net, "divisor", 8))
    m = 16
    x = np.pad(image_chw, ((0, 0), (m, m + (-h) % d), (m, m + (-w) % d)), mode="reflect")
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x))[None].to(dev)
        y = net(xt).float()[0, :, m:m + h, m:m + w].argmax(0)
    return y.cpu().numpy()


def semantic_train_iter(
    net,
    card,
    train: Sequence[Sample],
    config: TrainConfig,
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
    import torch

    from ..models.device import physical_cores, select_device

    cfg = config
    cancel = cancel or CancelToken()
    k = int(card.architecture["out_channels"])
    if any(int(s.labels.max(initial=0)) >= k for s in train):
        raise ParameterError(f"labels hold class ids >= {k}, the model's number of classes")
    _set_seeds(cfg.seed)
    device, reason = select_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads or physical_cores())
    net.to(device)
    channels_last = device.type == "cpu"
    if channels_last:
        net.to(memory_format=torch.channels_last)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = SemanticPatchSampler(list(train), patch_size=cfg.patch_size, normalization=card.input.get("normalization"),
                                   augment=cfg.augment, p_object=cfg.p_object, group_weights=cfg.group_weights,
                                   seed=cfg.seed)
    batches = sampler.prefetch(cfg.batch_size)
    budget_s = None if cfg.minutes is None else 60.0 * cfg.minutes
    t0 = time.perf_counter()
    step, running, cancelled = 0, [], False

    def fraction() -> float:
        fr = []
        if cfg.steps:
            fr.append(step / cfg.steps)
        if budget_s is not None:
            fr.append((time.perf_counter() - t0) / budget_s)
        return max(fr)

    net.train()
    try:
        while True:
            if cancel.cancelled:
                cancelled = True
                break
            if (cfg.steps is not None and step >= cfg.steps) or (
                    budget_s is not None and time.perf_counter() - t0 >= budget_s):
                break
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(fraction(), step, cfg.warmup_steps, cfg.final_lr_ratio)
            b = next(batches)
            x = torch.from_numpy(b.image).to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            cls = torch.from_numpy(b.classes).to(device, non_blocking=True)
            w = torch.from_numpy(b.weight).to(device, non_blocking=True)
            with torch.autocast("cuda", enabled=use_amp):
                logits = net(x)
            loss, _ = semantic_loss(logits, cls, w, dice_weight=cfg.dice_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            value = float(loss.detach())
            running = [*running[-49:], value]
            total = cfg.steps or 0
            if budget_s is not None:
                by_time = int(step * budget_s / max(time.perf_counter() - t0, 1e-9))
                total = min(total, by_time) if total else by_time
            yield Progress(step, max(total, step), f"training {card.name}: step {step}",
                           {"step_loss": value, "loss": float(np.mean(running)), "lr": opt.param_groups[0]["lr"],
                            "elapsed_s": round(time.perf_counter() - t0, 1), "device": reason})
    finally:
        batches.close()
    net.to("cpu").to(memory_format=torch.contiguous_format).eval()
    return TrainResult(net=net, card=card, path=None, steps=step, best=None, history=[], cancelled=cancelled)
