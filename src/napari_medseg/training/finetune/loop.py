"""Fine-tune (or train from scratch) a 2D U-Net on painted labels, as a progress generator.

This is what the Train widget, ``medseg train`` and :func:`train` run.  The
user gives (image, labels) pairs, 2D or 3D, typically painted in napari:

1. **Region.**  Only the annotated region of each image is used
   (:mod:`~napari_medseg.training.regions`): the painted labels' bounding
   box (+16 px; for semantic labels the whole image, or the whole painted
   slices of a volume), or the user's ROI
   polygons.  Inside it unpainted pixels
   are background; outside it the loss weight is exactly 0 and labels are
   not even read.
2. **Validation.**  A part of the annotation is held out automatically
   (whole images when there are >= 4, else a block of slices or a strip of
   each region).  Score: AP@0.5 (instance, pooled over the held-out parts)
   or mean foreground Dice (semantic).  The best epoch is kept (the later
   one on ties); training stops early when the score has not reached the
   best for ``patience`` epochs.
3. **3D data.**  Models are 2D: a 3D pair is trained as the 2D slices of its
   annotated region (what the engine does at inference: a 2D model segments
   a Z stack plane by plane).  A 3D base model is refused with a clear
   message.
4. **Model.**  From a shipped or user model of the same architecture, or from
   scratch (U-Net, 16 base channels, depth 4).  For semantic mode the head is
   re-initialised when the base has another number of outputs; a new
   semantic head starts at the painted class frequencies.  The best
   checkpoint is written to the model folder at every improvement (so a
   cancelled run leaves a valid model) and the card records the base model,
   data shapes, regions, classes, epochs, time and final scores.

Semantic 2D training (2D labels, e.g. lesions painted on dermoscopy photos)
has its own defaults, measured with ``benchmarks/bench_semantic_2d.py``:
the wider region above, colour jitter for RGB images
(:data:`SEMANTIC_2D_RGB_AUGMENT`) and, with one foreground class, a card
that keeps the largest lesion and fills its holes
(:data:`SEMANTIC_2D_POSTPROCESS`).  3D labels (trained as their 2D slices)
and instance training keep the general defaults.

Training steps come from :func:`napari_medseg.training.loop.train_iter`
(instance) or :func:`~napari_medseg.training.semantic.semantic_train_iter`
(semantic): AdamW with warm-up and cosine decay over the budget, augmented
patches made in a background thread (both CPU cores stay busy), CUDA mixed
precision.

Helpers live in :mod:`.inputs` (checking the pairs), :mod:`.model` (base
model or scratch, heads, class names) and :mod:`.data` (crops, validation
items, scoring, threshold tuning) of this package; this module keeps the
loop, the output folder and the public functions, which
:mod:`napari_medseg.training.finetune` re-exports.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ParameterError, TrainingError
from ...progress import CancelToken, Progress, run
from ..regions import describe_regions, find_region, per_image_roi, split_validation
from .data import build_units, tune_postprocess, validate
from .inputs import as_pair, per_image
from .model import DEFAULT_NORMALIZATION, MODES, full_class_names, load_base, output_section, set_prior_bias

#: Time budget (minutes) when neither ``minutes`` nor ``epochs`` is given.
DEFAULT_MINUTES = 2.0
LR_SCRATCH = 1e-3
#: Also 1e-3: adapting the grey nuclei model to dsb2018 histo (3 images, 2 CPU minutes), 1e-3 beat 3e-4 on all
#: three image draws tried (histo val AP@0.5 0.435/0.354/0.426 vs 0.319/0.345/0.347; benchmarks/bench_finetune.py).
LR_FINETUNE = 1e-3
#: Epochs without a better validation score before early stopping.  20, not 10: on the histo adaptation
#: benchmark the held-out strips found a better epoch 19 after a plateau from epoch 6 (seed 1: AP@0.5 0.354 with
#: patience 10, 0.415 without early stopping).
PATIENCE = 20
#: Post-processing of a new semantic 2D model with one foreground class (a lesion): keep the largest lesion and
#: fill its holes (:mod:`napari_medseg.inference.classes`).  PH2 dermoscopy, 10 images, 3 CPU minutes: test Dice
#: 0.782 -> 0.890 (benchmarks/bench_semantic_2d.py; BENCHMARKS.md).
SEMANTIC_2D_POSTPROCESS = {"keep_largest": True, "fill_holes": True}
#: Augmentation of semantic 2D training on RGB images: colour jitter (hue, saturation, white balance) instead of
#: the H&E stain jitter, which models stain, not camera and skin: PH2 test Dice 0.890 -> 0.900 (same benchmark).
SEMANTIC_2D_RGB_AUGMENT = {"zoom": (0.8, 1.25), "p_stain": 0.0, "p_color": 0.8}


#: What to say when no trained epoch beat the base model (``card.training["kept_base_weights"]``).
KEPT_BASE_ADVICE = (
    "No epoch beat the base model on the held-out annotation, so its weights were kept (post-processing "
    "re-tuned). To do better: paint more objects (whole ones, across the kinds of places you care about), "
    "train longer (more minutes or epochs), or lower the learning rate (e.g. 3e-4)."
)


@dataclass
class FinetuneResult:
    """What :func:`finetune_iter` returns.

    Attributes
    ----------
    model_path : Path
        Folder of the saved model (``model.json`` + ``weights.safetensors``).
    card : ModelCard
        Its card.
    history : list of dict
        One entry per epoch: ``epoch``, ``step``, ``loss`` (mean training loss
        of the epoch), ``val_score`` (None without validation), ``seconds``.
    best : dict or None
        History entry of the kept weights (None without validation).
    region : str
        Text saying which pixels were used (see :func:`describe_region`).
    cancelled, stopped_early : bool
        How the run ended.
    net : torch.nn.Module
        The kept network, on the CPU, in eval mode.
    """

    model_path: Path
    card: Any
    history: list[dict]
    best: dict | None = None
    region: str = ""
    cancelled: bool = False
    stopped_early: bool = False
    net: Any = field(default=None, repr=False)


class StepLoss:
    """Per-step losses from the 50-step running mean that ``train_iter`` reports.

    ``train_iter``'s ``info["loss"]`` is the mean of the last ``min(step, 50)``
    losses; seeing every step, the newest loss follows exactly:
    ``l_k = s_k - s_{k-1} + l_{k-50}`` with ``s_k = 50 * mean_k`` (``l`` = 0 before step 1).
    An ``info["step_loss"]`` entry, when present, is used as is.
    """

    WINDOW = 50

    def __init__(self) -> None:
        self.values: list[float] = []
        self._sum = 0.0

    def update(self, step: int, info: dict) -> float:
        """Record the progress of step ``step`` (1, 2, ... in order) and return that step's loss.

        Parameters
        ----------
        step : int
            The step number reported by ``train_iter``.
        info : dict
            Its ``Progress.info``: ``loss`` (running mean) or ``step_loss``.

        Returns
        -------
        float
            The loss of this step alone.
        """
        if "step_loss" in info:
            v = float(info["step_loss"])
        else:
            s = float(info["loss"]) * min(step, self.WINDOW)
            v = s - self._sum + (self.values[step - 1 - self.WINDOW] if step > self.WINDOW else 0.0)
            self._sum = s
        self.values.append(v)
        return v


# --------------------------------------------------------------------------------- bounds
#: Upper bounds of the training settings, checked before any work (a typo must not allocate 149 GiB).
MAX_LR = 1.0
MAX_MINUTES = 7 * 24 * 60.0
MAX_EPOCHS = 1_000_000
MAX_PATCH = 4096
MAX_BATCH = 4096
#: Largest batch x patch^2 (pixels per step): 32 x 512^2 (the U-Net's activations grow with it).
MAX_PIXELS_PER_STEP = 32 * 512 * 512


def check_settings(lr: float | None = None, minutes: float | None = None, epochs: int | None = None,
                   patch_size: int | None = None, batch_size: int | None = None) -> None:
    """Refuse training settings that are not finite or beyond the bounds above, before any work.

    Raises
    ------
    ParameterError
        The message names the setting, its value and the allowed range.
    """
    def number(name: str, v: Any, lo: float, hi: float, integer: bool = False) -> None:
        if v is None:
            return
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ParameterError(f"{name} must be a number, got {v!r}") from None
        if not math.isfinite(f) or not lo < f <= hi or (integer and not f.is_integer()):
            kind = "a whole number" if integer else "a number"
            raise ParameterError(f"{name} must be {kind} in ({lo:g}, {hi:g}], got {v!r}")

    number("lr (learning rate)", lr, 0.0, MAX_LR)
    number("minutes", minutes, 0.0, MAX_MINUTES)
    number("epochs", epochs, 0.0, MAX_EPOCHS, integer=True)
    number("patch_size", patch_size, 0.0, MAX_PATCH, integer=True)
    number("batch_size", batch_size, 0.0, MAX_BATCH, integer=True)
    if patch_size is not None and batch_size is not None and int(batch_size) * int(patch_size) ** 2 > MAX_PIXELS_PER_STEP:
        raise ParameterError(f"batch_size {batch_size} x patch_size {patch_size}^2 = "
                             f"{int(batch_size) * int(patch_size) ** 2:,} pixels per step is more than the "
                             f"{MAX_PIXELS_PER_STEP:,} allowed; use smaller patches or batches")


# --------------------------------------------------------------------------------- output folder


def _shown(name: Any) -> str:
    r = repr(name)
    return r if len(r) <= 70 else f"{r[:60]}...' ({len(name)} characters)"


def default_model_name(prefix: str = "finetuned") -> str:
    """A user-model name not used yet (``finetuned-1``, ``finetuned-2``...)."""
    from ...models.registry import list_models, user_models_dir

    taken = {m.name for m in list_models()} | ({p.name for p in user_models_dir().iterdir()}
                                               if user_models_dir().is_dir() else set())
    i = 1
    while f"{prefix}-{i}" in taken:
        i += 1
    return f"{prefix}-{i}"


def model_folder(out=None, name: str | None = None, overwrite: bool = False) -> tuple[Path, str]:
    """Where a trained model goes: ``out``, or ``user_models_dir()/name``; and its name.

    Raises
    ------
    ParameterError
        Bad name, a name a shipped model has, or an existing model without ``overwrite``.
    """
    from ...errors import ModelError
    from ...models.registry import list_models, user_models_dir
    from ...models.spec import CARD_NAME, MAX_NAME_LENGTH, refuse_shipped_folder, valid_model_name

    if name is not None and not valid_model_name(name):
        raise ParameterError(f"model name {_shown(name)}: use at most {MAX_NAME_LENGTH} letters, digits, '.', '_', '+' or "
                             "'-', a letter or digit first (no spaces, slashes or line breaks)")
    if out is None:
        name = name or default_model_name()
        folder = user_models_dir() / name
    else:
        if str(out) == "":
            raise ParameterError("the model folder is an empty path; give a folder")
        try:
            folder = Path(out).expanduser()
        except RuntimeError:
            raise ParameterError(f"model folder {out}: no such user home folder") from None
        name = name or folder.name
    if not valid_model_name(name or ""):
        raise ParameterError(f"model name {_shown(name)}: use at most {MAX_NAME_LENGTH} letters, digits, '.', '_', '+' or "
                             "'-', a letter or digit first (no spaces, slashes or line breaks)")
    try:
        refuse_shipped_folder(folder)
    except ModelError as e:
        raise ParameterError(str(e)) from None
    if any(m.source == "shipped" and m.name == name for m in list_models()):
        raise ParameterError(f"{name!r} is the name of a shipped model; choose another name")
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"{folder} exists and is not a folder")
    parent = next((a for a in folder.parents if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ParameterError(f"cannot create the model folder {folder}: {parent} is a file, not a folder")
    if parent is not None and not os.access(parent if not folder.exists() else folder, os.W_OK):
        raise ParameterError(f"cannot write the model folder {folder}: {parent} is not writable")
    if (folder / CARD_NAME).exists() and not overwrite:
        raise ParameterError(f"a model already exists in {folder}; choose another name (or overwrite=True, "
                             "--overwrite)")
    return folder, name


# --------------------------------------------------------------------------------- main
def finetune_iter(
    images,
    labels,
    *,
    base=None,
    mode: str = "instance",
    class_names: Sequence[str] | None = None,
    roi=None,
    minutes: float | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    augment: bool | Any = True,
    val_fraction: float = 0.2,
    early_stopping: bool = True,
    device: str = "auto",
    out=None,
    name: str | None = None,
    cancel: CancelToken | None = None,
    scale=None,
    overwrite: bool = False,
    patience: int = PATIENCE,
    patch_size: int | None = None,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    threads: int | None = None,
    precision: str = "auto",
    names: Sequence[str] | None = None,
    tune: bool = False,
    seed: int = 0,
    margin: int | None = None,
    postprocess: dict | None = None,
    pixel_size=None,
) -> Generator[Progress, None, FinetuneResult]:
    """Train a segmentation model on painted labels; yields progress, returns a :class:`FinetuneResult`.

    Parameters
    ----------
    images : array-like or Volume, or a sequence of them
        ``(Y, X)``, ``(Y, X, C)`` (RGB(A) or channels; channels first is
        recognised too), ``(Z, Y, X)`` or ``(Z, Y, X, C)``; numpy or dask.
        Raw intensities: they are normalised as the model card says.
    labels : ndarray of int, or a sequence of them (one per image)
        ``(Y, X)`` / ``(Z, Y, X)`` on the image grid, 0 = not painted.
        ``instance``: one id per object; ``semantic``: the class id.
    base : None, str or path
        None (or ``"scratch"``): a new U-Net (16 base channels, depth 4);
        else a model name or folder (2D, same input channels).
    mode : {"instance", "semantic"}
    class_names : sequence of str, optional
        ``semantic``: names of classes 1, 2, ... (background implicit).
    roi : optional
        Polygons (napari Shapes data, data coordinates) limiting the
        annotated region: one list for a single image, or one entry (None or
        a list) per image.  Default: the painted labels' bounding box + ``margin``.
    minutes, epochs : float, int, optional
        Budget; the first reached ends training.  Neither: 2 minutes.
    lr : float, optional
        Peak learning rate; default 1e-3 (from scratch and fine-tuning: see
        :data:`LR_FINETUNE`).
    augment : bool or AugmentConfig
        True: flips, rotations, zoom (0.8-1.25x), intensity, blur, noise, and
        for RGB images H&E stain variation, or for semantic 2D training a
        colour jitter (hue, saturation, white balance:
        :data:`SEMANTIC_2D_RGB_AUGMENT`).  An
        :class:`~napari_medseg.training.augment.AugmentConfig` is used as is.
    val_fraction : float
        Share of the annotations held out for validation (0 = none).
    early_stopping : bool
        Stop when the validation score has not improved for ``patience`` epochs.
    device : {"auto", "cpu", "cuda", "mps"}
    out : path, optional
        Model folder; default ``user_models_dir() / name``.
    name : str, optional
        Model name (default: ``out``'s folder name, or ``finetuned-N``).
    cancel : CancelToken, optional
        Checked every step: training stops within one step, the best
        checkpoint so far is kept and the result returned (``cancelled``).
    scale : sequence of float, optional
        Pixel size ((Z,) Y, X) of the images (one for all, or one per
        image).  With a base model that has a pixel size, images are
        resampled to it; the saved card records the pixel size trained at.
    overwrite : bool
        Replace an existing model in the target folder.
    names : sequence of str, optional
        Image names for reports and the card (default: a Volume's name, or ``image N``).
    tune : bool
        Instance mode with validation: at the end, choose the watershed
        thresholds on the held-out annotation (:func:`tune_postprocess`).
        Off by default: on the few objects of a held-out strip it overfits
        (it once lowered histo val AP@0.5 from 0.347 to 0.241).
    patience, patch_size, batch_size, steps_per_epoch, seed
        Advanced settings (defaults: patch 128 px on CPU / 256 on GPU capped
        by the region size, batch 8 / 16, an epoch = enough steps to see
        the training pixels about twice, 10 to 100).
    margin : int, optional
        Pixels the painted labels' box grows by to make the region (no ROI
        given); default :func:`~napari_medseg.training.regions.default_margin`:
        16, or for semantic labels the whole image (a painted lesion says
        its surroundings are background; images over 4096² px: the box's
        longer side), and for semantic 3D labels the whole painted slices
        only (unpainted slices between them are not used).  A given margin
        uses every slice of the box.
    postprocess : dict, optional
        Semantic mode: the new card's ``output.postprocess``
        (:mod:`napari_medseg.inference.classes`: ``keep_largest``,
        ``fill_holes``, ``min_size``), used by validation and by every later
        ``segment``.  Default: :data:`SEMANTIC_2D_POSTPROCESS` (keep the
        largest lesion, fill its holes) for semantic 2D labels with one
        foreground class, else none.  ``{}`` turns it off.
    pixel_size : float or sequence of float, optional
        Pixel size (Y, X; the unit of ``scale``, µm for Volumes) to train at,
        when the images' pixel size is known: they are resampled to it and
        the card records it, so the engine resamples new images the same way.
        Default: the base model's, else the first image's.
    threads : int, optional
        torch CPU threads; default ``OMP_NUM_THREADS`` if set, else the
        physical cores.  (On a loaded machine OpenMP's spin-waiting makes 2
        threads much slower than 1 unless ``OMP_WAIT_POLICY=PASSIVE`` is set
        before torch is imported; ``medseg train`` and the widget set it.)
    precision : {"auto", "float32", "bfloat16", "float16"}
        Autocast dtype of the training steps (``auto``: bfloat16 on CPUs with
        native BF16, mixed precision on CUDA; see
        :func:`~napari_medseg.training.steps.training_amp_dtype`).

    Yields
    ------
    Progress
        One before training (``info["region"]``: the text of
        :func:`describe_region`), then one per step with ``info``: ``epoch``
        (completed epochs), ``loss`` (this step), ``val_score`` (last
        validation, None before), ``best`` (and ``best_epoch``), ``device``, ``eta_s``,
        ``elapsed_s``; at an epoch's end also ``epoch_end=True`` and
        ``epoch_loss`` (mean loss of the epoch).

    Returns
    -------
    FinetuneResult

    Raises
    ------
    ParameterError, ModelError
        Bad inputs, nothing painted, a base model that does not fit.
    """
    import torch

    from ...models.device import select_device
    from ...models.spec import ModelCard, build_network, save_model
    from ..augment import AugmentConfig
    from ..data import typical_diameter
    from ..loop import SegmentationTrainConfig, train_iter
    from ..semantic import semantic_train_iter

    t_start = time.perf_counter()
    if mode not in MODES:
        raise ParameterError(f"mode must be 'instance' or 'semantic', got {mode!r}")
    is_single = isinstance(labels, np.ndarray) or (hasattr(labels, "shape") and not isinstance(labels, (list, tuple)))
    imgs = [images] if is_single else list(images)
    labs = [labels] if is_single else list(labels)
    if not labs:
        raise ParameterError("no training pairs given")
    if len(imgs) != len(labs):
        raise ParameterError(f"{len(imgs)} images but {len(labs)} labels: give one labels image per image")
    if minutes is not None and not minutes > 0:
        raise ParameterError(f"minutes must be > 0, got {minutes}")
    if epochs is not None and int(epochs) < 1:
        raise ParameterError(f"epochs must be >= 1, got {epochs}")
    check_settings(lr, minutes, epochs, patch_size, batch_size)
    if minutes is None and epochs is None:
        minutes = DEFAULT_MINUTES
    cancel = cancel or CancelToken()
    scales = per_image(scale, len(imgs), "scale")
    names = list(names) if names is not None else [""] * len(imgs)
    if len(names) != len(imgs):
        raise ParameterError(f"{len(names)} names for {len(imgs)} images")
    pairs = [as_pair(im, lab, n, s) for im, lab, n, s in zip(imgs, labs, names, scales, strict=False)]
    for i, p in enumerate(pairs):
        p.name = p.name or f"image {i}"
    chans = {(p.channels, p.rgb) for p in pairs}
    if len(chans) != 1:
        raise ParameterError(f"all training images need the same channels, got {sorted(chans)}")
    channels, rgb = chans.pop()
    folder, name = model_folder(out, name, overwrite)

    # regions and validation split
    rois = per_image_roi(roi, len(pairs))
    regions = [find_region(p.labels, r, index=i, name=p.name, mode=mode, margin=margin)
               for i, (p, r) in enumerate(zip(pairs, rois, strict=False))]
    if all(r.source == "empty" for r in regions):
        raise ParameterError("nothing is painted in the labels and no ROI was given: paint some objects first")
    val_text = split_validation(regions, [p.labels for p in pairs], fraction=val_fraction, mode=mode)
    region_text = describe_regions(regions, val_text, mode)

    # model
    cls_names = full_class_names(class_names, [p.labels for p in pairs], mode)
    n_out = 2 if mode == "instance" else len(cls_names)
    net, base_card, base_label, new_head = load_base(base, mode, channels, rgb, n_out, seed)
    # pixel size trained at: the base model's when the images' is known (they are resampled to it), else the
    # first image's; unknown (None, "scale-free") when no image says its pixel size
    known = [p.scale_yx for p in pairs if p.scale_yx is not None]
    target_ps = None if not known else (base_card.pixel_size or list(known[0]))
    if pixel_size is not None:
        if not known:
            raise ParameterError("pixel_size needs images with a known pixel size: give scale= (or Volumes)")
        ps = [float(v) for v in np.atleast_1d(pixel_size)]
        ps = ps * 2 if len(ps) == 1 else ps[-2:]
        if any(not (v > 0 and math.isfinite(v)) for v in ps):
            raise ParameterError(f"pixel_size must be positive, got {pixel_size}")
        target_ps = ps
    norm_spec = base_card.input.get("normalization") or dict(DEFAULT_NORMALIZATION)
    train_samples, val_items = build_units(pairs, regions, norm_spec, target_ps, mode)
    if not train_samples:
        raise ParameterError("no annotated pixels are left for training after the validation split; paint more")
    if mode == "instance" and not any(s.labels.any() for s in train_samples):
        raise ParameterError("the training part of the annotation has no objects: paint some objects")
    if mode == "semantic" and (base_label is None or new_head):
        set_prior_bias(net, train_samples, n_out)

    dev, dev_reason = select_device(device)
    on_gpu = dev.type == "cuda"
    from ..steps import training_amp_dtype

    # checked before any training; recorded in the card as it runs (e.g. "auto" -> "bfloat16")
    amp_name = str(training_amp_dtype(dev, precision) or "float32").removeprefix("torch.")
    divisor = int(getattr(net, "divisor", 8))
    biggest = max(max(s.labels.shape) for s in train_samples)
    if patch_size is None:
        patch_size = 256 if on_gpu else 128
        patch_size = min(patch_size, max(64, -(-biggest // divisor) * divisor))
    patch_size = int(patch_size)
    check_settings(patch_size=patch_size, batch_size=batch_size or (16 if on_gpu else 8))
    if patch_size % divisor:
        raise ParameterError(f"patch_size {patch_size} must be a multiple of {divisor}")
    batch_size = int(batch_size or (16 if on_gpu else 8))
    train_px = sum(float(s.weight.sum()) for s in train_samples)
    spe = int(steps_per_epoch or np.clip(math.ceil(2 * train_px / (batch_size * patch_size ** 2)), 10, 100))
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if lr is None:
        lr = LR_SCRATCH if base_label is None else LR_FINETUNE
    # semantic 2D (lesions painted on photos, tiles, slices given as 2D images): the defaults measured on PH2
    # dermoscopy (benchmarks/bench_semantic_2d.py, BENCHMARKS.md)
    semantic_2d = mode == "semantic" and all(p.labels.ndim == 2 for p in pairs)
    if isinstance(augment, AugmentConfig):
        aug = augment
    elif augment and semantic_2d and channels == 3 and rgb:
        aug = AugmentConfig(**SEMANTIC_2D_RGB_AUGMENT)
    elif augment:
        aug = AugmentConfig(zoom=(0.8, 1.25), p_stain=0.5 if (channels == 3 and rgb) else 0.0)
    else:
        aug = AugmentConfig.none()
    # slices / images with paint get 80 % of the patches when some have none (sparse lesions, 3D stacks)
    groups = {s.group for s in train_samples}
    group_weights = {"painted": 0.8, "background": 0.2} if len(groups) == 2 else None
    cfg = SegmentationTrainConfig(steps=None if epochs is None else int(epochs) * spe, minutes=minutes,
                                  batch_size=batch_size, patch_size=patch_size, lr=float(lr),
                                  warmup_steps=min(10, spe), final_lr_ratio=0.05, steps_per_epoch=spe, val_every=0,
                                  seed=seed, augment=aug, device=device, num_threads=threads,
                                  group_weights=group_weights, precision=precision)

    # the card of the new model
    card = ModelCard(
        name=name,
        description=(f"{mode} model fine-tuned from {base_label}" if base_label else f"{mode} model trained from "
                     "scratch") + f" on {len(pairs)} painted image(s) with napari-medseg",
        architecture=dict(base_card.architecture),
        input={**base_card.input, "normalization": norm_spec,
               "pixel_size": None if target_ps is None else [float(v) for v in target_ps],
               "pixel_unit": base_card.input.get("pixel_unit", "µm") if target_ps is not None else "px"},
        output=output_section(base_card, mode, cls_names,
                              postprocess if postprocess is not None or not (semantic_2d and len(cls_names) == 2)
                              else SEMANTIC_2D_POSTPROCESS),
        training={"base_model": base_label, "head_reinitialised": new_head, "mode": mode, "classes": cls_names[1:],
                  "data": [{"name": p.name, "shape": list(p.labels.shape), "channels": p.channels,
                            "region": r.source, "region_box": [[s.start, s.stop] for s in r.box],
                            "region_pixels": r.area, "painted": r.n_objects, "validation": r.val_note}
                           for p, r in zip(pairs, regions, strict=False)],
                  "validation_split": val_text, "n_train_patches_from": len(train_samples),
                  "lr": float(lr), "batch_size": batch_size, "patch_size": patch_size, "steps_per_epoch": spe,
                  "augment": bool(augment) if not isinstance(augment, AugmentConfig) else str(augment),
                  "budget_minutes": minutes, "budget_epochs": epochs, "seed": seed,
                  "device": dev_reason, "finished": False},
    )
    if mode == "instance":
        d = typical_diameter([s.labels for s in train_samples])
        if math.isfinite(d):
            card.training["typical_object_diameter_px"] = round(d, 2)
    # the inner loop gets the samples already normalised
    inner_card = copy.deepcopy(card)
    inner_card.input["normalization"] = {"kind": "none"}

    yield Progress(0, 0, "preparing: " + region_text.splitlines()[0],
                   {"region": region_text, "epoch": 0, "loss": None, "val_score": None, "best": None,
                    "device": dev_reason, "eta_s": None if minutes is None else 60.0 * minutes, "elapsed_s": 0.0})

    inner_cancel = CancelToken()
    if mode == "instance":
        inner = train_iter(net, inner_card, train_samples, None, cfg, cancel=inner_cancel)
    else:
        inner = semantic_train_iter(net, inner_card, train_samples, cfg, cancel=inner_cancel)

    history: list[dict] = []
    best: dict | None = None
    best_state: dict | None = None
    losses = StepLoss()
    epoch_losses: list[float] = []
    last_val: dict | None = None
    stopped_early = False
    cancelled = False
    step = 0
    t_train = time.perf_counter()
    total_steps = cfg.steps

    def snapshot() -> dict:
        return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}

    def save(state: dict, final: bool) -> None:
        c = copy.deepcopy(card)
        c.training.update({"epochs": len(history), "steps": step, "seconds": round(time.perf_counter() - t_start, 1),
                           "finished": final, "cancelled": cancelled, "stopped_early": stopped_early,
                           "best_epoch": None if best is None else best["epoch"], "precision": amp_name,
                           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "history": [{k: v for k, v in h.items() if k != "key"} for h in history]})
        if best is not None:
            metric = "val_ap50" if mode == "instance" else "val_dice"
            c.metrics = {metric: round(best["val_score"], 4),
                         "val_metric": ("AP@0.5 pooled over the held-out annotation" if mode == "instance"
                                        else "mean foreground Dice over the held-out annotation"),
                         **({"val_dice_fg": round(best["dice"], 4)} if mode == "instance" else
                            {"val_dice_per_class": best.get("dice_per_class", {})})}
        copy_net = build_network(c)
        copy_net.load_state_dict(state)
        save_model(folder, copy_net, c)
        nonlocal saved_card, saved_epoch
        saved_card = c
        saved_epoch = len(history)

    saved_card = card
    saved_epoch: int | None = None

    def end_epoch() -> dict:
        nonlocal best, best_state, last_val
        n_ep = len(history) + 1
        entry = {"epoch": n_ep, "step": step, "loss": float(np.mean(epoch_losses)) if epoch_losses else None,
                 "val_score": None, "seconds": round(time.perf_counter() - t_train, 1)}
        epoch_losses.clear()
        if val_items:
            scores = validate(net, mode, val_items, card.output.get("postprocess", {}))
            last_val = scores
            entry.update({k: v for k, v in scores.items() if k not in ("score",)})
            entry["val_score"] = scores["score"]
            history.append(entry)
            if best is None or scores["key"] >= best["key"]:  # ties: the later (more trained) weights
                best = entry
                best_state = snapshot()
                save(best_state, final=False)
        else:
            history.append(entry)
            best_state = snapshot()
            save(best_state, final=False)
        return entry

    def finish() -> None:
        """Keep the best weights (or the last ones) and write the final model (nothing if no step was made)."""
        nonlocal best_state
        if step == 0 and (best_state is None or best is base_entry):
            return
        card.training["kept_base_weights"] = best is not None and best is base_entry
        if best_state is None or (not val_items and step > (history[-1]["step"] if history else 0)):
            best_state = snapshot()
        net.load_state_dict(best_state)
        if tune and mode == "instance" and val_items and not cancelled:
            pp, before, after = tune_postprocess(net, val_items, card.output.get("postprocess", {}))
            card.output["postprocess"] = pp
            card.training["postprocess_tuning"] = {"fg_threshold": pp["fg_threshold"],
                                                   "seed_threshold": pp["seed_threshold"],
                                                   "val_ap50_before": round(before, 4), "val_ap50_after": round(after, 4)}
        save(best_state, final=True)

    # The base model itself is "epoch 0": fine-tuning keeps it unless a trained epoch scores at least as well
    # on the held-out annotation (3 painted images are few: a bad draw can make the model worse, as seen on the
    # histo adaptation benchmark, seed 1: base 0.347 -> 0.316 AP@0.5 on histo val).
    base_entry: dict | None = None
    if base_label is not None and not new_head and val_items:
        scores = validate(net, mode, val_items, card.output.get("postprocess", {}))
        base_entry = {"epoch": 0, "step": 0, "loss": None, "seconds": 0.0,
                      **{k: v for k, v in scores.items() if k != "score"}, "val_score": scores["score"]}
        best, best_state, last_val = base_entry, snapshot(), scores
        yield Progress(0, total_steps or 0, f"base model: val {scores['score']:.3f}",
                       {"epoch": 0, "step": 0, "loss": None, "val_score": scores["score"], "base_val_score":
                        scores["score"], "best": scores["score"], "best_epoch": 0, "device": dev_reason,
                        "eta_s": None if minutes is None else 60.0 * minutes, "elapsed_s": 0.0})

    try:
        while True:
            if cancel.cancelled and not cancelled:
                inner_cancel.cancel()
                cancelled = True
            try:
                p = next(inner)
            except StopIteration:
                break
            step = p.step
            info = p.info or {}
            loss = losses.update(step, info)
            epoch_losses.append(loss)
            if cancel.cancelled:
                inner_cancel.cancel()
                cancelled = True
            out_info = {"epoch": len(history), "step": step, "loss": loss, "device": dev_reason}
            if step % spe == 0 and not cancelled:
                entry = end_epoch()
                out_info.update(epoch_end=True, epoch=entry["epoch"], epoch_loss=entry["loss"])
                if (early_stopping and val_items and best is not None
                        and entry["epoch"] - best["epoch"] >= patience):
                    stopped_early = True
                    inner_cancel.cancel()
            elapsed = time.perf_counter() - t_train
            etas = []
            if minutes is not None:
                etas.append(max(0.0, 60.0 * minutes - elapsed))
            if total_steps:
                etas.append(max(0.0, (total_steps - step) * elapsed / max(step, 1)))
            out_info.update(val_score=None if last_val is None else last_val["score"],
                            best=None if best is None else best["val_score"],
                            best_epoch=None if best is None else best["epoch"],
                            eta_s=min(etas) if etas else None, elapsed_s=round(elapsed, 1))
            total = int(p.total) if p.total else (total_steps or 0)
            msg = f"epoch {len(history) + (0 if out_info.get('epoch_end') else 1)}, step {step}, loss {loss:.3f}"
            if last_val is not None:
                msg += f", val {last_val['score']:.3f}"
            yield Progress(step, max(total, step), msg, out_info)
        # a last, partial epoch
        if not cancelled and not stopped_early and step > (history[-1]["step"] if history else 0):
            entry = end_epoch()
            yield Progress(step, step, f"epoch {entry['epoch']} (last, partial)",
                           {"epoch": entry["epoch"], "step": step, "loss": entry["loss"], "epoch_end": True,
                            "epoch_loss": entry["loss"], "val_score": entry["val_score"],
                            "best": None if best is None else best["val_score"],
                            "best_epoch": None if best is None else best["epoch"], "device": dev_reason,
                            "eta_s": 0.0, "elapsed_s": round(time.perf_counter() - t_train, 1)})
        finish()
    except (GeneratorExit, KeyboardInterrupt):  # the napari worker's quit() or Ctrl-C: keep the best checkpoint
        cancelled = True
        inner.close()
        try:
            finish()
        except Exception as exc:  # e.g. closed by the garbage collector at interpreter exit  # noqa: BLE001
            warnings.warn(f"could not save the checkpoint of {name!r} on close: {exc}", stacklevel=2)
        raise
    except TrainingError as exc:  # a non-finite loss: the weights are unusable from here on, nothing more is saved
        kept = (f"; the checkpoint saved before it (epoch {saved_epoch}) stays in {folder}" if saved_epoch is not None
                else "; no model was saved")
        raise TrainingError(f"{exc}{kept}") from None
    finally:
        inner.close()
    net.to("cpu").to(memory_format=torch.contiguous_format).eval()
    return FinetuneResult(folder, saved_card, [{k: v for k, v in h.items() if k != "key"} for h in history],
                          None if best is None else {k: v for k, v in best.items() if k != "key"}, region_text,
                          cancelled, stopped_early, net)


def train(images, labels, *, progress: Callable[[Progress], Any] | None = None, **kwargs) -> FinetuneResult:
    """Fine-tune or train a model on painted labels (blocking); see :func:`finetune_iter`.

    Parameters
    ----------
    images, labels
        One image and its labels, or sequences of them.
    progress : callable, optional
        Called with each :class:`~napari_medseg.progress.Progress`.
    **kwargs
        ``base``, ``mode``, ``class_names``, ``roi``, ``minutes``, ``epochs``,
        ``lr``, ``augment``, ``val_fraction``, ``early_stopping``, ``device``,
        ``out``, ``name``, ``cancel``, ``scale``...

    Returns
    -------
    FinetuneResult
        ``model_path`` is usable at once: ``napari_medseg.segment(img, result.model_path)``.

    Examples
    --------
    >>> import napari_medseg as ms                                            # doctest: +SKIP
    >>> res = ms.train(image, painted, base="nuclei", minutes=2, name="mine")  # doctest: +SKIP
    >>> labels = ms.segment(other_image, "mine")                              # doctest: +SKIP
    """
    return run(finetune_iter(images, labels, **kwargs), progress)


def describe_region(labels, roi=None, **kwargs) -> str:
    """Text saying which pixels training would use (see :func:`~napari_medseg.training.regions.describe_region`)."""
    from ..regions import describe_region as _describe

    return _describe(labels, roi, **kwargs)
