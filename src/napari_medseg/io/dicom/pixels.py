"""Pixel data of one DICOM file as a numpy array, and the rescale to real values.

Uncompressed little-endian data (the common case for CT/MR series) is read
straight from the file at the offset found while parsing the header
(``np.fromfile``, no pydicom decode, no intermediate bytes object): that is what
makes a 300-slice series load as fast as SimpleITK/GDCM.  Everything else
(JPEG baseline/lossless, JPEG-LS, JPEG 2000, RLE, big-endian, deflate,
bit-packed, colour) goes through :func:`pydicom.pixels.pixel_array` with the
pylibjpeg / openjpeg / rle plugins; YBR colour is converted to RGB there and
PALETTE COLOR is expanded with :func:`pydicom.pixels.apply_color_lut`.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ReaderError
from .tags import text, ushort

NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # implicit / explicit VR little endian
DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


@dataclass
class PixelFormat:
    """What the image pixel module says about the stored values.

    Attributes
    ----------
    rows, cols, samples, n_frames : int
        Frame size, samples per pixel and number of frames.
    bits_allocated, bits_stored, pixel_representation : int
        Storage; ``pixel_representation`` 1 means two's complement signed.
    photometric : str
        PhotometricInterpretation (``MONOCHROME2``, ``RGB``, ``YBR_FULL_422``...).
    transfer_syntax : str
        Transfer Syntax UID.
    float_data : bool
        Float/Double Float Pixel Data instead of Pixel Data.
    """

    rows: int
    cols: int
    samples: int
    n_frames: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    transfer_syntax: str
    float_data: bool = False
    palette_bits: int = 8

    @property
    def rgb(self) -> bool:
        """Whether decoded frames have 3 colour samples (palette colour is expanded to RGB)."""
        return self.samples == 3 or self.photometric == "PALETTE COLOR"

    @property
    def stored_range(self) -> tuple[int, int]:
        """Smallest and largest value ``bits_stored`` can hold."""
        bs = self.bits_stored
        if self.pixel_representation:
            return -(1 << (bs - 1)), (1 << (bs - 1)) - 1
        return 0, (1 << bs) - 1

    def frame_shape(self) -> tuple[int, ...]:
        return (self.rows, self.cols, 3) if self.rgb else (self.rows, self.cols)


def pixel_format(ds: Any, source: str = "") -> PixelFormat:
    """Read the image pixel module of a pydicom header; ReaderError when incomplete or absurd."""
    where = f"{source}: " if source else ""
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not ts:
        raise ReaderError(f"{where}no Transfer Syntax UID in the file meta information")
    try:
        rows, cols = ushort(ds, "Rows"), ushort(ds, "Columns")
        samples = ushort(ds, "SamplesPerPixel") or 1
        n_frames = int(float(text(ds, "NumberOfFrames") or 1))
        ba = ushort(ds, "BitsAllocated")
        bs = ushort(ds, "BitsStored") or ba
        pr = ushort(ds, "PixelRepresentation") or 0
        if rows is None or cols is None or ba is None:
            raise ValueError("Rows, Columns or BitsAllocated missing")
        pi = (text(ds, "PhotometricInterpretation") or "MONOCHROME2").upper()
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise ReaderError(f"{where}incomplete or invalid image pixel module "
                          f"(Rows/Columns/BitsAllocated/NumberOfFrames): {exc}") from exc
    if rows <= 0 or cols <= 0 or n_frames <= 0 or samples not in (1, 3) or ba not in (1, 8, 16, 32, 64) \
            or not 0 < bs <= ba:
        raise ReaderError(f"{where}unsupported image format: {rows}x{cols} pixels, {n_frames} frame(s), "
                          f"{samples} sample(s), {bs}/{ba} bits")
    float_data = (0x7FE00008 in ds or 0x7FE00009 in ds) and 0x7FE00010 not in ds
    palette_bits = 8
    if pi == "PALETTE COLOR":
        try:
            palette_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise ReaderError(f"{where}PALETTE COLOR image without a valid palette descriptor") from exc
    return PixelFormat(rows, cols, samples, n_frames, ba, bs, pr, pi, ts, bool(float_data), palette_bits)


def stored_dtype(fmt: PixelFormat) -> np.dtype:
    """Numpy dtype of the decoded stored values (before rescale)."""
    if fmt.float_data:
        return np.dtype(np.float32 if fmt.bits_allocated == 32 else np.float64)
    if fmt.photometric == "PALETTE COLOR":
        return np.dtype(np.uint16) if fmt.palette_bits > 8 else np.dtype(np.uint8)  # LUT entries
    nbytes = max(1, fmt.bits_allocated // 8)
    kind = "i" if fmt.pixel_representation and fmt.samples == 1 else "u"
    return np.dtype(f"{kind}{nbytes}")


def native_offset(fp: Any, fmt: PixelFormat) -> int | None:
    """File offset of the first pixel byte when the fast ``np.fromfile`` path applies, else None.

    ``fp`` must be positioned at the start of the (7FE0,0010) element (where
    ``dcmread(..., stop_before_pixels=True)`` leaves it).  Only uncompressed
    little-endian, monochrome, 8/16/32-bit integer data qualify.
    """
    if fmt.transfer_syntax not in NATIVE_LE or fmt.samples != 1 or fmt.bits_allocated not in (8, 16, 32) \
            or fmt.float_data or fmt.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8 or head[:4] != PIXEL_DATA_TAG:
        return None
    if fmt.transfer_syntax == NATIVE_LE[0]:
        (length,), skip = struct.unpack("<I", head[4:8]), 8
    elif head[4:6] in (b"OB", b"OW", b"UN"):
        (length,), skip = struct.unpack("<I", head[8:12]), 12
    else:
        return None
    expected = fmt.rows * fmt.cols * fmt.n_frames * fmt.bits_allocated // 8
    if length == 0xFFFFFFFF or length < expected:
        return None  # undefined length or short: let pydicom explain
    return start + skip


def decode(path: str, fmt: PixelFormat, offset: int | None, header: Any = None) -> np.ndarray:
    """All frames of one file, ``(n_frames, rows, cols[, 3])`` in :func:`stored_dtype`.

    Bits above BitsStored are cleared (unsigned) or sign-extended (signed); YBR
    becomes RGB; PALETTE COLOR is expanded with the header's LUT.

    Raises
    ------
    ReaderError
        Truncated or corrupt data, or a transfer syntax no installed plugin decodes.
    """
    arr = _read_native(path, fmt, offset) if offset is not None else _decode_pydicom(path, fmt, header)
    return _correct_unused_bits(arr, fmt)


def read_native_into(path: str, fmt: PixelFormat, offset: int, targets: list[tuple[int, np.ndarray]]) -> None:
    """Read uncompressed frames straight into preallocated arrays (no intermediate copy).

    Parameters
    ----------
    path : str
        File name.
    fmt : PixelFormat
        Its pixel format (native little-endian, monochrome; see :func:`native_offset`).
    offset : int
        File offset of the first pixel byte.
    targets : list of (int, ndarray)
        ``(frame number, destination)`` pairs; each destination is a C-contiguous
        ``(rows, cols)`` array of :func:`stored_dtype`.
    """
    nbytes = fmt.rows * fmt.cols * fmt.bits_allocated // 8
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI machine
        for sub, dest in targets:
            dest[...] = decode(path, fmt, offset)[sub]
        return
    try:
        with open(path, "rb", buffering=0) as fp:
            for sub, dest in targets:
                fp.seek(offset + sub * nbytes)
                view = memoryview(dest).cast("B")
                got = 0
                while got < nbytes:
                    n = fp.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got != nbytes:
                    raise ReaderError(f"{path}: pixel data truncated (frame {sub}: {got} of {nbytes} bytes present)")
                _correct_unused_bits(dest, fmt)
    except OSError as exc:
        raise ReaderError(f"{path}: cannot read pixel data: {exc}") from exc


def _correct_unused_bits(arr: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Clear (unsigned) or sign-extend (signed) the bits above BitsStored, in place when possible."""
    if arr.dtype.kind in "iu" and fmt.bits_stored < arr.dtype.itemsize * 8 and fmt.photometric != "PALETTE COLOR":
        shift = arr.dtype.itemsize * 8 - fmt.bits_stored
        if not arr.flags.writeable:
            arr = arr.copy()
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)  # arithmetic shift: sign extension for signed dtypes
    return arr


