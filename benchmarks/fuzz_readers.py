"""Fuzz the readers: broken inputs built from real files, each read in a child process.

Every case copies a real file (the shared datasets under ``../shared/datasets``
and pydicom's own test files) into a fresh folder, damages it (truncations at
several points, flipped bytes, header fields set to absurd values, lies about
sizes, FIFOs and empty files in a series folder...) and reads it with
:func:`napari_medseg.io.read` in a forked child process limited to
``--mem-gb`` of address space (``RLIMIT_AS``, default 4) and ``--timeout``
seconds (default 60).  Lazy arrays (dask) are computed in the child, a corner
first (what napari draws), then the whole array when it is below 1 GiB.  The
outcome is classified:

``clean error``
    a :class:`~napari_medseg.errors.MedsegError` whose message names the file
    (the damaged file inside a series folder);
``correct data``
    the read returns what the intact input gives: same axes, shape, dtype,
    values and geometry (affine within 1e-4);
``partial + warning``
    an input holding several series (a study folder, a DICOMDIR) returns
    the intact ones, each equal to the intact input's, and a warning names
    the damaged file (the documented behaviour of the DICOM reader);
``undetectable``
    only for damage no reader can tell from a valid file: a flipped byte
    inside compressed or native pixel values (no checksum), where the
    read gives the same shape and geometry with other values; or a lie
    that is self-consistent (ImageJ ``channels=3 slices=2`` over 6 planes),
    where it gives the same number of values in another shape;
``wrong data``
    anything else returned without an error;
``unnamed error``
    a MedsegError whose message does not name the file;
``foreign exception``
    any other exception (``BaseException`` included), or the child died;
``memory``
    ``MemoryError``, or a peak resident size above 256 MB + 100 x the input size;
``hang``
    the read did not finish within the timeout;
``files changed``
    an input file differs after the read (hashed before and after).

Run::

    python benchmarks/fuzz_readers.py                 # every case, prints the outcome table
    python benchmarks/fuzz_readers.py -k nifti -v     # the cases whose name contains "nifti", one line each
    python benchmarks/fuzz_readers.py --json out.json # also write every outcome

The tests (``tests/core/test_fuzz_inputs.py``) run the cases tagged ``ci``
with the same runner.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import stat
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))

CATEGORIES = ("clean error", "correct data", "partial + warning", "undetectable", "wrong data", "unnamed error", "foreign exception",
              "memory", "hang", "files changed")
#: What a case may end as without being a problem.
GOOD = {"clean error", "correct data", "partial + warning", "undetectable"}


# ================================================================================================ cases

@dataclass
class Case:
    """One broken input.

    Attributes
    ----------
    name : str
        ``group/source/damage``.
    build : callable
        ``build(folder) -> path``: writes the damaged input into an empty folder, returns what to read.
    ref : callable or None
        ``ref(folder) -> path``: the intact input (None: no data is right, only an error is).
    ref_key : str
        Cache key of ``ref`` (cases built from the same intact input share it).
    blame : str or None
        Text the error message must contain (default: the name of what is read).
    kind : {"damage", "harmless", "noisy", "ambiguous"}
        ``harmless``: the damage must not change the data; ``noisy``: damage no
        reader can detect (pixels may differ, nothing else); ``ambiguous``: a
        self-consistent lie (the same values may come back in another shape).
    tags : set of str
        ``ci`` for the fast sample the tests run; ``huge`` for declared sizes far beyond the file.
    """

    name: str
    build: Callable[[Path], Path]
    ref: Callable[[Path], Path] | None
    ref_key: str = ""
    blame: str | None = None
    kind: str = "damage"
    tags: set[str] = field(default_factory=set)


def _pydicom_file(name: str) -> Path | None:
    try:
        from pydicom.data import get_testdata_file

        p = get_testdata_file(name)
    except Exception:  # noqa: BLE001 - pydicom's data files are optional
        return None
    return Path(p) if p else None


def _dataset(*parts: str) -> Path | None:
    p = DATASETS.joinpath(*parts)
    return p if p.exists() else None


# ---------------------------------------------------------------- generic byte damage

def copy_to(src: Path, name: str | None = None) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        dst = folder / (name or src.name)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)
        return dst
    return build


def from_bytes(src: Path, fn: Callable[[bytes], bytes], name: str | None = None) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        dst = folder / (name or src.name)
        dst.write_bytes(fn(src.read_bytes()))
        return dst
    return build


def cut(at: float | int) -> Callable[[bytes], bytes]:
    """Keep the first ``at`` bytes (int), the first fraction ``at`` (float in (0, 1)), or drop ``-at`` bytes."""
    def fn(raw: bytes) -> bytes:
        if isinstance(at, float):
            return raw[: int(len(raw) * at)]
        return raw[:at] if at >= 0 else raw[:at]
    return fn


def flip(*positions: float | int) -> Callable[[bytes], bytes]:
    """XOR 0xFF the bytes at ``positions`` (ints, or floats = fractions of the file)."""
    def fn(raw: bytes) -> bytes:
        b = bytearray(raw)
        for p in positions:
            i = int(len(b) * p) if isinstance(p, float) else p
            i = min(max(i, 0), len(b) - 1)
            b[i] ^= 0xFF
        return bytes(b)
    return fn


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_socket(path: Path) -> Path:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the socket file stays on disk
    return path


# ---------------------------------------------------------------- DICOM helpers

def _pixel_data_pos(raw: bytes) -> int:
    """Offset of the (7FE0,0010) element (little or big endian); -1 when absent."""
    for tag in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        i = raw.rfind(tag)
        if i >= 0:
            return i
    return -1


def dicom_edit(src: Path, fn: Callable[[Any], None], name: str | None = None) -> Callable[[Path], Path]:
    """Read ``src`` with pydicom, let ``fn`` change the dataset, write it back (same encoding, no validation)."""
    def build(folder: Path) -> Path:
        import pydicom
        from pydicom import config

        old = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
        config.settings.reading_validation_mode = config.IGNORE
        config.settings.writing_validation_mode = config.IGNORE
        try:
            ds = pydicom.dcmread(src)
            fn(ds)
            dst = folder / (name or src.name)
            ds.save_as(dst, enforce_file_format=False)
        finally:
            config.settings.reading_validation_mode, config.settings.writing_validation_mode = old
        return dst
    return build


def set_raw(keyword: str, value: Any) -> Callable[[Any], None]:
    """Set an element to a raw value (string VRs get the text exactly as given)."""
    def fn(ds: Any) -> None:
        from pydicom.datadict import dictionary_VR, tag_for_keyword
        from pydicom.dataelem import DataElement

        tag = tag_for_keyword(keyword)
        vr = dictionary_VR(tag)
        if isinstance(value, str) and vr in ("DS", "IS"):
            raw = value.encode("ascii")
            if len(raw) % 2:
                raw += b" "
            ds[tag] = DataElement(tag, vr, raw)  # bytes: written as they are, never validated
        elif value is None:
            if tag in ds:
                del ds[tag]
        else:
            ds[tag] = DataElement(tag, vr, value)
    return fn


def set_in_functional_groups(keyword: str, value: Any) -> Callable[[Any], None]:
    """Set ``keyword`` in the shared and every per-frame functional group item that holds it, and at top level."""
    def fn(ds: Any) -> None:
        setter = set_raw(keyword, value)
        if keyword in ds:
            setter(ds)
        for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            for item in ds.get(seq_name) or []:
                for grp in item:
                    if grp.VR == "SQ":
                        for sub in grp.value:
                            if keyword in sub:
                                setter(sub)
    return fn


def shorten_pixel_data(n: int) -> Callable[[Any], None]:
    def fn(ds: Any) -> None:
        ds.PixelData = bytes(ds.PixelData[:-n])
    return fn


def change_vr(keyword_tag: tuple[int, int], new_vr: bytes) -> Callable[[bytes], bytes]:
    """Replace the VR of an explicit-VR little-endian element (e.g. CS -> IU, unknown to pydicom)."""
    g, e = keyword_tag
    key = struct.pack("<HH", g, e)

    def fn(raw: bytes) -> bytes:
        i = raw.find(key, 132)
        if i < 0:
            raise RuntimeError(f"element {keyword_tag} not found")
        return raw[: i + 4] + new_vr + raw[i + 6:]
    return fn


def times(vec: list[float], k: float) -> str:
    return "\\".join(f"{v * k:.6g}" for v in vec)


# ---------------------------------------------------------------- TIFF helpers

def tiff_patch(tag_code: int, value: int, page: int = 0, index: int = 0,
               subifd: int | None = None) -> Callable[[bytes], bytes]:
    """Set value ``index`` of tag ``tag_code`` of page ``page`` (or its SubIFD ``subifd``) in place."""
    def fn(raw: bytes) -> bytes:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(raw)) as tf:
            pg = tf.pages[page] if subifd is None else _subifd_page(tf, subifd)
            tag = pg.tags[tag_code]
            fmt = {3: "H", 4: "I", 16: "Q", 8: "h", 9: "i"}[int(tag.dtype)]
            order = tf.byteorder
        b = bytearray(raw)
        size = struct.calcsize(fmt)
        struct.pack_into(order + fmt, b, tag.valueoffset + index * size, value)
        return bytes(b)
    return fn


def tiff_data(fn_page: Callable[[Any, bytearray], None], page: int = 0) -> Callable[[bytes], bytes]:
    """Let ``fn_page(page, buffer)`` damage the raw bytes given the parsed page (strip/tile offsets)."""
    def fn(raw: bytes) -> bytes:
        import tifffile

        b = bytearray(raw)
        with tifffile.TiffFile(io.BytesIO(raw)) as tf:
            fn_page(tf.pages[page], b)
        return bytes(b)
    return fn


def write_tiff(fn: Callable[[Path], None], name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        dst = folder / name
        fn(dst)
        return dst
    return build


def dsb_image(rgb: bool) -> Path | None:
    """The first dsb2018 training image that is grey (or RGB), 8-bit; None without the dataset."""
    folder = _dataset("dsb2018", "train", "images")
    if folder is None:
        return None
    import tifffile

    for f in sorted(folder.glob("*.tif")):
        with tifffile.TiffFile(f) as tf:
            s = tf.series[0]
            if (len(s.shape) == 3) == rgb and s.dtype == np.uint8:
                return f
    return None


def ome_bytes(src: Path, edit: Callable[[str], str] = lambda x: x, planes: int = 6) -> Callable[[Path], None]:
    """An OME-TIFF of ``planes`` planes made from ``src``'s first plane, its OME XML passed through ``edit``."""
    def make(dst: Path) -> None:
        import tifffile

        img = tifffile.imread(src)
        if img.ndim == 3:
            img = img[..., 0]
        stack = np.stack([np.roll(img, 7 * k, axis=1) for k in range(planes)])
        buf = io.BytesIO()
        tifffile.imwrite(buf, stack, ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
                                                           "PhysicalSizeZ": 2.0}, compression="zlib")
        with tifffile.TiffFile(io.BytesIO(buf.getvalue())) as tf:
            xml = tf.ome_metadata
        new = edit(xml)
        tifffile.imwrite(dst, stack, description=new, metadata=None, compression="zlib")
    return make


