"""DICOM-SEG import (segment names, image grid), RTSTRUCT import (rasterised contours) and DICOM-SEG export.

Synthetic series and structure sets are written with pydicom into tmp_path;
the real SEG/RTSTRUCT data under ../shared/datasets is used when present.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from napari_medseg.errors import ParameterError, ReaderError
from napari_medseg.io import read
from napari_medseg.io.dicom import DicomWarning, read_dicom_seg, read_rtstruct, write_dicom_seg
from napari_medseg.io.dicom.rtstruct import RTSTRUCT_SOP_CLASS, is_rtstruct_file
from napari_medseg.io.dicom.seg_write import MissingDependencyError, series_grid
from tests.conftest import dataset

highdicom = pytest.importorskip("highdicom")


# ---------------------------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------------------------

def _ds(v: float) -> str:
    s = f"{v:.10g}"
    return "0" if s in ("-0", "") else s


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


GRIDS = {
    "axial": {"rot": np.eye(3), "tilt": 0.0},
    "oblique": {"rot": _rotation(0.3, -0.2, 0.5), "tilt": 0.0},
    "tilted": {"rot": np.eye(3), "tilt": 0.25},  # gantry tilt: the slice step leaves the normal (sheared affine)
}


def write_series(folder: Path, shape=(6, 12, 16), rot=None, tilt=0.0, origin=(-40.0, 20.0, 35.0),
                 ps=(0.8, 0.6), dz=2.5, seed=0, series_uid=None, frame_uid=None) -> dict:
    """A CT series of ``shape`` (Z, Y, X) written in a shuffled file and instance order.

    Slice ``k`` (along the normal) has the value ``100 + k``.  Returns the UIDs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rot = np.eye(3) if rot is None else rot
    nz, ny, nx = shape
    series_uid = series_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    study = generate_uid()
    iop = np.concatenate([rot[:, 0], rot[:, 1]])
    step = dz * rot[:, 2] + tilt * dz * rot[:, 1]
    rng = np.random.default_rng(seed)
    names, numbers = rng.permutation(nz), rng.permutation(nz) + 1
    sops = {}
    for k in range(nz):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^CT", "SYN1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = \
            "20240101", "120000", "1", "", ""
        ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.SeriesDescription = "CT", "test", 3, "synthetic CT"
        ds.InstanceNumber = int(numbers[k])
        ds.ImagePositionPatient = [_ds(v) for v in np.asarray(origin) + k * step]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.PixelSpacing = [_ds(v) for v in ps]
        ds.SliceThickness = _ds(dz)
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
        ds.PixelData = np.full((ny, nx), 100 + k, "<i2").tobytes()
        ds.save_as(folder / f"IM{names[k]:04d}.dcm", enforce_file_format=True)
        sops[k] = uid
    return {"series": series_uid, "frame": frame_uid, "study": study, "sops": sops}


def write_rtstruct(path: Path, uids: dict, rois: dict[str, list[np.ndarray]], kinds: dict[str, str] | None = None
                   ) -> Path:
    """An RT Structure Set with ``rois`` = {ROIName: [contour (N, 3) LPS mm, ...]} referencing ``uids``."""
    kinds = kinds or {}
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTSTRUCT_SOP_CLASS, uid, "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], generate_uid()
    ds.PatientName, ds.PatientID = "Synthetic^CT", "SYN1"
    ds.StructureSetLabel = "synthetic"
    images = Sequence()
    for sop in uids["sops"].values():
        it = Dataset()
        it.ReferencedSOPClassUID, it.ReferencedSOPInstanceUID = CTImageStorage, sop
        images.append(it)
    series = Dataset()
    series.SeriesInstanceUID = uids["series"]
    series.ContourImageSequence = images
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", uids["study"]
    study.RTReferencedSeriesSequence = Sequence([series])
    fr = Dataset()
    fr.FrameOfReferenceUID = uids["frame"]
    fr.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([fr])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for n, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = n, name, uids["frame"]
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ROIDisplayColor = n, [255, 0, n]
        rc.ContourSequence = Sequence()
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType = kinds.get(name, "CLOSED_PLANAR")
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [_ds(v) for v in np.asarray(pts, float).ravel()]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    ds.save_as(path, enforce_file_format=True)
    return path


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DicomWarning)
        return fn(*args, **kwargs)


