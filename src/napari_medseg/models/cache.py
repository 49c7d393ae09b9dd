"""Load each model once per session and device.

The cache key is ``(resolved folder, card and weights modification times,
device)``: saving new weights into a model folder (fine-tuning) invalidates
its entry.  Networks are in eval mode; callers must not train them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .spec import ModelCard, load_model, model_paths

_LOCK = threading.Lock()
_CACHE: dict[tuple, tuple[Any, ModelCard]] = {}
#: Most entries kept (oldest dropped first); a 2D U-Net is ~30 MB.
MAX_ENTRIES = 4


def _key(path: str | Path, device: Any) -> tuple:
    card_path, w_path = model_paths(path)
    stamps = tuple(p.stat().st_mtime_ns if p.exists() else None for p in (card_path, w_path))
    return (str(Path(card_path).resolve()), stamps, str(device))


def get_model(path: str | Path, device: Any = "cpu") -> tuple[Any, ModelCard]:
    """Return the cached ``(network, card)`` for a model folder on ``device``.

    Parameters
    ----------
    path : path
        Model folder (or card / weights file).
    device : torch.device or str
        Device to load onto.
    """
    key = _key(path, device)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE[key] = _CACHE.pop(key)  # most recently used last
            return hit
    net, card = load_model(path, device)
    with _LOCK:
        # drop stale versions of the same model on the same device
        for k in [k for k in _CACHE if k[0] == key[0] and k[2] == key[2]]:
            del _CACHE[k]
        _CACHE[key] = (net, card)
        while len(_CACHE) > MAX_ENTRIES:
            del _CACHE[next(iter(_CACHE))]
    return net, card


def clear() -> None:
    """Forget every cached network (frees their memory)."""
    with _LOCK:
        _CACHE.clear()


def cache_size() -> int:
    """Number of networks currently cached."""
    return len(_CACHE)
