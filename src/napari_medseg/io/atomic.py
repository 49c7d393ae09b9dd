"""Write a file so that a crash or a kill never leaves a half-written file under its name."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

#: ``.<name>.<pid>.<hex>.part<suffix>``: the writing process's id lets a later write remove what a killed
#: one left behind (SIGKILL cannot be caught) without touching a live writer's file.
_PART = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{12}\.part")


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

    A destination that is a symlink keeps being one: the file it points to is
    replaced.  A destination that exists keeps its permission bits (a 0600
    file stays 0600).  Temporary files that a killed writer left beside the
    destination (its process is gone) are removed.

    Returns
    -------
    Path
        ``path``.
    """
    p = Path(path)
    if p.is_symlink():
        p = Path(os.path.realpath(p))  # write through the link, never replace it by a file
    p.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(p)
    suffix = "".join(p.suffixes[-2:]) if p.name.lower().endswith(".nii.gz") else p.suffix
    tmp = p.parent / f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.part{suffix}"
    try:
        mode = stat.S_IMODE(os.stat(p).st_mode)
    except OSError:
        mode = None
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p


def _remove_stale_parts(p: Path) -> None:
    """Delete ``.<p.name>.<pid>.*.part*`` files whose writing process no longer exists."""
    try:
        entries = list(os.scandir(p.parent))
    except OSError:
        return
    for e in entries:
        m = _PART.match(e.name)
        if not m or m.group("name") != p.name:
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(e.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its file alone
    return True
