"""Training the voxel VAE with :mod:`voxrender.training` (used by ``voxrender train vae`` and ``demo``)."""

from __future__ import annotations

import torch

from voxrender.training import TrainTask, maybe_ddp

from .model import VAEConfig, VoxelVAE


def default_train_config() -> dict:
    """The published training settings: Adam lr 1e-3, gradient-norm clip 1.0, batch 64, 15 epochs."""
    return {"lr": 1e-3, "grad_clip": 1.0, "batch_size": 64, "epochs": 15}


class VAETask(TrainTask):
    """The mu-VAE objective on image batches (``batch["image"]``), Adam, gradient-norm clipping."""

    def __init__(self, cfg: VAEConfig, lr: float = 1e-3, grad_clip: float | None = 1.0, device: str = "cpu"):
        self.cfg = cfg
        self.model = VoxelVAE(cfg).to(device)
        self.net = maybe_ddp(self.model, device)  # the forward to call (DDP syncs gradients)
        self.modules = {"model": self.model}
        self.optimizers = {"adam": torch.optim.Adam(self.model.parameters(), lr=lr)}
        self.grad_clip = grad_clip

    def compute_loss(self, batch: dict):
        x = batch["image"]
        out = self.net(x)
        return self.model.loss(x, out)

    def parameters(self):
        return self.model.parameters()


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
