"""File > Open the way napari's menu calls it: ``viewer.open(path, plugin=None)``.

``viewer.open(path)`` without ``plugin`` uses napari's builtin reader, which
is *not* what File > Open does; File > Open passes ``plugin=None``, so napari
looks at every plugin whose reader pattern matches and, when several do
(napari's builtins claim ``.tif``, ``.dcm``, ``.nii.gz`` and every folder),
raises ``MultipleReaderError`` and shows its "Choose reader" dialog.

What these tests record, per file kind (the README's "Opening files" says the same):

==========================  ============================================  ======================================
path                        ``viewer.open(path, plugin=None)``             "Choose reader" dialog, OK as offered
==========================  ============================================  ======================================
OME-TIFF with pixel size    MultipleReaderError (napari, napari-medseg)   napari-medseg preselected: µm scale kept
single ``.dcm`` file        MultipleReaderError (napari, napari-medseg)   napari-medseg preselected: patient mm
DICOM series folder         MultipleReaderError (napari, napari-medseg)   napari-medseg preselected: patient mm
``.nii.gz``                 MultipleReaderError (napari, napari-medseg)   napari-medseg preselected: patient mm
``.ima`` (Siemens DICOM)    opens with napari-medseg (the only reader)    no dialog
DICOM file, no extension    NoAvailableReaderError (npe2 cannot match)    use the folder or our menu command
``.png``                    opens with napari's builtins, no dialog       (before: our DICOM reader claimed ``*``)
==========================  ============================================  ======================================

With "Remember this choice" ticked, napari stores the choice in its
``extension2reader`` setting and the next file of that kind opens with
napari-medseg without a dialog.  The plugin itself never writes that setting.
*File > IO Utilities > Open with napari-medseg...* always reads with our readers.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import nibabel as nib  # noqa: E402
import pydicom  # noqa: E402
import tifffile  # noqa: E402
from conftest import dataset  # noqa: E402

from napari_medseg._napari.sample_data import MR_SERIES, sample_path  # noqa: E402

pytestmark = pytest.mark.napari
PLUGIN = "napari-medseg"
OME_SCALE = (2.0, 0.325, 0.325)  # Z, Y, X in µm


def _units(layer) -> tuple[str, ...]:
    return tuple(str(u) for u in layer.units)


# ---------------------------------------------------------------------------------------
# files and what their geometry must be
# ---------------------------------------------------------------------------------------

def _ome_tiff(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).integers(0, 4000, size=(3, 24, 32), dtype=np.uint16)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path, data, ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeZ": OME_SCALE[0], "PhysicalSizeY": OME_SCALE[1],
                  "PhysicalSizeX": OME_SCALE[2], "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm",
                  "PhysicalSizeZUnit": "µm"},
    )
    return path


def _check_ome(layers) -> None:
    (layer,) = layers
    assert tuple(layer.scale) == pytest.approx(OME_SCALE)
    assert _units(layer) == ("micrometer",) * 3


def _lps_zyx(ds: pydicom.Dataset, i: int, j: int) -> np.ndarray:
    """Patient position (LPS mm, ordered z, y, x) of row i, column j of one DICOM slice, from its header."""
    row_cos, col_cos = np.reshape(np.asarray(ds.ImageOrientationPatient, float), (2, 3))
    d_row, d_col = (float(v) for v in ds.PixelSpacing)
    xyz = np.asarray(ds.ImagePositionPatient, float) + i * d_row * col_cos + j * d_col * row_cos
    return xyz[::-1]


def _check_single_dcm(path: Path):
    ds = pydicom.dcmread(path)

    def check(layers) -> None:
        (layer,) = layers
        np.testing.assert_array_equal(np.asarray(layer.data)[0], ds.pixel_array)
        for i, j in [(0, 0), (63, 0), (10, 63)]:
            np.testing.assert_allclose(layer.data_to_world((0, i, j)), _lps_zyx(ds, i, j), atol=1e-3)
        assert _units(layer) == ("millimeter",) * 3

    return check


def _check_series(folder: Path, n_time: int):
    files = sorted(folder.glob("*.dcm"))
    headers = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in files), key=lambda d: int(d.InstanceNumber))
    first_tp = sorted(headers[: len(files) // n_time], key=lambda d: float(d.ImagePositionPatient[2]))

    def check(layers) -> None:
        (layer,) = layers
        assert layer.data.shape == (n_time, len(first_tp), 64, 64)
        for k, i, j in [(0, 0, 0), (len(first_tp) - 1, 63, 0), (7, 10, 63)]:
            world = layer.data_to_world((0, k, i, j))
            np.testing.assert_allclose(world[1:], _lps_zyx(first_tp[k], i, j), atol=1e-3)
        assert _units(layer)[1:] == ("millimeter",) * 3

    return check


def _nifti(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)  # nibabel order: i (x), j (y), k (z)
    affine = np.array([[-0.8, 0, 0, 10.0], [0, 0.9, 0, -20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    path = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path, affine


def _check_nifti(affine: np.ndarray):
    def check(layers) -> None:
        (layer,) = layers
        assert layer.data.shape == (4, 5, 6)  # (k, j, i): Z, Y, X
        for i, j, k in [(0, 0, 0), (5, 0, 0), (0, 4, 3), (2, 3, 1)]:
            ras = affine @ [i, j, k, 1.0]
            lps_zyx = [ras[2], -ras[1], -ras[0]]
            np.testing.assert_allclose(layer.data_to_world((k, j, i)), lps_zyx, atol=1e-4)
        assert _units(layer) == ("millimeter",) * 3

    return check


def _cases(tmp_path: Path) -> list[tuple[str, Path, object]]:
    ome = _ome_tiff(tmp_path)
    dcm = sample_path(MR_SERIES) / "axial_epi_fmri_interleaved_i_to_s-00001.dcm"
    nii, affine = _nifti(tmp_path)
    cases = [
        ("ome-tiff", ome, _check_ome),
        ("dcm", dcm, _check_single_dcm(dcm)),
        ("series-folder", sample_path(MR_SERIES), _check_series(sample_path(MR_SERIES), 3)),
        ("nii.gz", nii, _check_nifti(affine)),
    ]
    return cases


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------

def _claimed(path: Path) -> bool:
    from npe2 import PluginManager

    return any(r.plugin_name == PLUGIN for r in PluginManager.instance().iter_compatible_readers([str(path)]))


def _accept_dialog_as_offered(monkeypatch, remember: bool) -> list[dict]:
    """Make napari's "Choose reader" dialog return what a user gets by pressing OK at once.

    Returns a list that records, per dialog shown, the offered readers and the preselected one.
    """
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog

    shown: list[dict] = []

    def get_user_choices(self):
        buttons = [b.text() for b in self.reader_btn_group.buttons()]
        choice = self._get_plugin_choice()  # the preselected radio button
        shown.append({"file": self._current_file, "offered": buttons, "preselected": choice})
        return choice, remember

    monkeypatch.setattr(QtReaderDialog, "get_user_choices", get_user_choices)
    return shown


def test_file_open_asks_and_preselects_napari_medseg_keeping_geometry(make_napari_viewer, tmp_path, monkeypatch):
    from napari._qt.dialogs.qt_reader_dialog import handle_gui_reading
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings
    from npe2 import PluginManager

    viewer = make_napari_viewer()
    display = PluginManager.instance().get_manifest(PLUGIN).display_name
    get_settings().plugins.extension2reader = {}  # a fresh user: no remembered choices
    shown = _accept_dialog_as_offered(monkeypatch, remember=False)

    for name, path, check in _cases(tmp_path):
        viewer.layers.clear()
        # 1. File > Open: napari must ask, since its builtins claim the same name
        with pytest.raises(MultipleReaderError) as info:
            viewer.open(path, plugin=None)
        assert sorted(info.value.available_plugins) == ["napari", PLUGIN], name
        assert len(viewer.layers) == 0
        # 2. the dialog napari shows then, accepted as offered: ours is preselected
        handle_gui_reading([str(path)], viewer.window._qt_viewer, stack=False)
        assert shown[-1]["preselected"] == display, (name, shown[-1])
        assert sorted(shown[-1]["offered"]) == sorted([display, "napari builtins"])
        check(list(viewer.layers))
        assert viewer.layers[0].source.reader_plugin == PLUGIN, name
    assert get_settings().plugins.extension2reader == {}, "the plugin must not store reader preferences"


def test_remember_this_choice_then_file_open_uses_napari_medseg(make_napari_viewer, tmp_path, monkeypatch):
    from napari._qt.dialogs.qt_reader_dialog import handle_gui_reading
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    get_settings().plugins.extension2reader = {}
    _accept_dialog_as_offered(monkeypatch, remember=True)

    ome = _ome_tiff(tmp_path)
    handle_gui_reading([str(ome)], viewer.window._qt_viewer, stack=False)
    # napari stores the extension napari's dialog names (".tif" here, ".gz" for .nii.gz)
    assert get_settings().plugins.extension2reader == {"*.tif": PLUGIN}
    viewer.layers.clear()
    other = tmp_path / "other"
    other.mkdir()
    second = _ome_tiff(other)
    layers = viewer.open(second, plugin=None)  # no dialog now
    _check_ome(layers)


def test_file_open_without_a_choice_for_names_only_we_claim(make_napari_viewer, tmp_path) -> None:
    from napari.errors import NoAvailableReaderError
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    get_settings().plugins.extension2reader = {}
    dcm = sample_path(MR_SERIES) / "axial_epi_fmri_interleaved_i_to_s-00001.dcm"

    # Siemens .IMA: napari-medseg is the only reader, napari opens it directly
    ima = tmp_path / "MR.0001.IMA"
    shutil.copy(dcm, ima)
    layers = viewer.open(ima, plugin=None)
    _check_single_dcm(dcm)(layers)
    assert layers[0].source.reader_plugin == PLUGIN

    # a PNG: napari's builtins only, no dialog (the old "*" DICOM pattern made napari ask here)
    import imageio.v3 as iio

    png = tmp_path / "photo.png"
    iio.imwrite(png, np.zeros((8, 8, 3), np.uint8))
    viewer.layers.clear()
    (layer,) = viewer.open(png, plugin=None)
    assert layer.source.reader_plugin == "napari"

    # a DICOM file without extension: npe2 matches no pattern, napari has no reader to offer
    bare = tmp_path / "IM0001"
    shutil.copy(dcm, bare)
    with pytest.raises(NoAvailableReaderError):
        viewer.open(bare, plugin=None)


def test_open_with_napari_medseg_menu_command(make_napari_viewer, tmp_path, monkeypatch) -> None:
    """File > IO Utilities > Open with napari-medseg...: no reader question, geometry kept, any DICOM name."""
    from napari._app_model import get_app_model
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    app = get_app_model()
    menu_ids = {item.command.id for item in app.menus.get_menu("napari/file/io_utilities") if hasattr(item, "command")}
    assert {"napari-medseg.open_files", "napari-medseg.open_folder"} <= menu_ids

    cases = _cases(tmp_path)
    files = [str(p) for name, p, _ in cases if p.is_file()]
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: (files, "")))
    app.commands.execute_command("napari-medseg.open_files").result()
    checks = [check for _, p, check in cases if p.is_file()]
    assert len(viewer.layers) == len(checks)
    for layer, check in zip(list(viewer.layers), checks, strict=False):
        check([layer])
        assert layer.source.reader_plugin == PLUGIN

    # a folder: the real GE series with its README-Series.txt (napari's builtins fail on it)
    folder = dataset("dicom_mr_series", "In", "20180918GE", "mr_0004")
    assert (folder / "README-Series.txt").exists()
    viewer.layers.clear()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    app.commands.execute_command("napari-medseg.open_folder").result()
    _check_series(folder, 10)(list(viewer.layers))

    # DICOM files napari's File > Open cannot route: no extension, and DICOMDIR (uppercase, Linux)
    from pydicom.fileset import FileSet

    from napari_medseg._napari.open_with import open_with_medseg

    dcm = sample_path(MR_SERIES) / "axial_epi_fmri_interleaved_i_to_s-00001.dcm"
    bare = tmp_path / "IM0001"
    shutil.copy(dcm, bare)
    viewer.layers.clear()
    layers = open_with_medseg(viewer, [bare])
    _check_single_dcm(dcm)(layers)
    assert layers[0].source.path == str(bare)
    # a DICOMDIR (written by pydicom, files in its own folder tree) over the first time point
    fileset = FileSet()
    for f in sorted(sample_path(MR_SERIES).glob("*.dcm"))[:15]:
        fileset.add(f)
    fileset.write(tmp_path / "media")
    dicomdir = tmp_path / "media" / "DICOMDIR"
    if sys.platform != "win32":  # npe2 lower-cases the pattern; only Windows' fnmatch ignores case
        assert not _claimed(dicomdir), "npe2 now matches DICOMDIR: update the README's 'Opening files'"
    viewer.layers.clear()
    (layer,) = open_with_medseg(viewer, [dicomdir])
    assert layer.data.shape == (15, 64, 64)
    assert _units(layer) == ("millimeter",) * 3

    # something we cannot read: a clear error, nothing added
    from napari_medseg.errors import ReaderError

    text = tmp_path / "notes"
    text.write_text("not an image")
    viewer.layers.clear()
    with pytest.raises(ReaderError, match="napari-medseg cannot read"):
        open_with_medseg(viewer, [text])
    assert len(viewer.layers) == 0


def test_real_ge_series_folder_with_readme_via_file_open(make_napari_viewer, monkeypatch) -> None:
    """The GE folder holds README-Series.txt; accepting the offered reader opens the series with geometry."""
    from napari._qt.dialogs.qt_reader_dialog import handle_gui_reading
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    folder = dataset("dicom_mr_series", "In", "20180918GE", "mr_0004")
    viewer = make_napari_viewer()
    get_settings().plugins.extension2reader = {}
    _accept_dialog_as_offered(monkeypatch, remember=False)
    with pytest.raises(MultipleReaderError):
        viewer.open(folder, plugin=None)
    handle_gui_reading([str(folder)], viewer.window._qt_viewer, stack=False)
    _check_series(folder, 10)(list(viewer.layers))
