"""Pick the torch device to run a network on: CUDA, then Apple MPS, then CPU.

Every choice comes with a one-line reason that widgets and the CLI show to the
user (``"CUDA: NVIDIA H100 (80 GB)"``, ``"CPU: no CUDA or MPS device found"``).
Nothing here hard-codes a GPU: callers pass the preference the user chose.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    import torch

PREFERENCES = ("auto", "cpu", "cuda", "mps")


def _cuda_ok() -> bool:
    import torch

    try:
        return bool(torch.cuda.is_available())
    except Exception:  # broken driver installs raise instead of returning False  # noqa: BLE001
        return False


def _mps_ok() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except Exception:  # noqa: BLE001
        return False


def _cuda_name() -> str:
    import torch

    try:
        props = torch.cuda.get_device_properties(0)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    except Exception:  # noqa: BLE001
        return "device 0"


def available_devices() -> list[str]:
    """Device preferences that can be used on this machine.

    Returns
    -------
    list of str
        Always ``["auto", "cpu"]``, plus ``"cuda"`` and/or ``"mps"`` when present.
    """
    out = ["auto", "cpu"]
    if _cuda_ok():
        out.append("cuda")
    if _mps_ok():
        out.append("mps")
    return out


def select_device(preference: str = "auto") -> tuple[torch.device, str]:
    """Resolve a device preference to a ``torch.device`` and a reason.

    Parameters
    ----------
    preference : {"auto", "cpu", "cuda", "mps"}
        ``auto`` takes CUDA if available, else Apple MPS, else the CPU.  A
        ``torch.device`` or strings like ``"cuda:1"`` are accepted too.

    Returns
    -------
    device : torch.device
    reason : str
        Why this device was chosen, for display.

    Raises
    ------
    ParameterError
        If the preference is unknown or names a device this machine lacks.
    """
    import torch

    if isinstance(preference, torch.device):
        preference = str(preference)
    pref = str(preference or "auto").strip().lower()
    base = pref.split(":", 1)[0]
    if base not in PREFERENCES:
        raise ParameterError(f"unknown device {preference!r}; choose one of {', '.join(PREFERENCES)}")
    if base == "auto":
        if _cuda_ok():
            return torch.device("cuda"), f"CUDA: {_cuda_name()} (auto)"
        if _mps_ok():
            return torch.device("mps"), "MPS: Apple GPU (auto; no CUDA device)"
        return torch.device("cpu"), "CPU: no CUDA or MPS device found"
    if base == "cpu":
        return torch.device("cpu"), "CPU: chosen by the user"
    if base == "cuda":
        if not _cuda_ok():
            raise ParameterError(
                "device 'cuda' was requested but no CUDA GPU is available to PyTorch "
                f"(torch {torch.__version__}); use device='auto' or 'cpu'"
            )
        dev = torch.device(pref)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(f"device {pref!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
        return dev, f"CUDA: {_cuda_name()} (chosen by the user)"
    if not _mps_ok():
        raise ParameterError("device 'mps' was requested but Apple MPS is not available; use device='auto' or 'cpu'")
    return torch.device("mps"), "MPS: Apple GPU (chosen by the user)"


def physical_cores() -> int:
    """Number of physical CPU cores this process may use (at least 1)."""
    try:
        n_aff = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n_aff = os.cpu_count() or 1
    try:
        import psutil

        n_phys = psutil.cpu_count(logical=False) or n_aff
    except ImportError:
        n_phys = n_aff
    return max(1, min(n_aff, n_phys))


def configure_cpu_threads() -> int:
    """Set torch's intra-op threads to the physical core count, unless the user chose.

    Hyper-threads slow convolutions down, and torch sometimes defaults to the
    logical count.  ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the
    environment win.  Returns the thread count in effect.
    """
    import torch

    if not (os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS")):
        n = physical_cores()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    return torch.get_num_threads()
