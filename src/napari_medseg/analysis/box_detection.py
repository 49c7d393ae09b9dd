"""Detect objects as boxes with a CenterNet-style U-Net: image -> boxes, classes, scores.

Network outputs (model card ``output.kind == "detection"``)
-----------------------------------------------------------
For ``K = len(output.class_names)`` classes the U-Net gives ``K + 4``
channels on its grid (the image block-averaged by ``input.downsample``,
an integer, so network pixel ``(i, j)`` covers image pixels
``[d*i, d*(i+1)) x [d*j, d*(j+1))``):

* ``0..K-1``: centre heat-map logits per class (CenterNet, Zhou et al. 2019,
  "Objects as Points"); sigmoid gives the probability that a box of that
  class is centred in the pixel;
* ``K, K+1``: ``log`` of the box height and width in network pixels;
* ``K+2, K+3``: sub-pixel offset of the centre from the pixel's corner, in
  ``[0, 1)`` network pixels.

Decoding (:func:`decode`) needs no non-maximum suppression: a detection is
a pixel whose probability is the maximum of its 3x3 neighbourhood in its own
class channel and at least the score threshold; its box is centred at
``(i + offset_y, j + offset_x)`` with the regressed size, times ``d``.  The
encoding that :mod:`napari_medseg.training.detection` trains on is the exact
inverse (tested by a round trip).

Boxes are ``[y0, x0, y1, x1]`` in pixel-edge coordinates of the input image
(see :mod:`napari_medseg.analysis.boxes`), clipped to the image.

Large images
------------
The network grid is covered by windows of at most ``tile_size`` network
pixels: each window owns a *core* (cores partition the image, as in
:class:`~napari_medseg.inference.tiling.TileGrid`) and reaches at least the
U-Net's receptive-field radius beyond it, except where it is shifted back
inside the image at the borders.  A detection is kept by the window that
owns its centre pixel, and a 3x3 peak test at a core's edge sees its
neighbours in the margin, so every object is found once and the result does
not depend on the tiling (no cross-tile NMS is needed).  Images no larger
than one window (1024 network pixels) run in one pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError, ParameterError
from ..geometry import is_volume
from ..progress import CancelToken, Progress, run

#: Largest window edge in network pixels when ``tile_size`` is None.
DEFAULT_TILE = 1024
#: Post-processing defaults when the card does not give them.
DEFAULT_POSTPROCESS = {"score_threshold": 0.3, "max_detections": 1000}


@dataclass
class DetectionResult:
    """What :func:`detect_iter` returns.

    Attributes
    ----------
    boxes : ndarray of float32, shape (N, 4)
        ``[y0, x0, y1, x1]`` in pixels of the input image (pixel-edge
        coordinates: a box covering rows 10..19 has ``y0 = 10, y1 = 20``),
        clipped to the image; sorted by decreasing score.
    class_ids : ndarray of int64, shape (N,)
        Index into ``class_names``.
    scores : ndarray of float32, shape (N,)
        Peak probability in [0, 1].
    class_names : list of str
        Class of each id (from the model card).
    device, device_reason, model_name : str
    timings : dict
        Seconds per stage (``load``, ``network``, ``decode``, ``total``).
    info : dict
        Windows used, network grid shape, thresholds.
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    class_names: list[str]
    device: str = "cpu"
    device_reason: str = ""
    model_name: str = ""
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.scores))

    @property
    def classes(self) -> list[str]:
        """Class name of each detection."""
        return [self.class_names[int(i)] for i in self.class_ids]

    @property
    def centers(self) -> np.ndarray:
        """``(N, 2)`` float32 box centres ``(y, x)`` in pixels (pixel-edge coordinates)."""
        b = self.boxes
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1).astype(np.float32)

    def counts(self) -> dict[str, int]:
        """Number of detections per class (every class listed, zeros included)."""
        n = np.bincount(self.class_ids, minlength=len(self.class_names))
        return {c: int(k) for c, k in zip(self.class_names, n, strict=False)}

    def to_table(self) -> dict[str, np.ndarray]:
        """Columns of a per-object table (pixels): id, class, score, centroid, bbox, size.

        ``centroid_y/x`` are the box centres in pixel-edge coordinates;
        subtract 0.5 for napari's pixel-centre world coordinates.
        """
        b = self.boxes
        c = self.centers
        return {
            "id": np.arange(1, len(self) + 1, dtype=np.int64),
            "class": np.asarray(self.classes, dtype=object),
            "score": self.scores.astype(np.float32),
            "centroid_y": c[:, 0], "centroid_x": c[:, 1],
            "bbox_y0": b[:, 0], "bbox_x0": b[:, 1], "bbox_y1": b[:, 2], "bbox_x1": b[:, 3],
            "height": b[:, 2] - b[:, 0], "width": b[:, 3] - b[:, 1],
        }


