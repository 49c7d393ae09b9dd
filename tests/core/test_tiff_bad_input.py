"""Broken TIFF files raise ReaderError with the path and the problem, and are left untouched.

Each broken file is made here from a valid one: cut short, IFD pointed past the
end, IFD overwritten with garbage, empty, or not a TIFF at all.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_medseg.errors import ReaderError
from napari_medseg.io import read
from napari_medseg.io import tiff as tiffmod
from napari_medseg.io.tiff import read_tiff


def _valid_bytes(tmp_path: Path) -> bytes:
    src = tmp_path / "src" / "valid.tif"
    src.parent.mkdir()
    data = np.arange(4 * 64 * 80, dtype=np.uint16).reshape(4, 64, 80)
    tifffile.imwrite(src, data, photometric="minisblack")
    return src.read_bytes()


def _first_ifd(raw: bytes) -> int:
    return struct.unpack("<I", raw[4:8])[0]


def _make(kind: str, raw: bytes) -> bytes:
    ifd = _first_ifd(raw)
    if kind == "zero_bytes":
        return b""
    if kind == "text_with_tif_suffix":
        return b"Patient list, not an image\n" * 20
    if kind == "png_with_tif_suffix":
        return b"\x89PNG\r\n\x1a\n" + bytes(100)
    if kind == "header_only":
        return raw[:6]
    if kind == "truncated_half":
        return raw[: len(raw) // 2]
    if kind == "truncated_last_bytes":
        return raw[:-100]
    if kind == "ifd_offset_past_end":
        return raw[:4] + struct.pack("<I", 10**9) + raw[8:]
    if kind == "garbage_ifd":
        garbage = bytes((i * 97 + 13) % 256 for i in range(64))
        return raw[:ifd] + garbage + raw[ifd + 64:]
    raise AssertionError(kind)


KINDS = {
    "zero_bytes": "empty",
    "text_with_tif_suffix": "not a TIFF",
    "png_with_tif_suffix": "not a TIFF",
    "header_only": "damaged",
    "truncated_half": "truncated",
    "truncated_last_bytes": "truncated",
    "ifd_offset_past_end": "no readable image",
    "garbage_ifd": "damaged",
}


@pytest.mark.parametrize("lazy", [None, True])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_broken_tiff_raises_reader_error_and_changes_nothing(tmp_path: Path, kind: str, lazy) -> None:
    raw = _valid_bytes(tmp_path)
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / f"{kind}.tif"
    broken = _make(kind, raw)
    path.write_bytes(broken)
    old = os.stat(path).st_mtime_ns - 10**9  # set a past mtime to see any write
    os.utime(path, ns=(old, old))

    with pytest.raises(ReaderError) as info:
        read_tiff(path, lazy=lazy)
    message = str(info.value)
    assert str(path) in message
    assert KINDS[kind] in message
    assert "Traceback" not in message

    assert path.read_bytes() == broken
    assert os.stat(path).st_mtime_ns == old
    assert sorted(p.name for p in folder.iterdir()) == [path.name]


def test_truncated_large_file_fails_at_open_not_later(tmp_path: Path, monkeypatch) -> None:
    """A lazy open must not hand napari an array that fails on the first slice."""
    raw = _valid_bytes(tmp_path)
    path = tmp_path / "cut.tif"
    path.write_bytes(raw[:-4000])
    monkeypatch.setattr(tiffmod, "LAZY_THRESHOLD_BYTES", 1)
    with pytest.raises(ReaderError, match="truncated"):
        read_tiff(path)


def test_truncated_compressed_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 4000, (4, 64, 80)).astype(np.uint16)
    src = tmp_path / "zlib.tif"
    tifffile.imwrite(src, data, compression="zlib", photometric="minisblack")
    cut = tmp_path / "zlib_cut.tif"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size - 2000])
    with pytest.raises(ReaderError, match="zlib_cut.tif"):
        read_tiff(cut)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="does not exist"):
        read_tiff(tmp_path / "nope.tif")
    with pytest.raises(ReaderError, match="folder"):
        read_tiff(tmp_path)


def test_dispatch_and_reader_hook_raise_reader_error(tmp_path: Path) -> None:
    from napari_medseg._napari.reader import get_tiff_reader

    path = tmp_path / "garbage.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 64)  # TIFF magic, broken IFD offset
    with pytest.raises(ReaderError, match="garbage.tif"):
        read(path)
    reader = get_tiff_reader(str(path))
    assert reader is not None
    with pytest.raises(ReaderError, match="garbage.tif"):
        reader(str(path))


def test_damage_in_another_thread_does_not_fail_a_good_file(tmp_path: Path) -> None:
    import threading

    raw = _valid_bytes(tmp_path)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(_make("truncated_last_bytes", raw))
    good = tmp_path / "good.tif"
    good.write_bytes(raw)
    errors: list[Exception] = []

    def read_bad() -> None:
        for _ in range(20):
            try:
                read_tiff(bad)
            except ReaderError:
                pass
            except Exception as exc:  # pragma: no cover - reported below  # noqa: BLE001
                errors.append(exc)

    t = threading.Thread(target=read_bad)
    t.start()
    for _ in range(20):
        (vol,) = read_tiff(good)
        assert vol.shape == (4, 64, 80)
    t.join()
    assert errors == []
