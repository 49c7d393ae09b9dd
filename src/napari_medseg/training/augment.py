"""Data augmentation for 2D instance segmentation patches (numpy + scipy).

Geometry (flip, 90-degree and free rotation, zoom, crop) is applied in ONE
resampling pass: every output pixel's source coordinate is computed from a
2x2 affine matrix and read with :func:`scipy.ndimage.map_coordinates`
(linear for the image, nearest for labels and weights), with mirror
extension beyond the image edge (numpy's ``reflect``, as the tiled inference
engine pads).  Targets are computed afterwards from the warped label image,
so they are always consistent with the geometry.

Intensity augmentations act on the *normalised* image (float32, ~[0, 1]):
contrast, brightness, gamma, blur, noise; grey inversion (bright nuclei on
dark <-> dark nuclei on light) for grey images, H&E stain variation (in
the HED colour space of :func:`skimage.color.rgb2hed`) and a colour jitter
(hue, saturation, white balance) for RGB images.

Every random draw comes from the ``numpy.random.Generator`` passed in, so a
seed fixes the output exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply and how strongly (all 2D).

    Attributes
    ----------
    flip, rot90 : bool
        Random flips and multiples of 90 degrees (exact, no interpolation).
    rotate : bool
        Free rotation by a uniform angle (linear interpolation).
    zoom : (float, float)
        Range of the magnification (log-uniform); 2.0 shows objects twice as
        large.  (1, 1) disables it.
    contrast, gamma : (float, float)
        Multiplicative contrast (around the mean) and gamma ranges.
    brightness : float
        Additive shift drawn in [-brightness, brightness].
    p_blur, blur_sigma : float, (float, float)
        Probability and sigma range (pixels) of a Gaussian blur.
    p_noise, noise_std : float, float
        Probability and maximum standard deviation of additive Gaussian noise.
    p_invert : float
        Probability of inverting a grey image (``1 - x``).
    p_stain, stain_scale, stain_shift : float
        Probability and strength of H&E stain variation for RGB images: each
        HED channel is multiplied by ``1 + N(0, stain_scale)`` and shifted
        by ``N(0, stain_shift)``.
    p_color, hue, saturation, channel_gain : float, float, (float, float), float
        Probability and strength of a colour jitter for RGB photos (skin,
        endoscopy: other cameras, lighting and skin tones): a hue rotation
        about the grey axis by a uniform angle in ``[-hue, hue]`` degrees, a
        saturation factor drawn in ``saturation`` (log-uniform) and a gain
        ``1 + U(-channel_gain, channel_gain)`` per channel (white balance),
        applied as one 3x3 colour matrix (:func:`color_jitter`).
    """

    flip: bool = True
    rot90: bool = True
    rotate: bool = True
    zoom: tuple[float, float] = (0.6, 1.7)
    contrast: tuple[float, float] = (0.7, 1.4)
    brightness: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.5)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    p_noise: float = 0.3
    noise_std: float = 0.05
    p_invert: float = 0.0
    p_stain: float = 0.0
    stain_scale: float = 0.08
    stain_shift: float = 0.02
    p_color: float = 0.0
    hue: float = 10.0
    saturation: tuple[float, float] = (0.7, 1.4)
    channel_gain: float = 0.1

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (a plain crop)."""
        return cls(flip=False, rot90=False, rotate=False, zoom=(1.0, 1.0), contrast=(1.0, 1.0), brightness=0.0,
                   gamma=(1.0, 1.0), p_blur=0.0, p_noise=0.0, p_invert=0.0, p_stain=0.0, p_color=0.0)


def random_matrix(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random 2x2 matrix mapping output offsets to input offsets (row, col)."""
    m = np.eye(2)
    if cfg.flip and rng.random() < 0.5:
        m = m @ np.diag([1.0, -1.0])
    if cfg.rot90:
        k = int(rng.integers(4))
        r = np.array([[0.0, -1.0], [1.0, 0.0]])
        m = m @ np.linalg.matrix_power(r, k)
    if cfg.rotate:
        a = rng.uniform(0, 2 * math.pi)
        m = m @ np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lo, hi = cfg.zoom
    z = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
    return m / z


def _is_exact(m: np.ndarray) -> bool:
    """True if ``m`` is a signed permutation (flip/rot90 only, no resampling)."""
    return bool(np.all(np.isclose(np.abs(m), 0) | np.isclose(np.abs(m), 1)) and np.isclose(abs(np.linalg.det(m)), 1))


