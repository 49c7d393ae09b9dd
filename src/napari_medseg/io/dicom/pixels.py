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
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
#: Largest ratio of decoded to compressed bytes believed before anything is allocated (RLE tops out at
#: about 64, deflate at 1032; JPEG-LS / JPEG 2000 of a blank frame reach a few thousand).
MAX_COMPRESSION_RATIO = 5000
MAX_DEFLATE_RATIO = 1100
#: Decoded sizes up to this many bytes are believed whatever the file size (small images compress well).
SMALL_DECODED_BYTES = 64 * 2**20
#: Largest magnitude a rescaled value may reach (no modality measures beyond it: CT is +-32768 HU, PET
#: activity concentrations stay below 1e10 Bq/ml); larger RescaleSlope/Intercept are header damage.
MAX_RESCALED = 1e15
_UNDEFINED = 0xFFFFFFFF
_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD) sequence delimitation item
_LONG_VRS = (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"SQ", b"UC", b"UR")


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


def pixel_format(ds: Any, source: str = "", pixel_tag: int | None = None) -> PixelFormat:
    """Read the image pixel module of a pydicom header; ReaderError when incomplete or absurd.

    ``pixel_tag`` is the tag of the pixel data element when known (``0x7FE00008`` Float Pixel Data,
    ``...09`` Double Float Pixel Data, ``...10`` Pixel Data).
    """
    where = f"{source}: " if source else ""
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not ts:
        raise ReaderError(f"{where}no Transfer Syntax UID in the file meta information")
    try:
        rows, cols = ushort(ds, "Rows"), ushort(ds, "Columns")
        samples = ushort(ds, "SamplesPerPixel") or 1
        n_frames = _frames(text(ds, "NumberOfFrames"))
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
            or not 0 < bs <= ba or pr not in (0, 1):
        raise ReaderError(f"{where}unsupported image format: {rows}x{cols} pixels, {n_frames} frame(s), "
                          f"{samples} sample(s), {bs}/{ba} bits, PixelRepresentation {pr}")
    if pixel_tag is not None:
        float_data = pixel_tag in (0x7FE00008, 0x7FE00009)
    else:
        float_data = (0x7FE00008 in ds or 0x7FE00009 in ds) and 0x7FE00010 not in ds
    if (ba == 64 and not float_data) or (float_data and ba not in (32, 64)):
        raise ReaderError(f"{where}unsupported image format: BitsAllocated {ba} with "
                          f"{'float' if float_data else 'integer'} pixel data")
    palette_bits = 8
    if pi == "PALETTE COLOR":
        try:
            palette_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise ReaderError(f"{where}PALETTE COLOR image without a valid palette descriptor") from exc
    return PixelFormat(rows, cols, samples, n_frames, ba, bs, pr, pi, ts, bool(float_data), palette_bits)


@dataclass(frozen=True)
class PixelElement:
    """Where the pixel data element sits in the file (read from its element header, not by pydicom).

    Attributes
    ----------
    tag : int
        ``0x7FE00010`` (Pixel Data), ``...08`` (Float) or ``...09`` (Double Float).
    value_offset : int
        File offset of the first value byte.
    length : int or None
        Declared value length; None for undefined length (encapsulated, compressed data).
    file_size : int
        Size of the file in bytes.
    """

    tag: int
    value_offset: int
    length: int | None
    file_size: int


