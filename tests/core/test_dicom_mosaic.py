"""Siemens CSA header parser (checked against nibabel) and mosaic unpacking."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import dataset

from napari_medseg.errors import ReaderError
from napari_medseg.io.dicom import read_dicom
from napari_medseg.io.dicom.csa import csa_image_header, parse_csa
from napari_medseg.io.dicom.mosaic import MosaicInfo, unpack_mosaic


def _siemens_files() -> list[Path]:
    return sorted(dataset("dicom_mr_series", "In", "20180918Si").glob("*/*.dcm"))


def _as_text(items: list) -> list:
    return [x.decode() if isinstance(x, bytes) else x for x in items]


def test_csa_parser_matches_nibabel_on_real_headers() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel warns that its DICOM support is experimental
        csareader = pytest.importorskip("nibabel.nicom.csareader")
    files = _siemens_files()
    assert len(files) == 8
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for element in (0x1010, 0x1020):  # image and series CSA headers
            raw = ds[0x0029, element].value
            ours = parse_csa(raw)
            ref = csareader.read(raw)["tags"]
            assert list(ours) == list(ref)
            for name, tag in ref.items():
                assert ours[name] == _as_text(tag["items"]), (f.name, name)
        assert csa_image_header(ds)["NumberOfImagesInMosaic"] == [5]
        assert csa_image_header(ds)["SliceNormalVector"] == [0.0, 0.0, 1.0]


def _csa2(tags: dict[str, tuple[str, list[str]]]) -> bytes:
    out = [b"SV10", b"\4\3\2\1", struct.pack("<2I", len(tags), 77)]
    for name, (vr, items) in tags.items():
        out.append(struct.pack("<64si4s3i", name.encode(), len(items), vr.encode(), 0, len(items), 77))
        for it in items:
            data = it.encode() + b"\0"
            out.append(struct.pack("<4i", len(data), len(data), 77, len(data)))
            out.append(data + b"\0" * (-len(data) % 4))
    return b"".join(out)


def test_csa_parser_on_a_handmade_header() -> None:
    raw = _csa2({"NumberOfImagesInMosaic": ("US", ["12"]), "SliceNormalVector": ("FD", ["0.1", "-0.2", "0.97"]),
                 "ImaComments": ("LT", ["hello world"])})
    h = parse_csa(raw)
    assert h == {"NumberOfImagesInMosaic": [12], "SliceNormalVector": [0.1, -0.2, 0.97],
                 "ImaComments": ["hello world"]}
    with pytest.raises(ReaderError, match="CSA"):
        parse_csa(raw[:60])


def test_unpack_mosaic_tile_order() -> None:
    # 3x3 grid of 2x2 tiles holding 7 slices; tile t filled with t
    frame = np.zeros((6, 6), np.int16)
    for t in range(9):
        r, c = divmod(t, 3)
        frame[2 * r:2 * r + 2, 2 * c:2 * c + 2] = t
    info = MosaicInfo(n_slices=7, grid=3, rows=2, cols=2, positions=np.zeros((7, 3)), normal=np.array([0, 0, 1.0]))
    tiles = unpack_mosaic(frame, info)
    assert tiles.shape == (7, 2, 2)
    np.testing.assert_array_equal(tiles[:, 0, 0], np.arange(7))


def test_mosaic_without_csa_header_is_refused(tmp_path: Path) -> None:
    src = _siemens_files()[0]
    ds = pydicom.dcmread(src)
    for tag in list(ds.keys()):
        if tag.group in (0x0019, 0x0029):
            del ds[tag]
    ds.save_as(tmp_path / "mosaic.dcm")
    with pytest.raises(ReaderError, match="NumberOfImagesInMosaic"):
        read_dicom(tmp_path / "mosaic.dcm")


def test_mosaic_slice_normal_sign_sets_slice_direction(tmp_path: Path) -> None:
    """A CSA SliceNormalVector opposite to cross(row, col) puts slice k at IPP - k * spacing * z."""
    src = _siemens_files()[0]
    ds = pydicom.dcmread(src)
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER")
    raw = bytes(block[0x10].value)
    key = b"SliceNormalVector"
    at = raw.index(key)
    # the three FD items of this tag follow its 84-byte header; rewrite "1" (z) as "-1" in place
    tail = raw[at:]
    z_at = at + tail.index(b"1.00000000")
    patched = raw[:z_at] + b"-1.0000000" + raw[z_at + 10:]
    assert parse_csa(patched)["SliceNormalVector"][2] == -1.0
    block[0x10].value = patched
    ds.save_as(tmp_path / "m.dcm")
    vol = read_dicom(tmp_path / "m.dcm")[0]
    assert vol.data.shape == (5, 72, 72)
    # slices now run towards -z: sorted ascending along cross(row, col) = +z, so tile 4 comes first
    ref = read_dicom(src)[0]
    np.testing.assert_array_equal(vol.data, ref.data[::-1])
    np.testing.assert_allclose(vol.affine[:3, 3], [16.0 - 4 * 12.0, -108.0, -108.0], atol=1e-6)
    np.testing.assert_allclose(vol.affine[:3, 0], [12.0, 0.0, 0.0], atol=1e-9)
