"""2D pictures (JPEG, PNG, BMP, GIF, WebP) read with scikit-image: pixel units, axes ``YX`` or ``YXS``.

Cheap to import (numpy and scikit-image load on the first read): the CLI imports it for its suffixes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ReaderError

#: Suffixes of the 2D picture formats (lower case).
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def is_picture_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a 2D picture by its suffix."""
    return str(path).lower().endswith(PICTURE_SUFFIXES)


def read_picture(path: str | os.PathLike) -> list[Any]:
    """One volume with the picture's pixels: ``YX`` grey or ``YXS`` RGB(A), no physical pixel size.

    Raises
    ------
    ReaderError
        An unreadable file, or one that is neither grey nor RGB(A); the message names it.
    """
    import numpy as np
    from skimage.io import imread

    from ..geometry import Volume

    p = Path(path)
    try:
        data = np.asarray(imread(str(p)))
    except Exception as exc:  # imageio/PIL raise many types for damaged files  # noqa: BLE001
        raise ReaderError(f"cannot read picture {p}: {exc}") from exc
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        axes = "YXS"
    elif data.ndim == 2:
        axes = "YX"
    else:
        raise ReaderError(f"{p}: a picture of shape {data.shape} is neither grey nor RGB(A)")
    return [Volume(data, axes, name=p.stem, metadata={"source": str(p)})]


__all__ = ["PICTURE_SUFFIXES", "is_picture_path", "read_picture"]
