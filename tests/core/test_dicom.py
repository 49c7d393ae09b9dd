"""read_dicom on synthetic series written with pydicom: slice order, affine, gaps, time, values."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage, generate_uid

from napari_medseg.errors import ReaderError
from napari_medseg.io.dicom import DicomWarning, is_dicom_path, read_dicom
from napari_medseg.io.dicom.geometry import lps_affine_zyx, plan_stack
from napari_medseg.io.dicom.pixels import rescale


def _ds_str(v: float) -> str:
    s = f"{v:.8f}".rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"


def write_slice(path: Path, pixels: np.ndarray, ipp, *, iop=(1, 0, 0, 0, 1, 0), ps=(0.5, 0.7), series_uid=None,
                instance=1, slope=None, intercept=None, bits_stored=None, signed=None, photometric="MONOCHROME2",
                window=None, modality="CT", implicit=False, **tags) -> str:
    """Write one single-frame slice; returns its SOPInstanceUID."""
    pixels = np.ascontiguousarray(pixels)
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid or "1.2.3.4.5"
    ds.Modality = modality
    ds.SeriesNumber = tags.pop("SeriesNumber", 7)
    ds.SeriesDescription = tags.pop("SeriesDescription", "synthetic")
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [_ds_str(v) for v in ipp]
    ds.ImageOrientationPatient = [_ds_str(v) for v in iop]
    ds.PixelSpacing = [_ds_str(v) for v in ps]
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i" if signed is None else signed)
    if slope is not None:
        ds.RescaleSlope = _ds_str(slope)
    if intercept is not None:
        ds.RescaleIntercept = _ds_str(intercept)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = _ds_str(window[0]), _ds_str(window[1])
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return uid


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


def _world(ipp, iop, ps, i, j) -> np.ndarray:
    """DICOM definition: LPS (x, y, z) of pixel (row i, column j) of a slice."""
    iop = np.asarray(iop, float)
    return np.asarray(ipp, float) + i * ps[0] * iop[3:] + j * ps[1] * iop[:3]


def _quiet_read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DicomWarning)
        return read_dicom(path)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------

def test_slices_sorted_along_normal_not_by_instance_number_or_file_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rot = _rotation(0.3, -0.2, 0.5)
    iop = np.concatenate([rot[:, 0], rot[:, 1]])
    normal = rot[:, 2]
    origin = np.array([-100.0, 20.0, 35.0])
    n = 6
    instance = rng.permutation(n) + 1
    names = rng.permutation(n)
    positions = []
    for k in range(n):
        ipp = origin + k * 2.5 * normal
        positions.append(ipp)
        # slice k (along the normal) is filled with the value 100 + k
        write_slice(tmp_path / f"f{names[k]:02d}.dcm", np.full((4, 5), 100 + k, np.int16), ipp, iop=iop,
                    instance=int(instance[k]))
    vol = _quiet_read(tmp_path)[0]
    assert vol.axes == "ZYX" and vol.data.shape == (n, 4, 5)
    np.testing.assert_array_equal(vol.data[:, 0, 0], 100 + np.arange(n))
    iop_r = np.round(iop, 8)
    for k, i, j in [(0, 0, 0), (5, 3, 4), (2, 1, 3), (4, 3, 0)]:
        expected = _world(positions[k], iop_r, (0.5, 0.7), i, j)[::-1]  # LPS (z, y, x)
        np.testing.assert_allclose(vol.affine @ [k, i, j, 1], np.r_[expected, 1], atol=1e-6)
    assert vol.scale is None and vol.translate is None
    assert vol.units == ("mm", "mm", "mm")
    assert vol.metadata["geometry"] == "LPS (z, y, x) mm"
    assert vol.metadata["warnings"] == []


def test_affine_columns_follow_the_dicom_convention() -> None:
    """d/dj = PixelSpacing[1] * row cosine, d/di = PixelSpacing[0] * column cosine, in (z, y, x)."""
    iop = np.array([0.0, 1.0, 0.0, 0.0, 0.0, -1.0])  # sagittal: rows along +y, columns down (-z)
    a = lps_affine_zyx(np.array([10.0, 20.0, 30.0]), iop, (0.5, 0.8), np.array([2.0, 0.0, 0.0]))
    np.testing.assert_allclose(a[:3, 2], [0.0, 0.8, 0.0])  # column j: +y (row cosine) * 0.8
    np.testing.assert_allclose(a[:3, 1], [-0.5, 0.0, 0.0])  # row i: -z (column cosine) * 0.5
    np.testing.assert_allclose(a[:3, 0], [0.0, 0.0, 2.0])  # slice k: +x
    np.testing.assert_allclose(a[:3, 3], [30.0, 20.0, 10.0])  # IPP reordered (z, y, x)


def test_descending_positions_are_reordered_ascending(tmp_path: Path) -> None:
    for k in range(4):  # InstanceNumber 1 at the top (z = 30), going down
        write_slice(tmp_path / f"{k}.dcm", np.full((3, 3), k, np.int16), (0, 0, 30 - 3 * k), instance=k + 1)
    vol = _quiet_read(tmp_path)[0]
    np.testing.assert_array_equal(vol.data[:, 0, 0], [3, 2, 1, 0])  # ascending z
    np.testing.assert_allclose(vol.affine[:3, 0], [3.0, 0.0, 0.0])
    np.testing.assert_allclose(vol.affine[:3, 3], [21.0, 0.0, 0.0])
    assert vol.metadata["slice_positions_mm"] == pytest.approx([21, 24, 27, 30])


def test_gantry_tilt_gives_a_sheared_affine(tmp_path: Path) -> None:
    # each slice 2 mm higher and shifted 0.5 mm in y: the step is not along the normal
    pos = [np.array([0.0, 0.5 * k, 2.0 * k]) for k in range(4)]
    for k, p in enumerate(pos):
        write_slice(tmp_path / f"{k}.dcm", np.full((3, 3), k, np.int16), p)
    vol = _quiet_read(tmp_path)[0]
    for k in range(4):
        np.testing.assert_allclose(vol.affine @ [k, 2, 1, 1], np.r_[_world(pos[k], (1, 0, 0, 0, 1, 0),
                                                                           (0.5, 0.7), 2, 1)[::-1], 1], atol=1e-9)
    assert vol.metadata["gantry_tilt_deg"] == pytest.approx(np.degrees(np.arctan2(0.5, 2.0)), abs=1e-6)


def test_missing_slice_is_reported_and_filled_so_geometry_stays_exact(tmp_path: Path) -> None:
    zs = [0, 2, 4, 8, 10]  # 6 is missing
    for k, z in enumerate(zs):
        write_slice(tmp_path / f"{k}.dcm", np.full((3, 3), 10 + z, np.int16), (0, 0, z))
    with pytest.warns(DicomWarning, match="missing slices"):
        vol = read_dicom(tmp_path)[0]
    assert vol.data.shape == (6, 3, 3)
    np.testing.assert_array_equal(vol.data[:, 0, 0], [10, 12, 14, 10, 18, 20])  # blank = data minimum
    assert vol.metadata["filled_slices"] == [3]
    assert any("missing slices" in w for w in vol.metadata["warnings"])
    np.testing.assert_allclose(vol.affine @ [4, 0, 0, 1], [8, 0, 0, 1], atol=1e-9)


def test_uneven_spacing_loads_with_median_spacing_and_warns(tmp_path: Path) -> None:
    zs = [0, 1, 2, 3.4, 4.4, 5.4]  # one 1.4 mm step among 1 mm steps
    for k, z in enumerate(zs):
        write_slice(tmp_path / f"{k}.dcm", np.full((2, 2), k, np.int16), (0, 0, z))
    with pytest.warns(DicomWarning, match="uneven slice spacing"):
        vol = read_dicom(tmp_path)[0]
    assert vol.data.shape == (6, 2, 2)
    np.testing.assert_array_equal(vol.data[:, 0, 0], np.arange(6))
    np.testing.assert_allclose(vol.affine[:3, 0], [1.0, 0, 0])  # median spacing
    np.testing.assert_allclose(vol.affine[:3, 3], [0.0, 0, 0])  # first slice
    assert vol.metadata["max_position_error_mm"] == pytest.approx(0.4, abs=1e-6)
    assert any("median spacing" in w for w in vol.metadata["warnings"])


def test_inconsistent_duplicate_positions_are_refused(tmp_path: Path) -> None:
    for k, z in enumerate([0, 1, 1, 2]):
        write_slice(tmp_path / f"{k}.dcm", np.full((2, 2), k, np.int16), (0, 0, z), instance=k + 1)
    with pytest.raises(ReaderError, match="not a consistent time series"):
        read_dicom(tmp_path)


def test_duplicates_split_by_acquisition_number(tmp_path: Path) -> None:
    # two acquisitions in one series with different slice sets: split, not refused
    for k, z in enumerate([0, 1, 2]):
        write_slice(tmp_path / f"a{k}.dcm", np.full((2, 2), k, np.int16), (0, 0, z), AcquisitionNumber=1)
    for k, z in enumerate([1, 2]):
        write_slice(tmp_path / f"b{k}.dcm", np.full((2, 2), 50 + k, np.int16), (0, 0, z), AcquisitionNumber=2)
    vols = _quiet_read(tmp_path)
    assert [v.data.shape for v in vols] == [(3, 2, 2), (2, 2, 2)]
    assert vols[1].name.endswith("(acquisition 2)")
    np.testing.assert_array_equal(vols[1].data[:, 0, 0], [50, 51])


def test_repeated_positions_make_a_4d_series_ordered_by_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n_z, n_t = 3, 4
    order = rng.permutation(n_z * n_t)
    for idx in order:
        t, z = divmod(int(idx), n_z)
        # instance numbers deliberately NOT in time order; AcquisitionTime is
        write_slice(tmp_path / f"{idx:03d}.dcm", np.full((2, 3), 10 * t + z, np.int16), (0, 0, 4.0 * z),
                    modality="MR", instance=int(order[idx]) + 1, AcquisitionTime=f"1200{10 + 2 * t:02d}.000",
                    RepetitionTime="2000")
    vol = _quiet_read(tmp_path)[0]
    assert vol.axes == "TZYX" and vol.data.shape == (n_t, n_z, 2, 3)
    np.testing.assert_array_equal(vol.data[:, :, 0, 0], 10 * np.arange(n_t)[:, None] + np.arange(n_z))
    assert vol.affine.shape == (5, 5)
    assert vol.affine[0, 0] == 2.0  # RepetitionTime 2000 ms
    assert vol.units == ("s", "mm", "mm", "mm")
    np.testing.assert_allclose(vol.affine[1:, 1:] @ [2, 0, 0, 1], [8, 0, 0, 1])


def test_series_split_by_orientation_and_ordered_by_series_number(tmp_path: Path) -> None:
    for k in range(3):
        write_slice(tmp_path / f"ax{k}.dcm", np.zeros((2, 2), np.int16), (0, 0, k), SeriesNumber=9,
                    series_uid="1.2.9", SeriesDescription="axial")
        write_slice(tmp_path / f"sag{k}.dcm", np.zeros((2, 2), np.int16), (k, 0, 0), iop=(0, 1, 0, 0, 0, -1),
                    SeriesNumber=9, series_uid="1.2.9", SeriesDescription="axial")
        write_slice(tmp_path / f"other{k}.dcm", np.zeros((3, 3), np.int16), (0, 0, k), SeriesNumber=2,
                    series_uid="1.2.2", SeriesDescription="first")
    (tmp_path / "README.txt").write_text("not DICOM")
    vols = _quiet_read(tmp_path)
    assert [v.metadata["dicom"]["SeriesNumber"] for v in vols] == [2, 9, 9]
    assert vols[0].name == "2: first"
    assert all("orientation" in v.name for v in vols[1:])
    assert sorted(v.data.shape for v in vols) == [(3, 2, 2), (3, 2, 2), (3, 3, 3)]


def test_plan_stack_handles_a_single_slice() -> None:
    lay = plan_stack(np.array([[1.0, 2.0, 3.0]]), np.array([1, 0, 0, 0, 1, 0.0]), [()], single_slice_spacing=2.5)
    assert lay.order.shape == (1, 1)
    np.testing.assert_allclose(lay.step, [0, 0, 2.5])


# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------

def test_ct_rescale_to_int16_hu_and_window(tmp_path: Path) -> None:
    raw = np.array([[0, 24], [1024, 4094]], np.uint16)
    for k in range(2):
        write_slice(tmp_path / f"{k}.dcm", raw + k, (0, 0, k), slope=1, intercept=-1024, bits_stored=12,
                    signed=False, window=(40, 400))
    vol = _quiet_read(tmp_path)[0]
    assert vol.data.dtype == np.int16
    np.testing.assert_array_equal(vol.data[0], raw.astype(int) - 1024)
    np.testing.assert_array_equal(vol.data[1], raw.astype(int) + 1 - 1024)
    assert vol.contrast_limits == (-160.0, 240.0)
    assert vol.metadata["rescale"] == {"slope": 1.0, "intercept": -1024.0}


def test_unused_high_bits_are_ignored(tmp_path: Path) -> None:
    # 12 bits stored in 16 allocated; garbage (overlay) in the top 4 bits must not leak into values
    raw = np.array([[0x0FFF | 0xF000, 0x0001 | 0x1000]], np.uint16)
    write_slice(tmp_path / "a.dcm", raw, (0, 0, 0), bits_stored=12, signed=False)
    vol = _quiet_read(tmp_path / "a.dcm")[0]
    np.testing.assert_array_equal(vol.data[0], [[4095, 1]])
    # signed 12-bit: 0x0800 is -2048 once sign-extended
    raw = np.array([[0x0800, 0x07FF]], np.uint16).view(np.int16)
    write_slice(tmp_path / "b.dcm", raw, (0, 0, 0), bits_stored=12, signed=True)
    vol = _quiet_read(tmp_path / "b.dcm")[0]
    np.testing.assert_array_equal(vol.data[0], [[-2048, 2047]])


def test_large_unsigned_values_become_int32(tmp_path: Path) -> None:
    raw = np.array([[0, 65535]], np.uint16)
    write_slice(tmp_path / "a.dcm", raw, (0, 0, 0), signed=False)
    vol = _quiet_read(tmp_path)[0]
    assert vol.data.dtype == np.int32
    np.testing.assert_array_equal(vol.data[0], [[0, 65535]])


def test_fractional_rescale_becomes_float32(tmp_path: Path) -> None:
    raw = np.array([[0, 3], [10, 200]], np.int16)
    write_slice(tmp_path / "a.dcm", raw, (0, 0, 0), slope=0.25, intercept=-1.5, modality="MR")
    write_slice(tmp_path / "b.dcm", raw, (0, 0, 1), slope=0.5, intercept=-1.5, modality="MR")
    vol = _quiet_read(tmp_path)[0]
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data[0], raw * 0.25 - 1.5)
    np.testing.assert_array_equal(vol.data[1], raw * 0.5 - 1.5)
    assert str(vol.metadata["rescale"]).startswith("per frame")


def test_rescale_is_exact_in_the_chosen_dtype() -> None:
    stored = np.array([[[[40000, 0]]]], np.uint16)
    out = rescale(stored.copy(), np.array([[1.0]]), np.array([[-30000.0]]), frame_axes=2)
    assert out.dtype == np.int16  # 10000 and -30000 fit although 40000 does not
    np.testing.assert_array_equal(out, [[[[10000, -30000]]]])
    out = rescale(np.array([[[[3, -2]]]], np.int16), np.array([[20000.0]]), np.array([[5.0]]), frame_axes=2)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[[[60005, -39995]]]])


def test_monochrome1_is_inverted_and_says_how(tmp_path: Path) -> None:
    raw = np.array([[0, 100], [4000, 4095]], np.uint16)
    write_slice(tmp_path / "a.dcm", raw, (0, 0, 0), bits_stored=12, signed=False, photometric="MONOCHROME1",
                window=(1000, 500))
    vol = _quiet_read(tmp_path)[0]
    np.testing.assert_array_equal(vol.data[0], 4095 - raw.astype(int))
    assert "4095 - x" in vol.metadata["monochrome1_inverted"]
    assert vol.contrast_limits == (4095 - 1000 - 250, 4095 - 1000 + 250)


def test_contrast_limits_from_data_without_window(tmp_path: Path) -> None:
    write_slice(tmp_path / "a.dcm", np.array([[-5, 7]], np.int16), (0, 0, 0))
    vol = _quiet_read(tmp_path)[0]
    assert vol.contrast_limits == (-5.0, 7.0)


def test_implicit_vr_fast_path_matches_pydicom(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    raw = rng.integers(-3000, 3000, (7, 9)).astype(np.int16)
    write_slice(tmp_path / "a.dcm", raw, (0, 0, 0), implicit=True)
    vol = _quiet_read(tmp_path / "a.dcm")[0]
    np.testing.assert_array_equal(vol.data[0], pydicom.dcmread(tmp_path / "a.dcm").pixel_array)


# ---------------------------------------------------------------------------------------------
# errors, detection, import cost
# ---------------------------------------------------------------------------------------------

def test_truncated_pixel_data_refused_never_partial(tmp_path: Path) -> None:
    for k in range(3):
        write_slice(tmp_path / f"{k}.dcm", np.full((8, 8), k, np.int16), (0, 0, k))
    f = tmp_path / "1.dcm"
    data = f.read_bytes()
    f.write_bytes(data[:-40])
    with pytest.raises(ReaderError, match="truncated"):
        read_dicom(tmp_path)
    with pytest.raises(ReaderError, match="truncated"):
        read_dicom(f)


def test_truncated_header_refused(tmp_path: Path) -> None:
    write_slice(tmp_path / "a.dcm", np.zeros((8, 8), np.int16), (0, 0, 0))
    f = tmp_path / "a.dcm"
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(ReaderError):
        read_dicom(f)


def test_broken_file_in_a_folder_is_skipped_with_a_warning(tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    ok.mkdir()
    for k in range(2):
        write_slice(ok / f"{k}.dcm", np.full((4, 4), k, np.int16), (0, 0, k), series_uid="1.2.1", SeriesNumber=1)
    bad = tmp_path / "bad"
    bad.mkdir()
    for k in range(2):
        write_slice(bad / f"{k}.dcm", np.full((4, 4), k, np.int16), (0, 0, k), series_uid="1.2.2", SeriesNumber=2)
    f = bad / "1.dcm"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.warns(DicomWarning, match="skipped"):
        vols = read_dicom(tmp_path)
    assert len(vols) == 1 and vols[0].metadata["dicom"]["SeriesNumber"] == 1
    assert any("series '2: synthetic' skipped" in w for w in vols[0].metadata["warnings"])


def test_empty_folder_and_non_dicom(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_dicom_path(empty)
    with pytest.raises(ReaderError, match="empty folder"):
        read_dicom(empty)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    assert not is_dicom_path(txt)
    with pytest.raises(ReaderError, match="not a DICOM file"):
        read_dicom(txt)
    with pytest.raises(ReaderError, match="does not exist"):
        read_dicom(tmp_path / "missing")
    assert not is_dicom_path(tmp_path / "missing")
    assert not is_dicom_path("\0bad")


def test_unknown_compression_is_refused(tmp_path: Path) -> None:
    write_slice(tmp_path / "a.dcm", np.zeros((8, 8), np.int16), (0, 0, 0))
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder installed
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    with pytest.raises(ReaderError, match="MPEG2"):
        read_dicom(tmp_path / "a.dcm")


def test_is_dicom_path_finds_nested_files(tmp_path: Path) -> None:
    deep = tmp_path / "patient" / "study" / "series"
    deep.mkdir(parents=True)
    (tmp_path / "README").write_text("x")
    write_slice(deep / "IM0001", np.zeros((2, 2), np.int16), (0, 0, 0))
    assert is_dicom_path(tmp_path)
    assert is_dicom_path(deep / "IM0001")
    vols = _quiet_read(tmp_path)  # recursive
    assert vols[0].data.shape == (1, 2, 2)


def test_dicom_module_import_stays_cheap() -> None:
    code = ("import sys, napari_medseg.io.dicom, napari_medseg.io.dicom.seg\n"
            "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt6', 'pydicom') if m in sys.modules]\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
