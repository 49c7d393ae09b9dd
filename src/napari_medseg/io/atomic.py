"""Write a file so that a crash or a kill never leaves a half-written file under its name."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file sits in the same folder (so the rename is atomic) and
    is removed when ``write`` fails or the process is interrupted.  It is not
    made with ``mkstemp``, whose 0600 mode would stick to the final file.

    Parameters
    ----------
    path : str or path-like
        Destination; its folder is created when missing.
    write : callable
        Writes the whole file to the path it is given.  The suffix of that
        path is the destination's (``.nii.gz`` stays ``.nii.gz``), so writers
        that choose a format by suffix keep working.

    Returns
    -------
    Path
        ``path``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(p.suffixes[-2:]) if p.name.lower().endswith(".nii.gz") else p.suffix
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:12]}.part{suffix}"
    try:
        write(tmp)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p
