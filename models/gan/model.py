"""The voxel GAN (PrGAN-style, the adversarial variant of "Inverse Graphics", Ucar 2019), on voxrender's
public API.

A 3D generator turns z ~ U(-1, 1)^200 into a voxel grid of occupancies in [0, 1]; the grid is rendered
from a random view with :func:`voxrender.project_volume` (absorption, I = 1 - exp(-tau sum v)); a 2D
discriminator compares these renderings with real images. The generator never sees 3D data: it learns
3D shapes whose projections from every view look like the image set.

- Generator: z (200) -> linear -> C0 x 4^3, BN, ReLU; per stage a 3D transposed convolution (kernel 4,
  stride 2) doubling the grid, BN, ReLU; the last stage gives 1 channel and a sigmoid. Published
  (32^3): C = 256, 128, 64 (4 -> 8 -> 16 -> 32); 64^3: one more stage (256, 128, 64, 32).
- View: one of 8 azimuths k * 45 degrees (PrGAN's discrete views) or an azimuth uniform in [0, 2 pi)
  (continuous; the rendering is differentiable in it), elevation 0.
- Discriminator: 3 x [conv 5x5 stride 2 (256, 512, 1024 channels), BN (not on the first layer, as in
  DCGAN / PrGAN), LeakyReLU 0.2], flatten, linear -> 1 logit. The flattened last conv features are the
  feature-matching layer.
- Losses: D sigmoid cross-entropy (real 1, fake 0); G non-saturating -log D(G(z)) plus feature matching
  (squared distance between the batch means and between the batch variances of the feature layer on real
  and fake images, averaged over the features). D is updated only while its accuracy on the current batch
  (real and fake) is <= 0.8.

``width`` scales every channel count (1.0 = the published sizes; 1/8 makes CPU-size runs).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import voxrender as vr

VIEWS = ("discrete", "continuous")


def _scaled(channels, width: float) -> tuple:
    return tuple(max(1, int(round(c * width))) for c in channels)


@dataclass
class GANConfig:
    """Model settings; the defaults are the published configuration (32^3 grid, 32 x 32 grey images,
    z in U(-1, 1)^200, 8 discrete views, generator 256-128-64, discriminator 256-512-1024)."""

    grid: int = 32
    image_size: int = 32
    channels: int = 1  # grey absorption images (the only mode so far)
    z_dim: int = 200
    g_channels: tuple = (256, 128, 64)  # one entry per stage: grid = 4 * 2^len(g_channels)
    d_channels: tuple = (256, 512, 1024)
    width: float = 1.0  # multiplies every channel count (CPU-size runs: 0.125 or 0.25)
    view: str = "discrete"  # "discrete": k * 45 degrees, k uniform in 0..7; "continuous": U(0, 2 pi)
    n_views: int = 8
    tau: float = 1.0  # absorption scale of the renderer (1: a full voxel absorbs like the built-in data's)
    d_bn_first: bool = False  # BatchNorm after the first D convolution (DCGAN and PrGAN have none there)
    # Initial mean occupancy sigmoid(bias) of the generator's output: with PyTorch's default (0.5 per voxel)
    # every ray of a 32^3 grid sums to ~16 and 1 - exp(-16) renders a saturated white square that gives the
    # generator no gradient; 0.05 starts from faint grey images. None keeps the default initialisation.
    init_occupancy: float | None = 0.05
    fm_weight: float = 1.0  # weight of the feature-matching term in the generator loss
    d_acc_max: float = 0.8  # D is stepped only while its batch accuracy is <= this
    backend: str | None = None

    def __post_init__(self):
        self.g_channels = tuple(int(c) for c in self.g_channels)
        self.d_channels = tuple(int(c) for c in self.d_channels)
        if self.view not in VIEWS:
            raise ValueError(f"view: expected one of {', '.join(VIEWS)}, got {self.view!r}")
        if self.channels != 1:
            raise ValueError(f"channels: the voxel GAN renders grey absorption images (1 channel), got {self.channels}")
        if len(self.g_channels) < 1 or self.grid != 4 * 2 ** len(self.g_channels):
            raise ValueError(f"grid {self.grid} must be 4 * 2^{len(self.g_channels)} = "
                             f"{4 * 2 ** len(self.g_channels)} for g_channels {self.g_channels} (one doubling per "
                             f"entry): 32 with 3 entries, 64 with 4")
        if not self.width > 0:
            raise ValueError(f"width: expected a positive multiplier, got {self.width}")
        if self.image_size < 4 or len(self.d_channels) < 1:
            raise ValueError("image_size must be >= 4 and d_channels non-empty")
        if self.n_views < 1:
            raise ValueError(f"n_views: expected >= 1, got {self.n_views}")

    @property
    def g_widths(self) -> tuple:
        return _scaled(self.g_channels, self.width)

    @property
    def d_widths(self) -> tuple:
        return _scaled(self.d_channels, self.width)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["g_channels"], d["d_channels"] = list(self.g_channels), list(self.d_channels)
        return d

    @classmethod
    def for_grid(cls, grid: int = 32, **kw) -> "GANConfig":
        """Defaults for a grid size: 32 -> (256, 128, 64), 64 -> (256, 128, 64, 32); the image size
        follows the grid unless given."""
        kw.setdefault("image_size", grid)
        if "g_channels" not in kw:
            stages = int(round(math.log2(max(grid, 8) / 4)))
            base = (256, 128, 64, 32, 16, 8)
            kw["g_channels"] = base[:stages]
        return cls(grid=grid, **kw)


class Generator(nn.Module):
    """z (B, z_dim) -> occupancy (B, G, G, G) in [0, 1]."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        ch = cfg.g_widths
        self.c0 = ch[0]
        self.fc = nn.Linear(cfg.z_dim, ch[0] * 4 ** 3)
        self.bn0 = nn.BatchNorm3d(ch[0])
        layers = []
        chans = list(ch) + [1]
        for i in range(len(ch)):
            layers.append(nn.ConvTranspose3d(chans[i], chans[i + 1], 4, stride=2, padding=1))
            if i + 1 < len(ch):
                layers += [nn.BatchNorm3d(chans[i + 1]), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        if cfg.init_occupancy is not None:
            p = float(cfg.init_occupancy)
            with torch.no_grad():
                layers[-1].bias.fill_(math.log(p / (1 - p)))

    def logits(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(-1, self.c0, 4, 4, 4)
        return self.net(F.relu(self.bn0(h)))[:, 0]

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(z))


class Discriminator(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> (logits (B,), features (B, F)): the features are the flattened
    output of the last convolution block (the feature-matching layer). ``in_channels`` (default
    ``cfg.channels``, 1) lets the VAE's novel-view term judge RGB images with the same architecture."""

    def __init__(self, cfg: GANConfig, in_channels: int | None = None):
        super().__init__()
        layers, c, size = [], in_channels or cfg.channels, cfg.image_size
        for i, w in enumerate(cfg.d_widths):
            layers.append(nn.Conv2d(c, w, 5, stride=2, padding=2))
            if i > 0 or cfg.d_bn_first:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2))
            c, size = w, (size + 1) // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.out = nn.Linear(c * size * size, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x * 2 - 1)  # [0, 1] images to [-1, 1]
        return self.out(f)[:, 0], f


