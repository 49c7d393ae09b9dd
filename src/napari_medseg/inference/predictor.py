"""The network as the engine runs it: precision, folded batch norms, out-of-memory fallbacks.

* :func:`autocast_dtype` picks the autocast dtype for a device and a
  ``precision`` choice (bfloat16/float16 on GPUs, bfloat16 on CPUs with AMX
  tiles, else float32); :func:`inference_dtype` is the engine's choice,
  which also takes bfloat16 on CPUs with AVX-512 BF16 instructions.
* :func:`fold_batchnorm` / :func:`inference_network` make the private copy
  of a network that inference runs (conv -> batch-norm pairs folded,
  channels_last on CPU, weights in bfloat16 when the CPU runs bfloat16),
  cached per network.
* :class:`Predictor` runs that copy on numpy tile batches: resampling to
  the model's tile shape, test-time augmentation, activation, crop, and on
  CUDA out-of-memory half the batch, then the CPU.  ``backend`` picks
  torch (eager) or ONNX Runtime (:func:`onnx_session`, the optional
  ``[export]`` extra) for the network itself.
* :func:`predict_whole` is one padded whole-image forward pass (mirror
  padding to the network's divisor, forward, crop), shared by the training
  code's validation and by anything else that needs a network's output on
  a small image without tiles.

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ParameterError

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
#: Inference backends: ``auto`` (torch on every device; see :func:`resolve_backend`), torch eager, ONNX Runtime (CPU).
BACKENDS = ("auto", "torch", "onnxruntime")

_INFERENCE_NETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_INFERENCE_LOCK = threading.Lock()


def _cpu_has_amx() -> bool:
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except Exception:  # private API; absent in older torch  # noqa: BLE001
        return False


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX tiles).

    There oneDNN runs bfloat16 convolutions ~1.6-2x faster than float32
    (measured on an AVX-512 BF16 AMD EPYC, BENCHMARKS.md); without it torch
    emulates bfloat16 and it is slower than float32.
    """
    import torch

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        try:
            if bool(getattr(torch.cpu, probe)()):
                return True
        except Exception:  # private API; absent in older torch  # noqa: BLE001
            continue
    return False


def inference_dtype(device, precision: str):
    """The dtype the engine runs a network in: :func:`autocast_dtype`, but ``auto`` on CPU also takes native BF16.

    ``precision="auto"`` on a CPU gives bfloat16 when :func:`cpu_has_native_bf16`
    (AVX-512 BF16 or AMX), else float32 (None).  Other choices and devices as
    :func:`autocast_dtype`.
    """
    import torch

    if precision == "auto" and device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return autocast_dtype(device, precision)


def resolve_backend(backend: str, device, dtype) -> str:
    """The backend that runs the network: ``"torch"`` or ``"onnxruntime"``.

    ``auto`` is torch everywhere (the only backend on GPUs, and no optional
    package or one-off export).  On the reference AVX-512 BF16 CPU the
    winner depends on the image (BENCHMARKS.md, "Speed near the machine's
    limit"): on 1024^2 tiles torch in bfloat16 was ~1.3x faster than ONNX
    Runtime in float32, while over the small ``dsb2018/val`` images ONNX
    Runtime took 0.72x torch bfloat16's time; so the user chooses.
    ``onnxruntime`` needs the CPU, float32 and the optional package
    (``pip install "napari-medseg[export]"``).

    Raises
    ------
    ParameterError
        Unknown backend, or ONNX Runtime with a GPU device or a reduced precision.
    MissingDependencyError
        ``onnxruntime`` is not installed.
    """
    if backend not in BACKENDS:
        raise ParameterError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend in ("auto", "torch"):
        return "torch"
    if device.type != "cpu":
        raise ParameterError(f"backend 'onnxruntime' runs on the CPU only; got device {device.type!r}")
    if dtype is not None:
        raise ParameterError("backend 'onnxruntime' runs float32 only; use precision='float32' (or 'auto' "
                             "on a CPU without native bfloat16)")
    from ..models.export import require

    require("onnxruntime", "backend 'onnxruntime'")
    return "onnxruntime"


