"""The voxel VAE (models/vae, installed as voxrender.models.vae): shapes, objective, clipping, pose, training."""

import math

import pytest
import torch

from voxrender.models.vae import (VAEConfig, VoxelVAE, clip_latents, gaussian_kl, latent_loss,
                                  reconstruction_loss)


pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: one thread is faster and steadier


def test_published_defaults():
    c = VAEConfig()
    assert (c.image_size, c.grid, c.z_dim, c.latent_dim, c.clip_z) == (28, 28, 19, 20, 20)
    assert c.pose == "encoder" and c.tau == 0.5 and c.enc_channels == 128 and c.dec_channels == (128, 64)
    m = VoxelVAE()
    convs = [l for l in m.encoder.features if isinstance(l, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(l.stride == (2, 2) and l.out_channels == 128 for l in convs)
    assert m.decoder.start == 7 and m.decoder.fc.out_features == 128 * 7 ** 3
    with torch.no_grad():
        out = m.eval()(torch.rand(2, 1, 28, 28))
    assert out["voxels"].shape == (2, 28, 28, 28) and out["recon"].shape == (2, 1, 28, 28)
    assert out["mu"].shape == (2, 20) and out["z"].shape == (2, 19) and out["theta"].shape == (2,)
    assert 0 <= float(out["voxels"].min()) and float(out["voxels"].max()) <= 2
    assert ((out["theta"] > 0) & (out["theta"] < 2 * math.pi)).all()


@pytest.mark.parametrize("grid,kw", [(32, {}), (64, {}), (16, {"channels": 3, "texture": True, "image_size": 24}),
                                     (16, {"pose": "uniform"})])
def test_options_shapes(grid, kw):
    cfg = VAEConfig.for_grid(grid, enc_channels=8, **({"dec_channels": (8,)} if grid == 16 else {}), **kw)
    m = VoxelVAE(cfg)
    x = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size)
    out = m(x)
    assert out["voxels"].shape == (2, grid, grid, grid)
    assert out["recon"].shape == x.shape
    if cfg.channels == 3:
        assert out["colour"].shape == (2, 3, grid, grid, grid)
    if cfg.texture:
        assert out["texture"].shape == x.shape
        assert m.texture[0].in_features == 3 * 24 * 24 and m.texture[0].out_features == 1000
    loss, logs = m.loss(x, out)
    assert torch.isfinite(loss) and ("texture" in logs) == cfg.texture
    if cfg.pose == "uniform":
        assert out["mu"].shape == (2, cfg.z_dim)


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig(grid=30)
    with pytest.raises(ValueError, match="pose"):
        VAEConfig(pose="fixed")


def test_latent_clipping_hand_computed():
    z = 20
    mu = torch.tensor([[3.0, 4.0], [60.0, 80.0]])  # norms 5 and 100; bound 6 sqrt(20) = 26.83
    s = torch.tensor([[1.0, 0.0], [0.0, -9.0]])  # norms 1 and 9; bound sqrt(20) = 4.47
    cm, cs = clip_latents(mu, s, z)
    torch.testing.assert_close(cm[0], mu[0])
    torch.testing.assert_close(cm[1].norm(), torch.tensor(6 * math.sqrt(20)))
    torch.testing.assert_close(cm[1], mu[1] * 6 * math.sqrt(20) / 100)
    torch.testing.assert_close(cs[0], s[0])
    torch.testing.assert_close(cs[1], torch.tensor([0.0, -math.sqrt(20)]))


def test_clipping_is_applied_before_sampling():
    m = VoxelVAE(VAEConfig.for_grid(16, enc_channels=8, dec_channels=(8,)))
    with torch.no_grad():
        m.encoder.mu.bias.fill_(1000.0)
        m.encoder.s.bias.fill_(-1000.0)
    mu, s = m.encode(torch.rand(3, 1, 16, 16))
    torch.testing.assert_close(mu.norm(dim=1), torch.full((3,), 6 * math.sqrt(20)))
    torch.testing.assert_close(s.norm(dim=1), torch.full((3,), math.sqrt(20)))


def test_objective_values_hand_computed():
    mu = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    s = torch.tensor([[-1.0, -1.0], [0.5, -2.0]])
    # |(1 - 2 + 3 + 0.5) / 2| + |(-1 - 1 + 0.5 - 2) / 2| = 1.25 + 1.75
    assert float(latent_loss(mu, s)) == pytest.approx(3.0)
    x = torch.zeros(2, 1, 2, 2)
    y = torch.ones(2, 1, 2, 2)
    y[1] = 0.5  # per-image SSE: 4 and 1 -> mean 2.5
    assert float(reconstruction_loss(y, x)) == pytest.approx(2.5)
    kl = 0.5 * ((mu ** 2 + s.exp() - 1 - s).sum(1)).mean()
    assert float(gaussian_kl(mu, s)) == pytest.approx(float(kl))


def test_model_loss_is_the_mu_vae_objective():
    torch.manual_seed(0)
    m = VoxelVAE(VAEConfig.for_grid(16, enc_channels=8, dec_channels=(8,), beta=0.5))
    x = torch.rand(4, 1, 16, 16)
    out = m(x)
    loss, logs = m.loss(x, out)
    mu, s = out["mu"], out["s"]
    expect = (((out["recon"] - x) ** 2).flatten(1).sum(1).mean()
              + 0.5 * ((mu[:, :19].sum() / 4).abs() + (s[:, :19].sum() / 4).abs()
                       + (mu[:, 19:].sum() / 4).abs() + (s[:, 19:].sum() / 4).abs()))
    torch.testing.assert_close(loss, expect)
    assert set(logs) >= {"loss", "recon", "latent", "kl"}


def test_pose_gets_its_gradient_through_the_renderer():
    torch.manual_seed(0)
    m = VoxelVAE(VAEConfig.for_grid(16, enc_channels=8, dec_channels=(8,)))
    x = torch.rand(3, 1, 16, 16)
    out = m(x)
    theta = out["theta"]
    theta.retain_grad()
    reconstruction_loss(out["recon"], x).backward()
    assert theta.grad is not None and theta.grad.abs().sum() > 0
    assert m.pose_mlp.net[0].weight.grad.abs().sum() > 0
    # the pose latent's mu row of the encoder receives gradient (independent latent variable)
    assert m.encoder.mu.weight.grad[19].abs().sum() > 0


def test_uniform_pose_is_independent_of_the_image():
    torch.manual_seed(0)
    m = VoxelVAE(VAEConfig.for_grid(16, enc_channels=8, dec_channels=(8,), pose="uniform"))
    x = torch.rand(512, 1, 16, 16)[:, :, :, :]
    th = m.sample_theta(4096)
    assert 0 <= float(th.min()) and float(th.max()) < 2 * math.pi and abs(float(th.mean()) - math.pi) < 0.15
    r = m.reconstruct(x[:4])  # render-and-compare pose at evaluation
    assert r["theta"].shape == (4,)


def test_a_few_steps_decrease_the_loss():
    from voxrender.data.voxel_shapes import VoxelShapes

    torch.manual_seed(0)
    m = VoxelVAE(VAEConfig.for_grid(16, enc_channels=16, dec_channels=(16,)))
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    x = VoxelShapes("train", 16, length=16).get_batch(range(16))["image"]
    losses = []
    for _ in range(12):
        loss, _ = m.loss(x)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


# -- the novel-view adversarial term (VAEConfig.adversarial; the demo's setting) -------------------------

ADV_TINY = {"model": "vae", "lr": 2e-3, "grad_clip": 1.0, "batch_size": 8,
            "vae": {"image_size": 16, "grid": 16, "z_dim": 4, "enc_channels": 8, "dec_channels": [8],
                    "pose_hidden": 8, "adversarial": 10.0, "adv_width": 0.03125},
            "data": {"name": "synthetic", "length": 40, "seed": 0, "kinds": None}}


def test_adversarial_config_checks():
    with pytest.raises(ValueError, match="adversarial"):
        VAEConfig(adversarial=-1.0)
    assert VAEConfig().adversarial == 0.0  # the published objective has no such term


@pytest.mark.parametrize("channels", [1, 3])
def test_adversarial_step_updates_vae_and_discriminator(channels):
    """Grey (absorption) and RGB (emission-absorption): the discriminator judges the VAE's own channels."""
    import copy

    from voxrender.data.voxel_shapes import VoxelShapes
    from voxrender.models.vae.train import build_task

    torch.manual_seed(0)
    config = copy.deepcopy(ADV_TINY)
    config["vae"]["channels"] = channels
    task = build_task(config)
    assert task.disc.features[0].in_channels == channels
    assert set(task.modules) == {"model", "view_disc"} and set(task.optimizers) == {"adam", "view_disc"}
    # The clip and the VAE's Adam cover the VAE only; the discriminator has its own optimizer.
    assert {id(p) for p in task.parameters()}.isdisjoint({id(p) for p in task.disc.parameters()})
    x = VoxelShapes("train", 16, length=8, rgb=channels == 3).get_batch(range(8))["image"]
    assert x.shape[1] == channels
    dec0 = [p.detach().clone() for p in task.model.decoder.parameters()]
    disc0 = [p.detach().clone() for p in task.disc.parameters()]

    class T:  # the trainer interface training_step uses
        def check_finite(self, loss, logs=None):
            assert torch.isfinite(loss)

    logs = task.training_step({"image": x}, T())
    assert {"adv", "d_loss", "d_acc", "d_step", "recon"} <= set(logs)
    assert any(not torch.equal(a, b) for a, b in zip(dec0, task.model.decoder.parameters()))
    moved = any(not torch.equal(a, b) for a, b in zip(disc0, task.disc.parameters()))
    assert moved == bool(logs["d_step"])  # the discriminator moves exactly when its gate lets it


def test_adversarial_term_reaches_the_decoder_through_the_renderer():
    from voxrender.models.vae.train import view_discriminator

    torch.manual_seed(0)
    cfg = VAEConfig.for_grid(16, z_dim=4, enc_channels=8, dec_channels=(8,), adversarial=1.0, adv_width=0.03125)
    m, d = VoxelVAE(cfg), view_discriminator(cfg)
    voxels, _ = m.decode(torch.randn(4, 4))
    fake = m.project(voxels, torch.rand(4) * 6.28)
    logits, _ = d(fake)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.decoder.parameters())