def _read_native(path: str, fmt: PixelFormat, offset: int) -> np.ndarray:
    dtype = stored_dtype(fmt).newbyteorder("<")
    count = fmt.rows * fmt.cols * fmt.n_frames
    try:
        arr = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    except (OSError, ValueError) as exc:
        raise ReaderError(f"{path}: cannot read pixel data: {exc}") from exc
    if arr.size != count:
        raise ReaderError(f"{path}: pixel data truncated ({arr.size} of {count} pixels present)")
    return arr.reshape(fmt.n_frames, fmt.rows, fmt.cols).astype(stored_dtype(fmt), copy=False)


def _decode_pydicom(path: str, fmt: PixelFormat, header: Any) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_color_lut, pixel_array

    try:
        arr = pixel_array(pydicom.dcmread(path)) if fmt.transfer_syntax == DEFLATED else pixel_array(path)
        if fmt.photometric == "PALETTE COLOR":
            if header is None:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            arr = apply_color_lut(arr, header)
    except ReaderError:
        raise
    except (NotImplementedError, RuntimeError) as exc:
        from pydicom.uid import UID

        raise ReaderError(f"{path}: cannot decode pixel data with transfer syntax "
                          f"{UID(fmt.transfer_syntax).name}: {exc}") from exc
    except Exception as exc:  # pydicom raises ValueError/AttributeError/KeyError/... on corrupt data
        raise ReaderError(f"{path}: corrupt or truncated pixel data ({type(exc).__name__}: {exc})") from exc
    shape = (fmt.n_frames,) + fmt.frame_shape()
    if arr.size != int(np.prod(shape)):
        raise ReaderError(f"{path}: decoded {arr.shape} pixels, expected {shape}")
    arr = arr.reshape(shape)
    want = stored_dtype(fmt)
    if arr.dtype != want:
        if arr.dtype.kind == want.kind or (arr.dtype.kind in "iu" and want.kind in "iu"):
            arr = arr.astype(want)  # same kind or signedness only: keep the bit pattern
        else:
            raise ReaderError(f"{path}: decoder returned {arr.dtype} pixels, expected {want}")
    return arr


