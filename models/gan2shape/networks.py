"""GAN2Shape's networks (Pan et al., ICLR 2021, ``gan2shape/networks.py``), which extend Unsup3d's (Wu et al.
2020, ``unsup3d/networks.py``) to 128 px: written here from their published architectures, generalised to any
power-of-two image size >= 32 (one stride-2 stage per octave).

- :class:`EDDeconv` (depth ``D``: cout 1, no activation; albedo ``A``: cout 3, tanh): encoder of stride-2 4x4
  convolutions (channels nf, 2 nf, 4 nf, ... up to the 4 x 4 level), GroupNorm (4 channels per group, as
  Unsup3d's GroupNorm(16, 64) and GAN2Shape's gn_base 8 at 128 px) and LeakyReLU(0.2), a 4 x 4 conv to a
  ``zdim`` code (ReLU), then the mirror decoder (transposed convs + 3 x 3 convs, GroupNorm, ReLU) up to half
  the size, a nearest x2 upsampling and 3 x 3, 5 x 5, 5 x 5 convs to ``cout``. No biases. At 64 px this is
  Unsup3d's EDDeconv exactly; at 128 px GAN2Shape's (one more stage, nf = 32).
- :class:`Encoder` (viewpoint ``V``: cout 6; light ``L``: cout 4; tanh): stride-2 4 x 4 convs with ReLU down
  to 4 x 4, a 4 x 4 conv, ReLU, a 1 x 1 conv to ``cout``.
- :class:`ResEncoder` (the latent-offset encoder ``E``: cout 512 = the StyleGAN2 style size, no activation):
  a stride-2 4 x 4 conv then residual down-sampling blocks (:class:`ResBlockDown`) down to 4 x 4, a 4 x 4 conv
  to twice the channels, a 1 x 1 conv to ``cout``.

Published widths (:func:`default_nf`): nf = max(4096 // size, 16) for D, A, V and L (64 at 64 px, 32 at 128 px:
GAN2Shape's choice, which keeps the channel counts of the inner stages of its 128 px nets equal to those
of the 64 px ones), zdim 256, and nf = 32 for E. Every class takes ``nf`` (and ``zdim``) for the tiny test /
CI configurations. Inputs are images in [-1, 1], (B, 3, S, S).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EDDeconv", "Encoder", "ResBlockDown", "ResEncoder", "build_networks", "default_nf", "num_stages"]


def num_stages(size: int) -> int:
    """Stride-2 stages from ``size`` down to 4 x 4: log2(size) - 2 (4 at 64 px, 5 at 128 px). Needs a power of
    two >= 32."""
    size = int(size)
    if size < 32 or size & (size - 1):
        raise ValueError(f"image size must be a power of two >= 32, got {size}")
    return int(math.log2(size)) - 2


def default_nf(size: int) -> int:
    """GAN2Shape's width of D, A, V and L: max(4096 // size, 16)."""
    return max(4096 // int(size), 16)


def _output_activation(name: str | None) -> list:
    """The last layer of an Unsup3d network: [Tanh] for "tanh", nothing for None (parameter-free, so the
    state-dict keys are the same either way)."""
    if name == "tanh":
        return [nn.Tanh()]
    if name is not None:
        raise ValueError(f"activation: expected 'tanh' or None, got {name!r}")
    return []


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, c // 4), c)  # 4 channels per group, the published ratio


class EDDeconv(nn.Module):
    """Unsup3d / GAN2Shape encoder-decoder: (B, cin, S, S) -> (B, cout, S, S).

    Args:
        cin, cout: channels in and out. size: S (a power of two >= 32). zdim: bottleneck size (256).
        nf: base width (default :func:`default_nf`). activation: "tanh" (albedo) or None (depth).
    """

    def __init__(self, cin: int = 3, cout: int = 1, size: int = 64, zdim: int = 256, nf: int | None = None,
                 activation: str | None = "tanh"):
        super().__init__()
        n = num_stages(size)
        nf = default_nf(size) if nf is None else int(nf)
        ch = [nf * 2 ** i for i in range(n)]
        self.size, self.cin, self.cout, self.zdim, self.nf = int(size), cin, cout, zdim, nf
        layers: list[nn.Module] = [nn.Conv2d(cin, ch[0], 4, 2, 1, bias=False)]
        for i in range(1, n):
            layers += [_gn(ch[i - 1]), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ch[i - 1], ch[i], 4, 2, 1, bias=False)]
        layers += [nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ch[-1], zdim, 4, 1, 0, bias=False), nn.ReLU(inplace=True)]
        # decoder: 1 -> 4, then n - 1 transposed convs up to S / 2, a nearest x2 and the output convs
        layers += [nn.ConvTranspose2d(zdim, ch[-1], 4, 1, 0, bias=False), nn.ReLU(inplace=True),
                   nn.Conv2d(ch[-1], ch[-1], 3, 1, 1, bias=False), nn.ReLU(inplace=True)]
        for i in range(n - 1, 0, -1):
            layers += [nn.ConvTranspose2d(ch[i], ch[i - 1], 4, 2, 1, bias=False), _gn(ch[i - 1]), nn.ReLU(inplace=True),
                       nn.Conv2d(ch[i - 1], ch[i - 1], 3, 1, 1, bias=False), _gn(ch[i - 1]), nn.ReLU(inplace=True)]
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   nn.Conv2d(ch[0], ch[0], 3, 1, 1, bias=False), _gn(ch[0]), nn.ReLU(inplace=True),
                   nn.Conv2d(ch[0], ch[0], 5, 1, 2, bias=False), _gn(ch[0]), nn.ReLU(inplace=True),
                   nn.Conv2d(ch[0], cout, 5, 1, 2, bias=False)]
        self.network = nn.Sequential(*layers, *_output_activation(activation))

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