def find_peaks(heat: np.ndarray, threshold: float, region: Sequence[slice] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima (3x3, per class) of a ``(K, H, W)`` probability map at or above ``threshold``.

    A pixel is a peak when it equals the maximum of its 3x3 neighbourhood
    (pixels outside the map do not count), as CenterNet's max-pool test.

    Parameters
    ----------
    heat : ndarray, shape (K, H, W)
        Probabilities.
    threshold : float
        Smallest score kept.
    region : (slice, slice), optional
        Only peaks whose pixel lies in ``heat[:, region[0], region[1]]`` are
        returned (the neighbourhood test still sees the whole map).

    Returns
    -------
    k, iy, ix : ndarray of int64
        Class and pixel of each peak (raster order within each class).
    score : ndarray of float32
    """
    from scipy.ndimage import maximum_filter

    heat = np.asarray(heat, np.float32)
    if heat.ndim != 3:
        raise ParameterError(f"heat map must be (K, H, W), got shape {heat.shape}")
    mx = maximum_filter(heat, size=(1, 3, 3), mode="constant", cval=-np.inf)
    keep = (heat == mx) & (heat >= threshold)
    if region is not None:
        m = np.zeros(heat.shape[1:], bool)
        m[tuple(region)] = True
        keep &= m[None]
    k, iy, ix = np.nonzero(keep)
    return k.astype(np.int64), iy.astype(np.int64), ix.astype(np.int64), heat[k, iy, ix]


def decode(
    heat: np.ndarray,
    log_size: np.ndarray,
    offset: np.ndarray | None = None,
    *,
    score_threshold: float = 0.3,
    max_detections: int | None = None,
    downsample: float = 1.0,
    origin: Sequence[float] = (0.0, 0.0),
    region: Sequence[slice] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes from heat-map probabilities, log-sizes and offsets (one image or window).

    Parameters
    ----------
    heat : ndarray, shape (K, H, W)
        Centre probabilities per class (after the sigmoid).
    log_size : ndarray, shape (2, H, W)
        ``log(height), log(width)`` in network pixels.
    offset : ndarray, shape (2, H, W), optional
        Centre offset ``(dy, dx)`` from each pixel's corner, network pixels;
        None: 0.5 (pixel centres).
    score_threshold : float
        Smallest peak probability kept.
    max_detections : int, optional
        Keep only the highest-scoring ones.
    downsample : float
        Image pixels per network pixel (the card's ``input.downsample``).
    origin : (float, float)
        Network-grid position of ``heat[:, 0, 0]`` (a window's start).
    region : (slice, slice), optional
        Only peaks in this part of the map (a window's core).

    Returns
    -------
    boxes : ndarray of float64, shape (N, 4)
        ``[y0, x0, y1, x1]`` in image pixels (not clipped), by decreasing score.
    class_ids : ndarray of int64, shape (N,)
    scores : ndarray of float32, shape (N,)
    """
    k, iy, ix, score = find_peaks(heat, score_threshold, region)
    order = np.argsort(-score, kind="stable")
    if max_detections is not None:
        order = order[: int(max_detections)]
    k, iy, ix, score = k[order], iy[order], ix[order], score[order]
    size = np.exp(np.asarray(log_size, np.float64)[:, iy, ix])
    off = np.full((2, len(iy)), 0.5) if offset is None else np.asarray(offset, np.float64)[:, iy, ix]
    cy = iy + off[0] + origin[0]
    cx = ix + off[1] + origin[1]
    boxes = np.stack([cy - size[0] / 2, cx - size[1] / 2, cy + size[0] / 2, cx + size[1] / 2], axis=1)
    return boxes * float(downsample), k, score.astype(np.float32)


# --------------------------------------------------------------------------- windows


def plan_windows(shape: Sequence[int], max_tile: int, halo: int, divisor: int
                 ) -> tuple[tuple[int, int], list[tuple[tuple[int, int], tuple[slice, slice]]]]:
    """Windows covering a network grid: each owns a core and reaches ``halo`` beyond it.

    Parameters
    ----------
    shape : (int, int)
        Network-grid shape (downsampled image).
    max_tile : int
        Largest window edge.
    halo : int
        Margin beyond each core (the receptive-field radius).
    divisor : int
        The U-Net's divisor; windows and starts are multiples of it.

    Returns
    -------
    window_shape : (int, int)
        Shape of every window (the grid is padded up to a multiple of
        ``divisor`` first).
    windows : list of (start, core)
        ``start``: window origin on the grid; ``core``: the slices of the
        window (window coordinates) whose peaks it owns.
    """
    from ..inference.tiling import TileGrid, round_up

    padded = tuple(round_up(s, divisor) for s in shape)
    grid = TileGrid(padded, max_tile, halo, divisor)
    win = tuple(min(t, p) for t, p in zip(grid.tile_shape, padded, strict=False))
    out = []
    for tile in grid:
        start = tuple(int(min(max(s, 0), p - w)) for s, p, w in zip(tile.start, padded, win, strict=False))
        core = tuple(slice(c.start - s, min(c.stop, L) - s) for c, s, L in zip(tile.core, start, shape, strict=False))
        if all(c.stop > c.start for c in core):
            out.append((start, core))
    return win, out


class _Downsampled:
    """Normalised ``(C, h, w)`` float32 regions of an image block-averaged by an integer factor.

    Region ``[s, s + t)`` of the network grid is the mean of each ``d x d``
    block of image pixels ``[d*s, d*(s + t))``, beyond the image edges
    mirror-extended as :class:`~napari_medseg.inference.tiling.ArraySource` does.
    """

    def __init__(self, source, factor: int) -> None:
        self.source = source
        self.d = int(factor)
        self.shape = tuple(math.ceil(s / self.d) for s in source.shape)

    def read(self, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        d = self.d
        block = self.source.read([s * d for s in start], [t * d for t in shape])
        if d == 1:
            return block
        c = block.shape[0]
        return block.reshape(c, shape[0], d, shape[1], d).mean(axis=(2, 4), dtype=np.float32)


def downsample_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Block-average a ``(C, H, W)`` array by an integer ``factor`` (mirror-padded to a multiple).

    The same operation :func:`detect_iter` applies before the network; the
    trainer uses it so training and inference see identical inputs.
    """
    from ..inference.tiling import ArraySource

    src = _Downsampled(ArraySource(np.asarray(image), "CYX"), factor)
    return src.read((0, 0), src.shape)


def _image_and_axes(image, axes: str | None):
    if is_volume(image):
        vol = image
        image = vol.data[0] if isinstance(vol.data, list) else vol.data
        axes = axes or vol.axes
    if not hasattr(image, "shape") or not hasattr(image, "__getitem__"):
        image = np.asarray(image)
    shape = tuple(int(s) for s in image.shape)
    if axes is None:
        if len(shape) == 2:
            axes = "YX"
        elif len(shape) == 3 and shape[-1] in (3, 4):
            axes = "YXS"
        else:
            raise ParameterError(
                f"cannot guess the axes of an image of shape {shape}; pass axes= ('YXS' for RGB, 'CYX', 'YX')"
            )
    axes = axes.upper()
    if len(axes) != len(shape) or set(axes) - set("YXCS") or not {"Y", "X"} <= set(axes) or len(set(axes)) != len(axes):
        raise ParameterError(
            f"detection takes one 2D image: axes {axes!r} (shape {shape}) must be Y, X and at most one of C/S"
        )
    return image, axes, shape


def detect_iter(
    image,
    model="bccd",
    *,
    axes: str | None = None,
    device="auto",
    score_threshold: float | None = None,
    max_detections: int | None = None,
    tile_size: int | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, DetectionResult]:
    """Detect objects (boxes, classes, scores) in a 2D image, yielding progress.

    Parameters
    ----------
    image : array-like or Volume
        ``(Y, X, 3|4)`` RGB(A), ``(Y, X)`` grey or channel-first with ``axes``;
        numpy, dask, zarr or memmap (read window by window).  The shipped
        ``bccd`` model takes 8-bit RGB (normalised as the card says).
    model : str or path
        A detection model's name (see :func:`napari_medseg.list_models`) or folder.
    axes : str, optional
        ``YXS``, ``YXC``, ``CYX`` or ``YX``; guessed from the shape when None.
    device : {"auto", "cpu", "cuda", "mps"}
        See :func:`napari_medseg.models.device.select_device`.
    score_threshold : float, optional
        Smallest score kept; default the card's ``postprocess.score_threshold``.
    max_detections : int, optional
        Most detections kept (highest scores); default the card's.
    tile_size : int, optional
        Largest window edge in network pixels (default 1024).
    batch_size : int, optional
        Windows per forward pass (default 1 on CPU, 4 on a GPU).
    precision : {"auto", "float32", "bfloat16", "float16"}
        Network arithmetic.  ``auto``: float32 on the CPU, otherwise as
        :func:`~napari_medseg.inference.segment.segment_iter` (bfloat16 on
        CUDA with bf16 support, float16 on other GPUs).
    cancel : CancelToken, optional
        Checked before each window batch.

    Yields
    ------
    Progress
        One per window batch.

    Returns
    -------
    DetectionResult

    Raises
    ------
    ModelError
        The model is not a detection model or does not take this kind of image.
    ParameterError
        Bad arguments.
    Cancelled
        When ``cancel`` was set.
    """
    import torch

    from ..inference.normalize import normalization_limits
    from ..inference.predictor import PRECISIONS, autocast_dtype
    from ..inference.tiling import ArraySource, unet_receptive_radius
    from ..models.cache import get_model
    from ..models.device import configure_cpu_threads, select_device
    from ..models.registry import resolve_model

    t0 = time.perf_counter()
    timings = dict.fromkeys(("load", "network", "decode"), 0.0)
    image, axes, shape = _image_and_axes(image, axes)
    ch_axis = next((i for i, a in enumerate(axes) if a in "CS"), None)
    n_img_ch = 1 if ch_axis is None else shape[ch_axis]
    hw = (shape[axes.index("Y")], shape[axes.index("X")])
    if min(hw) < 1:
        raise ParameterError(f"the image is empty (shape {shape})")

    info = resolve_model(model)
    card = info.card
    if card.kind != "detection":
        raise ModelError(f"model {card.name!r} is a {card.kind!r} model; detection needs a 'detection' model")
    class_names = [str(c) for c in card.output.get("class_names", [])]
    n_cls = len(class_names)
    if int(card.architecture["out_channels"]) != n_cls + 4:
        raise ModelError(f"model {card.name!r}: {card.architecture['out_channels']} output channels, "
                         f"expected {n_cls} classes + 4 (log-size, offset)")
    m_ch = card.in_channels
    channels = None
    if n_img_ch != m_ch:
        if m_ch == 3 and n_img_ch == 4:
            channels = [0, 1, 2]
        else:
            raise ModelError(f"model {card.name!r} takes {m_ch}-channel ({card.input.get('color', '?')}) images; "
                             f"this image has {n_img_ch} channel(s) (shape {shape}, axes {axes!r})")
    pp = dict(DEFAULT_POSTPROCESS)
    pp.update(card.output.get("postprocess") or {})
    thr = float(pp["score_threshold"] if score_threshold is None else score_threshold)
    max_det = int(pp["max_detections"] if max_detections is None else max_detections)
    if not 0.0 <= thr <= 1.0:
        raise ParameterError(f"score_threshold must be in [0, 1], got {thr}")
    factor = int(card.input.get("downsample", 1))
    if factor < 1:
        raise ModelError(f"model {card.name!r}: input.downsample must be a positive integer, got {factor}")
    if cancel is not None:
        cancel.raise_if_cancelled()

    t = time.perf_counter()
    dev, reason = select_device(device)
    if dev.type == "cpu":
        configure_cpu_threads()
    net, card = get_model(info.path, dev)
    timings["load"] = time.perf_counter() - t

    low, high = normalization_limits(image, axes, card.input.get("normalization"), channels)
    src = _Downsampled(ArraySource(image, axes, channels, low, high), factor)
    divisor = int(net.divisor)
    tmax = DEFAULT_TILE if tile_size is None else int(tile_size)
    halo = unet_receptive_radius(int(card.architecture.get("depth", 4)))
    if tmax < 2 * halo + divisor:
        raise ParameterError(f"tile_size {tmax} is too small; use at least {2 * halo + divisor}")
    win, windows = plan_windows(src.shape, tmax, halo, divisor)
    bs = int(batch_size or (1 if dev.type == "cpu" else 4))
    if bs < 1:
        raise ParameterError(f"batch_size must be >= 1, got {bs}")
    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    # CPU: float32 by default.  bfloat16 (AMX) was ~1.6x faster on BCCD val (46 vs 75 ms per image,
    # interleaved runs) but its rounding of the heat maps lowered WBC AP from 0.982 to 0.957
    # (score ranking); accuracy first, precision="bfloat16" for speed
    dtype = None if precision == "auto" and dev.type == "cpu" else autocast_dtype(dev, precision)

    all_boxes, all_k, all_s = [], [], []
    batches = [windows[i:i + bs] for i in range(0, len(windows), bs)]
    for bi, batch in enumerate(batches):
        if cancel is not None:
            cancel.raise_if_cancelled()
        t = time.perf_counter()
        x = np.stack([src.read(start, win) for start, _ in batch])
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(dev)
            if dev.type == "cpu":
                xt = xt.contiguous(memory_format=torch.channels_last)
            if dtype is None:
                y = net(xt)
            else:
                with torch.autocast(dev.type, dtype=dtype):
                    y = net(xt)
            y = y.float()
            y[:, :n_cls] = torch.sigmoid(y[:, :n_cls])
            y = y.cpu().numpy()
        timings["network"] += time.perf_counter() - t
        t = time.perf_counter()
        for (start, core), out in zip(batch, y, strict=False):
            b, k, s = decode(out[:n_cls], out[n_cls:n_cls + 2], out[n_cls + 2:n_cls + 4],
                             score_threshold=thr, downsample=factor, origin=start, region=core)
            all_boxes.append(b)
            all_k.append(k)
            all_s.append(s)
        timings["decode"] += time.perf_counter() - t
        yield Progress(bi + 1, len(batches), f"detect: window batch {bi + 1}/{len(batches)}",
                       {"stage": "network", "device": dev.type})

    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4))
    k = np.concatenate(all_k) if all_k else np.zeros(0, np.int64)
    s = np.concatenate(all_s) if all_s else np.zeros(0, np.float32)
    # a total order (score, then class and position) so that truncation does not depend on the tiling
    order = np.lexsort((boxes[:, 3], boxes[:, 1], boxes[:, 2], boxes[:, 0], k, -s))[:max_det]
    boxes, k, s = boxes[order], k[order], s[order]
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, hw[0])
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, hw[1])
    timings["total"] = time.perf_counter() - t0
    res_info = {"windows": len(windows), "window_shape": win, "grid_shape": src.shape, "downsample": factor,
                "score_threshold": thr, "max_detections": max_det, "threads": torch.get_num_threads(),
                "precision": "float32" if dtype is None else str(dtype).replace("torch.", "")}
    return DetectionResult(boxes.astype(np.float32), k.astype(np.int64), s.astype(np.float32), class_names,
                           dev.type, reason, card.name, timings, res_info)


def detect(image, model="bccd", **kwargs: Any) -> DetectionResult:
    """Detect objects in a 2D image; see :func:`detect_iter` for the parameters.

    Examples
    --------
    >>> res = detect(rgb_uint8, "bccd")  # doctest: +SKIP
    >>> res.counts()  # doctest: +SKIP
    {'WBC': 1, 'RBC': 14, 'Platelets': 2}
    """
    return run(detect_iter(image, model, **kwargs))