def warp(
    arrays: list[tuple[np.ndarray, int]],
    center: tuple[float, float],
    matrix: np.ndarray,
    size: int,
) -> list[np.ndarray]:
    """Resample square patches of ``size`` from 2D arrays around ``center``.

    Parameters
    ----------
    arrays : list of (ndarray, order)
        Each array is (Y, X) or (C, Y, X); ``order`` 1 = linear (images),
        0 = nearest (labels, weights).
    center : (float, float)
        Source (row, col) that lands on the patch centre.
    matrix : ndarray, shape (2, 2)
        Output-offset -> input-offset map (see :func:`random_matrix`).
    size : int
        Output side length.

    Returns
    -------
    list of ndarray
        One (size, size) or (C, size, size) patch per input, same dtype as the input.
    """
    c = (size - 1) / 2.0
    off = np.mgrid[0:size, 0:size].reshape(2, -1).astype(np.float64) - c
    src = matrix @ off + np.asarray(center, np.float64)[:, None]
    out = []
    exact = _is_exact(matrix) and np.allclose(src, np.round(src))
    for a, order in arrays:
        chans = a[None] if a.ndim == 2 else a
        res = []
        for ch in chans:
            if exact or order == 0:
                # Nearest neighbour with mirror extension, done by index arithmetic.
                idx = np.round(src).astype(np.int64)
                r = _mirror_index(idx[0], ch.shape[0])
                q = _mirror_index(idx[1], ch.shape[1])
                res.append(ch[r, q].reshape(size, size))
            else:
                res.append(ndi.map_coordinates(ch, src, order=order, mode="mirror", prefilter=False)
                           .reshape(size, size).astype(ch.dtype, copy=False))
        out.append(res[0] if a.ndim == 2 else np.stack(res))
    return out


def _mirror_index(i: np.ndarray, n: int) -> np.ndarray:
    """Map integer indices onto [0, n) by mirror reflection without edge repeat."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def stain_jitter(rgb: np.ndarray, rng: np.random.Generator, scale: float, shift: float) -> np.ndarray:
    """Perturb H&E staining of an RGB image (C=3, Y, X) in ~[0, 1] via HED space."""
    from skimage.color import hed2rgb, rgb2hed

    img = np.clip(np.moveaxis(rgb, 0, -1), 0.0, 1.0)
    hed = rgb2hed(img)
    alpha = 1.0 + rng.normal(0.0, scale, 3)
    beta = rng.normal(0.0, shift, 3)
    out = hed2rgb(hed * alpha + beta)
    return np.moveaxis(out, -1, 0).astype(np.float32)


def color_matrix(hue_deg: float, saturation: float, gains: np.ndarray) -> np.ndarray:
    """3x3 RGB matrix: hue rotation about the grey axis, saturation around grey, then per-channel gains.

    Grey pixels (R = G = B) stay grey under the rotation and the saturation
    change; with ``hue_deg = 0``, ``saturation = 1`` and unit gains it is the identity.
    """
    a = math.radians(hue_deg)
    u = np.full(3, 1.0 / math.sqrt(3.0))  # the grey axis
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    rot = np.eye(3) + math.sin(a) * k + (1.0 - math.cos(a)) * (k @ k)  # Rodrigues
    grey = np.outer(u, u)  # projection onto the grey axis
    sat = grey + saturation * (np.eye(3) - grey)
    return np.diag(np.asarray(gains, float)) @ sat @ rot


def color_jitter(rgb: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random hue / saturation / white-balance change of a (3, Y, X) float image (see :class:`AugmentConfig`)."""
    h = rng.uniform(-cfg.hue, cfg.hue) if cfg.hue > 0 else 0.0
    lo, hi = cfg.saturation
    s = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
    g = 1.0 + rng.uniform(-cfg.channel_gain, cfg.channel_gain, 3) if cfg.channel_gain > 0 else np.ones(3)
    m = color_matrix(h, s, g).astype(np.float32)
    out = np.tensordot(m, rgb, axes=(1, 0))
    return np.ascontiguousarray(out, dtype=np.float32)


def pixel_augment(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Intensity augmentations on a normalised (C, Y, X) float32 patch.

    RGB (C=3) patches may get stain variation, grey (C=1) ones inversion.
    """
    img = img.astype(np.float32, copy=True)
    c = img.shape[0]
    if c == 3 and cfg.p_stain > 0 and rng.random() < cfg.p_stain:
        img = stain_jitter(img, rng, cfg.stain_scale, cfg.stain_shift)
    if c == 3 and cfg.p_color > 0 and rng.random() < cfg.p_color:
        img = color_jitter(img, rng, cfg)
    if c == 1 and cfg.p_invert > 0 and rng.random() < cfg.p_invert:
        img = 1.0 - img
    lo, hi = cfg.gamma
    if hi > lo:
        g = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        np.clip(img, 0.0, None, out=img)
        img **= np.float32(g)
    lo, hi = cfg.contrast
    if hi > lo or cfg.brightness > 0:
        k = rng.uniform(lo, hi) if hi > lo else 1.0
        b = rng.uniform(-cfg.brightness, cfg.brightness) if cfg.brightness > 0 else 0.0
        mean = img.mean()
        img = (img - mean) * np.float32(k) + np.float32(mean + b)
    if cfg.p_blur > 0 and rng.random() < cfg.p_blur:
        s = rng.uniform(*cfg.blur_sigma)
        img = ndi.gaussian_filter(img, sigma=(0, s, s))
    if cfg.p_noise > 0 and rng.random() < cfg.p_noise:
        std = rng.uniform(0, cfg.noise_std)
        img = img + rng.normal(0.0, std, img.shape).astype(np.float32)
    return img.astype(np.float32, copy=False)
