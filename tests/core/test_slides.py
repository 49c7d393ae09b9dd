"""Whole slides: real small pyramids written by tifffile, tissue masks, tile heat maps, regions, QuPath GeoJSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medseg.errors import ParameterError, ReaderError
from napari_medseg.progress import run
from napari_medseg.slides.geojson import (
    feature,
    from_index,
    labels_features,
    read_geojson,
    region_features,
    to_index,
    write_geojson,
)
from napari_medseg.slides.heatmap import HeatMap, classify_slide_iter, tile_grid, write_heatmap_tiff
from napari_medseg.slides.outline import mask_polygons, ring_area
from napari_medseg.slides.pyramid import Slide, open_slide
from napari_medseg.slides.regions import heatmap_regions, regions_table
from napari_medseg.slides.tissue import MAX_SATURATION, detect_tissue, tissue_mask_array
from tests.slide_data import mosaic, write_ome_pyramid, write_svs_like


def _layout(rows=24, cols=32):
    tissue = np.zeros((rows, cols), bool)
    tissue[3:21, 4:28] = True
    truth = np.zeros_like(tissue)
    truth[6:14, 8:18] = True
    return tissue, truth


@pytest.fixture(scope="module")
def svs(tmp_path_factory):
    tissue, truth = _layout()
    img = mosaic(truth, tissue)
    return write_svs_like(tmp_path_factory.mktemp("svs") / "case1.svs", img, mpp=0.5), img, tissue, truth


def test_svs_like_opens_lazily_with_mpp_levels_and_without_label_macro(svs) -> None:
    path, img, _, _ = svs
    s = open_slide(path)
    assert s.mpp == (0.5, 0.5) and s.metadata["pixel_size_source"] == "svs_mpp"
    assert s.rgb and s.shape == img.shape[:2]
    assert [s.level_shape(k) for k in range(len(s.levels))] == [(768, 1024), (192, 256), (48, 64)]
    assert s.downsample(2) == (16.0, 16.0) and s.level_for(5.0) == 1 and s.level_for(1.0) == 0
    assert set(s.metadata["associated_images"]) == {"Thumbnail", "Label", "Macro"}
    assert type(s.levels[0]).__module__.startswith("dask")
    np.testing.assert_array_equal(s.read(100, 200, 50, 60), img[100:150, 200:260])
    np.testing.assert_array_equal(s.read(10, 20, 5, 6, level=1), img[::4, ::4][10:15, 20:26])
    assert s.read(760, 1000, 50, 50).shape == (8, 24, 3)  # clipped at the edge
    data, kw, kind = s.to_layer_data()
    assert kind == "image" and kw["multiscale"] and kw["rgb"] and kw["scale"] == (0.5, 0.5)
    assert [d.shape for d in data] == [(768, 1024, 3), (192, 256, 3), (48, 64, 3)]
    # the level-2 geometry puts its pixel centres at the centres of the 16 x 16 blocks they cover
    np.testing.assert_allclose(s.geometry(2).index_to_world([[0, 0]]), [[7.5 * 0.5, 7.5 * 0.5]])


def test_ome_pyramid_and_grey_and_errors(tmp_path) -> None:
    img = (np.arange(512 * 640) % 251).astype(np.uint8).reshape(512, 640)
    s = open_slide(write_ome_pyramid(tmp_path / "g.ome.tif", img, mpp=0.325, factors=(2, 4), tile=128))
    assert s.mpp == pytest.approx((0.325, 0.325)) and not s.rgb and len(s.levels) == 3
    assert s.name == "g" and s.metadata["pixel_size_source"] == "ome"
    np.testing.assert_array_equal(s.read(0, 0, 3, 3, level=2), img[::4, ::4][:3, :3])
    with pytest.raises(ParameterError, match="level 5 does not exist"):
        s.read(0, 0, 2, 2, level=5)
    with pytest.raises(ParameterError, match="outside"):
        s.read(600, 0, 2, 2)
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 4, 16, 16), np.uint8), imagej=True,
                     metadata={"axes": "ZCYX"})
    with pytest.raises(ReaderError, match="stack.tif.*2D grey or RGB"):
        open_slide(tmp_path / "stack.tif")


def test_tiff_reader_takes_the_svs_mpp_too(svs) -> None:
    from napari_medseg.io.tiff import read_tiff

    v = read_tiff(svs[0])[0]
    assert v.multiscale and v.scale[-2:] == (0.5, 0.5) and v.units[-2:] == ("µm", "µm")


def test_tissue_mask_finds_the_tissue_of_a_synthetic_slide(svs) -> None:
    path, _, tissue, _ = svs
    s = open_slide(path)
    m = detect_tissue(s, max_pixels=200 * 260, min_um=2.0)  # level 1: 192 x 256, 2 µm, 4 level-0 px per mask px
    assert m.downsample == (4.0, 4.0) and m.mask.shape == (192, 256)
    truth = np.kron(tissue, np.ones((8, 8), bool))  # 32-px tiles -> 8 mask px
    iou = (m.mask & truth).sum() / (m.mask | truth).sum()
    assert iou > 0.97
    frac = m.tile_fraction(32, tissue.shape)
    assert ((frac > 0.5) == tissue).all()
    # a tile smaller than a mask pixel takes the pixel it lies in
    assert m.tile_fraction(2, (400, 500))[100, 100] == float(m.mask[50, 50])


def test_tissue_mask_on_glass_only_and_on_grey() -> None:
    glass = np.random.default_rng(0).normal(236, 2, (100, 120, 3)).clip(0, 255).astype(np.uint8)
    mask, t = tissue_mask_array(glass, pixel_um=8.0)
    assert not mask.any() and t >= 0.05
    grey = np.zeros((100, 100), np.uint16)
    grey[20:60, 30:80] = 900
    mask, _ = tissue_mask_array(grey, pixel_um=None, min_area_um2=10, hole_area_um2=10, closing_um=0)
    rect = np.zeros_like(mask)
    rect[20:60, 30:80] = True
    assert mask[rect].all() and not mask[:18].any() and not mask[:, :28].any()  # the bright block, 1 px of blur
    assert abs(int(mask.sum()) - 40 * 50) < 2 * (40 + 50) + 4
    with pytest.raises(ParameterError, match="RGB"):
        tissue_mask_array(np.zeros((4, 4, 2)))


def _glass(shape, tint=(222, 226, 240), seed=0) -> np.ndarray:
    """Tinted glass (saturation about 0.08, above MIN_SATURATION) with scanner noise."""
    rng = np.random.default_rng(seed)
    return np.clip(np.array(tint, float) + rng.normal(0, 3, (*shape, 3)), 0, 255).astype(np.uint8)


def test_a_slide_with_two_percent_tissue_keeps_just_that_tissue(tmp_path) -> None:
    tissue = np.zeros((32, 32), bool)
    tissue[10:15, 20:24] = True  # 20 of 1024 tiles: 2 % of the slide, 80 x 64 µm (under min_area_um2)
    img = mosaic(np.zeros_like(tissue), tissue, seed=5)
    img[np.kron(~tissue, np.ones((32, 32), bool))] = _glass(img.shape[:2])[np.kron(~tissue, np.ones((32, 32), bool))]
    m = detect_tissue(open_slide(write_ome_pyramid(tmp_path / "small.ome.tif", img, mpp=0.5, factors=(2, 4, 8))))
    assert m.downsample == (8.0, 8.0) and m.mask.shape == (128, 128)  # 4 µm mask pixels
    truth = np.kron(tissue, np.ones((4, 4), bool))
    assert (m.mask & truth).sum() / (m.mask | truth).sum() > 0.85
    assert abs(m.fraction - 0.02) < 0.005


def test_tinted_glass_alone_is_no_tissue() -> None:
    # one mode only: Otsu would cut the glass in half (threshold ~0.08, inside [0.05, 0.15])
    for tint in ((236, 234, 238), (228, 230, 240), (222, 226, 240), (240, 232, 220)):
        mask, t = tissue_mask_array(_glass((256, 256), tint), pixel_um=8.0)
        assert not mask.any() and t == MAX_SATURATION
    tissue_only = mosaic(np.zeros((8, 8), bool), np.ones((8, 8), bool))  # all tissue: one mode as well
    assert tissue_mask_array(tissue_only, pixel_um=1.0)[0].all()


def _heat(probs: np.ndarray, tile=(32.0, 32.0), mpp=(0.5, 0.5)) -> HeatMap:
    s = Slide(levels=[np.zeros((int(probs.shape[0] * tile[0]), int(probs.shape[1] * tile[1])), np.uint8)], mpp=mpp)
    return HeatMap(probabilities=probs.astype(np.float32), class_names=["normal", "tumour"], tile=tile, level=0,
                   mpp=mpp, geometry=s.geometry().zoomed((1 / tile[0], 1 / tile[1])))


def test_regions_area_diameter_outline_and_holes() -> None:
    p = np.zeros((10, 12, 2))
    p[..., 0] = 1.0
    p[2:6, 3:9] = (0.1, 0.9)  # 4 x 6 tumour tiles
    p[4, 5] = (0.8, 0.2)  # a hole
    p[0, 0] = np.nan  # not classified
    regions, labels = heatmap_regions(_heat(p), ["tumour"])
    assert len(regions) == 1
    r = regions[0]
    tile_mm = 32 * 0.5 / 1000
    assert r.n_tiles == 23 and r.area == pytest.approx(23 * tile_mm**2)
    assert r.longest_diameter == pytest.approx(np.hypot(4, 6) * tile_mm)
    assert r.mean_probability == pytest.approx(0.9) and r.unit == "mm"
    assert (labels == 1).sum() == 23
    outline, *holes = r.polygons[0]
    xs, ys = outline[:, 0], outline[:, 1]
    # traced through tile edges, level-0 pixels, corner origin
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (3 * 32, 9 * 32, 2 * 32, 6 * 32)
    assert len(holes) == 1
    filled, _ = heatmap_regions(_heat(p), ["tumour"], fill_holes=True)
    assert filled[0].n_tiles == 24 and len(filled[0].polygons[0]) == 1
    table = regions_table(regions + filled)
    assert list(table.columns) == ["id", "class", "mean_probability", "n_tiles", "area_mm2", "longest_diameter_mm"]
    with pytest.raises(ParameterError, match="lung"):
        heatmap_regions(_heat(p), ["lung"])


def test_mask_polygons_follow_pixel_edges() -> None:
    m = np.zeros((5, 5), bool)
    m[1:4, 1:4] = True
    (ring,), = mask_polygons(m)
    # marching squares at 0.5: edges half-way between pixel centres, corners cut
    assert abs(ring_area(ring)) == pytest.approx(9 - 4 * 0.125)
    assert ring[:, 0].min() == 1.0 and ring[:, 0].max() == 4.0
    (ring2,), = mask_polygons(m, scale=(4, 2), offset=(100, 10))
    assert ring2[:, 0].min() == 10 + 2 and ring2[:, 1].max() == 100 + 16


def test_geojson_round_trip_in_qupaths_format(tmp_path) -> None:
    p = np.zeros((6, 6, 2))
    p[..., 0] = 1
    p[1:3, 1:4] = (0, 1)
    regions, _ = heatmap_regions(_heat(p), ["tumour"])
    lab = np.zeros((40, 40), np.int32)
    lab[5:10, 5:12] = 1
    lab[20:30, 22:26] = 2
    import pandas as pd

    feats = region_features(regions) + labels_features(
        lab, scale=(2, 2), offset=(100, 200), classes={1: "lymphocyte", 2: "tumour cell"},
        measurements=pd.DataFrame({"id": [1, 2], "area_um2": [35.0, 40.0], "name": ["a", "b"]}))
    path = write_geojson(tmp_path / "objs.geojson", feats)
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    f0 = doc["features"][0]
    assert f0["type"] == "Feature" and f0["geometry"]["type"] == "Polygon"
    assert f0["properties"]["objectType"] == "annotation"
    assert f0["properties"]["classification"]["name"] == "tumour"
    assert len(f0["properties"]["classification"]["color"]) == 3
    assert set(f0["properties"]["measurements"]) == {"mean_probability", "n_tiles", "area_mm2",
                                                     "longest_diameter_mm"}
    ring = f0["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]  # closed, [x, y]
    assert doc["features"][1]["properties"]["objectType"] == "detection"
    assert doc["features"][1]["properties"]["measurements"] == {"id": 1.0, "area_um2": 35.0}
    back = read_geojson(path)
    assert [o.class_name for o in back] == ["tumour", "lymphocyte", "tumour cell"]
    assert [o.object_type for o in back] == ["annotation", "detection", "detection"]
    np.testing.assert_allclose(back[0].polygons[0][0], regions[0].polygons[0][0], atol=1e-3)
    cell = back[1].polygons[0][0]
    # object 1 spans rows 5..9, cols 5..11 of a 2-px grid at (100, 200): x in [210, 224], y in [110, 120]
    assert (cell[:, 0].min(), cell[:, 0].max()) == (210, 224)
    assert (cell[:, 1].min(), cell[:, 1].max()) == (110, 120)


def test_read_geojson_of_qupath_exports(tmp_path) -> None:
    """What QuPath 0.4+ writes (FeatureCollection with UUID ids), 0.2's array with the type in ``id``, and
    a MultiPolygon with a hole."""
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "8b1c5f1e-8e0a-4b8a-9f7e-3d2c1b0a9f8e",
         "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [50, 10], [50, 40], [10, 40], [10, 10]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]},
                        "isLocked": False}},
        {"type": "Feature", "id": "a0", "geometry": {"type": "MultiPolygon", "coordinates": [
            [[[0, 0], [9, 0], [9, 9], [0, 9], [0, 0]], [[2, 2], [4, 2], [4, 4], [2, 2]]],
            [[[20, 20], [30, 20], [30, 30], [20, 20]]]]},
         "properties": {"objectType": "annotation", "classification": {"names": ["Tumor", "Positive"],
                                                                        "color": [1, 2, 3]}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 6]}, "properties": {}}]}
    (tmp_path / "a.geojson").write_text(json.dumps(fc))
    objs = read_geojson(tmp_path / "a.geojson")
    assert [(o.geometry_type, o.class_name, o.color, o.object_type) for o in objs] == [
        ("Polygon", "Tumor", (200, 0, 0), "annotation"), ("MultiPolygon", "Tumor: Positive", (1, 2, 3), "annotation"),
        ("Point", None, None, "annotation")]
    assert len(objs[1].polygons) == 2 and len(objs[1].polygons[0]) == 2
    legacy = [{"type": "Feature", "id": "PathDetectionObject",
               "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
               "properties": {"classification": {"name": "Stroma", "colorRGB": -1}, "measurements": [
                   {"name": "Area", "value": 0.5}]}}]
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    old, = read_geojson(tmp_path / "old.json")
    assert old.object_type == "detection" and old.class_name == "Stroma" and old.measurements == {"Area": 0.5}
    (tmp_path / "bad.geojson").write_text('{"type": "FeatureCollection", "features": [{"geometry": '
                                          '{"type": "Polygon", "coordinates": [[1, 2]]}}]}')
    with pytest.raises(ReaderError, match="bad.geojson, feature 0"):
        read_geojson(tmp_path / "bad.geojson")
    (tmp_path / "no.geojson").write_text("[1, 2")
    with pytest.raises(ReaderError, match="not a readable GeoJSON"):
        read_geojson(tmp_path / "no.geojson")


def test_index_and_qupath_coordinates_are_inverse() -> None:
    ring = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 5.0]])
    np.testing.assert_allclose(from_index(to_index(ring)), ring)
    np.testing.assert_allclose(to_index(ring)[1], [-0.5, 9.5])  # (row, col) pixel-centre index
    with pytest.raises(ParameterError, match="objectType"):
        feature([[ring]], object_type="blob")


def test_heatmap_localises_the_tumour_with_a_tiny_classifier(svs, tiny_tile_classifier, tmp_path) -> None:
    path, _, tissue, truth = svs
    s = open_slide(path)
    mask = detect_tissue(s, max_pixels=200 * 260, min_um=2.0)
    assert tile_grid(s, 32) == ((24, 32), (32.0, 32.0))
    assert tile_grid(s, 8, level=1) == ((24, 32), (32.0, 32.0))
    heat = run(classify_slide_iter(s, tiny_tile_classifier, tile=32, tissue=mask, tta=False))
    assert heat.class_names == ["normal", "tumour"]
    np.testing.assert_array_equal(heat.classified, tissue)  # glass tiles skipped
    pred = heat.class_map() == 1
    assert (pred & truth).sum() / (pred | truth).sum() >= 0.95
    table = heat.table()
    assert list(table.columns) == ["y0", "x0", "class", "p_normal", "p_tumour"] and len(table) == tissue.sum()
    assert table[["y0", "x0"]].min().tolist() == [3 * 32, 4 * 32]
    # the heat map's geometry: tile (i, j) centred on the centre of its 32 x 32 level-0 block
    np.testing.assert_allclose(heat.geometry.index_to_world([[1, 2]]), [[(32 + 15.5) * 0.5, (64 + 15.5) * 0.5]])
    regions, _ = heatmap_regions(heat, ["tumour"])
    assert len(regions) == 1 and regions[0].n_tiles == pytest.approx(truth.sum(), abs=3)
    from napari_medseg.io.tiff import read_tiff

    v = read_tiff(write_heatmap_tiff(tmp_path / "h.ome.tif", heat))[0]
    assert v.axes == "CYX" and v.shape == (2, 24, 32) and v.channel_names == ["normal", "tumour"]
    assert v.scale == pytest.approx((16.0, 16.0)) and v.units == ("µm", "µm")
