"""Classify images, tiles or crops with a trained CNN classifier, and show where it looked (Grad-CAM).

:func:`classify_items` gives calibrated class probabilities (softmax of the
logits over the card's ``temperature``), averaged over test-time flips and
over several models (an ensemble) when given a list.  :func:`gradcam` gives
the Grad-CAM map of each item (Selvaraju et al. 2017): the last encoder
level's feature maps weighted by the pooled gradient of the class logit,
rectified, upsampled to the item's size, scaled to [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelError, ParameterError

#: Test-time flips (axes of the ``(N, C, Y, X)`` batch) averaged by :func:`classify_items`.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))


def load_classifier(model: str | os.PathLike) -> tuple[Any, Any]:
    """``(network, card)`` of a classification model (name or folder), on the CPU in eval mode.

    Raises
    ------
    ModelError
        If the model is not a classifier.
    """
    from ..models.registry import resolve_model
    from ..models.spec import load_model

    info = resolve_model(model)
    net, card = load_model(info.path)
    if card.kind != "classification":
        raise ModelError(f"model {info.name!r} is a {card.kind} model; this needs a classification model")
    return net, card


def prepare_items(items: Sequence[Any], size: int, dims: int = 2) -> tuple[np.ndarray, str]:
    """Resize every item to ``size`` (per spatial axis) and stack them as ``(N, C, *spatial)`` float32 in [0, 1].

    Parameters
    ----------
    items : sequence of array-like
        2D ``(Y, X)`` grey, ``(Y, X, 3|4)`` RGB(A) (alpha dropped), ``(Y, X, C)``
        multichannel with ``C <= 8``, or 3D ``(Z, Y, X)`` grey when ``dims=3``.
    size : int
        Edge of the model's input in pixels.

    Returns
    -------
    batch : ndarray of float32
    color : {"grey", "rgb", "multichannel"}

    Raises
    ------
    ParameterError
        Items of different channel counts, or shapes that are not images.
    """
    from skimage.transform import resize

    out, colors = [], set()
    for i, it in enumerate(items):
        a = np.asarray(it)
        if dims == 3:
            if a.ndim != 3:
                raise ParameterError(f"item {i}: 3D items are (Z, Y, X), got shape {a.shape}")
            chans, color = a[None], "grey"
        elif a.ndim == 2:
            chans, color = a[None], "grey"
        elif a.ndim == 3 and a.shape[-1] in (3, 4):
            chans, color = np.moveaxis(a[..., :3], -1, 0), "rgb"
        elif a.ndim == 3 and a.shape[-1] <= 8:
            chans, color = np.moveaxis(a, -1, 0), "multichannel"
        else:
            raise ParameterError(f"item {i}: shape {a.shape} is not a 2D grey/RGB/multichannel image")
        colors.add((color, chans.shape[0]))
        chans = chans.astype(np.float32)
        if np.issubdtype(a.dtype, np.integer):
            chans /= float(np.iinfo(a.dtype).max) if a.dtype != np.uint8 else 255.0
        else:
            lo, hi = np.percentile(chans, (1, 99.8))
            chans = (chans - lo) / max(hi - lo, 1e-6)
        target = (chans.shape[0],) + (size,) * dims
        out.append(resize(chans, target, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32))
    if len(colors) != 1:
        raise ParameterError(f"items have different channels: {sorted(colors)}; give items of one kind")
    return np.stack(out), colors.pop()[0]


def _batch(items: Sequence[Any], card: Any) -> np.ndarray:
    size = int(card.input.get("size", [96])[0])
    x, color = prepare_items(items, size, card.dims)
    if x.shape[1] != card.in_channels:
        raise ParameterError(f"model {card.name!r} takes {card.in_channels} channel(s) ({card.input.get('color')}); "
                             f"these items have {x.shape[1]} ({color})")
    return x


def classify_items(items: Sequence[Any], model: str | os.PathLike | Sequence[str | os.PathLike], *,
                   tta: bool = True, batch_size: int = 64) -> tuple[np.ndarray, list[str]]:
    """Calibrated class probabilities of each item.

    Parameters
    ----------
    items : sequence of array-like
        2D grey/RGB/multichannel images or 3D crops, any size (resized to the model's input).
    model : str or path, or a sequence of them
        A classification model, or several with the same classes (their
        probabilities are averaged).
    tta : bool
        Average over flips (2D models).

    Returns
    -------
    probabilities : ndarray of float64, shape (n_items, n_classes)
    class_names : list of str
    """
    loaded = load_classifiers(model)
    return predict_probabilities(loaded, items, tta=tta, batch_size=batch_size), list(
        loaded[0][1].output["class_names"])


def load_classifiers(model: str | os.PathLike | Sequence[str | os.PathLike]) -> list[tuple[Any, Any]]:
    """``(network, card)`` of one model or of each model of an ensemble (same classes), loaded once.

    Raises
    ------
    ParameterError
        No model given.
    ModelError
        A model that is not a classifier, or ensemble members with different classes.
    """
    models = [model] if isinstance(model, (str, os.PathLike)) else list(model)
    if not models:
        raise ParameterError("give at least one model")
    loaded = [load_classifier(m) for m in models]
    names = list(loaded[0][1].output["class_names"])
    for _, card in loaded[1:]:
        cn = list(card.output["class_names"])
        if cn != names:
            raise ModelError(f"ensemble models have different classes: {names} vs {cn}")
    return loaded


def predict_probabilities(loaded: Sequence[tuple[Any, Any]], items: Sequence[Any], *, tta: bool = True,
                          batch_size: int = 64) -> np.ndarray:
    """Calibrated probabilities ``(n_items, n_classes)`` (float64) of items under models from :func:`load_classifiers`.

    Each model's softmax of ``logits / temperature`` is averaged over the
    test-time flips (2D models, ``tta``) and then over the models.
    """
    import torch

    total = None
    for net, card in loaded:
        temp = float(card.output.get("temperature", 1.0))
        x = _batch(items, card)
        flips = TTA_FLIPS if tta and card.dims == 2 else ((),)
        probs = np.zeros((len(x), len(card.output["class_names"])))
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb = torch.from_numpy(x[i:i + batch_size])
                acc = 0
                for f in flips:
                    acc = acc + torch.softmax(net(torch.flip(xb, f) if f else xb).double() / temp, dim=1)
                probs[i:i + batch_size] = (acc / len(flips)).numpy()
        total = probs if total is None else total + probs
    return total / len(loaded)


def gradcam(items: Sequence[Any], model: str | os.PathLike, class_index: int | Sequence[int] | None = None
            ) -> list[np.ndarray]:
    """Grad-CAM map of each item for ``class_index`` (default: the predicted class), at the item's size.

    Returns
    -------
    list of ndarray of float32
        One map per item, ``(Y, X)`` (or ``(Z, Y, X)``), values in [0, 1].
    """
    import torch
    import torch.nn.functional as F
    from skimage.transform import resize

    net, card = load_classifier(model)
    x = torch.from_numpy(_batch(items, card))
    out = []
    for i in range(len(x)):
        xb = x[i:i + 1]
        feats = net.features(xb).detach().requires_grad_(True)
        logits = net.head(feats)
        k = int(logits.argmax()) if class_index is None else int(
            class_index if np.isscalar(class_index) else class_index[i])
        grad, = torch.autograd.grad(logits[0, k], feats)
        w = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
        cam = F.relu((w * feats).sum(dim=1))[0].detach().numpy()
        cam = cam / cam.max() if cam.max() > 0 else cam
        shape = np.asarray(items[i]).shape[: card.dims]
        out.append(resize(cam, shape, order=1).astype(np.float32))
    return out


def classify_objects(table: Any, image: Any, labels: Any, model: Any, geometry: Any = None, *, size: float | None = None,
                     tta: bool = True) -> Any:
    """The objects (lesions, cells) table with a CNN class per row: ``cnn_class``, ``cnn_probability``, ``cnn_p_<class>``.

    Crops (:func:`~napari_medseg.analysis.crop_classify.sample_crops`) are centred on each row's ``id``
    in ``labels`` and cut as the model card's ``input.crop`` says; ``size`` (world units with a
    calibrated ``geometry``, else pixels) overrides the card's edge.
    """
    from .crop_classify import CropSpec, classify_at, cnn_columns, crop_spec_of, object_centres

    _, spec = crop_spec_of(model)
    if size is not None:
        unit = geometry.length_unit if geometry is not None and geometry.calibrated else "pixel"
        spec = CropSpec(float(size), unit, spec.mode, spec.pixels)
    centres, _ = object_centres(labels, np.asarray(table["id"], np.int64))
    probs, names = classify_at(image, centres, model, geometry, spec=spec, tta=tta)
    return cnn_columns(table, probs, names)


def read_class_table(path: str | os.PathLike, *, with_groups: bool = False
                     ) -> tuple[list[Any], list[str]] | tuple[list[Any], list[str], list[str] | None]:
    """Files and classes of a ``file,class[,group]`` CSV (``file`` relative to the CSV's folder, or absolute).

    Parameters
    ----------
    path : path
    with_groups : bool
        Also return the optional ``group`` column: items of one group (copies
        or crops of one original, one patient) are never split between
        training and the held-out part.

    Returns
    -------
    files : list of Path
    classes : list of str
    groups : list of str or None
        Only with ``with_groups``; None when the table has no ``group`` column.

    Raises
    ------
    ParameterError
        Unreadable, a missing column, an empty table, a missing file or an empty class (with the line).
    """
    import csv
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"{path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ParameterError(f"cannot read {path}: {exc}") from exc
    if not rows or not {"file", "class"} <= set(rows[0]):
        raise ParameterError(f"{path}: needs the columns file,class (got {list(rows[0]) if rows else 'none'})")
    files, classes, groups = [], [], []
    has_groups = "group" in rows[0]
    for i, r in enumerate(rows, start=2):
        p = Path(str(r["file"] or "").strip())
        p = p if p.is_absolute() else path.parent / p
        if not p.is_file():
            raise ParameterError(f"{path}, line {i}: file {p} does not exist")
        cls = str(r["class"] or "").strip()
        if not cls:
            raise ParameterError(f"{path}, line {i}: empty class")
        files.append(p)
        classes.append(cls)
        if has_groups:
            grp = str(r["group"] or "").strip()
            if not grp:
                raise ParameterError(f"{path}, line {i}: empty group (the group column needs a value on every row)")
            groups.append(grp)
    if with_groups:
        return files, classes, groups if has_groups else None
    return files, classes


def load_image_item(path: str | os.PathLike) -> np.ndarray:
    """The pixels of one image file for a classifier, channels last (its first image; level 0 of a pyramid).

    Raises
    ------
    ReaderError
        Unreadable file.
    ParameterError
        A file holding several images.
    """
    from pathlib import Path

    from ..io import read
    from ..io.picture import is_picture_path, read_picture

    path = Path(path)
    vols = read_picture(path) if is_picture_path(path) else read(path)
    if len(vols) != 1:
        raise ParameterError(f"{path}: holds {len(vols)} images; give one image per file")
    v = vols[0]
    data = np.asarray(v.data[0] if isinstance(v.data, list) else v.data)
    if "C" in v.axes:
        data = np.moveaxis(data, v.axes.index("C"), -1)
    return data


__all__ = ["TTA_FLIPS", "classify_items", "load_classifiers", "load_image_item", "predict_probabilities", "read_class_table", "classify_objects", "gradcam", "load_classifier",
           "prepare_items"]
