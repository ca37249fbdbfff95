"""GAN2Shape (models/gan2shape: networks, model, invert, pipeline, cli) on tiny StyleGAN2s: shapes, each step's
loss going down, the latent-offset path, the inversion, and both commands end to end."""

import dataclasses
import json
import math
import time

import numpy as np
import pytest
import torch
from voxrender.models.gan2shape import metrics
from voxrender.models.gan2shape import model as M
from voxrender.models.gan2shape.invert import cosine_adam, frozen, invert, resize
from voxrender.models.gan2shape.networks import (
    EDDeconv,
    Encoder,
    ResEncoder,
    build_networks,
    default_nf,
)
from voxrender.models.gan2shape.prior import ellipsoid_depth_prior
from voxrender.models.stylegan2 import Discriminator, Generator, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_G = dict(size=32, style_dim=32, n_mlp=4, channels=16)


def tiny_gan(seed=0):
    torch.manual_seed(seed)
    G = Generator(TINY_G["size"], TINY_G["style_dim"], TINY_G["n_mlp"], channels=TINY_G["channels"])
    D = Discriminator(TINY_G["size"], channels=TINY_G["channels"])
    return G.eval(), D.eval()


@pytest.fixture(scope="module")
def gan():
    return tiny_gan()


@pytest.fixture(scope="module")
def face():
    from voxrender.data.faces import SyntheticFaces

    return SyntheticFaces(2, size=32, seed=0, split="test").get_batch([0, 1])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, gan):
    path = tmp_path_factory.mktemp("g2s") / "tiny.pt"
    save_checkpoint(path, *gan)
    return path


def tiny_model(gan, face, **overrides):
    G, D = gan
    cfg = M.GAN2ShapeConfig.from_preset("tiny", **overrides)
    m = M.GAN2Shape(G, D, cfg)
    w = G.mapping(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(1))).detach()
    m.setup(face["image"][0], w, seed=0)
    return m


# ---------------------------------------------------------------------------------------------------------
# networks


@pytest.mark.parametrize("size", [64, 128])
def test_network_shapes(size):
    nets = build_networks(size, style_dim=48, nf=8, zdim=16, enc_nf=4)
    x = torch.randn(2, 3, size, size)
    assert nets["depth"](x).shape == (2, 1, size, size)
    alb = nets["albedo"](x)
    assert alb.shape == (2, 3, size, size) and alb.abs().max() <= 1
    v, lt = nets["view"](x), nets["light"](x)
    assert v.shape == (2, 6) and lt.shape == (2, 4) and v.abs().max() <= 1 and lt.abs().max() <= 1
    assert nets["offset"](x).shape == (2, 48)


def test_published_sizes():
    assert default_nf(64) == 64 and default_nf(128) == 32
    # Unsup3d's 64 px EDDeconv (nf 64, zdim 256): 4 stride-2 encoder convs, GroupNorm with 4 channels a group
    net = EDDeconv(3, 1, 64, zdim=256, activation=None)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512]
    gns = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert all(g.num_channels == 4 * g.num_groups for g in gns)
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    # GAN2Shape's 128 px variant adds a stage (nf 32 -> ... 512) and keeps the inner widths
    net = EDDeconv(3, 3, 128, zdim=256)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 512]
    assert Encoder(3, 6, 128).network[-1].__class__ is torch.nn.Tanh
    assert ResEncoder(3, 512, 128).network[-1].out_channels == 512
    with pytest.raises(ValueError, match="power of two"):
        build_networks(48)


# ---------------------------------------------------------------------------------------------------------
# presets and configuration


def test_presets_published_numbers():
    s = M.GAN2ShapeConfig.from_preset("synface")
    assert (s.image_size, s.num_stages, s.steps(0), s.prior_steps) == (64, 1, (500, 500, 200), 1000)
    assert s.flip("flip3", 0) and not s.flip("flip1", 0) and s.offset_layers == 8 and s.relative_enc
    for name in ("celeba", "cat"):
        c = M.GAN2ShapeConfig.from_preset(name)
        assert (c.image_size, c.num_stages, c.steps(0), c.steps(3)) == (128, 4, (600, 600, 400), (200, 500, 300))
        assert c.flip("flip3", 0) and not c.flip("flip3", 1)
    for name in ("car", "church"):
        c = M.GAN2ShapeConfig.from_preset(name)
        assert (c.image_size, c.num_stages, c.steps(0), c.steps(1)) == (128, 4, (700, 700, 600), (200, 500, 400))
        assert not c.relative_enc and c.use_mask
    for c in map(M.GAN2ShapeConfig.from_preset, M.PRESETS):
        assert (c.lr, c.weight_decay, c.lam_perc, c.lam_smooth, c.lam_regular) == (1e-4, 5e-4, 0.5, 0.01, 0.01)
    q = s.scaled(0.01)
    assert (q.prior_steps, q.steps(0), q.collect_iters) == (10, (5, 5, 2), 1)
    with pytest.raises(ValueError, match="preset"):
        M.GAN2ShapeConfig.from_preset("horse")


def test_view_light_stats():
    st = M.ViewLightStats.synface()
    v = st.sample_views(4000, torch.Generator().manual_seed(0), view_scale=1.0)
    assert v.shape == (4000, 6)
    assert torch.allclose(v.std(0)[:5], st.view_cov.diagonal()[:5].sqrt(), rtol=0.08)
    v2 = st.sample_views(4000, torch.Generator().manual_seed(0), view_scale=1.2)
    assert torch.allclose(v2[:, 1], 1.2 * v[:, 1])
    g = M.ViewLightStats.gaussian((15, 30, 5, 0.008, 0.008))
    assert math.isclose(float(g.view_cov[1, 1]), (0.5 ** 2) / 3, rel_tol=1e-6)


