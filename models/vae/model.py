"""The voxel VAE of "Inverse Graphics" (Ucar 2019) with the mu-VAE objective, on voxrender's public API.

An image is encoded to a shape latent (and, with ``pose="encoder"``, a pose latent); the decoder turns the
shape latent into a voxel grid (2 sigmoid(logits), rendered with tau 0.5, so I = 1 - exp(-sum sigmoid)),
the pose latent becomes an azimuth theta = (z_theta + 1) pi through a small tanh MLP, and
:func:`voxrender.project_volume` renders the grid at theta. The loss compares the rendering with the input,
so shape and pose are learned from single images with no 3D or pose supervision; theta gets its gradient
through the renderer.

Pose options (``VAEConfig.pose``):
- ``"encoder"`` (the paper's "independent latent variable"): mu and s of one more latent come from the
  encoder, z_pose = mu + exp(s / 2) eps, theta = (tanh-MLP(z_pose) + 1) pi.
- ``"uniform"`` (the paper's third contribution): theta ~ U(0, 2 pi) for every image, independent of it.

``VAEConfig.adversarial > 0`` adds a novel-view adversarial term (training only; see
:mod:`voxrender.models.vae.train`): the reconstructed shape rendered from random azimuths must look like
the training images to a small image discriminator. It keeps the pose-as-latent model from drawing
billboards, and is what the demo uses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

import voxrender as vr

POSES = ("encoder", "uniform")


@dataclass
class VAEConfig:
    """Model settings. The defaults are the published configuration (28 x 28 grey images, 28^3 grid,
    19 + 1 latents); grid/image 32 or 64 and RGB (``channels=3``, emission-absorption) are options."""

    image_size: int = 28
    channels: int = 1  # 1: grey absorption images; 3: RGB emission-absorption (the decoder adds colour)
    grid: int = 28
    z_dim: int = 19  # shape latents (the pose latent is one more)
    pose: str = "encoder"
    enc_channels: int = 128
    dec_channels: tuple = (128, 64)  # one entry per upsampling stage (grid = start * 2^stages)
    pose_hidden: int = 32
    tau: float = 0.5
    beta: float = 1.0
    clip_latents: bool = True
    texture: bool = False  # the optional texture head: MLP (C H W -> 1000 -> C H W) on the rendering
    texture_hidden: int = 1000
    # Initial mean occupancy sigmoid(logit) of the decoder's output (its last bias): an empty-ish start, so
    # that the first renderings are not saturated (with the default bias every ray sums to ~G/2 and
    # 1 - exp(-G/2) leaves no gradient). None keeps PyTorch's default initialisation.
    init_occupancy: float | None = 0.05
    # Novel-view adversarial term (off in the published configuration; the demo's fix for the pose-as-latent
    # model): renderings of the reconstructed shapes from random azimuths go to a small image discriminator
    # (models/gan's, channels x adv_width) that compares them with the training images; the decoder and
    # encoder get adversarial * (non-saturating loss + adv_fm * feature matching). A "billboard" (a thin slab
    # facing the predicted view) reproduces any input but shows a thin bar from the side, which the
    # discriminator rejects. See docs/models.md.
    adversarial: float = 0.0
    adv_width: float = 0.125
    adv_lr: float = 2e-4
    adv_fm: float = 1.0
    adv_gate: float = 0.8  # the discriminator is stepped only while its batch accuracy is <= this
    backend: str | None = None

    def __post_init__(self):
        self.dec_channels = tuple(int(c) for c in self.dec_channels)
        if self.adversarial < 0:
            raise ValueError(f"adversarial: expected a weight >= 0, got {self.adversarial}")
        if self.pose not in POSES:
            raise ValueError(f"pose: expected one of {', '.join(POSES)}, got {self.pose!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels: expected 1 (grey) or 3 (RGB), got {self.channels}")
        stages = len(self.dec_channels)
        if stages < 1 or self.grid % (2 ** stages):
            raise ValueError(f"grid {self.grid} must be divisible by 2^{stages} (one factor 2 per entry of "
                             f"dec_channels {self.dec_channels}); e.g. 28 or 32 with 2 stages, 64 with 3")

    @property
    def latent_dim(self) -> int:
        """Latents the encoder predicts (the shape latents, plus one pose latent with pose='encoder')."""
        return self.z_dim + (1 if self.pose == "encoder" else 0)

    @property
    def clip_z(self) -> int:
        """z of the latent clipping: all latents of the model (shape + pose), 20 in the paper."""
        return self.z_dim + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dec_channels"] = list(self.dec_channels)
        return d

    @classmethod
    def for_grid(cls, grid: int = 28, **kw) -> "VAEConfig":
        """Defaults for a grid size: 28/32 -> two upsampling stages (128, 64), 64 -> three (128, 64, 32).
        The image size follows the grid unless given."""
        kw.setdefault("image_size", grid)
        if "dec_channels" not in kw:
            kw["dec_channels"] = (128, 64, 32) if grid >= 64 else (128, 64)
        return cls(grid=grid, **kw)


def clip_latents(mu: Tensor, s: Tensor, z: int) -> tuple[Tensor, Tensor]:
    """The mu-VAE's latent clipping, per sample b: mu_b <- mu_b min(1, 6 sqrt(z) / ||mu_b||),
    s_b <- s_b min(1, sqrt(z) / ||s_b||) (differentiable; a vector inside the ball is unchanged)."""
    bound_mu, bound_s = 6.0 * math.sqrt(z), math.sqrt(z)
    mu = mu * torch.clamp(bound_mu / mu.norm(dim=1, keepdim=True).clamp_min(1e-12), max=1.0)
    s = s * torch.clamp(bound_s / s.norm(dim=1, keepdim=True).clamp_min(1e-12), max=1.0)
    return mu, s


def latent_loss(mu: Tensor, s: Tensor) -> Tensor:
    """The mu-VAE latent term: | (1/B) sum_b sum_j mu_bj | + | (1/B) sum_b sum_j s_bj |."""
    b = mu.shape[0]
    return (mu.sum() / b).abs() + (s.sum() / b).abs()


def gaussian_kl(mu: Tensor, s: Tensor) -> Tensor:
    """KL(N(mu, e^s) || N(0, 1)) summed over latents, batch mean (logged, not optimised)."""
    return (-0.5 * (1 + s - mu ** 2 - s.exp()).sum(1)).mean()


def reconstruction_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image sum of squared errors, batch mean."""
    return ((pred - target) ** 2).flatten(1).sum(1).mean()