def _polygon(geometry, k: float, corners_ij: list[tuple[float, float]]) -> np.ndarray:
    """LPS (x, y, z) vertices of a polygon given in (row, column) indices on slice ``k`` of ``geometry``."""
    idx = np.array([[k, i, j] for i, j in corners_ij], float)
    return geometry.index_to_world(idx)[:, ::-1]


def _square(i0: float, j0: float, n: float) -> list[tuple[float, float]]:
    return [(i0, j0), (i0, j0 + n), (i0 + n, j0 + n), (i0 + n, j0)]


def _corner_error(a, b) -> float:
    ga, gb = a.spatial_geometry(), b.spatial_geometry()
    return float(np.abs(ga.corners(a.shape) - gb.corners(b.shape)).max())


# ---------------------------------------------------------------------------------------------
# 1. DICOM-SEG import
# ---------------------------------------------------------------------------------------------

def test_real_seg_matches_the_nrrd_voxel_for_voxel_and_keeps_segment_names() -> None:
    from napari_medseg.io.radiology import read_nrrd

    root = dataset("dicom_ct_seg")
    seg = _quiet(read, root / "liver.dcm")[0]
    nrrd = read_nrrd(root / "liver_seg.nrrd")[0]
    ct = _quiet(read, root / "ct-3slice")[0]
    assert seg.layer_type == "labels"
    assert seg.metadata["segment_names"] == {1: "Liver"}
    # the grids are the same (no resampling needed): same shape, corners within 1e-3 mm
    assert seg.shape == nrrd.shape == ct.shape == (3, 512, 512)
    assert _corner_error(seg, nrrd) < 1e-3
    assert _corner_error(seg, ct) < 1e-3  # aligned with its image
    np.testing.assert_array_equal(seg.data, np.asarray(nrrd.data))
    assert int(np.count_nonzero(seg.data)) == 107098
    # onto the image found next to it (by the referenced series): the same
    placed = _quiet(read_dicom_seg, root / "liver.dcm")
    assert "each frame on the image slice it lies on" in placed.metadata["grid"]
    np.testing.assert_array_equal(placed.data, seg.data)


def test_real_tiny_seg_onto_its_multiframe_image_matches_the_nrrd() -> None:
    from napari_medseg.io.radiology import read_nrrd

    root = dataset("dicom_ct_seg", "23x38x3")
    image = _quiet(read, root / "multiframe" / "mf.dcm")[0]
    seg = _quiet(read_dicom_seg, root / "seg" / "label.seg", image=image)
    nrrd = read_nrrd(root / "nrrd" / "label.nrrd")[0]
    assert seg.shape == image.shape == nrrd.shape == (3, 38, 23)
    assert _corner_error(seg, nrrd) < 1e-3
    np.testing.assert_array_equal(seg.data, np.asarray(nrrd.data))


def test_napari_reader_gives_segment_names_as_label_features(tmp_path) -> None:
    from napari_medseg._napari.reader import get_dicom_reader

    write_series(tmp_path / "ct")
    lab = np.zeros((6, 12, 16), np.uint8)
    lab[2:4, 3:7, 4:9] = 1
    lab[4, 6:9, 10:14] = 2
    out = write_dicom_seg(tmp_path / "a.seg.dcm", lab, tmp_path / "ct", {1: "liver", 2: "tumour"})
    reader = get_dicom_reader(str(out))
    (data, kw, kind), = _quiet(reader, str(out))
    assert kind == "labels"
    assert kw["features"] == {"index": [0, 1, 2], "name": ["background", "liver", "tumour"]}
    assert kw["metadata"]["segment_names"] == {1: "liver", 2: "tumour"}


