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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

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
    """

    samples: Sequence[Sample]
    patch_size: int = 256
    normalization: dict | None = field(default_factory=lambda: {"kind": "percentile", "low": 1.0, "high": 99.8})
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    p_object: float = 0.8
    group_weights: dict[str, float] | None = None
    seed: int = 0

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

    def patch(self, rng: np.random.Generator | None = None, index: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One augmented patch: ``(image (C,P,P), fg (P,P), dist (P,P), weight (P,P))``."""
        rng = self._rng if rng is None else rng
        i = int(rng.choice(len(self.samples), p=self._p)) if index is None else index
        s, img = self.samples[i], self._images[i]
        h, w = s.labels.shape
        fg_idx = self._fg_index[i]
        if len(fg_idx) and rng.random() < self.p_object:
            r, c = divmod(int(fg_idx[rng.integers(len(fg_idx))]), w)
            j = self.patch_size / 4
            center = (r + rng.uniform(-j, j), c + rng.uniform(-j, j))
        else:
            center = (rng.uniform(0, h - 1), rng.uniform(0, w - 1))
        m = random_matrix(rng, self.augment)
        size = self.patch_size + 2 * TARGET_MARGIN
        weight = np.ones((h, w), np.float32) if s.weight is None else s.weight.astype(np.float32, copy=False)
        im, lab, wt = warp([(img, 1), (s.labels, 0), (weight, 0)], center, m, size)
        fg, dist = instance_targets(lab)
        crop = (slice(TARGET_MARGIN, TARGET_MARGIN + self.patch_size),) * 2
        im = pixel_augment(im[(slice(None), *crop)], rng, self.augment)
        return im, fg[crop], dist[crop], np.ascontiguousarray(wt[crop])

    def batch(self, n: int, rng: np.random.Generator | None = None) -> Batch:
        """``n`` patches stacked into a :class:`Batch`."""
        parts = [self.patch(rng) for _ in range(n)]
        return Batch(*(np.stack(x) for x in zip(*parts)))

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
            except BaseException as e:  # hand errors to the consumer
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