def pixel_element(fp: Any, transfer_syntax: str) -> PixelElement | None:
    """Parse the element header at ``fp``'s position (where ``dcmread(stop_before_pixels=True)`` stops).

    Returns None when no pixel data element starts there (end of file, another element).
    ``fp`` is left where it was.
    """
    if transfer_syntax == DEFLATED:
        return None  # inflated in memory by pydicom: file positions mean nothing
    import os

    start = fp.tell()
    head = fp.read(12)
    fp.seek(start)
    if len(head) < 8:
        return None
    order = "big" if transfer_syntax == EXPLICIT_BE else "little"
    group, elem = int.from_bytes(head[:2], order), int.from_bytes(head[2:4], order)
    if group != 0x7FE0 or elem not in (0x0008, 0x0009, 0x0010):
        return None
    if transfer_syntax == NATIVE_LE[0]:  # implicit VR
        length, skip = int.from_bytes(head[4:8], order), 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            return None
        length, skip = int.from_bytes(head[8:12], order), 12
    else:  # a 2-byte length: not valid for pixel data, but read what it says
        length, skip = int.from_bytes(head[6:8], order), 8
    size = os.fstat(fp.fileno()).st_size
    return PixelElement((group << 16) | elem, start + skip, None if length == _UNDEFINED else length, size)


def native_nbytes(fmt: PixelFormat) -> int:
    """Bytes of uncompressed pixel data the header declares (1-bit data packed, 4:2:2 chroma halved)."""
    samples = 2 if fmt.photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") and fmt.samples == 3 else fmt.samples
    bits = fmt.rows * fmt.cols * fmt.n_frames * samples * fmt.bits_allocated
    return (bits + 7) // 8


def decoded_nbytes(fmt: PixelFormat) -> int:
    """Bytes the decoded frames take in memory (:func:`stored_dtype`, palette colour expanded to RGB)."""
    per = 3 if fmt.rgb else 1
    return fmt.rows * fmt.cols * fmt.n_frames * per * stored_dtype(fmt).itemsize