def test_losses():
    a = torch.rand(2, 3, 8, 8)
    m = torch.zeros(2, 1, 8, 8)
    m[..., :4] = 1
    b = a.clone()
    b[..., 4:] += 5  # outside the mask
    assert float(M.masked_l1(a, b, m)) == 0
    assert float(M.smooth_loss(torch.arange(64.0).reshape(1, 8, 8))) == 0  # linear ramps are smooth
    assert float(M.smooth_loss(torch.arange(64.0).reshape(1, 8, 8) ** 2)) > 0


# ---------------------------------------------------------------------------------------------------------
# the latent offset


def test_latent_offset_forms(gan):
    G, _ = gan
    e = torch.randn(3, G.style_dim)
    with torch.no_grad():
        assert torch.equal(M.latent_offset(G, torch.zeros(2, G.style_dim), 3), torch.zeros(2, G.style_dim))
        # k >= n_mlp: the whole mapping network, PixelNorm included (GAN2Shape's F1_d = 8)
        zero = torch.zeros(1, G.style_dim)
        assert torch.allclose(M.latent_offset(G, e, 8), G.mapping(e) - G.mapping(zero), atol=1e-6)
        # k = 3: the offset of the hidden code before the last 3 layers, about the code of z = 0
        h0 = G.mapping_layers(zero, 0, G.n_mlp - 3)
        ref = G.mapping_layers(h0 + e, G.n_mlp - 3, G.n_mlp) - G.mapping_layers(h0, G.n_mlp - 3, G.n_mlp)
        assert torch.allclose(M.latent_offset(G, e, 3), ref, atol=1e-6)
        assert not torch.allclose(M.latent_offset(G, e, 3), M.latent_offset(G, e, 2))
    assert M.offset_start(G, 3) == 1 and M.offset_start(G, 8) == 0


def test_relative_encoding_projects_gan_image_onto_w(gan, face):
    m = tiny_model(gan, face)
    with torch.no_grad(), frozen(*gan):
        proj, dw = m.project(m.gan_image)
        assert float(dw.abs().max()) == 0
        img = (m.G(m.w, input_is_latent=True, randomize_noise=False).clamp(-1, 1) + 1) / 2
        assert torch.allclose(proj, resize(img, m.S), atol=1e-6)
        _, dw2 = m.project(m.image)  # a different image: a non-zero offset
        assert float(dw2.abs().max()) > 0
    m2 = tiny_model(gan, face, relative_enc=False)
    with torch.no_grad(), frozen(*gan):
        assert float(m2.project(m2.gan_image)[1].abs().max()) > 0


# ---------------------------------------------------------------------------------------------------------
# each step's loss goes down


def test_step0_prior_fit(gan, face):
    m = tiny_model(gan, face, lr=1e-3)
    with frozen(*gan):
        hist = m.fit_prior(15)
    assert len(hist) == 15 and hist[-1] < 0.7 * hist[0]
    assert m.prior.shape == (1, 32, 32) and float(m.prior.min()) >= 0.909


def test_step1_albedo(gan, face):
    m = tiny_model(gan, face)
    before = {k: v.clone() for k, v in m.nets.state_dict().items()}
    with frozen(*gan):
        with torch.no_grad():
            l0 = float(m.forward_step1(flip=True)[0])
        m.step1(8, flip=True)
        with torch.no_grad():
            l1 = float(m.forward_step1(flip=True)[0])
    assert l1 < l0
    after = m.nets.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"albedo"}  # step 1 trains A only


