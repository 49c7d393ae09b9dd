"""Instance representations (distance, contour, star): targets, post-processing, the tiled engine, TTA."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medseg.analysis.metrics import average_precision
from napari_medseg.errors import ModelError, ParameterError
from napari_medseg.inference.representations import Representation, representation_of
from napari_medseg.inference.segment import segment_iter
from napari_medseg.inference.star import instances_from_star
from napari_medseg.models import registry
from napari_medseg.models.spec import ModelCard
from napari_medseg.models.testing import make_random_model
from napari_medseg.progress import run
from napari_medseg.training.representations import representation_for
from napari_medseg.training.targets import boundary_target, star_distances


def touching_disks(shape=(160, 200), n=70, seed=0, gap=-3.0):
    """Disks of radius 5-9 that may overlap by ``-gap`` pixels (later ones drawn over earlier ones)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    yy, xx = np.indices(shape)
    placed: list[tuple[float, float, float]] = []
    for _ in range(20000):
        if len(placed) == n:
            break
        r = rng.uniform(5, 9)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        if any((cy - y) ** 2 + (cx - x) ** 2 < (r + q + gap) ** 2 for y, x, q in placed):
            continue
        placed.append((cy, cx, r))
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = len(placed)
    # ids of fully covered disks disappear; renumber
    _, inv = np.unique(lab, return_inverse=True)
    return inv.reshape(shape).astype(np.int32)


def ap(true, pred):
    return average_precision(true, pred, [0.5, 0.75])


@pytest.mark.parametrize("kind", ["distance", "contour", "star"])
def test_targets_give_back_the_objects(kind):
    """Perfect maps (the training targets) -> the objects, touching ones included."""
    lab = touching_disks()
    rep = representation_for(kind)
    object.__setattr__(rep, "ray_stride", 1)  # every pixel's rays, as a network predicts them
    maps = rep.targets(lab)[: rep.n_channels]
    assert maps.shape == (rep.n_channels, *lab.shape) and maps.dtype == np.float32
    a50, a75 = ap(lab, rep.rep.instances(maps, min_size=4))
    assert a50 > 0.95 and a75 > 0.9


def test_star_distances_of_a_square():
    lab = np.zeros((21, 21), np.int32)
    lab[5:16, 5:16] = 1  # 11 x 11 square, centre (10, 10)
    angles = Representation("star", n_rays=4).angles()  # 0, 90, 180, 270 degrees: +col, +row, -col, -row
    d = star_distances(lab, angles, ray_max=64)
    assert d.shape == (4, 21, 21)
    np.testing.assert_allclose(d[:, 10, 10], [5.5, 5.5, 5.5, 5.5])
    np.testing.assert_allclose(d[:, 5, 5], [10.5, 10.5, 0.5, 0.5])
    assert (d[:, lab == 0] == 0).all()
    assert star_distances(lab, angles, ray_max=3)[:, 10, 10].max() == 3
    sub = star_distances(lab, angles, ray_max=64, stride=2)
    assert (sub[:, ::2, ::2] == d[:, ::2, ::2]).all() and (sub[:, 1::2] == 0).all()
    odd = star_distances(lab, angles, ray_max=64, stride=2, offset=(1, 0))
    assert (odd[:, 1::2, ::2] == d[:, 1::2, ::2]).all() and (odd[:, ::2] == 0).all()
    with pytest.raises(ValueError, match="offset"):
        star_distances(lab, angles, ray_max=64, stride=2, offset=(2, 0))


def test_star_targets_train_every_pixel_phase():
    """The ray grid's phase is drawn per patch: over patches every pixel gets ray targets.

    A fixed phase trained only the even pixels of a network that predicts
    every pixel; the others' rays were ~4x too long (a val AP@0.5 of 0.1).
    """
    lab = np.zeros((24, 24), np.int32)
    lab[4:20, 4:20] = 1
    trep = representation_for("star", n_rays=8)
    full = star_distances(lab, trep.rep.angles(), trep.rep.ray_max) / np.float32(trep.rep.ray_max)
    rng = np.random.default_rng(0)
    covered = np.zeros(lab.shape, bool)
    for _ in range(24):
        t = trep.targets(lab, rng)
        mask = t[-1] > 0
        assert mask.sum() == lab.size // 4
        np.testing.assert_array_equal(t[1:-1][:, mask], full[:, mask])
        covered |= mask
    assert covered.all()
    assert (trep.targets(lab)[-1][::2, ::2] == 1).all()  # no rng: phase 0


def test_boundary_target_separates_touching_objects():
    lab = np.zeros((10, 12), np.int32)
    lab[2:8, 1:6], lab[2:8, 6:11] = 1, 2
    b = boundary_target(lab)
    assert b[4, 5] == 1 and b[4, 6] == 1 and b[4, 3] == 0 and b[0, 0] == 0