def check_pixel_extent(path: str, fmt: PixelFormat, el: PixelElement | None, fp: Any = None) -> None:
    """Refuse a header whose declared image does not fit the bytes present, before anything is allocated.

    Uncompressed data: the pixel data element must hold Rows x Columns x frames x samples x bits (plus at
    most one frame of padding) and the file must hold the element.  Encapsulated (compressed) data: every
    fragment must lie inside the file, the sequence must end with its delimiter, there must be a fragment
    per frame, and the decoded size may be at most :data:`MAX_COMPRESSION_RATIO` times the compressed size
    (or :data:`SMALL_DECODED_BYTES`).  Deflated files: at most :data:`MAX_DEFLATE_RATIO` times the file.

    Raises
    ------
    ReaderError
        The message names the file, what the header declares and what is there.
    """
    import os

    declared = native_nbytes(fmt)
    what = (f"{fmt.rows} x {fmt.cols} pixels x {fmt.n_frames} frame(s) x {fmt.samples} sample(s) x "
            f"{fmt.bits_allocated} bits")
    if fmt.transfer_syntax == DEFLATED:
        size = os.path.getsize(path)
        if decoded_nbytes(fmt) > max(SMALL_DECODED_BYTES, MAX_DEFLATE_RATIO * size):
            raise ReaderError(f"{path}: the header declares {what} ({declared:,} bytes) but the deflated file "
                              f"has only {size:,} bytes: Rows/Columns/NumberOfFrames are wrong or the file is damaged")
        return
    if el is None:
        return
    present = max(0, el.file_size - el.value_offset)
    compressed = el.length is None and fmt.transfer_syntax not in NATIVE_LE + (EXPLICIT_BE,)
    if not compressed:
        if el.length is None:
            raise ReaderError(f"{path}: uncompressed pixel data with an undefined length: the file is damaged")
        frame_bytes = max(1, declared // fmt.n_frames)
        if el.length < declared:
            raise ReaderError(f"{path}: the pixel data holds {el.length:,} bytes but the header declares {what} = "
                              f"{declared:,} bytes: the file is damaged or Rows/Columns/NumberOfFrames/BitsAllocated "
                              "are wrong")
        if el.length - declared >= max(2, frame_bytes):
            raise ReaderError(f"{path}: the pixel data holds {el.length:,} bytes, more than the {declared:,} bytes "
                              f"of the {what} the header declares: Rows/Columns/NumberOfFrames/BitsAllocated do not "
                              "match the data")
        if present < declared:
            raise ReaderError(f"{path}: pixel data truncated: the file ends {present:,} bytes into the pixel data, "
                              f"which needs {declared:,} bytes ({what}); incomplete copy or download?")
        return
    if fp is None:
        return
    n_frag, comp = _walk_fragments(path, fp, el)
    if n_frag < fmt.n_frames:
        raise ReaderError(f"{path}: the header declares {fmt.n_frames} frame(s) but the compressed pixel data holds "
                          f"only {n_frag} fragment(s): NumberOfFrames is wrong or the file is damaged")
    need = decoded_nbytes(fmt)
    raw_bytes = native_nbytes(fmt)
    rle = fmt.transfer_syntax == RLE_LOSSLESS
    # RLE never grows data by more than 1/128 (+ its 64-byte header); other codecs by a small factor
    most = raw_bytes * 1.01 + 80 * fmt.n_frames if rle else raw_bytes * 4 + 8192 * fmt.n_frames
    if comp > most:
        raise ReaderError(f"{path}: the compressed pixel data ({comp:,} bytes) is far larger than the {what} "
                          f"({raw_bytes:,} bytes) the header declares: Rows/Columns/NumberOfFrames are wrong")
    if need > max(SMALL_DECODED_BYTES, MAX_COMPRESSION_RATIO * comp):
        raise ReaderError(f"{path}: the header declares {what} ({need:,} bytes decoded) from only {comp:,} bytes of "
                          "compressed data: Rows/Columns/NumberOfFrames are wrong or the file is damaged")


def _walk_fragments(path: str, fp: Any, el: PixelElement) -> tuple[int, int]:
    """(fragments after the offset table, their bytes) of encapsulated pixel data; ReaderError when cut or broken."""
    start = fp.tell()
    pos = el.value_offset
    n_items = 0
    total = 0
    try:
        while True:
            fp.seek(pos)
            head = fp.read(8)
            if 0 < len(head) < 8 and _DELIMITER.startswith(head) and n_items:
                return max(0, n_items - 1), total  # only (part of) the closing delimiter is missing: data complete
            if len(head) < 8:
                raise ReaderError(f"{path}: compressed pixel data truncated: the file ends after {n_items} item(s) "
                                  f"of the pixel data, before its sequence delimiter (incomplete copy or download?)")
            group, elem = struct.unpack("<HH", head[:4])
            (length,) = struct.unpack("<I", head[4:])
            if (group, elem) == (0xFFFE, 0xE0DD):
                return max(0, n_items - 1), total
            if (group, elem) != (0xFFFE, 0xE000) or length == _UNDEFINED:
                raise ReaderError(f"{path}: compressed pixel data is damaged: item {n_items} at byte {pos:,} has tag "
                                  f"({group:04X},{elem:04X}) instead of an item tag")
            if pos + 8 + length > el.file_size:
                raise ReaderError(f"{path}: compressed pixel data truncated: fragment {n_items} needs {length:,} bytes "
                                  f"but the file ends {el.file_size - pos - 8:,} bytes after its start (incomplete "
                                  "copy or download?)")
            if n_items:
                total += length
            n_items += 1
            pos += 8 + length
    finally:
        fp.seek(start)


def check_rescale_range(path: str, slopes: np.ndarray, intercepts: np.ndarray, stored_range: tuple[int, int]) -> None:
    """ReaderError when RescaleSlope/Intercept are not finite or map the stored values beyond float32."""
    s = np.asarray(slopes, dtype=np.float64)
    b = np.asarray(intercepts, dtype=np.float64)
    lo, hi = stored_range
    with np.errstate(all="ignore"):
        reach = np.abs(s) * max(abs(lo), abs(hi)) + np.abs(b)
    if not np.isfinite(reach).all() or float(reach.max(initial=0.0)) > MAX_RESCALED:
        raise ReaderError(f"{path}: RescaleSlope {float(s.flat[int(np.argmax(reach))]):g} / RescaleIntercept "
                          f"{float(b.flat[int(np.argmax(reach))]):g} map the stored values beyond any real "
                          f"measurement (|value| > {MAX_RESCALED:g}): the header is damaged")


def _frames(value: str | None) -> int:
    """NumberOfFrames (IS): a whole number; ValueError for text, fractions or absurd sizes."""
    if not value:
        return 1
    f = float(value)
    if not f.is_integer() or not 0 < f < 2**31:
        raise ValueError(f"NumberOfFrames {value!r} is not a whole number of frames between 1 and 2**31")
    return int(f)


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
    except BaseException as exc:
        if not is_decoder_panic(exc):
            raise  # KeyboardInterrupt, SystemExit, GeneratorExit
        raise ReaderError(f"{path}: corrupt pixel data: the decoder crashed on it ({type(exc).__name__}: "
                          f"{exc})") from exc
    shape = (fmt.n_frames,) + fmt.frame_shape()
    if arr.size != int(np.prod(shape)):
        raise ReaderError(f"{path}: decoded {arr.shape} pixels, expected {shape}")
    arr = arr.reshape(shape)
    want = stored_dtype(fmt)
    if fmt.photometric != "PALETTE COLOR" and fmt.bits_allocated >= 8 and arr.dtype.itemsize != want.itemsize:
        raise ReaderError(f"{path}: the decoder returned {arr.dtype.itemsize * 8}-bit values but BitsAllocated is "
                          f"{fmt.bits_allocated}: the header does not match the compressed data")
    if arr.dtype != want:
        if arr.dtype.kind == want.kind or (arr.dtype.kind in "iu" and want.kind in "iu"):
            arr = arr.astype(want)  # same kind or signedness only: keep the bit pattern
        else:
            raise ReaderError(f"{path}: decoder returned {arr.dtype} pixels, expected {want}")
    return arr


def is_decoder_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust decoder's panic (pyo3's ``PanicException`` derives from BaseException)."""
    return type(exc).__name__ == "PanicException" and not isinstance(exc, (KeyboardInterrupt, SystemExit,
                                                                              GeneratorExit))


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
    big = 2.0**30  # integer arithmetic below is exact (no int64 overflow) only for moderate slopes/intercepts
    if stored.dtype.kind == "f" or not (np.mod(slopes, 1) == 0).all() or not (np.mod(intercepts, 1) == 0).all() \
            or not (np.abs(slopes) < big).all() or not (np.abs(intercepts) < big).all() \
            or stored.dtype.itemsize > 4:
        return _rescale_float(stored, slopes, intercepts, identity)
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
    out_dtype = None
    for cand in (np.int16, np.int32, np.int64):
        info = np.iinfo(cand)
        if info.min <= lo and hi <= info.max:
            out_dtype = np.dtype(cand)
            break
    if out_dtype is None:
        return _rescale_float(stored, slopes, intercepts, identity)
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


def _rescale_float(stored: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray, identity: bool) -> np.ndarray:
    out = stored.astype(np.float32) if stored.dtype != np.float32 else stored
    if identity:
        return out
    for idx in np.ndindex(*slopes.shape):
        out[idx] = stored[idx].astype(np.float64) * slopes[idx] + intercepts[idx]
    return out


def _affine_inplace(a: np.ndarray, s: int, b: int) -> None:
    """``a = s * a + b`` modulo 2**bits in ``a``'s dtype (exact when the true result fits)."""
    wrap = np.array([s, b], dtype=np.int64).astype(a.dtype)  # constants reduced modulo 2**bits
    if s != 1:
        np.multiply(a, wrap[0], out=a, casting="unsafe")
    if b != 0:
        np.add(a, wrap[1], out=a, casting="unsafe")
