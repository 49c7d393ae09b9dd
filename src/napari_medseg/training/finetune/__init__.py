"""Fine-tune (or train from scratch) a 2D U-Net on painted labels.

What the Train widget, ``medseg train`` and :func:`napari_medseg.train` run.
The public functions are defined in :mod:`.loop` and re-exported here:

* :func:`train` (blocking) and :func:`finetune_iter` (a progress generator),
  returning a :class:`FinetuneResult`;
* :func:`model_folder` and :func:`default_model_name`: where a trained model goes;
* :func:`describe_region`: which pixels training would use.

The modules of this package:

* :mod:`.loop`: the epoch loop, validation and checkpoints, the output folder;
* :mod:`.inputs`: (image, labels) pairs put in (spatial..., channels-last) order and checked;
* :mod:`.model`: the network and card a run starts from (base model or scratch, heads, class names);
* :mod:`.data`: training crops, held-out validation items, scoring, post-processing tuning.
"""

from __future__ import annotations

from .loop import (
    KEPT_BASE_ADVICE,
    FinetuneResult,
    default_model_name,
    describe_region,
    finetune_iter,
    model_folder,
    train,
)

__all__ = ["KEPT_BASE_ADVICE", "FinetuneResult", "default_model_name", "describe_region", "finetune_iter", "model_folder", "train"]