def test_star_nms_keeps_the_more_probable_of_two_overlapping_polygons():
    angles = Representation("star", n_rays=16).angles()
    prob = np.zeros((40, 60), np.float32)
    rays = np.zeros((16, 40, 60), np.float32)
    # radius-8 polygons: the 2nd centre lies outside the 1st but ~32 % of its area overlaps it
    prob[20, 20], prob[20, 29], prob[20, 45], prob[21, 21] = 0.9, 0.8, 0.7, 0.85
    rays[:, 20, 20] = rays[:, 20, 29] = rays[:, 20, 45] = rays[:, 21, 21] = 8 / 64
    lab = instances_from_star(prob, rays, ray_max=64, angles=angles, prob_threshold=0.5, nms_threshold=0.2,
                              min_size=4)
    assert lab.max() == 2 and lab[20, 20] == 1 and lab[20, 45] == 2
    lab = instances_from_star(prob, rays, ray_max=64, angles=angles, prob_threshold=0.5, nms_threshold=0.5,
                              min_size=4)
    # a looser threshold keeps the overlapping one (its free pixels); a centre inside a kept polygon never counts
    assert lab.max() == 3 and lab[20, 20] == 1 and lab[20, 30] == 2 and lab[20, 45] == 3


def test_flip_permutation_matches_mirrored_targets():
    """Rays of a mirrored image, mirrored back and re-indexed, are the rays of the image (TTA correctness)."""
    lab = touching_disks((64, 80), 15, seed=3, gap=1)
    rep = Representation("star", n_rays=8)
    ang = rep.angles()
    ref = star_distances(lab, ang, 64)
    for dims in ((-1,), (-2,), (-2, -1)):
        back = np.flip(star_distances(np.flip(lab, dims).copy(), ang, 64), dims)
        perm = rep.flip_permutation(dims)
        fixed = back[perm[1:] - 1]  # perm indexes the maps; channel 0 is the probability
        # nearest-pixel walks round .5 to even, so a few mirrored rays differ by one step
        assert np.mean(np.abs(fixed - ref) <= 1.0) > 0.97
        assert np.mean(np.abs(back - ref) <= 1.0) < 0.9  # without the re-indexing they do not match


def test_representation_of_cards():
    base = {"name": "m", "description": "", "architecture": {"type": "unet", "dims": 2, "in_channels": 1,
                                                             "out_channels": 2, "base_channels": 8, "depth": 3},
            "input": {"channels": 1}, "output": {"kind": "instance"}, "format": "napari-medseg-model/1"}
    assert representation_of(ModelCard.from_dict(base)).kind == "distance"  # old cards
    star = json.loads(json.dumps(base))
    star["architecture"]["out_channels"] = 33
    star["output"]["representation"] = {"kind": "star", "n_rays": 32, "ray_max": 50}
    rep = representation_of(ModelCard.from_dict(star))
    assert rep.kind == "star" and rep.n_channels == 33 and rep.ray_max == 50
    star["architecture"]["out_channels"] = 3
    with pytest.raises(ModelError, match="33 output channels"):
        representation_of(ModelCard.from_dict(star))
    with pytest.raises(ModelError, match="unknown instance representation"):
        Representation("flows")


class TargetNet(torch.nn.Module):
    """Stand-in network: the input tile *is* a label image; outputs the representation's targets as logits."""

    def __init__(self, rep):
        super().__init__()
        self.rep = representation_for(rep.kind, n_rays=rep.n_rays or 32)
        object.__setattr__(self.rep, "ray_stride", 1)
        self.divisor = 4
        self.depth = 3

    def forward(self, x):
        out = []
        for lab in np.rint(x[:, 0].float().numpy()).astype(np.int32):
            t = np.clip(self.rep.targets(lab)[: self.rep.n_channels], 1e-4, 1 - 1e-4)
            out.append(np.log(t / (1 - t)))
        return torch.from_numpy(np.stack(out))


@pytest.fixture
def target_model(tmp_path, monkeypatch, serve_network):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user-models"))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")

    def make(kind):
        rep = Representation(kind, n_rays=16 if kind == "star" else 0)
        folder = make_random_model(tmp_path / f"t-{kind}", name=f"t-{kind}", kind="instance", depth=3)
        card = json.loads((folder / "model.json").read_text())
        card["input"]["normalization"] = {"kind": "none"}
        card["output"]["channels"] = rep.channels
        card["output"]["representation"] = rep.to_card()
        card["output"]["postprocess"] = {**rep.postprocess_defaults, "min_size": 4}
        card["architecture"]["out_channels"] = rep.n_channels
        (folder / "model.json").write_text(json.dumps(card))
        from napari_medseg.models.spec import save_model
        from napari_medseg.models.unet import UNet

        save_model(folder, UNet(1, rep.n_channels, dims=2, base_channels=4, depth=3), ModelCard.from_dict(card))
        serve_network(folder, TargetNet(rep))
        return folder

    return make


