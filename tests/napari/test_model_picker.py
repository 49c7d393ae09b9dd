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
