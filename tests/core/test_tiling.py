"""Tiled inference: plan, mirror padding, and exactness against whole-image inference."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.errors import ParameterError
from napari_medseg.inference.tiling import (
    ArraySource,
    TileGrid,
    predict_full,
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
        assert all(0 <= c.start < c.stop <= n for c, n in zip(t.core, shape))
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
    pad = max(max(0, -s) for s in start) + max(max(0, s + t - n) for s, t, n in zip(start, shape, img.shape)) + 1
    p = np.pad(img, pad, mode="reflect")
    return p[tuple(slice(s + pad, s + pad + t) for s, t in zip(start, shape))]


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


@pytest.mark.parametrize("shape,tile,halo", [((77, 131), 32, 8), ((3, 5), 128, 40), ((64, 64), 48, 16)])
def test_identity_predictor_is_exact(shape, tile, halo):
    img = np.random.default_rng(3).random(shape).astype(np.float32)
    grid = TileGrid(shape, tile, halo, 8)
    out = predict_full(ArraySource(img, "YX"), grid, lambda x: x * 2 + 1, batch_size=3)
    assert np.array_equal(out[0], img * 2 + 1)


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


def _net_predict(net):
    import torch

    def predict(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return predict


@pytest.mark.parametrize("shape,tile", [((77, 131), 64), ((77, 131), 96), ((40, 33), 256)])
def test_unet_tiled_equals_whole_image_2d(shape, tile):
    net = _unet(2)
    img = np.random.default_rng(4).random(shape).astype(np.float32)
    rf = unet_receptive_radius(net.depth)
    ref = _whole_image(net, img, round_up(rf + 8, net.divisor) * 2)
    grid = TileGrid(shape, tile, rf, net.divisor)
    assert len(grid) > 1 or tile == 256
    out = predict_full(ArraySource(img, "YX"), grid, _net_predict(net), batch_size=2)
    assert np.abs(out - ref).max() < 1e-4


def test_small_halo_is_not_exact():
    # the exactness test above can fail: with too small a halo the seams show
    net = _unet(2)
    img = np.random.default_rng(4).random((77, 131)).astype(np.float32)
    ref = _whole_image(net, img, 48)
    out = predict_full(ArraySource(img, "YX"), TileGrid(img.shape, 64, 0, net.divisor), _net_predict(net))
    assert np.abs(out - ref).max() > 1e-3


def test_unet_tiled_equals_whole_image_3d():
    net = _unet(3, depth=2, base=2)
    img = np.random.default_rng(5).random((13, 29, 22)).astype(np.float32)
    rf = unet_receptive_radius(net.depth)
    ref = _whole_image(net, img, 24)
    grid = TileGrid(img.shape, 32, rf, net.divisor)
    assert len(grid) > 1
    out = predict_full(ArraySource(img, "ZYX"), grid, _net_predict(net), batch_size=2)
    assert np.abs(out - ref).max() < 1e-4


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
