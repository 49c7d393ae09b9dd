"""Resumable training: one file with the weights, the optimiser state, the step and the time spent.

A budget larger than one sitting: :func:`save_checkpoint` writes, every few
minutes and at the end of a run, everything :func:`~.loop.train_iter` needs
to go on where it stopped (``torch.save`` of float32 tensors, ~6 MB for the
nuclei U-Net with its AdamW moments; written to a temporary file and renamed,
so a run killed while saving keeps the previous checkpoint).  Resuming
(``SegmentationTrainConfig.resume``) restores the weights and the optimiser,
continues the step count, and counts the minutes already spent in the budget
and the learning-rate schedule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ParameterError

#: Format tag stored in every checkpoint.
CHECKPOINT_FORMAT = "napari-medseg-checkpoint/1"


@dataclass
class Checkpoint:
    """What a checkpoint file holds.

    Attributes
    ----------
    model : dict
        The network's ``state_dict`` (CPU tensors).
    optimizer : dict
        AdamW's ``state_dict``.
    step : int
        Optimiser steps done in total (all sittings).
    elapsed_s : float
        Training seconds spent in total (all sittings).
    card : dict
        The model card (``ModelCard.to_dict()``) the run trains.
    info : dict
        Free provenance: sittings (commands, minutes), best hold-out scores.
    """

    model: dict
    optimizer: dict
    step: int
    elapsed_s: float
    card: dict
    info: dict = field(default_factory=dict)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temporary file + rename); returns the path."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "model": ckpt.model, "optimizer": ckpt.optimizer, "step": ckpt.step,
                "elapsed_s": ckpt.elapsed_s, "card": ckpt.card, "info": ckpt.info}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a file written by :func:`save_checkpoint`; ParameterError naming the file when it is not one."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"checkpoint not found: {path}")
    try:
        d: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for a bad file  # noqa: BLE001
        raise ParameterError(f"{path} is not a readable training checkpoint: {e}") from e
    if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
        raise ParameterError(f"{path} is not a napari-medseg training checkpoint ({CHECKPOINT_FORMAT})")
    return Checkpoint(d["model"], d["optimizer"], int(d["step"]), float(d["elapsed_s"]), d["card"], d.get("info", {}))
