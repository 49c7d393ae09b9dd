"""Train a CNN classifier on a few labelled images, tiles, lesion or cell crops (a generator).

:func:`train_classifier_iter` takes items (2D ``(Y, X[, C])`` or 3D
``(Z, Y, X)`` arrays) and a class per item, resizes each to the model's
input size once, holds out a stratified ``val_fraction``, and trains an
:class:`~napari_medseg.models.classifier.EncoderClassifier`:

* from scratch or from the encoder of a shipped or user model (``base``:
  a U-Net of the same channels, or another classifier) -- transfer learning;
* against class imbalance: batches drawn with probability inversely
  proportional to the class frequency (every class is seen equally often;
  the cross-entropy is not weighted as well, which would count the imbalance
  twice and push the model to over-predict the rare class);
* heavy augmentation on every batch: flips, 90-degree rotations, random
  resized crops (scale 0.6-1), brightness/contrast, colour (saturation and
  hue-like channel mixing) jitter, Gaussian blur, noise;
* the forward pass in ``precision`` (``auto``: bfloat16 autocast on CPUs with native BF16, float16 with loss
  scaling on CUDA, as the segmentation trainers; on the 2-core AVX512-BF16 development VM a training step at
  128 px took 0.64x the float32 time at width 8 / depth 4 and 0.46x at width 16 / depth 5), validation and
  calibration in float32;
* AdamW with a cosine learning rate over the time budget; validation every
  epoch; the best epoch (lowest *class-balanced* held-out loss, :func:`balanced_cross_entropy`: the loss under
  the balanced distribution the batches are drawn from, so that swings of the mean prediction against the
  held-out class prior do not pick the epoch) is kept; early stopping after
  ``patience`` epochs without improvement (and at least ``patience`` x
  :data:`PATIENCE_ITEMS` items drawn, so a few labelled items still train, and not before
  :data:`EARLY_STOP_AFTER` of the budget, while the learning rate is high), by default only when the
  budget is a number of epochs (a time budget trains to its end); cancel keeps the best;
* probabilities calibrated on the held-out split by temperature scaling (when it has at least
  :data:`MIN_CALIBRATION_ITEMS` items; with fewer a fitted temperature would be noise, T stays 1)
  (the card keeps ``temperature`` and the expected calibration error before
  and after).

It yields :class:`~napari_medseg.progress.Progress` (``info``: ``epoch``,
``train_loss``, ``val_loss``, ``val_accuracy``) and returns a
:class:`ClassifierResult` with the saved model folder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.image_classify import prepare_items
from ..errors import ParameterError
from ..progress import CancelToken, Progress

#: Bins of the expected calibration error.
ECE_BINS = 15
#: Fewest held-out items a temperature is fitted on; with fewer the probabilities stay uncalibrated (T = 1).
MIN_CALIBRATION_ITEMS = 20
#: Early stopping also waits for ``patience * PATIENCE_ITEMS`` items drawn since the best epoch, so that with a
#: few labelled items (epochs of one or two batches) ``patience`` still means real training.
PATIENCE_ITEMS = 256
#: ... and for this share of the budget (time or epochs): the cosine learning rate is then down to half.  Before
#: it the held-out loss of a fast network jumps from epoch to epoch at the high rate (LC25000 from the nuclei-he
#: encoder, 20 s epochs: best at epoch 3, stopped at epoch 11, 3.3 of 30 minutes, held-out accuracy 0.971).
EARLY_STOP_AFTER = 0.5
#: Width (channels of the first level) and depth (levels) of a classifier trained from scratch.
DEFAULT_WIDTH, DEFAULT_DEPTH = 16, 5


@dataclass
class ClassifierResult:
    """What :func:`train_classifier_iter` returns.

    Attributes
    ----------
    model_path : Path
        The saved model folder (``model.json`` + ``weights.safetensors``).
    class_names : list of str
    history : list of dict
        One entry per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_loss_balanced`` (what picks the
        best epoch), ``val_accuracy``, ``val_auc`` (as in
        ``metrics``, uncalibrated), ``seconds``.
    metrics : dict
        Held-out ``val_accuracy``, ``val_balanced_accuracy``, ``val_auc`` (binary: of the
        second class; multi-class: mean one-vs-rest), ``ece_before``, ``ece_after``,
        ``temperature``, ``best_epoch``, ``images_per_second`` (wall), ``images_seen``, ``cpu_seconds``
        (this process, training and calibration).
    cancelled : bool
    """

    model_path: Path
    class_names: list[str]
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    cancelled: bool = False


# --------------------------------------------------------------------------- inputs


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int, groups: Sequence[Any] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``: ``val_fraction`` of each class (at least one when the class has >= 2 items).

    With ``groups`` (one label per item) whole groups go to one side: per
    class (a group's most frequent class), groups in random order join the
    held-out part until it holds ``val_fraction`` of that class's items (at
    least one group when the class has two or more).
    """
    rng = np.random.default_rng(seed)
    if groups is not None:
        labels = np.asarray(labels)
        if len(groups) != len(labels):
            raise ParameterError(f"{len(groups)} groups but {len(labels)} items")
        _, inv = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        n_groups = int(inv.max()) + 1
        size = np.bincount(inv, minlength=n_groups)
        votes = np.zeros((n_groups, int(labels.max()) + 1), np.int64)
        np.add.at(votes, (inv, labels), 1)
        g_class = votes.argmax(axis=1)
        held = []
        for c in np.unique(g_class):
            order = rng.permutation(np.flatnonzero(g_class == c))
            if val_fraction <= 0 or len(order) < 2:
                continue
            cum = np.cumsum(size[order])
            n = int(np.searchsorted(cum, val_fraction * cum[-1])) + 1  # groups until the share is reached
            held += order[:min(max(n, 1), len(order) - 1)].tolist()
        va_mask = np.isin(inv, held)
        return np.flatnonzero(~va_mask).astype(np.int64), np.flatnonzero(va_mask).astype(np.int64)
    tr, va = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(val_fraction * len(idx)))
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        va += idx[:n_val].tolist()
        tr += idx[n_val:].tolist()
    return np.sort(np.asarray(tr, np.int64)), np.sort(np.asarray(va, np.int64))


