"""read_dicom on real files: pydicom's test files, CT/SEG/RTSTRUCT datasets, DICOMDIR, colour."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import dataset
from pydicom.data import get_testdata_file, get_testdata_files

from napari_medseg.errors import ReaderError
from napari_medseg.io.dicom import is_dicom_path, read_dicom

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent


def _pixel_files() -> list[str]:
    out = []
    for f in sorted(get_testdata_files()):
        if not os.path.isfile(f):
            continue
        try:
            ds = pydicom.dcmread(f, force=True, stop_before_pixels=False)
        except Exception:  # noqa: BLE001
            continue
        if any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009)):
            out.append(f)
    return out


PIXEL_FILES = _pixel_files()


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dicom(path)


def _digest(paths) -> dict[str, str]:
    return {str(p): hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in paths}


def test_every_pydicom_test_file_opens_or_is_refused_clearly() -> None:
    assert len(PIXEL_FILES) > 60
    before = _digest(PIXEL_FILES)
    opened, refused = [], []
    for f in PIXEL_FILES:
        try:
            vols = _read(f)
        except ReaderError as exc:
            msg = str(exc)
            assert os.path.basename(f) in msg and len(msg) > len(f) + 10, msg  # names the file and says why
            refused.append(os.path.basename(f))
            continue
        # any other exception type fails the test right here
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for v in vols:
            base = v.data[0] if v.multiscale else v.data
            rows = v.shape[v.axes.index("Y")]
            cols = v.shape[v.axes.index("X")]
            if v.layer_type == "image":
                assert (rows, cols) == (ds.Rows, ds.Columns), f
            assert base.size > 0 and np.isfinite(np.asarray(base, dtype=float)).all(), f
            assert v.axes.endswith(("YX", "YXS"))
            if v.rgb:
                assert v.shape[-1] == 3
        opened.append(os.path.basename(f))
    assert _digest(PIXEL_FILES) == before  # nothing written or changed
    # the well-formed ones among them must open
    for name in ["CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_bigendian.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_gdcm.dcm", "examples_ybr_color.dcm",
                 "examples_palette.dcm", "rtdose.dcm", "image_dfl.dcm", "693_J2KI.dcm", "SC_rgb_rle_2frame.dcm"]:
        assert name in opened, name
    for name in ["MR_truncated.dcm", "badVR.dcm", "meta_missing_tsyntax.dcm"]:
        assert name in refused, name


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_implicit.dcm", "MR_small_expb.dcm"])
def test_lossless_encodings_give_identical_values(name: str) -> None:
    ref = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    vol = _read(get_testdata_file(name))[0]
    assert vol.axes == "ZYX" and vol.data.dtype == np.int16
    np.testing.assert_array_equal(vol.data[0], ref)


def test_ybr_is_converted_to_rgb() -> None:
    rgb = _read(get_testdata_file("SC_rgb_dcmtk_+eb+cr.dcm"))[0]  # JPEG, RGB
    for name in ["SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"]:  # JPEG, YBR_FULL / YBR_FULL_422
        ybr = _read(get_testdata_file(name))[0]
        assert ybr.axes == "YXS" and ybr.rgb and ybr.data.dtype == np.uint8
        diff = np.abs(ybr.data.astype(int) - rgb.data.astype(int))
        assert diff.mean() < 3, name  # lossy JPEG: close; unconverted YBR would be off by ~100
    # uncompressed YBR_FULL_422
    ybr = _read(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))[0]
    assert np.abs(ybr.data.astype(int) - rgb.data.astype(int)).mean() < 3


def test_palette_colour_expanded_to_rgb() -> None:
    vol = _read(get_testdata_file("examples_palette.dcm"))[0]
    assert vol.axes == "YXS" and vol.data.shape == (350, 800, 3)
    assert len(np.unique(vol.data.reshape(-1, 3), axis=0)) > 10


def test_rtdose_frames_on_grid_frame_offsets() -> None:
    f = get_testdata_file("rtdose.dcm")
    ds = pydicom.dcmread(f)
    vol = _read(f)[0]
    assert vol.axes == "ZYX" and vol.data.shape == (15, 10, 10) and vol.data.dtype == np.float32
    off = np.asarray(ds.GridFrameOffsetVector, float)
    assert np.allclose(np.diff(off), np.diff(off)[0])
    ipp = np.asarray(ds.ImagePositionPatient, float)
    np.testing.assert_allclose(vol.affine @ [0, 0, 0, 1], np.r_[ipp[::-1], 1], atol=1e-6)
    np.testing.assert_allclose(vol.affine[0, 0], abs(off[1] - off[0]), atol=1e-6)
    # values in Gy: stored * DoseGridScaling, slices ordered along +z
    order = np.argsort(off) if off[1] > off[0] else np.argsort(off)[::-1]
    expected = ds.pixel_array[order] * float(ds.DoseGridScaling)
    np.testing.assert_allclose(vol.data, expected.astype(np.float32), rtol=1e-6)


def test_non_image_objects_are_refused_clearly() -> None:
    with pytest.raises(ReaderError, match="RTSTRUCT"):
        read_dicom(dataset("dicom_rtstruct", "rtss.dcm"))
    with pytest.raises(ReaderError, match="SR"):
        read_dicom(get_testdata_file("test-SR.dcm"))
    with pytest.raises(ReaderError, match="RTPLAN"):
        read_dicom(get_testdata_file("rtplan.dcm"))
    # a folder with the CT slice and its RT structure set: the CT is read, the RTSTRUCT skipped
    vols = _read(dataset("dicom_rtstruct"))
    assert len(vols) == 1 and vols[0].metadata["dicom"]["Modality"] == "CT"


def test_dicomdir_reads_referenced_series() -> None:
    vols = _read(get_testdata_file("DICOMDIR"))
    assert len(vols) > 5
    assert {v.metadata["dicom"]["Modality"] for v in vols} == {"CR", "CT", "MR"}
    assert max(v.shape[0] for v in vols if v.axes == "ZYX") > 1
    assert is_dicom_path(get_testdata_file("DICOMDIR"))
    with pytest.raises(ReaderError):
        read_dicom(get_testdata_file("DICOMDIR-empty.dcm"))


def test_ct_series_in_hounsfield_units_matches_pydicom_and_simpleitk() -> None:
    folder = dataset("dicom_ct_seg", "ct-3slice")
    vol = _read(folder)[0]
    assert vol.axes == "ZYX" and vol.data.shape == (3, 512, 512) and vol.data.dtype == np.int16
    dss = [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))  # axial: ascending z
    for k, ds in enumerate(dss):
        assert float(ds.RescaleIntercept) == -1024
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.data[k], hu)
    assert vol.data.min() <= -1000  # air
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.data)
    d = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    ref = np.eye(4)
    ref[:3, :3] = d[::-1, ::-1]  # ITK index (x, y, z) -> LPS (x, y, z); ours is (k, i, j) -> (z, y, x)
    ref[:3, 3] = np.asarray(img.GetOrigin())[::-1]
    np.testing.assert_allclose(vol.affine, ref, atol=1e-4)


def test_multiframe_equals_single_frame_series() -> None:
    single = _read(dataset("dicom_ct_seg", "23x38x3", "image"))[0]
    multi = _read(dataset("dicom_ct_seg", "23x38x3", "multiframe", "mf.dcm"))[0]
    assert single.data.shape == multi.data.shape == (3, 38, 23)
    np.testing.assert_array_equal(single.data, multi.data)
    assert single.data.dtype == multi.data.dtype
    np.testing.assert_allclose(single.affine, multi.affine, atol=1e-9)
    assert single.contrast_limits == multi.contrast_limits


@pytest.mark.parametrize("seg, nrrd", [(("liver.dcm",), ("liver_seg.nrrd",)),
                                       (("23x38x3", "seg", "label.seg"), ("23x38x3", "nrrd", "label.nrrd"))])
def test_dicom_seg_is_a_label_volume_matching_the_nrrd(seg, nrrd) -> None:
    sitk = pytest.importorskip("SimpleITK")
    vol = _read(dataset("dicom_ct_seg", *seg))[0]
    assert vol.layer_type == "labels" and vol.axes == "ZYX"
    assert vol.metadata["segments"] == {1: "Liver"} or 1 in vol.metadata["segments"]
    img = sitk.ReadImage(str(dataset("dicom_ct_seg", *nrrd)))
    ref = sitk.GetArrayFromImage(img)
    np.testing.assert_array_equal(vol.data, ref)
    d = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    np.testing.assert_allclose(vol.affine[:3, :3], d[::-1, ::-1], atol=1e-5)
    np.testing.assert_allclose(vol.affine[:3, 3], np.asarray(img.GetOrigin())[::-1], atol=1e-4)
    assert int((vol.data > 0).sum()) > 0


def test_seg_and_ct_share_the_same_grid() -> None:
    ct = _read(dataset("dicom_ct_seg", "ct-3slice"))[0]
    seg = _read(dataset("dicom_ct_seg", "liver.dcm"))[0]
    np.testing.assert_allclose(ct.affine, seg.affine, atol=1e-4)


def test_non_dicom_file_in_series_folder_is_skipped(tmp_path: Path) -> None:
    src = dataset("dicom_ct_seg", "23x38x3", "image")
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "README-Series.txt").write_text("series notes")
    (tmp_path / "thumb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    vols = _read(tmp_path)
    assert len(vols) == 1 and vols[0].data.shape == (3, 38, 23)
    assert vols[0].metadata["n_files"] == 3


def test_an_inconsistent_file_does_not_spoil_the_folder(tmp_path: Path) -> None:
    src = dataset("dicom_ct_seg", "23x38x3", "image")
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    # pydicom's liver_1frame.dcm declares 1 frame but carries 3 per-frame functional groups
    shutil.copy(get_testdata_file("liver_1frame.dcm"), tmp_path / "seg.dcm")
    with pytest.raises(ReaderError, match="per-frame functional groups"):
        read_dicom(tmp_path / "seg.dcm")
    with pytest.warns(UserWarning, match="per-frame functional groups"):
        vols = read_dicom(tmp_path)
    assert len(vols) == 1 and vols[0].data.shape == (3, 38, 23)