def test_step2_encoder(gan, face):
    m = tiny_model(gan, face)
    with frozen(*gan):
        m._prepare_canonical()
        pseudo, mask = m.sample_pseudo(4)
        assert pseudo.shape == (4, 3, 32, 32) and mask.shape == (4, 1, 32, 32)
        assert 0 <= float(pseudo.min()) and float(pseudo.max()) <= 1 and float(mask.sum()) > 0
        opt = m._adam("offset")
        with torch.no_grad():
            l0 = float(m.step2_loss(pseudo, mask)[0])
        for _ in range(6):
            loss, _ = m.step2_loss(pseudo, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            l1 = float(m.step2_loss(pseudo, mask)[0])
        assert l1 < l0
        assert all(p.grad is None for p in m.G.parameters())
        # the timed three-part backward gives loss.backward()'s gradients
        m.nets.zero_grad(set_to_none=True)
        m.step2_loss(pseudo, mask)[0].backward()
        ref = [p.grad.clone() for p in m.nets["offset"].parameters()]
        m.nets.zero_grad(set_to_none=True)
        m._step2_backward(*m.step2_loss(pseudo, mask, parts=True))
        assert all(torch.allclose(a, p.grad, rtol=1e-5, atol=1e-8) for a, p in zip(ref, m.nets["offset"].parameters()))
        hist = m.step2(2)
    assert len(hist) == 2 and m.proj.shape == (m.cfg.collect_iters * m.cfg.batch_size, 3, 32, 32)
    assert m.proj_mask.shape == (m.proj.shape[0], 1, 32, 32)


def test_step3_all_but_encoder(gan, face):
    m = tiny_model(gan, face)
    with frozen(*gan):
        m.step2(1)
        m.cfg.batch_size = m.proj.shape[0]  # every projected sample in each batch: a fixed loss
        with torch.no_grad():
            l0 = float(m.step3_loss(flip=True))
        enc = {k: v.clone() for k, v in m.nets["offset"].state_dict().items()}
        m.step3(6, flip=True)
        with torch.no_grad():
            l1 = float(m.step3_loss(flip=True))
    assert l1 < l0
    assert all(torch.equal(v, m.nets["offset"].state_dict()[k]) for k, v in enc.items())


def test_run_result(gan, face):
    G, D = gan
    cfg = M.GAN2ShapeConfig.from_preset("tiny")
    w = G.mapping(torch.randn(1, G.style_dim)).detach()
    flags = [p.requires_grad for p in G.parameters()]
    res = M.GAN2Shape(G, D, cfg).run(face["image"][0], w[0], seed=3)
    assert [p.requires_grad for p in G.parameters()] == flags
    assert res.canon_depth.shape == (32, 32) and res.view_depth.shape == (32, 32) and res.recon.shape == (3, 32, 32)
    assert 0.9 <= float(res.canon_depth.min()) and float(res.canon_depth.max()) <= 1.1
    assert set(res.losses) == {"step0", "stage1/step1", "stage1/step2", "stage1/step3", "stage2/step1",
                               "stage2/step2", "stage2/step3"}
    parts = res.times["parts"]
    for k in ("renderer_forward", "stylegan2_forward", "stylegan2_backward", "networks_forward",
              "discriminator_forward", "backward_step3"):
        assert parts[k]["seconds"] > 0
    assert res.times["steps"]["total"] > 0


def test_depth_anchor_holds_the_masked_mean_at_the_prior(gan, face):
    m = tiny_model(gan, face, depth_anchor=True)
    mask, prior = m.mask[:, 0], m.prior
    target = float((prior * mask).sum() / mask.sum())
    inner = torch.zeros_like(mask)  # the border clamp (2 columns each side) is applied after the anchor
    inner[..., 2:-2] = 1
    assert float((mask * (1 - inner)).sum()) == 0, "the tiny face's mask should stay off the clamped border"
    with frozen(*gan):
        m.step1(3)
        m._prepare_canonical()
    depth = m.canon["depth"]
    assert float((depth * mask).sum() / mask.sum()) == pytest.approx(target, abs=1e-5)
    # other images get their own mask and prior (the pretraining's pictures, the yardstick)
    x = face["image"] * 2 - 1
    with torch.no_grad():
        both = m.predict(x)["depth"]
    torch.testing.assert_close(both[:1], depth, rtol=0, atol=1e-5)  # image 0 is the model's own image
    from voxrender.models.gan2shape.prior import ellipsoid_depth_prior, object_mask
    m1 = object_mask(face["image"][1:], threshold=m.cfg.mask_threshold)
    p1 = ellipsoid_depth_prior(m1, near=m.cfg.prior_near, far=m.cfg.prior_far, category=m.cfg.category)
    assert float((both[1:] * m1).sum() / m1.sum()) == pytest.approx(float((p1 * m1).sum() / m1.sum()), abs=1e-5)
    # off (GAN2Shape's way) the same networks give another masked mean
    m.cfg = dataclasses.replace(m.cfg, depth_anchor=False)
    with torch.no_grad():
        free = m.predict()["depth"]
    assert abs(float((free * mask).sum() / mask.sum()) - target) > 1e-3


def test_tilt_anchor_holds_the_vertical_slope_at_the_prior(gan, face):
    m = tiny_model(gan, face, depth_anchor=True, tilt_anchor=True)
    mask, prior = m.mask[:, 0], m.prior
    y = torch.linspace(-1, 1, mask.shape[-2])[:, None]
    with frozen(*gan):
        m.step1(3)
        m._prepare_canonical()
    r = m.canon["depth"] - prior
    assert float((r * mask).sum() / mask.sum()) == pytest.approx(0, abs=1e-5)  # the mean anchor's
    assert float((r * mask * y).sum() / mask.sum()) == pytest.approx(0, abs=1e-5)
    # the same networks with the mean anchor only lean another way
    m.cfg = dataclasses.replace(m.cfg, tilt_anchor=False)
    with torch.no_grad():
        r = m.predict()["depth"] - prior
    assert abs(float((r * mask * y).sum() / mask.sum())) > 1e-4
    with pytest.raises(ValueError, match="tilt_anchor: needs depth_anchor"):
        M.GAN2ShapeConfig.from_preset("tiny", tilt_anchor=True)


def test_canonical_anchor_mask_is_the_input_mask_carried_to_the_canonical_frame(gan, face):
    m = tiny_model(gan, face, depth_anchor=True, tilt_anchor=True, anchor_frame="canonical")
    S = m.S
    flat = torch.ones(1, S, S)
    cm = M.canonical_anchor_mask(m.mask, flat, torch.zeros(1, 6))  # the identity view
    torch.testing.assert_close(cm, (torch.maximum(m.mask, m.mask.flip(-1)) > 0.5).float(), rtol=0, atol=1e-6)
    yawed = torch.tensor([[0.0, 0.4, 0.0, 0.0, 0.0, 0.0]])
    turned = M.canonical_anchor_mask(m.mask, flat, yawed)
    assert set(turned.unique().tolist()) <= {0.0, 1.0} and not torch.equal(turned, cm)
    torch.testing.assert_close(turned, turned.flip(-1), rtol=0, atol=0)  # symmetric
    far = torch.full((1, 6), 5.0)  # a view that turns the face out of the picture
    torch.testing.assert_close(M.canonical_anchor_mask(m.mask, flat, far), torch.ones(1, 1, S, S))


def test_canonical_anchor_mask_of_the_true_view_is_the_true_canonical_mask():
    """On built-in faces with the true view and canonical depth the carried mask covers the true canonical
    mask (IoU > 0.7 each, 0.85 on average at 32 px); the identity view or the view turned the other way do
    worse (the warp goes the right way)."""
    from voxrender.data.faces import SyntheticFaces
    from voxrender.models.gan2shape.prior import object_mask

    n, S = 16, 32
    b = SyntheticFaces(n, size=S, split="val").get_batch(range(n))
    seen, depth, truth = object_mask(b["image"], threshold=0.02), b["canon_depth"].reshape(n, S, S), b["view"]
    gt = b["canon_mask"].reshape(n, 1, S, S).float()

    def iou(view):
        m = M.canonical_anchor_mask(seen, depth, view)
        assert set(m.unique().tolist()) <= {0.0, 1.0} and torch.equal(m, m.flip(-1))
        return (m * gt).sum((1, 2, 3)) / (m + gt).clamp(max=1).sum((1, 2, 3))

    good = iou(truth)
    assert float(good.min()) > 0.7 and float(good.mean()) > 0.8
    other = truth.clone()
    other[:, :3] *= -1
    assert float(iou(other).mean()) < float(good.mean()) - 0.1
    assert float(iou(torch.zeros_like(truth)).mean()) < float(good.mean()) - 0.03


def test_canonical_anchor_frame_holds_the_depth_at_the_prior_of_the_canonical_mask(gan, face):
    for tilt in (False, True):
        m = tiny_model(gan, face, depth_anchor=True, tilt_anchor=tilt, anchor_frame="canonical")
        with frozen(*gan):
            m.step1(2)
        y = torch.linspace(-1, 1, m.S)[:, None]
        with torch.no_grad():
            p = m.predict()
            depth, view = p["depth"], p["view"]
            m.cfg = dataclasses.replace(m.cfg, anchor_frame="input")
            seen = m.predict()["depth"]  # anchored over the input's mask (border clamp: off the mask)
            cm = M.canonical_anchor_mask(m.mask, seen, view)[:, 0]  # carried with V's reading
        prior = ellipsoid_depth_prior(cm[:, None], near=m.cfg.prior_near, far=m.cfg.prior_far, category=m.cfg.category)
        r = (depth - prior.reshape(depth.shape)) * cm
        assert float(r.sum() / cm.sum()) == pytest.approx(0, abs=1e-5)
        slope = float((r * y).sum() / cm.sum())
        assert slope == pytest.approx(0, abs=1e-5) if tilt else abs(slope) > 1e-5
        assert not torch.allclose(depth, seen, atol=1e-4)  # the canonical frame moves it
    with pytest.raises(ValueError, match="anchor_frame: expected"):
        M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True, anchor_frame="view")
    with pytest.raises(ValueError, match="anchor_frame: 'canonical' needs depth_anchor"):
        M.GAN2ShapeConfig.from_preset("tiny", anchor_frame="canonical")


