"""Fine-tuning data: 2D training crops and held-out validation items of the annotated regions, scoring,
and the post-processing thresholds tuned on the held-out part.

Part of :mod:`napari_medseg.training.finetune`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..regions import Region
from .inputs import TrainingPair

#: Image context (pixels) kept around each region, seen by the network but never in the loss.
CONTEXT = 48
#: Relative pixel-size difference above which images are resampled (as the engine does).
RESAMPLE_TOLERANCE = 0.05


@dataclass
class ValItem:
    """One held-out validation crop (2D).

    Attributes
    ----------
    image : ndarray
        ``(C, H, W)``, normalised, with context around the inner crop.
    labels : ndarray of int32
        ``(h, w)`` inner crop, 0 outside the validation mask.
    mask : ndarray of bool
        ``(h, w)`` validation mask.
    inner : tuple of slice
        Where the inner crop lies in ``image``.
    """

    image: np.ndarray  # (C, H, W) normalised, with context
    labels: np.ndarray  # (h, w) inner crop, 0 outside the val mask
    mask: np.ndarray  # (h, w) bool
    inner: tuple[slice, slice]  # where the inner crop lies in ``image``


def _grow(box: tuple[slice, ...], shape: Sequence[int], m: int) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - m), min(n, s.stop + m)) for s, n in zip(box, shape, strict=False))


def build_units(pairs: list[TrainingPair], regions: list[Region], norm_spec: dict | None, target_ps, mode: str
                ) -> tuple[list, list[ValItem]]:
    """Training samples and validation items, as 2D crops of the regions.

    Parameters
    ----------
    pairs : list of TrainingPair
    regions : list of Region
        One per pair (its box, mask and validation part).
    norm_spec : dict, optional
        The model card's input normalisation.
    target_ps : sequence of float, optional
        Pixel size (Y, X) trained at; images whose pixel size differs by more
        than :data:`RESAMPLE_TOLERANCE` are resampled to it.
    mode : {"instance", "semantic"}

    Returns
    -------
    train : list of :class:`~napari_medseg.training.data.Sample`
        Normalised crops (with :data:`CONTEXT` pixels of context, weight 0
        outside the training part); 3D regions give one per slice.
    val : list of ValItem
        The held-out parts.
    """
    from ...inference.normalize import normalization_limits
    from ..data import Sample

    train, val = [], []
    for pair, reg in zip(pairs, regions, strict=False):
        if reg.source == "empty":
            continue
        nd = pair.labels.ndim
        axes = ("ZYX" if nd == 3 else "YX") + ("C" if pair.channels > 1 or pair.image.ndim > nd else "")
        channels = list(range(pair.channels)) if "C" in axes else None
        low, high = normalization_limits(pair.image, axes, norm_spec, channels)
        ctx = _grow(reg.box, pair.labels.shape, CONTEXT)
        if nd == 3:  # Z is not grown: slices are separate 2D samples
            ctx = (reg.box[0], *ctx[1:])
        img = np.asarray(pair.image[ctx], dtype=np.float32)
        if img.ndim == nd:
            img = img[..., None]
        if low is not None:
            img = (img - low) / np.maximum(high - low, 1e-6)
        img = img.astype(np.float32, copy=False)
        lab = np.asarray(pair.labels[ctx])
        # region masks in the context crop; labels outside the region are never read
        off = tuple(b.start - c.start for b, c in zip(reg.box, ctx, strict=False))
        inner = tuple(slice(o, o + s) for o, s in zip(off, reg.mask.shape, strict=False))
        m_all = np.zeros(lab.shape, bool)
        m_all[inner] = reg.mask
        m_val = np.zeros(lab.shape, bool)
        if reg.val is not None:
            m_val[inner] = reg.val
        lab = np.where(m_all, lab, 0).astype(np.int32)
        m_train = m_all & ~m_val
        zoom = None
        if target_ps is not None and pair.scale_yx is not None:
            z = (pair.scale_yx[0] / target_ps[0], pair.scale_yx[1] / target_ps[1])
            if any(abs(v - 1.0) > RESAMPLE_TOLERANCE for v in z):
                zoom = z
        for z in range(img.shape[0]) if nd == 3 else [None]:
            if z is None:
                im2, lab2, tr2, va2 = img, lab, m_train, m_val
            else:
                im2, lab2, tr2, va2 = img[z], lab[z], m_train[z], m_val[z]
            if zoom is not None:
                im2, lab2, tr2, va2 = zoom_image_and_masks(im2, lab2, tr2, va2, zoom)
            name = pair.name if z is None else f"{pair.name} z={reg.box[0].start + z}"
            if tr2.any():
                painted = bool(lab2[tr2].any())
                train.append(Sample(im2 if im2.shape[-1] > 1 else im2[..., 0], lab2, tr2.astype(np.float32),
                                    name=name, group="painted" if painted else "background"))
            if va2.any():
                val.append(val_item(im2, lab2, va2))
    return train, val


def zoom_image_and_masks(im, lab, tr, va, zoom):
    """Resample a ``(Y, X, C)`` image (linear) and its labels and train/val masks (nearest) by ``zoom`` (Y, X)."""
    from scipy import ndimage as ndi

    im = ndi.zoom(im, (*zoom, 1), order=1, mode="mirror")
    out = [ndi.zoom(a.astype(np.uint8) if a.dtype == bool else a, zoom, order=0, mode="nearest") for a in (lab, tr, va)]
    return im, out[0], out[1].astype(bool), out[2].astype(bool)


def val_item(im: np.ndarray, lab: np.ndarray, va: np.ndarray) -> ValItem:
    """The validation item of a 2D crop: its held-out part with 32 pixels of context.

    Parameters
    ----------
    im : ndarray
        ``(H, W, C)`` normalised image.
    lab : ndarray of int
        ``(H, W)`` labels.
    va : ndarray of bool
        ``(H, W)`` validation mask (some pixel True).

    Returns
    -------
    ValItem
    """
    from ..regions import box_of

    box = box_of(va)
    ctx = _grow(box, va.shape, 32)
    inner = tuple(slice(b.start - c.start, b.stop - c.start) for b, c in zip(box, ctx, strict=False))
    chw = np.ascontiguousarray(np.moveaxis(im[ctx], -1, 0))
    mask = va[box]
    return ValItem(chw, np.where(mask, lab[box], 0).astype(np.int32), mask, inner)


def validate(net, mode: str, items: list[ValItem], postprocess: dict) -> dict:
    """Validation scores on the held-out parts.

    ``score`` is AP@0.5 pooled over all held-out parts (TP / (TP + FP + FN),
    objects cut by the part's edge included) for instance models, the mean
    foreground-class Dice (pooled pixels) for semantic ones.  ``key`` orders
    epochs (AP@0.5, then foreground Dice, for instance).

    Parameters
    ----------
    net : torch.nn.Module
        Evaluated in eval mode; its training mode is restored.
    mode : {"instance", "semantic"}
    items : list of ValItem
    postprocess : dict
        The card's post-processing (instance: watershed thresholds, ``min_size``; semantic:
        ``keep_largest``, ``fill_holes``, ``min_size`` of :mod:`napari_medseg.inference.classes`).

    Returns
    -------
    dict
        ``score`` and ``key``; instance: also ``ap50`` and ``dice``; semantic:
        ``dice`` and ``dice_per_class``.
    """
    from ...analysis.metrics import counts

    was_training = net.training
    net.eval()
    try:
        if mode == "instance":
            from ...inference.instances import instances_from_maps
            from ..loop import predict_maps

            pp = {k: postprocess[k] for k in ("fg_threshold", "seed_threshold", "min_size") if k in postprocess}
            tp = fp = fn = 0
            inter = tot = 0
            for it in items:
                fg, dist = predict_maps(net, it.image)
                fg, dist = fg[it.inner], dist[it.inner]
                pred = np.where(it.mask, instances_from_maps(fg, dist, **pp), 0)
                c = counts(it.labels, pred, (0.5,))[0]
                tp, fp, fn = tp + c[0], fp + c[1], fn + c[2]
                a, b = it.labels > 0, pred > 0
                inter += int((a & b).sum())
                tot += int(a.sum() + b.sum())
            ap = 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)
            dice = 1.0 if tot == 0 else 2 * inter / tot
            return {"score": float(ap), "ap50": float(ap), "dice": float(dice), "key": (float(ap), float(dice))}
        from ...inference.classes import postprocess_classes, semantic_options
        from ..semantic import predict_classes

        opts = semantic_options(postprocess)  # keep the largest lesion, fill holes... as the engine will
        k = int(net.head.out_channels)
        inter, tot = np.zeros(k), np.zeros(k)
        for it in items:
            pred = postprocess_classes(predict_classes(net, it.image), **opts)[it.inner]
            t, p = it.labels[it.mask], pred[it.mask]
            inter += np.bincount(t[t == p], minlength=k)[:k]
            tot += np.bincount(t, minlength=k)[:k] + np.bincount(p, minlength=k)[:k]
        present = [i for i in range(1, k) if tot[i] > 0]
        per = {i: 2 * inter[i] / tot[i] for i in present}
        d = float(np.mean(list(per.values()))) if per else 1.0
        return {"score": d, "dice": d, "dice_per_class": {int(i): float(v) for i, v in per.items()}, "key": (d,)}
    finally:
        net.train(was_training)


#: Post-processing thresholds tried on the held-out annotation at the end (instance mode).
TUNE_FG = (0.4, 0.5, 0.6)
TUNE_SEED = (0.3, 0.4, 0.5, 0.6, 0.7)


def tune_postprocess(net, items: list[ValItem], postprocess: dict) -> tuple[dict, float, float]:
    """Pick ``fg_threshold`` / ``seed_threshold`` maximising pooled AP@0.5 on the held-out parts.

    The network maps are computed once; the seeded watershed is re-run for
    each pair of thresholds (3 x 5).  The card's values are kept unless
    another pair is strictly better.

    Returns
    -------
    postprocess : dict
        ``postprocess`` with the chosen thresholds.
    ap_before, ap_after : float
        Pooled AP@0.5 with the given and the chosen thresholds.
    """
    from ...analysis.metrics import counts
    from ...inference.instances import instances_from_maps
    from ..loop import predict_maps

    was_training = net.training
    net.eval()
    try:
        maps = [tuple(m[it.inner] for m in predict_maps(net, it.image)) for it in items]
    finally:
        net.train(was_training)
    min_size = postprocess.get("min_size", 16)

    def ap(fg_t: float, seed_t: float) -> float:
        c = np.zeros(3, np.int64)
        for (fg, dist), it in zip(maps, items, strict=False):
            pred = np.where(it.mask, instances_from_maps(fg, dist, fg_threshold=fg_t, seed_threshold=seed_t,
                                                         min_size=min_size), 0)
            c += counts(it.labels, pred, (0.5,))[0]
        return 1.0 if c.sum() == 0 else float(c[0] / c.sum())

    cur = (float(postprocess.get("fg_threshold", 0.5)), float(postprocess.get("seed_threshold", 0.5)))
    before = ap(*cur)
    best, best_ap = cur, before
    for fg_t in TUNE_FG:
        for seed_t in TUNE_SEED:
            a = ap(fg_t, seed_t)
            if a > best_ap + 1e-9:
                best, best_ap = (fg_t, seed_t), a
    return {**postprocess, "fg_threshold": best[0], "seed_threshold": best[1]}, before, best_ap
