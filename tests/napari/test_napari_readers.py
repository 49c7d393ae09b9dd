"""File > Open with the napari-medseg readers in a real viewer.

Synthetic TIFFs are written with tifffile in tmp_path (plain, OME multichannel,
ImageJ hyperstack); the DICOM series comes from the shared data sets and is
skipped when they are absent.  Bad input must raise a clear error and leave the
layer list untouched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import pydicom  # noqa: E402
import tifffile  # noqa: E402
from conftest import dataset  # noqa: E402

from napari_medseg.errors import ReaderError  # noqa: E402

pytestmark = pytest.mark.napari
PLUGIN = "napari-medseg"


def _units(layer) -> tuple[str, ...]:
    return tuple(str(u) for u in layer.units)


# One viewer per test costs ~1-2 s of CPU (Qt window, plugin discovery, gc at
# teardown), so related checks share a viewer; each check is its own function so a
# failure names the file type.


def _check_plain_2d(viewer, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, size=(40, 50), dtype=np.uint16)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, data)

    layers = viewer.open(path, plugin=PLUGIN)
    assert len(layers) == 1 and len(viewer.layers) == 1
    (layer,) = layers
    assert layer._type_string == "image" and not layer.rgb
    np.testing.assert_array_equal(np.asarray(layer.data), data)
    assert np.asarray(layer.data).dtype == np.uint16
    assert tuple(layer.scale) == (1.0, 1.0)


def _check_ome_multichannel(viewer, tmp_path: Path) -> None:
    """An OME-TIFF with 3 named channels opens as 3 layers with the OME pixel size."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 60000, size=(3, 32, 48), dtype=np.uint16)
    names = ["DAPI", "GFP", "mCherry"]
    path = tmp_path / "multi.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "CYX",
            "PhysicalSizeX": 0.25,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.5,
            "PhysicalSizeYUnit": "µm",
            "Channel": {"Name": names},
        },
    )

    layers = viewer.open(path, plugin=PLUGIN)
    assert len(layers) == 3 and len(viewer.layers) == 3
    for c, (layer, name) in enumerate(zip(layers, names, strict=False)):
        assert layer._type_string == "image"
        np.testing.assert_array_equal(np.asarray(layer.data), data[c])
        assert name in layer.name
        assert tuple(layer.scale) == pytest.approx((0.5, 0.25))
        assert _units(layer) == ("micrometer", "micrometer")


def _check_imagej_hyperstack(viewer, tmp_path: Path) -> None:
    """An ImageJ ZCYX hyperstack opens as one 3D layer per channel with Z spacing and pixel size."""
    rng = np.random.default_rng(2)
    data = rng.integers(0, 255, size=(5, 2, 24, 36), dtype=np.uint8)  # Z, C, Y, X
    path = tmp_path / "hyperstack.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.4, 1 / 0.4),  # pixels per µm
        metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"},
    )

    layers = viewer.open(path, plugin=PLUGIN)
    assert len(layers) == 2 and len(viewer.layers) == 2
    for c, layer in enumerate(layers):
        np.testing.assert_array_equal(np.asarray(layer.data), data[:, c])
        assert tuple(layer.scale) == pytest.approx((1.5, 0.4, 0.4))
        assert _units(layer) == ("micrometer",) * 3


def test_open_synthetic_tiffs(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    for check in (_check_plain_2d, _check_ome_multichannel, _check_imagej_hyperstack):
        viewer.layers.clear()
        check(viewer, tmp_path)


def test_open_dicom_series_folder(make_napari_viewer) -> None:
    folder = dataset("dicom_mr_series", "In", "20180918GE", "mr_0005")
    files = sorted(folder.glob("*.dcm"))
    first = pydicom.dcmread(files[0])  # Instance Number 1: time point 0, first slice

    viewer = make_napari_viewer()
    layers = viewer.open(folder, plugin=PLUGIN)  # the folder also holds README-Series.txt
    assert len(layers) == 1 and len(viewer.layers) == 1
    (layer,) = layers
    data = np.asarray(layer.data)
    n_files = len(files)
    n_slices = int(first.ImagesInAcquisition)
    assert data.shape == (n_files // n_slices, n_slices, int(first.Rows), int(first.Columns))
    # slices are acquired inferior to superior, so index 0 along Z is Instance Number 1
    np.testing.assert_array_equal(data[0, 0], first.pixel_array)
    last = pydicom.dcmread(files[-1])
    np.testing.assert_array_equal(data[-1, -1], last.pixel_array)
    assert _units(layer)[1:] == ("millimeter",) * 3


def test_bad_input_raises_and_adds_no_layer(make_napari_viewer, tmp_path: Path) -> None:
    """Garbage .tif and an empty folder: a clear error, the layer list untouched, the viewer usable."""
    from napari.errors import ReaderPluginError
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 4)), name="existing")

    # 1. not a TIFF at all, napari-medseg chosen explicitly: our typed error
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a TIFF file at all\x00\x01\x02" * 20)
    with pytest.raises(ReaderError, match="garbage.tif"):
        viewer.open(garbage, plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["existing"]

    # 2. TIFF magic but a broken IFD offset, napari-medseg as the preferred .tif reader
    #    (the File > Open path): napari wraps the error in ReaderPluginError, which its
    #    Qt layer catches and shows instead of crashing
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\xff" * 64)
    get_settings().plugins.extension2reader = {"*.tif": PLUGIN}
    with pytest.raises(ReaderPluginError) as info:
        viewer.open(broken, plugin=None)  # None: use the preference (the default is napari's own reader)
    assert info.value.reader_plugin == PLUGIN
    assert isinstance(info.value.original_error, ReaderError)
    assert [layer.name for layer in viewer.layers] == ["existing"]

    # 3. an empty folder: the DICOM reader hook declines it (returns None, never raises)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="refused"):
        viewer.open(empty, plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["existing"]

    # the viewer still works afterwards
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.arange(12, dtype=np.uint8).reshape(3, 4))
    viewer.open(good, plugin=PLUGIN)
    assert len(viewer.layers) == 2
