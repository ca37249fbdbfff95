"""Training the voxel GAN with :mod:`voxrender.training` (``voxrender train gan``).

One step (:meth:`GANTask.training_step`), on a batch of B real images:

1. B fakes: z ~ U(-1, 1)^200 and a view per fake, voxels G(z), renderings (kept in the graph for step 4).
2. D on the real batch and on the (detached) fake batch: sigmoid cross-entropy, accuracy.
3. If D's accuracy is <= ``d_acc_max`` (0.8): D's Adam step. Otherwise D is left alone this step.
4. G: D (updated) on the fakes: non-saturating loss + ``fm_weight`` x feature matching against the real
   batch's features; G's Adam step (D's parameters take no gradient here).

Noise (z and views) comes from a generator seeded by (run seed, step, rank), not from the global RNG: a
resumed run draws the same fakes, and in a multi-process run every rank draws different ones.
Several processes (``torchrun``): the D accuracy is averaged over the ranks (every rank takes the same
gate decision), gradients are averaged by all-reduce, and BatchNorm statistics are broadcast from rank 0.

A NaN/inf loss stops the run before the update it would poison: D's loss is checked before D's step;
G's loss is checked after D's step and, if it is not finite, D's parameters and Adam state are put back,
so the checkpoint holds the state at the start of the failing step.
"""

from __future__ import annotations

import math

import torch

from voxrender.training import (NonFiniteLoss, ProgressMonitor, TrainTask, all_reduce_mean, average_gradients,
                                dist_info, noise_seed)

from .model import GANConfig, VoxelGAN, d_loss_and_accuracy, feature_matching_loss, g_adversarial_loss


def default_train_config() -> dict:
    """The published training settings: G Adam 2.5e-3, D Adam 1e-4, beta1 0.5 for both, batch 64."""
    return {"lr_g": 2.5e-3, "lr_d": 1e-4, "beta1": 0.5, "batch_size": 64}


def _broadcast_buffers(modules) -> None:
    import torch.distributed as dist

    _, world = dist_info()
    if world == 1:
        return
    for m in modules:
        for b in m.buffers():
            dist.broadcast(b, 0)


class GANTask(TrainTask):
    """The voxel GAN on image batches (``batch["image"]`` (B, 1, H, W) in [0, 1])."""

    def __init__(self, cfg: GANConfig, lr_g: float = 2.5e-3, lr_d: float = 1e-4, beta1: float = 0.5,
                 device: str = "cpu"):
        self.cfg, self.device = cfg, device
        self.model = VoxelGAN(cfg).to(device)
        self.G, self.D = self.model.generator, self.model.discriminator
        self.modules = {"generator": self.G, "discriminator": self.D}
        self.optimizers = {"g": torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=(beta1, 0.999)),
                           "d": torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=(beta1, 0.999))}

    def noise(self, n: int, step: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """z (n, z_dim) and azimuths (n,) of the fakes of ``step`` (0-based) of a run's ``seed`` on this rank."""
        rank, _ = dist_info()
        g = torch.Generator().manual_seed(noise_seed(seed, step, rank))
        z = torch.rand(n, self.cfg.z_dim, generator=g) * 2 - 1
        if self.cfg.view == "discrete":
            theta = torch.randint(0, self.cfg.n_views, (n,), generator=g).float() * (2 * math.pi / self.cfg.n_views)
        else:
            theta = torch.rand(n, generator=g) * (2 * math.pi)
        return z.to(self.device), theta.to(self.device)

    def _d_snapshot(self):
        params = [p.detach().clone() for p in self.D.parameters()]
        st = self.optimizers["d"].state_dict()
        opt = {"state": {k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in s.items()}
                         for k, s in st["state"].items()}, "param_groups": st["param_groups"]}
        return params, opt

    def _d_restore(self, snap) -> None:
        params, opt = snap
        with torch.no_grad():
            for p, old in zip(self.D.parameters(), params):
                p.copy_(old)
        self.optimizers["d"].load_state_dict(opt)

    def training_step(self, batch: dict, trainer) -> dict:
        cfg = self.cfg
        real = batch["image"]
        n = real.shape[0]
        z, theta = self.noise(n, trainer.step, trainer.seed)
        voxels = self.G(z)
        fake = self.model.project(voxels, theta)

        # D: real vs (detached) fake; stepped only while its accuracy is <= d_acc_max.
        real_logits, real_feat = self.D(real)
        fake_logits, _ = self.D(fake.detach())
        d_loss, acc = d_loss_and_accuracy(real_logits, fake_logits)
        acc = acc.detach().double().clone()
        all_reduce_mean([acc.view(1)])
        logs = {"d_loss": d_loss.detach(), "d_acc": acc}
        trainer.check_finite(d_loss, logs)
        step_d = float(acc) <= cfg.d_acc_max + 1e-6  # (an accuracy is a multiple of 1 / (2 B))
        snap = None
        if step_d:
            snap = self._d_snapshot()
            self.optimizers["d"].zero_grad(set_to_none=True)
            d_loss.backward()
            average_gradients(self.D)
            self.optimizers["d"].step()
            with torch.no_grad():  # the real features under the updated D, for feature matching
                _, real_feat = self.D(real)

        # G: non-saturating loss + feature matching, through the (fixed) D and the renderer.
        self.D.requires_grad_(False)
        try:
            g_logits, fake_feat = self.D(fake)
            adv = g_adversarial_loss(g_logits)
            fm = feature_matching_loss(real_feat, fake_feat)
            g_loss = adv + cfg.fm_weight * fm
            logs.update(g_loss=g_loss.detach(), g_adv=adv.detach(), fm=fm.detach(),
                        d_step=torch.tensor(float(step_d)), occupancy=voxels.detach().mean(),
                        loss=(d_loss + g_loss).detach())
            try:
                trainer.check_finite(g_loss, logs)
            except NonFiniteLoss:
                if snap is not None:
                    self._d_restore(snap)
                raise
            self.optimizers["g"].zero_grad(set_to_none=True)
            g_loss.backward()
        finally:
            self.D.requires_grad_(True)
        average_gradients(self.G)
        self.optimizers["g"].step()
        _broadcast_buffers((self.G, self.D))
        return logs


