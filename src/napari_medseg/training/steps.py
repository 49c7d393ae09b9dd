"""The optimisation steps shared by every training loop: budget, device, one step.

The instance loop (:func:`.loop.train_iter`), the semantic loop
(:func:`.semantic.semantic_train_iter`) and the box-detector loop
(:func:`.detection.train_detector_iter`) all run the same steps:

1. stop when cancelled or when the step / time budget is spent
   (:class:`StepBudget`);
2. set the learning rate from the fraction of the budget used;
3. take the next batch, move it to the device (channels-last on the CPU),
   run the network under autocast, compute the loss, back-propagate
   (through a ``GradScaler`` for float16), optionally clip the gradient
   norm, and let AdamW update the weights (:class:`StepRunner`).

:class:`StepLoop` is that loop as an iterator of :class:`StepDone`; the
callers keep what differs between them (validation, checkpoints, progress
reports, batch making).  Nothing here draws random numbers: a seed fixes a
run exactly as before (time budgets stay approximate, since the learning
rate follows the wall clock).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError, TrainingError
from ..progress import CancelToken

#: Steps averaged in :attr:`StepLoop.running_loss`.
RUNNING_STEPS = 50


def set_seeds(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch with ``seed``."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 arithmetic natively (AVX-512 BF16 or AMX-BF16 in ``/proc/cpuinfo``).

    oneDNN then runs bfloat16 convolutions at up to twice the float32 rate;
    without these instructions bfloat16 is emulated and slower.  False when
    the flags cannot be read (not Linux).
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def training_amp_dtype(device, precision: str = "auto"):
    """Autocast dtype of the training forward pass.

    Parameters
    ----------
    device : torch.device
    precision : {"auto", "float32", "bfloat16", "float16"}
        ``auto``: float16 (with loss scaling) on CUDA, bfloat16 on CPUs with
        AVX-512 BF16 or AMX (:func:`cpu_has_bf16`), float32 elsewhere.

    Returns
    -------
    torch.dtype or None
        None = plain float32.
    """
    import torch

    choices = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if precision != "auto":
        if precision not in choices:
            raise ParameterError(f"precision must be auto, float32, bfloat16 or float16, got {precision!r}")
        return choices[precision]
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def check_budget(steps: int | None, minutes: float | None) -> None:
    """Raise :class:`~napari_medseg.errors.ParameterError` unless ``steps`` >= 1 and/or ``minutes`` > 0 is given."""
    if steps is None and minutes is None:
        raise ParameterError("give a number of steps or a time budget in minutes (or both)")
    if steps is not None and steps < 1:
        raise ParameterError(f"steps must be >= 1, got {steps}")
    if minutes is not None and minutes <= 0:
        raise ParameterError(f"minutes must be > 0, got {minutes}")


@dataclass
class StepBudget:
    """A number of steps and/or a wall-clock budget, timed from creation.

    Parameters
    ----------
    steps : int, optional
        Largest number of optimiser steps (>= 1).
    minutes : float, optional
        Wall-clock budget in minutes (> 0).  At least one of the two.
    offset_s : float
        Seconds already spent before this budget was created (a resumed run):
        counted in :meth:`elapsed`, so in the time budget too.
    """

    steps: int | None = None
    minutes: float | None = None
    t0: float = field(default_factory=time.perf_counter)
    offset_s: float = 0.0

    def __post_init__(self) -> None:
        check_budget(self.steps, self.minutes)

    @property
    def seconds(self) -> float | None:
        """The time budget in seconds (None without one)."""
        return None if self.minutes is None else 60.0 * self.minutes

    def elapsed(self) -> float:
        """Seconds since the budget was created, plus :attr:`offset_s`."""
        return time.perf_counter() - self.t0 + self.offset_s

    def fraction(self, step: int) -> float:
        """Share of the budget used after ``step`` steps: the larger of steps and time (>= 1 = spent)."""
        fr = []
        if self.steps is not None:
            fr.append(step / self.steps)
        if self.seconds is not None:
            fr.append(self.elapsed() / self.seconds)
        return max(fr)

    def total_estimate(self, step: int) -> int:
        """Expected number of steps: ``steps``, or fewer when the measured speed runs out of time first."""
        est = self.steps or 0
        if self.seconds is not None and step > 0:
            by_time = int(step * self.seconds / max(self.elapsed(), 1e-9))
            est = min(est, by_time) if est else by_time
        return max(est, step)


@dataclass
class StepRunner:
    """A network on its device with AdamW and mixed precision: :meth:`step` is one update.

    Build it with :meth:`create` (or :meth:`for_config` for the instance and
    semantic loops).

    Attributes
    ----------
    net : torch.nn.Module
        Trained in place (the caller switches train / eval mode).
    device : torch.device
    reason : str
        Why this device (from :func:`~napari_medseg.models.device.select_device`).
    opt : torch.optim.AdamW
    amp_dtype : torch.dtype or None
        Autocast dtype of the forward pass; None = plain float32.
    scaler : torch.amp.GradScaler
        Enabled only for float16 on CUDA; disabled it is a pass-through.
    channels_last : bool
        Inputs (and the network) in channels-last memory layout (faster
        oneDNN convolutions on the CPU).
    clip_grad_norm : float, optional
        Gradients are clipped to this total norm before each update.
    """

    net: Any
    device: Any
    reason: str
    opt: Any
    amp_dtype: Any = None
    scaler: Any = None
    channels_last: bool = False
    clip_grad_norm: float | None = None

    @classmethod
    def create(cls, net, device, reason: str = "", *, lr: float, weight_decay: float, amp_dtype=None,
               grad_scaler: bool = False, clip_grad_norm: float | None = None) -> StepRunner:
        """Move ``net`` to ``device`` (channels-last on the CPU) and give it an AdamW optimiser.

        Parameters
        ----------
        net : torch.nn.Module
        device : torch.device
        reason : str
            Why this device, kept for reports.
        lr, weight_decay : float
            AdamW's initial learning rate and weight decay.
        amp_dtype : torch.dtype, optional
            Autocast dtype of the forward pass (None: float32).
        grad_scaler : bool
            Scale the loss with a CUDA ``GradScaler`` (for float16 on CUDA).
        clip_grad_norm : float, optional
            Clip the gradients' total norm to this before each update.
        """
        import torch

        channels_last = device.type == "cpu"
        net.to(device)
        if channels_last:
            net.to(memory_format=torch.channels_last)
        scaler = torch.amp.GradScaler("cuda", enabled=grad_scaler)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        return cls(net, device, reason, opt, amp_dtype, scaler, channels_last, clip_grad_norm)

    @classmethod
    def for_config(cls, net, cfg) -> StepRunner:
        """The set-up of the instance and semantic loops from a :class:`~.loop.SegmentationTrainConfig`.

        Seeds everything with ``cfg.seed`` (:func:`set_seeds`), picks
        ``cfg.device``, uses ``cfg.num_threads`` CPU threads (default: the
        physical cores) and the autocast of ``cfg.precision`` (default
        ``auto``, :func:`training_amp_dtype`: float16 with loss scaling on
        CUDA, bfloat16 on CPUs with AVX-512 BF16 / AMX).
        """
        import torch

        from ..models.device import physical_cores, select_device

        set_seeds(cfg.seed)
        device, reason = select_device(cfg.device)
        if device.type == "cpu":
            torch.set_num_threads(cfg.num_threads or physical_cores())
        amp = training_amp_dtype(device, getattr(cfg, "precision", "auto"))
        return cls.create(net, device, reason, lr=cfg.lr, weight_decay=cfg.weight_decay,
                          amp_dtype=amp, grad_scaler=device.type == "cuda" and amp is torch.float16)

    @property
    def lr(self) -> float:
        """The current learning rate."""
        return self.opt.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every parameter group."""
        for g in self.opt.param_groups:
            g["lr"] = lr

    def tensor(self, array: np.ndarray):
        """A numpy array as a tensor on the device (shares memory on the CPU)."""
        import torch

        return torch.from_numpy(array).to(self.device, non_blocking=True)

    def step(self, image: np.ndarray, loss_fn: Callable[[Any], tuple[Any, dict]]) -> tuple[float, dict]:
        """One optimiser update on a batch.

        Parameters
        ----------
        image : ndarray of float32, (N, C, Y, X)
            The network's input batch.
        loss_fn : callable
            ``loss_fn(output) -> (loss tensor, parts dict)``; it receives the
            network output (N, K, Y, X) and typically moves the targets to
            the device with :meth:`tensor`.

        Returns
        -------
        loss : float
        parts : dict
            What ``loss_fn`` returned beside the loss.
        """
        import torch

        x = self.tensor(image)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = self.net(x)
        loss, parts = loss_fn(out)
        if not bool(torch.isfinite(loss.detach()).all()):
            raise TrainingError(f"training stopped: the loss became {float(loss.detach())} at learning rate "
                                f"{self.lr:g}; the weights would turn to NaN (learning rate too high, or images "
                                "with NaN/inf values?)")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip_grad_norm)
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.detach()), parts

    def release(self):
        """The network back on the CPU, contiguous, in eval mode (returned)."""
        import torch

        return self.net.to("cpu").to(memory_format=torch.contiguous_format).eval()


