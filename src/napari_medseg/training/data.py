"""Training samples in memory and a random patch sampler for instance models.

A :class:`Sample` is one whole 2D image with its instance labels (and an
optional per-pixel weight map, 0 where a pixel is not annotated).  Images are
normalised once, whole, exactly as the inference engine does
(:func:`napari_medseg.inference.normalize.normalization_limits`, then
``(x - low) / max(high - low, 1e-6)`` per channel), then the
:class:`PatchSampler` cuts augmented patches and computes their targets.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import ParameterError
from .augment import AugmentConfig, pixel_augment, random_matrix, warp
from .targets import instance_targets

#: Extra border (pixels) warped around each patch so that objects cut by the
#: patch edge get the right distance target; cropped off afterwards.
TARGET_MARGIN = 16


@dataclass
class Sample:
    """One annotated 2D image.

    Attributes
    ----------
    image : ndarray
        (Y, X) grey or (Y, X, C) channels-last, any real dtype (raw).
    labels : ndarray of int, (Y, X)
        Instance labels, 0 = background.
    weight : ndarray of float32, (Y, X), optional
        Per-pixel loss weight; 0 = not annotated (ignored), 1 = normal.
    name : str
        For reports.
    group : str
        Used for balanced sampling (e.g. the modality).
    """

    image: np.ndarray
    labels: np.ndarray
    weight: np.ndarray | None = None
    name: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        if self.image.ndim not in (2, 3):
            raise ParameterError(f"sample {self.name!r}: image must be (Y, X) or (Y, X, C), got {self.image.shape}")
        if self.labels.shape != self.image.shape[:2]:
            raise ParameterError(
                f"sample {self.name!r}: labels {self.labels.shape} do not match image {self.image.shape[:2]}")
        if self.weight is not None and self.weight.shape != self.labels.shape:
            raise ParameterError(f"sample {self.name!r}: weight {self.weight.shape} does not match labels")

    @property
    def channels(self) -> int:
        return 1 if self.image.ndim == 2 else self.image.shape[2]


def prepare_image(image: np.ndarray, normalization: dict | None) -> np.ndarray:
    """Whole-image normalisation -> (C, Y, X) float32 (what the network eats)."""
    from ..inference.normalize import normalization_limits

    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    out = np.moveaxis(img, -1, 0).astype(np.float32)  # (C, Y, X), a copy
    low, high = normalization_limits(img, "YXC", normalization)
    if low is not None:
        out -= low.reshape(-1, 1, 1)
        out *= (1.0 / np.maximum(high - low, 1e-6)).reshape(-1, 1, 1).astype(np.float32)
    return np.ascontiguousarray(out)


@dataclass
class Batch:
    """A batch of patches as numpy arrays (N = batch size, P = patch size).

    ``image`` (N, C, P, P) float32; ``fg``, ``dist``, ``weight`` (N, P, P) float32.
    """

    image: np.ndarray
    fg: np.ndarray
    dist: np.ndarray
    weight: np.ndarray


@dataclass
class TargetBatch:
    """A batch of patches with stacked targets of any instance representation.

    ``image`` (N, C, P, P), ``targets`` (N, K, P, P) (see
    :mod:`~napari_medseg.training.representations`), ``weight`` (N, P, P); float32.
    """

    image: np.ndarray
    targets: np.ndarray
    weight: np.ndarray


def patch_center(rng: np.random.Generator, shape: tuple[int, int], fg_index: np.ndarray, p_object: float,
                 jitter: float) -> tuple[float, float]:
    """Random patch centre (row, col) in an image of ``shape`` (Y, X), in pixels.

    With probability ``p_object`` (and only when ``fg_index`` is not empty)
    the centre is a random labelled pixel moved by up to ``jitter`` pixels
    along each axis (uniform); otherwise it is uniform over
    ``[0, Y - 1] x [0, X - 1]``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws, in this order: one ``random()`` (only when ``fg_index`` is
        not empty), then either ``integers`` + two ``uniform`` (object
        centre) or two ``uniform`` (anywhere).
    shape : (int, int)
    fg_index : ndarray of int
        Flat (row-major) indices of the labelled pixels.
    p_object : float
        Probability of centring on an object, in [0, 1].
    jitter : float
        Largest shift from the labelled pixel (pixels).
    """
    h, w = shape
    if len(fg_index) and rng.random() < p_object:
        r, c = divmod(int(fg_index[rng.integers(len(fg_index))]), w)
        return (r + rng.uniform(-jitter, jitter), c + rng.uniform(-jitter, jitter))
    return (rng.uniform(0, h - 1), rng.uniform(0, w - 1))


@dataclass
class PatchSampler:
    """Random augmented patches with instance targets.

    Parameters
    ----------
    samples : sequence of Sample
        Training images (all with the same number of channels).
    patch_size : int
        Side of the square patches (a multiple of the network's divisor).
    normalization : dict
        A card's ``input.normalization`` (applied once per whole image).
    augment : AugmentConfig
    p_object : float
        Probability that a patch is centred near a random labelled pixel
        rather than anywhere (patches with objects teach more).
    group_weights : dict, optional
        Relative sampling weight of each ``Sample.group`` (images of a group
        share it equally); default: every image equally likely.
    seed : int
    targets : callable, optional
        ``targets(labels (S, S), rng) -> float32 (K, S, S)``: the training targets
        of an instance representation
        (:meth:`~napari_medseg.training.representations.TrainingRepresentation.targets`).
        Given, :meth:`patch` returns ``(image, targets, weight)`` and
        :meth:`batch` a :class:`TargetBatch`; default: foreground and
        distance (``(image, fg, dist, weight)`` and a :class:`Batch`).
    """

    samples: Sequence[Sample]
    patch_size: int = 256
    normalization: dict | None = field(default_factory=lambda: {"kind": "percentile", "low": 1.0, "high": 99.8})
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    p_object: float = 0.8
    group_weights: dict[str, float] | None = None
    seed: int = 0
    targets: Callable[[np.ndarray], np.ndarray] | None = None
    #: What :meth:`batch` stacks the patches into (one field per item of :meth:`patch`).
    batch_type: ClassVar[type] = Batch

    def __post_init__(self) -> None:
        if not self.samples:
            raise ParameterError("no training samples")
        chans = {s.channels for s in self.samples}
        if len(chans) != 1:
            raise ParameterError(f"all samples must have the same number of channels, got {sorted(chans)}")
        self.channels = chans.pop()
        self._images = [prepare_image(s.image, self.normalization) for s in self.samples]
        self._fg_index = [np.flatnonzero(s.labels.ravel() > 0) for s in self.samples]
        self._rng = np.random.default_rng(self.seed)
        p = np.ones(len(self.samples))
        if self.group_weights:
            groups = [s.group for s in self.samples]
            for g in set(groups):
                idx = [i for i, gg in enumerate(groups) if gg == g]
                p[idx] = self.group_weights.get(g, 0.0) / len(idx)
        if p.sum() <= 0:
            raise ParameterError("group_weights give every sample zero probability")
        self._p = p / p.sum()

    def warped_patch(self, rng: np.random.Generator, index: int | None = None, margin: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A randomly placed, geometrically augmented window of one image, its labels and weight.

        The part every sampler shares: picks an image (``index``, or at
        random with the group weights), a centre (:func:`patch_center`) and
        a random geometry (:func:`~.augment.random_matrix`), and resamples
        the normalised image (linear), the labels and the weight map
        (nearest) in one pass (:func:`~.augment.warp`).  No intensity
        augmentation and no targets yet: the subclasses add those.

        Parameters
        ----------
        rng : numpy.random.Generator
            Every random draw comes from it (in a fixed order).
        index : int, optional
            Which sample; default: drawn from ``rng``.
        margin : int
            Extra border (pixels) on each side: the window's side is
            ``patch_size + 2 * margin``.

        Returns
        -------
        image : ndarray of float32, (C, S, S)
            Normalised, not intensity-augmented.
        labels : ndarray, (S, S)
            The sample's labels (same dtype), nearest-neighbour resampled.
        weight : ndarray of float32, (S, S)
            The sample's weight map (ones when it has none).
        """
        i = int(rng.choice(len(self.samples), p=self._p)) if index is None else index
        s = self.samples[i]
        center = patch_center(rng, s.labels.shape, self._fg_index[i], self.p_object, self.patch_size / 4)
        m = random_matrix(rng, self.augment)
        weight = np.ones(s.labels.shape, np.float32) if s.weight is None else s.weight.astype(np.float32, copy=False)
        im, lab, wt = warp([(self._images[i], 1), (s.labels, 0), (weight, 0)], center, m,
                           self.patch_size + 2 * margin)
        return im, lab, wt

    def patch(self, rng: np.random.Generator | None = None, index: int | None = None) -> tuple[np.ndarray, ...]:
        """One augmented patch: ``(image (C,P,P), fg (P,P), dist (P,P), weight (P,P))``.

        With ``targets``: ``(image (C,P,P), targets (K,P,P), weight (P,P))``.
        """
        rng = self._rng if rng is None else rng
        im, lab, wt = self.warped_patch(rng, index, margin=TARGET_MARGIN)
        crop = (slice(TARGET_MARGIN, TARGET_MARGIN + self.patch_size),) * 2
        if self.targets is None:
            t = instance_targets(lab)
        else:
            t = (np.ascontiguousarray(self.targets(lab, rng)[(slice(None), *crop)]),)
        im = pixel_augment(im[(slice(None), *crop)], rng, self.augment)
        return (im, *(np.ascontiguousarray(x[crop]) if x.ndim == 2 else x for x in t),
                np.ascontiguousarray(wt[crop]))

    def batch(self, n: int, rng: np.random.Generator | None = None):
        """``n`` patches stacked into a :attr:`batch_type` (a :class:`Batch` here; a :class:`TargetBatch` with ``targets``)."""
        parts = [self.patch(rng) for _ in range(n)]
        kind = self.batch_type if self.targets is None else TargetBatch
        return kind(*(np.stack(x) for x in zip(*parts, strict=False)))

    def prefetch(self, n: int, depth: int = 4, stop: threading.Event | None = None) -> Iterator[Batch]:
        """Endless batches made in a background thread (``depth`` kept ready).

        The thread has its own generator seeded from ``seed`` so the stream is
        reproducible; numpy/scipy release the GIL in their heavy parts, so it
        overlaps with the network's step.  Set ``stop`` (or close the iterator)
        to end the thread.
        """
        q: queue.Queue = queue.Queue(maxsize=depth)
        stop = stop or threading.Event()
        rng = np.random.default_rng([self.seed, 1])

        def work() -> None:
            try:
                while not stop.is_set():
                    b = self.batch(n, rng)
                    while not stop.is_set():
                        try:
                            q.put(b, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as e:  # hand errors to the consumer  # noqa: BLE001
                q.put(e)

        t = threading.Thread(target=work, name="medseg-patches", daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            t.join(timeout=5)


def typical_diameter(label_images: Sequence[np.ndarray]) -> float:
    """Median equivalent-circle diameter (pixels) of all objects in the images."""
    areas = [np.bincount(np.asarray(lab).ravel())[1:] for lab in label_images]
    a = np.concatenate(areas) if areas else np.zeros(0)
    a = a[a > 0]
    return float(np.median(2 * np.sqrt(a / np.pi))) if len(a) else float("nan")