# ---------------------------------------------------------------------------------------------
# 3. DICOM-SEG export
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_seg_round_trip_identical_labels_and_corners(tmp_path, grid, seg_type) -> None:
    uids = write_series(tmp_path / "ct", **GRIDS[grid])
    image = _quiet(read, tmp_path / "ct")[0]
    np.testing.assert_array_equal(image.data[:, 0, 0], 100 + np.arange(6))  # our slice order = along the normal
    lab = np.zeros(image.shape, np.uint8)
    lab[0, 1:4, 2:6] = 1  # first slice
    lab[1:3, 5:9, 7:12] = 2
    lab[3, 0, 0] = 2
    lab[5, 8:12, 12:16] = 3  # last slice: the SEG spans the whole series
    names = {1: "liver", 2: "lesion A", 3: "lesion B"}
    out = write_dicom_seg(tmp_path / "x.seg.dcm", lab, tmp_path / "ct", names, segmentation_type=seg_type)
    back = _quiet(read, out)[0]
    assert back.layer_type == "labels" and back.metadata["segmentation_type"] == seg_type
    assert back.metadata["segment_names"] == names
    assert back.shape == image.shape
    np.testing.assert_array_equal(back.data, lab)
    assert _corner_error(back, image) < 1e-3
    # a lesion in the middle only: the SEG's frames span fewer slices; onto the image grid it is exact again
    mid = np.zeros_like(lab)
    mid[2, 3:5, 4:6] = 1
    mid[4, 6:8, 9:10] = 2
    out2 = write_dicom_seg(tmp_path / "y.seg.dcm", mid, image, segmentation_type=seg_type)
    own = _quiet(read, out2)[0]
    assert own.shape == (3, 12, 16)  # slices 2..4, slice 3 blank: placed on the exact step, no warning
    assert not own.metadata["warnings"]
    on_image = _quiet(read_dicom_seg, out2)  # finds the series in the parent folder by its UID
    assert on_image.metadata["image"] == image.name
    np.testing.assert_array_equal(on_image.data, mid)
    assert _corner_error(on_image, image) < 1e-3
    # the SEG references the source instances and frame of reference
    ds = pydicom.dcmread(out)
    assert ds.FrameOfReferenceUID == uids["frame"]
    refs = {it.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for it in s.ReferencedInstanceSequence}
    assert refs == set(uids["sops"].values())
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]
    first = next(s for s in ds.SegmentSequence if s.SegmentNumber == 1)  # LABELMAP also declares 0 = background
    assert first.SegmentAlgorithmType == "AUTOMATIC"
    assert first.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "napari-medseg"


def test_seg_onto_a_shifted_or_finer_grid_and_not_onto_another_frame_of_reference(tmp_path) -> None:
    from napari_medseg.geometry import Volume

    write_series(tmp_path / "ct", **GRIDS["oblique"])
    image = _quiet(read, tmp_path / "ct")[0]
    lab = np.zeros(image.shape, np.uint8)
    lab[2, 3:5, 4:8] = 1
    out = write_dicom_seg(tmp_path / "x.seg.dcm", lab, tmp_path / "ct")
    g = image.spatial_geometry()
    # the image grid moved by (0, 2, -1) voxels: an exact shift, no resampling
    moved = np.array(g.affine)
    moved[:3, 3] = g.index_to_world([0, 2, -1])
    other = Volume(data=np.zeros(image.shape, np.int16), axes="ZYX", affine=moved, units=g.units, frame=g.frame)
    on = _quiet(read_dicom_seg, out, image=other)
    assert "shifted by [-2, 2, -1]" in on.metadata["grid"]  # from the SEG's own grid (its one slice is slice 2)
    np.testing.assert_array_equal(on.data[2, 1:3, 5:9], 1)
    assert int(np.count_nonzero(on.data)) == 8
    # twice as fine in-plane: nearest-neighbour resampling, 4 x the pixels
    fine_g = g.zoomed((1, 2, 2))
    fine = Volume(data=np.zeros((6, 24, 32), np.int16), axes="ZYX", affine=fine_g.affine, units=g.units,
                  frame=g.frame)
    on = _quiet(read_dicom_seg, out, image=fine)
    assert "resampled" in on.metadata["grid"] and int(np.count_nonzero(on.data)) == 32
    np.testing.assert_array_equal(on.data[2, 6:10, 8:16], 1)
    # an image in another frame of reference is refused
    image.metadata["dicom"]["FrameOfReferenceUID"] = "1.2.3"
    with pytest.raises(ReaderError, match="frame of reference"):
        read_dicom_seg(out, image=image)