def autocast_dtype(device, precision: str):
    """Autocast dtype for a device and precision choice.

    Parameters
    ----------
    device : torch.device
    precision : {"auto", "float32", "bfloat16", "float16"}
        ``auto``: bfloat16 on CUDA with bf16 support, float16 on other CUDA
        and on MPS, bfloat16 on CPUs with AMX tiles, float32 elsewhere.

    Returns
    -------
    torch.dtype or None
        None means plain float32 (no autocast).
    """
    import torch

    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "float16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if _cpu_has_amx() else None


def fold_batchnorm(net):
    """Copy of ``net`` (eval mode) with each conv -> batch-norm pair folded into one conv."""
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(net).eval()
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        mods = list(seq.children())
        out, i = [], 0
        while i < len(mods):
            a = mods[i]
            b = mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(a, (nn.Conv2d, nn.Conv3d)) and isinstance(b, (nn.BatchNorm2d, nn.BatchNorm3d)) \
                    and b.track_running_stats and b.running_mean is not None:
                out.append(fuse_conv_bn_eval(a, b))
                i += 2
            else:
                out.append(a)
                i += 1
        if len(out) != len(mods):
            for k in list(seq._modules):
                del seq._modules[k]
            for k, m in enumerate(out):
                seq.add_module(str(k), m)
    return net


def inference_network(net, channels_last: bool = False, dtype=None, fuse: bool = False):
    """The network as run for inference: batch norms folded, optionally channels_last; cached per network.

    ``dtype`` (e.g. ``torch.bfloat16``): the folded weights are cast to it,
    so that the network runs wholly in that dtype without autocast's
    per-call weight casts (the CPU path; on GPUs autocast is used instead).
    ``fuse``: a 2D U-Net on the CPU runs as a
    :class:`~napari_medseg.inference.fused.FusedUNet` (oneDNN conv+ReLU and
    conv+add+ReLU, no concatenation) when torch has those operators and the
    fused pass matches the folded one; else the folded network.
    """
    import torch

    key = (bool(channels_last), str(next(net.parameters()).device) if any(True for _ in net.parameters()) else "",
           str(dtype), bool(fuse))
    with _INFERENCE_LOCK:
        hit = _INFERENCE_NETS.get(net, {}).get(key)
    if hit is not None:
        return hit
    fused = fold_batchnorm(net)
    if dtype is not None:
        fused = fused.to(dtype)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    if fuse:
        from .fused import build_fused

        fused = build_fused(fused) or fused
    with _INFERENCE_LOCK:
        _INFERENCE_NETS.setdefault(net, {})[key] = fused
    return fused