@dataclass
class StepDone:
    """One finished step: ``step`` (1-based count), its ``loss``, the loss ``parts`` and the ``lr`` used."""

    step: int
    loss: float
    parts: dict
    lr: float


class StepLoop:
    """Optimiser steps until the budget is spent or the run is cancelled.

    Iterating runs the steps and yields a :class:`StepDone` after each; the
    caller may validate, save or report in between.  Before every step the
    cancel token is checked first (then :attr:`cancelled` is set and the
    iteration ends), then the budget, then the learning rate is set to
    ``lr_at(fraction_of_budget, step)`` and ``batch_loss(runner, next(batches))``
    returns ``(image batch, loss_fn)`` for :meth:`StepRunner.step`.

    Parameters
    ----------
    runner : StepRunner
    budget : StepBudget
    batches : iterator
        Endless batches (whatever ``batch_loss`` understands).
    batch_loss : callable
        ``batch_loss(batch) -> (image (N, C, Y, X), loss_fn)``.
    lr_at : callable
        ``lr_at(fraction, step) -> learning rate``.
    cancel : CancelToken, optional
    start_step : int
        Steps already done (a resumed run): the count goes on from there.
    """

    def __init__(self, runner: StepRunner, budget: StepBudget, batches: Iterator,
                 batch_loss: Callable[[Any], tuple[np.ndarray, Callable]], lr_at: Callable[[float, int], float],
                 cancel: CancelToken | None = None, start_step: int = 0) -> None:
        self.runner, self.budget, self.batches = runner, budget, batches
        self.batch_loss, self.lr_at = batch_loss, lr_at
        self.cancel = cancel
        self.step = int(start_step)
        self.cancelled = False
        self._recent: deque[float] = deque(maxlen=RUNNING_STEPS)

    @property
    def running_loss(self) -> float | None:
        """Mean loss of the last :data:`RUNNING_STEPS` steps (None before the first)."""
        return float(np.mean(self._recent)) if self._recent else None

    def __iter__(self) -> Iterator[StepDone]:
        while True:
            if self.cancel is not None and self.cancel.cancelled:
                self.cancelled = True
                return
            f = self.budget.fraction(self.step)
            if f >= 1.0:
                return
            self.runner.set_lr(self.lr_at(f, self.step))
            image, loss_fn = self.batch_loss(next(self.batches))
            loss, parts = self.runner.step(image, loss_fn)
            self.step += 1
            self._recent.append(loss)
            yield StepDone(self.step, loss, parts, self.runner.lr)