# --------------------------------------------------------------------------- augmentation


def augment_batch(x: np.ndarray, rng: np.random.Generator, color: str) -> np.ndarray:
    """Label-preserving random transforms of a batch ``(N, C, *spatial)`` in [0, 1] (a new array)."""
    n, c = x.shape[:2]
    sp = x.shape[2:]
    out = np.empty_like(x)
    for i in range(n):
        a = x[i]
        for ax in range(1, a.ndim):
            if rng.random() < 0.5:
                a = np.flip(a, axis=ax)
        if a.ndim == 3:  # 2D: rotations by 90 degrees, a random resized crop
            a = np.rot90(a, int(rng.integers(4)), axes=(1, 2))
            s = rng.uniform(0.6, 1.0)
            h = max(8, int(round(sp[0] * math.sqrt(s))))
            w = max(8, int(round(sp[1] * math.sqrt(s))))
            y0 = int(rng.integers(0, sp[0] - h + 1))
            x0 = int(rng.integers(0, sp[1] - w + 1))
            crop = a[:, y0:y0 + h, x0:x0 + w]
            yi = np.clip(((np.arange(sp[0]) + 0.5) * h / sp[0]).astype(np.int64), 0, h - 1)
            xi = np.clip(((np.arange(sp[1]) + 0.5) * w / sp[1]).astype(np.int64), 0, w - 1)
            a = crop[:, yi][:, :, xi]
        a = np.ascontiguousarray(a, dtype=np.float32)
        a = a * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)  # contrast, brightness
        if color == "rgb" and c == 3:
            mix = np.eye(3) + rng.normal(0, 0.05, (3, 3))  # hue-like channel mixing
            grey = a.mean(axis=0, keepdims=True)
            sat = rng.uniform(0.7, 1.3)
            a = np.einsum("ij,j...->i...", mix, grey + sat * (a - grey))
        if rng.random() < 0.3:
            from scipy import ndimage as ndi

            sigma = rng.uniform(0.3, 1.2)
            a = ndi.gaussian_filter(a, (0,) + (sigma,) * (a.ndim - 1))
        a = a + rng.normal(0, rng.uniform(0, 0.03), a.shape)
        out[i] = np.clip(a, -0.5, 1.5)
    return out