class Predictor:
    """Runs the network on numpy tile batches on a device, with OOM fallbacks.

    ``__call__(x, crop)`` takes ``(B, C, *tile)`` float32 and returns the
    activated outputs (sigmoid for instance models, softmax for semantic)
    cropped to ``crop``, as float32 numpy ``(B, K, *core)``.  With ``tta``
    the activated outputs are averaged over the identity and the flips of the
    last two axes.

    Parameters
    ----------
    path : path
        The model folder (reloaded on the CPU after a CUDA out-of-memory).
    net : torch.nn.Module
        The loaded network (left as it is; a folded copy runs).
    card : ModelCard
    device : torch.device
    reason : str
        Why this device (extended when a fallback happens).
    batch_size : int
        Largest number of tiles per forward pass (halved on out-of-memory).
    n_extra : int
        Leading spatial axes of a tile the model does not see (size 1: a 2D
        model on a stack).
    model_tile : list of int, optional
        Tile shape the network sees (tiles are resampled to it and back).
    precision : {"auto", "float32", "bfloat16", "float16"}
        See :func:`inference_dtype`.
    tta : bool
        Average over mirror images (4 passes).
    backend : {"auto", "torch", "onnxruntime"}
        What runs the network (see :func:`resolve_backend`).
    """

    #: flips (tensor dims) averaged by test-time augmentation, besides the identity
    TTA_FLIPS = ((-1,), (-2,), (-2, -1))

    def __init__(self, path, net, card, device, reason: str, batch_size: int, n_extra: int,
                 model_tile: list[int] | None, precision: str = "auto", tta: bool = False,
                 backend: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if backend not in BACKENDS:
            raise ParameterError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend_choice = backend
        self.path = path
        self.card = card
        self.reason = reason
        self.max_batch = batch_size
        self.n_extra = n_extra
        self.model_tile = model_tile
        self.precision = precision
        self.tta = bool(tta)
        self.instance = card.kind == "instance"
        # TTA: channel order of a mirrored image's maps (star rays change direction)
        self._flip_perm = {}
        if self.instance:
            from .representations import representation_of

            rep = representation_of(card)
            for dims in self.TTA_FLIPS:
                perm = rep.flip_permutation(dims)
                if not np.array_equal(perm, np.arange(len(perm))):
                    self._flip_perm[dims] = perm
        self._set_device(net, device)

    def _set_device(self, net, device) -> None:
        import torch

        self.device = device
        self.net = net
        self.dtype = inference_dtype(device, self.precision)
        self.dtype_name = "float32" if self.dtype is None else str(self.dtype).replace("torch.", "")
        self.backend = resolve_backend(self.backend_choice, device, self.dtype)
        self.channels_last = device.type == "cpu" and self.card.dims == 2 and self.backend == "torch"
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every tile has the same shape
        if device.type == "cpu":
            # denormal floats make oneDNN convolutions of some weights 5-10x slower
            torch.set_flush_denormal(True)
        # a private copy with batch norms folded into the convolutions (~20 % faster
        # on CPU, same result to float rounding), channels_last on CPU (~1.8x for
        # 2D oneDNN convolutions), on CPU wholly in bfloat16 when that is the dtype
        # (no autocast casts per call); the cached network itself is left as loaded
        #: the network's weights and activations are in :attr:`dtype` (CPU), rather than autocast (GPU)
        self.cast_weights = device.type == "cpu" and self.dtype is not None
        self._session = None
        if self.backend == "onnxruntime":
            self.net = inference_network(net)
            self._session = onnx_session_for(self.net, self.card)
        else:
            self.net = inference_network(net, self.channels_last, self.dtype if self.cast_weights else None,
                                         fuse=device.type == "cpu")
        #: the network runs as oneDNN fused operators (:mod:`.fused`)
        self.fused = type(self.net).__name__ == "FusedUNet"

    def autocast(self):
        """Context manager running the network in :attr:`dtype` (a no-op for float32 and for cast weights)."""
        import contextlib

        import torch

        if self.dtype is None or self.cast_weights:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def network(self, xt, native: bool = False):
        """Raw network output (logits) for a float32 input tensor on :attr:`device`, as the backend runs it.

        ``xt`` is ``(B, C, *tile)``; 4D inputs should already be channels_last
        when :attr:`channels_last` (the engine's loop does that once per batch).
        The output is a float32 tensor, or with ``native`` the network's own
        (bfloat16 with cast weights, channels_last for channels_last input),
        which the engine converts once after cropping.
        """
        import torch

        if self._session is not None:
            from ..models.export.onnx import run_onnx

            return torch.from_numpy(run_onnx(self._session, xt.contiguous().numpy()))
        if self.cast_weights:
            xt = xt.to(self.dtype)
        with self.autocast():
            y = self.net(xt)
        return y if native else y.float()

    def _forward(self, x: np.ndarray, crop) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        ne = self.n_extra
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device)
            b, c = xt.shape[:2]
            full = xt.shape[2:]
            if ne:  # 2D model on a stack: leading spatial axes have size 1 in a tile
                xt = xt.reshape(b, c, *full[ne:])
            spatial = xt.shape[2:]
            if self.model_tile is not None:
                mode = "bilinear" if len(spatial) == 2 else "trilinear"
                shrink = any(m < s for m, s in zip(self.model_tile, spatial, strict=False))
                xt = F.interpolate(xt, size=self.model_tile, mode=mode, align_corners=False,
                                   antialias=shrink and mode == "bilinear")
            if self.channels_last and xt.ndim == 4:
                xt = xt.contiguous(memory_format=torch.channels_last)
            def activate(t):
                return torch.sigmoid(t) if self.instance else torch.softmax(t, dim=1)

            # native dtype only on the plain path; TTA's sums and the resampling stay in float32
            y = self.network(xt, native=not self.tta and self.model_tile is None)
            if self.tta:  # average probabilities (not logits) over mirror images
                y = activate(y)
                for dims in self.TTA_FLIPS:
                    yf = torch.flip(activate(self.network(torch.flip(xt, dims))), dims)
                    if dims in self._flip_perm:
                        yf = yf[:, torch.from_numpy(self._flip_perm[dims]).to(yf.device)]
                    y += yf
                y /= 1 + len(self.TTA_FLIPS)
            if self.model_tile is not None:
                y = F.interpolate(y, size=tuple(spatial), mode=mode, align_corners=False)
            if ne:
                y = y.reshape(b, y.shape[1], *full)
            # crop, then float32 in (N, C, ...) order in one pass: the network's output is
            # channels_last (and bfloat16 when the weights are); a strided float32 copy,
            # a sigmoid on it and numpy's copy of that cost ~3x this (BENCHMARKS.md, issue 17)
            y = y[(slice(None), slice(None), *crop)].to(torch.float32, memory_format=torch.contiguous_format)
            if not self.tta:
                y = torch.sigmoid_(y) if self.instance else torch.softmax(y, dim=1)
            return y.cpu().numpy()

    def _fallback_to_cpu(self, why: str) -> None:
        import torch

        from ..models.cache import get_model

        msg = f"{why}; continuing on the CPU (slower)"
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        from ..models.device import configure_cpu_threads

        net, _ = get_model(self.path, "cpu")
        self._set_device(net, torch.device("cpu"))
        self.reason = f"{self.reason}; fell back to CPU: {why}"
        self.max_batch = 1
        configure_cpu_threads()

    def __call__(self, x: np.ndarray, crop) -> np.ndarray:
        import torch

        oom_types = tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
                           torch.cuda.OutOfMemoryError})
        outs = []
        i = 0
        while i < len(x):
            n = min(self.max_batch, len(x) - i)
            try:
                outs.append(self._forward(x[i:i + n], crop))
            except (RuntimeError, *oom_types) as e:
                is_oom = isinstance(e, oom_types) or "out of memory" in str(e).lower()
                if not is_oom or self.device.type == "cpu":
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if n > 1:
                    self.max_batch = max(1, n // 2)
                    warnings.warn(f"{self.device.type.upper()} out of memory with {n} tiles per batch; "
                                  f"retrying with {self.max_batch}", RuntimeWarning, stacklevel=3)
                    self.reason = f"{self.reason}; batch reduced to {self.max_batch} after out-of-memory"
                else:
                    self._fallback_to_cpu(f"{self.device.type.upper()} out of memory even with one tile per batch")
                continue
            i += n
        return np.concatenate(outs) if len(outs) > 1 else outs[0]


def as_float16(a: np.ndarray) -> np.ndarray:
    """``a.astype(np.float16)`` for a float32 array, converted by torch (the same values, ~8x faster).

    numpy converts float32 to float16 element by element; torch's vectorised
    conversion rounds the same way (to nearest, ties to even, subnormals kept:
    checked for every float16 value and its neighbours in the tests).  Other
    dtypes go through numpy.  (NaN stays NaN; its payload bits may differ.)
    """
    import torch

    a = np.asarray(a)
    if a.dtype != np.float32 or a.size == 0:
        return a.astype(np.float16)
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float16).numpy()


