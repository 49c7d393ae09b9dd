"""File > Save Layers with the napari-medseg labels writer: a round trip keeps labels and pixel size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import tifffile  # noqa: E402

pytestmark = pytest.mark.napari
PLUGIN = "napari-medseg"


def _labels(shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(3)
    lab = np.zeros(shape, dtype=np.uint16)
    for value in range(1, 40):  # 39 random boxes, later ones overwrite earlier ones
        lo = [int(rng.integers(0, s - 4)) for s in shape]
        lab[tuple(slice(a, a + 4) for a in lo)] = value
    lab[(0,) * len(shape)] = 1000  # a value above 255 must survive (no uint8 squeeze)
    return lab


def _check_round_trip_2d(viewer, tmp_path: Path) -> None:
    data = _labels((30, 40))
    viewer.add_labels(data, name="cells", scale=(0.5, 0.25), units=("micrometer", "micrometer"))
    path = tmp_path / "cells.tif"

    written = viewer.layers.save(str(path), plugin=PLUGIN)
    assert [Path(p) for p in written] == [path]

    # independently, with tifffile: values, dtype and ImageJ pixel size
    with tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(tif.asarray(), data)
        assert tif.asarray().dtype == np.uint16
        x_res = tif.pages[0].tags["XResolution"].value
        y_res = tif.pages[0].tags["YResolution"].value
    assert x_res[1] / x_res[0] == pytest.approx(0.25)  # µm per pixel along X
    assert y_res[1] / y_res[0] == pytest.approx(0.5)

    # and back through the plugin's reader into the viewer
    (layer,) = viewer.open(path, plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(layer.data), data)
    assert tuple(layer.scale) == pytest.approx((0.5, 0.25))
    assert tuple(str(u) for u in layer.units) == ("micrometer", "micrometer")


def _check_round_trip_3d_keeps_z_spacing(viewer, tmp_path: Path) -> None:
    data = _labels((6, 20, 24))
    viewer.add_labels(data, name="stack", scale=(2.0, 0.3, 0.3), units=("micrometer",) * 3)
    path = tmp_path / "stack.tif"

    viewer.layers.save(str(path), plugin=PLUGIN)
    (layer,) = viewer.open(path, plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(layer.data), data)
    assert tuple(layer.scale) == pytest.approx((2.0, 0.3, 0.3))


def test_save_labels_round_trip(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()  # one viewer for both checks: each costs ~1-2 s of CPU
    for check in (_check_round_trip_2d, _check_round_trip_3d_keeps_z_spacing):
        viewer.layers.clear()
        check(viewer, tmp_path)
