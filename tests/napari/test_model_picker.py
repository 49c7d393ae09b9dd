"""ModelPicker listens to the app-wide models-changed signal (a saved model appears in every picker)."""

from __future__ import annotations

from napari_medseg._napari.widgets.common import ModelPicker, notify_models_changed
from napari_medseg.models import registry
from napari_medseg.models.testing import make_random_model


def test_saved_model_appears_in_every_picker(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user"))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")
    a, b = ModelPicker(kinds=("instance",)), ModelPicker(kinds=None)
    gone = ModelPicker()
    for w in (a, b, gone):
        qtbot.addWidget(w)
        w.refresh()
    assert a.models() == [] and b.models() == []
    make_random_model(tmp_path / "user" / "mine", name="mine")
    assert a.models() == []  # nothing re-reads the folder until told
    gone.deleteLater()
    qtbot.wait(10)  # the deleted picker must not break the broadcast
    notify_models_changed()
    assert [m.name for m in a.models()] == ["mine"] and [m.name for m in b.models()] == ["mine"]
    assert a.current().name == "mine"


def test_model_rows_keep_following_the_image_when_the_dock_keeps_only_the_pickers(make_napari_viewer, qtbot, tmp_path,
                                                                                  monkeypatch):
    """A dock may lay out ModelRows' pickers and drop the object itself: the model still follows the image."""
    import gc

    import numpy as np

    from napari_medseg._napari.widgets.dock import ModelRows

    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user"))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")
    make_random_model(tmp_path / "user" / "grey", name="grey", in_channels=1)
    make_random_model(tmp_path / "user" / "colour", name="colour", in_channels=3)
    viewer = make_napari_viewer()
    rows = ModelRows(viewer, ("instance",), note=False)
    combo, picker = rows.image_combo, rows.model_picker
    for w in (combo, picker, rows.device_picker):
        qtbot.addWidget(w)
    picker.refresh()
    assert picker.current().name == "colour"  # the first listed
    del rows
    gc.collect()
    viewer.add_image(np.zeros((32, 32), np.float32), name="grey image")
    assert combo.layer().name == "grey image" and picker.current().name == "grey"
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="rgb", rgb=True)
    combo.set_layer(viewer.layers["rgb"])
    assert picker.current().name == "colour"
