"""Geometry and values of real GE and Siemens (mosaic) MR series against dcm2niix's NIfTI.

The NIfTI affine maps voxel (i, j, k) to RAS mm; ``read_dicom`` maps (k, i, j) to
LPS (z, y, x) mm.  For every series the index correspondence between the two
arrays is derived from both affines (dcm2niix flips rows, so it is not the
identity), the world positions of corresponding voxels must agree within 1e-3 mm
and every voxel value of every time point must be equal.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import dataset

nib = pytest.importorskip("nibabel")

from napari_medseg.io.dicom import read_dicom  # noqa: E402

GE = [4, 5, 6, 7]
SIEMENS = [3, 4, 5, 6]
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
ZYX_TO_XYZ = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def _series(vendor: str, n: int):
    root = dataset("dicom_mr_series")
    if vendor == "GE":
        folder = root / "In" / "20180918GE" / f"mr_000{n}"
        ref = root / "Ref" / f"DCM2NIIX_regression_test_{n}.nii"
    else:
        folder = root / "In" / "20180918Si" / f"mr_000{n}"
        ref = next((root / "Ref").glob(f"EPI_PE=*_{n}.nii"))
    return folder, ref


def _compare(folder, ref) -> tuple[float, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these series are clean: no warning may be issued
        vols = read_dicom(folder)
    assert len(vols) == 1
    vol = vols[0]
    img = nib.load(ref)
    ref_data = np.asanyarray(img.dataobj)  # applies scl_slope/inter when set (here NaN: raw int16)
    assert np.isnan(img.header["scl_slope"]) or img.header["scl_slope"] in (0, 1)
    assert vol.axes == "TZYX"
    assert vol.units == ("s", "mm", "mm", "mm")
    assert vol.scale is None and vol.translate is None
    assert vol.metadata["geometry"] == "LPS (z, y, x) mm"
    n_t = vol.data.shape[0]
    assert n_t == ref_data.shape[3]
    assert vol.affine.shape == (5, 5)
    assert vol.affine[0, 0] == pytest.approx(float(img.header["pixdim"][4]), abs=1e-5)  # TR in s
    ours = ZYX_TO_XYZ @ vol.affine[1:, 1:]  # (k, i, j) -> LPS (x, y, z)
    theirs = RAS_TO_LPS @ img.affine  # (i, j, k) -> LPS (x, y, z)
    to_ref = np.linalg.inv(theirs) @ ours  # our index -> NIfTI index
    perm = np.round(to_ref)
    # a signed permutation with integer offset: same grid, only axis order / direction differ
    assert np.abs(to_ref - perm).max() < 1e-3
    assert sorted(np.abs(perm[:3, :3]).sum(axis=0)) == [1, 1, 1]
    shape = vol.data.shape[1:]
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    err = float(np.abs(ours @ corners - theirs @ (perm @ corners)).max())  # world mismatch (affine: corners bound it)
    assert err < 1e-3
    idx = np.indices(shape).reshape(3, -1)
    ref_idx = (perm @ np.vstack([idx, np.ones(idx.shape[1])]))[:3].astype(int)
    for a in range(3):
        assert ref_idx[a].min() >= 0 and ref_idx[a].max() < ref_data.shape[a]
    mism = 0
    for t in range(n_t):
        ours_t = vol.data[t].reshape(-1)
        ref_t = ref_data[ref_idx[0], ref_idx[1], ref_idx[2], t]
        assert ours_t.dtype == np.int16
        mism += int(np.count_nonzero(ours_t != ref_t))
    return err, mism


@pytest.mark.parametrize("n", GE)
def test_ge_fmri_matches_dcm2niix(n: int) -> None:
    folder, ref = _series("GE", n)
    err, mism = _compare(folder, ref)
    assert mism == 0


@pytest.mark.parametrize("n", SIEMENS)
def test_siemens_mosaic_matches_dcm2niix(n: int) -> None:
    folder, ref = _series("Si", n)
    err, mism = _compare(folder, ref)
    assert mism == 0


def test_ge_study_folder_gives_four_series_in_series_order() -> None:
    root = dataset("dicom_mr_series", "In", "20180918GE")
    vols = read_dicom(root)  # also holds README-Study.txt / README-Series.txt, which must be skipped
    assert [v.metadata["dicom"]["SeriesNumber"] for v in vols] == GE
    assert all(v.data.shape == (10, 15, 64, 64) for v in vols)
    assert all(v.metadata["n_files"] == 150 for v in vols)
    assert vols[0].name == "4: Axial EPI-FMRI (Interleaved I to S)"


def test_ge_time_points_ordered_by_instance_number() -> None:
    """All GE files share one AcquisitionTime: time must follow InstanceNumber (as in dcm2niix)."""
    import pydicom

    folder, _ = _series("GE", 4)
    vol = read_dicom(folder)[0]
    # InstanceNumber 1..15 is time point 0 (slices inferior to superior), 136..150 the last
    files = sorted(folder.glob("*.dcm"))
    by_inst = {int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber): f for f in files}
    last = pydicom.dcmread(by_inst[150]).pixel_array
    first = pydicom.dcmread(by_inst[1]).pixel_array
    np.testing.assert_array_equal(vol.data[9, 14], last)
    np.testing.assert_array_equal(vol.data[0, 0], first)


def test_mosaic_unpacks_into_slices_with_corrected_position() -> None:
    folder, _ = _series("Si", 3)
    vol = read_dicom(folder)[0]
    assert vol.data.shape == (2, 5, 72, 72)
    m = vol.metadata["mosaic"]
    assert m["slices"] == 5 and m["grid"] == 3 and m["tile"] == (72, 72)
    # mosaic IPP (-324, -324, 16) + (216 - 72) / 2 * 3 mm along rows and columns
    np.testing.assert_allclose(vol.affine[1:4, 4], [16.0, -108.0, -108.0], atol=1e-6)
    # 12 mm between slices along +z (CSA SliceNormalVector (0, 0, 1))
    np.testing.assert_allclose(vol.affine[1:4, 1], [12.0, 0.0, 0.0], atol=1e-9)