def imagej_bytes(src: Path, edit: Callable[[str], str] = lambda x: x, planes: int = 6) -> Callable[[Path], None]:
    def make(dst: Path) -> None:
        import tifffile

        img = tifffile.imread(src)
        if img.ndim == 3:
            img = img[..., 0]
        stack = np.stack([np.roll(img, 5 * k, axis=0) for k in range(planes)])
        buf = io.BytesIO()
        tifffile.imwrite(buf, stack, imagej=True, metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"},
                         resolution=(2.0, 2.0))
        with tifffile.TiffFile(io.BytesIO(buf.getvalue())) as tf:
            desc = tf.pages[0].description
        tifffile.imwrite(dst, stack, description=edit(desc), metadata=None, resolution=(2.0, 2.0))
    return make


def pyramid_bytes(src: Path, damage: Callable[[bytearray, Any], None] | None = None) -> Callable[[Path], None]:
    """A tiled, zlib-compressed 3-level pyramid (SubIFDs) of ``src``; ``damage(buffer, tifffile)`` breaks it."""
    def make(dst: Path) -> None:
        import tifffile

        img = tifffile.imread(src)
        big = np.tile(img, (2, 2, 1)) if img.ndim == 3 else np.tile(img, (2, 2))
        buf = io.BytesIO()
        with tifffile.TiffWriter(buf) as tw:
            opts = {"tile": (64, 64), "compression": "zlib", "photometric": "rgb" if big.ndim == 3 else "minisblack"}
            tw.write(big, subifds=2, **opts)
            tw.write(big[::2, ::2], subfiletype=1, **opts)
            tw.write(big[::4, ::4], subfiletype=1, **opts)
        b = bytearray(buf.getvalue())
        if damage is not None:
            with tifffile.TiffFile(io.BytesIO(bytes(b))) as tf:
                damage(b, tf)
        dst.write_bytes(bytes(b))
    return make


def _subifd_page(tf: Any, i: int) -> Any:
    """The first page of SubIFD level ``i`` (0 = the first reduced level)."""
    return tf.series[0].levels[i + 1].keyframe


def corrupt_tile(level: int, tile: int) -> Callable[[bytearray, Any], None]:
    def fn(b: bytearray, tf: Any) -> None:
        pg = tf.pages[0] if level == 0 else _subifd_page(tf, level - 1)
        off, cnt = pg.dataoffsets[tile], pg.databytecounts[tile]
        for k in range(2, cnt, 3):
            b[off + k] ^= 0x5A
    return fn


def patch_level_tag(level: int, code: int, value: int, index: int = 0) -> Callable[[bytearray, Any], None]:
    def fn(b: bytearray, tf: Any) -> None:
        pg = tf.pages[0] if level == 0 else _subifd_page(tf, level - 1)
        tag = pg.tags[code]
        fmt = {3: "H", 4: "I", 16: "Q"}[int(tag.dtype)]
        struct.pack_into(tf.byteorder + fmt, b, tag.valueoffset + index * struct.calcsize(fmt), value)
    return fn


# ---------------------------------------------------------------- NIfTI helpers

#: (offset, struct format) of NIfTI-1 header fields.
NII = {"sizeof_hdr": (0, "i"), "dim0": (40, "h"), "dim1": (42, "h"), "dim2": (44, "h"), "dim3": (46, "h"),
       "dim4": (48, "h"), "datatype": (70, "h"), "bitpix": (72, "h"), "pixdim1": (80, "f"), "pixdim3": (88, "f"),
       "vox_offset": (108, "f"), "scl_slope": (112, "f"), "scl_inter": (116, "f"), "qform_code": (252, "h"),
       "sform_code": (254, "h"), "quatern_b": (256, "f"), "qoffset_x": (268, "f"), "srow_x0": (280, "f"),
       "srow_z2": (320, "f"), "magic": (344, "4s")}


def nii_patch(**fields: Any) -> Callable[[bytes], bytes]:
    def fn(raw: bytes) -> bytes:
        b = bytearray(raw)
        for k, v in fields.items():
            off, fmt = NII[k]
            struct.pack_into("<" + fmt, b, off, v)
        return bytes(b)
    return fn


