"""A synthetic fluorescence-nuclei image for the block-wise tests (no dataset needed)."""

from __future__ import annotations

import numpy as np


def nuclei_image(shape=(300, 380), n=90, seed=0) -> np.ndarray:
    """Bright flat-topped discs (radius 5-9 px) on a dark noisy background, uint8, as fluorescence nuclei."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(5, 9)
        img += 200 * np.exp(-((((yy - cy) ** 2 + (xx - cx) ** 2) / r**2) ** 3))
    return np.clip(img + rng.normal(10, 3, shape), 0, 255).astype(np.uint8)
