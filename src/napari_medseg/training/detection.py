"""Train a CenterNet-style box detector on the U-Net: data, targets, augmentation, loss, loop.

What the network learns (see :mod:`napari_medseg.analysis.box_detection` for the
decoding, the exact inverse of :func:`encode_targets`): on the image
block-averaged by ``downsample`` (network pixels),

* per class a heat map with an elliptical Gaussian at each box centre, 1 at
  the pixel holding the centre (TTFNet's box-shaped Gaussian, Liu et al.
  2020: ``sigma = alpha * size / 6`` per axis, ``alpha = 0.54``), trained
  with CenterNet's penalty-reduced focal loss (Zhou et al. 2019, eq. 1);
* ``log`` height and width of the box, L1, at centre pixels only;
* the sub-pixel centre offset from that pixel's corner, L1, at centre pixels.

Incomplete annotations
----------------------
Some classes are not annotated everywhere (BCCD: many red cells have no
box).  For such classes (``uncertain_classes``) a heat-map *negative* pixel
counts with weight ``uncertain_weight`` (< 1) except inside annotated boxes
(of any class), where the annotation is trusted; positives keep weight 1.
So an unannotated red cell costs the network less when it fires on it,
while a second peak inside an annotated cell, or a red-cell peak on a white
cell, costs the full price.  Objects cut by a training crop to less than
:data:`MIN_VISIBLE` of their area are not targets; their clipped box is
ignored (weight 0) in their class's heat map.

All random draws come from one ``numpy.random.Generator`` (and torch's
generator, seeded the same), so a seed fixes the data order and
augmentations; the learning-rate schedule follows wall-clock time when a
time budget is given, which makes runs with a time budget only
approximately reproducible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, ReaderError
from ..progress import CancelToken, Progress
from .steps import StepBudget, StepLoop, StepRunner

#: TTFNet's Gaussian radius factor: sigma = ALPHA * size / 6.
ALPHA = 0.54
#: Smallest Gaussian sigma (network pixels).
MIN_SIGMA = 0.6
#: An object cut by a crop keeps its (clipped) box when at least this
#: fraction of its area is inside; otherwise it is ignored.
MIN_VISIBLE = 0.4
#: Normalisation of 8-bit RGB input: (x - 0) / (255 - 0), supported by the
#: inference engine's :func:`~napari_medseg.inference.normalize.normalization_limits`.
RGB8_NORMALIZATION = {"kind": "fixed", "low": 0.0, "high": 255.0}
#: Heat-map bias at initialisation: sigmoid(-2.19) = 0.1 (CenterNet's prior).
HEAT_PRIOR_BIAS = -2.19
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
#: The :class:`Targets` fields, in the order :func:`detection_loss` takes them.
TARGET_FIELDS = ("heat", "log_size", "offset", "center", "weight")


# --------------------------------------------------------------------------- data


@dataclass
class DetectionSample:
    """One annotated image.

    Attributes
    ----------
    image : ndarray of uint8, (Y, X, 3)
        RGB image.
    boxes : ndarray of float64, (N, 4)
        ``[y0, x0, y1, x1]`` in image pixels (pixel-edge coordinates).
    class_ids : ndarray of int64, (N,)
        Index of each box's class.
    name : str
    """

    image: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.class_ids = np.asarray(self.class_ids, np.int64).reshape(-1)
        if len(self.boxes) != len(self.class_ids):
            raise ParameterError(f"sample {self.name!r}: {len(self.boxes)} boxes but {len(self.class_ids)} class ids")


def load_voc_folder(folder: str | Path, class_names: Sequence[str], min_size: float = 2.0
                    ) -> tuple[list[DetectionSample], dict[str, int]]:
    """Read ``folder/images/*`` with their Pascal VOC boxes ``folder/annotations/<stem>.xml``.

    Parameters
    ----------
    folder : path
        Holds ``images/`` (JPEG/PNG/TIFF RGB) and ``annotations/`` (VOC XML).
    class_names : sequence of str
        Classes to keep (others are dropped and counted).
    min_size : float
        Boxes less than this high or wide (pixels) are dropped as degenerate.

    Returns
    -------
    samples : list of DetectionSample
    dropped : dict
        ``{"degenerate": n, "other_class": n}`` boxes left out.
    """
    from skimage.io import imread

    from ..analysis.boxes import read_voc

    folder = Path(folder)
    img_dir, ann_dir = folder / "images", folder / "annotations"
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise ReaderError(f"{folder} must hold images/ and annotations/ folders")
    names = list(class_names)
    out, dropped = [], {"degenerate": 0, "other_class": 0}
    for p in sorted(img_dir.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        boxes, classes = read_voc(ann_dir / (p.stem + ".xml"))
        img = np.asarray(imread(p))
        if img.ndim != 3 or img.shape[2] < 3:
            raise ReaderError(f"{p} is not an RGB image (shape {img.shape})")
        img = np.ascontiguousarray(img[..., :3])
        keep_b, keep_c = [], []
        for b, c in zip(boxes, classes, strict=False):
            if c not in names:
                dropped["other_class"] += 1
                continue
            b = np.clip(b, 0, [img.shape[0], img.shape[1], img.shape[0], img.shape[1]])
            if b[2] - b[0] < min_size or b[3] - b[1] < min_size:
                dropped["degenerate"] += 1
                continue
            keep_b.append(b)
            keep_c.append(names.index(c))
        out.append(DetectionSample(img, np.asarray(keep_b).reshape(-1, 4), np.asarray(keep_c, np.int64), p.stem))
    if not out:
        raise ReaderError(f"no images found in {img_dir}")
    return out, dropped


def prepare_sample(sample: DetectionSample, downsample: int, normalization: dict | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Network-grid input and boxes of a sample: what the detector sees at inference.

    Returns
    -------
    image : ndarray of float32, (3, ceil(Y/d), ceil(X/d))
        Normalised and block-averaged exactly as :func:`~napari_medseg.analysis.box_detection.detect_iter` does.
    boxes : ndarray of float64, (N, 4)
        Boxes in network pixels (divided by ``downsample``).
    """
    from ..analysis.box_detection import downsample_mean
    from ..inference.normalize import normalization_limits

    spec = normalization if normalization is not None else RGB8_NORMALIZATION
    # Not data.prepare_image: that one returns a C-contiguous copy, and the float32 block
    # mean of downsample_mean then sums in another order (1-ulp differences); this
    # (Y, X, C)-strided copy gives bit for bit the input detect_iter feeds the network.
    img = np.moveaxis(np.asarray(sample.image), -1, 0).astype(np.float32)  # (C, Y, X), a copy
    low, high = normalization_limits(sample.image, "YXC", spec)
    if low is not None:  # as ArraySource.normalize does at inference
        img -= low.reshape(-1, 1, 1)
        img *= (1.0 / np.maximum(high - low, 1e-6)).reshape(-1, 1, 1).astype(np.float32)
    return downsample_mean(img, downsample), sample.boxes / float(downsample)


# --------------------------------------------------------------------------- targets


@dataclass
class Targets:
    """Training targets on a network grid of shape (H, W) for K classes.

    ``heat`` (K, H, W): Gaussian peaks, exactly 1 at centre pixels;
    ``log_size`` (2, H, W) and ``offset`` (2, H, W): regression targets, valid
    where ``center`` (H, W) is 1; ``weight`` (K, H, W): heat-map loss weight
    (0 ignored, ``uncertain_weight`` for doubtful negatives, else 1).
    """

    heat: np.ndarray
    log_size: np.ndarray
    offset: np.ndarray
    center: np.ndarray
    weight: np.ndarray


def encode_targets(
    shape: Sequence[int],
    boxes: np.ndarray,
    class_ids: np.ndarray,
    n_classes: int,
    *,
    uncertain: Sequence[int] = (),
    uncertain_weight: float = 1.0,
    ignore_boxes: np.ndarray | None = None,
    ignore_ids: np.ndarray | None = None,
) -> Targets:
    """Heat-map, size and offset targets for boxes given in network pixels.

    Parameters
    ----------
    shape : (int, int)
        Network grid (H, W).
    boxes : ndarray, (N, 4)
        ``[y0, x0, y1, x1]`` in network pixels; centres must lie in the grid.
    class_ids : ndarray of int, (N,)
    n_classes : int
    uncertain : sequence of int
        Classes whose negatives outside annotated boxes get ``uncertain_weight``.
    uncertain_weight : float
    ignore_boxes, ignore_ids : ndarray, optional
        Boxes (and their classes) whose region is ignored in that class's heat map.

    Returns
    -------
    Targets
    """
    h, w = int(shape[0]), int(shape[1])
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    class_ids = np.asarray(class_ids, np.int64).reshape(-1)
    heat = np.zeros((n_classes, h, w), np.float32)
    log_size = np.zeros((2, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    center = np.zeros((h, w), np.float32)
    weight = np.ones((n_classes, h, w), np.float32)
    if len(uncertain) and uncertain_weight != 1.0:
        trusted = np.zeros((h, w), bool)
        for b in boxes:
            trusted[_box_slices(b, h, w)] = True
        for k in uncertain:
            weight[k][~trusted] = uncertain_weight
    if ignore_boxes is not None:
        for b, k in zip(np.asarray(ignore_boxes).reshape(-1, 4), np.asarray(ignore_ids).reshape(-1), strict=False):
            weight[int(k)][_box_slices(b, h, w)] = 0.0
    yy = np.arange(h, dtype=np.float64)[:, None]
    xx = np.arange(w, dtype=np.float64)[None, :]
    for b, k in zip(boxes, class_ids, strict=False):
        cy, cx = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        py, px = int(min(max(math.floor(cy), 0), h - 1)), int(min(max(math.floor(cx), 0), w - 1))
        bh, bw = max(b[2] - b[0], 1e-3), max(b[3] - b[1], 1e-3)
        sy, sx = max(ALPHA * bh / 6, MIN_SIGMA), max(ALPHA * bw / 6, MIN_SIGMA)
        ry, rx = int(math.ceil(3 * sy)), int(math.ceil(3 * sx))
        ys, xs = slice(max(py - ry, 0), min(py + ry + 1, h)), slice(max(px - rx, 0), min(px + rx + 1, w))
        g = np.exp(-((yy[ys] - py) ** 2) / (2 * sy * sy) - ((xx[:, xs] - px) ** 2) / (2 * sx * sx))
        np.maximum(heat[k, ys, xs], g.astype(np.float32), out=heat[k, ys, xs])
        heat[k, py, px] = 1.0
        weight[k, py, px] = 1.0
        log_size[:, py, px] = (math.log(bh), math.log(bw))
        offset[:, py, px] = (cy - py, cx - px)
        center[py, px] = 1.0
    return Targets(heat, log_size, offset, center, weight)


def _box_slices(b, h: int, w: int) -> tuple[slice, slice]:
    return (slice(int(max(math.floor(b[0]), 0)), int(min(math.ceil(b[2]), h))),
            slice(int(max(math.floor(b[1]), 0)), int(min(math.ceil(b[3]), w))))


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class DetectionAugment:
    """Augmentations of a (3, H, W) float image in [0, 1] with its boxes (network pixels).

    Attributes
    ----------
    crop : int
        Side of the square training crop (multiple of the U-Net divisor).
    scale : (float, float)
        Range of the zoom factor (log-uniform); 1.25 shows objects 25 % larger.
    flip, rot90 : bool
        Random flips and quarter turns (height and width swap).
    hue, saturation, value, contrast : float
        Colour jitter: hue shift in ``[-hue, hue]`` (fraction of the circle),
        saturation and value factors in ``1 +- saturation / value``, contrast
        around the mean in ``1 +- contrast``.
    noise : float
        Largest standard deviation of additive Gaussian noise.
    """

    crop: int = 224
    scale: tuple[float, float] = (0.8, 1.25)
    flip: bool = True
    rot90: bool = True
    hue: float = 0.04
    saturation: float = 0.25
    value: float = 0.2
    contrast: float = 0.2
    noise: float = 0.02


def augment_sample(image: np.ndarray, boxes: np.ndarray, class_ids: np.ndarray, rng: np.random.Generator,
                   cfg: DetectionAugment) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random zoom + crop, flips, quarter turns and colour jitter of one image and its boxes.

    The zoom and the crop are one bilinear resampling of a random square
    source window of side ``crop / zoom`` (:func:`scipy.ndimage.affine_transform`);
    where the window leaves the image it is filled with the image's median
    colour (a mirror would show cells that have no box).

    Parameters
    ----------
    image : ndarray of float32, (3, H, W)
        Normalised RGB on the network grid.
    boxes : ndarray, (N, 4)
        Boxes in the same pixels.
    class_ids : ndarray of int, (N,)
    rng : numpy Generator
    cfg : DetectionAugment

    Returns
    -------
    image : ndarray of float32, (3, crop, crop)
    boxes, class_ids : kept boxes (clipped to the crop) and their classes
    ignore_boxes, ignore_ids : boxes cut to less than :data:`MIN_VISIBLE`
    """
    from scipy.ndimage import affine_transform

    c, h, w = image.shape
    P = int(cfg.crop)
    s = float(np.exp(rng.uniform(np.log(cfg.scale[0]), np.log(cfg.scale[1]))))
    src = P / s  # source window side, network pixels
    oy = rng.uniform(0, h - src) if src <= h else rng.uniform(h - src, 0)
    ox = rng.uniform(0, w - src) if src <= w else rng.uniform(w - src, 0)
    f = src / P
    fill = np.median(image.reshape(c, -1), axis=1)
    out = np.empty((c, P, P), np.float32)
    for ch in range(c):  # output index i (centre i + 0.5) reads source index oy + (i + 0.5) * f - 0.5
        affine_transform(image[ch], (f, f), offset=(oy + 0.5 * f - 0.5, ox + 0.5 * f - 0.5), output_shape=(P, P),
                         output=out[ch], order=1, mode="constant", cval=float(fill[ch]), prefilter=False)
    b = (np.asarray(boxes, np.float64).reshape(-1, 4) - np.array([oy, ox, oy, ox])) / f
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    cb = np.clip(b, 0, P)
    vis = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]) / np.maximum(area, 1e-9)
    keep = vis >= MIN_VISIBLE
    ign = (~keep) & (vis > 0)
    ids = np.asarray(class_ids, np.int64).reshape(-1)
    kb, kid, ib, iid = cb[keep], ids[keep], cb[ign], ids[ign]
    # flips and quarter turns (exact)
    if cfg.flip and rng.random() < 0.5:
        out = out[:, ::-1]
        kb, ib = (np.stack([P - x[:, 2], x[:, 1], P - x[:, 0], x[:, 3]], 1) for x in (kb, ib))
    if cfg.flip and rng.random() < 0.5:
        out = out[:, :, ::-1]
        kb, ib = (np.stack([x[:, 0], P - x[:, 3], x[:, 2], P - x[:, 1]], 1) for x in (kb, ib))
    if cfg.rot90:
        for _ in range(int(rng.integers(0, 4))):
            # counter-clockwise quarter turn of a P x P image: (y, x) -> (P - x, y)
            out = np.rot90(out, 1, axes=(1, 2))
            kb, ib = (np.stack([P - x[:, 3], x[:, 0], P - x[:, 1], x[:, 2]], 1) for x in (kb, ib))
    out = _colour_jitter(np.ascontiguousarray(out), rng, cfg)
    return out, kb, kid, ib, iid


def colour_matrix(hue: float, saturation: float) -> np.ndarray:
    """3x3 RGB matrix: rotation by ``hue`` turns about the grey axis, then saturation scaling.

    A linear stand-in for an HSV jitter (one matrix product instead of two
    colour-space conversions): grey stays grey, ``saturation`` 0 gives grey.
    """
    a = 2 * np.pi * hue
    u = np.ones(3) / np.sqrt(3)
    ux = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    rot = np.cos(a) * np.eye(3) + np.sin(a) * ux + (1 - np.cos(a)) * np.outer(u, u)
    grey = np.full((3, 3), 1 / 3)
    sat = grey + saturation * (np.eye(3) - grey)
    return sat @ rot


def _colour_jitter(img: np.ndarray, rng: np.random.Generator, cfg: DetectionAugment) -> np.ndarray:
    m = colour_matrix(rng.uniform(-cfg.hue, cfg.hue), rng.uniform(1 - cfg.saturation, 1 + cfg.saturation))
    m = m * rng.uniform(1 - cfg.value, 1 + cfg.value)
    x = np.einsum("ij,jyx->iyx", m.astype(np.float32), img)
    mean = x.mean()
    x = (x - mean) * np.float32(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)) + mean
    if cfg.noise > 0:
        x += rng.normal(0, rng.uniform(0, cfg.noise), x.shape).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------------- loss


def detection_loss(out, heat, log_size, offset, center, weight, *, size_weight: float = 1.0,
                   offset_weight: float = 1.0):
    """CenterNet loss: penalty-reduced focal loss on the heat maps + L1 on size and offset.

    Parameters
    ----------
    out : Tensor, (B, K + 4, H, W)
        Network output (heat logits, log-size, offset).
    heat, weight : Tensor, (B, K, H, W)
    log_size, offset : Tensor, (B, 2, H, W)
    center : Tensor, (B, H, W)

    Returns
    -------
    loss : Tensor (scalar)
    parts : dict of float
        ``heat``, ``size``, ``offset``.

    Notes
    -----
    Focal loss (alpha = 2, beta = 4): ``-(1 - p)^2 log p`` at centre pixels
    and ``-(1 - y)^4 p^2 log(1 - p)`` elsewhere, each times ``weight``,
    summed and divided by the number of centres in the batch.
    """
    import torch
    import torch.nn.functional as F

    k = heat.shape[1]
    logits = out[:, :k].float()
    p = torch.sigmoid(logits)
    pos = heat >= 1.0
    n_pos = pos.sum().clamp_min(1).float()
    pos_term = -F.logsigmoid(logits) * (1 - p) ** 2
    neg_term = -F.logsigmoid(-logits) * p ** 2 * (1 - heat) ** 4
    focal = (torch.where(pos, pos_term, neg_term) * weight).sum() / n_pos
    m = center.unsqueeze(1)
    n_c = center.sum().clamp_min(1) * 2
    l_size = (torch.abs(out[:, k:k + 2].float() - log_size) * m).sum() / n_c
    l_off = (torch.abs(out[:, k + 2:k + 4].float() - offset) * m).sum() / n_c
    loss = focal + size_weight * l_size + offset_weight * l_off
    return loss, {"heat": float(focal.detach()), "size": float(l_size.detach()), "offset": float(l_off.detach())}


# --------------------------------------------------------------------------- model card


def detection_card(name: str, class_names: Sequence[str], *, base_channels: int = 16, depth: int = 4,
                   norm: str = "batch", downsample: int = 2, normalization: dict | None = None,
                   score_threshold: float = 0.3, max_detections: int = 1000, description: str = ""):
    """A :class:`~napari_medseg.models.spec.ModelCard` for a detection U-Net (3-channel RGB input)."""
    from ..models.spec import ModelCard

    names = [str(c) for c in class_names]
    return ModelCard(
        name=name,
        description=description,
        architecture={"type": "unet", "dims": 2, "in_channels": 3, "out_channels": len(names) + 4,
                      "base_channels": int(base_channels), "depth": int(depth), "norm": norm},
        input={"channels": 3, "color": "rgb",
               "normalization": dict(normalization or RGB8_NORMALIZATION),
               "downsample": int(downsample), "pixel_size": None, "pixel_unit": "px"},
        output={"kind": "detection", "class_names": names,
                "channels": [f"heat:{c}" for c in names] + ["log_height", "log_width", "offset_y", "offset_x"],
                "box_format": "[y0, x0, y1, x1] image pixels, pixel-edge coordinates",
                "postprocess": {"score_threshold": float(score_threshold), "max_detections": int(max_detections),
                                "peaks": "3x3 max-pool, no NMS", "downsample": int(downsample)}},
    )


def init_detection_head(net, n_classes: int, mean_log_size: float = 3.0) -> None:
    """CenterNet initialisation of the last 1x1 convolution: heat prior 0.1, mean log-size, offset 0.5."""
    import torch

    with torch.no_grad():
        net.head.weight.mul_(0.1)
        net.head.bias.zero_()
        net.head.bias[:n_classes] = HEAT_PRIOR_BIAS
        net.head.bias[n_classes:n_classes + 2] = mean_log_size
        net.head.bias[n_classes + 2:n_classes + 4] = 0.5


# --------------------------------------------------------------------------- training loop


@dataclass
class DetectionTrainConfig:
    """Hyper-parameters of box-detection training, :func:`train_detector_iter` (defaults: the shipped BCCD model).

    Segmentation training has its own :class:`~.loop.SegmentationTrainConfig`.
    """

    name: str = "bccd"
    description: str = ""
    base_channels: int = 16
    depth: int = 4
    norm: str = "batch"
    downsample: int = 4
    batch_size: int = 6
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    minutes: float | None = 30.0
    max_steps: int | None = None
    eval_every_s: float = 180.0
    eval_score_threshold: float = 0.05
    score_threshold: float = 0.3
    uncertain_classes: tuple[str, ...] = ("RBC",)
    uncertain_weight: float = 0.25
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    precision: str = "auto"
    augment: DetectionAugment = field(default_factory=lambda: DetectionAugment(crop=128))


def _predict_boxes(net, images: Sequence[np.ndarray], n_classes: int, downsample: int, threshold: float,
                   device) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Whole-image inference on prepared (3, h, w) inputs (h, w multiples of the divisor after padding)."""
    import torch

    from ..analysis.box_detection import decode
    from ..inference.predictor import predict_whole

    def heat_sigmoid(t):  # class heat maps only; log-sizes and offsets stay raw
        t[:, :n_classes] = torch.sigmoid(t[:, :n_classes])
        return t

    out = []
    for img in images:
        c, h, w = img.shape
        # the padded grid is kept: the peak test near the bottom/right edges sees the mirrored context
        y = predict_whole(net, img, activation=heat_sigmoid, crop=False, device=device)
        b, k, s = decode(y[:n_classes], y[n_classes:n_classes + 2], y[n_classes + 2:n_classes + 4],
                         score_threshold=threshold, downsample=downsample,
                         region=(slice(0, h), slice(0, w)))
        out.append((b, k, s))
    return out


def evaluate_model(net, samples: Sequence[DetectionSample], prepared: Sequence[np.ndarray], class_names: Sequence[str],
                   downsample: int, threshold: float = 0.05, device="cpu") -> dict[str, float]:
    """AP at IoU 0.5 per class on samples (ground truth in image pixels); also ``mAP``."""
    from ..analysis.boxes import evaluate_detections

    was_training = net.training
    net.eval()
    preds = _predict_boxes(net, prepared, len(class_names), downsample, threshold, device)
    net.train(was_training)
    dets = []
    for (b, k, s), smp in zip(preds, samples, strict=False):
        h, w = smp.image.shape[:2]
        b = np.clip(b, 0, [h, w, h, w])  # as detect_iter clips
        dets.append((b, [class_names[i] for i in k], s))
    gts = [(smp.boxes, [class_names[i] for i in smp.class_ids]) for smp in samples]
    scores = evaluate_detections(dets, gts, class_names, 0.5)
    res = {f"AP_{c}": float(v.ap) for c, v in scores.items()}
    res["mAP"] = float(np.nanmean([v.ap for v in scores.values()]))
    return res


def train_detector_iter(
    train: Sequence[DetectionSample],
    class_names: Sequence[str],
    out_dir: str | Path,
    *,
    holdout: Sequence[DetectionSample] = (),
    config: DetectionTrainConfig | None = None,
    card_extra: dict[str, Any] | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, dict[str, Any]]:
    """Train a detection U-Net, yielding progress; saves the best model into ``out_dir``.

    Parameters
    ----------
    train : sequence of DetectionSample
        Training images and boxes.
    class_names : sequence of str
        Class of each id.
    out_dir : path
        Model folder (``model.json`` + ``weights.safetensors``); written at
        every evaluation that improves the holdout mAP (each evaluation when
        there is no holdout), so a run that is stopped still leaves a model.
    holdout : sequence of DetectionSample
        Images for model selection (AP at IoU 0.5, mean over classes).
    config : DetectionTrainConfig
    card_extra : dict, optional
        Extra ``training`` entries for the card (data source, licence...).
    cancel : CancelToken, optional

    Yields
    ------
    Progress
        One per step; ``info`` has ``loss``, its parts, ``lr`` and, after an
        evaluation, the holdout scores.

    Returns
    -------
    dict
        ``steps``, ``seconds``, ``best`` (holdout scores of the saved model),
        ``history`` (evaluations), ``out_dir``.
    """
    import torch

    from ..inference.predictor import autocast_dtype
    from ..models.device import select_device
    from ..models.spec import build_network, save_model

    cfg = config or DetectionTrainConfig()
    if cfg.minutes is None and cfg.max_steps is None:
        raise ParameterError("give a time budget (minutes) or a number of steps (max_steps)")
    if not train:
        raise ParameterError("no training images")
    names = [str(c) for c in class_names]
    K = len(names)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    card = detection_card(cfg.name, names, base_channels=cfg.base_channels, depth=cfg.depth, norm=cfg.norm,
                          downsample=cfg.downsample, score_threshold=cfg.score_threshold,
                          description=cfg.description)
    net = build_network(card)
    dev, reason = select_device(cfg.device)
    amp = autocast_dtype(dev, cfg.precision)  # bfloat16 on CUDA and AMX CPUs (~2x faster), else float32
    if cfg.augment.crop % net.divisor:
        raise ParameterError(f"crop {cfg.augment.crop} must be a multiple of the network divisor {net.divisor}")
    prepared = [prepare_sample(s, cfg.downsample) for s in train]
    hold_in = [prepare_sample(s, cfg.downsample)[0] for s in holdout]
    all_sizes = np.concatenate([b[:, 2:] - b[:, :2] for _, b in prepared if len(b)] or [np.ones((1, 2)) * 20])
    init_detection_head(net, K, float(np.mean(np.log(np.maximum(all_sizes, 1e-3)))))
    # channels-last on the CPU (faster oneDNN convolutions); no loss scaling (bfloat16 does not need it)
    runner = StepRunner.create(net, dev, reason, lr=cfg.lr, weight_decay=cfg.weight_decay, amp_dtype=amp,
                               clip_grad_norm=10.0)
    net.train()
    uncertain = [names.index(c) for c in cfg.uncertain_classes if c in names]

    def batches() -> Generator[tuple[np.ndarray, dict[str, np.ndarray]], None, None]:
        """Endless ``(image (N, 3, crop, crop), {target field: (N, ...)})`` batches drawn from ``rng``."""
        while True:
            xs, tg = [], []
            for i in rng.integers(0, len(prepared), cfg.batch_size):
                img, b = prepared[int(i)]
                x, kb, kid, ib, iid = augment_sample(img, b, train[int(i)].class_ids, rng, cfg.augment)
                xs.append(x)
                tg.append(encode_targets(x.shape[1:], kb, kid, K, uncertain=uncertain,
                                         uncertain_weight=cfg.uncertain_weight, ignore_boxes=ib, ignore_ids=iid))
            yield np.stack(xs), {k: np.stack([getattr(t, k) for t in tg]) for k in TARGET_FIELDS}

    def batch_loss(batch):
        x, t = batch
        return x, lambda out: detection_loss(out, *(runner.tensor(t[k]) for k in TARGET_FIELDS))

    def lr_at(f: float, step: int) -> float:
        return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps)) * 0.5 * (1 + math.cos(math.pi * min(f, 1.0)))

    budget = StepBudget(cfg.max_steps, cfg.minutes)
    t0 = budget.t0
    total = int(cfg.max_steps) if cfg.max_steps is not None else 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    last_eval = t0
    step = 0
    out_dir = Path(out_dir)

    def evaluate_and_save(final: bool) -> dict[str, Any]:
        nonlocal best
        ev: dict[str, Any] = {"step": step, "seconds": round(time.perf_counter() - t0, 1)}
        if holdout:
            ev.update(evaluate_model(net, holdout, hold_in, names, cfg.downsample, cfg.eval_score_threshold, dev))
        history.append(ev)
        better = best is None or not holdout or ev["mAP"] > best["mAP"]
        if better:
            best = ev
            card.training = {
                "seed": cfg.seed, "steps": step, "seconds": ev["seconds"], "batch_size": cfg.batch_size,
                "crop": cfg.augment.crop, "optimizer": f"AdamW lr {cfg.lr} wd {cfg.weight_decay}, cosine",
                "uncertain_classes": list(cfg.uncertain_classes), "uncertain_weight": cfg.uncertain_weight,
                "augmentation": {k: getattr(cfg.augment, k) for k in cfg.augment.__dataclass_fields__},
                "n_train_images": len(train), "n_holdout_images": len(holdout),
                "torch": torch.__version__, **(card_extra or {}),
            }
            card.metrics = {"holdout": {k: v for k, v in ev.items() if k not in ("step", "seconds")}} if holdout else {}
            was = net.training
            net.eval()
            save_model(out_dir, net, card)
            net.train(was)
        ev["saved"] = bool(better)
        return ev

    steps = StepLoop(runner, budget, batches(), batch_loss, lr_at, cancel)
    for done in steps:
        step = done.step
        info: dict[str, Any] = {"loss": done.loss, **done.parts, "lr": done.lr, "seconds": budget.elapsed()}
        if time.perf_counter() - last_eval >= cfg.eval_every_s:
            info["eval"] = evaluate_and_save(False)
            last_eval = time.perf_counter()
        yield Progress(step, total, f"step {step}: loss {info['loss']:.4f}", info)
    if steps.cancelled:
        cancel.raise_if_cancelled()
    info = {"eval": evaluate_and_save(True)}
    yield Progress(step, total or step, "done", info)
    return {"steps": step, "seconds": time.perf_counter() - t0, "best": best, "history": history,
            "out_dir": str(out_dir)}
