"""The built-in procedural face dataset (``SyntheticFaces``)."""

import math

import pytest
import torch

from voxrender.data import SyntheticFaces
from voxrender.data.faces import (
    BACKGROUND_DEPTH,
    LIGHT_RANGES,
    VIEW_RANGES,
    head_mask,
    random_face,
    sample_views_lights,
    view_light_statistics,
)
from voxrender.models.gan2shape.prior import object_mask
from voxrender.models.gan2shape.renderer import reconstruct

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch():
    return SyntheticFaces(12, size=64, seed=0, split="train").get_batch(range(12))


def test_item_contents(batch):
    ds = SyntheticFaces(12, 64, 0, "train")
    assert len(ds) == 12
    it = ds[3]
    S = 64
    shapes = {"image": (3, S, S), "depth": (S, S), "mask": (S, S), "canon_depth": (S, S), "canon_albedo": (3, S, S),
              "canon_mask": (S, S), "head": (3,), "view": (6,), "light": (4,), "index": ()}
    assert {k: tuple(v.shape) for k, v in it.items()} == shapes
    for k in shapes:
        if k != "index":
            assert it[k].dtype == torch.float32, k
    assert it["image"].min() >= 0 and it["image"].max() <= 1
    assert set(batch["mask"].unique().tolist()) == {0.0, 1.0}
    m = batch["mask"] > 0
    assert 0.15 < m.float().mean() < 0.5  # a head, not the whole image
    assert (batch["depth"][~m] == BACKGROUND_DEPTH).all()
    assert batch["depth"][m].min() > 0.9 and batch["depth"][m].max() < 1.1
    assert batch["canon_depth"].min() >= 0.9 and batch["canon_depth"].max() <= 1.1
    far = torch.nn.functional.max_pool2d(batch["mask"][:, None], 3, 1, 1)[:, 0] == 0  # not even at an edge
    assert (batch["image"].permute(0, 2, 3, 1)[far] == 0).all()  # the black background
    for i, (name, lo, hi) in enumerate(VIEW_RANGES):
        assert ((batch["view"][:, i] >= lo) & (batch["view"][:, i] <= hi)).all(), name
    for i, (name, lo, hi) in enumerate(LIGHT_RANGES):
        assert ((batch["light"][:, i] >= lo) & (batch["light"][:, i] <= hi)).all(), name
    assert batch["view"][:, :3].abs().max() < math.radians(30) + 1e-6  # radians
    assert torch.equal(batch["image"][3], it["image"]) and torch.equal(batch["depth"][3], it["depth"])


def test_deterministic_per_seed_split_index():
    a, b = SyntheticFaces(20, seed=5), SyntheticFaces(20, seed=5)
    x = a[7]
    _ = a[2], a[19]
    assert all(torch.equal(x[k], b[7][k]) for k in x)
    assert torch.equal(a.get_batch([7, 1])["image"][0], x["image"])
    assert not torch.equal(SyntheticFaces(20, seed=6)[7]["image"], x["image"])
    assert not torch.equal(SyntheticFaces(20, seed=5, split="test")[7]["image"], x["image"])
    assert not torch.equal(a[8]["image"], x["image"])
    assert torch.equal(a[-13]["image"], x["image"])
    with pytest.raises(IndexError):
        a[20]
    with pytest.raises(ValueError, match="split"):
        SyntheticFaces(4, split="training")
    with pytest.raises(ValueError, match="size"):
        SyntheticFaces(4, size=8)


def test_canonical_face_is_symmetric(batch):
    assert torch.equal(batch["canon_depth"], batch["canon_depth"].flip(-1))
    assert torch.equal(batch["canon_albedo"], batch["canon_albedo"].flip(-1))
    assert torch.allclose(batch["canon_mask"], batch["canon_mask"].flip(-1))
    # a face: the nose (on the axis, between the eyes and the mouth) is the closest point
    d = batch["canon_depth"]
    j = d.flatten(1).argmin(1) % 64
    assert ((j == 31) | (j == 32)).all()
    # the head stands out from the background plane
    assert (d.amax((1, 2)) - d.amin((1, 2)) > 0.05).all()


