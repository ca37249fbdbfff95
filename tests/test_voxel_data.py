"""The built-in procedural voxel shapes dataset."""

import math

import pytest
import torch

import voxrender as vr
from voxrender.data import box, demo_scene, ellipsoid, torus
from voxrender.data.voxel_shapes import KINDS, VoxelShapes, item_seed, random_shape, render_shapes


def test_existing_exports_still_work():
    assert box(8).shape == ellipsoid(8).shape == torus(8).shape == (8, 8, 8)
    d, c = demo_scene(8)
    assert d.shape == (8, 8, 8) and c.shape == (3, 8, 8, 8)


def test_items_are_deterministic_per_seed_split_and_index():
    a = VoxelShapes("train", 16, length=50, seed=3)
    b = VoxelShapes("train", 16, length=50, seed=3)
    x, y = a[7], b[7]
    assert torch.equal(x["voxels"], y["voxels"]) and torch.equal(x["image"], y["image"])
    assert float(x["azimuth"]) == float(y["azimuth"])
    # order of generation does not matter
    _ = a[3], a[40]
    assert torch.equal(a[7]["image"], x["image"])
    # other seed / split / index: other shapes
    assert not torch.equal(VoxelShapes("train", 16, length=50, seed=4)[7]["voxels"], x["voxels"])
    assert not torch.equal(VoxelShapes("test", 16, length=50, seed=3)[7]["voxels"], x["voxels"])
    assert not torch.equal(a[8]["voxels"], x["voxels"])
    assert item_seed(0, "train", 1) != item_seed(0, "test", 1)


def test_batch_matches_items_and_renderer():
    ds = VoxelShapes("test", 16, length=20)
    b = ds.get_batch([2, 5, 11])
    assert b["image"].shape == (3, 1, 16, 16) and b["voxels"].shape == (3, 16, 16, 16)
    assert torch.equal(b["image"][1], ds[5]["image"])
    ref = vr.project_volume(b["voxels"], azimuth=b["azimuth"], tau=1.0, backend="torch")
    torch.testing.assert_close(b["image"], ref.clamp(0, 1), atol=1e-5, rtol=1e-5)
    assert ((b["azimuth"] >= 0) & (b["azimuth"] < 2 * math.pi)).all()


@pytest.mark.parametrize("n", [28, 32, 64])
def test_sizes_and_bounds(n):
    ds = VoxelShapes("train", n, length=8)
    v = ds.shape(0)["voxels"]
    assert v.shape == (n, n, n) and v.dtype == torch.float32
    assert set(v.unique().tolist()) <= {0.0, 1.0}
    c = -1 + (2 * torch.arange(n) + 1) / n
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    assert v[(x ** 2 + z ** 2) > 0.81 + 1e-6].sum() == 0  # inside the vertical cylinder: every view sees it


def test_every_kind_and_nonempty():
    ds = VoxelShapes("train", 16, length=200)
    kinds = set()
    for i in range(120):
        s = ds.shape(i)
        kinds.add(s["kind"])
        assert s["voxels"].sum() > 0
    assert kinds == set(range(len(KINDS)))
    only = VoxelShapes("train", 16, length=10, kinds=("glyph",))
    assert all(only.shape(i)["kind"] == KINDS.index("glyph") for i in range(10))


def test_rgb_images():
    ds = VoxelShapes("train", 16, length=4, rgb=True)
    b = ds.get_batch([0, 1])
    assert b["image"].shape == (2, 3, 16, 16)
    s = random_shape(16, item_seed(0, "train", 0), rgb=True)
    assert s["colour"].shape == (3, 16, 16, 16)
    img = render_shapes(s["voxels"][None], torch.tensor([s["azimuth"]], dtype=torch.float32), s["colour"][None])
    torch.testing.assert_close(img, b["image"][:1])


def test_errors():
    with pytest.raises(ValueError, match="split"):
        VoxelShapes("training")
    with pytest.raises(ValueError, match="kind"):
        VoxelShapes(kinds=("sphere",))
    with pytest.raises(IndexError):
        VoxelShapes(length=3).shape(3)