_ONNX_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def onnx_session_for(net, card):
    """An ONNX Runtime CPU session of ``net`` (exported once per network and thread count, then cached).

    The network (already folded) is written to a temporary ONNX file with
    :func:`napari_medseg.models.export.onnx.export_onnx` (dynamic batch and
    spatial size), loaded with torch's intra-op thread count and deleted.
    """
    import tempfile
    from pathlib import Path

    import torch

    from ..models.export.onnx import export_onnx, onnx_session

    threads = torch.get_num_threads()
    with _INFERENCE_LOCK:
        hit = _ONNX_SESSIONS.get(net, {}).get(threads)
    if hit is not None:
        return hit
    with tempfile.TemporaryDirectory(prefix="medseg-onnx-") as tmp:
        path = export_onnx(net, Path(tmp) / "net.onnx", in_channels=int(card.architecture.get("in_channels", 1)),
                           dims=int(card.dims))
        session = onnx_session(path, threads=threads)
    with _INFERENCE_LOCK:
        _ONNX_SESSIONS.setdefault(net, {})[threads] = session
    return session


def predict_whole(
    net_or_predictor,
    x: np.ndarray,
    *,
    margin: int = 0,
    activation: str | Callable | None = None,
    channels_last: bool = False,
    crop: bool = True,
    device=None,
) -> np.ndarray:
    """One forward pass over a whole (small) image, mirror-padded to the network's divisor.

    The ``(C, *spatial)`` input is padded with numpy's ``reflect`` mode by
    ``margin`` pixels before and ``margin`` plus what reaches a multiple of
    the network's ``divisor`` (default 8) after, along every spatial axis;
    the output is cropped back to the image (or returned on the padded
    grid).  No tiles: memory grows with the image.

    Parameters
    ----------
    net_or_predictor : torch.nn.Module or Predictor
        A network (run as it is, in float32, in ``torch.inference_mode``) or
        a :class:`Predictor` built with ``n_extra=0`` and no
        ``model_tile`` (run with its device, precision, folded network and
        activation: sigmoid for instance models, softmax for semantic).
    x : ndarray, shape (C, Y, X) or (C, Z, Y, X)
        Normalised input, float32 (the dtype is kept as given).
    margin : int
        Context added on each side (pixels), beyond the divisor padding.
    activation : {None, "sigmoid", "softmax"} or callable
        Network only: applied to the float32 output tensor ``(1, K, ...)``
        on the device before cropping (a callable may change it in place
        and must return it); None returns the raw outputs.  Must be None
        with a Predictor, which applies its own.
    channels_last : bool
        Network only: feed a 4D input in ``torch.channels_last`` memory
        format (faster oneDNN convolutions on the CPU).
    crop : bool
        True: the output on the image grid; False: on the padded grid (the
        image at ``[margin:margin + n]`` per axis).
    device : torch.device or str, optional
        Network only: where the input goes; default the device of the
        network's parameters.

    Returns
    -------
    ndarray of float32, shape (K, *spatial)
        Outputs per channel, spatial axes as in ``x``.
    """
    m = int(margin)
    if isinstance(net_or_predictor, Predictor):
        pred = net_or_predictor
        if activation is not None or channels_last or device is not None:
            raise ParameterError("a Predictor uses its own activation, memory format and device")
        if pred.n_extra or pred.model_tile is not None:
            raise ParameterError("predict_whole needs a Predictor with n_extra=0 and no model_tile")
        d = int(getattr(pred.net, "divisor", 8))
        xp = _pad_to_divisor(x, m, d)
        win = _window(x.shape[1:], m, crop)
        return pred(xp[None], win)[0]

    import torch

    net = net_or_predictor
    dev = next(net.parameters()).device if device is None else device
    d = int(getattr(net, "divisor", 8))
    xp = _pad_to_divisor(x, m, d)
    if isinstance(activation, str):
        if activation not in ("sigmoid", "softmax"):
            raise ParameterError(f"activation must be None, 'sigmoid', 'softmax' or a callable, got {activation!r}")
        activation = torch.sigmoid if activation == "sigmoid" else (lambda t: torch.softmax(t, dim=1))
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(xp))[None].to(dev)
        if channels_last and xt.ndim == 4:
            xt = xt.contiguous(memory_format=torch.channels_last)
        y = net(xt).float()
        if activation is not None:
            y = activation(y)
        y = y[(0, slice(None), *_window(x.shape[1:], m, crop))]
        return y.cpu().numpy()


def _pad_to_divisor(x: np.ndarray, margin: int, divisor: int) -> np.ndarray:
    """``(C, *spatial)`` mirror-padded by ``margin`` before and ``margin`` + up to a multiple of ``divisor`` after."""
    return np.pad(x, [(0, 0)] + [(margin, margin + (-n) % divisor) for n in x.shape[1:]], mode="reflect")


def _window(spatial: Sequence[int], margin: int, crop: bool) -> tuple[slice, ...]:
    """The image's place in the padded output (everything when not cropping)."""
    if not crop:
        return (slice(None),) * len(spatial)
    return tuple(slice(margin, margin + n) for n in spatial)