def gz(fn: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """Apply ``fn`` to the decompressed bytes of a .gz file and compress again."""
    def wrap(raw: bytes) -> bytes:
        return gzip.compress(fn(gzip.decompress(raw)), mtime=0)
    return wrap


def nii_from_gz(src: Path, fn: Callable[[bytes], bytes] = lambda b: b, name: str = "image.nii") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        dst = folder / name
        dst.write_bytes(fn(gzip.decompress(src.read_bytes())))
        return dst
    return build


# ---------------------------------------------------------------- NRRD helpers

def nrrd_header_edit(src: Path, edit: Callable[[str], str], name: str | None = None,
                     raw_data: bool = False) -> Callable[[Path], Path]:
    """Rewrite the text header of an attached-header NRRD (``raw_data``: decompress the data first)."""
    def build(folder: Path) -> Path:
        raw = src.read_bytes()
        i = raw.index(b"\n\n")
        head, data = raw[: i + 1].decode("latin-1"), raw[i + 2:]
        if raw_data:
            data = gzip.decompress(data)
            head = head.replace("encoding: gzip", "encoding: raw")
        dst = folder / (name or src.name)
        dst.write_bytes(edit(head).encode("latin-1") + b"\n" + data)
        return dst
    return build


def sub(pattern: str, repl: str) -> Callable[[str], str]:
    def fn(text: str) -> str:
        new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        if not n:
            raise RuntimeError(f"{pattern!r} not found")
        return new
    return fn


def nhdr_pair(src: Path, edit: Callable[[str], str] = lambda t: t, data_name: str = "data.raw",
              data_fn: Callable[[Path, bytes], None] | None = None) -> Callable[[Path], Path]:
    """A detached ``.nhdr`` + raw data file made from an attached gzip NRRD."""
    def build(folder: Path) -> Path:
        raw = src.read_bytes()
        i = raw.index(b"\n\n")
        head, data = raw[: i + 1].decode("latin-1"), gzip.decompress(raw[i + 2:])
        head = head.replace("encoding: gzip", "encoding: raw") + f"data file: {data_name}\n"
        nhdr = folder / "image.nhdr"
        nhdr.write_text(edit(head) + "\n", encoding="latin-1")
        if data_fn is not None:
            data_fn(folder / data_name, data)
        else:
            (folder / data_name).write_bytes(data)
        return nhdr
    return build


# ---------------------------------------------------------------- series folders

def series(src: Path, damage: Callable[[Path, list[Path]], str | None]) -> Callable[[Path], Path]:
    """Copy the series folder ``src`` (files only) and let ``damage(folder, dcm_files)`` break it."""
    def build(folder: Path) -> Path:
        dst = folder / "series"
        dst.mkdir()
        files = []
        for f in sorted(src.iterdir()):
            if f.is_file():
                shutil.copyfile(f, dst / f.name)
                if f.suffix.lower() == ".dcm":
                    files.append(dst / f.name)
        damage(dst, files)
        return dst
    return build


def intact_series(src: Path) -> Callable[[Path], Path]:
    return series(src, lambda d, fs: None)


# ================================================================================================ the case list

def build_cases() -> list[Case]:  # noqa: C901 - one flat list reads best
    """Every case whose source files exist on this machine."""
    cases: list[Case] = []

    def add(name: str, build: Callable[[Path], Path], ref: Callable[[Path], Path] | None, ref_key: str = "",
            blame: str | None = None, kind: str = "damage", tags: tuple[str, ...] = ()) -> None:
        cases.append(Case(name, build, ref, ref_key or (name if ref is not None else ""), blame, kind, set(tags)))

    # ------------------------------------------------------------ DICOM single files
    singles = {
        "CT_small": _pydicom_file("CT_small.dcm"),                      # native explicit LE, 16 bit
        "MR_small_implicit": _pydicom_file("MR_small_implicit.dcm"),    # native implicit LE
        "MR_small_bigendian": _pydicom_file("MR_small_bigendian.dcm"),  # native big endian (pydicom path)
        "MR_small_RLE": _pydicom_file("MR_small_RLE.dcm"),
        "MR_small_jpeg_ls": _pydicom_file("MR_small_jpeg_ls_lossless.dcm"),
        "MR_small_j2k": _pydicom_file("MR_small_jp2klossless.dcm"),
        "SC_rgb_jpeg": _pydicom_file("SC_rgb_jpeg_dcmtk.dcm"),          # JPEG baseline, 100x100 RGB
        "SC_rgb_rle": _pydicom_file("SC_rgb_rle.dcm"),
        "JPEG_lossy": _pydicom_file("JPEG-lossy.dcm"),                 # JPEG extended 12 bit
        "rtdose": _pydicom_file("rtdose.dcm"),                          # multi-frame native, 32 bit
        "rtdose_rle": _pydicom_file("rtdose_rle.dcm"),
        "image_dfl": _pydicom_file("image_dfl.dcm"),                    # deflated
        "liver_seg": _dataset("dicom_ct_seg", "liver.dcm"),            # DICOM-SEG, 1 bit, 100 KB
        "small_seg": _dataset("dicom_ct_seg", "23x38x3", "seg", "label.seg"),
        "enhanced_ct": _dataset("dicom_ct_seg", "23x38x3", "multiframe", "mf.dcm"),
        "ct_slice": _dataset("dicom_ct_seg", "ct-3slice", "01.dcm"),
    }
    ci_singles = {"CT_small", "MR_small_RLE", "SC_rgb_jpeg", "MR_small_jpeg_ls", "liver_seg", "rtdose"}
    for key, src in singles.items():
        if src is None:
            continue
        ref = copy_to(src, "image.dcm")
        rk = f"dicom/{key}"
        raw = src.read_bytes()
        size = len(raw)
        pix = _pixel_data_pos(raw)
        ci = ("ci",) if key in ci_singles else ()

        def d(damage: str, build: Callable[[Path], Path], kind: str = "damage", tags: tuple[str, ...] = (),
              key: str = key, ref: Callable[[Path], Path] = ref, rk: str = rk) -> None:
            add(f"dicom/{key}/{damage}", build, ref, rk, kind=kind, tags=tags)

        d("intact", copy_to(src, "image.dcm"), "harmless")
        # truncations: inside the preamble, after DICM, in the meta, in the header, at the pixel data, in it
        cuts: dict[str, int | float] = {"0B": 0, "100B": 100, "140B": 140, "300B": 300, "header/2": max(200, pix // 2),
                                        "at_pixels": pix, "pixels+6": pix + 6, "pixels+16": pix + 16,
                                        "50%": 0.5, "85%": 0.85, "-100B": -100, "-2B": -2, "-1B": -1}
        if key in ("liver_seg",):
            cuts.update({"4KB": 4096, "66KB": 66000})
        for label, at in cuts.items():
            if isinstance(at, int) and at >= size:
                continue
            tags = ci if label in ("85%", "at_pixels", "4KB", "66KB") or (label in ("0B", "-2B") and key == "CT_small") \
                else ()
            d(f"cut_{label}", from_bytes(src, cut(at), "image.dcm"), tags=tags)
        # flipped bytes: header (never harmless: it may hit any field) and pixel stream
        implicit = b"1.2.840.10008.1.2\x00" in raw[:pix] or raw[132:400].count(b"1.2.840.10008.1.2 ") > 0
        len_at = pix + (5 if implicit else 9)  # a byte of the element's length field
        for label, pos in {"preamble_end": 131, "DICM": 129, "meta": 150, "header_mid": max(140, pix // 2),
                           "header_late": max(140, pix - 40), "pixel_tag": pix + 1,
                           "pixel_len": len_at if pix > 0 else 200}.items():
            d(f"flip_{label}", from_bytes(src, flip(pos), "image.dcm"))
        if pix > 0:
            for frac in (0.3, 0.6, 0.9):
                pos = pix + 16 + int((size - pix - 16) * frac)
                d(f"flip_pixels_{int(frac * 100)}%", from_bytes(src, flip(pos, pos + 1), "image.dcm"), "noisy",
                  tags=ci if frac == 0.6 and key in ("MR_small_RLE", "SC_rgb_rle") else ())
        # absurd header fields
        absurd: dict[str, list[tuple[str, Any]]] = {
            "rows_65535": [("Rows", 65535)], "cols_65535": [("Columns", 65535)],
            "rows_cols_65535": [("Rows", 65535), ("Columns", 65535)], "rows_0": [("Rows", 0)],
            "rows_1": [("Rows", 1)],
            "frames_huge": [("NumberOfFrames", "99999999999999999999")], "frames_1e9": [("NumberOfFrames", "1000000000")],
            "frames_0": [("NumberOfFrames", "0")], "frames_neg": [("NumberOfFrames", "-3")],
            "frames_2": [("NumberOfFrames", "2")],
            "frames_float": [("NumberOfFrames", "1.5")],
            "slope_1e308": [("RescaleSlope", "1e308")], "slope_nan": [("RescaleSlope", "nan")],
            "slope_inf": [("RescaleSlope", "inf")], "slope_1e30": [("RescaleSlope", "1e30")],
            "intercept_1e308": [("RescaleIntercept", "-1e308")], "intercept_1e19": [("RescaleIntercept", "1e19")],
            "bits_allocated_0": [("BitsAllocated", 0)], "bits_allocated_64": [("BitsAllocated", 64)],
            "bits_allocated_7": [("BitsAllocated", 7)], "bits_stored_40": [("BitsStored", 40)],
            "bits_stored_0": [("BitsStored", 0)], "samples_2": [("SamplesPerPixel", 2)],
            "samples_65535": [("SamplesPerPixel", 65535)], "pixel_rep_5": [("PixelRepresentation", 5)],
            "photometric_junk": [("PhotometricInterpretation", "GARBAGE")],
            "planar_7": [("PlanarConfiguration", 7)],
            "spacing_0": [("PixelSpacing", "0\\0")], "spacing_nan": [("PixelSpacing", "nan\\1")],
            "spacing_neg": [("PixelSpacing", "-1\\-1")], "spacing_1e308": [("PixelSpacing", "1e308\\1e308")],
            "spacing_1value": [("PixelSpacing", "0.5")],
            "iop_x7": [("ImageOrientationPatient", times([1, 0, 0, 0, 1, 0], 7))],
            "iop_parallel": [("ImageOrientationPatient", "1\\0\\0\\1\\0\\0")],
            "iop_nan": [("ImageOrientationPatient", "nan\\0\\0\\0\\1\\0")],
            "iop_5values": [("ImageOrientationPatient", "1\\0\\0\\0\\1")],
            "iop_not_orthogonal": [("ImageOrientationPatient", "1\\0\\0\\0.5\\0.8660254\\0")],
            "ipp_nan": [("ImagePositionPatient", "nan\\0\\0")], "ipp_1e308": [("ImagePositionPatient", "1e308\\0\\0")],
            "window_nan": [("WindowWidth", "nan")], "sop_class_none": [("SOPClassUID", None)],
            "no_pixel_spacing": [("PixelSpacing", None)],
        }
        harmless_fields = {"window_nan", "no_pixel_spacing"}
        for label, edits in absurd.items():
            def fn(ds: Any, edits: list[tuple[str, Any]] = edits) -> None:
                for kw, val in edits:
                    if kw == "ImageOrientationPatient" and "SharedFunctionalGroupsSequence" in ds or kw == "PixelSpacing" and "SharedFunctionalGroupsSequence" in ds:
                        set_in_functional_groups(kw, val)(ds)
                    else:
                        set_raw(kw, val)(ds)
            if label in ("frames_2", "frames_float") and key in ("rtdose", "rtdose_rle", "liver_seg", "enhanced_ct"):
                continue
            tags = ci if label in ("rows_cols_65535", "frames_huge", "frames_1e9", "slope_1e308", "iop_x7") else ()
            kind = "harmless" if label in harmless_fields else "damage"
            if label == "no_pixel_spacing":
                continue  # changes the geometry legitimately (1 mm pixels, with a warning)
            if label == "window_nan":
                kind = "harmless"
            d(label, dicom_edit(src, fn, "image.dcm"), kind, tags=tags + (("huge",) if "65535" in label
                                                                          or "frames_1e9" in label
                                                                          or "frames_huge" in label else ()))
        d("pixeldata_short_2", dicom_edit(src, shorten_pixel_data(2), "image.dcm"),
          tags=ci if key in ("CT_small", "liver_seg") else ())
        d("pixeldata_short_half", dicom_edit(src, lambda ds: setattr(ds, "PixelData", bytes(ds.PixelData[: len(ds.PixelData) // 2])), "image.dcm"))
        # native: 2 bytes of padding (harmless); encapsulated: 2 junk bytes between the last item and the
        # delimiter (a malformed item sequence)
        d("pixeldata_long_2", dicom_edit(src, lambda ds: setattr(ds, "PixelData", bytes(ds.PixelData) + b"\0\0"),
                                         "image.dcm"), "harmless" if b"\xfe\xff\x00\xe0" not in raw[pix:pix + 64]
          else "damage")
        def empty_pixels(ds: Any) -> None:
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([b"\0\0"]) if ds.file_meta.TransferSyntaxUID.is_compressed else b""
        d("pixeldata_empty", dicom_edit(src, empty_pixels, "image.dcm"))
        d("transfer_syntax_unknown", dicom_edit(src, lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.3.4.5"),
                                                "image.dcm"))
        if raw[128:132] == b"DICM":
            explicit = b"UL" in raw[132:150]
            if explicit and key not in ("MR_small_bigendian", "image_dfl"):
                d("unknown_vr_modality", from_bytes(src, change_vr((0x0008, 0x0060), b"IU"), "image.dcm"),
                  tags=ci if key == "CT_small" else ())
                d("unknown_vr_rows", from_bytes(src, change_vr((0x0028, 0x0010), b"IU"), "image.dcm"))
        if key == "liver_seg":
            d("segment_number_99", dicom_edit(src, lambda ds: [setattr(fg.SegmentIdentificationSequence[0],
                                                                       "ReferencedSegmentNumber", 99)
                                                               for fg in ds.PerFrameFunctionalGroupsSequence[:1]],
                                              "image.dcm"))
            d("no_segment_sequence", dicom_edit(src, lambda ds: delattr(ds, "SegmentSequence"), "image.dcm"))
            d("per_frame_dropped", dicom_edit(src, lambda ds: setattr(ds, "PerFrameFunctionalGroupsSequence",
                                                                      ds.PerFrameFunctionalGroupsSequence[:-1]),
                                              "image.dcm"))

    # a file that is not a regular file, given directly
    for suffix in (".dcm", ".tif", ".nii", ".nii.gz", ".nrrd", ".nhdr"):
        add(f"special/fifo{suffix}", lambda f, s=suffix: make_fifo(f / f"pipe{s}"), None,
            tags=("ci",) if suffix in (".dcm", ".tif", ".nii.gz") else ())
        add(f"special/dir{suffix}", lambda f, s=suffix: (f / f"folder{s}").mkdir() or f / f"folder{s}", None)
        add(f"special/devzero{suffix}", lambda f, s=suffix: (f / f"zero{s}").symlink_to("/dev/zero") or f / f"zero{s}",
            None, tags=("ci",) if suffix == ".nii" else ())
        add(f"special/socket{suffix}", lambda f, s=suffix: make_socket(f / f"sock{s}"), None)
        add(f"special/dangling{suffix}", lambda f, s=suffix: (f / f"gone{s}").symlink_to(f / "nowhere") or f / f"gone{s}",
            None)

    # ------------------------------------------------------------ DICOM series folders
    folders = {"small3": _dataset("dicom_ct_seg", "23x38x3", "image"),
               "ct3": _dataset("dicom_ct_seg", "ct-3slice"),
               "si_epi": _dataset("dicom_mr_series", "In", "20180918Si", "mr_0003"),
               "ge151": _dataset("dicom_mr_series", "In", "20180918GE", "mr_0004")}
    for key, src in folders.items():
        if src is None:
            continue
        files = sorted(f for f in src.iterdir() if f.is_file() and f.suffix.lower() == ".dcm")
        if not files:
            continue
        ref = intact_series(src)
        rk = f"series/{key}"
        first, mid = files[0].name, files[len(files) // 2].name
        ci_on = key == "small3"

        def s(damage: str, fn: Callable[[Path, list[Path]], Any], kind: str = "damage", blame: str | None = None,
              ci: bool = False, key: str = key, src: Path = src, ref: Callable[[Path], Path] = ref,
              rk: str = rk, ci_on: bool = ci_on) -> None:
            add(f"series/{key}/{damage}", series(src, fn), ref, rk, blame=blame, kind=kind,
                tags=("ci",) if ci and ci_on else ())

        if key == "ge151":  # 151 files: only the cases that matter most
            s("intact", lambda d_, fs: None, "harmless")
            s("fifo_dcm", lambda d_, fs: make_fifo(d_ / "zz_fifo.dcm"), "harmless")
            s("empty_middle", lambda d_, fs, m=mid: (d_ / m).write_bytes(b""), blame=mid)
            s("header_cut_first", lambda d_, fs, f0=first: (d_ / f0).write_bytes((d_ / f0).read_bytes()[:700]),
              blame=first)
            continue
        s("intact", lambda d_, fs: None, "harmless", ci=True)
        s("fifo_dcm", lambda d_, fs: make_fifo(d_ / "zz_fifo.dcm"), "harmless", ci=True)
        s("fifo_first", lambda d_, fs: make_fifo(d_ / "000.dcm"), "harmless")
        s("fifo_noext", lambda d_, fs: make_fifo(d_ / "IM0000"), "harmless")
        s("socket_dcm", lambda d_, fs: make_socket(d_ / "sock.dcm"), "harmless")
        s("devzero_link", lambda d_, fs: (d_ / "zero.dcm").symlink_to("/dev/zero"), "harmless", ci=True)
        s("dangling_link", lambda d_, fs: (d_ / "gone.dcm").symlink_to(d_ / "nowhere"), "harmless")
        s("link_loop", lambda d_, fs: (d_ / "loop").symlink_to(d_), "harmless")
        s("dir_named_dcm", lambda d_, fs: (d_ / "x.dcm").mkdir(), "harmless")
        s("readme", lambda d_, fs: (d_ / "README.txt").write_text("notes"), "harmless")
        s("duplicate_copy", lambda d_, fs: shutil.copyfile(fs[0], d_ / "copy_of_first.dcm"), "harmless")
        s("empty_first", lambda d_, fs: (d_ / "000_empty.dcm").write_bytes(b""), blame="000_empty.dcm", ci=True)
        s("empty_middle", lambda d_, fs, m=mid: (d_ / m).write_bytes(b""), blame=mid, ci=True)
        s("empty_extra_last", lambda d_, fs: (d_ / "zzz.dcm").write_bytes(b""), blame="zzz.dcm")
        s("junk_dcm", lambda d_, fs: (d_ / "junk.dcm").write_bytes(bytes(range(256)) * 8), blame="junk.dcm")
        for label, at in {"132B": 132, "300B": 300, "700B": 700, "at_pixels": "pix", "pixels/2": "half", "-2B": -2}.items():
            for which, name in (("first", first), ("middle", mid)):
                def dmg(d_: Path, fs: list[Path], name: str = name, at: Any = at) -> None:
                    raw = (d_ / name).read_bytes()
                    pix = _pixel_data_pos(raw)
                    n = {"pix": pix, "half": pix + (len(raw) - pix) // 2}.get(at, at) if isinstance(at, str) else at
                    (d_ / name).write_bytes(raw[:n])
                s(f"cut_{which}_{label}", dmg, blame=name, ci=(label in ("700B", "at_pixels") and which == "middle"))
        def flip_header(d_: Path, fs: list[Path], name: str = mid) -> None:
            raw = (d_ / name).read_bytes()
            (d_ / name).write_bytes(flip(max(140, _pixel_data_pos(raw) // 2))(raw))
        s("flip_header_middle", flip_header, blame=mid)

        def iop_all(k: float, d_: Path, fs: list[Path]) -> None:
            import pydicom

            for f in fs:
                ds = pydicom.dcmread(f)
                iop = [float(v) for v in ds.ImageOrientationPatient]
                ds.ImageOrientationPatient = [v * k for v in iop]
                ds.save_as(f, enforce_file_format=False)

        s("iop_x7_all", lambda d_, fs: iop_all(7.0, d_, fs), ci=True)
        s("iop_x1.0005_all", lambda d_, fs: iop_all(1.0005, d_, fs), kind="harmless")
        s("iop_x1.01_all", lambda d_, fs: iop_all(1.01, d_, fs))

        def one_iop(d_: Path, fs: list[Path], name: str = mid) -> None:
            import pydicom

            ds = pydicom.dcmread(d_ / name)
            ds.ImageOrientationPatient = [7.0 * float(v) for v in ds.ImageOrientationPatient]
            ds.save_as(d_ / name, enforce_file_format=False)
        s("iop_x7_one", one_iop)

        def dup_position(d_: Path, fs: list[Path]) -> None:
            import pydicom

            a = pydicom.dcmread(fs[0])
            b = pydicom.dcmread(fs[1])
            b.ImagePositionPatient = a.ImagePositionPatient
            b.save_as(fs[1], enforce_file_format=False)
        s("duplicate_position", dup_position, blame="series")

    # ------------------------------------------------------------ DICOMDIR
    ddir = _pydicom_file("DICOMDIR")
    if ddir is not None:
        root = ddir.parent
        ref = copy_to(root, "dd")

        def dd(damage: str, fn: Callable[[Path], None], kind: str = "damage", ci: bool = False,
               blame: str = "DICOMDIR") -> None:
            def build(folder: Path, fn: Callable[[Path], None] = fn) -> Path:
                dst = copy_to(root, "dd")(folder)
                fn(dst)
                return dst / "DICOMDIR"
            add(f"dicomdir/{damage}", build, lambda f: copy_to(root, "dd")(f) / "DICOMDIR", "dicomdir", blame=blame,
                kind=kind, tags=("ci",) if ci else ())

        dd("intact", lambda p: None, "harmless")
        for label, at in {"200B": 200, "50%": 0.5, "-10B": -10}.items():
            dd(f"cut_{label}", lambda p, at=at: (p / "DICOMDIR").write_bytes(cut(at)((p / "DICOMDIR").read_bytes())))

        def bad_offsets(p: Path) -> None:
            raw = bytearray((p / "DICOMDIR").read_bytes())
            key = struct.pack("<HH", 0x0004, 0x1400)  # OffsetOfTheNextDirectoryRecord
            i = raw.find(key, 132)
            while i >= 0:
                struct.pack_into("<I", raw, i + 8, 1084)
                i = raw.find(key, i + 12)
            (p / "DICOMDIR").write_bytes(bytes(raw))
        dd("record_offsets_1084", bad_offsets, ci=True)

        def missing_files(p: Path) -> None:
            for sub_dir in [x for x in p.iterdir() if x.is_dir()]:
                shutil.rmtree(sub_dir)
        dd("referenced_files_missing", missing_files)

        def fifo_instead(p: Path) -> None:
            import pydicom
            from pydicom.fileset import FileSet

            fs = FileSet(pydicom.dcmread(p / "DICOMDIR"))
            inst = next(iter(fs))
            target = Path(inst.path)
            target.unlink()
            os.mkfifo(target)
        dd("referenced_file_fifo", fifo_instead, blame="not a regular file")

    # ------------------------------------------------------------ TIFF
    for key, src in {"grey": dsb_image(False), "rgb": dsb_image(True)}.items():
        if src is None:
            continue
        ref = copy_to(src, "image.tif")
        rk = f"tiff/{key}"
        raw = src.read_bytes()
        ci_t = key == "grey"

        def t(damage: str, build: Callable[[Path], Path], kind: str = "damage", ci: bool = False,
              key: str = key, ref: Callable[[Path], Path] = ref, rk: str = rk, huge: bool = False,
              ci_t: bool = ci_t) -> None:
            add(f"tiff/{key}/{damage}", build, ref, rk, kind=kind,
                tags=(("ci",) if ci and ci_t else ()) + (("huge",) if huge else ()))

        t("intact", copy_to(src, "image.tif"), "harmless")
        for label, at in {"0B": 0, "4B": 4, "8B": 8, "16B": 16, "100B": 100, "25%": 0.25, "50%": 0.5, "90%": 0.9,
                          "-1B": -1}.items():
            t(f"cut_{label}", from_bytes(src, cut(at), "image.tif"), ci=label in ("50%", "-1B"))
        for pos in (0, 2, 4, 8, 10, 20, 40, 60, 100):
            t(f"flip_{pos}", from_bytes(src, flip(pos), "image.tif"))
        for frac in (0.3, 0.7):
            t(f"flip_data_{int(frac * 100)}%", from_bytes(src, flip(frac), "image.tif"), "noisy")
        lies = {"width_100000": [(256, 100000)], "length_100000": [(257, 100000)],
                "both_100000": [(256, 100000), (257, 100000)], "width_0": [(256, 0)], "length_1": [(257, 1)],
                "bits_64": [(258, 64)], "bits_0": [(258, 0)], "bits_3": [(258, 3)], "compression_115": [(259, 115)],
                "compression_50000": [(259, 50000)], "compression_none": [(259, 1)], "compression_jpeg": [(259, 7)],
                "photometric_99": [(262, 99)], "strip_offset_past_end": [(273, 10**9)], "strip_offset_0": [(273, 0)],
                "rows_per_strip_0": [(278, 0)], "rows_per_strip_1": [(278, 1)], "strip_bytes_0": [(279, 0)],
                "strip_bytes_huge": [(279, 10**9)], "samples_0": [(277, 0)], "samples_200": [(277, 200)]}
        for label, edits in lies.items():
            def fn(b: bytes, edits: list[tuple[int, int]] = edits) -> bytes:
                for code, value in edits:
                    with contextlib.suppress(KeyError):
                        b = tiff_patch(code, value)(b)
                return b
            t(f"tag_{label}", from_bytes(src, fn, "image.tif"), ci=label in ("both_100000", "compression_115"),
              huge="100000" in label)
        # OME-TIFF (6 planes) with lies in the XML
        ome_ref = write_tiff(ome_bytes(src), "image.ome.tif")
        okey = f"ome/{key}"
        ome_lies = {
            "intact": (lambda x: x, "harmless"),
            "SizeZ_1000": (sub(r'SizeZ="6"', 'SizeZ="1000"'), "damage"),
            "SizeZ_7": (sub(r'SizeZ="6"', 'SizeZ="7"'), "damage"),
            "SizeZ_2": (sub(r'SizeZ="6"', 'SizeZ="2"'), "damage"),
            "SizeX_1e9": (sub(r'SizeX="\d+"', 'SizeX="1000000000"'), "damage"),
            "SizeY_0": (sub(r'SizeY="\d+"', 'SizeY="0"'), "damage"),
            "SizeC_3": (sub(r'SizeC="1"', 'SizeC="3"'), "damage"),
            "SizeT_huge": (sub(r'SizeT="1"', 'SizeT="99999999999999999999"'), "damage"),
            "type_float64": (sub(r'Type="uint8"', 'Type="float64"'), "damage"),
            "order_junk": (sub(r'DimensionOrder="\w+"', 'DimensionOrder="XYZZZ"'), "damage"),
            "physical_nan": (sub(r'PhysicalSizeX="[^"]+"', 'PhysicalSizeX="nan"'), "damage"),
            "physical_neg": (sub(r'PhysicalSizeX="[^"]+"', 'PhysicalSizeX="-1"'), "damage"),
            "physical_1e400": (sub(r'PhysicalSizeX="[^"]+"', 'PhysicalSizeX="1e400"'), "damage"),
            "xml_truncated": (lambda x: x[: len(x) // 2], "damage"),
            "xml_entity_bomb": (lambda x: '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                                + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i else "")) * 10}">'
                                          for i in range(1, 10))
                                + "]>" + x.split("?>", 1)[1].replace("<Image ", "<Image Name=\"&lol9;\" ", 1),
                                "damage"),
        }
        for label, (edit, kind) in ome_lies.items():
            add(f"ome/{key}/{label}", write_tiff(ome_bytes(src, edit), "image.ome.tif"), ome_ref, okey, kind=kind,
                tags=("ci",) if ci_t and label in ("SizeZ_1000", "SizeX_1e9", "intact") else ())
        # ImageJ hyperstacks and tifffile's shaped description
        ij_ref = write_tiff(imagej_bytes(src), "image.tif")
        for label, edit in {"images_1000": sub(r"images=6", "images=1000"), "slices_1000": sub(r"slices=6", "slices=1000"),
                            "channels_3": sub(r"slices=6", "slices=2\nchannels=3"),
                            "spacing_nan": sub(r"spacing=2.0", "spacing=nan"),
                            "spacing_neg": sub(r"spacing=2.0", "spacing=-4")}.items():
            add(f"imagej/{key}/{label}", write_tiff(imagej_bytes(src, edit), "image.tif"), ij_ref, f"imagej/{key}",
                kind="ambiguous" if label == "channels_3" else "damage")

        def shaped(shape: list[int], key: str = key) -> Callable[[bytes], bytes]:
            def fn(b: bytes) -> bytes:
                old = b'{"shape": [256, 256]}' if key == "grey" else None
                if old is None or old not in b:
                    raise RuntimeError("no shaped description")
                new = json.dumps({"shape": shape}).encode()
                return b.replace(old, new.ljust(len(old))[: len(old)] if len(new) <= len(old) else new[: len(old)])
            return fn
        if key == "grey" and b'{"shape": [256, 256]}' in raw:
            t("shaped_lie_small", from_bytes(src, shaped([16, 16, 256]), "image.tif"))
            t("shaped_lie_swap", from_bytes(src, shaped([128, 512]), "image.tif"))
        # tiled pyramid with broken tiles / tags (lazy: the damage shows when napari draws it)
        pyr_ref = write_tiff(pyramid_bytes(src), "image.tif")
        pk = f"pyramid/{key}"
        pyr = {"intact": (None, "harmless"),
               "corrupt_tile_l0": (corrupt_tile(0, 3), "damage"), "corrupt_tile_l2": (corrupt_tile(2, 0), "damage"),
               "compression_115_l1": (patch_level_tag(1, 259, 115), "damage"),
               "compression_115_l0": (patch_level_tag(0, 259, 115), "damage"),
               "tile_offset_past_end": (patch_level_tag(0, 324, 10**9, 2), "damage"),
               "tile_bytes_0": (patch_level_tag(0, 325, 0, 1), "damage"),
               "tile_bytes_huge": (patch_level_tag(1, 325, 65535, 0), "damage"),
               "width_100000_l0": (patch_level_tag(0, 256, 100000), "damage"),
               "tile_width_16": (patch_level_tag(0, 322, 16), "damage")}
        for label, (dmg, kind) in pyr.items():
            add(f"pyramid/{key}/{label}", write_tiff(pyramid_bytes(src, dmg), "image.tif"), pyr_ref, pk, kind=kind,
                tags=("ci",) if ci_t and label in ("corrupt_tile_l0", "compression_115_l1", "intact") else ())

    # ------------------------------------------------------------ NIfTI
    gold = _dataset("ms_lesions", "patient07", "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz")
    if gold is not None:
        nref = nii_from_gz(gold, name="image.nii")
        gref = copy_to(gold, "image.nii.gz")
        lies = {"dim0_0": {"dim0": 0}, "dim0_8": {"dim0": 8}, "dim0_neg": {"dim0": -1},
                "dims_32767": {"dim1": 32767, "dim2": 32767, "dim3": 32767}, "dim1_neg": {"dim1": -5},
                "dim1_0": {"dim1": 0}, "dim4_1000": {"dim0": 4, "dim4": 1000}, "datatype_0": {"datatype": 0},
                "datatype_9999": {"datatype": 9999}, "datatype_float64": {"datatype": 64, "bitpix": 64},
                "datatype_rgb": {"datatype": 128, "bitpix": 24}, "bitpix_0": {"bitpix": 0},
                "pixdim_nan": {"pixdim1": float("nan")}, "pixdim_0": {"pixdim1": 0.0}, "pixdim_inf": {"pixdim3": float("inf")},
                "vox_offset_1e9": {"vox_offset": 1e9}, "vox_offset_neg": {"vox_offset": -5.0},
                "vox_offset_1e38": {"vox_offset": 1e38}, "vox_offset_nan": {"vox_offset": float("nan")},
                "scl_slope_3e38": {"scl_slope": 3e38}, "scl_slope_inf": {"scl_slope": float("inf")},
                "scl_inter_inf": {"scl_inter": float("inf")},
                "sform_nan": {"sform_code": 1, "srow_x0": float("nan")}, "sform_zero": {"sform_code": 1, "srow_x0": 0.0},
                "quatern_2": {"sform_code": 0, "qform_code": 1, "quatern_b": 2.0},
                "quatern_nan": {"sform_code": 0, "qform_code": 1, "quatern_b": float("nan")},
                "qoffset_inf": {"sform_code": 0, "qform_code": 1, "qoffset_x": float("inf")},
                "sizeof_hdr_0": {"sizeof_hdr": 0}, "sizeof_hdr_540": {"sizeof_hdr": 540}, "magic_junk": {"magic": b"xx1\0"}}
        huge_lies = {"dims_32767", "dim4_1000", "vox_offset_1e9", "vox_offset_1e38"}
        for label, fields in lies.items():
            ci = ("ci",) if label in ("dims_32767", "scl_slope_3e38", "pixdim_nan", "sform_nan") else ()
            hg = ("huge",) if label in huge_lies else ()
            add(f"nifti/nii/{label}", nii_from_gz(gold, nii_patch(**fields)), nref, "nifti/nii", tags=ci + hg)
            add(f"nifti/gz/{label}", from_bytes(gold, gz(nii_patch(**fields)), "image.nii.gz"), gref, "nifti/gz",
                tags=hg)
        add("nifti/nii/intact", nii_from_gz(gold), nref, "nifti/nii", kind="harmless")
        add("nifti/gz/intact", copy_to(gold, "image.nii.gz"), gref, "nifti/gz", kind="harmless")
        for label, at in {"100B": 100, "347B": 347, "352B": 352, "50%": 0.5, "-1B": -1}.items():
            add(f"nifti/nii/cut_{label}", nii_from_gz(gold, cut(at)), nref, "nifti/nii",
                tags=("ci",) if label == "50%" else ())
        for label, at in {"10B": 10, "50%": 0.5, "-1B": -1, "-8B": -8}.items():
            add(f"nifti/gz/cut_{label}", from_bytes(gold, cut(at), "image.nii.gz"), gref, "nifti/gz",
                tags=("ci",) if label == "-8B" else ())
        for frac in (0.2, 0.5, 0.8):
            add(f"nifti/gz/flip_{int(frac * 100)}%", from_bytes(gold, flip(frac), "image.nii.gz"), gref, "nifti/gz")
        add("nifti/gz/trailing_junk", from_bytes(gold, lambda b: b + b"garbage" * 10, "image.nii.gz"), gref,
            "nifti/gz", kind="damage")
        add("nifti/nii/gz_named_nii", copy_to(gold, "image.nii"), None)
        add("nifti/gz/raw_named_gz", nii_from_gz(gold, name="image.nii.gz"), None)

    # ------------------------------------------------------------ NRRD
    for key, src in {"label": _dataset("radiology_lesions", "breast1_label.nrrd"),
                     "image": _dataset("radiology_lesions", "breast1_image.nrrd")}.items():
        if src is None:
            continue
        ref = copy_to(src, "image.nrrd")
        rk = f"nrrd/{key}"
        raw_ref = nrrd_header_edit(src, lambda h: h, "image.nrrd", raw_data=True)
        ci_n = key == "label"

        def n(damage: str, build: Callable[[Path], Path], kind: str = "damage", ci: bool = False,
              ref: Callable[[Path], Path] = ref, rk: str = rk, key: str = key, huge: bool = False,
              ci_n: bool = ci_n) -> None:
            add(f"nrrd/{key}/{damage}", build, ref, rk, kind=kind,
                tags=(("ci",) if ci and ci_n else ()) + (("huge",) if huge else ()))

        n("intact", copy_to(src, "image.nrrd"), "harmless")
        edits = {"sizes_huge": sub(r"^sizes: .*$", "sizes: 100000 100000 100000"),
                 "sizes_more": sub(r"^sizes: (\d+) (\d+) (\d+)$", r"sizes: \1 \2 2100"),
                 "sizes_0": sub(r"^sizes: (\d+) ", "sizes: 0 "), "sizes_neg": sub(r"^sizes: (\d+) ", "sizes: -45 "),
                 "sizes_two": sub(r"^sizes: (\d+) (\d+) (\d+)$", r"sizes: \1 \2"),
                 "sizes_overflow": sub(r"^sizes: .*$", "sizes: 99999999999999999999 1 1"),
                 "dimension_4": sub(r"^dimension: 3$", "dimension: 4"),
                 "dimension_huge": sub(r"^dimension: 3$", "dimension: 99999999999"),
                 "type_junk": sub(r"^type: .*$", "type: garbage"), "type_double": sub(r"^type: .*$", "type: double"),
                 "type_block": sub(r"^type: .*$", "type: block"),
                 "encoding_raw_lie": sub(r"^encoding: gzip$", "encoding: raw"),
                 "encoding_bzip2_lie": sub(r"^encoding: gzip$", "encoding: bzip2"),
                 "encoding_junk": sub(r"^encoding: gzip$", "encoding: zip-o-matic"),
                 "space_junk": sub(r"^space: .*$", "space: sideways"),
                 "directions_nan": sub(r"^space directions: \([^)]*\)", "space directions: (nan,0,0)"),
                 "directions_zero": sub(r"^space directions: .*$", "space directions: (0,0,0) (0,0,0) (0,0,0)"),
                 "directions_1e308": sub(r"^space directions: \([^)]*\)", "space directions: (1e308,0,0)"),
                 "directions_two": sub(r"^space directions: (\([^)]*\)) (\([^)]*\)) (\([^)]*\))$",
                                       r"space directions: \1 \2"),
                 "directions_garbage": sub(r"^space directions: .*$", "space directions: ((((("),
                 "origin_nan": sub(r"^space origin: .*$", "space origin: (nan,nan,nan)"),
                 "origin_short": sub(r"^space origin: .*$", "space origin: (1,2)"),
                 "line_skip_huge": sub(r"^encoding: gzip$", "encoding: gzip\nline skip: 1000000000"),
                 "byte_skip_neg": sub(r"^encoding: gzip$", "encoding: gzip\nbyte skip: -5"),
                 "byte_skip_huge": sub(r"^encoding: gzip$", "encoding: gzip\nbyte skip: 999999999"),
                 "data_file_missing": sub(r"^encoding: gzip$", "encoding: gzip\ndata file: missing.raw.gz"),
                 "data_file_etc": sub(r"^encoding: gzip$", "encoding: gzip\ndata file: /etc/hostname"),
                 "magic_junk": sub(r"^NRRD0004$", "NRRDXXXX"),
                 "endian_big": sub(r"^endian: little$", "endian: big")}
        for label, edit in edits.items():
            kind = "noisy" if label == "endian_big" else "damage"
            n(f"header_{label}", nrrd_header_edit(src, edit, "image.nrrd"), kind,
              ci=label in ("sizes_huge", "directions_nan", "encoding_raw_lie", "data_file_etc"),
              huge=label in ("sizes_huge",))
        n("raw_intact", nrrd_header_edit(src, lambda h: h, "image.nrrd", raw_data=True), "harmless", ref=raw_ref,
          rk=f"nrrd/{key}/raw")
        for label, edit in {"sizes_huge": sub(r"^sizes: .*$", "sizes: 100000 100000 100000"),
                            "sizes_more": sub(r"^sizes: (\d+) (\d+) (\d+)$", r"sizes: \1 \2 2100"),
                            "type_double": sub(r"^type: .*$", "type: double"),
                            "byte_skip_huge": sub(r"^encoding: raw$", "encoding: raw\nbyte skip: 999999999")}.items():
            n(f"raw_header_{label}", nrrd_header_edit(src, edit, "image.nrrd", raw_data=True), ref=raw_ref,
              rk=f"nrrd/{key}/raw", huge=label == "sizes_huge", ci=label == "sizes_huge")
        def raw_cut(folder: Path, src: Path = src) -> Path:
            p = nrrd_header_edit(src, lambda h: h, "image.nrrd", raw_data=True)(folder)
            p.write_bytes(p.read_bytes()[:-1])
            return p
        n("raw_cut_-1B", raw_cut, ref=raw_ref, rk=f"nrrd/{key}/raw")
        raw = src.read_bytes()
        head_end = raw.index(b"\n\n") + 2
        for label, at in {"in_header": head_end // 2, "header_end": head_end, "data+10": head_end + 10,
                          "50%": 0.5, "-1B": -1, "-8B": -8}.items():
            if isinstance(at, int) and at >= len(raw):
                continue
            n(f"cut_{label}", from_bytes(src, cut(at), "image.nrrd"), ci=label in ("-8B", "in_header"))
        for frac in (0.6, 0.9):
            pos = head_end + int((len(raw) - head_end) * frac)
            n(f"flip_data_{int(frac * 100)}%", from_bytes(src, flip(pos), "image.nrrd"))
        n("flip_header", from_bytes(src, flip(10), "image.nrrd"))
        # detached header
        nref = nhdr_pair(src)
        add(f"nrrd/{key}/nhdr_intact", nhdr_pair(src), nref, f"nhdr/{key}", kind="harmless")
        add(f"nrrd/{key}/nhdr_data_fifo", nhdr_pair(src, data_fn=lambda p, d: make_fifo(p)), nref, f"nhdr/{key}",
            blame="data.raw", tags=("ci",) if ci_n else ())
        add(f"nrrd/{key}/nhdr_data_missing", nhdr_pair(src, data_fn=lambda p, d: None), nref, f"nhdr/{key}",
            blame="data.raw")
        add(f"nrrd/{key}/nhdr_data_short", nhdr_pair(src, data_fn=lambda p, d: p.write_bytes(d[:-2])), nref,
            f"nhdr/{key}")
        add(f"nrrd/{key}/nhdr_data_devzero", nhdr_pair(src, data_fn=lambda p, d: p.symlink_to("/dev/zero")), nref,
            f"nhdr/{key}", blame="data.raw")
        add(f"nrrd/{key}/nhdr_data_dir", nhdr_pair(src, data_fn=lambda p, d: p.mkdir()), nref, f"nhdr/{key}",
            blame="data.raw")
        add(f"nrrd/{key}/nhdr_sizes_huge", nhdr_pair(src, sub(r"^sizes: .*$", "sizes: 100000 100000 100000")), nref,
            f"nhdr/{key}", tags=("huge",))
    return cases


# ================================================================================================ running

def _hash_tree(folder: Path) -> dict[str, tuple]:
    """(size, sha1) of every regular file under ``folder`` (FIFOs and devices are never opened)."""
    out: dict[str, tuple] = {}
    for root, dirs, names in os.walk(folder, followlinks=False):
        for n in names + dirs:
            p = Path(root) / n
            try:
                st = os.lstat(p)
            except OSError:
                continue
            rel = str(p.relative_to(folder))
            if stat.S_ISREG(st.st_mode):
                out[rel] = (st.st_size, st.st_mode, hashlib.sha1(p.read_bytes()).hexdigest())
            else:
                out[rel] = (stat.S_IFMT(st.st_mode), st.st_mode)
    return out


def _materialize(arr: Any) -> tuple[np.ndarray | None, str]:
    """Compute an array in the child: a corner first (what napari draws), then all of it when below 1 GiB."""
    if isinstance(arr, np.ndarray):
        return arr, ""
    shape = tuple(int(s) for s in arr.shape)
    corner = tuple(slice(0, min(n, 64)) for n in shape)
    np.asarray(arr[corner])
    nbytes = int(np.prod(shape, dtype=np.float64) * np.dtype(arr.dtype).itemsize)
    if nbytes > 2**30:
        return None, f"lazy {shape} {arr.dtype}: only a corner computed"
    return np.asarray(arr), ""


def _summary(vols: list[Any]) -> list[dict[str, Any]]:
    out = []
    for v in vols:
        levels = v.data if isinstance(v.data, list) else [v.data]
        arrays, notes = [], []
        for lvl in levels:
            a, note = _materialize(lvl)
            arrays.append(a)
            if note:
                notes.append(note)
        geo = None
        try:
            geo = np.asarray(v.geometry.affine, dtype=float)
        except Exception:  # noqa: BLE001 - recorded as missing geometry
            geo = None
        out.append({"axes": v.axes, "layer_type": getattr(v, "layer_type", None), "arrays": arrays, "notes": notes,
                    "shapes": [tuple(int(s) for s in lvl.shape) for lvl in levels],
                    "dtypes": [str(lvl.dtype) for lvl in levels], "affine": geo,
                    "units": tuple(getattr(v, "units", ()) or ())})
    return out


def _child(path: str, mem_bytes: int, conn: Any) -> None:
    """Body of the forked child: limit memory, read, compute, send the outcome."""
    import resource
    import tracemalloc
    import warnings

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    import logging

    logging.getLogger("nibabel").setLevel(logging.CRITICAL)  # it prints header fixes on stderr
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res: dict[str, Any] = {}
    tracemalloc.start()
    try:
        from napari_medseg.errors import MedsegError
        from napari_medseg.io import read

        with warnings.catch_warnings(record=True) as wlist:
            warnings.simplefilter("always")
            vols = read(path)
            summary = _summary(vols)
        res = {"status": "ok", "volumes": summary,
               "warnings": [str(w.message)[:300] for w in wlist
                            if not str(w.message).startswith("Implicitly cleaning up")]}
    except MemoryError as exc:
        res = {"status": "memory", "type": "MemoryError", "message": str(exc)[:300]}
    except BaseException as exc:  # noqa: BLE001 - PanicException and friends are what we look for
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "napari_medseg" in f.filename), "")
        origin = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        res = {"status": "error", "type": type(exc).__name__, "module": type(exc).__module__,
               "ours": isinstance(exc, MedsegError) if "MedsegError" in dir() else False,
               "message": str(exc)[:600], "where": where, "origin": origin,
               "memory_cause": isinstance(exc.__cause__, MemoryError) or isinstance(exc.__context__, MemoryError)}
    _, peak = tracemalloc.get_traced_memory()
    res["peak_traced"] = peak
    res["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    try:
        conn.send(res)
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable array
        conn.send({"status": "error", "type": "SendError", "message": str(exc), "ours": False})
    conn.close()


def run_read(path: Path, timeout: float = 60.0, mem_gb: float = 4.0) -> dict[str, Any]:
    """Read ``path`` in a forked child under the memory limit and the timeout; returns the child's report."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(str(path), int(mem_gb * 2**30), child), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    child.close()
    res: dict[str, Any] | None = None
    deadline = t0 + timeout
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        if parent.poll(min(left, 0.5)):
            try:
                res = parent.recv()
            except EOFError:
                res = None
            break
        if not proc.is_alive() and not parent.poll(0):
            break
    if res is None and proc.is_alive():
        proc.kill()
        proc.join(5)
        res = {"status": "hang", "message": f"no result after {timeout:.0f} s"}
    proc.join(10)
    if res is None:
        res = {"status": "crash", "message": f"child exited with code {proc.exitcode}"}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


def _names_file(msg: str, blame: str) -> bool:
    return bool(blame) and blame in msg


def _compare(ref: dict[str, Any], got: dict[str, Any], any_dtype: bool = False) -> tuple[str, str]:
    """('same' | 'pixels' | 'different', detail) between two successful reads.

    ``any_dtype``: a different dtype is a pixel difference (the value range decides the dtype after a
    rescale), not a structural one.
    """
    rv, gv = ref["volumes"], got["volumes"]
    if len(rv) != len(gv):
        return "different", f"{len(gv)} volumes instead of {len(rv)}"
    pixels_only = True
    notes = []
    for a, b in zip(rv, gv, strict=True):
        if (a["axes"], a["shapes"], a["layer_type"]) != (b["axes"], b["shapes"], b["layer_type"]) or (
                a["dtypes"] != b["dtypes"] and not any_dtype):
            return "different", (f"axes/shape/dtype {b['axes']} {b['shapes']} {b['dtypes']} instead of "
                                 f"{a['axes']} {a['shapes']} {a['dtypes']}")
        if (a["affine"] is None) != (b["affine"] is None) or (
                a["affine"] is not None and not np.allclose(a["affine"], b["affine"], rtol=1e-5, atol=1e-4,
                                                             equal_nan=False)):
            return "different", "geometry differs (affine)"
        if a["units"] != b["units"]:
            return "different", f"units {b['units']} instead of {a['units']}"
        for x, y in zip(a["arrays"], b["arrays"], strict=True):
            if x is None or y is None:
                notes.append("lazy level not compared")
                continue
            if x.dtype != y.dtype:
                x, y = x.astype(np.float64), y.astype(np.float64)
            if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                n = int(np.count_nonzero(~((x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else x == y)))
                notes.append(f"{n:,} of {x.size:,} values differ")
                pixels_only = pixels_only and True
    if notes and any("differ" in s for s in notes):
        return ("pixels" if pixels_only else "different"), "; ".join(notes)
    return "same", "; ".join(notes)


def _subset(ref: dict[str, Any], got: dict[str, Any]) -> bool:
    """Whether every volume of ``got`` equals one volume of ``ref``."""
    for g in got["volumes"]:
        if not any(_compare({"volumes": [r]}, {"volumes": [g]})[0] == "same" for r in ref["volumes"]):
            return False
    return True


def _n_values(res: dict[str, Any]) -> list[int]:
    return [sum(int(np.prod(sh)) for sh in v["shapes"]) for v in res["volumes"]]


def classify(case: Case, path: Path, got: dict[str, Any], ref: dict[str, Any] | None, changed: bool,
             input_bytes: int) -> tuple[str, str]:
    """(category, detail) of one outcome."""
    if changed:
        return "files changed", "an input file was modified"
    st = got["status"]
    if st == "hang":
        return "hang", got["message"]
    rss_bound = 256 * 2**10 + 100 * input_bytes / 1024  # kB
    if st == "memory" or (st == "error" and got.get("memory_cause")):
        return "memory", f"{got.get('type')}: {got.get('message', '')[:160]}"
    if got.get("maxrss_kb", 0) > rss_bound:
        return "memory", f"peak RSS +{got['maxrss_kb'] / 1024:.0f} MB for a {input_bytes / 1024:.0f} KB input"
    if st == "crash":
        return "foreign exception", got["message"]
    if st == "error":
        head = f"{got['type']}: {got['message'][:200]}"
        if got.get("where"):
            head += f" [{got['where']}]"
        if not got.get("ours"):
            return "foreign exception", head + (f" (raised in {got.get('origin')})" if got.get("origin") else "")
        blame = case.blame if case.blame is not None else path.name
        if blame and not _names_file(got["message"], blame):
            return "unnamed error", head
        return "clean error", head
    # data came back
    if ref is None or ref.get("status") != "ok":
        return "wrong data", "data returned where no data is right" + (
            f" (reference failed: {ref.get('type')}: {ref.get('message', '')[:100]})" if ref else "")
    verdict, detail = _compare(ref, got, any_dtype=case.kind == "noisy")
    if verdict == "same":
        return "correct data", detail
    if verdict == "pixels" and case.kind == "noisy":
        return "undetectable", detail
    if case.kind == "ambiguous" and _n_values(ref) == _n_values(got):
        return "undetectable", detail
    blame = case.blame if case.blame is not None else path.name
    if len(got["volumes"]) < len(ref["volumes"]) and _subset(ref, got) and blame and any(
            blame in w for w in got.get("warnings", [])):
        return "partial + warning", f"{len(got['volumes'])} of {len(ref['volumes'])} series returned"
    w = "; ".join(got.get("warnings", [])[:2])
    return "wrong data", detail + (f" (warnings: {w[:200]})" if w else "")


def run_case(case: Case, timeout: float = 60.0, mem_gb: float = 4.0,
             ref_cache: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build, read and classify one case in fresh temporary folders."""
    ref_cache = {} if ref_cache is None else ref_cache
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        tmp_p = Path(tmp)
        ref = None
        if case.ref is not None:
            if case.ref_key not in ref_cache:
                rdir = tmp_p / "ref"
                rdir.mkdir()
                ref_cache[case.ref_key] = run_read(case.ref(rdir), timeout, mem_gb)
            ref = ref_cache[case.ref_key]
        cdir = tmp_p / "case"
        cdir.mkdir()
        try:
            path = case.build(cdir)
        except Exception as exc:  # noqa: BLE001 - a case this machine cannot build is reported, not run
            return {"case": case.name, "category": "not built", "detail": f"{type(exc).__name__}: {exc}"}
        before = _hash_tree(cdir)
        size = sum(v[0] for v in before.values() if len(v) == 3)
        got = run_read(path, timeout, mem_gb)
        after = _hash_tree(cdir)
        category, detail = classify(case, path, got, ref, before != after, size)
        return {"case": case.name, "category": category, "detail": detail, "seconds": got.get("seconds"),
                "peak_traced_mb": round(got.get("peak_traced", 0) / 2**20, 1), "kind": case.kind,
                "tags": sorted(case.tags)}


def table(results: list[dict[str, Any]]) -> str:
    """The outcome table: one row per case group, one column per category."""
    groups: dict[str, Counter] = {}
    for r in results:
        g = "/".join(r["case"].split("/")[:1])
        groups.setdefault(g, Counter())[r["category"]] += 1
    total = Counter(r["category"] for r in results)
    cols = list(CATEGORIES) + sorted(set(total) - set(CATEGORIES))
    head = ["group", "cases"] + cols
    rows = [head]
    for g in sorted(groups):
        c = groups[g]
        rows.append([g, str(sum(c.values()))] + [str(c.get(k, 0)) for k in cols])
    rows.append(["total", str(len(results))] + [str(total.get(k, 0)) for k in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
                     for r in rows)


def preload() -> None:
    """Import the readers and their decoders once, so that each forked child starts at once."""
    import napari_medseg.io  # noqa: F401
    import napari_medseg.io.dicom.series  # noqa: F401
    import napari_medseg.io.radiology  # noqa: F401
    import napari_medseg.io.tiff  # noqa: F401

    for mod in ("pydicom.pixels", "nibabel", "nrrd", "tifffile", "dask.array", "zarr", "imagecodecs",
                "pydicom.fileset", "skimage.io"):
        with contextlib.suppress(ImportError):
            __import__(mod)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default=None, help="only cases whose name contains this text (or matches this regex)")
    ap.add_argument("--ci", action="store_true", help="only the fast sample the tests run")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--mem-gb", type=float, default=4.0)
    ap.add_argument("--json", type=Path, default=None, help="write every outcome to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    ap.add_argument("--problems", action="store_true", help="list the cases outside clean error / correct data")
    args = ap.parse_args(argv)
    preload()
    cases = build_cases()
    if args.ci:
        cases = [c for c in cases if "ci" in c.tags]
    if args.k:
        cases = [c for c in cases if args.k in c.name or re.search(args.k, c.name)]
    print(f"{len(cases)} cases; timeout {args.timeout:g} s, RLIMIT_AS {args.mem_gb:g} GB", file=sys.stderr)
    ref_cache: dict[str, dict[str, Any]] = {}
    results = []
    t0 = time.perf_counter()
    for i, c in enumerate(cases, 1):
        r = run_case(c, args.timeout, args.mem_gb, ref_cache)
        results.append(r)
        if args.verbose:
            print(f"[{i}/{len(cases)}] {r['category']:<17} {c.name}  {r.get('detail', '')[:220]}", file=sys.stderr)
    print(table(results))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.problems:
        for r in results:
            if r["category"] not in GOOD:
                print(f"{r['category']:<17} {r['case']}: {r.get('detail', '')[:300]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