def test_prior_depth_of_the_presets():
    # the built-in faces rise about 0.07 above their rim (their mean over training faces), GAN2Shape's
    # frame-filling faces 0.11
    assert M.GAN2ShapeConfig.from_preset("synface").prior_near == M.SYNFACE_PRIOR_NEAR == 0.95
    assert M.GAN2ShapeConfig.from_preset("celeba").prior_near == 0.91
    assert M.GAN2ShapeConfig.from_preset("synface", prior_near=0.9).prior_near == 0.9
    from voxrender.data.faces import SyntheticFaces

    ds = SyntheticFaces(40, size=64, seed=0, split="train")
    rise = []
    for i in range(40):
        c = ds.canonical(i)
        d = c["canon_depth"][c["canon_mask"] > 0.5]
        rise.append(float(d.max() - d.min()))
    assert abs(np.mean(rise) - (M.PRESETS["synface"].get("prior_far", 1.02) - M.SYNFACE_PRIOR_NEAR)) < 0.005


def test_prior_box_names():
    from voxrender.models.gan2shape.prior import PRIOR_BOX_NAMES, PRIOR_BOXES, box_category

    assert [box_category(n) for n in PRIOR_BOX_NAMES] == list(PRIOR_BOXES)
    with pytest.raises(ValueError, match="prior box.*plain"):
        box_category("dog")


def test_refine_lowers_the_projection_loss_per_sample(gan, face):
    """--refine-steps: each projected sample is refined on its own latent from E's w + dw: step 2's image loss
    per sample goes down, a sample's result does not depend on the others in its batch, and 0 steps (the
    default) keeps E's projections."""
    m = tiny_model(gan, face, refine_steps=8)
    with frozen(*gan):
        m._prepare_canonical()
        pseudo, mask = m.sample_pseudo(3)
        with torch.no_grad():
            proj = m.project(pseudo)[0]
        ref = m.refine(pseudo, mask)
        ref0 = m.refine(pseudo[:1], mask[:1])

        def per_sample(x):
            a, b = x * 2 - 1, pseudo * 2 - 1
            return [float(M.masked_l1(a[i:i + 1], b[i:i + 1], mask[i:i + 1]) + m.dfeat(a[i:i + 1], b[i:i + 1],
                                                                                     mask[i:i + 1]))
                    for i in range(len(x))]

        before, after = per_sample(proj), per_sample(ref)
        assert all(a < b for a, b in zip(after, before)), (before, after)
        # Adam is per element: the batch changes only the loss's scale (the masked mean's denominator)
        torch.testing.assert_close(ref0, ref[:1], rtol=1e-4, atol=1e-4)
        assert all(p.grad is None for p in m.G.parameters())
        # the collected samples are the refined ones; without refine_steps, E's
        m.cfg.collect_iters = 1
        gen = m.gen.get_state()
        m._collect(1, iter(()))
        refined = m.proj.clone()
        m.gen.set_state(gen)
        m.cfg.refine_steps = 0
        m._collect(1, iter(()))
        views_pseudo = m.pseudo_keep[0]
        with torch.no_grad():
            assert torch.equal(m.proj, m.project(views_pseudo)[0])
        assert not torch.allclose(refined, m.proj)
    with pytest.raises(ValueError, match="refine_steps"):
        M.GAN2ShapeConfig.from_preset("tiny", refine_steps=-1)