def test_adversarial_resume_is_bit_for_bit(tmp_path):
    import copy
    import os
    import signal

    from voxrender.model_cli import train_run
    from voxrender.training import load_checkpoint

    full, _ = train_run(copy.deepcopy(ADV_TINY), tmp_path / "a", steps=6, ckpt_every=0, progress=False, seed=3)

    def interrupt(trainer, logs):
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    part, status = train_run(copy.deepcopy(ADV_TINY), tmp_path / "b", steps=6, ckpt_every=0, progress=False,
                             seed=3, on_step=interrupt)
    assert status == "interrupted" and part.step == 3
    rest, status = train_run(None, tmp_path / "b", steps=6, resume=True, progress=False)
    hist = [[h[k] for k in ("loss", "adv", "d_loss")] for h in full.history]
    assert [[h[k] for k in ("loss", "adv", "d_loss")] for h in part.history + rest.history] == hist
    a = load_checkpoint(tmp_path / "a" / "last.ckpt")["task"]["modules"]
    b = load_checkpoint(tmp_path / "b" / "last.ckpt")["task"]["modules"]
    for name in ("model", "view_disc"):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name])


def test_adversarial_steps_lower_the_objective():
    import copy

    from voxrender.data.voxel_shapes import VoxelShapes
    from voxrender.models.vae.train import build_task

    torch.manual_seed(0)
    cfg = copy.deepcopy(ADV_TINY)
    cfg["vae"]["adversarial"] = 1.0  # the demo's weight
    task = build_task(cfg)
    x = VoxelShapes("train", 16, length=8).get_batch(range(8))["image"]

    class T:
        def check_finite(self, loss, logs=None):
            assert torch.isfinite(loss)

    recon = [float(task.training_step({"image": x}, T())["recon"]) for _ in range(12)]
    assert recon[-1] < 0.8 * recon[0]  # the reconstruction still trains with the adversarial term on
