"""NIfTI and NRRD in and out, in the DICOM convention, checked against nibabel and SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_medseg.errors import ParameterError, ReaderError
from napari_medseg.geometry import LPS, Geometry
from napari_medseg.io import read
from napari_medseg.io.radiology import (
    lps_zyx_to_ras_xyz,
    ras_xyz_to_lps_zyx,
    read_nifti,
    read_nrrd,
    write_labels_nifti,
    write_labels_nrrd,
)
from tests.conftest import REPO, dataset

sitk = pytest.importorskip("SimpleITK")
nib = pytest.importorskip("nibabel")

MR_SAMPLE = REPO / "sample_data" / "mr" / "mr_0004"


def _corners(shape) -> np.ndarray:
    return np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(len(shape), -1).T


def _sitk_world_zyx(path: Path, shape_zyx) -> np.ndarray:
    """SimpleITK's LPS positions of the corner voxels (our index order in, our world order out)."""
    im = sitk.ReadImage(str(path))
    return np.array([im.TransformIndexToPhysicalPoint([int(i) for i in c[::-1]])[::-1]
                     for c in _corners(shape_zyx)])


def _oblique_ras() -> np.ndarray:
    c, s = np.cos(0.4), np.sin(0.4)
    a = np.eye(4)
    a[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.diag([0.9, 1.1, 3.0])
    a[:3, 3] = (-80.0, 12.5, 40.0)
    return a


def test_ras_lps_conversion_is_an_involution() -> None:
    a = _oblique_ras()
    np.testing.assert_allclose(lps_zyx_to_ras_xyz(ras_xyz_to_lps_zyx(a)), a, atol=1e-12)
    lps = ras_xyz_to_lps_zyx(a)
    # voxel (i, j, k) = (1, 2, 3) is our index (3, 2, 1); RAS x, y flip sign and reverse to (z, y, x)
    ras = a @ [1, 2, 3, 1]
    np.testing.assert_allclose(lps @ [3, 2, 1, 1], [ras[2], -ras[1], -ras[0], 1], atol=1e-12)


def test_oblique_nifti_matches_simpleitk_at_every_corner(tmp_path: Path) -> None:
    data = np.arange(7 * 6 * 5, dtype=np.int16).reshape(7, 6, 5)  # (i, j, k)
    p = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(data, _oblique_ras()), str(p))
    v = read_nifti(p)[0]
    assert v.axes == "ZYX" and v.data.shape == (5, 6, 7) and v.frame == LPS and v.layer_type == "image"
    np.testing.assert_array_equal(v.data, sitk.GetArrayFromImage(sitk.ReadImage(str(p))))
    g = v.spatial_geometry()
    np.testing.assert_allclose(g.corners(v.data.shape), _sitk_world_zyx(p, v.data.shape), atol=1e-4)
    assert g.voxel_size == pytest.approx(0.9 * 1.1 * 3.0, rel=1e-6)
    assert v.to_layer_data()[1]["axis_labels"] == ("z", "y", "x")


def test_labels_nifti_and_nrrd_round_trip_the_dicom_geometry(tmp_path: Path) -> None:
    series = read(MR_SAMPLE)[0]
    g = series.spatial_geometry()
    lab = np.zeros(series.shape[1:], np.uint8)
    lab[4:9, 10:30, 20:44] = 3
    for name, writer in (("seg.nii.gz", write_labels_nifti), ("seg.nii", write_labels_nifti),
                         ("seg.nrrd", write_labels_nrrd)):
        p = writer(tmp_path / name, lab, g)
        back = read(p)[0]
        assert back.layer_type == "labels" and back.frame == LPS and back.axes == "ZYX", name
        np.testing.assert_array_equal(back.data, lab)
        corners = g.corners(lab.shape)
        np.testing.assert_allclose(back.spatial_geometry().corners(lab.shape), corners, atol=1e-3)
        np.testing.assert_allclose(_sitk_world_zyx(p, lab.shape), corners, atol=1e-3)
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(sitk.ReadImage(str(p)))
        assert stats.GetPhysicalSize(3) == pytest.approx(int((lab == 3).sum()) * g.voxel_size, rel=1e-5)
    nifti = nib.load(str(tmp_path / "seg.nii.gz"))
    assert int(nifti.header["sform_code"]) == 1  # scanner anatomical: patient coordinates
    np.testing.assert_allclose(nifti.affine, lps_zyx_to_ras_xyz(g.affine), atol=1e-4)


