"""The Segment dock widget on a real viewer, through the real threaded path.

Run with ``xvfb-run -a python -m pytest tests/napari/test_segment_widget.py -q``.
Models are tiny random-weight U-Nets written to a temporary
``MEDSEG_MODELS_DIR``; the worker thread is never switched off.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Image, Labels  # noqa: E402

from napari_medseg.errors import ModelError  # noqa: E402
from napari_medseg.models.registry import default_model_for  # noqa: E402
from napari_medseg.models.testing import make_random_model  # noqa: E402

pytestmark = pytest.mark.napari

RUN_TIMEOUT = 120_000  # ms; 2 CPU cores shared with other jobs


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "models"
    make_random_model(d / "tiny", name="tiny", in_channels=1, seed=1)
    make_random_model(d / "tiny-rgb", name="tiny-rgb", in_channels=3, seed=2)
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(d))
    return d


@pytest.fixture
def viewer_widget(make_napari_viewer, models_dir, qtbot):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Segment")
    # the device list is filled from a worker thread (torch import); let it land
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    yield viewer, widget
    if widget.running:
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)


def _blobs(shape=(64, 80), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(10, 2, shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(6):
        cy, cx = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] += 50
    return img


def _run_and_wait(qtbot, widget, timeout=RUN_TIMEOUT) -> None:
    qtbot.mouseClick(widget.run_button, _left())
    assert widget.running
    assert not widget.run_button.isEnabled()
    assert widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)
    assert widget.run_button.isEnabled()
    assert not widget.cancel_button.isEnabled()


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def _select(widget, image, model: str) -> None:
    widget.image_combo.set_layer(image)
    assert widget.model_picker.select(model), [m.name for m in widget.model_picker.models()]


def test_widget_module_import_is_cheap() -> None:
    code = (
        "import sys, napari_medseg._napari.widgets.segment\n"
        "assert 'torch' not in sys.modules, 'torch imported by the widget module'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_run_adds_labels_with_geometry_and_rerun_replaces(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    img = viewer.add_image(_blobs(), name="cells", scale=(0.5, 0.25), translate=(10.0, -4.0),
                           units=("micrometer", "micrometer"))
    _select(widget, img, "tiny")
    assert widget.device_picker.device() == "auto"
    _run_and_wait(qtbot, widget)

    assert [lay.name for lay in viewer.layers] == ["cells", "cells labels"]
    out = viewer.layers["cells labels"]
    assert isinstance(out, Labels)
    assert out.data.shape == img.data.shape
    np.testing.assert_array_equal(out.scale, [0.5, 0.25])
    np.testing.assert_array_equal(out.translate, [10.0, -4.0])
    np.testing.assert_array_equal(out.affine.affine_matrix, img.affine.affine_matrix)
    assert tuple(str(u) for u in out.units) == ("micrometer", "micrometer")
    assert out.metadata["napari_medseg_output_of"] == "cells"
    meta = out.metadata["napari_medseg"]
    assert meta["model"] == "tiny"
    assert meta["device"].startswith("cpu")
    assert meta["parameters"]["axes"] == "YX"
    assert meta["parameters"]["scale"] == pytest.approx((0.5, 0.25))
    n = len(np.unique(out.data)) - int(0 in out.data)
    status = widget.status.text()
    assert status.startswith(f"{n} object{'' if n == 1 else 's'} in "), status
    assert "CPU" in status, status

    first = out
    img.data = img.data[::-1].copy()  # new pixels: the re-run must write new labels
    _run_and_wait(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == ["cells", "cells labels"]
    assert viewer.layers["cells labels"] is first
    assert first.data.shape == img.data.shape


def test_user_layer_with_same_name_is_never_replaced(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    img = viewer.add_image(_blobs(seed=3), name="cells")
    mine = np.zeros((64, 80), np.int32)
    mine[5:9, 5:9] = 7
    user = viewer.add_labels(mine.copy(), name="cells labels")
    _select(widget, img, "tiny")

    _run_and_wait(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == ["cells", "cells labels [1]", "cells labels"]
    assert viewer.layers["cells labels"] is user
    np.testing.assert_array_equal(user.data, mine)
    ours = viewer.layers["cells labels [1]"]
    assert ours.metadata["napari_medseg_output_of"] == "cells"

    _run_and_wait(qtbot, widget)  # re-run replaces ours, not the user's
    assert [lay.name for lay in viewer.layers] == ["cells", "cells labels [1]", "cells labels"]
    assert viewer.layers["cells labels [1]"] is ours
    np.testing.assert_array_equal(user.data, mine)


def test_cancel_stops_and_adds_nothing(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    img = viewer.add_image(_blobs((2048, 2048), seed=4), name="big")
    _select(widget, img, "tiny")
    widget.tile_size.setValue(128)
    widget.batch_size.setValue(1)
    qtbot.mouseClick(widget.run_button, _left())
    job = widget._job
    # wait until tiles are really being processed (the progress bar moved)
    qtbot.waitUntil(lambda: job.pbar is not None and job.pbar.n >= 2, timeout=RUN_TIMEOUT)
    assert widget.running
    total = job.pbar.total
    t0 = time.perf_counter()
    qtbot.mouseClick(widget.cancel_button, _left())
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)
    stop_s = time.perf_counter() - t0
    assert job.pbar.n < total, "the run finished before Cancel took effect"
    assert stop_s < 10, f"cancel took {stop_s:.1f} s"
    assert [lay.name for lay in viewer.layers] == ["big"]
    assert widget.status.text().startswith("Cancelled"), widget.status.text()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def _last_error_message() -> str:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    errs = [n for n in notification_manager.records if n.severity == NotificationSeverity.ERROR]
    return str(errs[-1].message) if errs else ""


def test_rgb_model_on_grey_image_shows_error_and_adds_nothing(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    img = viewer.add_image(_blobs(seed=5), name="grey")
    before = _last_error_message()
    _select(widget, img, "tiny-rgb")
    _run_and_wait(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == ["grey"]
    status = widget.status.text()
    assert status.startswith("Segmentation failed"), status
    msg = _last_error_message()
    assert msg != before and msg == status


def test_corrupt_model_folder_shows_error_and_adds_nothing(viewer_widget, models_dir, qtbot) -> None:
    viewer, widget = viewer_widget
    bad = models_dir / "broken"
    make_random_model(bad, name="broken", seed=3)
    (bad / "weights.safetensors").write_bytes(b"this is not a safetensors file")
    widget.model_picker.refresh()
    img = viewer.add_image(_blobs(seed=6), name="grey")
    user = viewer.add_labels(np.ones((64, 80), np.uint8), name="grey labels")
    _select(widget, img, "broken")
    _run_and_wait(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == ["grey", "grey labels"]
    assert viewer.layers["grey labels"] is user and int(user.data.sum()) == 64 * 80
    status = widget.status.text()
    assert "Segmentation failed" in status and "broken" in status, status
    assert _last_error_message() == status


def test_rgb_image_picks_rgb_default_and_labels_are_2d(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    grey = viewer.add_image(_blobs(seed=7), name="grey")
    rgb_data = np.stack([_blobs(seed=8)] * 3, axis=-1).clip(0, 255).astype(np.uint8)
    rgb = viewer.add_image(rgb_data, name="he", rgb=True, scale=(0.25, 0.25), translate=(3.0, 4.0))
    assert rgb.rgb
    widget.image_combo.set_layer(rgb)
    want_rgb = default_model_for(True)
    assert want_rgb is not None
    assert widget.model_picker.current().name == want_rgb
    widget.image_combo.set_layer(grey)
    assert widget.model_picker.current().name == default_model_for(False)
    widget.image_combo.set_layer(rgb)
    assert widget.model_picker.current().name == want_rgb
    # run the RGB test model on it: labels are Y, X with the spatial geometry
    assert widget.model_picker.select("tiny-rgb")
    _run_and_wait(qtbot, widget)
    out = viewer.layers["he labels"]
    assert out.data.shape == (64, 80)
    np.testing.assert_array_equal(out.scale, [0.25, 0.25])
    np.testing.assert_array_equal(out.translate, [3.0, 4.0])
    assert out.metadata["napari_medseg"]["parameters"]["axes"] == "YXS"


def test_hand_picked_model_is_kept_while_it_fits(viewer_widget) -> None:
    viewer, widget = viewer_widget
    a = viewer.add_image(_blobs(seed=9), name="a")
    b = viewer.add_image(_blobs(seed=10), name="b")
    widget.image_combo.set_layer(a)
    idx = [m.name for m in widget.model_picker.models()].index("tiny")
    widget.model_picker.combo.setCurrentIndex(idx)
    widget.model_picker.combo.activated.emit(idx)  # what a user's click emits
    widget.image_combo.set_layer(b)
    assert widget.model_picker.current().name == "tiny"


def test_probabilities_and_multiscale(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    base = _blobs((64, 96), seed=11)
    img = viewer.add_image([base, base[::2, ::2]], name="pyr", multiscale=True, scale=(2.0, 2.0))
    _select(widget, img, "tiny")
    widget.keep_probabilities.setChecked(True)
    _run_and_wait(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == ["pyr", "pyr labels", "pyr probabilities"]
    lab = viewer.layers["pyr labels"]
    prob = viewer.layers["pyr probabilities"]
    assert lab.data.shape == (64, 96)
    assert isinstance(prob, Image)
    assert prob.data.shape[-2:] == (64, 96)
    np.testing.assert_array_equal(prob.scale[-2:], [2.0, 2.0])
    p = np.asarray(prob.data)
    assert p.min() >= 0 and p.max() <= 1
    _run_and_wait(qtbot, widget)
    assert len(viewer.layers) == 3


def test_image_list_follows_layers(viewer_widget) -> None:
    viewer, widget = viewer_widget
    combo = widget.image_combo
    assert combo.count() == 0 and combo.layer() is None
    a = viewer.add_image(np.zeros((8, 8)), name="a")
    viewer.add_points(np.zeros((1, 2)), name="pts")
    viewer.add_labels(np.zeros((8, 8), int), name="lab")
    b = viewer.add_image(np.zeros((8, 8)), name="b")
    assert [combo.itemText(i) for i in range(combo.count())] == ["b", "a"]
    combo.set_layer(a)
    a.name = "renamed"
    assert [combo.itemText(i) for i in range(combo.count())] == ["b", "renamed"]
    assert combo.layer() is a
    viewer.layers.remove(a)
    assert [combo.itemText(i) for i in range(combo.count())] == ["b"]
    assert combo.layer() is b


def test_no_model_or_image_says_so(viewer_widget) -> None:
    viewer, widget = viewer_widget
    widget.run()
    assert not widget.running
    assert widget.status.text().startswith("No image layer")
    assert len(viewer.layers) == 0


def test_screenshot_with_dock_visible(make_napari_viewer, models_dir, qtbot, tmp_path) -> None:
    viewer = make_napari_viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Segment")
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    img = viewer.add_image(_blobs((128, 128), seed=12), name="cells", scale=(0.5, 0.5))
    _select(widget, img, "tiny")
    widget.advanced.expand(animate=False)
    _run_and_wait(qtbot, widget)
    qtbot.wait(200)  # let the dock re-lay out the two-line status before grabbing it
    assert widget.isVisible()
    assert widget.status.height() >= 2 * widget.status.fontMetrics().height()
    path = Path("/tmp") / "medseg_segment_widget.png"
    shot = viewer.screenshot(str(path), canvas_only=False)
    assert path.is_file()
    assert shot.ndim == 3 and shot.shape[0] > 200 and shot.shape[1] > 300


def test_time_series_segments_the_time_point_on_screen(viewer_widget, models_dir, qtbot) -> None:
    from napari_medseg.inference.segment import segment_iter
    from napari_medseg.progress import run

    viewer, widget = viewer_widget
    frames = np.stack([_blobs((48, 64), seed=s) for s in (20, 21, 22)])
    img = viewer.add_image(frames, name="movie", scale=(5.0, 0.5, 0.5), metadata={"axes": "TYX"})
    _select(widget, img, "tiny")
    expect = {t: run(segment_iter(frames[t], models_dir / "tiny", axes="YX", scale=(0.5, 0.5))).labels
              for t in (1, 2)}
    assert expect[1].any() and expect[2].any()  # else "only this time point was written" proves nothing

    viewer.dims.set_current_step(0, 1)
    _run_and_wait(qtbot, widget)
    out = viewer.layers["movie labels"]
    assert out.data.shape == (3, 48, 64)
    np.testing.assert_array_equal(out.scale, [5.0, 0.5, 0.5])
    np.testing.assert_array_equal(out.data[1], expect[1])
    assert not out.data[0].any() and not out.data[2].any()
    assert out.metadata["napari_medseg"]["parameters"]["time_index"] == 1
    assert out.metadata["napari_medseg"]["parameters"]["axes"] == "YX"
    assert "at time point 1" in widget.status.text()

    viewer.dims.set_current_step(0, 2)  # the next time point goes into the same layer
    _run_and_wait(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == ["movie", "movie labels"]
    assert viewer.layers["movie labels"] is out
    np.testing.assert_array_equal(out.data[1], expect[1])
    np.testing.assert_array_equal(out.data[2], expect[2])
    assert not out.data[0].any()


def test_dicom_mr_sample_geometry_and_pixel_size(viewer_widget, qtbot) -> None:
    """4D DICOM (T, Z, Y, X): spacing lives in the affine (mm); labels carry it; scale sent in µm."""
    viewer, widget = viewer_widget
    (img,) = viewer.open_sample("napari-medseg", "mr")
    assert img.data.ndim == 4 and img.metadata["axes"] == "TZYX"
    _select(widget, img, "tiny")
    viewer.dims.set_current_step(0, 2)
    _run_and_wait(qtbot, widget)
    out = viewer.layers[f"{img.name} labels"]
    assert out.data.shape == img.data.shape
    np.testing.assert_allclose(out.affine.affine_matrix, img.affine.affine_matrix)
    assert tuple(str(u) for u in out.units) == ("second", "millimeter", "millimeter", "millimeter")
    params = out.metadata["napari_medseg"]["parameters"]
    assert params["axes"] == "ZYX" and params["time_index"] == 2
    # pixel size = column norms of the affine's Z, Y, X part, in the layer's own unit (the engine converts)
    spacing_mm = np.linalg.norm(img.affine.linear_matrix[1:, 1:], axis=0)
    np.testing.assert_allclose(params["scale"], spacing_mm, rtol=1e-9)
    assert tuple(params["units"]) == ("mm", "mm", "mm")
    assert not out.data[0].any() and not out.data[1].any()


def test_pixel_size_is_none_without_physical_units() -> None:
    from napari_medseg._napari.layers import engine_scale

    plain = Image(np.zeros((4, 5)), scale=(2.0, 3.0))  # unit "pixel": unknown size
    assert engine_scale(plain) == (None, None)
    nm = Image(np.zeros((4, 5)), scale=(200.0, 300.0), units=("nanometer", "nanometer"))
    assert engine_scale(nm) == ((200.0, 300.0), ("nm", "nm"))
    timed = Image(np.zeros((2, 4, 5)), scale=(7.0, 1.5, 2.5), units=("second", "micrometer", "micrometer"),
                  metadata={"axes": "TYX"})
    assert engine_scale(timed) == ((1.5, 2.5), ("µm", "µm"))


def test_refresh_lists_a_model_saved_after_the_widget_opened(viewer_widget, models_dir, qtbot) -> None:
    _viewer, widget = viewer_widget
    assert widget.model_picker.select("tiny")
    assert "fresh" not in [m.name for m in widget.model_picker.models()]
    make_random_model(models_dir / "fresh", name="fresh", seed=4)  # e.g. written by fine-tuning
    qtbot.mouseClick(widget.model_picker.refresh_button, _left())
    names = [m.name for m in widget.model_picker.models()]
    assert "fresh" in names
    assert widget.model_picker.current().name == "tiny"  # the selection survives a refresh
    fresh = next(m for m in widget.model_picker.models() if m.name == "fresh")
    assert fresh.source == "user" and fresh.path == models_dir / "fresh"


def test_detection_models_are_not_offered_for_segmentation(viewer_widget, models_dir, qtbot) -> None:
    import json

    folder = make_random_model(models_dir / "boxes", name="boxes", in_channels=1, seed=5)
    card = json.loads((folder / "model.json").read_text())
    card["output"]["kind"] = "detection"
    (folder / "model.json").write_text(json.dumps(card))
    _viewer, widget = viewer_widget
    qtbot.mouseClick(widget.model_picker.refresh_button, _left())
    names = [m.name for m in widget.model_picker.models()]
    assert "boxes" not in names and "tiny" in names
    with pytest.raises(ModelError, match="detection model"):
        widget.model_picker.add_path(str(folder))
    assert "boxes" not in [m.name for m in widget.model_picker.models()]


def _stack(shape=(12, 40, 48), seed=30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(10, 2, shape).astype(np.float32)
    zz, yy, xx = np.indices(shape)
    for _ in range(3):
        cz, cy, cx = rng.integers(4, shape[0] - 4), rng.integers(8, shape[1] - 8), rng.integers(8, shape[2] - 8)
        img[(zz - cz) ** 2 * 4 + (yy - cy) ** 2 + (xx - cx) ** 2 < 40] += 50
    return img


def test_3d_checkbox_only_for_z_stacks_and_2d_instance_models(viewer_widget, models_dir, qtbot) -> None:
    viewer, widget = viewer_widget
    make_random_model(models_dir / "sem", name="sem", kind="semantic", n_classes=3, seed=7)
    make_random_model(models_dir / "vol", name="vol", dims=3, seed=8)
    widget.model_picker.refresh()
    flat = viewer.add_image(_blobs(seed=31), name="flat")
    rgb = viewer.add_image(np.stack([_blobs(seed=32)] * 3, -1).clip(0, 255).astype(np.uint8), name="he", rgb=True)
    stack = viewer.add_image(_stack(), name="stack")
    cases = [(flat, "tiny", False), (rgb, "tiny-rgb", False), (stack, "tiny", True), (stack, "sem", False),
             (stack, "vol", False), (flat, "tiny", False)]
    for layer, model, enabled in cases:
        _select(widget, layer, model)
        assert widget.do_3d.isEnabled() is enabled, (layer.name, model)
        if not enabled:
            assert "Unavailable" in widget.do_3d.toolTip()


def test_3d_objects_from_the_2d_model_use_the_layer_scale(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    data = _stack()
    img = viewer.add_image(data, name="stack", scale=(1.0, 0.5, 0.5), units=("micrometer",) * 3)
    _select(widget, img, "tiny")
    widget.do_3d.setChecked(True)
    _run_and_wait(qtbot, widget)
    out = viewer.layers["stack labels"]
    assert out.data.shape == data.shape
    np.testing.assert_array_equal(out.scale, [1.0, 0.5, 0.5])
    meta = out.metadata["napari_medseg"]
    assert meta["parameters"]["do_3d"] is True and meta["parameters"]["scale"] == pytest.approx((1.0, 0.5, 0.5))
    assert meta["timings"]["resample"] > 0  # Z spacing 2x the pixel size: resampled to 24 planes
    assert widget.status.text().split()[1] in ("object", "objects"), widget.status.text()

    # no physical units: the Z / XY ratio of the layer scale is still used
    plain = viewer.add_image(data, name="plain", scale=(3.0, 1.0, 1.0))
    _select(widget, plain, "tiny")
    _run_and_wait(qtbot, widget)
    meta = viewer.layers["plain labels"].metadata["napari_medseg"]
    assert meta["parameters"]["scale"] == pytest.approx((3.0, 1.0, 1.0)) and meta["parameters"]["units"] == "pixel"
    assert meta["timings"]["resample"] > 0 and viewer.layers["plain labels"].data.shape == data.shape

    widget.do_3d.setChecked(False)  # plane by plane: the engine's own path, no resampling step
    _run_and_wait(qtbot, widget)
    meta = viewer.layers["plain labels"].metadata["napari_medseg"]
    assert meta["parameters"]["do_3d"] is False and "resample" not in meta["timings"]


def test_screenshot_with_3d_option(make_napari_viewer, models_dir, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Segment")
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    img = viewer.add_image(_stack((16, 64, 64)), name="stack", scale=(2.0, 1.0, 1.0))
    _select(widget, img, "tiny")
    widget.do_3d.setChecked(True)
    _run_and_wait(qtbot, widget)
    qtbot.wait(200)
    assert widget.do_3d.isVisible() and widget.do_3d.isEnabled()
    path = Path("/tmp") / "medseg_segment_widget_3d.png"
    viewer.screenshot(str(path), canvas_only=False)
    assert path.is_file()


def test_mr_image_shows_the_wrong_kind_warning(viewer_widget, qtbot) -> None:
    """A microscopy model on an MR layer: an orange note under the model, and the warning with the result."""
    viewer, widget = viewer_widget
    grey = viewer.add_image(_blobs(seed=3), name="cells")
    assert widget.kind_note.isHidden()
    mr = viewer.add_image(np.stack([_blobs(seed=4)] * 3), name="mr", metadata={"frame": "LPS",
                                                                              "dicom": {"Modality": "MR"}})
    widget.image_combo.set_layer(mr)
    assert widget.model_picker.current().name == "nuclei"  # no MR model installed: the grey one stays
    want = ("The nuclei model was made for fluorescence microscopy, brightfield microscopy and H&E histology "
            "images; this image is MR: results are unlikely to mean anything.")
    assert not widget.kind_note.isHidden() and widget.kind_note.text() == want
    assert widget.model_picker.select("tiny")  # a card that says nothing: no note
    assert widget.kind_note.isHidden()
    assert widget.model_picker.select("nuclei")
    _run_and_wait(qtbot, widget)
    assert widget.status.text().endswith(f"\nWarning: {want}")
    widget.image_combo.set_layer(grey)
    assert widget.kind_note.isHidden()


def test_object_knobs_show_the_card_values_and_reach_the_engine(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    img = viewer.add_image(_blobs(seed=9), name="plain")
    _select(widget, img, "nuclei")
    from napari_medseg.models.registry import resolve_model
    from napari_medseg.models.spec import ModelCard

    pp = ModelCard.from_json(Path(resolve_model("nuclei").path) / "model.json").output["postprocess"]
    assert (widget.prob_threshold.value(), widget.seed_threshold.value()) == (pp["fg_threshold"],
                                                                              pp["seed_threshold"])  # the card's
    assert widget.diameter.value() == 0 and widget.diameter.specialValueText() == "model: 20.1"
    assert widget._object_knobs(None, None) == {}  # left alone: the card decides
    assert widget.model_picker.select("tiny")  # a card without a diameter or thresholds
    assert not widget.diameter.isEnabled() and widget.diameter.specialValueText() == "not known"
    assert (widget.prob_threshold.value(), widget.seed_threshold.value()) == (0.5, 0.5)
    assert widget.model_picker.select("nuclei")
    widget.diameter.setValue(40.0)
    widget.prob_threshold.setValue(0.3)
    _run_and_wait(qtbot, widget)
    params = viewer.layers["plain labels"].metadata["napari_medseg"]["parameters"]
    assert params["diameter"] == [40.0, 40.0] and params["postprocess"] == {"fg_threshold": 0.3}
    assert "0 objects" not in widget.status.text(), widget.status.text()

    # a diameter in µm needs a pixel size: the layer has none, the pixel-size box gives one
    widget.diameter_unit.setCurrentText("µm")
    widget.diameter.setValue(5.0)
    widget.run()
    assert not widget.running and "needs the image's pixel size" in widget.status.text()
    widget.voxel_size.setText("0.25 um")
    _run_and_wait(qtbot, widget)
    params = viewer.layers["plain labels"].metadata["napari_medseg"]["parameters"]
    assert params["scale"] == (0.25, 0.25) and params["units"] == "µm" and params["diameter"] == [20.0, 20.0]
    widget.voxel_size.setText("1 2 3 um")
    widget.run()
    assert not widget.running and widget.status.text() == "pixel size '1 2 3 um': 3 values for 2 spatial axes"