class Encoder(nn.Module):
    """Unsup3d's encoder: (B, cin, S, S) -> (B, cout) (tanh by default: raw viewpoint / light in [-1, 1])."""

    def __init__(self, cin: int = 3, cout: int = 6, size: int = 64, nf: int | None = None,
                 activation: str | None = "tanh"):
        super().__init__()
        n = num_stages(size)
        nf = default_nf(size) if nf is None else int(nf)
        ch = [nf * 2 ** i for i in range(n)]
        self.size, self.cin, self.cout, self.nf = int(size), cin, cout, nf
        layers: list[nn.Module] = []
        c = cin
        for ci in ch:
            layers += [nn.Conv2d(c, ci, 4, 2, 1, bias=False), nn.ReLU(inplace=True)]
            c = ci
        layers += [nn.Conv2d(c, c, 4, 1, 0, bias=False), nn.ReLU(inplace=True), nn.Conv2d(c, cout, 1, 1, 0, bias=False)]
        self.network = nn.Sequential(*layers, *_output_activation(activation))

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x).reshape(x.shape[0], -1)


class ResBlockDown(nn.Module):
    """Pre-activation residual block, /2: ReLU, 3 x 3 stride-2 conv, ReLU, 3 x 3 conv; shortcut: 2 x 2 average
    pooling (then a 1 x 1 conv with bias when the channels change)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.conv_sc = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        x = F.avg_pool2d(x, 2, 2)
        if self.conv_sc is not None:
            x = self.conv_sc(x)
        return x + h


class ResEncoder(nn.Module):
    """GAN2Shape's offset encoder: (B, cin, S, S) -> (B, cout) (no activation); nf = 32 published."""

    def __init__(self, cin: int = 3, cout: int = 512, size: int = 64, nf: int = 32):
        super().__init__()
        n = num_stages(size)
        ch = [int(nf) * 2 ** i for i in range(n)]
        self.size, self.cin, self.cout, self.nf = int(size), cin, cout, int(nf)
        layers: list[nn.Module] = [nn.Conv2d(cin, ch[0], 4, 2, 1, bias=False)]
        layers += [ResBlockDown(ch[i - 1], ch[i]) for i in range(1, n)]
        layers += [nn.ReLU(), nn.Conv2d(ch[-1], 2 * ch[-1], 4, 1, 0, bias=False), nn.ReLU(),
                   nn.Conv2d(2 * ch[-1], cout, 1, 1, 0, bias=False)]
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x).reshape(x.shape[0], -1)


def build_networks(size: int, style_dim: int = 512, nf: int | None = None, zdim: int = 256,
                   enc_nf: int = 32) -> nn.ModuleDict:
    """The five GAN2Shape networks for S = ``size``: ``depth`` (EDDeconv -> 1, raw), ``albedo`` (EDDeconv -> 3,
    tanh), ``view`` (Encoder -> 6, tanh), ``light`` (Encoder -> 4, tanh), ``offset`` (ResEncoder ->
    ``style_dim``)."""
    return nn.ModuleDict({
        "depth": EDDeconv(3, 1, size, zdim, nf, activation=None),
        "albedo": EDDeconv(3, 3, size, zdim, nf, activation="tanh"),
        "view": Encoder(3, 6, size, nf),
        "light": Encoder(3, 4, size, nf),
        "offset": ResEncoder(3, style_dim, size, enc_nf),
    })
