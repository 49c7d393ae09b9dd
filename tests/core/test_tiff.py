"""TIFF reader and labels writer on small synthetic files (no display).

Every file is written with tifffile into tmp_path in the form other software
writes (ImageJ hyperstacks, OME-TIFF, RGB, plain page sequences, pyramids), so
the assertions check what napari-medseg makes of each form.
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_medseg._napari.writer import write_labels
from napari_medseg.errors import ParameterError
from napari_medseg.io import read
from napari_medseg.io import tiff as tiffmod
from napari_medseg.io.tiff import normalize_unit, read_tiff, write_labels_tiff

RNG = np.random.default_rng(12345)


def _rand(shape, dtype=np.uint16, hi=4000):
    return RNG.integers(0, hi, size=shape).astype(dtype)


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    "raw, expected",
    [("micron", "µm"), ("\\u00B5m", "µm"), ("um", "µm"), ("µm", "µm"), ("\u03bcm", "µm"),
     ("micrometer", "µm"), ("Microns", "µm"), ("nanometer", "nm"), ("mm", "mm"), ("inch", "inch"),
     ("second", "s"), ("sec", "s"), ("millisecond", "ms"), (None, "pixel"), ("", "pixel"),
     ("pixels", "pixel"), ("furlong", "furlong")],
)
def test_normalize_unit(raw, expected) -> None:
    assert normalize_unit(raw) == expected


# --------------------------------------------------------------------------- ImageJ


@pytest.mark.parametrize("unit", ["um", "micron", "\\u00B5m"])
def test_imagej_hyperstack_tzcyx(tmp_path: Path, unit: str) -> None:
    data = _rand((3, 4, 2, 20, 30))  # T Z C Y X as ImageJ stores it
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.5, 1 / 0.25),
                     metadata={"axes": "TZCYX", "spacing": 2.0, "unit": unit, "finterval": 1.5})

    (vol,) = read_tiff(path)
    assert vol.axes == "TCZYX"
    assert vol.shape == (3, 2, 4, 20, 30)
    assert isinstance(vol.data, np.ndarray) and vol.data.dtype == np.uint16
    np.testing.assert_array_equal(vol.data, data.transpose(0, 2, 1, 3, 4))
    assert vol.scale == (1.5, 2.0, 0.25, 0.5)  # T, Z, Y, X (exact from the rationals)
    assert vol.units == ("s", "µm", "µm", "µm")
    assert vol.metadata["pixel_size_source"] == "imagej"
    assert vol.metadata["imagej"]["spacing"] == 2.0
    assert vol.metadata["file_axes"] == "TZCYX"
    assert vol.metadata["source_path"] == str(path)
    assert vol.name == "hyper"

    data_out, kw, layer_type = vol.to_layer_data()
    assert layer_type == "image" and data_out is vol.data
    assert kw["channel_axis"] == 1
    assert kw["scale"] == (1.5, 2.0, 0.25, 0.5) and len(kw["scale"]) == vol.data.ndim - 1
    assert kw["units"] == ("second", "micrometer", "micrometer", "micrometer")
    assert kw["metadata"]["axes"] == "TCZYX"
    assert "rgb" not in kw and "multiscale" not in kw


def test_imagej_without_calibration_is_pixel(tmp_path: Path) -> None:
    data = _rand((5, 16, 16), np.uint8, 255)
    path = tmp_path / "nocal.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    (vol,) = read_tiff(path)
    assert (vol.axes, vol.scale, vol.units) == ("ZYX", (1.0, 1.0, 1.0), ("pixel",) * 3)
    assert vol.metadata["pixel_size_source"] == "none"


# --------------------------------------------------------------------------- OME


def test_ome_tiff_channels_names_and_physical_size(tmp_path: Path) -> None:
    data = _rand((2, 3, 4, 16, 24))  # T C Z Y X
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TCZYX", "PhysicalSizeX": 0.325, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": 0.325, "PhysicalSizeYUnit": "µm",
        "PhysicalSizeZ": 1500, "PhysicalSizeZUnit": "nm",  # converted to the X/Y unit
        "TimeIncrement": 30.0, "TimeIncrementUnit": "s",
        "Channel": {"Name": ["DAPI", "GFP", "mCherry"]}})

    (vol,) = read_tiff(path)
    assert vol.name == "cells"
    assert vol.axes == "TCZYX" and vol.shape == data.shape
    np.testing.assert_array_equal(vol.data, data)
    assert vol.channel_names == ["DAPI", "GFP", "mCherry"]
    assert vol.scale == (30.0, 1.5, 0.325, 0.325)
    assert vol.units == ("s", "µm", "µm", "µm")
    assert vol.metadata["pixel_size_source"] == "ome"
    assert "PhysicalSizeX" in vol.metadata["ome_xml"]

    _, kw, _ = vol.to_layer_data()
    assert kw["channel_axis"] == 1
    assert kw["name"] == ["cells [DAPI]", "cells [GFP]", "cells [mCherry]"]
    assert len(kw["scale"]) == 4


def test_ome_two_series_give_two_volumes(tmp_path: Path) -> None:
    a, b = _rand((16, 20)), _rand((3, 8, 10))
    path = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(a, metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "Name": "big"})
        w.write(b, metadata={"axes": "CYX", "PhysicalSizeX": 2.0, "PhysicalSizeY": 2.0, "Name": "small"})
    v1, v2 = read_tiff(path)
    assert (v1.axes, v1.scale) == ("YX", (0.5, 0.5))
    assert (v2.axes, v2.scale) == ("CYX", (2.0, 2.0))
    np.testing.assert_array_equal(v2.data, b)
    assert v1.name != v2.name


# --------------------------------------------------------------------------- RGB and resolution tags


def test_rgb_with_resolution_in_cm_is_micrometres(tmp_path: Path) -> None:
    data = _rand((20, 30, 3), np.uint8, 255)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, data, photometric="rgb", resolution=(10000 / 0.5, 10000 / 0.25),
                     resolutionunit="CENTIMETER")
    (vol,) = read_tiff(path)
    assert vol.axes == "YXS" and vol.rgb
    np.testing.assert_array_equal(vol.data, data)
    assert vol.scale == (0.25, 0.5) and vol.units == ("µm", "µm")
    assert vol.metadata["pixel_size_source"] == "resolution_tags"
    _, kw, _ = vol.to_layer_data()
    assert kw["rgb"] is True and "channel_axis" not in kw and kw["scale"] == (0.25, 0.5)


def test_planar_rgb_moves_samples_last(tmp_path: Path) -> None:
    data = _rand((3, 20, 30), np.uint8, 255)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate")
    (vol,) = read_tiff(path)
    assert vol.axes == "YXS" and vol.metadata["file_axes"] == "SYX"
    np.testing.assert_array_equal(vol.data, data.transpose(1, 2, 0))


@pytest.mark.parametrize("dpi, expected", [(25400.0, (1.0, "µm")), (12700.0, (2.0, "µm")),
                                           (72.0, (1.0, "pixel")), (96.0, (1.0, "pixel"))])
def test_inch_resolution_converted_screen_defaults_ignored(tmp_path: Path, dpi, expected) -> None:
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, _rand((8, 8)), resolution=(dpi, dpi), resolutionunit="INCH")
    (vol,) = read_tiff(path)
    assert vol.scale == (expected[0],) * 2 and vol.units == (expected[1],) * 2


def test_minisblack_extra_samples_become_channels(tmp_path: Path) -> None:
    data = _rand((16, 16, 2))
    path = tmp_path / "two_samples.tif"
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", metadata=None)
    (vol,) = read_tiff(path)
    assert vol.axes == "CYX" and not vol.rgb
    np.testing.assert_array_equal(vol.data, data.transpose(2, 0, 1))


# --------------------------------------------------------------------------- plain stacks


def test_plain_multipage_is_a_z_stack(tmp_path: Path) -> None:
    data = _rand((6, 12, 14))
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as w:
        for plane in data:
            w.write(plane, metadata=None)  # no shape metadata: tifffile's 'I' axis
    (vol,) = read_tiff(path)
    assert vol.metadata["file_axes"] == "IYX"
    assert vol.axes == "ZYX" and vol.scale == (1.0, 1.0, 1.0) and vol.units == ("pixel",) * 3
    np.testing.assert_array_equal(vol.data, data)


def test_unknown_axes_become_z_then_t_then_fold_into_t(tmp_path: Path) -> None:
    data = _rand((2, 3, 4, 5, 6))
    path = tmp_path / "shaped.tif"
    tifffile.imwrite(path, data, photometric="minisblack")  # tifffile: 'QQQYX'
    (vol,) = read_tiff(path)
    assert vol.metadata["file_axes"] == "QQQYX"
    assert vol.axes == "TZYX" and vol.shape == (6, 4, 5, 6)
    np.testing.assert_array_equal(vol.data, data.reshape(6, 4, 5, 6))


def test_io_read_dispatches_to_tiff(tmp_path: Path) -> None:
    path = tmp_path / "x.tiff"
    data = _rand((5, 7))
    tifffile.imwrite(path, data)
    (vol,) = read(path)
    np.testing.assert_array_equal(vol.data, data)


# --------------------------------------------------------------------------- laziness


def _open_fds_to(path: Path) -> int:
    fd_dir = Path("/proc/self/fd")
    n = 0
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            n += os.readlink(fd) == str(path)
    return n


def test_small_file_is_numpy_large_file_is_lazy_dask(tmp_path: Path, monkeypatch) -> None:
    data = _rand((4, 3, 32, 40))
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"})
    (eager,) = read_tiff(path)
    assert isinstance(eager.data, np.ndarray) and eager.metadata["lazy"] is False

    monkeypatch.setattr(tiffmod, "LAZY_THRESHOLD_BYTES", data.nbytes - 1)
    (vol,) = read_tiff(path)
    assert isinstance(vol.data, da.Array) and vol.metadata["lazy"] is True
    assert vol.axes == "CZYX" and vol.shape == (3, 4, 32, 40)
    assert vol.data.chunksize == (1, 1, 32, 40)  # one TIFF page per dask chunk
    np.testing.assert_array_equal(vol.data.compute(), data.transpose(1, 0, 2, 3))
    _, kw, _ = vol.to_layer_data()
    assert kw["channel_axis"] == 0


def test_lazy_open_reads_no_pixels(tmp_path: Path) -> None:
    """Pixels change on disk after the open: a lazy volume sees the new values."""
    data = np.full((3, 16, 16), 7, np.uint16)
    path = tmp_path / "lazy.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    (vol,) = read_tiff(path, lazy=True)
    with tifffile.TiffFile(path) as tf:
        offset = tf.series[0].dataoffset
    assert offset is not None
    with open(path, "r+b") as fh:  # same size, same structure, new pixel values
        fh.seek(offset)
        fh.write(np.full(data.shape, 9, np.uint16).tobytes())
    assert np.all(vol.data.compute() == 9)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_lazy_volume_holds_at_most_one_handle_and_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "handles.tif"
    tifffile.imwrite(path, _rand((4, 16, 16)), photometric="minisblack")
    (vol,) = read_tiff(path, lazy=True)
    assert _open_fds_to(path) == 0  # read_tiff closes the file it parsed
    vol.data.sum().compute()
    assert _open_fds_to(path) <= 1  # re-opened on demand by tifffile's file cache
    del vol
    gc.collect()
    assert _open_fds_to(path) == 0


def test_pyramid_opens_as_multiscale(tmp_path: Path) -> None:
    base = _rand((2, 256, 192))
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(base, subifds=2, tile=(64, 64), metadata={
            "axes": "CYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "Channel": {"Name": ["a", "b"]}})
        w.write(base[:, ::2, ::2], subfiletype=1, tile=(64, 64))
        w.write(base[:, ::4, ::4], subfiletype=1, tile=(64, 64))
    (vol,) = read_tiff(path)
    assert vol.multiscale and len(vol.data) == 3
    assert all(isinstance(level, da.Array) for level in vol.data)
    assert [lvl.shape for lvl in vol.data] == [(2, 256, 192), (2, 128, 96), (2, 64, 48)]
    for k, level in enumerate(vol.data):
        np.testing.assert_array_equal(level.compute(), base[:, :: 2**k, :: 2**k])
    assert vol.axes == "CYX" and vol.scale == (0.25, 0.25) and vol.channel_names == ["a", "b"]
    _, kw, _ = vol.to_layer_data()
    assert kw["multiscale"] is True and kw["channel_axis"] == 0 and kw["scale"] == (0.25, 0.25)


def test_plain_pyramid_rgb(tmp_path: Path) -> None:
    base = _rand((128, 96, 3), np.uint8, 255)
    path = tmp_path / "rgb_pyramid.tif"
    with tifffile.TiffWriter(path) as w:
        w.write(base, subifds=1, tile=(32, 32), photometric="rgb")
        w.write(base[::2, ::2], subfiletype=1, tile=(32, 32), photometric="rgb")
    (vol,) = read_tiff(path)
    assert vol.axes == "YXS" and vol.multiscale
    assert [lvl.shape for lvl in vol.data] == [(128, 96, 3), (64, 48, 3)]
    np.testing.assert_array_equal(vol.data[1].compute(), base[::2, ::2])


def test_large_tiled_page_groups_tiles_into_bigger_chunks(tmp_path: Path, monkeypatch) -> None:
    data = _rand((256, 320), np.uint8, 255)
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, data, tile=(32, 32))
    monkeypatch.setattr(tiffmod, "_TILE_GROUP_PX", 128)
    (vol,) = read_tiff(path, lazy=True)
    assert vol.data.chunksize == (128, 128)
    np.testing.assert_array_equal(vol.data.compute(), data)


# --------------------------------------------------------------------------- labels writer


@pytest.mark.parametrize(
    "shape, axes, scale, units",
    [((30, 40), "YX", (0.65, 0.65), ("µm", "µm")),
     ((5, 30, 40), "ZYX", (2.0, 0.1083, 0.1083), ("µm", "µm", "µm")),
     ((3, 4, 20, 24), "TZYX", (1.5, 2.0, 0.5, 0.5), ("s", "µm", "µm", "µm")),
     ((3, 20, 24), "TYX", (60.0, 0.5, 0.5), ("s", "nm", "nm"))],
)
def test_labels_round_trip_imagej(tmp_path: Path, shape, axes, scale, units) -> None:
    labels = _rand(shape, np.uint16, 3000)
    path = tmp_path / "labels.tif"
    assert write_labels_tiff(path, labels, scale=scale, units=units, axes=axes) == path
    with tifffile.TiffFile(path) as tf:
        assert tf.is_imagej  # ImageJ/Fiji open it with its calibration
    (vol,) = read_tiff(path)
    assert vol.axes == axes and vol.data.dtype == np.uint16
    np.testing.assert_array_equal(vol.data, labels)
    assert vol.scale == scale and vol.units == units


@pytest.mark.parametrize(
    "dtype, hi, expected",
    [(np.int64, 200, np.uint8), (np.int32, 60000, np.uint16), (np.int64, 70000, np.uint32),
     (np.uint8, 10, np.uint8), (np.uint32, 10, np.uint32), (np.bool_, 2, np.uint8)],
)
def test_labels_dtype_rules(tmp_path: Path, dtype, hi, expected) -> None:
    labels = RNG.integers(0, hi, size=(3, 16, 18)).astype(dtype)
    labels.flat[0] = hi - 1  # the largest id is present
    path = tmp_path / "labels.tif"
    write_labels_tiff(path, labels, scale=(3.0, 0.5, 0.5), units="µm")
    (vol,) = read_tiff(path)
    assert vol.data.dtype == expected
    np.testing.assert_array_equal(vol.data, labels.astype(expected))
    assert vol.scale == (3.0, 0.5, 0.5) and vol.units == ("µm",) * 3


def test_labels_dask_input_and_units_imagej_cannot_hold(tmp_path: Path) -> None:
    labels = _rand((4, 16, 18), np.int16, 500)
    path = tmp_path / "labels.tif"
    # Z in µm but X/Y without unit: not expressible in ImageJ, kept exactly in the JSON form
    write_labels_tiff(path, da.from_array(labels, chunks=(1, 16, 18)), scale=(2.0, 1.0, 1.0),
                      units=("micrometer", "pixel", "pixel"))
    (vol,) = read_tiff(path)
    np.testing.assert_array_equal(vol.data, labels)
    assert vol.scale == (2.0, 1.0, 1.0) and vol.units == ("µm", "pixel", "pixel")
    assert vol.metadata["pixel_size_source"] == "napari-medseg"


def test_labels_negative_or_float_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.tif"
    with pytest.raises(ParameterError, match="negative"):
        write_labels_tiff(path, np.array([[0, -3], [1, 2]], np.int32))
    with pytest.raises(ParameterError, match="integers"):
        write_labels_tiff(path, np.zeros((4, 4), np.float32))
    with pytest.raises(ParameterError, match="scale"):
        write_labels_tiff(path, np.zeros((4, 4), np.uint8), scale=(1.0,))
    with pytest.raises(ParameterError, match="axes"):
        write_labels_tiff(path, np.zeros((2, 4, 4), np.uint8), axes="YXZ")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_labels_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "labels.tif"
    write_labels_tiff(path, np.ones((8, 8), np.uint8))
    before = path.read_bytes()

    def explode(block):
        raise RuntimeError("disk full (simulated)")

    # the failure comes mid-write, after tifffile has started the file
    bad = da.zeros((4, 8, 8), dtype=np.uint16, chunks=(1, 8, 8))
    bad = bad.map_blocks(lambda b, block_info=None: explode(b) if block_info[0]["chunk-location"][0] == 2 else b,
                         dtype=np.uint16)
    with pytest.raises(RuntimeError, match="disk full"):
        write_labels_tiff(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]  # no temporary left behind


def test_npe2_writer_hook_uses_layer_scale_units_and_axes(tmp_path: Path) -> None:
    labels = _rand((3, 4, 10, 12), np.int32, 100)
    meta = {"scale": (2.0, 1.0, 0.5, 0.5), "units": ("second", "micrometer", "micrometer", "micrometer"),
            "metadata": {"axes": "TCZYX"}}  # copied from the image the labels were drawn on
    out = write_labels(str(tmp_path / "seg.tif"), labels, meta)
    assert out == [str(tmp_path / "seg.tif")]
    (vol,) = read_tiff(out[0])
    assert vol.axes == "TZYX" and vol.data.dtype == np.uint8
    np.testing.assert_array_equal(vol.data, labels)
    assert vol.scale == (2.0, 1.0, 0.5, 0.5) and vol.units == ("s", "µm", "µm", "µm")


def test_npe2_writer_multiscale_and_no_axes(tmp_path: Path) -> None:
    labels = _rand((10, 12), np.uint16, 100)
    out = write_labels(str(tmp_path / "seg.tif"), [labels, labels[::2, ::2]],
                       {"scale": (1.0, 1.0), "units": ("pixel", "pixel"), "metadata": {}})
    (vol,) = read_tiff(out[0])
    np.testing.assert_array_equal(vol.data, labels)
    assert vol.axes == "YX" and vol.units == ("pixel", "pixel")


# --------------------------------------------------------------------------- real data


def test_real_dsb2018_image_and_mask() -> None:
    from conftest import dataset

    folder = dataset("dsb2018", "val")
    image = sorted((folder / "images").glob("*.tif"))[0]
    mask = folder / "masks" / image.name
    (img,) = read_tiff(image)
    (lab,) = read_tiff(mask)
    expected = tifffile.imread(image)
    np.testing.assert_array_equal(img.data, expected)
    assert img.axes == ("YXS" if expected.ndim == 3 else "YX")
    assert lab.axes == "YX" and lab.data.dtype == np.uint16
    assert lab.shape == img.shape[:2]


def test_huge_striped_page_groups_strips(tmp_path: Path, monkeypatch) -> None:
    data = _rand((300, 64), np.uint16)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, data, rowsperstrip=10)
    monkeypatch.setattr(tiffmod, "_PAGE_CHUNK_BYTES", 1000)  # the page counts as huge
    monkeypatch.setattr(tiffmod, "_STRIP_GROUP_BYTES", 64 * 2 * 40)  # 4 strips of 10 rows
    (vol,) = read_tiff(path, lazy=True)
    assert vol.data.chunks == ((40,) * 7 + (20,), (64,))
    np.testing.assert_array_equal(vol.data.compute(), data)


def test_ome_only_x_size_means_square_pixels(tmp_path: Path) -> None:
    path = tmp_path / "x_only.ome.tif"
    tifffile.imwrite(path, _rand((8, 8)), ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.4})
    (vol,) = read_tiff(path)
    assert vol.scale == (0.4, 0.4) and vol.units == ("µm", "µm")


def test_labels_file_mode_follows_umask_and_zarr_input(tmp_path: Path) -> None:
    import zarr

    labels = _rand((2, 3, 10, 12), np.uint16, 50)
    z = zarr.create_array(store=str(tmp_path / "labels.zarr"), shape=labels.shape, dtype=labels.dtype,
                          chunks=(1, 1, 10, 12))
    z[:] = labels
    path = tmp_path / "from_zarr.tif"
    write_labels_tiff(path, z, axes="ZTYX", scale=(2.0, 5.0, 0.5, 0.5), units=("µm", "s", "µm", "µm"))
    (vol,) = read_tiff(path)
    assert vol.axes == "TZYX"  # ImageJ order
    np.testing.assert_array_equal(vol.data, labels.transpose(1, 0, 2, 3))
    assert vol.scale == (5.0, 2.0, 0.5, 0.5)

    reference = tmp_path / "plain_file"
    reference.write_bytes(b"x")
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_labels_write_keeps_mode_and_symlink_and_cleans_killed_writers(tmp_path: Path) -> None:
    import os
    import stat

    target = tmp_path / "real.tif"
    write_labels_tiff(target, np.ones((8, 8), np.uint8))
    os.chmod(target, 0o600)
    link = tmp_path / "link.tif"
    link.symlink_to(target)
    # what a SIGKILLed writer (a process that no longer exists) left behind
    dead = tmp_path / f".real.tif.{2**22 + 12345}.0123456789ab.part.tif"
    dead.write_bytes(b"half a file")
    write_labels_tiff(link, np.full((8, 8), 2, np.uint8))
    assert link.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o600
    np.testing.assert_array_equal(read_tiff(link)[0].data, 2)
    assert not dead.exists()