def test_seg_file_reads_with_pydicom_and_simpleitk(tmp_path) -> None:
    write_series(tmp_path / "ct", **GRIDS["oblique"])
    lab = np.zeros((6, 12, 16), np.uint8)
    lab[1:3, 2:6, 3:9] = 1
    lab[4, 5:9, 10:14] = 2
    out = write_dicom_seg(tmp_path / "x.seg.dcm", lab, tmp_path / "ct")
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    frames = ds.pixel_array
    assert frames.shape == (3, 12, 16)  # segment 1 on 2 slices + segment 2 on 1 (empty frames omitted)
    assert int(frames.sum()) == int(np.count_nonzero(lab))
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["lesion 1", "lesion 2"]
    sitk = pytest.importorskip("SimpleITK")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert arr.shape == (3, 12, 16) and int(np.count_nonzero(arr)) == int(np.count_nonzero(lab))


def test_seg_export_numbers_segments_1_to_n_and_keeps_ids_in_tracking_ids(tmp_path) -> None:
    write_series(tmp_path / "ct")
    lab = np.zeros((6, 12, 16), np.uint16)
    lab[1, 1:3, 1:3] = 7
    lab[3, 5:8, 5:8] = 300
    out = write_dicom_seg(tmp_path / "x.seg.dcm", lab, tmp_path / "ct", {300: "big one"})
    ds = pydicom.dcmread(out)
    assert [(s.SegmentNumber, s.SegmentLabel, s.TrackingID) for s in ds.SegmentSequence] == \
        [(1, "lesion 7", "label 7"), (2, "big one", "label 300")]
    back = _quiet(read_dicom_seg, out)
    np.testing.assert_array_equal(back.data, np.select([lab == 7, lab == 300], [1, 2], 0))


def test_seg_export_from_a_volume_file_list_and_datasets_agree(tmp_path) -> None:
    write_series(tmp_path / "ct", **GRIDS["tilted"])
    image = _quiet(read, tmp_path / "ct")[0]
    files = sorted((tmp_path / "ct").iterdir())
    g1, g2 = series_grid(image), series_grid(files)
    g3 = series_grid([pydicom.dcmread(f) for f in files])
    for g in (g1, g2, g3):
        assert g.shape == image.shape
        assert g.geometry.allclose(image.spatial_geometry(), atol=1e-6)
    lab = np.zeros(image.shape, np.uint8)
    lab[2, 2:5, 2:5] = 1
    # a labels Volume on the series grid is accepted; one off the grid is refused
    vol = image.__class__(data=lab, axes="ZYX", affine=image.affine, units=image.units, layer_type="labels",
                          frame=image.frame)
    write_dicom_seg(tmp_path / "v.seg.dcm", vol, files)
    off = np.array(image.affine)
    off[:3, 3] += (0.3, 0.0, 0.0)
    bad = image.__class__(data=lab, axes="ZYX", affine=off, units=image.units, layer_type="labels", frame=image.frame)
    with pytest.raises(ParameterError, match="not on the source series' grid"):
        write_dicom_seg(tmp_path / "b.seg.dcm", bad, files)