def test_4d_labels_nifti_keeps_the_time_step(tmp_path: Path) -> None:
    series = read(MR_SAMPLE)[0]
    lab = np.zeros(series.shape, np.uint16)
    lab[1, 3:5, 10:12, 10:12] = 7
    p = write_labels_nifti(tmp_path / "t.nii.gz", lab, series.geometry)
    back = read_nifti(p)[0]
    assert back.axes == "TZYX"
    np.testing.assert_array_equal(back.data, lab)
    assert back.geometry.allclose(series.geometry, atol=1e-4)


def test_bad_nifti_and_nrrd_give_reader_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ReaderError, match="broken.nii.gz"):
        read(bad)
    nrrd_bad = tmp_path / "broken.nrrd"
    nrrd_bad.write_text("NRRD0004\ntype: what\n\n")
    with pytest.raises(ReaderError, match="broken.nrrd"):
        read(nrrd_bad)
    with pytest.raises(ParameterError, match="integers"):
        write_labels_nifti(tmp_path / "f.nii.gz", np.zeros((2, 3, 4), np.float32),
                           Geometry.identity("ZYX"))
    with pytest.raises(ParameterError, match=r"\.nii"):
        write_labels_nifti(tmp_path / "f.tif", np.zeros((2, 3, 4), np.uint8), Geometry.identity("ZYX"))


@pytest.mark.parametrize("name", ["brain1_image.nrrd", "brain1_label.nrrd", "lung1_label.nrrd"])
def test_real_nrrd_agrees_with_simpleitk(name: str) -> None:
    p = dataset("radiology_lesions", name)
    v = read_nrrd(p)[0]
    ref = sitk.ReadImage(str(p))
    np.testing.assert_array_equal(v.data, sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(v.spatial_geometry().corners(v.data.shape), _sitk_world_zyx(p, v.data.shape), atol=1e-3)
    assert v.layer_type == ("labels" if "label" in name else "image")


def test_real_nifti_agrees_with_simpleitk() -> None:
    folder = dataset("ms_lesions", "patient07")
    p = next(iter(sorted(folder.glob("GOLD_STANDARD*.nii.gz"))))
    v = read_nifti(p)[0]
    np.testing.assert_array_equal(v.data, sitk.GetArrayFromImage(sitk.ReadImage(str(p))))
    np.testing.assert_allclose(v.spatial_geometry().corners(v.data.shape), _sitk_world_zyx(p, v.data.shape), atol=1e-3)
    assert v.layer_type == "labels"


@pytest.mark.parametrize("n", [4, 5, 6, 7])
def test_dicom_series_and_its_dcm2niix_nifti_are_the_same_grid(n: int) -> None:
    """Our DICOM reader and dcm2niix's NIfTI of the same series put every voxel at the same place."""
    root = dataset("dicom_mr_series")
    dcm = read(root / "In" / "20180918GE" / f"mr_000{n}")[0]
    nii = read_nifti(root / "Ref" / f"DCM2NIIX_regression_test_{n}.nii")[0]
    gd, gn = dcm.spatial_geometry(), nii.spatial_geometry()
    shape = dcm.shape[-3:]
    assert nii.shape[-3:] == shape
    cd, cn = gd.corners(shape), gn.corners(shape)
    # dcm2niix may store the rows flipped: compare the sets of corner positions
    cd, cn = cd[np.lexsort(cd.T[::-1])], cn[np.lexsort(np.round(cn, 3).T[::-1])]
    np.testing.assert_allclose(cd[np.lexsort(np.round(cd, 3).T[::-1])], cn, atol=1e-3)
    # and the voxel values at mapped positions agree
    idx = np.array([[1, 2, 3], [10, 40, 50], [14, 63, 0]])
    j = np.rint(gn.world_to_index(gd.index_to_world(idx))).astype(int)
    a, b = np.asarray(dcm.data[0]), np.asarray(nii.data[0])
    assert [a[tuple(i)] for i in idx] == [b[tuple(k)] for k in j]