class Encoder(nn.Module):
    """4 x [conv 3x3 stride 2, BN, LeakyReLU 0.2] (28 -> 14 -> 7 -> 4 -> 2), flatten, heads mu and s."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        layers, c, size = [], cfg.channels, cfg.image_size
        for _ in range(4):
            layers += [nn.Conv2d(c, cfg.enc_channels, 3, stride=2, padding=1), nn.BatchNorm2d(cfg.enc_channels),
                       nn.LeakyReLU(0.2)]
            c, size = cfg.enc_channels, (size + 1) // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = cfg.enc_channels * size * size
        self.mu = nn.Linear(flat, cfg.latent_dim)
        self.s = nn.Linear(flat, cfg.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h), self.s(h)


class Decoder(nn.Module):
    """linear z -> C0 x s0^3, BN, LeakyReLU; per stage deconv3d 3^3 stride 2 (doubling), BN, LeakyReLU;
    the last stage outputs the density logits (and, for RGB, 3 colour logits). 28^3: 7 -> 14 -> 28."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        stages = len(cfg.dec_channels)
        self.start = cfg.grid // 2 ** stages
        self.c0 = cfg.dec_channels[0]
        self.fc = nn.Linear(cfg.z_dim, self.c0 * self.start ** 3)
        self.bn0 = nn.BatchNorm3d(self.c0)
        out_ch = 1 + (3 if cfg.channels == 3 else 0)
        chans = list(cfg.dec_channels) + [out_ch]
        layers = []
        for i in range(stages):
            layers.append(nn.ConvTranspose3d(chans[i], chans[i + 1], 3, stride=2, padding=1, output_padding=1))
            if i + 1 < stages:
                layers += [nn.BatchNorm3d(chans[i + 1]), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)
        self.act = nn.LeakyReLU(0.2)
        if cfg.init_occupancy is not None:
            p = float(cfg.init_occupancy)
            with torch.no_grad():
                layers[-1].bias[0].fill_(math.log(p / (1 - p)))

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(-1, self.c0, self.start, self.start, self.start)
        return self.net(self.act(self.bn0(h)))  # (B, 1 or 4, G, G, G) logits