def test_seg_export_refuses_bad_input_with_clear_messages(tmp_path, monkeypatch) -> None:
    write_series(tmp_path / "ct")
    lab = np.zeros((6, 12, 16), np.uint8)
    with pytest.raises(ParameterError, match="empty"):
        write_dicom_seg(tmp_path / "x.seg.dcm", lab, tmp_path / "ct")
    lab[1, 1, 1] = 1
    with pytest.raises(ParameterError, match="do not fit"):
        write_dicom_seg(tmp_path / "x.seg.dcm", lab[:5], tmp_path / "ct")
    with pytest.raises(ParameterError, match="integers"):
        write_dicom_seg(tmp_path / "x.seg.dcm", lab.astype(float), tmp_path / "ct")
    with pytest.raises(ParameterError, match="segmentation_type"):
        write_dicom_seg(tmp_path / "x.seg.dcm", lab, tmp_path / "ct", segmentation_type="FRACTIONAL")
    write_series(tmp_path / "two" / "a")
    write_series(tmp_path / "two" / "b")
    with pytest.raises(ParameterError, match="holds 2 series"):
        write_dicom_seg(tmp_path / "x.seg.dcm", lab, tmp_path / "two")
    assert not (tmp_path / "x.seg.dcm").exists()
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(MissingDependencyError, match="pip install 'highdicom"):
        write_dicom_seg(tmp_path / "x.seg.dcm", lab, tmp_path / "ct")


def test_seg_export_from_a_real_multiframe_source() -> None:
    src = dataset("dicom_ct_seg", "23x38x3", "multiframe", "mf.dcm")
    from napari_medseg.io.radiology import read_nrrd

    lab = np.asarray(read_nrrd(src.parents[1] / "nrrd" / "label.nrrd")[0].data).astype(np.uint8)
    image = _quiet(read, src)[0]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = write_dicom_seg(Path(tmp) / "mf.seg.dcm", lab, src, {1: "liver"})
        back = _quiet(read_dicom_seg, out, image=image)
    np.testing.assert_array_equal(back.data, lab)
    assert back.metadata["segment_names"] == {1: "liver"}


# ---------------------------------------------------------------------------------------------
# 2. RTSTRUCT import
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_rtstruct_square_and_hole_give_exact_pixel_counts(tmp_path, grid) -> None:
    uids = write_series(tmp_path / "ct", shape=(5, 40, 48), **GRIDS[grid])
    image = _quiet(read, tmp_path / "ct")[0]
    g = image.spatial_geometry()
    # vertices on pixel edges (x.5): a 10 x 10 square is exactly 100 pixels; a 20 x 20 with a 5 x 5 hole is 375
    rois = {
        "square": [_polygon(g, 1, _square(4.5, 6.5, 10))],
        "ring": [_polygon(g, 3, _square(9.5, 19.5, 20)), _polygon(g, 3, _square(14.5, 24.5, 5))],
    }
    path = write_rtstruct(tmp_path / "ct" / "rtss.dcm", uids, rois)
    assert is_rtstruct_file(path) and not is_rtstruct_file(next((tmp_path / "ct").glob("IM*")))
    vol = read_rtstruct(path)  # finds the series in its folder
    assert vol.layer_type == "labels" and vol.shape == image.shape
    assert vol.metadata["segment_names"] == {1: "square", 2: "ring"}
    assert vol.metadata["roi_colors"] == {1: [255, 0, 1], 2: [255, 0, 2]}
    assert vol.spatial_geometry().allclose(g)
    want = np.zeros(image.shape, np.uint8)
    want[1, 5:15, 7:17] = 1
    want[3, 10:30, 20:40] = 2
    want[3, 15:20, 25:30] = 0
    np.testing.assert_array_equal(vol.data, want)
    assert vol.metadata["voxels"] == {1: 100, 2: 375}
    # the same through the generic reader (dispatch on the RTSTRUCT file) and with the image given
    np.testing.assert_array_equal(_quiet(read, path)[0].data, want)
    np.testing.assert_array_equal(read_rtstruct(path, image=image).data, want)
    assert read_rtstruct(path, image=image, rois=["ring"]).metadata["segment_names"] == {1: "ring"}
    from napari_medseg._napari.reader import get_dicom_reader

    (data, kw, kind), = get_dicom_reader(str(path))(str(path))
    assert kind == "labels" and kw["features"]["name"] == ["background", "square", "ring"]
    np.testing.assert_array_equal(data, want)