def test_image_is_the_gan2shape_forward_model(batch):
    rec = reconstruct(batch["canon_depth"], batch["canon_albedo"], batch["view"], batch["light"], clamp=True)
    m = batch["mask"] > 0
    soft = head_mask(rec.grid, batch["head"]) * rec.mask
    inside = soft == 1  # fully covered pixels: the image is exactly the reconstruction
    assert inside.sum() > 0.8 * m.sum()
    img, ref = batch["image"].permute(0, 2, 3, 1), rec.image.permute(0, 2, 3, 1)
    assert torch.allclose(img[inside], ref[inside], atol=1e-6)
    assert torch.allclose(batch["depth"][m], rec.depth[m])
    assert (batch["image"].permute(0, 2, 3, 1)[soft == 0] == 0).all()
    # the canonical mask is the same analytic mask in the canonical frame
    S = 64
    c = (S - 1) / 2
    ax = (torch.arange(S, dtype=torch.float64) - c) / c
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    cm = head_mask(torch.stack([x, y], -1)[None].expand(12, -1, -1, -1), batch["head"].double())
    assert torch.allclose(cm.float(), batch["canon_mask"], atol=1e-5)


def test_threshold_mask_finds_the_face(batch):
    m = object_mask(batch["image"])
    gt = batch["mask"]
    iou = (m * gt).sum((1, 2)) / ((m + gt) > 0).float().sum((1, 2))
    assert (iou > 0.9).all()


def test_view_light_statistics():
    st = view_light_statistics()
    assert st["view_mean"].shape == (6,) and st["view_cov"].shape == (6, 6) and st["light_cov"].shape == (4, 4)
    assert torch.allclose(st["view_high"][1], torch.tensor(math.radians(30)))
    assert torch.allclose(st["view_cov"][1, 1], torch.tensor((math.radians(60)) ** 2 / 12))
    raw = SyntheticFaces.view_light_statistics(raw=True)
    assert torch.allclose(raw["view_high"][:3], torch.tensor([0.25, 0.5, 5 / 60]))
    assert torch.allclose(raw["light_low"], torch.tensor([2 * 0.4 - 1, 2 * 0.35 - 1, -0.9, -0.2]))
    # the empirical distribution of the sampler matches
    views = torch.stack([torch.from_numpy(random_face(16, s)["view"]) for s in range(300)]).float()
    assert torch.allclose(views.mean(0), st["view_mean"], atol=0.05)
    v, li = sample_views_lights(2000, torch.Generator().manual_seed(0))
    assert v.shape == (2000, 6) and li.shape == (2000, 4)
    assert ((v >= st["view_low"]) & (v <= st["view_high"])).all() and ((li >= st["light_low"]) & (li <= st["light_high"])).all()
    assert torch.allclose(v.var(0), st["view_cov"].diagonal(), rtol=0.15, atol=1e-9)


def test_size_128_and_background():
    ds = SyntheticFaces(2, size=128, seed=1, background=(0.2, 0.4, 0.6))
    it = ds[0]
    assert it["image"].shape == (3, 128, 128) and it["depth"].shape == (128, 128)
    assert torch.allclose(it["image"][:, 0, 0], torch.tensor([0.2, 0.4, 0.6]))
    assert torch.equal(it["canon_depth"], it["canon_depth"].flip(-1))


def test_mean_depth_baseline():
    ds = SyntheticFaces(4, seed=2)
    md = ds.mean_depth()
    b = ds.get_batch(range(4))
    assert md.shape == (64, 64) and 0.9 < md.min() and md.max() < 1.1
    m = b["mask"].sum(0) > 0
    ref = (b["depth"] * b["mask"]).sum(0) / b["mask"].sum(0).clamp(min=1)
    assert torch.allclose(md[m], ref[m], atol=1e-5)


def test_trainer_fetches_batches():
    from voxrender.training import fetch_batch

    ds = SyntheticFaces(8, seed=2)
    b = fetch_batch(ds, [0, 5])
    assert b["image"].shape == (2, 3, 64, 64) and torch.equal(b["image"][1], ds[5]["image"])