# --------------------------------------------------------------------------- calibration


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the top-class confidence: sum over equal-width bins of |accuracy - confidence| * share."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels)
    if len(y) == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T > 0`` minimising the held-out negative log-likelihood of ``softmax(logits / T)``."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(res.x))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``."""
    s = np.asarray(logits, np.float64) / temperature
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (ties count half); NaN with one class."""
    s = np.asarray(scores, np.float64)
    pos = np.asarray(positive, bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(s)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present of each class's mean cross-entropy of ``softmax(logits)``.

    Parameters
    ----------
    logits : ndarray, shape (n_items, n_classes)
    labels : ndarray of int, shape (n_items,)

    Returns
    -------
    float
        The cross-entropy as if every class had as many items (NaN with no items).
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)
    if len(y) == 0:
        return float("nan")
    z = z - z.max(axis=1, keepdims=True)
    nll = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]
    return float(np.mean([nll[y == c].mean() for c in np.unique(y)]))


def classification_metrics(probs: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy and ROC AUC (binary: class 1; else mean one-vs-rest)."""
    pred = probs.argmax(axis=1)
    acc = float((pred == y).mean()) if len(y) else float("nan")
    recalls = [float((pred[y == c] == c).mean()) for c in range(n_classes) if (y == c).any()]
    aucs = [roc_auc(probs[:, c], y == c) for c in (range(n_classes) if n_classes > 2 else [1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return {"accuracy": acc, "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
            "auc": float(np.mean(aucs)) if aucs else float("nan")}


# --------------------------------------------------------------------------- training


def train_classifier_iter(
    items: Sequence[Any],
    classes: Sequence[str],
    *,
    class_names: Sequence[str] | None = None,
    base: str | None = None,
    dims: int = 2,
    size: int = 96,
    base_channels: int | None = None,
    depth: int | None = None,
    minutes: float | None = 2.0,
    epochs: int | None = None,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.2,
    groups: Sequence[Any] | None = None,
    patience: int = 8,
    early_stopping: bool | None = None,
    augment: bool = True,
    seed: int = 0,
    device: str = "auto",
    out: str | Path | None = None,
    name: str | None = None,
    training_data: str = "",
    input_extra: dict[str, Any] | None = None,
    clock: str = "wall",
    precision: str = "auto",
    threads: int | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, ClassifierResult]:
    """Train a CNN classifier; see the module docstring.

    Parameters
    ----------
    items : sequence of array-like
        Images/crops (see :func:`prepare_items`).
    classes : sequence of str
        The class of each item.
    class_names : sequence of str, optional
        Class order of the model (default: sorted unique ``classes``).
    base : str, optional
        Model name or folder whose encoder initialises the network.
    dims, size, base_channels, depth
        Network input (``size`` pixels per axis) and width/depth; width and depth default to the
        ``base`` model's (so that its encoder fits) and to :data:`DEFAULT_WIDTH` / :data:`DEFAULT_DEPTH`
        from scratch.
    minutes, epochs : optional
        Budget (at least one).  Early stopping (see ``early_stopping``) may end sooner.
    batch_size, lr, weight_decay, val_fraction, patience, augment, seed, device
        Training settings.
    early_stopping : bool, optional
        Stop after ``patience`` epochs without improvement (False: train the whole budget; the best
        epoch is kept either way).  None (default): off when ``minutes`` is given, on with
        ``epochs`` alone.  With a time budget, stopping early only saved time and cost accuracy:
        LC25000 val 0.974 stopped at half of a 30-min budget vs 0.996 trained to the end (the same
        grouped split), and ISIC's held-out AUC was still rising (0.59 -> 0.74) long after
        patience would have stopped it (BENCHMARKS.md, issue 14).
    groups : sequence, optional
        A group per item (copies or crops of one original, one patient): the
        held-out split (early stopping, calibration) keeps groups whole
        (:func:`stratified_split`), so it is not judged on copies of training items.
    out : path, optional
        Model folder to write (default: the user model folder, ``name``).
    name : str, optional
        Model name (default ``classifier``).
    training_data : str
        Free text for the card (where the items came from, licence).
    input_extra : dict, optional
        More entries of the card's ``input`` section (e.g. ``crop``: how object crops were cut).
    clock : {"wall", "cpu"}
        What ``minutes`` counts: wall-clock time, or this process's CPU time (benchmarks on a shared machine).
    precision : {"auto", "float32", "bfloat16", "float16"}
        Autocast dtype of the training forward pass
        (:func:`~napari_medseg.training.steps.training_amp_dtype`; the card's ``training.precision``).
    threads : int, optional
        torch CPU threads for the training; default ``OMP_NUM_THREADS`` if set, else the physical cores.
    cancel : CancelToken, optional
        Cancelling keeps (and saves) the best epoch so far.

    Returns
    -------
    ClassifierResult

    Raises
    ------
    ParameterError
        Too few items or classes, bad budgets or sizes.
    """
    import torch
    import torch.nn.functional as F

    from ..models.classifier import EncoderClassifier, load_encoder
    from ..models.device import configure_cpu_threads, select_device
    from ..models.spec import ModelCard, save_model
    from .steps import StepRunner, set_seeds, training_amp_dtype

    if epochs is None and minutes is None:
        raise ParameterError("give a time budget (minutes) or a number of epochs")
    if early_stopping is None:
        early_stopping = minutes is None
    if minutes is not None and not (0 < minutes < 24 * 60):
        raise ParameterError(f"minutes must be in (0, 1440), got {minutes}")
    if epochs is not None and epochs < 1:
        raise ParameterError(f"epochs must be >= 1, got {epochs}")
    if clock not in ("wall", "cpu"):
        raise ParameterError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    base_info = None
    if base is not None:
        from ..models.registry import resolve_model

        base_info = resolve_model(base)
        arch = base_info.card.architecture
        base_channels = base_channels or int(arch.get("base_channels", DEFAULT_WIDTH))
        depth = depth or int(arch.get("depth", DEFAULT_DEPTH))
    base_channels = base_channels or DEFAULT_WIDTH
    depth = depth or DEFAULT_DEPTH
    if not 16 <= size <= 1024 or size % 2 ** (depth - 1):
        raise ParameterError(f"size must be in 16..1024 and a multiple of {2 ** (depth - 1)}, got {size}")
    if not 1 <= batch_size <= 512:
        raise ParameterError(f"batch_size must be in 1..512, got {batch_size}")
    if not (math.isfinite(lr) and 0 < lr < 1):
        raise ParameterError(f"lr must be in (0, 1), got {lr}")
    if not 0 <= val_fraction < 1:
        raise ParameterError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(items) != len(classes):
        raise ParameterError(f"{len(items)} items but {len(classes)} classes")
    names = list(class_names) if class_names is not None else sorted({str(c) for c in classes})
    if len(names) < 2:
        raise ParameterError(f"a classifier needs at least two classes, got {names}")
    index = {c: i for i, c in enumerate(names)}
    unknown = sorted({str(c) for c in classes} - set(index))
    if unknown:
        raise ParameterError(f"classes {unknown} are not among class_names {names}")
    y = np.asarray([index[str(c)] for c in classes], np.int64)
    counts = np.bincount(y, minlength=len(names))
    if (counts == 0).any():
        raise ParameterError(f"no item of class {[names[i] for i in np.flatnonzero(counts == 0)]}")

    dev, reason = select_device(device)
    amp = training_amp_dtype(dev, precision)  # raises on a bad precision before the items are prepared
    yield Progress(0, 1, "preparing items", {"stage": "prepare"})
    x, color = prepare_items(items, size, dims)
    tr, va = stratified_split(y, val_fraction, seed, groups)
    if len(va) == 0:
        va = tr  # no held-out split: the training items calibrate (said in the card)
    set_seeds(seed)
    rng = np.random.default_rng(seed)
    if dev.type == "cpu":
        if threads is not None:
            if int(threads) < 1:
                raise ParameterError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        else:
            configure_cpu_threads()  # OMP_NUM_THREADS / MKL_NUM_THREADS win
    net = EncoderClassifier(in_channels=x.shape[1], n_classes=len(names), dims=dims, base_channels=base_channels,
                            depth=depth)
    if base_info is not None:
        from ..models.spec import load_model

        src, _ = load_model(base_info.path)
        # 0-d buffers (BatchNorm's num_batches_tracked) fit any network: they do not make a base compatible
        n_copied = load_encoder(net, {k: v for k, v in src.state_dict().items() if v.ndim > 0})
        if n_copied == 0:
            raise ParameterError(f"base model {base_info.name!r} shares no encoder weights with this classifier "
                                 f"({x.shape[1]} channels, base_channels {base_channels}, {dims}D)")
    scale = amp is torch.float16 and dev.type == "cuda"
    if dims == 2:
        runner = StepRunner.create(net, dev, reason, lr=lr, weight_decay=weight_decay, amp_dtype=amp,
                                   grad_scaler=scale)
    else:  # channels-last is 2D only
        net.to(dev)
        runner = StepRunner(net, dev, reason, torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay),
                            amp, torch.amp.GradScaler("cuda", enabled=scale), False)
    sample_p = 1.0 / np.bincount(y[tr], minlength=len(names))[y[tr]]
    sample_p /= sample_p.sum()
    steps_per_epoch = max(1, int(math.ceil(len(tr) / batch_size)))

    def evaluate() -> tuple[float, np.ndarray]:
        net.eval()
        logits = []
        with torch.no_grad():
            for i in range(0, len(va), 128):
                xb = torch.from_numpy(x[va[i:i + 128]]).to(dev)
                logits.append(net(xb).float().cpu().numpy())
        net.train()
        z = np.concatenate(logits)
        loss = float(F.cross_entropy(torch.from_numpy(z), torch.from_numpy(y[va])).item())
        return loss, z

    t0, cpu0 = time.perf_counter(), time.process_time()
    now = time.perf_counter if clock == "wall" else time.process_time
    b0 = now()
    budget_s = None if minutes is None else 60.0 * minutes
    total_epochs = epochs or 10**6
    best = (math.inf, None, 0, None)  # val loss, state, epoch, val logits
    history: list[dict] = []
    seen = 0
    seen_at_best = 0
    cancelled = False
    net.train()
    epoch = 0
    while epoch < total_epochs:
        epoch += 1
        losses = []
        for _ in range(steps_per_epoch):
            if cancel is not None and cancel.cancelled:
                cancelled = True
                break
            frac = 0.0
            if budget_s is not None:
                frac = (now() - b0) / budget_s
            if epochs is not None:
                frac = max(frac, (epoch - 1) / epochs)
            runner.set_lr(lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
            pick = rng.choice(tr, size=min(batch_size, len(tr)), p=sample_p)
            xb = augment_batch(x[pick], rng, color) if augment else x[pick]
            yb = torch.from_numpy(y[pick]).to(dev)
            loss, _ = runner.step(xb, lambda out, yb=yb: (F.cross_entropy(out.float(), yb), {}))
            if not math.isfinite(loss):
                raise ParameterError(f"training diverged (loss {loss}) at epoch {epoch}: lower the learning rate")
            losses.append(loss)
            seen += len(pick)
        if cancelled:
            break
        val_loss, z = evaluate()
        acc = float((z.argmax(1) == y[va]).mean())
        val_bal = balanced_cross_entropy(z, y[va])
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
               "val_loss_balanced": val_bal, "val_accuracy": acc, "val_auc": classification_metrics(softmax(z), y[va], len(names))["auc"],
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        if val_bal < best[0]:
            best = (val_bal, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, epoch, z)
            seen_at_best = seen
        elapsed = now() - b0
        yield Progress(epoch, epochs or 0, f"epoch {epoch}: val loss {val_loss:.3f} (balanced {val_bal:.3f}), accuracy {acc:.3f}", rec)
        if budget_s is not None and elapsed >= budget_s:
            break
        done = max(elapsed / budget_s if budget_s else 0.0, epoch / epochs if epochs else 0.0)
        if early_stopping and epoch - best[2] >= patience and seen - seen_at_best >= patience * PATIENCE_ITEMS \
                and done >= EARLY_STOP_AFTER:
            break
    if best[1] is None:
        if cancelled:
            raise ParameterError("cancelled before the first epoch finished: nothing to save")
        raise ParameterError("no epoch finished")  # pragma: no cover - the loop runs at least once
    net = runner.release()
    net.load_state_dict(best[1])
    z_val = best[3]
    calibrated = len(va) >= MIN_CALIBRATION_ITEMS and val_fraction > 0
    temperature = fit_temperature(z_val, y[va]) if calibrated else 1.0
    p_before, p_after = softmax(z_val), softmax(z_val, temperature)
    m = classification_metrics(p_after, y[va], len(names))
    metrics = {
        "val_accuracy": m["accuracy"], "val_balanced_accuracy": m["balanced_accuracy"], "val_auc": m["auc"],
        "ece_before": expected_calibration_error(p_before, y[va]),
        "ece_after": expected_calibration_error(p_after, y[va]),
        "temperature": temperature, "best_epoch": best[2], "n_train": int(len(tr)), "n_val": int(len(va)),
        "images_per_second": seen / max(time.perf_counter() - t0, 1e-9), "images_seen": seen,
        "cpu_seconds": time.process_time() - cpu0,
        "n_val_groups": None if groups is None else len({str(groups[i]) for i in va}),
        "calibrated_on": f"{len(va)} held-out items" + (" (groups kept whole)" if groups is not None else "")
        if calibrated else
        f"not calibrated (T = 1): {len(va)} held-out items, fewer than {MIN_CALIBRATION_ITEMS}",
    }
    name = name or "classifier"
    card = ModelCard(
        name=name,
        architecture={"type": "encoder_classifier", "dims": dims, "in_channels": int(x.shape[1]),
                      "n_classes": len(names), "base_channels": base_channels, "depth": depth, "norm": "batch"},
        input={"channels": int(x.shape[1]), "color": color, "size": [size] * dims,
               "normalization": {"kind": "unit_range", "integer": "divide by the dtype maximum (255 for uint8)",
                                 "float": "percentile 1-99.8"},
               "pixel_size": None, "pixel_unit": "px", **(input_extra or {})},
        output={"kind": "classification", "class_names": names, "temperature": temperature},
        description=f"CNN classifier ({', '.join(names)}) on {size}-pixel {color} {dims}D inputs",
        training={"data": training_data, "n_items": len(items), "class_counts": dict(zip(names, counts.tolist(),
                                                                                          strict=True)),
                  "base": None if base_info is None else base_info.name, "epochs": len(history),
                  "minutes": (time.perf_counter() - t0) / 60, "cpu_minutes": (time.process_time() - cpu0) / 60,
                  "seed": seed, "augment": augment, "early_stopping": bool(early_stopping), "precision": str(amp or torch.float32).removeprefix("torch."),
                  "device": str(dev), "cancelled": cancelled, "history": history},
        metrics=metrics,
    )
    if out is None:
        from ..models.registry import user_models_dir

        out = Path(user_models_dir()) / name
    path = save_model(out, net, card)
    return ClassifierResult(Path(path), names, history, metrics, cancelled)


__all__ = ["DEFAULT_DEPTH", "DEFAULT_WIDTH", "EARLY_STOP_AFTER", "PATIENCE_ITEMS", "ClassifierResult", "augment_batch",
           "balanced_cross_entropy", "classification_metrics", "expected_calibration_error", "fit_temperature",
           "roc_auc", "softmax", "stratified_split", "train_classifier_iter"]
