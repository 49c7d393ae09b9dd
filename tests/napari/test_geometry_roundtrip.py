"""DICOM series -> labels -> NIfTI -> napari again: same world positions, same mm³ as SimpleITK.

The real viewer, the real reader and writer contributions (through napari's
plugin machinery, the way File > Open and File > Save Selected Layers call
them) and the Objects widget's threaded run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
sitk = pytest.importorskip("SimpleITK")

from napari.layers import Image, Labels  # noqa: E402

from napari_medseg._napari.layers import output_geometry, output_metadata, spatial_geometry  # noqa: E402
from napari_medseg._napari.widgets.objects import ObjectsWidget  # noqa: E402
from tests.conftest import REPO, dataset  # noqa: E402

pytestmark = pytest.mark.napari

MR_SAMPLE = REPO / "sample_data" / "mr" / "mr_0004"
RUN_TIMEOUT = 120_000


def _corners(shape) -> np.ndarray:
    return np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(len(shape), -1).T


def _world(layer, idx: np.ndarray) -> np.ndarray:
    return np.array([layer.data_to_world(i) for i in idx])


def _mask(shape) -> np.ndarray:
    lab = np.zeros(shape, np.uint16)
    lab[3:9, 10:30, 20:44] = 1
    lab[10:12, 40:50, 5:15] = 2
    return lab


def _save_open_measure(viewer, qtbot, image: Image, tmp_path: Path, shape3) -> None:
    """Labels over ``image`` -> .nii.gz by the plugin writer -> reopened -> Objects widget volumes."""
    lab = _mask(shape3)
    labels = viewer.add_labels(lab, name="lesions", metadata=output_metadata(image),
                               **output_geometry(image, 3))
    viewer.layers.selection = {labels}
    out = tmp_path / "lesions.nii.gz"
    written = viewer.layers.save(str(out), selected=True, plugin="napari-medseg")
    assert [Path(p) for p in written] == [out]
    [back] = viewer.open(str(out), plugin="napari-medseg")  # napari builtins (imageio) also claim .nii
    assert isinstance(back, Labels) and back.axis_labels == ("z", "y", "x")
    np.testing.assert_array_equal(back.data, lab)
    corners = _corners(shape3)
    w_img = _world(image, np.column_stack([np.zeros(len(corners)), corners]) if image.ndim == 4 else corners)
    w_img = w_img[:, -3:]
    np.testing.assert_allclose(_world(labels, corners), w_img, atol=1e-3)
    np.testing.assert_allclose(_world(back, corners), w_img, atol=1e-3)

    widget = ObjectsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Objects", area="right")
    widget.source_kind.setCurrentIndex(0)
    widget.labels_combo.set_layer(back)
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    table = widget.table
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.ReadImage(str(out)))
    assert table["id"].tolist() == [1, 2]
    for i in (1, 2):
        assert float(table.loc[table["id"] == i, "volume_mm3"].iloc[0]) == pytest.approx(
            stats.GetPhysicalSize(i), rel=1e-5)
    # the objects' world centroids are LPS positions of the series
    g = spatial_geometry(image)
    c = np.array([[table.loc[table["id"] == 1, f"centroid_{a}"].iloc[0] for a in "zyx"]])
    np.testing.assert_allclose([table.loc[table["id"] == 1, f"centroid_{a}_mm"].iloc[0] for a in "zyx"],
                               g.index_to_world(c)[0], atol=1e-6)


def test_dicom_series_labels_round_trip_and_measure(make_napari_viewer, qtbot, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    viewer = make_napari_viewer()
    [image] = viewer.open(str(MR_SAMPLE), plugin="napari-medseg")
    assert image.axis_labels == ("t", "z", "y", "x") and viewer.dims.axis_labels == ("t", "z", "y", "x")
    assert spatial_geometry(image).voxel_size == pytest.approx(5 * 3.75 * 3.75, rel=1e-5)
    _save_open_measure(viewer, qtbot, image, tmp_path, image.data.shape[1:])


def test_oblique_nrrd_labels_round_trip_and_measure(make_napari_viewer, qtbot, tmp_path, monkeypatch) -> None:
    """An anisotropic, oblique series (4.8 x 1.016 x 1.016 mm, tilted): volumes from |det| of the affine."""
    nib = pytest.importorskip("nibabel")
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    c, s = np.cos(0.3), np.sin(0.3)
    ras = np.eye(4)
    ras[:3, :3] = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([1.016, 1.016, 4.8])
    ras[:3, 3] = (90.0, -120.0, 15.0)
    src = tmp_path / "sag.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).integers(0, 500, (60, 60, 14)).astype(np.int16), ras), str(src))
    viewer = make_napari_viewer()
    [image] = viewer.open(str(src), plugin="napari-medseg")
    assert spatial_geometry(image).voxel_size == pytest.approx(4.8 * 1.016**2, rel=1e-6)
    _save_open_measure(viewer, qtbot, image, tmp_path, image.data.shape)


def test_real_nrrd_opens_with_true_geometry(make_napari_viewer) -> None:
    p = dataset("radiology_lesions", "lung1_label.nrrd")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(p), plugin="napari-medseg")
    assert isinstance(layer, Labels)
    g = spatial_geometry(layer)
    np.testing.assert_allclose(g.spacing, [5.0, 0.5703125, 0.5703125], rtol=1e-6)
    # the lesion of 837 voxels is 1.36 mL (datasets README)
    assert int((layer.data > 0).sum()) * g.voxel_size / 1000 == pytest.approx(1.36, abs=0.005)
