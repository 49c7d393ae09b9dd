"""``medseg classify SLIDE --model MODEL_DIR --tiles PX -o OUT`` end to end on a small tifffile pyramid."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_medseg.cli import main
from tests.slide_data import mosaic, tile_pixels, write_ome_pyramid


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    tissue = np.zeros((16, 20), bool)
    tissue[2:14, 2:18] = True
    truth = np.zeros_like(tissue)
    truth[4:9, 5:11] = True  # 30 tumour tiles
    img = mosaic(truth, tissue, seed=3)
    return write_ome_pyramid(tmp_path_factory.mktemp("slide") / "case 7.ome.tif", img, mpp=0.5, factors=(2, 4, 8),
                             tile=128), tissue, truth


def test_classify_slide_writes_tiles_heatmap_and_regions(slide, tiny_tile_classifier, tmp_path, capsys) -> None:
    path, tissue, truth = slide
    out = tmp_path / "out"
    rc = main(["classify", str(path), "--model", str(tiny_tile_classifier), "--tiles", "32", "-o", str(out),
               "--no-tta", "--region-class", "tumour", "-q"])
    assert rc == 0
    assert f"{int(tissue.sum())} of 320 tile(s) classified, 1 region(s)" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "case 7_tiles.csv").open()))
    assert list(rows[0]) == ["y0", "x0", "class", "p_normal", "p_tumour"]
    assert len(rows) == tissue.sum()
    got = {(int(r["y0"]) // 32, int(r["x0"]) // 32) for r in rows if r["class"] == "tumour"}
    want = set(zip(*np.nonzero(truth), strict=True))
    assert len(got & want) / len(got | want) >= 0.9
    assert all(int(r["y0"]) % 32 == 0 and int(r["x0"]) % 32 == 0 for r in rows)
    np.testing.assert_allclose([float(r["p_normal"]) + float(r["p_tumour"]) for r in rows], 1.0, atol=1e-6)

    from napari_medseg.io.tiff import read_tiff

    heat = read_tiff(out / "case 7_heatmap.ome.tif")[0]
    assert heat.channel_names == ["normal", "tumour"] and heat.shape == (2, 16, 20)
    assert heat.scale == pytest.approx((16.0, 16.0)) and heat.units == ("µm", "µm")  # 32 px x 0.5 µm

    doc = json.loads((out / "case 7_regions.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 1
    props = doc["features"][0]["properties"]
    assert props["objectType"] == "annotation" and props["classification"]["name"] == "tumour"
    assert props["measurements"]["area_mm2"] == pytest.approx(props["measurements"]["n_tiles"] * 0.016**2)
    xy = np.asarray(doc["features"][0]["geometry"]["coordinates"][0])
    assert xy[:, 0].min() >= 5 * 32 - 32 and xy[:, 0].max() <= 11 * 32 + 32  # level-0 px around the tumour
    table = list(csv.DictReader((out / "case 7_regions.csv").open()))
    assert [r["class"] for r in table] == ["tumour"] and float(table[0]["longest_diameter_mm"]) > 0


def test_classify_slide_bad_input_is_one_clear_line(slide, tiny_tile_classifier, tmp_path, capsys) -> None:
    path, _, _ = slide
    assert main(["classify", str(path), "--model", str(tiny_tile_classifier), "--tiles", "4096",
                 "-o", str(tmp_path / "o")]) == 2
    assert "do not fit in level 0" in capsys.readouterr().err
    assert main(["classify", str(path), "--model", str(tiny_tile_classifier), "--tiles", "32", "--level", "9",
                 "-o", str(tmp_path / "o")]) == 2
    assert "level 9 does not exist" in capsys.readouterr().err


def test_plain_image_classification_still_writes_one_csv(tiny_tile_classifier, tmp_path) -> None:
    import tifffile

    rng = np.random.default_rng(1)
    files = []
    for k in ("normal", "tumour"):
        files.append(tmp_path / f"{k}.tif")
        tifffile.imwrite(files[-1], tile_pixels(k, rng), photometric="rgb")
    out = tmp_path / "t.csv"
    assert main(["classify", *map(str, files), "--model", str(tiny_tile_classifier), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["class"] for r in rows] == ["normal", "tumour"]


def test_a_slide_of_glass_classifies_nothing_and_says_why(tiny_tile_classifier, tmp_path, capsys) -> None:
    rng = np.random.default_rng(2)
    glass = np.clip(np.array((222, 226, 240), float) + rng.normal(0, 3, (512, 640, 3)), 0, 255).astype(np.uint8)
    path = write_ome_pyramid(tmp_path / "glass.ome.tif", glass, mpp=0.5, factors=(2, 4, 8), tile=128)
    out = tmp_path / "out"
    assert main(["classify", str(path), "--model", str(tiny_tile_classifier), "--tiles", "32", "-o", str(out),
                 "--no-tta", "-q"]) == 0
    cap = capsys.readouterr()
    assert "0 of 320 tile(s) classified, 0 region(s)" in cap.out
    assert "glass.ome.tif: no tissue found (glass only?), nothing classified; --no-tissue" in cap.err
    assert list(csv.DictReader((out / "glass_tiles.csv").open())) == []
