"""The labels store of a block-wise job opens in napari as a lazy multiscale Labels layer over its image.

Set ``MEDSEG_SCREENSHOT_DIR`` to keep the screenshot (default: the test's tmp_path).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_medseg.batch import blockwise as bw  # noqa: E402
from napari_medseg.batch import store as st  # noqa: E402
from napari_medseg.batch.plan import SourceSpec  # noqa: E402
from napari_medseg.geometry import Geometry  # noqa: E402
from napari_medseg.progress import run  # noqa: E402
from tests.core.synthetic_nuclei import nuclei_image  # noqa: E402

pytestmark = pytest.mark.napari


def test_labels_store_is_a_multiscale_labels_layer(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setattr(st, "SMALLEST_LEVEL", 128)
    img = nuclei_image((300, 380), 90)
    g = Geometry.from_scale("YX", (0.5, 0.5), units="µm")
    run(bw.segment_blockwise_iter(SourceSpec(array=img, geometry=g), str(tmp_path), model="nuclei", block_size=192,
                                  chunk=64, max_object_size=32, device="cpu", detect=False))
    levels, geometry, rec = st.open_labels(tmp_path / "image.zarr")
    viewer = make_napari_viewer(show=True)  # shown: the canvas renders, the screenshot is real
    image = viewer.add_image(img, **g.napari_kwargs())
    layer = viewer.add_labels(levels, multiscale=True, name="nuclei", **geometry.napari_kwargs())
    assert layer.multiscale and len(layer.data) == 3
    assert type(layer.data[0]).__module__.startswith("zarr")  # read chunk by chunk, never loaded whole
    np.testing.assert_allclose(layer.scale, image.scale)
    np.testing.assert_allclose(layer.data_to_world((299, 379)), image.data_to_world((299, 379)))
    viewer.reset_view()
    shot_dir = Path(os.environ.get("MEDSEG_SCREENSHOT_DIR") or tmp_path)
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = viewer.screenshot(str(shot_dir / "medseg_batch_labels.png"), canvas_only=True, flash=False)
    # the labels are drawn over the image: many distinct colours, not just the grey image
    colours = np.unique(shot[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 300
    assert layer.get_value((150, 190), world=False) is not None