def test_view_supervision_pulls_v_towards_the_pseudo_views(gan, face):
    """--view-supervision W: step 3 adds W x the mean squared error between V's raw reading of each projected
    sample (plus the view mean) and the raw view its pseudo sample was rendered in; the views stay paired with
    their samples through the reshuffles, and step 3 with that term alone moves V's readings towards them."""
    from voxrender.models.gan2shape.renderer import view_to_raw

    seen = []

    def oracle(views, lights):  # each sample's image encodes its own yaw, so pairs can be checked
        seen.append(views.clone())
        img = views[:, 1].reshape(-1, 1, 1, 1).expand(-1, 3, 32, 32) + 0.5
        return img, torch.ones(views.shape[0], 32, 32)

    for w in (0.0, 2.5):
        m = tiny_model(gan, face, view_supervision=w)
        m.oracle = oracle
        seen.clear()
        with frozen(*gan):
            m.step2(1)
            raw = view_to_raw(torch.cat(seen)[:, :5], m.cfg.xyz_rotation_range, m.cfg.xy_translation_range)
            assert torch.allclose(m.proj_view, raw)
            for _ in range(3 * m.proj.shape[0] // m.cfg.batch_size):  # through at least two reshuffles
                proj, _, pview = m._proj_batch()
                yaw = proj[:, 0, 0, 0] - 0.5
                rot = pview[:, 1] * math.pi / 180 * m.cfg.xyz_rotation_range
                assert torch.allclose(yaw, rot, atol=1e-5)
            with torch.no_grad():  # the same first batch each time (no reshuffle from index 0)
                m._proj_idx = 0
                total = m.step3_loss(flip=False)
                m._proj_idx = 0
                m.cfg.view_supervision = 0.0
                plain = m.step3_loss(flip=False)
                m.cfg.view_supervision = w
                m._proj_idx = 0
                proj, _, pview = m._proj_batch()
                err = (m.nets["view"](proj * 2 - 1)[:, :5] + m.view_mean[:5] - pview).pow(2).mean()
            assert torch.allclose(total - plain, w * err, rtol=1e-5, atol=1e-7)
    # the term alone (photometric losses off) lowers V's yaw error against the pseudo views (the yaw is what
    # the oracle's images show)
    m = tiny_model(gan, face, view_supervision=1.0)
    m.oracle = oracle
    with frozen(*gan):
        m.step2(1)
        m.cfg.batch_size = m.proj.shape[0]

        def err():
            with torch.no_grad():
                return float((m.nets["view"](m.proj * 2 - 1)[:, 1] + m.view_mean[1] - m.proj_view[:, 1]).pow(2).mean())

        e0 = err()
        m._photo_loss = lambda recon, target, mask: recon.sum() * 0
        m.forward_step1 = lambda flip, train=(): (torch.zeros(()), {"depth2": torch.ones(1, 32, 32),
                                                                    "albedo2": torch.ones(1, 3, 32, 32)})
        m.cfg.lr = 3e-3  # (the published 1e-4 moves V little in a test's few steps)
        m.step3(30)
        assert err() < 0.5 * e0
    with pytest.raises(ValueError, match="view_supervision"):
        M.GAN2ShapeConfig.from_preset("tiny", view_supervision=-1.0)


def test_oracle_replaces_the_projected_samples(gan, face):
    """The diagnostic oracle: step 2 trains no encoder and the projected samples are the oracle's images of the
    pseudo samples' views and lights; step 3 fits them."""
    m = tiny_model(gan, face)
    seen = []

    def oracle(views, lights):
        seen.append((views.clone(), lights.clone()))
        return torch.full((views.shape[0], 3, 32, 32), 0.25), torch.ones(views.shape[0], 32, 32)

    m.oracle = oracle
    enc = {k: v.clone() for k, v in m.nets["offset"].state_dict().items()}
    with frozen(*gan):
        assert m.step2(5) == [] and m.losses["step2"] == []
        assert all(torch.equal(v, m.nets["offset"].state_dict()[k]) for k, v in enc.items())
        assert len(seen) == m.cfg.collect_iters and seen[0][0].shape == (m.cfg.batch_size, 6)
        assert torch.equal(m.proj, torch.full_like(m.proj, 0.25)) and bool((m.proj_mask == 1).all())
        assert m.pseudo_keep[1].shape[0] == min(8, m.cfg.batch_size)
        m.step3(2)
    # the views are those the pseudo samples would have had (same sampler, same generator state)
    m2 = tiny_model(gan, face)
    m2._prepare_canonical()
    v2, l2 = m2._random_views_lights(m.cfg.batch_size)
    assert torch.equal(v2, seen[0][0]) and torch.equal(l2, seen[0][1])


# ---------------------------------------------------------------------------------------------------------
# inversion


def test_invert_lowers_loss(gan):
    G, D = gan
    w_true = G.mapping(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(5))).detach()
    with torch.no_grad():
        target = (G(w_true, input_is_latent=True, randomize_noise=False).clamp(-1, 1) + 1) / 2
    inv0 = invert(G, target[0], 0)
    assert torch.allclose(inv0.w, G.truncation_center().expand(1, -1))
    inv = invert(G, target, 30, D=D, lr=0.05)
    assert inv.w.shape == (1, G.style_dim) and inv.image.shape == (1, 3, 32, 32) and len(inv.losses) == 30
    assert inv.losses[-1] < 0.8 * inv.losses[0]
    assert (inv.image - target).abs().mean() < (inv0.image - target).abs().mean()
    assert all(p.requires_grad for p in G.parameters())


