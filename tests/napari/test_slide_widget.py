"""The Slide dock widget in a real viewer on a multiscale layer opened by the slide reader.

Run with ``xvfb-run -a python -m pytest tests/napari/test_slide_widget.py -q``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_medseg._napari.reader import get_slide_reader, get_tiff_reader  # noqa: E402
from napari_medseg._napari.widgets.slide import SlideWidget  # noqa: E402
from tests.slide_data import mosaic, write_ome_pyramid, write_svs_like  # noqa: E402

pytestmark = pytest.mark.napari

TIMEOUT = 150_000  # ms; 2 CPU cores shared with other jobs


@pytest.fixture
def opened(make_napari_viewer, tmp_path, tiny_tile_classifier, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    tissue = np.zeros((16, 24), bool)
    tissue[2:14, 3:21] = True
    truth = np.zeros_like(tissue)
    truth[5:10, 6:12] = True
    path = write_svs_like(tmp_path / "slide.svs", mosaic(truth, tissue, seed=2), mpp=0.5, factors=(4, 16))
    viewer = make_napari_viewer()
    reader = get_slide_reader(str(path))
    assert reader is not None and get_slide_reader(str(tmp_path / "x.tif")) is None
    for data, kw, kind in reader(str(path)):
        viewer._add_layer_from_data(data, kw, kind)
    widget = SlideWidget(viewer)
    widget.model_picker.add_path(str(tiny_tile_classifier))
    return viewer, widget, tissue, truth, tmp_path


def test_reader_gives_a_multiscale_layer_in_um(opened) -> None:
    viewer, _, _, _, _ = opened
    layer = viewer.layers[0]
    assert layer.multiscale and layer.rgb and len(layer.data) == 3
    assert tuple(layer.scale) == (0.5, 0.5) and [str(u) for u in layer.units] == ["micrometer", "micrometer"]


def test_tiff_pyramids_stay_with_the_tiff_reader(tmp_path, make_napari_viewer) -> None:
    img = np.zeros((512, 512, 3), np.uint8)
    path = write_ome_pyramid(tmp_path / "p.ome.tif", img, mpp=0.25, factors=(2,), tile=128)
    reader = get_tiff_reader(str(path))
    (data, kw, kind), = reader(str(path))
    assert kw["multiscale"] and kw["scale"] == pytest.approx((0.25, 0.25)) and kind == "image"


def test_tissue_heatmap_regions_and_geojson_round_trip(opened, qtbot) -> None:
    viewer, w, tissue, truth, tmp_path = opened
    slide = viewer.layers[0]
    w.tile.setValue(32)
    w.find_tissue()
    lab = viewer.layers[f"{slide.name} tissue"]
    d = w.tissue.downsample  # the finest level of at most 4 Mpx: level 0 of this small slide
    assert tuple(lab.scale) == (0.5 * d[0], 0.5 * d[1]) and lab.data.shape == (512 / d[0], 768 / d[1])
    assert lab.data.sum() == pytest.approx(tissue.sum() * 32 * 32 / d[0] / d[1], rel=0.05)
    w.run_heatmap()
    qtbot.waitUntil(lambda: w._job is not None and not w._job.running, timeout=TIMEOUT)
    assert w.heatmap is not None, w.status.text()
    assert "region(s)" in w.status.text()
    w.heat_class.setCurrentText("tumour")
    heat = viewer.layers[f"{slide.name} p(tumour)"]
    assert heat.data.shape == (16, 24) and tuple(heat.scale) == (16.0, 16.0)
    np.testing.assert_allclose(heat.translate, (15.5 * 0.5, 15.5 * 0.5))
    pred = heat.data >= 0.5
    assert (pred & truth).sum() / (pred | truth).sum() >= 0.9
    regions = viewer.layers[f"{slide.name} regions"]
    assert "tumour" in list(regions.features["class"])
    assert w.table.rowCount() == len(w.regions) and w.table.item(0, 1).text() in ("normal", "tumour")
    w.table.selectRow(0)  # centres the view on it, no error
    # export the regions, import them back as Shapes with their classes over the slide
    out = w.export_geojson(tmp_path / "regions.geojson")
    assert out is not None, w.status.text()
    doc = json.loads(out.read_text())
    assert {f["properties"]["classification"]["name"] for f in doc["features"]} == set(regions.features["class"])
    imported = w.import_geojson(out)
    assert imported is not None, w.status.text()
    assert list(imported.features["class"]) == [f["properties"]["classification"]["name"] for f in doc["features"]]
    np.testing.assert_allclose(imported.data[0].min(axis=0), regions.data[0].min(axis=0), atol=1e-3)
    # a Shapes layer drawn by hand (a rectangle, world µm) exports in level-0 pixels
    drawn = viewer.add_shapes([np.array([[10.0, 20.0], [10.0, 60.0], [30.0, 60.0], [30.0, 20.0]])],
                              shape_type="rectangle", name="drawn", features={"class": ["Tumor"]})
    w.shapes_source.set_layer(drawn)
    out2 = w.export_geojson(tmp_path / "drawn.geojson")
    f, = json.loads(out2.read_text())["features"]
    xy = np.asarray(f["geometry"]["coordinates"][0])
    # world y 10..30 µm, x 20..60 µm at 0.5 µm/px: pixel-centre index 20..60 / 40..120, corner coordinates + 0.5
    assert (xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max()) == (40.5, 120.5, 20.5, 60.5)
    assert f["properties"]["classification"]["name"] == "Tumor"
    bad = tmp_path / "bad.geojson"
    bad.write_text("{}")
    assert w.import_geojson(bad) is None and "GeoJSON import failed" in w.status.text()
