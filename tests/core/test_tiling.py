"""Tiled inference: plan, mirror padding, and exactness against whole-image inference."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from napari_medseg.errors import ParameterError
from napari_medseg.inference.tiling import (
    ArraySource,
    TileGrid,
    reflect_index,
    round_up,
    unet_receptive_radius,
)


def _coverage(grid: TileGrid) -> np.ndarray:
    cov = np.zeros(grid.shape, int)
    for t in grid:
        cov[t.core] += 1
    return cov


@pytest.mark.parametrize(
    "shape,tile,halo,div",
    [((2048, 2048), 1024, 56, 8), ((77, 131), 64, 10, 2), ((5, 3), 64, 20, 4), ((1, 1), 16, 4, 4),
     ((33, 40, 29), 32, 4, 4), ((1000,), 100, 8, 8)],
)
def test_grid_covers_every_pixel_once(shape, tile, halo, div):
    grid = TileGrid(shape, tile, halo, div)
    assert (_coverage(grid) == 1).all()
    for t in grid:
        assert all(s % div == 0 for s in t.start)  # aligned with the U-Net's pooling
        assert all(0 <= c.start < c.stop <= n for c, n in zip(t.core, shape, strict=False))
    assert all(ts <= tile for ts in grid.tile_shape)
    assert all(ts % div == 0 for ts in grid.tile_shape)
    assert all(h >= halo and h % div == 0 for h in grid.halo)


def test_grid_is_balanced():
    # 2048 with at most 1024-pixel tiles and a 56-pixel halo: 3 tiles of 800, not 1024
    grid = TileGrid((2048, 2048), 1024, 56, 8)
    assert grid.counts == (3, 3)
    assert grid.tile_shape == (800, 800)
    assert grid.core_shape == (688, 688)
    # a small image takes one tile just big enough
    small = TileGrid((50, 70), 1024, 56, 8)
    assert small.counts == (1, 1) and small.tile_shape == (56 + 112, 72 + 112)


def test_grid_rejects_tile_without_core():
    with pytest.raises(ParameterError, match="leaves no core"):
        TileGrid((100, 100), 64, 32, 8)


def test_receptive_radius():
    assert unet_receptive_radius(4) == 52  # 103-pixel field
    assert unet_receptive_radius(2) == 10  # 19-pixel field


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_reflect_index_matches_numpy_pad(n):
    a = np.arange(n)
    pad = 3 * n + 5
    ref = np.pad(a, pad, mode="reflect") if n > 1 else np.pad(a, pad, mode="edge")
    assert np.array_equal(a[reflect_index(np.arange(-pad, n + pad), n)], ref)


def _ref_region(img, start, shape):
    pad = max(max(0, -s) for s in start) + max(max(0, s + t - n) for s, t, n in zip(start, shape, img.shape, strict=False)) + 1
    p = np.pad(img, pad, mode="reflect")
    return p[tuple(slice(s + pad, s + pad + t) for s, t in zip(start, shape, strict=False))]


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr", "memmap"])
def test_source_reads_mirror_padded_regions(kind, tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (23, 17)).astype(np.uint8)
    data = img
    if kind == "dask":
        import dask.array as da

        data = da.from_array(img, chunks=(8, 8))
    elif kind == "zarr":
        import zarr

        data = zarr.create_array(store=str(tmp_path / "z"), shape=img.shape, chunks=(8, 8), dtype=img.dtype)
        data[:] = img
    elif kind == "memmap":
        data = np.memmap(tmp_path / "m.raw", dtype=img.dtype, mode="w+", shape=img.shape)
        data[:] = img
    src = ArraySource(data, "YX")
    for start, shape in [((0, 0), (23, 17)), ((-5, -7), (16, 16)), ((10, 8), (40, 40)), ((-30, -30), (90, 80))]:
        got = src.read(start, shape)
        assert got.dtype == np.float32 and got.shape == (1, *shape)
        assert np.array_equal(got[0], _ref_region(img.astype(np.float32), start, shape))


def test_source_axes_and_normalisation():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 255, (9, 11, 4)).astype(np.uint8)  # YXS with alpha
    src = ArraySource(rgb, "YXS", channels=[0, 1, 2], low=[10, 20, 30], high=[110, 220, 130])
    got = src.read((0, 0), (9, 11))
    exp = (np.moveaxis(rgb[..., :3], -1, 0).astype(np.float32) - np.array([10, 20, 30])[:, None, None]) \
        / np.array([100, 200, 100])[:, None, None]
    assert got.shape == (3, 9, 11)
    assert np.allclose(got, exp, atol=1e-6)
    zcyx = rng.random((3, 2, 5, 6)).astype(np.float32)
    got = ArraySource(zcyx, "ZCYX").read((0, 0, 0), (3, 5, 6))
    assert np.array_equal(got, np.moveaxis(zcyx, 1, 0))


@pytest.fixture
def engine(tmp_path, serve_network):
    """Run the engine (:func:`segment_iter`) with a given network in place of a model folder's U-Net.

    ``engine(net, img, axes, tile_size, halo, kind=..., n_classes=..., **segment_iter_kwargs)``
    returns the :class:`SegmentResult` (float32 arithmetic, no input normalisation; a 3D model
    when ``axes`` has a Z).
    """
    from napari_medseg.inference.segment import segment_iter
    from napari_medseg.models.testing import make_random_model
    from napari_medseg.progress import run

    count = itertools.count()

    def go(net, img, axes, tile, halo, kind="instance", n_classes=2, **kw):
        folder = make_random_model(tmp_path / f"m{next(count)}", kind=kind, n_classes=n_classes,
                                   dims=3 if "Z" in axes else 2, depth=net.depth)
        card = json.loads((folder / "model.json").read_text())
        card["input"]["normalization"] = {"kind": "none"}
        (folder / "model.json").write_text(json.dumps(card))
        serve_network(folder, net)
        return run(segment_iter(img, str(folder), axes=axes, tile_size=tile, halo=halo, precision="float32", **kw))

    return go


def _rounding_net(n_classes: int, divisor: int = 8):
    """Per-pixel stand-in for a semantic U-Net: class ``k`` scores ``-10 (x - k)^2``, so the class is ``round(x)``."""
    import torch

    class RoundingNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.divisor = divisor
            self.depth = 3

        def forward(self, x):
            k = torch.arange(n_classes, dtype=x.dtype, device=x.device).reshape(1, -1, *([1] * (x.ndim - 2)))
            return -10 * (x[:, :1] - k) ** 2

    return RoundingNet()


@pytest.mark.parametrize("shape,tile,halo", [((77, 131), 32, 8), ((3, 5), 128, 40), ((64, 64), 48, 16)])
def test_identity_predictor_is_exact(engine, shape, tile, halo):
    # every pixel's class is its own value: any misplaced, missing or doubled tile core shows
    n = 12
    img = np.random.default_rng(3).integers(0, n, shape).astype(np.float32)
    res = engine(_rounding_net(n), img, "YX", tile, halo, kind="semantic", n_classes=n, batch_size=3)
    assert res.info["tiles"] > 1 or shape == (3, 5)
    assert np.array_equal(res.labels, img.astype(np.uint16))


def _unet(dims, depth=3, base=4, seed=0, in_ch=1):
    import torch

    from napari_medseg.models.unet import UNet

    torch.manual_seed(seed)
    net = UNet(in_ch, 2, dims=dims, base_channels=base, depth=depth).eval()
    # non-trivial batch-norm statistics, as in a trained network
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net


def _whole_image(net, img, pad):
    import torch

    # pad by `pad` (a multiple of the divisor) before, and to a multiple of it after
    p = np.pad(img, [(pad, pad + (-(n + 2 * pad)) % net.divisor) for n in img.shape], mode="reflect")
    with torch.inference_mode():
        y = net(torch.from_numpy(p[None, None].astype(np.float32))).numpy()[0]
    return y[(slice(None), *(slice(pad, pad + n) for n in img.shape))]


def _sigmoid(y):
    return 1 / (1 + np.exp(-y.astype(np.float64)))


def _float16_ulps(res, ref) -> float:
    """Largest gap between the engine's float16 maps and the float64 reference, in float16 ulps at the value.

    0 is exact to the storage precision; 1 allows float32 network noise that
    straddles a float16 rounding boundary.
    """
    got, want = res.probabilities, ref.astype(np.float16)
    ulp = np.spacing(np.maximum(np.abs(got), np.abs(want))).astype(np.float64)
    return float((np.abs(got.astype(np.float64) - want.astype(np.float64)) / ulp).max())


@pytest.mark.parametrize("shape,tile", [((77, 131), 64), ((77, 131), 96), ((40, 33), 256)])
def test_unet_tiled_equals_whole_image_2d(engine, shape, tile):
    net = _unet(2)
    img = np.random.default_rng(4).random(shape).astype(np.float32)
    rf = unet_receptive_radius(net.depth)
    ref = _sigmoid(_whole_image(net, img, round_up(rf + 8, net.divisor) * 2))
    res = engine(net, img, "YX", tile, rf, batch_size=2, return_probabilities=True, labels=False)
    assert res.info["tiles"] > 1 or tile == 256
    assert _float16_ulps(res, ref) <= 1


def test_small_halo_is_not_exact(engine):
    # the exactness test above can fail: with too small a halo the seams show
    net = _unet(2)
    img = np.random.default_rng(4).random((77, 131)).astype(np.float32)
    ref = _sigmoid(_whole_image(net, img, 48))
    res = engine(net, img, "YX", 64, 0, return_probabilities=True, labels=False)
    assert res.info["tiles"] > 1
    assert np.abs(res.probabilities - ref).max() > 1e-3


def test_unet_tiled_equals_whole_image_3d(engine):
    # base 4: with base 2 this random 3D net gives a near-constant output that would hide seams
    net = _unet(3, depth=2, base=4)
    img = np.random.default_rng(5).random((13, 29, 22)).astype(np.float32)
    rf = unet_receptive_radius(net.depth)
    ref = _sigmoid(_whole_image(net, img, 24))
    res = engine(net, img, "ZYX", 32, rf, batch_size=2, return_probabilities=True, labels=False)
    assert res.info["tiles"] > 1
    assert _float16_ulps(res, ref) <= 1


@pytest.mark.parametrize("dims", [2, 3])
def test_folded_batchnorm_network_gives_the_same_output(dims):
    import torch

    from napari_medseg.inference.predictor import fold_batchnorm, inference_network

    net = _unet(dims, depth=2, base=4)
    x = torch.from_numpy(np.random.default_rng(6).random((2, 1, *([12] * dims)), dtype=np.float32))
    folded = fold_batchnorm(net)
    n_bn = lambda m: sum(isinstance(k, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)) for k in m.modules())  # noqa: E731
    assert n_bn(net) == 4 * net.depth - 2 and n_bn(folded) == 0  # the original keeps its batch norms
    with torch.inference_mode():
        assert torch.allclose(net(x), folded(x), atol=1e-5)
    assert inference_network(net) is inference_network(net)  # one copy per network
    if dims == 2:
        assert inference_network(net, channels_last=True) is not inference_network(net)