def sample_z(n: int, z_dim: int, device=None, generator: torch.Generator | None = None) -> Tensor:
    """z ~ U(-1, 1)^z_dim (the global torch RNG unless ``generator``)."""
    if generator is not None:
        return (torch.rand(n, z_dim, generator=generator) * 2 - 1).to(device)
    return torch.rand(n, z_dim, device=device) * 2 - 1


def d_loss_and_accuracy(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """D's sigmoid cross-entropy (real -> 1, fake -> 0; the sum of the two batch means) and its accuracy:
    the share of real logits > 0 and fake logits < 0 over both batches."""
    loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    correct = (real_logits > 0).sum() + (fake_logits < 0).sum()
    acc = correct.double() / (real_logits.numel() + fake_logits.numel())  # float64: 8/10 is 0.8 exactly
    return loss, acc


def g_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """The non-saturating generator loss -log sigmoid(D(G(z))) (batch mean)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def feature_matching_loss(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """mean_j (mean_b r_bj - mean_b f_bj)^2 + mean_j (var_b r_bj - var_b f_bj)^2 over a (B, F) feature
    layer (biased batch variance). The real features are treated as constants."""
    r, f = real_features.detach().flatten(1), fake_features.flatten(1)
    dm = r.mean(0) - f.mean(0)
    dv = r.var(0, unbiased=False) - f.var(0, unbiased=False)
    return (dm ** 2).mean() + (dv ** 2).mean()


class VoxelGAN(nn.Module):
    """Generator, discriminator and the renderer of the voxel GAN (see the module docstring)."""

    def __init__(self, cfg: GANConfig | None = None, **kw):
        super().__init__()
        self.cfg = cfg if cfg is not None else GANConfig(**kw)
        self.generator = Generator(self.cfg)
        self.discriminator = Discriminator(self.cfg)
        self.render = vr.VolumeProjector(image_size=self.cfg.image_size, tau=self.cfg.tau, backend=self.cfg.backend)

    def sample_z(self, n: int, device=None, generator: torch.Generator | None = None) -> Tensor:
        return sample_z(n, self.cfg.z_dim, device, generator)

    def sample_views(self, n: int, device=None) -> Tensor:
        """Azimuths (n,) of the fake images: k * 2 pi / n_views (discrete) or U(0, 2 pi) (continuous)."""
        c = self.cfg
        if c.view == "discrete":
            k = torch.randint(0, c.n_views, (n,), device=device)
            return k.float() * (2 * math.pi / c.n_views)
        return torch.rand(n, device=device) * (2 * math.pi)

    def project(self, occupancy: Tensor, azimuth: Tensor) -> Tensor:
        """(B, G, G, G) occupancy in [0, 1] seen at (B,) azimuths: (B, 1, H, W) images in [0, 1]."""
        return self.render(occupancy, azimuth=azimuth)

    def fake(self, n: int, device=None) -> dict:
        """z, views, voxels and their renderings for a batch of ``n`` fakes (global torch RNG)."""
        z = self.sample_z(n, device)
        theta = self.sample_views(n, device)
        voxels = self.generator(z)
        return {"z": z, "theta": theta, "voxels": voxels, "image": self.project(voxels, theta)}

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        """Eval-mode occupancies (B, G, G, G) for given latents."""
        was = self.generator.training
        self.generator.eval()
        try:
            return self.generator(z)
        finally:
            self.generator.train(was)
