"""Score instance segmentations against ground-truth masks, image by image.

>>> from napari_medseg.analysis.evaluation import evaluate                    # doctest: +SKIP
>>> report = evaluate("val/images", "val/masks", model="nuclei")  # doctest: +SKIP
>>> print(report.format_table()); report.to_csv("report.csv")     # doctest: +SKIP

Either a model segments each image (through :func:`napari_medseg.api.segment`,
exactly what users get) or existing label images are compared
(``labels=``).  Images, masks and labels are given as folders, lists of
paths, or lists of arrays.  Files are paired by stem (the name without its
image suffix, ``.ome.tif`` and ``.nii.gz`` counted whole): the image
``a.tif`` pairs with ``a.<suffix>`` or ``a_labels.<suffix>`` (what
``medseg segment`` and ``medseg detect`` write, TIFF or NIfTI) in the masks
and labels folders, for any of :data:`IMAGE_SUFFIXES`.

Scores (see :mod:`napari_medseg.analysis.metrics`): AP at IoU 0.5 and 0.75
and the mean AP over IoU 0.5:0.05:0.9 with the DSB definition
``TP / (TP + FP + FN)``, plus the foreground pixel Dice.  ``overall`` gives
both the mean over images (the DSB Kaggle score) and the ``pooled`` AP of
the summed TP/FP/FN (StarDist's ``by_image=False``).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, ReaderError
from ..progress import CancelToken, Progress, run
from .metrics import MAP_THRESHOLDS, counts, dice

#: File suffixes listed from image, mask and label folders (``.nii.gz``, ``.ome.tif`` count whole).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm")
#: Compound suffixes stripped whole from a file name to get its stem.
COMPOUND_SUFFIXES = (".ome.tiff", ".ome.tif", ".nii.gz")
#: Files whose images are radiology volumes (patient coordinates), whatever their array looks like.
RADIOLOGY_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm")
#: What ``medseg segment`` / ``medseg detect`` append to an image's stem: ``<stem>_labels.tif``.
LABELS_SUFFIX = "_labels"
COLUMNS = ("image", "n_true", "n_pred", "ap50", "ap75", "map", "dice", "tp50", "fp50", "fn50", "seconds")


@dataclass
class EvalReport:
    """Per-image rows and overall scores.

    Attributes
    ----------
    rows : list of dict
        One per image with :data:`COLUMNS` keys.
    overall : dict
        ``n_images``, mean over images of ``ap50``, ``ap75``, ``map``,
        ``dice``, and the pooled ``ap50_pooled``, ``ap75_pooled``,
        ``map_pooled`` from TP/FP/FN summed over all images.
    model : str or None
        The model used, or None when existing labels were compared.
    """

    rows: list[dict]
    overall: dict
    model: str | None = None
    thresholds: tuple[float, ...] = field(default=MAP_THRESHOLDS)

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """Write the rows plus a final ``OVERALL`` row as CSV; returns the text."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _fmt(r[k]) for k in COLUMNS})
        o = self.overall
        w.writerow({"image": "OVERALL (mean over images)", "n_true": sum(r["n_true"] for r in self.rows),
                    "n_pred": sum(r["n_pred"] for r in self.rows), "ap50": _fmt(o.get("ap50")),
                    "ap75": _fmt(o.get("ap75")), "map": _fmt(o.get("map")), "dice": _fmt(o.get("dice")),
                    "tp50": sum(r["tp50"] for r in self.rows), "fp50": sum(r["fp50"] for r in self.rows),
                    "fn50": sum(r["fn50"] for r in self.rows),
                    "seconds": _fmt(sum(r["seconds"] for r in self.rows))})
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def format_table(self, per_image: bool = True) -> str:
        """A plain-text table (per-image rows, then the overall line)."""
        head = f"{'image':<40} {'true':>5} {'pred':>5} {'AP50':>6} {'AP75':>6} {'mAP':>6} {'Dice':>6}"
        lines = [head, "-" * len(head)]
        if per_image:
            for r in self.rows:
                lines.append(f"{str(r['image'])[:40]:<40} {r['n_true']:>5} {r['n_pred']:>5} {r['ap50']:>6.3f} "
                             f"{r['ap75']:>6.3f} {r['map']:>6.3f} {r['dice']:>6.3f}")
            lines.append("-" * len(head))
        o = self.overall
        if o.get("n_images"):
            lines.append(f"{'mean over ' + str(o['n_images']) + ' images':<40} {'':>5} {'':>5} {o['ap50']:>6.3f} "
                         f"{o['ap75']:>6.3f} {o['map']:>6.3f} {o['dice']:>6.3f}")
            lines.append(f"{'pooled (summed TP/FP/FN)':<40} {'':>5} {'':>5} {o['ap50_pooled']:>6.3f} "
                         f"{o['ap75_pooled']:>6.3f} {o['map_pooled']:>6.3f}")
        return "\n".join(lines)