def test_rtstruct_contour_planes_snap_within_half_a_slice_else_error(tmp_path) -> None:
    uids = write_series(tmp_path / "ct", shape=(4, 20, 20), **GRIDS["oblique"])
    image = _quiet(read, tmp_path / "ct")[0]
    g = image.spatial_geometry()
    near = write_rtstruct(tmp_path / "near.dcm", uids, {"a": [_polygon(g, 2.4, _square(2.5, 2.5, 4))],
                                                        "b": [_polygon(g, -0.45, _square(2.5, 2.5, 3))]})
    vol = read_rtstruct(near, image=image)
    assert np.count_nonzero(vol.data[2] == 1) == 16 and np.count_nonzero(vol.data[0] == 2) == 9
    off = write_rtstruct(tmp_path / "off.dcm", uids, {"a": [_polygon(g, 3.7, _square(2.5, 2.5, 4))],
                                                      "b": [_polygon(g, 1, _square(2.5, 2.5, 4))]})
    with pytest.raises(ReaderError, match="beyond the 4 slice"):
        read_rtstruct(off, image=image)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DicomWarning)
        vol = read_rtstruct(off, image=image, outside="skip")
    assert any("dropped 1 contour" in str(w.message) for w in caught)
    assert vol.metadata["contours_outside"] == 1 and np.count_nonzero(vol.data) == 16
    tilted = _polygon(g, 1, _square(2.5, 2.5, 4))
    tilted[2] += 2.0 * g.direction[:, 0][::-1]  # one vertex 2 mm off the plane (0.8 slice)
    bad = write_rtstruct(tmp_path / "bad.dcm", uids, {"a": [tilted]})
    with pytest.raises(ReaderError, match="not parallel"):
        read_rtstruct(bad, image=image)


def test_rtstruct_overlaps_keep_the_smaller_roi_and_open_contours_are_skipped(tmp_path) -> None:
    uids = write_series(tmp_path / "ct", shape=(3, 30, 30))
    image = _quiet(read, tmp_path / "ct")[0]
    g = image.spatial_geometry()
    rois = {"organ": [_polygon(g, 1, _square(4.5, 4.5, 4))], "BODY": [_polygon(g, 1, _square(-0.5, -0.5, 20))],
            "line": [_polygon(g, 1, _square(0.5, 0.5, 2))]}
    path = write_rtstruct(tmp_path / "r.dcm", uids, rois, kinds={"line": "OPEN_PLANAR"})
    with pytest.warns(DicomWarning, match="smaller ROI was kept"):
        vol = read_rtstruct(path, image=image)
    assert vol.metadata["voxels"] == {1: 16, 2: 400, 3: 0}
    assert np.count_nonzero(vol.data == 1) == 16 and np.count_nonzero(vol.data == 2) == 384
    assert any("OPEN_PLANAR" in w for w in vol.metadata["warnings"])
    with pytest.raises(ParameterError, match="no ROI named"):
        read_rtstruct(path, image=image, rois=["liver"])


def test_rtstruct_without_its_image_or_in_another_frame_of_reference(tmp_path) -> None:
    uids = write_series(tmp_path / "ct", shape=(2, 10, 10))
    image = _quiet(read, tmp_path / "ct")[0]
    lone = tmp_path / "lone"
    lone.mkdir()
    path = write_rtstruct(lone / "r.dcm", uids, {"a": [_polygon(image.spatial_geometry(), 0, _square(1.5, 1.5, 3))]})
    with pytest.raises(ReaderError, match="pass the image"):
        read_rtstruct(path)
    other = write_series(tmp_path / "other", shape=(2, 10, 10))
    with pytest.raises(ReaderError, match="frame of reference"):
        read_rtstruct(path, image=_quiet(read, tmp_path / "other")[0])
    assert other["frame"] != uids["frame"]
    assert np.count_nonzero(read_rtstruct(path, image=tmp_path / "ct").data) == 9  # image as a folder