def test_cosine_adam_follows_the_half_cosine_schedule():
    """The inversion's and the refinement's optimiser: with a constant gradient Adam moves every step by its
    learning rate (up to eps), so the total move is lr * sum_i (1 + cos(pi i / N)) / 2 = lr (N + 1) / 2
    (sum_{i<N} cos(pi i / N) = 1); the backward timer runs once per step; record=False returns no losses."""
    n, lr = 10, 0.1
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    calls = []

    class Ctx:
        def __enter__(self):
            calls.append(1)

        def __exit__(self, *a):
            return False

    losses = cosine_adam(p, n, lr, lambda q: q.sum(), backward_timer=Ctx)
    assert len(losses) == n and len(calls) == n
    assert torch.allclose(p.detach(), torch.full((3,), -lr * (n + 1) / 2, dtype=torch.float64), atol=1e-6)
    q = torch.zeros(1, requires_grad=True)
    assert cosine_adam(q, 4, lr, lambda q: ((q - 1) ** 2).sum(), record=False) == [] and 0 < q.item() < 1


def test_multiview_inversion(gan):
    from voxrender.data.faces import SyntheticFaces
    from voxrender.models.gan2shape.pipeline import multiview_inversion

    G, D = gan
    yaws = (-30.0, 0.0, 30.0)
    r0 = multiview_inversion(G, D, 2, yaws, steps=0)
    assert r0["target"].shape == r0["image"].shape == (2, 3, 3, 32, 32) and r0["mask"].shape == (2, 3, 32, 32)
    assert r0["l1"].shape == r0["l1_face"].shape == (2, 3) and r0["yaws"] == list(yaws)
    # the held-out faces themselves, turned: yaw 0 of face k differs from its own test picture only by the yaw
    b = SyntheticFaces(2, size=32, split="test").get_batch(range(2))
    assert (r0["target"][:, 0] - r0["target"][:, 2]).abs().mean() > 0.01  # -30 and +30 degrees differ
    assert r0["mask"][:, 1].sum() > 0.2 * 32 * 32 and not torch.equal(r0["target"][:, 1], b["image"])
    # steps=0: G at the centre of W for every picture, and the errors are what they say
    with torch.no_grad():  # (the same batch of 6 as the inversion: the same rounding)
        centre = G(G.truncation_center().reshape(1, -1).expand(6, -1), input_is_latent=True, randomize_noise=False)
    centre = ((centre.clamp(-1, 1) + 1) / 2).reshape(2, 3, 3, 32, 32)
    assert torch.equal(r0["image"], centre)
    err = (centre[1, 2] - r0["target"][1, 2]).abs().mean(0)
    m = r0["mask"][1, 2]
    assert math.isclose(r0["l1"][1, 2].item(), err.mean().item(), rel_tol=1e-5)
    assert math.isclose(r0["l1_face"][1, 2].item(), (err * m).sum().item() / m.sum().item(), rel_tol=1e-5)
    assert torch.all(r0["l1_face_still"][:, 1] == 0) and torch.all(r0["l1_face_still"][:, [0, 2]] > 0.005)
    # inverting lowers the error
    r = multiview_inversion(G, D, 2, yaws, steps=20)
    assert r["l1"].mean() < r0["l1"].mean()
    with pytest.raises(ValueError, match="n:"):
        multiview_inversion(G, D, 0)
    with pytest.raises(ValueError, match="yaws:"):
        multiview_inversion(G, D, 1, ())


# ---------------------------------------------------------------------------------------------------------
# outputs and the commands


def test_mesh_from_depth():
    from voxrender.models.gan2shape.pipeline import mesh_from_depth

    d = torch.full((8, 8), 1.0)
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    v, f = mesh_from_depth(d, mask, border=0)
    assert v.shape == (16, 3) and f.shape == (18, 3)
    assert torch.allclose(v[:, 2], torch.zeros(16))  # z = 1 - depth
    # counter-clockwise seen from +z (the camera side in the y-up frame)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    assert (torch.cross(b - a, c - a, dim=-1)[:, 2] > 0).all()


def test_cli_gan2shape_tiny(tmp_path, run_cli, ckpt, face):
    from voxrender.io import save_png

    out = tmp_path / "out"
    t = time.perf_counter()
    r = run_cli("gan2shape", "--gan", str(ckpt), "--samples", "1", "--preset", "tiny", "--out", str(out),
                "--no-progress")
    elapsed = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    assert elapsed < 60
    d = out / "sample_000"
    for name in ("depth.npy", "depth.png", "view_depth.npy", "normal.png", "albedo.png", "mesh.obj", "relight.png",
                 "rotation.gif", "samples.png", "summary.png", "result.json", "recon.png", "input.png"):
        assert (d / name).is_file(), name
    assert np.load(d / "depth.npy").shape == (32, 32)
    info = json.loads((d / "result.json").read_text())
    assert info["config"]["preset"] == "tiny" and info["times"]["steps"]["total"] > 0
    assert "stylegan2_forward" in info["times"]["parts"] and info["mesh"]["triangles"] > 0
    assert info["relief"] is None or abs(info["relief"]) < 0.3
    from voxrender.mesh_io import load_obj

    v, f = load_obj(d / "mesh.obj")
    assert len(v) == info["mesh"]["vertices"] and len(f) == info["mesh"]["triangles"]
    # an own image, inverted into W
    img = tmp_path / "me.png"
    save_png(face["image"][1], img)
    r = run_cli("gan2shape", "--gan", str(ckpt), "--image", str(img), "--preset", "tiny", "--out", str(out),
                "--invert-steps", "3", "--steps-scale", "0.5", "--refine-steps", "2", "--collect-iters", "1",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "000_me" / "result.json").read_text())
    assert info["source"] == str(img) and info["config"]["prior_steps"] == 4
    assert info["config"]["refine_steps"] == 2 and info["config"]["collect_iters"] == 1
    assert info["times"]["parts"]["refine_backward"]["calls"] == 2 * 2  # 2 stages x 1 batch x 2 steps