def _fmt(v: Any) -> Any:
    return f"{v:.4f}" if isinstance(v, float) else v


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read a 2D/3D image or label file into a numpy array, singleton axes dropped.

    TIFF with tifffile, PNG/JPEG/BMP with scikit-image, everything else
    (NIfTI, NRRD, DICOM) through :func:`napari_medseg.io.read`, whose
    ``(Z, Y, X)`` order is the one ``medseg segment`` wrote the labels in
    (a 2D image's NIfTI labels come back as one plane, squeezed to ``(Y, X)``).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            return np.squeeze(tifffile.imread(p))
        if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
            from skimage.io import imread

            return np.squeeze(imread(p))
    except Exception as e:  # tifffile/imageio raise many types  # noqa: BLE001
        raise ReaderError(f"cannot read {p}: {e}") from None
    from ..io import read

    vols = read(p)
    if len(vols) != 1:
        raise ReaderError(f"{p} holds {len(vols)} images; give one file per image")
    data = vols[0].data
    return np.squeeze(np.asarray(data[0] if isinstance(data, list) else data))


def _list_files(folder: Path) -> list[Path]:
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ParameterError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def file_stem(path: str | os.PathLike) -> str:
    """A file's name without its image suffix: ``a.ome.tif``, ``a.nii.gz``, ``a.tif`` -> ``a``."""
    p = Path(path)
    name = p.name
    for s in COMPOUND_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return p.stem



def match_by_stem(stems: Sequence[str], files: Sequence[Path], name: str) -> list[Path]:
    """The file of ``files`` that goes with each stem: ``<stem>.<suffix>`` or ``<stem>_labels.<suffix>``.

    So a folder written by ``medseg segment`` / ``medseg detect``
    (``<stem>_labels.tif``, ``<stem>_labels.nii.gz``) pairs with the images
    as well as one of plain ``<stem>.tif`` masks.

    Parameters
    ----------
    stems : sequence of str
        Image stems (:func:`file_stem`).
    files : sequence of Path
        The candidate files (a folder's listing).
    name : str
        What the files are (``"masks"``, ``"labels"``), for the messages.

    Returns
    -------
    list of Path
        One per stem, in order.

    Raises
    ------
    ParameterError
        A stem with no file, or with both ``<stem>.*`` and ``<stem>_labels.*``
        (or two suffixes of one name): the message names them.
    """
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(file_stem(f), []).append(f)
    out, missing = [], []
    for k in stems:
        found = by_stem.get(k, []) + by_stem.get(k + LABELS_SUFFIX, [])
        if not found:
            missing.append(k)
        elif len(found) > 1:
            raise ParameterError(f"{name}: {', '.join(sorted(f.name for f in found))} all go with image {k!r}; "
                                 "keep one of them in the folder")
        else:
            out.append(found[0])
    if missing:
        raise ParameterError(f"{name}: no file named like {len(missing)} image(s), e.g. "
                             f"{', '.join(repr(m) for m in missing[:3])} (looked for <stem>.<suffix> and "
                             f"<stem>{LABELS_SUFFIX}.<suffix>, suffixes {', '.join(IMAGE_SUFFIXES)})")
    return out


def _as_items(what, name: str) -> list[tuple[str, Any]]:
    """(key, path-or-array) pairs from a folder, a list of paths or a list of arrays."""
    if isinstance(what, (str, os.PathLike)):
        p = Path(what)
        if not p.is_dir():
            raise ParameterError(f"{name}: {p} is not a folder")
        return [(file_stem(f), f) for f in _list_files(p)]
    if isinstance(what, np.ndarray):
        raise ParameterError(f"{name}: give a list of arrays, not one array")
    items = []
    for i, x in enumerate(what):
        if isinstance(x, (str, os.PathLike)):
            items.append((file_stem(x), Path(x)))
        else:
            items.append((f"#{i}", x))
    return items


def _pair(images, other, name: str) -> list[Any]:
    """Align ``other`` to ``images``: by stem when both are files (:func:`match_by_stem`), else by position."""
    other_items = _as_items(other, name)
    if all(isinstance(v, Path) for _, v in images) and all(isinstance(v, Path) for _, v in other_items):
        return match_by_stem([k for k, _ in images], [v for _, v in other_items], name)
    if len(other_items) != len(images):
        raise ParameterError(f"{len(images)} images but {len(other_items)} {name}")
    return [v for _, v in other_items]


def _load(x) -> np.ndarray:
    return read_array(x) if isinstance(x, Path) else np.asarray(x)


def score_image(true: np.ndarray, pred: np.ndarray, name: str = "", thresholds=MAP_THRESHOLDS, ov=None) -> dict:
    """One report row for a pair of label images (see :data:`COLUMNS`).

    ``ov``: :func:`~napari_medseg.analysis.metrics.overlap` of the pair when the caller already has it.
    """
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ParameterError(f"{name}: mask {true.shape} and prediction {pred.shape} differ in shape")
    c = counts(true.astype(np.int64, copy=False), pred.astype(np.int64, copy=False), thresholds, ov=ov)
    ap = c[:, 0] / np.maximum(c.sum(axis=1), 1)
    ap[c.sum(axis=1) == 0] = 1.0
    i75 = list(thresholds).index(0.75) if 0.75 in thresholds else None
    return {"image": name, "n_true": int(len(np.unique(true[true > 0]))), "n_pred": int(len(np.unique(pred[pred > 0]))),
            "ap50": float(ap[0]), "ap75": float(ap[i75]) if i75 is not None else float("nan"),
            "map": float(ap.mean()), "dice": dice(true, pred), "tp50": int(c[0, 0]), "fp50": int(c[0, 1]),
            "fn50": int(c[0, 2]), "_counts": c, "seconds": 0.0}


def overall_scores(rows: Sequence[dict], thresholds=MAP_THRESHOLDS) -> dict:
    """Mean-over-images and pooled scores of report rows."""
    if not rows:
        return {"n_images": 0}
    out: dict[str, Any] = {"n_images": len(rows)}
    for k in ("ap50", "ap75", "map", "dice"):
        out[k] = float(np.mean([r[k] for r in rows]))
    c = np.sum([r["_counts"] for r in rows], axis=0)
    pooled = c[:, 0] / np.maximum(c.sum(axis=1), 1)
    out["ap50_pooled"] = float(pooled[0])
    out["ap75_pooled"] = float(pooled[list(thresholds).index(0.75)]) if 0.75 in thresholds else float("nan")
    out["map_pooled"] = float(pooled.mean())
    return out


def evaluate_iter(
    images, masks, model: str | os.PathLike | None = None, labels=None, *, device: str = "auto",
    thresholds: Sequence[float] = MAP_THRESHOLDS, cancel=None, **segment_kwargs,
) -> Generator[Progress, None, EvalReport]:
    """Generator version of :func:`evaluate`: yields one :class:`Progress` per image."""
    if (model is None) == (labels is None):
        raise ParameterError("give either a model (to segment the images) or labels (to compare), not both")
    thresholds = tuple(float(t) for t in thresholds)
    if 0.5 not in thresholds:
        raise ParameterError("thresholds must include 0.5")
    img_items = _as_items(images, "images")
    mask_list = _pair(img_items, masks, "masks")
    lab_list = _pair(img_items, labels, "labels") if labels is not None else None
    if model is not None:
        from ..inference.dispatch import segment_any_iter
    rows = []
    n = len(img_items)
    for i, (key, img) in enumerate(img_items):
        if cancel is not None:
            cancel.raise_if_cancelled()
        true = _load(mask_list[i])
        t = time.perf_counter()
        if model is not None:
            kw = dict(segment_kwargs)
            if "image_kind" not in kw and isinstance(img, Path) and img.name.lower().endswith(RADIOLOGY_SUFFIXES):
                kw["image_kind"] = "radiology"  # patient-coordinate files: auto refuses, microscopy models warn
            pred = np.asarray(run(segment_any_iter(_load(img), model, device=device, **kw)).labels)
        else:
            pred = _load(lab_list[i])
        sec = time.perf_counter() - t
        if not np.issubdtype(true.dtype, np.integer) or not np.issubdtype(pred.dtype, np.integer):
            raise ParameterError(f"{key}: masks and labels must be integer label images "
                                 f"(got {true.dtype} and {pred.dtype})")
        row = score_image(true, pred, key, thresholds)
        row["seconds"] = sec
        rows.append(row)
        yield Progress(i + 1, n, f"evaluated {key}", {"ap50": row["ap50"]})
    return EvalReport(rows=rows, overall=overall_scores(rows, thresholds), model=None if model is None else str(model),
                      thresholds=thresholds)


def evaluate(
    images, masks, model: str | os.PathLike | None = None, labels=None, *, device: str = "auto",
    thresholds: Sequence[float] = MAP_THRESHOLDS, progress: Callable[[Progress], Any] | None = None,
    **segment_kwargs,
) -> EvalReport:
    """Score a model (or existing labels) against instance masks.

    Parameters
    ----------
    images : folder, list of paths or list of arrays
        The images (``(Y, X)`` grey or ``(Y, X, 3)`` RGB, or anything
        :func:`napari_medseg.api.segment` takes).  Ignored for scoring when
        ``labels`` is given, but they name the rows.
    masks : folder, list of paths or list of arrays
        Ground-truth instance label images (0 = background), paired with the
        images by file name (folders / paths) or by position (arrays).
    model : str or path, optional
        Model name or folder to segment each image with.
    labels : folder, list of paths or list of arrays, optional
        Existing predictions to score instead of running a model.
    device : str
        Passed to :func:`~napari_medseg.api.segment`.
    thresholds : sequence of float
        IoU thresholds of the mean AP (must include 0.5; 0.75 is reported
        when present).
    progress : callable, optional
        Called with a :class:`Progress` after each image.
    **segment_kwargs
        Extra keyword arguments for :func:`~napari_medseg.api.segment`.

    Returns
    -------
    EvalReport
        ``.rows``, ``.overall``, ``.to_csv(path)``, ``.format_table()``.
    """
    return run(evaluate_iter(images, masks, model, labels, device=device, thresholds=thresholds, **segment_kwargs),
               progress)


#: CSV columns of the Evaluate widget's export (scores as in ``medseg evaluate``).
CSV_COLUMNS = ("ground_truth", "prediction", "shape", "iou_threshold", "n_true", "n_pred", "tp", "fp", "fn",
               "ap50", "ap75", "map", "dice", "tp50", "fp50", "fn50", "seconds")


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing two label images.

    Attributes
    ----------
    scores : dict
        :data:`CSV_COLUMNS` keys: layer names, ``shape``, ``iou_threshold``,
        counts (int), ``tp``/``fp``/``fn`` at ``iou_threshold`` and
        ``tp50``/``fp50``/``fn50`` at 0.5, ``ap50``, ``ap75``, ``map``,
        ``dice`` (float in [0, 1]), ``seconds`` (compute time).
    false_positive_ids, false_negative_ids : ndarray of int64
        Unmatched predicted / true object ids at ``iou_threshold``.
    false_positives : ndarray
        The prediction with every matched object set to 0 (same shape and dtype).
    false_negatives : ndarray
        The ground truth with every matched object set to 0.
    """

    scores: dict[str, Any]
    false_positive_ids: np.ndarray
    false_negative_ids: np.ndarray
    false_positives: np.ndarray
    false_negatives: np.ndarray


def compare_iter(
    true: Any, pred: Any, iou_threshold: float = 0.5, *, names: tuple[str, str] = ("", ""),
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, Comparison]:
    """Score ``pred`` against ``true`` and cut out the unmatched objects (the Evaluate widget's job).

    Parameters
    ----------
    true, pred : array-like of int, same shape, any number of axes
        Label images (0 = background).  Read once into numpy (dask arrays are
        computed) so the scores see one snapshot even if the layer is painted.
    iou_threshold : float
        A true and a predicted object match when their IoU is strictly above it.
    names : (str, str)
        Ground-truth and prediction names for :attr:`Comparison.scores`.
    cancel : CancelToken, optional
        Checked between the steps.

    Yields
    ------
    Progress
        Four steps.

    Returns
    -------
    Comparison
    """
    from .metrics import match_instances, overlap

    def check() -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()

    t0 = time.perf_counter()
    yield Progress(0, 4, "reading the layers")
    true = np.array(true, copy=True)
    pred = np.array(pred, copy=True)
    if true.shape != pred.shape:
        raise ParameterError(f"ground truth {true.shape} and prediction {pred.shape} differ in shape")
    check()
    yield Progress(1, 4, "scoring at IoU 0.5:0.05:0.9")
    ov = overlap(true, pred)  # computed once, for the scores and the matching
    row = score_image(true, pred, ov=ov)
    check()
    yield Progress(2, 4, f"matching at IoU > {iou_threshold:g}")
    m = match_instances(true, pred, iou_threshold, ov=ov)
    check()
    yield Progress(3, 4, "cutting out the unmatched objects")
    fp = np.where(np.isin(pred, m.false_positives), pred, 0).astype(pred.dtype, copy=False)
    fn = np.where(np.isin(true, m.false_negatives), true, 0).astype(true.dtype, copy=False)
    scores = {"ground_truth": names[0], "prediction": names[1], "shape": "x".join(map(str, true.shape)),
              "iou_threshold": float(iou_threshold), "tp": m.tp, "fp": m.fp, "fn": m.fn}
    scores |= {k: row[k] for k in ("n_true", "n_pred", "ap50", "ap75", "map", "dice", "tp50", "fp50", "fn50")}
    scores["seconds"] = time.perf_counter() - t0
    yield Progress(4, 4, "done")
    return Comparison(scores, m.false_positives, m.false_negatives, fp, fn)