def build_task(config: dict, device: str = "cpu") -> GANTask:
    """The task from a run's config dict (``config["gan"]``: GANConfig fields; ``lr_g``, ``lr_d``, ``beta1``)."""
    d = default_train_config()
    return GANTask(GANConfig(**config["gan"]), lr_g=config.get("lr_g", d["lr_g"]), lr_d=config.get("lr_d", d["lr_d"]),
                   beta1=config.get("beta1", d["beta1"]), device=device)


def load_model(ckpt: dict, device: str = "cpu") -> VoxelGAN:
    """The trained VoxelGAN of a checkpoint dict (eval mode)."""
    cfg = GANConfig(**ckpt["config"]["gan"])
    model = VoxelGAN(cfg).to(device)
    model.generator.load_state_dict(ckpt["task"]["modules"]["generator"])
    model.discriminator.load_state_dict(ckpt["task"]["modules"]["discriminator"])
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# progress bar and sample grids


@torch.no_grad()
def view_grid(model: VoxelGAN, z: torch.Tensor, n_views: int = 8, scale: int = 2):
    """A (3, H', W') picture: one row per latent, its eval-mode shape rendered (what D sees) from
    ``n_views`` azimuths k * 360 / n_views degrees."""
    from voxrender.io import image_grid

    occ = model.generate(z)
    tiles = []
    for i in range(len(z)):
        th = torch.arange(n_views, device=occ.device).float() * (2 * math.pi / n_views)
        tiles += list(model.project(occ[i:i + 1].expand(n_views, -1, -1, -1), th).cpu().clamp(0, 1))
    return image_grid(tiles, ncol=n_views, scale=scale)


class GANMonitor(ProgressMonitor):
    """``on_step`` callback of a GAN run (rank 0): a tqdm bar with D and G losses, D accuracy, mean
    occupancy and images/s; every ``sample_every`` steps (and at the last step) OUT/samples/step_XXXXXX.png
    and OUT/samples.png (8 fixed latents x 8 views)."""

    def __init__(self, out, sample_every: int = 500, progress: bool = True, desc: str = "train gan",
                 n_samples: int = 8):
        super().__init__(out, sample_every, progress, n_samples)
        self.desc = desc

    def postfix(self, logs: dict) -> dict:
        return {"D": f"{logs['d_loss']:.3f}", "G": f"{logs['g_loss']:.3f}", "acc": f"{logs['d_acc']:.2f}",
                "occ": f"{logs['occupancy']:.3f}"}

    def sample_image(self, trainer):
        task = trainer.task
        if self.z is None:
            g = torch.Generator().manual_seed(trainer.seed + 12345)
            self.z = task.model.sample_z(self.n_samples, generator=g).to(task.device)
        return view_grid(task.model, self.z, task.cfg.n_views if task.cfg.view == "discrete" else 8)