def test_cli_eval_gan2shape_tiny(tmp_path, run_cli, ckpt):
    out = tmp_path / "ev"
    r = run_cli("eval-gan2shape", "--gan", str(ckpt), "--n", "2", "--preset", "tiny", "--out", str(out),
                "--invert-steps", "2", "--mean-depth-n", "8", "--no-progress")
    assert r.returncode == 0, r.stderr
    for name in ("depth_pred.npy", "depth_gt.npy", "mask_gt.npy"):
        assert np.load(out / name).shape == (2, 32, 32), name
    gt = np.load(out / "depth_gt.npy")
    assert gt.max() == 10.0  # the dataset's background depth
    pred = np.load(out / "depth_pred.npy")
    assert pred.min() >= 0.8 - 1e-6 and pred.max() <= 1.2 + 1e-6  # the clamped recon depth in the view
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["baselines"]) == {"flat", "mean_depth", "ellipsoid", "fitted_ellipsoid"}
    # face by face against each baseline, from the saved depths (the flat baseline's SIDE is that of a constant)
    assert set(m["paired"]) == set(m["baselines"])
    flat = m["paired"]["flat"]["side"]
    ours = [p["side_x1e-2"] for p in m["per_image"]]
    g = torch.from_numpy(gt)
    theirs = metrics.evaluate_depth(metrics.flat_depth(g), g, pred_mask=torch.ones_like(g))["side"] * metrics.SIDE_SCALE
    assert flat["count"] == 2 and flat["better"] == sum(a < b for a, b in zip(ours, theirs.tolist()))
    assert flat["mean_diff"] == pytest.approx(float(np.mean(ours) - theirs.mean()), rel=1e-5)
    assert "vs flat" in r.stdout
    fit = m["fitted_prior"]  # fitted on the 8 mean-depth training faces
    assert fit["faces"] == 8 and fit["far"] - fit["near"] == pytest.approx(fit["rise"]) and 0 < fit["rise"] < 0.2
    assert "fitted_ellipsoid" in r.stdout
    assert m["n"] == 2 and len(m["per_image"]) == 2
    assert m["gan2shape"]["count"] >= 1 and m["gan2shape"]["mad_deg_mean"] > 0
    assert "SIDE (x10^-2)" in r.stdout and m["oracle_samples"] is False
    # the relief of every canonical depth and of its ground truth (the built-in faces are convex)
    assert all(p["relief_gt"] > 0.01 for p in m["per_image"]) and 0 <= m["concave"] <= 2
    assert m["concave"] == sum(p["relief"] is not None and p["relief"] < 0 for p in m["per_image"])
    assert "relief (rim - core depth" in r.stdout
    assert m["data"]["split"] == "test"
    # --split val: other held-out faces (to choose settings on), recorded as such
    r = run_cli("eval-gan2shape", "--gan", str(ckpt), "--n", "1", "--preset", "tiny", "--out", str(tmp_path / "val"),
                "--invert-steps", "2", "--mean-depth-n", "8", "--no-progress", "--split", "val", "--prior-box", "plain")
    assert r.returncode == 0, r.stderr
    val = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert val["data"]["split"] == "val"
    assert m["config"]["category"] == "synface" and val["config"]["category"] is None  # --prior-box plain
    assert not np.array_equal(np.load(tmp_path / "val" / "depth_gt.npy")[0], gt[0])
    # the oracle diagnostic: labelled as such, and its records are not those of a GAN2Shape run
    r = run_cli("eval-gan2shape", "--gan", str(ckpt), "--n", "2", "--preset", "tiny", "--out", str(out),
                "--invert-steps", "2", "--mean-depth-n", "8", "--no-progress", "--oracle-samples", "--resume")
    assert r.returncode != 0 and "oracle_samples" in r.stderr
    r = run_cli("eval-gan2shape", "--gan", str(ckpt), "--n", "2", "--preset", "tiny", "--out", str(tmp_path / "or"),
                "--invert-steps", "2", "--mean-depth-n", "8", "--no-progress", "--oracle-samples")
    assert r.returncode == 0, r.stderr
    assert "oracle" in r.stdout and json.loads((tmp_path / "or" / "metrics.json").read_text())["oracle_samples"]


