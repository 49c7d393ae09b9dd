"""3D objects from a 2D model (planes along Z, Y, X): exact answers with a per-pixel network, the shipped model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

import napari_medseg as ms
from napari_medseg.errors import ModelError, ParameterError
from napari_medseg.inference import ortho3d
from napari_medseg.inference.dispatch import segment_any_iter
from napari_medseg.inference.ortho3d import (
    min_volume_from_area,
    segment_3d_from_2d_iter,
)
from napari_medseg.inference.segment import SegmentResult, segment_iter
from napari_medseg.models import registry
from napari_medseg.models.testing import make_random_model
from napari_medseg.progress import Cancelled, CancelToken, run

# ----------------------------------------------------------------- helpers

SHIPPED = registry.shipped_models_dir()  # before the autouse fixture hides it


class PixelNet(torch.nn.Module):
    """Per-pixel stand-in for a 2D U-Net: input x -> fg logit 60 (x - 0.05), distance logit 60 (x - 0.45)."""

    def __init__(self, kind="instance"):
        super().__init__()
        self.kind = kind
        self.divisor = 4
        self.depth = 3

    def forward(self, x):
        x = x[:, :1]
        if self.kind == "instance":
            return torch.cat([60 * (x - 0.05), 60 * (x - 0.45)], dim=1)
        return torch.cat([torch.zeros_like(x), 60 * (x - 0.5)], dim=1)


@pytest.fixture(autouse=True)
def isolated_models(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user-models"))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")


@pytest.fixture
def pixel_model(tmp_path, serve_network):
    """A 2D model folder whose network is :class:`PixelNet` (no input normalisation)."""

    def make(kind="instance", in_channels=1, **postprocess):
        folder = make_random_model(tmp_path / f"pix-{kind}-{in_channels}", name=f"pix-{kind}", kind=kind,
                                   in_channels=in_channels, depth=3)
        card = json.loads((folder / "model.json").read_text())
        card["input"]["normalization"] = {"kind": "none"}
        card["output"]["postprocess"] = {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_size": 16, **postprocess}
        (folder / "model.json").write_text(json.dumps(card))
        net = PixelNet(kind)
        serve_network(folder, net)
        return folder

    return make


#: (centre z, y, x, radius) of the test balls: two touching pairs, three apart, one small
BALLS = [(10, 12, 12, 7), (10, 12, 26, 7),  # touching along X (gap 0)
         (27, 40, 14, 6), (27, 40, 26, 6),  # touching along X
         (30, 14, 48, 8), (12, 46, 46, 6), (30, 50, 40, 5)]


def ball_maps(shape=(40, 64, 64), balls=BALLS):
    """Ground-truth labels of (possibly touching) balls and their per-ball normalised 3D distance map."""
    zz, yy, xx = np.indices(shape)
    gt = np.zeros(shape, np.int32)
    for i, (cz, cy, cx, r) in enumerate(balls):
        d2 = (zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2
        gt[(d2 <= r * r) & (gt == 0)] = i + 1  # first ball keeps a shared voxel
    dist = np.zeros(shape, np.float32)
    for i in range(1, gt.max() + 1):
        m = gt == i
        d = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1, 1:-1]
        dist[m] = d[m] / d.max()
    return gt, dist


def iou_to_each(gt: np.ndarray, pred: np.ndarray) -> list[float]:
    """Best IoU of a predicted object to each true object."""
    out = []
    for i in range(1, gt.max() + 1):
        m = gt == i
        ids, n = np.unique(pred[m], return_counts=True)
        n, ids = n[ids > 0], ids[ids > 0]
        if not len(ids):
            out.append(0.0)
            continue
        j = ids[np.argmax(n)]
        p = pred == j
        out.append(float((m & p).sum() / (m | p).sum()))
    return out


# ----------------------------------------------------------------- tests


def test_min_volume_from_area():
    assert min_volume_from_area(16) == pytest.approx(48.144, abs=1e-3)
    assert min_volume_from_area(np.pi * 9) == pytest.approx(4 / 3 * np.pi * 27)
    assert min_volume_from_area(0) == 0


def test_balls_touching_pairs_are_separated(pixel_model):
    folder = pixel_model()
    gt, dist = ball_maps()
    steps = []
    res = run(segment_3d_from_2d_iter(dist, str(folder), return_probabilities=True), steps.append)
    assert isinstance(res, SegmentResult)
    assert res.labels.shape == gt.shape and res.labels.dtype == np.uint16
    assert res.info["n_labels"] == len(BALLS) == res.labels.max()
    assert np.array_equal(np.unique(res.labels), np.arange(len(BALLS) + 1))
    assert min(iou_to_each(gt, res.labels)) > 0.9
    assert res.info["do_3d"] and not res.info["z_resampled"] and res.info["anisotropy"] == 1.0
    # seeds: (m + 2 s) / 3 with m ~ 1 at the plane disks' centres (ideal maps) and the card's s = 0.5
    assert res.info["plane_centre_distance"] == pytest.approx(1.0, abs=1e-3)
    assert res.info["seed_threshold_3d"] == pytest.approx(2 / 3, abs=1e-3)
    # seed_threshold_3d is used as is: above every distance there are no seeds and touching pairs merge
    merged = run(segment_3d_from_2d_iter(dist, str(folder), postprocess={"seed_threshold_3d": 1.0}))
    assert merged.info["seed_threshold_3d"] == 1.0 and merged.labels.max() == len(BALLS) - 2
    # each orientation sees the same maps, so their mean is the truth
    assert res.probabilities.shape == (2, *gt.shape) and res.probabilities.dtype == np.float16
    assert np.array_equal(res.probabilities[0] > 0.5, gt > 0)
    # one progress sequence: monotonic, ends at its total, runs along Z, Y and X
    assert [p.step for p in steps] == sorted(p.step for p in steps)
    assert len({p.total for p in steps}) == 1 and steps[-1].step == steps[-1].total
    assert {p.info.get("axis") for p in steps} >= {"Z", "Y", "X"}
    assert {p.info["stage"] for p in steps} >= {"load", "resample", "network", "objects3d", "write"}


def test_plane_by_plane_does_not_give_3d_objects(pixel_model):
    """The same model without do_3d labels each plane apart (the baseline do_3d improves on)."""
    folder = pixel_model()
    _, dist = ball_maps()
    planes = run(segment_iter(dist, str(folder))).labels
    assert planes.max() > 3 * len(BALLS)


def test_anisotropic_stack_is_resampled_and_returned_on_its_grid(pixel_model):
    folder = pixel_model()
    gt, dist = ball_maps((40, 64, 64))
    gt2, dist2 = gt[::2], dist[::2]  # Z sampled every 2 voxels
    res = run(segment_any_iter(dist2, str(folder), scale=(2.0, 1.0, 1.0), do_3d=True))
    assert res.labels.shape == gt2.shape == (20, 64, 64)
    assert res.info["z_resampled"] and res.info["work_shape"] == (40, 64, 64)
    assert res.info["anisotropy"] == pytest.approx(2.0)
    assert res.labels.max() == len(BALLS)
    assert min(iou_to_each(gt2, res.labels)) > 0.9
    # within 5 % of isotropic: no resampling
    near = run(segment_any_iter(dist2, str(folder), scale=(1.04, 1.0, 1.0), do_3d=True))
    assert not near.info["z_resampled"] and near.info["work_shape"] == (20, 64, 64)


def test_units_of_different_axes_are_compared_in_micrometres(pixel_model):
    folder = pixel_model()
    _, dist = ball_maps((40, 64, 64))
    res = run(segment_3d_from_2d_iter(dist[::2], str(folder), scale=(0.002, 1.0, 1.0), units=("mm", "µm", "µm")))
    assert res.info["anisotropy"] == pytest.approx(2.0) and res.info["work_shape"] == (40, 64, 64)
    with pytest.raises(ParameterError, match="cannot compare"):
        run(segment_3d_from_2d_iter(dist, str(folder), scale=(1, 1, 1), units=("s", "µm", "µm")))


def test_min_size_becomes_a_ball_volume(pixel_model):
    """Card min_size 16 px -> 48 voxels: a radius-2 ball (33 voxels) is dropped; min_volume overrides."""
    folder = pixel_model()
    balls = [(10, 12, 12, 6), (10, 30, 30, 2)]
    gt, dist = ball_maps((20, 40, 40), balls)
    assert (gt == 2).sum() == 33
    res = run(segment_3d_from_2d_iter(dist, str(folder)))
    assert res.info["min_volume_voxels"] == pytest.approx(48.144, abs=1e-3)
    assert res.labels.max() == 1 and np.array_equal(res.labels > 0, gt == 1)
    keep = run(segment_3d_from_2d_iter(dist, str(folder), postprocess={"min_volume": 20}))
    assert keep.labels.max() == 2 and np.array_equal(keep.labels > 0, gt > 0)


def test_axis_order_and_channels_follow_the_input(pixel_model):
    _, dist = ball_maps((24, 40, 48), [(8, 12, 12, 6), (14, 26, 30, 7)])
    one = pixel_model()
    ref = run(segment_3d_from_2d_iter(dist, str(one))).labels
    assert ref.max() == 2
    yxz = run(segment_3d_from_2d_iter(dist.transpose(1, 2, 0), str(one), axes="YXZ")).labels
    assert yxz.shape == (40, 48, 24) and np.array_equal(yxz.transpose(2, 0, 1), ref)
    two = pixel_model(in_channels=2)  # channel 0 carries the signal (PixelNet reads it)
    zcyx = np.stack([dist, np.zeros_like(dist)], axis=1)
    lab = run(segment_3d_from_2d_iter(zcyx, str(two), axes="ZCYX")).labels
    assert lab.shape == dist.shape and np.array_equal(lab, ref)


def test_out_is_written_and_api_passes_do_3d(pixel_model):
    folder = pixel_model()
    gt, dist = ball_maps((24, 40, 48), [(8, 12, 12, 6), (14, 26, 30, 7)])
    out = np.zeros(gt.shape, np.uint32)
    res = run(segment_any_iter(dist, str(folder), do_3d=True, out=out))
    assert res.labels is out and out.max() == 2
    labels = ms.segment(dist, str(folder), do_3d=True)
    assert np.array_equal(labels, out)


def test_cancel_raises_and_leaves_out_untouched(pixel_model):
    folder = pixel_model()
    _, dist = ball_maps((24, 40, 48), [(8, 12, 12, 6)])
    for stop_at in (0, 1, 5, 150):  # before loading, after resampling, in the Z pass, in the Y pass
        token = CancelToken()
        out = np.full(dist.shape, 7, np.uint16)
        gen = segment_3d_from_2d_iter(dist, str(folder), cancel=token, out=out)
        seen = []
        with pytest.raises(Cancelled):
            for p in gen:
                seen.append(p.step)
                if p.step >= stop_at:
                    token.cancel()
        assert seen[-1] >= stop_at and seen[-1] < 302
        assert (out == 7).all()
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run(segment_3d_from_2d_iter(dist, str(folder), cancel=token))


def test_bad_inputs_raise(pixel_model, tmp_path, monkeypatch):
    inst = pixel_model()
    sem = pixel_model("semantic")
    three = make_random_model(tmp_path / "m3d", name="m3d", dims=3)
    _, dist = ball_maps((12, 24, 24), [(6, 12, 12, 5)])
    with pytest.raises(ParameterError, match="need a Z axis"):
        run(segment_any_iter(dist[0], str(inst), do_3d=True))
    with pytest.raises(ParameterError, match="need a Z axis"):
        run(segment_any_iter(np.zeros((24, 24, 3), np.uint8), str(inst), do_3d=True))  # RGB 2D
    with pytest.raises(ParameterError, match="at least 2 planes"):
        run(segment_3d_from_2d_iter(dist[:1], str(inst)))
    with pytest.raises(ModelError, match="'semantic' model"):
        run(segment_3d_from_2d_iter(dist, str(sem)))
    with pytest.raises(ModelError, match="already 3D"):
        run(segment_3d_from_2d_iter(dist, str(three)))
    with pytest.raises(ModelError, match="takes 1-channel"):
        run(segment_3d_from_2d_iter(np.stack([dist] * 2, 1), str(inst), axes="ZCYX"))
    with pytest.raises(ParameterError, match="one value per spatial axis"):
        run(segment_3d_from_2d_iter(dist, str(inst), scale=(1.0, 1.0)))
    with pytest.raises(ParameterError, match="positive"):
        run(segment_3d_from_2d_iter(dist, str(inst), scale=(0.0, 1.0, 1.0)))
    with pytest.raises(ParameterError, match=r"seed_threshold_3d must be in \[0, 1\]"):
        run(segment_3d_from_2d_iter(dist, str(inst), postprocess={"seed_threshold_3d": 1.5}))
    with pytest.raises(ParameterError, match="must be >= 0"):
        run(segment_3d_from_2d_iter(dist, str(inst), postprocess={"min_volume": -1}))
    with pytest.raises(ParameterError, match="out has shape"):
        run(segment_3d_from_2d_iter(dist, str(inst), out=np.zeros((3, 3, 3), np.uint16)))
    monkeypatch.setattr(ortho3d, "MAX_VOXELS", 12 * 24 * 24 - 1)
    with pytest.raises(ParameterError, match="plane by plane"):
        run(segment_3d_from_2d_iter(dist, str(inst)))
    monkeypatch.setattr(ortho3d, "MAX_VOXELS", 12 * 24 * 24)  # fits as is, but not once Z is upsampled x2
    with pytest.raises(ParameterError, match=r"isotropic grid \(24, 24, 24\)"):
        run(segment_3d_from_2d_iter(dist, str(inst), scale=(2.0, 1.0, 1.0)))


def nuclei_stack(shape=(48, 96, 96), seed=3):
    """Blurred bright ellipsoids (6 nuclei, radii ~6 in Z and ~9 in Y/X) on a dark noisy background."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    gt = np.zeros(shape, np.int32)
    centres = [(14, 24, 24), (30, 26, 68), (20, 70, 28), (34, 72, 72), (24, 48, 48), (12, 74, 58)]
    for i, (cz, cy, cx) in enumerate(centres):
        rz, ry, rx = rng.uniform(6, 8), rng.uniform(8, 10), rng.uniform(8, 10)
        gt[((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = i + 1
    img = ndi.gaussian_filter((gt > 0) * rng.uniform(80, 120), 1.5) + rng.normal(10, 3, shape)
    return gt, img.astype(np.float32)


def test_shipped_nuclei_model_gives_3d_nuclei(monkeypatch):
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: SHIPPED)
    gt, img = nuclei_stack()
    res = run(segment_any_iter(img, "nuclei", do_3d=True))
    lab = res.labels
    assert lab.shape == img.shape and res.model_name == "nuclei"
    assert abs(int(lab.max()) - int(gt.max())) <= 1
    for i in range(1, int(lab.max()) + 1):
        z = np.flatnonzero((lab == i).any(axis=(1, 2)))
        assert len(z) >= 5, f"object {i} spans only {len(z)} planes"
    assert min(iou_to_each(gt, lab)) > 0.5