class PoseMLP(nn.Module):
    """z_pose (B, 1) -> z_theta in (-1, 1): Linear, tanh, Linear, tanh. theta = (z_theta + 1) pi."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return (self.net(z)[:, 0] + 1) * math.pi


class VoxelVAE(nn.Module):
    """Encoder, voxel decoder, pose MLP, renderer (``voxrender.VolumeProjector``), optional texture head.

    ``forward(x)`` returns a dict: ``mu``, ``s`` (clipped), ``z`` (shape latent used), ``theta`` (B,),
    ``voxels`` (B, G, G, G) = 2 sigmoid(logits) in [0, 2], ``colour`` (B, 3, G, G, G) or None, ``recon``
    (B, C, H, W), ``texture`` or None. In training mode latents are sampled; in eval mode z = mu.
    """

    def __init__(self, cfg: VAEConfig | None = None, **kw):
        super().__init__()
        self.cfg = cfg if cfg is not None else VAEConfig(**kw)
        c = self.cfg
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.pose_mlp = PoseMLP(c.pose_hidden)
        mode = "emission_absorption" if c.channels == 3 else "absorption"
        self.render = vr.VolumeProjector(image_size=c.image_size, tau=c.tau, mode=mode, backend=c.backend)
        n = c.channels * c.image_size ** 2
        self.texture = (nn.Sequential(nn.Linear(n, c.texture_hidden), nn.LeakyReLU(0.2),
                                      nn.Linear(c.texture_hidden, n), nn.Sigmoid()) if c.texture else None)

    # -- pieces -------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder outputs (mu, s), (B, latent_dim) each, after the latent clipping (if enabled)."""
        mu, s = self.encoder(x)
        if self.cfg.clip_latents:
            mu, s = clip_latents(mu, s, self.cfg.clip_z)
        return mu, s

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """Shape latent (B, z_dim) -> voxels (B, G, G, G) in [0, 2] and colour (B, 3, G, G, G) or None."""
        logits = self.decoder(z)
        voxels = 2 * torch.sigmoid(logits[:, 0])
        colour = torch.sigmoid(logits[:, 1:]) if self.cfg.channels == 3 else None
        return voxels, colour

    def project(self, voxels: Tensor, theta: Tensor, colour: Tensor | None = None) -> Tensor:
        """Renders (B, G, G, G) voxels at azimuths theta: (B, C, H, W)."""
        if colour is None:
            return self.render(voxels, azimuth=theta)
        return self.render(voxels, azimuth=theta, features=colour)[:, :3]

    def occupancy(self, voxels: Tensor) -> Tensor:
        """Voxels in [0, 2] -> occupancy in [0, 1] (sigmoid(logits)): the evaluation's prediction."""
        return voxels / 2

    def sample_theta(self, n: int, device=None) -> Tensor:
        """Azimuths from the uniform prior U(0, 2 pi) (global torch RNG)."""
        return torch.rand(n, device=device) * (2 * math.pi)

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x: Tensor, theta: Tensor | None = None) -> dict:
        c = self.cfg
        mu, s = self.encode(x)
        if self.training:
            latent = mu + torch.exp(0.5 * s) * torch.randn_like(mu)
        else:
            latent = mu
        z = latent[:, :c.z_dim]
        if theta is None:
            if c.pose == "encoder":
                theta = self.pose_mlp(latent[:, c.z_dim:])
            else:
                theta = self.sample_theta(x.shape[0], x.device)
        voxels, colour = self.decode(z)
        recon = self.project(voxels, theta, colour)
        texture = None
        if self.texture is not None:
            texture = self.texture(recon.flatten(1)).view_as(recon)
        return {"mu": mu, "s": s, "z": z, "theta": theta, "voxels": voxels, "colour": colour, "recon": recon,
                "texture": texture}

    def loss(self, x: Tensor, out: dict | None = None) -> tuple[Tensor, dict]:
        """The mu-VAE objective: per-image SSE (batch mean) + beta (|mean sum mu| + |mean sum s|), the
        latent term taken separately over the shape and the pose latents, + the texture head's SSE.
        Returns (loss, logs) with the Gaussian KL logged (not optimised)."""
        out = self(x) if out is None else out
        c = self.cfg
        recon = reconstruction_loss(out["recon"], x)
        mu, s = out["mu"], out["s"]
        lat = latent_loss(mu[:, :c.z_dim], s[:, :c.z_dim])
        if c.pose == "encoder":
            lat = lat + latent_loss(mu[:, c.z_dim:], s[:, c.z_dim:])
        loss = recon + c.beta * lat
        logs = {"recon": recon.detach(), "latent": lat.detach(), "kl": gaussian_kl(mu, s).detach()}
        if out["texture"] is not None:
            tex = reconstruction_loss(out["texture"], x)
            loss = loss + tex
            logs["texture"] = tex.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> dict:
        """Eval-mode reconstruction (z = mu): the dict of :meth:`forward` with theta from the encoder; for
        the uniform-pose model theta is the render-and-compare best of 36 azimuths."""
        was = self.training
        self.eval()
        try:
            if self.cfg.pose == "encoder":
                return self(x)
            mu, _ = self.encode(x)
            voxels, colour = self.decode(mu[:, :self.cfg.z_dim])
            best, best_err = None, None
            for k in range(36):
                th = torch.full((x.shape[0],), 2 * math.pi * k / 36, device=x.device)
                err = ((self.project(voxels, th, colour) - x) ** 2).flatten(1).sum(1)
                if best is None:
                    best, best_err = th.clone(), err
                else:
                    better = err < best_err
                    best, best_err = torch.where(better, th, best), torch.where(better, err, best_err)
            return self(x, theta=best)
        finally:
            self.train(was)
