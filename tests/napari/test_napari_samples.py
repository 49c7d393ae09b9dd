"""File > Open Sample in a real viewer: layers, data, geometry, and a screenshot of each.

Expected values come from reading the shipped files independently (tifffile,
pydicom), not from the plugin's own readers.  Run under a display:
``xvfb-run -a python -m pytest tests/napari -q``.  Set ``MEDSEG_SCREENSHOT_DIR``
to keep the screenshots (default: the test's tmp_path).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import pydicom  # noqa: E402
import tifffile  # noqa: E402

from napari_medseg._napari.sample_data import (  # noqa: E402
    HE_IMAGE,
    HE_LABELS,
    MR_SERIES,
    NUCLEI_IMAGE,
    NUCLEI_LABELS,
    sample_path,
)

pytestmark = pytest.mark.napari
PLUGIN = "napari-medseg"


def _units(layer) -> tuple[str, ...]:
    return tuple(str(u) for u in layer.units)


def _screenshot_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("MEDSEG_SCREENSHOT_DIR") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _assert_image_and_labels(layers, image_file: str, labels_file: str, *, rgb: bool) -> None:
    assert [layer._type_string for layer in layers] == ["image", "labels"]
    image, labels = layers
    expected_image = tifffile.imread(sample_path(image_file))
    expected_labels = tifffile.imread(sample_path(labels_file))
    assert image.rgb is rgb
    np.testing.assert_array_equal(np.asarray(image.data), expected_image)
    np.testing.assert_array_equal(np.asarray(labels.data), expected_labels)
    assert labels.data.dtype.kind in "iu"
    assert labels.data.flags.writeable, "ground-truth labels must be editable"
    # no pixel size is known for DSB2018: scale 1, unit pixel, on both layers
    for layer in (image, labels):
        assert tuple(layer.scale) == (1.0, 1.0)
        assert tuple(layer.translate) == (0.0, 0.0)
        assert _units(layer) == ("pixel", "pixel")
    assert labels.data.shape == expected_image.shape[:2]


def test_nuclei_sample(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "nuclei")
    assert len(viewer.layers) == 2
    _assert_image_and_labels(layers, NUCLEI_IMAGE, NUCLEI_LABELS, rgb=False)
    assert layers[0].data.shape == (520, 696)
    # dsb2018/val 1c8b905c...: 136 nuclei, labels 1..136 (PROVENANCE.md)
    assert np.array_equal(np.unique(layers[1].data), np.arange(137))


def test_he_sample_and_screenshot(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer(show=True)  # the canvas only renders when shown
    layers = viewer.open_sample(PLUGIN, "he")
    assert len(viewer.layers) == 2
    _assert_image_and_labels(layers, HE_IMAGE, HE_LABELS, rgb=True)
    assert layers[0].data.shape == (256, 320, 3)
    # dsb2018/val 3b070948...: 17 nuclei, labels 1..17 (PROVENANCE.md)
    assert np.array_equal(np.unique(layers[1].data), np.arange(18))

    path = _screenshot_dir(tmp_path) / "he_sample_with_labels.png"
    shot = viewer.screenshot(str(path), canvas_only=True)
    assert path.stat().st_size > 0
    assert shot.ndim == 3 and shot.shape[2] == 4
    # the labels overlay is drawn: hiding it changes the pixels over the nuclei
    layers[1].visible = False
    without = viewer.screenshot(canvas_only=True)
    changed = np.any(shot[..., :3] != without[..., :3], axis=-1).mean()
    nuclei_fraction = (layers[1].data > 0).mean()
    assert changed > 0.5 * nuclei_fraction


def _mr_expected() -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """The sample series read with plain pydicom: (T, Z, Y, X) array and the headers of time point 0.

    Files are grouped into time points by Instance Number (15 per time point, as
    acquired), slices ordered by position along the slice normal.
    """
    files = sorted(sample_path(MR_SERIES).glob("*.dcm"))
    dss = sorted((pydicom.dcmread(f) for f in files), key=lambda d: int(d.InstanceNumber))
    normal = np.cross(*np.reshape(np.asarray(dss[0].ImageOrientationPatient, float), (2, 3)))
    n_pos = len({tuple(np.round(np.asarray(d.ImagePositionPatient, float), 3)) for d in dss})
    n_t = len(dss) // n_pos
    assert n_t * n_pos == len(dss)
    blocks = [
        sorted(dss[t * n_pos : (t + 1) * n_pos], key=lambda d: float(np.dot(normal, d.ImagePositionPatient)))
        for t in range(n_t)
    ]
    return np.stack([np.stack([d.pixel_array for d in block]) for block in blocks]), blocks[0]


def test_mr_sample_and_screenshot(make_napari_viewer, tmp_path: Path) -> None:
    expected, headers = _mr_expected()
    viewer = make_napari_viewer(show=True)
    layers = viewer.open_sample(PLUGIN, "mr")
    assert len(layers) == 1 and len(viewer.layers) == 1
    (layer,) = layers
    assert layer._type_string == "image" and not layer.rgb
    assert expected.shape == (3, 15, 64, 64)
    np.testing.assert_array_equal(np.asarray(layer.data), expected)

    # geometry: the reader's convention is patient LPS millimetres ordered (z, y, x),
    # time in seconds first; expected positions straight from the DICOM headers
    row_cos, col_cos = np.reshape(np.asarray(headers[0].ImageOrientationPatient, float), (2, 3))
    d_row, d_col = (float(v) for v in headers[0].PixelSpacing)  # between rows, between columns
    tr_s = float(headers[0].RepetitionTime) / 1000.0
    for t, k, i, j in [(0, 0, 0, 0), (1, 0, 0, 0), (0, 14, 0, 0), (2, 7, 63, 0), (0, 3, 10, 63), (2, 14, 63, 63)]:
        ipp = np.asarray(headers[k].ImagePositionPatient, float)
        lps_xyz = ipp + i * d_row * col_cos + j * d_col * row_cos
        expected_world = [t * tr_s, *lps_xyz[::-1]]
        np.testing.assert_allclose(layer.data_to_world((t, k, i, j)), expected_world, atol=1e-3)
    assert _units(layer) == ("second", "millimeter", "millimeter", "millimeter")
    # display range from the stored window (centre 2851, width 5702)
    centre, width = float(headers[0].WindowCenter), float(headers[0].WindowWidth)
    assert tuple(layer.contrast_limits) == pytest.approx((centre - width / 2, centre + width / 2), abs=1.0)

    path = _screenshot_dir(tmp_path) / "mr_sample.png"
    shot = viewer.screenshot(str(path), canvas_only=True)
    assert path.stat().st_size > 0
    assert shot[..., :3].std() > 10  # not a blank canvas
