"""Training the voxel VAE with :mod:`voxrender.training` (used by ``voxrender train vae`` and ``demo``)."""

from __future__ import annotations

import math

import torch

from voxrender.models.gan.model import (Discriminator, GANConfig, d_loss_and_accuracy, feature_matching_loss,
                                        g_adversarial_loss)
from voxrender.training import TrainTask, all_reduce_mean, average_gradients, maybe_ddp

from .model import VAEConfig, VoxelVAE


def default_train_config() -> dict:
    """The published training settings: Adam lr 1e-3, gradient-norm clip 1.0, batch 64, 15 epochs."""
    return {"lr": 1e-3, "grad_clip": 1.0, "batch_size": 64, "epochs": 15}


def view_discriminator(cfg: VAEConfig) -> Discriminator:
    """The novel-view discriminator of ``cfg.adversarial``: the voxel GAN's image discriminator (3 x conv 5x5
    stride 2, 256 / 512 / 1024 channels times ``cfg.adv_width``, linear -> 1) at the VAE's image size and
    channels (grey or RGB)."""
    return Discriminator(GANConfig(image_size=cfg.image_size, width=cfg.adv_width), in_channels=cfg.channels)


class VAETask(TrainTask):
    """The mu-VAE objective on image batches (``batch["image"]``), Adam, gradient-norm clipping; with
    ``cfg.adversarial > 0`` also the novel-view discriminator and its Adam (lr ``cfg.adv_lr``, beta1 0.5)."""

    def __init__(self, cfg: VAEConfig, lr: float = 1e-3, grad_clip: float | None = 1.0, device: str = "cpu"):
        self.cfg = cfg
        self.model = VoxelVAE(cfg).to(device)
        self.net = maybe_ddp(self.model, device)  # the forward to call (DDP syncs gradients)
        self.modules = {"model": self.model}
        self.optimizers = {"adam": torch.optim.Adam(self.model.parameters(), lr=lr)}
        self.grad_clip = grad_clip
        self.disc = None
        if cfg.adversarial > 0:
            self.disc = view_discriminator(cfg).to(device)
            self.modules["view_disc"] = self.disc
            self.optimizers["view_disc"] = torch.optim.Adam(self.disc.parameters(), lr=cfg.adv_lr, betas=(0.5, 0.999))

    def compute_loss(self, batch: dict):
        x = batch["image"]
        out = self.net(x)
        return self.model.loss(x, out)

    def parameters(self):  # what the gradient-norm clip covers: the VAE (the discriminator is not clipped)
        return self.model.parameters()

    def training_step(self, batch: dict, trainer) -> dict:
        if self.disc is None:
            return super().training_step(batch, trainer)
        cfg, x = self.cfg, batch["image"]
        out = self.net(x)
        loss, logs = self.model.loss(x, out)
        # Novel views: each reconstructed shape from a random azimuth (global torch RNG: saved by the
        # trainer, so --resume stays bit-exact).
        theta = torch.rand(x.shape[0], device=x.device) * (2 * math.pi)
        fake = self.model.project(out["voxels"], theta, out["colour"])
        real_logits, real_feat = self.disc(x)
        fake_logits, _ = self.disc(fake.detach())
        d_loss, acc = d_loss_and_accuracy(real_logits, fake_logits)
        acc = acc.detach().double().clone()
        all_reduce_mean([acc.view(1)])
        g_logits, fake_feat = self.disc(fake)
        adv = g_adversarial_loss(g_logits) + cfg.adv_fm * feature_matching_loss(real_feat.detach(), fake_feat)
        total = loss + cfg.adversarial * adv
        logs.update(adv=adv.detach(), d_loss=d_loss.detach(), d_acc=acc, loss=total.detach())
        trainer.check_finite(total, logs)  # both checked before any update
        trainer.check_finite(d_loss, logs)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip:
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(list(self.model.parameters()), self.grad_clip).detach()
        self.optimizers["adam"].step()
        # The discriminator: real vs the detached novel views, stepped while its accuracy is <= adv_gate
        # (as the voxel GAN's); the gradients the generator's loss left in it are dropped first.
        self.optimizers["view_disc"].zero_grad(set_to_none=True)
        if float(acc) <= cfg.adv_gate + 1e-6:
            d_loss.backward()
            average_gradients(self.disc)
            self.optimizers["view_disc"].step()
        logs["d_step"] = torch.tensor(float(float(acc) <= cfg.adv_gate + 1e-6))
        return logs


def build_task(config: dict, device: str = "cpu") -> VAETask:
    """The task from a run's config dict (``config["vae"]``: VAEConfig fields; ``lr``, ``grad_clip``)."""
    cfg = VAEConfig(**config["vae"])
    return VAETask(cfg, lr=config.get("lr", 1e-3), grad_clip=config.get("grad_clip", 1.0), device=device)


def load_model(ckpt: dict, device: str = "cpu") -> VoxelVAE:
    """The trained VoxelVAE of a checkpoint dict (eval mode)."""
    cfg = VAEConfig(**ckpt["config"]["vae"])
    model = VoxelVAE(cfg).to(device)
    model.load_state_dict(ckpt["task"]["modules"]["model"])
    return model.eval()