def invert_monochrome1(stored: np.ndarray, fmt: PixelFormat) -> None:
    """In place: stored value ``x`` becomes ``(lo + hi) - x`` with ``[lo, hi]`` the BitsStored range.

    MONOCHROME1 shows the minimum as white; after this higher values are brighter
    and the values stay inside the same range and dtype.
    """
    lo, hi = fmt.stored_range
    if lo + hi == -1:  # signed: (lo + hi) - x == ~x
        np.invert(stored, out=stored)
    else:
        np.subtract(stored.dtype.type(lo + hi), stored, out=stored)


def rescale(stored: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray, frame_axes: int,
            stored_range: tuple[int, int] | None = None) -> np.ndarray:
    """Apply ``value = slope * stored + intercept`` per frame, in the smallest exact dtype.

    Parameters
    ----------
    stored : ndarray
        ``frames... x rows x cols[ x S]`` stored values; may be reused (modified) for the result.
    slopes, intercepts : ndarray
        One value per frame, shape ``stored.shape[:frame_axes]``.
    frame_axes : int
        Number of leading axes that index frames (e.g. 2 for ``(T, Z, Y, X)``).
    stored_range : (int, int), optional
        Bounds of the stored values (from BitsStored); when the rescaled bounds
        already fit int16 the data are not scanned for their min/max.

    Returns
    -------
    ndarray
        ``uint8`` when stored is 8-bit unsigned and not rescaled; else ``int16`` when
        every slope/intercept is an integer and the result fits, ``int32`` (``int64``)
        when it does not; ``float32`` when a slope/intercept is fractional or the data
        are float.  Integer results are exact: the arithmetic is done in the result
        dtype, where two's-complement wrap-around cannot change a result that fits.
    """
    slopes = np.asarray(slopes, dtype=float)
    intercepts = np.asarray(intercepts, dtype=float)
    identity = bool((slopes == 1).all() and (intercepts == 0).all())
    if stored.dtype.kind == "f" or not (np.mod(slopes, 1) == 0).all() or not (np.mod(intercepts, 1) == 0).all():
        out = stored.astype(np.float32) if stored.dtype != np.float32 else stored
        if identity:
            return out
        for idx in np.ndindex(*slopes.shape):
            out[idx] = stored[idx].astype(np.float64) * slopes[idx] + intercepts[idx]
        return out
    if identity and stored.dtype in (np.uint8, np.int16, np.bool_):
        return stored.astype(np.uint8) if stored.dtype == np.bool_ else stored
    uniform = bool((slopes == slopes.flat[0]).all() and (intercepts == intercepts.flat[0]).all())
    if uniform:
        s, b = int(slopes.flat[0]), int(intercepts.flat[0])
        lo = hi = None
        if stored_range is not None:  # the BitsStored bounds may already prove that int16 suffices
            mn, mx = stored_range
            lo, hi = min(s * mn, s * mx) + b, max(s * mn, s * mx) + b
        if lo is None or lo < -32768 or hi > 32767:
            mn, mx = (int(stored.min()), int(stored.max())) if stored.size else (0, 0)
            lo, hi = min(s * mn, s * mx) + b, max(s * mn, s * mx) + b
    else:
        flat = stored.reshape(slopes.shape + (-1,))
        mn = flat.min(axis=-1).astype(np.int64)
        mx = flat.max(axis=-1).astype(np.int64)
        s, b = slopes.astype(np.int64), intercepts.astype(np.int64)
        lo, hi = int(np.minimum(s * mn, s * mx).min() + b.min()), int(np.maximum(s * mn, s * mx).max() + b.max())
    out_dtype = np.dtype(np.int16)
    for cand in (np.int16, np.int32, np.int64):
        info = np.iinfo(cand)
        if info.min <= lo and hi <= info.max:
            out_dtype = np.dtype(cand)
            break
    if stored.dtype == out_dtype:
        out = stored
    elif stored.dtype.itemsize == out_dtype.itemsize:
        out = stored.view(out_dtype)  # same bits; wrap-around arithmetic below stays exact
    else:
        out = stored.astype(out_dtype)
    if identity:
        return out
    if uniform:
        _affine_inplace(out, int(slopes.flat[0]), int(intercepts.flat[0]))
    else:
        for idx in np.ndindex(*slopes.shape):
            _affine_inplace(out[idx], int(slopes[idx]), int(intercepts[idx]))
    return out


def _affine_inplace(a: np.ndarray, s: int, b: int) -> None:
    """``a = s * a + b`` modulo 2**bits in ``a``'s dtype (exact when the true result fits)."""
    wrap = np.array([s, b], dtype=np.int64).astype(a.dtype)  # constants reduced modulo 2**bits
    if s != 1:
        np.multiply(a, wrap[0], out=a, casting="unsafe")
    if b != 0:
        np.add(a, wrap[1], out=a, casting="unsafe")
