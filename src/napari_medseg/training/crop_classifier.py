"""Train a CNN classifier on fixed-size crops around labelled objects (cells, lesions): a generator.

:func:`train_crop_classifier_iter` cuts the crops with
:func:`~napari_medseg.analysis.crop_classify.sample_crops` (2D, 2.5D or 3D,
a fixed physical size) around the labelled objects and trains
:func:`~napari_medseg.training.classifier.train_classifier_iter` on them; the
card keeps the crop settings (``input.crop``) so that
:func:`~napari_medseg.analysis.crop_classify.classify_at` cuts new objects alike.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from ..analysis.crop_classify import CropSpec, classify_at, sample_crops
from ..errors import ParameterError
from ..progress import Progress
from .classifier import ClassifierResult, train_classifier_iter


def default_depth(spec: CropSpec) -> int:
    """Encoder levels for a crop size: as many as keep at least 4 samples per edge at the bottom (2..5)."""
    d = 2
    while d < 5 and spec.pixels % 2 ** d == 0 and spec.pixels // 2 ** d >= 4:
        d += 1
    return d


def train_crop_classifier_iter(image: Any, centres: Any, classes: Sequence[str], geometry: Any = None, *,
                               spec: CropSpec, depth: int | None = None, **kwargs: Any
                               ) -> Generator[Progress, None, ClassifierResult]:
    """Train a classifier on the crops around ``centres`` (one class each); see the module docstring.

    Parameters
    ----------
    image : array-like
        ``(Y, X[, C])`` or ``(Z, Y, X)`` intensities.
    centres : array-like, shape (N, 2) or (N, 3)
        Pixel indices of the labelled objects' centres.
    classes : sequence of str
        The class of each object.
    geometry : Geometry, optional
        Index -> world of the spatial axes (the crop size is in its unit).
    spec : CropSpec
        How crops are cut (its ``pixels`` is the network's input size).
    depth : int, optional
        Encoder levels (default :func:`default_depth`).
    **kwargs
        Passed to :func:`~napari_medseg.training.classifier.train_classifier_iter` (``minutes``,
        ``base``, ``out``, ``name``, ``cancel``...).

    Returns
    -------
    ClassifierResult
    """
    c = np.asarray(centres, np.float64)
    if len(c) != len(classes):
        raise ParameterError(f"{len(c)} objects but {len(classes)} classes")
    yield Progress(0, 1, f"cutting {len(c)} crops ({spec.mode}, {spec.size:g} {spec.unit})", {"stage": "crops"})
    crops = sample_crops(image, c, geometry, spec)
    return (yield from train_classifier_iter(crops, list(classes), dims=spec.dims, size=spec.pixels,
                                             depth=depth or default_depth(spec),
                                             input_extra={"crop": spec.to_dict()}, **kwargs))


def fit_and_classify_iter(image: Any, centres: Any, labelled: dict[int, str], geometry: Any = None, *,
                          spec: CropSpec, tta: bool = True, **kwargs: Any
                          ) -> Generator[Progress, None, tuple[ClassifierResult, np.ndarray, list[str]]]:
    """Train on the labelled objects, then classify every object: what "Train" does in the widgets.

    Parameters
    ----------
    image, geometry, spec, **kwargs
        As :func:`train_crop_classifier_iter`.
    centres : array-like, shape (N, 2) or (N, 3)
        Pixel centres of *all* objects.
    labelled : dict
        Row index into ``centres`` -> class, for the labelled objects.
    tta : bool
        Test-time flips when classifying.

    Returns
    -------
    result : ClassifierResult
    probabilities : ndarray, shape (N, n_classes)
    class_names : list of str
    """
    c = np.asarray(centres, np.float64)
    rows = sorted(labelled)
    if any(not 0 <= r < len(c) for r in rows):
        raise ParameterError(f"labelled rows {rows} are outside the {len(c)} objects")
    res = yield from train_crop_classifier_iter(image, c[rows], [labelled[r] for r in rows], geometry, spec=spec,
                                                **kwargs)
    yield Progress(0, 1, f"classifying {len(c)} objects", {"stage": "classify"})
    probs, names = classify_at(image, c, res.model_path, geometry, tta=tta)
    return res, probs, names


__all__ = ["default_depth", "fit_and_classify_iter", "train_crop_classifier_iter"]