def test_cli_errors(tmp_path, run_cli, ckpt):
    missing = tmp_path / "nope.pt"
    r = run_cli("gan2shape", "--gan", str(missing), "--out", str(tmp_path / "o"), "--preset", "tiny")
    assert r.returncode != 0 and str(missing) in r.stderr
    r = run_cli("eval-gan2shape", "--gan", str(missing), "--out", str(tmp_path / "o"), "--preset", "tiny")
    assert r.returncode != 0 and str(missing) in r.stderr
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "horse")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--image", str(tmp_path / "me.png"),
                "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "me.png" in r.stderr
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--steps-scale", "0", "--out", str(tmp_path))
    assert r.returncode != 0 and "--steps-scale" in r.stderr
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--prior-near", "1.05", "--out", str(tmp_path))
    assert r.returncode != 0 and "prior_near" in r.stderr
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--prior-box", "dog", "--out", str(tmp_path))
    assert r.returncode == 2 and "--prior-box" in r.stderr and "plain" in r.stderr
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--tilt-anchor", "--out", str(tmp_path))
    assert r.returncode != 0 and "--tilt-anchor" in r.stderr and "--depth-anchor" in r.stderr
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--anchor-frame", "canonical",
                "--out", str(tmp_path))
    assert r.returncode != 0 and "--anchor-frame" in r.stderr and "--depth-anchor" in r.stderr
    for opt, bad in (("--refine-steps", "-1"), ("--refine-lr", "0"), ("--collect-iters", "0"),
                     ("--view-supervision", "-0.5")):
        r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", opt, bad, "--out", str(tmp_path))
        assert r.returncode != 0 and opt in r.stderr
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--vgg", str(tmp_path / "vgg.pt"),
                "--out", str(tmp_path))
    assert r.returncode != 0 and "vgg.pt" in r.stderr
    # the training faces of the mean-depth and fitted-ellipsoid baselines: checked before any face is run
    r = run_cli("eval-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "1", "--mean-depth-n", "0",
                "--out", str(tmp_path / "ev0"))
    assert r.returncode != 0 and "--mean-depth-n" in r.stderr and not (tmp_path / "ev0").exists()


def test_vgg_perceptual(tmp_path):
    shapes = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
              14: (256, 256)}
    torch.manual_seed(0)
    sd = {}
    for i, (o, c) in shapes.items():
        sd[f"features.{i}.weight"] = torch.randn(o, c, 3, 3) * 0.05
        sd[f"features.{i}.bias"] = torch.zeros(o)
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # the rest of a torchvision state dict is ignored
    torch.save(sd, tmp_path / "vgg.pt")
    loss = M.VGGPerceptualLoss(tmp_path / "vgg.pt")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(loss(x, x)) == 0 and float(loss(x, -x)) > 0
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a VGG16"):
        M.VGGPerceptualLoss(tmp_path / "bad.pt")


def test_help_lists_options(run_cli):
    r = run_cli("gan2shape", "--help")
    assert r.returncode == 0
    for opt in ("--gan", "--samples", "--image", "--out", "--preset", "--device", "--seed", "--steps-scale", "--vgg",
                "--prior-box", "--depth-anchor", "--tilt-anchor", "--anchor-frame", "--refine-steps", "--refine-lr",
                "--collect-iters"):
        assert opt in r.stdout
    r = run_cli("eval-gan2shape", "--help")
    assert r.returncode == 0 and "--n" in r.stdout and "SIDE" in r.stdout


def test_cli_eval_gan2shape_resume(tmp_path, run_cli, ckpt):
    """An interrupted eval resumes: finished images come from OUT/progress/ (inversion included), the rest
    run, and the result equals the uninterrupted run's; a record made with other settings is an error."""
    out = tmp_path / "ev"

    def cmd(invert_steps="2"):
        return ["eval-gan2shape", "--gan", str(ckpt), "--n", "2", "--preset", "tiny", "--out", str(out),
                "--invert-steps", invert_steps, "--mean-depth-n", "8", "--no-progress", "--threads", "1"]

    args = cmd()
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    full = np.load(out / "depth_pred.npy")
    assert sorted(p.name for p in (out / "progress").iterdir()) == ["test_0000.pt", "test_0001.pt"]
    (out / "progress" / "test_0001.pt").unlink()  # as if stopped during the second image
    (out / "depth_pred.npy").unlink()
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert "test_0000: taken from" in r.stdout and "test_0001: taken from" not in r.stdout
    np.testing.assert_array_equal(np.load(out / "depth_pred.npy"), full)
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["per_image"]) == 2 and all(p["invert_loss"][0] is not None for p in m["per_image"])
    r = run_cli(*cmd(invert_steps="3"), "--resume")
    assert r.returncode != 0 and "other settings" in r.stderr and "invert" in r.stderr


def test_cli_gan2shape_resume_skips_finished_images(tmp_path, run_cli, ckpt):
    out = tmp_path / "g"
    args = ["gan2shape", "--gan", str(ckpt), "--samples", "2", "--preset", "tiny", "--out", str(out),
            "--no-progress", "--threads", "1"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    first = np.load(out / "sample_001" / "depth.npy")
    (out / "progress" / "sample_001.pt").unlink()
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert "sample_000: taken from" in r.stdout and "sample_001: taken from" not in r.stdout
    np.testing.assert_array_equal(np.load(out / "sample_001" / "depth.npy"), first)  # rerun: the same result
    index = json.loads((out / "index.json").read_text())
    assert [i["name"] for i in index["images"]] == ["sample_000", "sample_001"]


def test_cli_gan2shape_runs_out_of_the_box_with_the_shipped_generator(tmp_path, run_cli):
    """The README example without --gan: the shipped synface64 generator and the synface preset (64 px),
    every step count cut to its minimum."""
    out = tmp_path / "g2s"
    r = run_cli("gan2shape", "--samples", "1", "--steps-scale", "0.001", "--out", str(out), "--no-progress",
                "--threads", "1")
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "sample_000" / "result.json").read_text())
    assert info["config"]["preset"] == "synface" and info["config"]["image_size"] == 64
    assert np.load(out / "sample_000" / "depth.npy").shape == (64, 64)
    assert (out / "sample_000" / "rotation.gif").is_file()
