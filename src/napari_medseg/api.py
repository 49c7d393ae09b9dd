"""The public verbs of napari-medseg, usable without napari.

Every verb ``napari_medseg.<verb>`` resolves here: :func:`read`,
:func:`segment`, :func:`segment_blockwise`, :func:`detect`, :func:`measure`, :func:`classify`,
:func:`train`, :func:`evaluate`, :func:`list_models`, :func:`load_model`,
:func:`write_labels` (also :func:`write_labels_tiff`) and
:func:`write_objects_csv`.  Each is a thin wrapper that imports its
implementation on first call, so ``import napari_medseg.api`` stays cheap
(no torch, napari or Qt).

>>> import napari_medseg as ms                                   # doctest: +SKIP
>>> labels = ms.segment(image)                                   # doctest: +SKIP
>>> labels, probs = ms.segment(image, "nuclei", return_probabilities=True)  # doctest: +SKIP
>>> nuclei_3d = ms.segment(stack, "nuclei", scale=(2.0, 0.5, 0.5), do_3d=True)  # doctest: +SKIP
>>> (vol,) = ms.read("cells.tif")                               # doctest: +SKIP
>>> res = ms.detect(vol.data, "nuclei", scale=vol.scale[-2:], units="µm")  # doctest: +SKIP
>>> ms.write_objects_csv("cells_objects.csv", res.table)        # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .progress import Progress, run

if TYPE_CHECKING:  # annotations only: importing these at run time would be costly
    import torch

    from .analysis.classify import ObjectClassifier
    from .analysis.evaluation import EvalReport
    from .analysis.gating import Gate
    from .analysis.objects import ObjectsResult
    from .geometry import Volume
    from .models.registry import ModelInfo
    from .models.spec import ModelCard
    from .training.finetune import FinetuneResult


def read(path: str | os.PathLike) -> list[Volume]:
    """Read a TIFF file, a DICOM file, a DICOM series folder or a DICOMDIR.

    Parameters
    ----------
    path : str or path-like
        File or folder.

    Returns
    -------
    list of Volume
        One entry per image (a folder with several DICOM series gives
        several), with axes, pixel size and metadata.

    Raises
    ------
    ReaderError
        When the path holds nothing this package can read; the message says why.

    See Also
    --------
    napari_medseg.io.read : the implementation.
    """
    from .io import read as impl

    return impl(path)


def segment(
    image,
    model: str | os.PathLike = "auto",
    *,
    axes: str | None = None,
    scale: Sequence[float] | None = None,
    device: str = "auto",
    tile_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    return_probabilities: bool = False,
    progress: Callable[[Progress], Any] | None = None,
    out=None,
    **kwargs,
):
    """Segment an image (nuclei, cells, organs...) with a U-Net model.

    Parameters
    ----------
    image : array-like or Volume
        ``YX``, ``YXS`` (RGB), ``CYX``, ``ZYX``, ``ZCYX``... numpy, dask,
        zarr or ``np.memmap`` array; large ones are read tile by tile.
    model : str or path
        Model name, model folder, or ``"auto"`` (``nuclei-he`` for RGB,
        ``nuclei`` for grey images).
    axes : str, optional
        Axis letters (``Z Y X C S``); guessed from the shape when None:
        2D -> ``YX``, 3D ending in 3/4 -> ``YXS``, other 3D -> ``ZYX``.
    scale : sequence of float, optional
        Physical pixel size per spatial axis (Z, Y, X order); the image is
        resampled to the model's pixel size when they differ by > 5 %.
    device : {"auto", "cpu", "cuda", "mps"}
    tile_size, batch_size : int, optional
        Largest tile edge (pixels) and tiles per forward pass.
    return_probabilities : bool
        Also return the probability maps, ``(K, (Z,) Y, X)`` float16.
    progress : callable, optional
        Called with each :class:`~napari_medseg.progress.Progress`.
    out : array-like, optional
        Preallocated integer array (e.g. ``np.memmap``, zarr) of the image's
        spatial shape to write the labels into (returned).
    **kwargs
        ``halo``, ``postprocess``, ``cancel``, ``units``, ``precision``,
        ``backend``, ``tta``, ``do_3d``: see
        :func:`napari_medseg.inference.dispatch.segment_any_iter`.  ``do_3d=True``
        gives 3D objects in a Z stack from a 2D instance model (planes along
        Z, Y and X, Z resampled to isotropic voxels from ``scale``; see
        :mod:`napari_medseg.inference.ortho3d`).

    Returns
    -------
    labels : ndarray of uint16/uint32 (or ``out``)
        ``(Z,) Y, X``; 0 background, objects (or classes) from 1.
    probabilities : ndarray of float16
        Only when ``return_probabilities`` is True.

    Examples
    --------
    >>> import numpy as np, napari_medseg as ms                      # doctest: +SKIP
    >>> labels = ms.segment(np.random.rand(256, 256), "nuclei")      # doctest: +SKIP
    """
    from .inference.dispatch import segment_any_iter

    res = run(
        segment_any_iter(image, model, axes=axes, scale=scale, device=device, tile_size=tile_size,
                     batch_size=batch_size, return_probabilities=return_probabilities, out=out, **kwargs),
        progress,
    )
    if return_probabilities:
        return res.labels, res.probabilities
    return res.labels


def detect(image: Any = None, model: str | os.PathLike = "auto", **kwargs: Any) -> ObjectsResult:
    """Detect, measure and tabulate the objects of an image (or of a label image).

    The model's kind chooses the path: segmentation models (``instance``,
    ``semantic``) give labels that are measured, detection models give
    boxes; with ``labels=`` no model runs.

    Parameters
    ----------
    image : array-like or Volume, optional
        ``YX``, ``YXS`` (RGB), ``CYX``, ``ZYX``...  Needed unless ``labels``
        is given; then it only supplies intensities.
    model : str or path
        Model name, folder, or ``"auto"`` (``nuclei-he`` for RGB, ``nuclei``
        for grey images).
    **kwargs
        ``labels``, ``intensity``, ``scale``, ``translate``, ``units``,
        ``axes``, ``channel_names``, ``device``, ``score_threshold``,
        ``tile_size``, ``batch_size``, ``properties``, ``cancel``,
        ``progress``: see :func:`napari_medseg.analysis.objects.detect_iter`.

    Returns
    -------
    ObjectsResult
        ``.table`` (pandas DataFrame, one row per object), ``.labels`` or
        ``.boxes``, ``.counts()``.

    See Also
    --------
    napari_medseg.analysis.objects.detect : the implementation.
    write_objects_csv : save ``.table``.

    Examples
    --------
    >>> import napari_medseg as ms                                         # doctest: +SKIP
    >>> ms.detect(rgb, "bccd").counts()                                    # doctest: +SKIP
    {'WBC': 1, 'RBC': 14, 'Platelets': 2}
    >>> res = ms.detect(labels=lab, intensity=img, scale=(0.5, 0.5), units="µm")  # doctest: +SKIP
    """
    from .analysis.objects import detect as impl

    return impl(image, model, **kwargs)


def segment_blockwise(image: Any, out: str | os.PathLike, *, progress: Callable[[Progress], Any] | None = None,
                      **options: Any) -> Any:
    """Segment (and measure) a whole slide or any huge 2D image block by block into an on-disk store.

    Memory stays that of one block whatever the image size; objects across
    block borders are stitched (each belongs to the block holding its
    centroid: none split, none duplicated); re-running resumes.

    Parameters
    ----------
    image : array-like or SourceSpec
        A lazily indexable ``YX`` / ``YXS`` / ``CYX`` array (zarr, dask, a
        pyramid level), or a :class:`napari_medseg.batch.plan.SourceSpec`
        (a file at a pyramid level, or an array with its geometry).
    out : str or path-like
        Output folder: ``<name>.zarr`` (OME-Zarr multiscale labels) and
        ``<name>_objects.csv``.
    progress : callable, optional
        Called with each :class:`~napari_medseg.progress.Progress`.
    **options
        ``model``, ``detect``, ``tissue`` (``"auto"``, the default: found on
        RGB slides, a pyramid or >= 8192 x 8192 px, and only their tissue
        blocks run; ``"on"``, ``"none"``, or a low-resolution bool mask),
        ``block_size``, ``max_object_size``, ``device``...: see
        :func:`napari_medseg.batch.blockwise.plan_job`.

    Returns
    -------
    BlockwiseResult
        ``.labels`` (the pyramid, zarr arrays), ``.table``, ``.summary``.

    See Also
    --------
    napari_medseg.batch.runner.run_batch_iter : many files on a dask cluster (``medseg batch``).
    """
    from .batch.blockwise import segment_blockwise_iter

    return run(segment_blockwise_iter(image, str(out), **options), progress)


def measure(labels: Any, image: Any = None, *args: Any, **kwargs: Any) -> Any:
    """Measure every object of a label image; one row per object.

    Parameters
    ----------
    labels : array-like of int, shape (Y, X) or (Z, Y, X)
        Label image, 0 = background.
    image : array-like, mapping or list of (name, array), optional
        Intensity image(s) for the ``mean_/min_/max_/std_<channel>`` columns.
    *args, **kwargs
        ``spacing``, ``units``, ``channel_names``, ``properties`` (also by
        position, in that order), ``translate``, ``channel_axis``,
        ``as_dict``: see :func:`napari_medseg.analysis.measure.measure`.

    Returns
    -------
    pandas.DataFrame or dict of str to ndarray
        One row per object, sorted by label id (``area_um2``,
        ``centroid_y_um``, ``mean_DAPI``...).

    Raises
    ------
    ParameterError
        ``labels`` is not a 2D/3D non-negative integer image, or the other
        arguments do not match it.

    See Also
    --------
    napari_medseg.analysis.measure.measure : the implementation.
    """
    from .analysis.measure import measure as impl

    return impl(labels, image, *args, **kwargs)


def classify(table: Any, classifier: ObjectClassifier | Gate | Sequence[Gate], **gate_options: Any) -> Any:
    """Add a ``class`` column (and ``probability`` for a trained classifier) to a table.

    Parameters
    ----------
    table : DataFrame or mapping of str to array
        Measurement table, one row per object (e.g. from :func:`measure`).
    classifier : ObjectClassifier, Gate or sequence of Gate
        A trained classifier, or gates (classes such as ``"CD3+ CD8-"``).
    **gate_options
        ``positive``, ``negative``, ``sep``: see
        :func:`napari_medseg.analysis.gating.gate_classes`.

    Returns
    -------
    DataFrame or dict
        A copy of ``table`` (same type) with the new columns.

    See Also
    --------
    napari_medseg.analysis.classify.classify : the implementation.
    """
    from .analysis.classify import classify as impl

    return impl(table, classifier, **gate_options)


def train(images: Any, labels: Any, *, progress: Callable[[Progress], Any] | None = None,
          **kwargs: Any) -> FinetuneResult:
    """Fine-tune or train a segmentation model on painted labels (blocking).

    Parameters
    ----------
    images, labels
        One image and its painted labels (0 = not painted), or sequences of them.
    progress : callable, optional
        Called with each :class:`~napari_medseg.progress.Progress`.
    **kwargs
        ``base``, ``mode``, ``class_names``, ``roi``, ``minutes``, ``epochs``,
        ``lr``, ``augment``, ``val_fraction``, ``early_stopping``, ``device``,
        ``out``, ``name``, ``overwrite``, ``cancel``, ``scale``...: see
        :func:`napari_medseg.training.finetune.finetune_iter`.

    Returns
    -------
    FinetuneResult
        ``model_path`` is usable at once: ``segment(img, result.model_path)``.

    See Also
    --------
    napari_medseg.training.finetune.train : the implementation.

    Examples
    --------
    >>> import napari_medseg as ms                                            # doctest: +SKIP
    >>> res = ms.train(image, painted, base="nuclei", minutes=2, name="mine")  # doctest: +SKIP
    """
    from .training.finetune import train as impl

    return impl(images, labels, progress=progress, **kwargs)


def evaluate(images: Any, masks: Any, model: str | os.PathLike | None = None, labels: Any = None,
             **kwargs: Any) -> EvalReport:
    """Score a model (or existing labels) against instance masks.

    Parameters
    ----------
    images : folder, list of paths or list of arrays
        The images; with ``labels`` they only name the rows.
    masks : folder, list of paths or list of arrays
        Ground-truth instance label images (0 = background), paired with the
        images by file name (folders / paths) or by position (arrays).
    model : str or path, optional
        Model name or folder to segment each image with.
    labels : folder, list of paths or list of arrays, optional
        Existing predictions to score instead of running a model.
    **kwargs
        ``device``, ``thresholds``, ``progress`` and extra keyword arguments
        for :func:`segment`: see :func:`napari_medseg.analysis.evaluation.evaluate`.

    Returns
    -------
    EvalReport
        ``.rows``, ``.overall``, ``.to_csv(path)``, ``.format_table()``.

    See Also
    --------
    napari_medseg.analysis.evaluation.evaluate : the implementation.
    """
    from .analysis.evaluation import evaluate as impl

    return impl(images, masks, model, labels, **kwargs)


def list_models() -> list[ModelInfo]:
    """Models available by name (shipped, then user).

    Returns
    -------
    list of ModelInfo
        ``.name``, ``.source``, ``.path``, ``.card`` of each model.

    See Also
    --------
    napari_medseg.models.registry.list_models : the implementation.
    """
    from .models.registry import list_models as impl

    return impl()


def load_model(name_or_path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    """Load a model's network and card by name or folder, to benchmark, embed or export it.

    Parameters
    ----------
    name_or_path : str or path-like
        A model name (see :func:`list_models`: ``"nuclei"``, ``"nuclei-he"``...)
        or a model folder (``model.json`` + ``weights.safetensors``), its
        card or its weights file.
    device : {"cpu", "auto", "cuda", "mps"} or torch.device
        Where to put the network (``"cuda:1"`` works too); ``"auto"`` takes
        CUDA, then MPS, then the CPU.

    Returns
    -------
    network : torch.nn.Module
        A new copy in eval mode (yours to change: it is not the copy that
        :func:`segment` caches).  A U-Net takes float32 ``(N, C, Y, X)``
        (2D) or ``(N, C, Z, Y, X)`` (3D), each spatial size a multiple of
        ``network.divisor``, normalised as ``card.input["normalization"]``
        says, and returns raw outputs ``(N, out_channels, ...)`` of the same
        spatial size, whose meaning ``card.output["channels"]`` gives
        (for the shipped nuclei models: a foreground logit and a distance
        logit).
    card : ModelCard
        The model card (architecture, input, output, training data, metrics).

    Raises
    ------
    ModelError
        Unknown name, missing or broken weights (the message lists the models available).
    ParameterError
        Unknown device, or one this machine lacks.

    Examples
    --------
    >>> import torch, napari_medseg as ms                         # doctest: +SKIP
    >>> net, card = ms.load_model("nuclei")                       # doctest: +SKIP
    >>> with torch.no_grad():                                     # doctest: +SKIP
    ...     out = net(torch.zeros(1, card.in_channels, 256, 256))  # (1, 2, 256, 256)
    """
    from .models.device import select_device
    from .models.registry import resolve_model
    from .models.spec import load_model as impl

    dev, _ = select_device(device)
    info = resolve_model(name_or_path)
    return impl(info.path, dev)


def write_labels(path: str | os.PathLike, labels: Any, scale: Sequence[float] | None = None,
                 units: Sequence[Any] | str | None = None, axes: str | None = None, *,
                 like: Any = None) -> Path:
    """Write a label image with its geometry: TIFF with pixel size, or NIfTI/NRRD with the patient affine.

    Parameters
    ----------
    path : str or path-like
        Destination, written atomically: ``.tif`` (ImageJ/Fiji open it
        calibrated), or ``.nii``/``.nii.gz``/``.nrrd`` (needs ``like``: the
        file gets its affine, so it overlays the series in any radiology viewer).
    labels : array-like of int or bool
        Label ids, 0 = background; 2 to 4 dimensions.
    scale : sequence of float, optional
        Pixel step along each axis of ``labels`` in ``units`` (default 1; TIFF only).
    units : str or sequence, optional
        Unit of each axis, or one unit for all non-T axes (default ``"pixel"``; TIFF only).
    axes : str, optional
        Letters from ``TZYX`` ending in ``YX``; default by dimension.
    like : Volume or Geometry, optional
        The image the labels were computed on (or its geometry): its grid is
        written instead of ``scale``/``units`` (for TIFF, its spacing).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ParameterError
        Negative, non-integer or too many dimensions in the labels, or
        inconsistent ``scale``/``units``/``axes``/``like``.

    See Also
    --------
    napari_medseg.io.tiff.write_labels_tiff, napari_medseg.io.radiology.write_labels_file
    """
    from .errors import ParameterError
    from .geometry import Geometry, is_volume
    from .io.radiology import is_nifti_path, write_labels_file
    from .io.tiff import write_labels_tiff

    ndim = len(getattr(labels, "shape", ()))
    default_axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(ndim, "")
    geometry = None
    if like is not None:
        if scale is not None or units is not None:
            raise ParameterError("give either like= or scale/units, not both")
        g = like.geometry if is_volume(like) else like
        if not isinstance(g, Geometry):
            raise ParameterError(f"like must be a Volume or a Geometry, got {type(like).__name__}")
        geometry = g.subset(axes or default_axes)
    if is_nifti_path(path) or str(path).lower().endswith(".nrrd"):
        if geometry is None:
            raise ParameterError(f"{path}: NIfTI/NRRD labels need the image's geometry: pass like=<the image Volume>")
        return write_labels_file(path, labels, geometry)
    if geometry is not None:
        scale, units = [float(v) for v in geometry.spacing], list(geometry.units)
    return write_labels_tiff(path, labels, scale=scale, units=units, axes=axes)


#: The former name of :func:`write_labels` (same function).
write_labels_tiff = write_labels


def write_objects_csv(path: str | os.PathLike, table: Any) -> Path:
    """Write an objects table (e.g. :func:`detect`'s ``.table``) as CSV, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination (``<stem>_objects.csv``).
    table : pandas.DataFrame or mapping of str to 1D array
        One row per object.

    Returns
    -------
    Path
        The written file.

    See Also
    --------
    napari_medseg.analysis.objects.write_objects_csv : the implementation.
    """
    from .analysis.objects import write_objects_csv as impl

    return impl(path, table)


__all__ = [
    "classify", "detect", "evaluate", "list_models", "load_model", "measure", "read", "segment", "segment_blockwise",
    "train",
    "write_labels", "write_labels_tiff", "write_objects_csv",
]