@pytest.mark.parametrize("kind", ["contour", "star"])
def test_engine_tiles_and_blocks(target_model, kind):
    """Through segment_iter: objects found; small tiles and blocks give the same objects away from block edges."""
    folder = target_model(kind)
    lab = touching_disks((150, 190), 60, seed=4)
    img = lab.astype(np.float32)
    pp = {"max_object_size": 24}
    one = run(segment_iter(img, str(folder), tile_size=96, postprocess=pp, return_probabilities=True))
    many = run(segment_iter(img, str(folder), tile_size=64, postprocess={**pp, "block_size": 64}))
    rep = Representation(kind, n_rays=16 if kind == "star" else 0)
    assert one.probabilities.shape == (rep.n_channels, *lab.shape)
    assert one.info["blocks"] == 1 and many.info["blocks"] == 3 * 3
    assert ap(lab, np.asarray(one.labels))[0] > 0.95
    whole, tiled = np.asarray(one.labels), np.asarray(many.labels)
    border = np.zeros(lab.shape, bool)
    for y in np.linspace(0, 150, 4).round().astype(int):
        border[max(0, y - 1):y + 1] = True
    for x in np.linspace(0, 190, 4).round().astype(int):
        border[:, max(0, x - 1):x + 1] = True
    inner = [w for w in np.unique(whole)[1:] if not border[whole == w].any()]
    assert len(inner) > 0.3 * whole.max()
    for w in inner:
        t = np.bincount(tiled[whole == w]).argmax()
        assert t > 0 and np.array_equal(whole == w, tiled == t)


def test_star_tta_reindexes_the_rays(target_model):
    folder = target_model("star")
    lab = touching_disks((96, 128), 25, seed=5)
    img = lab.astype(np.float32)
    plain = run(segment_iter(img, str(folder), tile_size=96, return_probabilities=True))
    tta = run(segment_iter(img, str(folder), tile_size=96, tta=True, return_probabilities=True))
    assert ap(lab, np.asarray(plain.labels))[0] > 0.95 and ap(lab, np.asarray(tta.labels))[0] > 0.95
    inside = lab > 0
    a, b = plain.probabilities[1:, inside].astype(np.float32), tta.probabilities[1:, inside].astype(np.float32)
    # the mirrored passes' rays land on the right channels: within a pixel (1/64) of the plain maps
    assert np.mean(np.abs(a - b) < 1.5 / 64) > 0.95


def test_do_3d_refuses_a_star_model(target_model):
    from napari_medseg.inference.ortho3d import segment_3d_from_2d_iter

    folder = target_model("star")
    with pytest.raises(ModelError, match="2D only"):
        run(segment_3d_from_2d_iter(np.zeros((4, 32, 32), np.float32), str(folder)))


def test_finetuning_a_contour_base_keeps_its_foreground_and_distance_head(target_model):
    from napari_medseg.models.spec import load_model
    from napari_medseg.training.finetune.model import load_base, output_section

    folder = target_model("contour")
    base_net, _ = load_model(folder)
    net, card, _, new_head = load_base(str(folder), "instance", 1, False, 2, seed=0)
    assert not new_head and card.architecture["out_channels"] == 2 and "representation" not in card.output
    assert torch.equal(net.head.weight, base_net.head.weight[:2]) and torch.equal(net.head.bias, base_net.head.bias[:2])
    out = output_section(card, "instance", ["background", "nucleus"])
    assert out["channels"] == ["foreground", "distance"] and "boundary_weight" not in out["postprocess"]


class UnderconfidentStarNet(TargetNet):
    """A star network early in training: exact rays, object probability peaking at 0.25 (see validate)."""

    def __init__(self, rep):
        super().__init__(rep)
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # validate finds the device from the parameters

    def forward(self, x):
        out = super().forward(x)
        p = torch.sigmoid(out[:, :1]) * 0.25
        return torch.cat([torch.log(p / (1 - p)), out[:, 1:]], dim=1)


def test_validation_tries_star_thresholds_below_its_probability_peak():
    """Checkpoint selection must see an underconfident star network's objects ('auto' thresholds start at 0.1)."""
    from napari_medseg.training.data import Sample
    from napari_medseg.training.loop import SegmentationTrainConfig, validate

    rep = Representation("star", n_rays=16)
    card = ModelCard.from_dict({
        "name": "s", "description": "", "format": "napari-medseg-model/1",
        "architecture": {"type": "unet", "dims": 2, "in_channels": 1, "out_channels": rep.n_channels,
                         "base_channels": 4, "depth": 3},
        "input": {"channels": 1, "normalization": {"kind": "none"}},
        "output": {"kind": "instance", "channels": rep.channels, "representation": rep.to_card(),
                   "postprocess": {**rep.postprocess_defaults, "min_size": 4}}})
    lab = touching_disks((96, 128), 20, seed=5, gap=1)
    samples = [Sample(image=lab.astype(np.float32), labels=lab, name="disks", group="g")]
    net = UnderconfidentStarNet(rep)
    assert SegmentationTrainConfig(steps=1).val_seed_thresholds == "auto"
    auto = validate(net, card, samples, seed_thresholds="auto")
    old_grid = validate(net, card, samples, seed_thresholds=(0.3, 0.4, 0.5, 0.6))
    assert old_grid["ap50"] == 0.0  # nothing above 0.3: the checkpoint looked worthless
    assert auto["ap50"] > 0.9 and auto["prob_threshold"] <= 0.2
    with pytest.raises(ParameterError, match="auto"):
        validate(net, card, samples, seed_thresholds="best")