def test_real_rtstruct_area_matches_the_contours_and_vertices_lie_on_the_mask() -> None:
    from scipy import ndimage
    from skimage.measure import points_in_poly

    root = dataset("dicom_rtstruct")
    rtss = root / "rtss.dcm"
    with pytest.raises(ReaderError, match="beyond the 1 slice"):  # one CT slice of the 98 the contours are on
        read_rtstruct(rtss)
    vol = _quiet(read_rtstruct, rtss, outside="skip", rois=["BODY"])
    assert vol.shape == (1, 512, 512) and vol.metadata["segment_names"] == {1: "BODY"}
    allv = _quiet(read, rtss)[0]  # dispatch: every ROI, contours off the slice dropped with a warning
    assert allv.metadata["segment_names"][6] == "Lt Lung" and len(allv.metadata["segment_names"]) == 10
    g = vol.spatial_geometry()
    pixel_area = float(g.spacing[1] * g.spacing[2])
    z0 = float(g.origin[0])
    ds = pydicom.dcmread(rtss)
    contours = [np.asarray(c.ContourData, float).reshape(-1, 3) for c in ds.ROIContourSequence[0].ContourSequence]
    contours = [c for c in contours if abs(c[0, 2] - z0) < 1.5]
    assert len(contours) == 4

    def area(xy: np.ndarray) -> float:
        x, y = xy[:, 0], xy[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    total = 0.0
    for i, c in enumerate(contours):  # even-odd: a contour inside an odd number of others is a hole
        depth = sum(bool(points_in_poly(c[:1, :2], o[:, :2])[0]) for j, o in enumerate(contours) if j != i)
        total += area(c[:, :2]) * (-1) ** depth
    raster = int(np.count_nonzero(vol.data)) * pixel_area
    assert raster == pytest.approx(total, rel=0.02)
    mask = ndimage.binary_dilation(vol.data[0] > 0)  # on the mask or one pixel beside (vertices sit on its edge)
    # two of the four BODY contours are specks smaller than one pixel (0.23 and 0.93 mm^2, pixel 1.15 mm^2):
    # no pixel centre lies inside them, so they leave no pixel (the polygon fill's centre rule)
    assert sorted(round(area(c[:, :2]), 2) for c in contours if area(c[:, :2]) < pixel_area) == [0.23, 0.93]
    big = [c for c in contours if area(c[:, :2]) >= 4 * pixel_area]
    assert len(big) == 2
    idx = np.rint(g.world_to_index(np.concatenate(big)[:, ::-1])).astype(int)
    assert (idx[:, 0] == 0).all()
    assert mask[idx[:, 1], idx[:, 2]].all()


# ---------------------------------------------------------------------------------------------
# 4. CLI
# ---------------------------------------------------------------------------------------------

def test_cli_lesions_dicom_seg_on_a_synthetic_series(tmp_path, capsys) -> None:
    from napari_medseg.cli import main
    from napari_medseg.io.radiology import write_labels_nifti

    write_series(tmp_path / "case1", shape=(6, 24, 24), **GRIDS["oblique"])
    image = _quiet(read, tmp_path / "case1")[0]
    lab = np.zeros(image.shape, np.uint8)
    lab[1:3, 2:8, 2:8] = 1
    lab[4:6, 14:20, 12:22] = 2
    labp = write_labels_nifti(tmp_path / "case1_labels.nii.gz", lab, image.spatial_geometry())
    out = tmp_path / "out"
    assert main(["lesions", str(tmp_path / "case1"), "--labels", str(labp), "-o", str(out), "--dicom-seg"]) == 0
    assert "case1_lesions.seg.dcm" in capsys.readouterr().out
    seg = _quiet(read_dicom_seg, out / "case1_lesions.seg.dcm", image=image)
    assert sorted(seg.metadata["segment_names"]) == [1, 2]
    assert all(n.startswith("lesion ") for n in seg.metadata["segment_names"].values())
    np.testing.assert_array_equal(seg.data > 0, lab > 0)
    ds = pydicom.dcmread(out / "case1_lesions.seg.dcm", stop_before_pixels=True)
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"  # existing labels: not our algorithm
    # a NIfTI input has no DICOM series to reference: a clear error, nothing written
    assert main(["lesions", str(labp), "--labels", str(labp), "-o", str(tmp_path / "o2"), "--dicom-seg"]) == 2
    assert "--dicom-seg needs DICOM series inputs" in capsys.readouterr().err
