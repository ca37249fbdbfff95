"""StyleGAN2 generator and discriminator (Karras et al. 2020), written in plain PyTorch so they run on the CPU
and the GPU with no compile step, and checkpoint-compatible with the widely used PyTorch port
(rosinality/stylegan2-pytorch, ``model.py``): every parameter and buffer has the port's name and shape, so
``Generator.load_state_dict(ckpt["g_ema"], strict=True)`` takes the public checkpoints as they are.

Conventions (as in the port):

- images are (B, 3, S, S) in [-1, 1] (nothing clamps the generator's output); S a power of two, 8 ... 1024
  (the port's configurations are 64 ... 1024; 8 ... 32 are for tests and CPU runs);
- z ~ N(0, I) of ``style_dim`` (512); w = mapping(z); the synthesis network reads ``n_latent`` = 2 log2(S) - 2
  styles (one w repeated, a w+ tensor, or two w mixed at ``inject_index``);
- equalized learning rate: weights are stored N(0, 1) (divided by ``lr_mul``) and scaled at run time by
  1 / sqrt(fan_in) (times ``lr_mul``); the mapping network uses ``lr_mul`` 0.01;
- the "fused" bias + leaky ReLU is leaky_relu(x + b, 0.2) * sqrt(2); up/down sampling is ``upfirdn2d``
  with the [1, 3, 3, 1] blur kernel (:func:`upfirdn2d` here is a plain-PyTorch version of the port's
  ``upfirdn2d_native``; both are differentiable twice, which R1 and path-length regularisation need).

What differs from the port:

- ``Generator.forward`` returns just the image unless ``return_latents=True`` (the port always returns a
  tuple ``(image, latents or None)``); it accepts a tensor as well as the port's list of style tensors;
  ``truncation`` is applied whenever it is not 1 (the port ignores values > 1), around
  ``truncation_latent``, else ``G.latent_avg`` (set by :func:`load_checkpoint` from the checkpoint's
  ``latent_avg``), else the mean of the mapping network over 4096 fixed samples (cached until the weights
  change).
- ``G.mapping(z)`` and ``G.mapping_layers(x, start, stop)`` expose the mapping network layer by layer;
  ``D(img, return_features=True)`` also returns the feature map after every block of ``D.convs``.
- ``channels`` (an int cap or a {resolution: channels} dict) gives small configurations; ``style_dim``
  and ``n_mlp`` can be changed too (the port's ``Generator`` also takes them).
- the discriminator's minibatch-stddev group is the largest divisor of the batch that is <= 4 (the port
  uses min(batch, 4) and fails when that does not divide the batch; equal wherever the port runs).
- ``latent_avg`` is a non-persistent buffer: it follows ``.to(device)`` but is not in ``state_dict()``
  (it is a top-level checkpoint key, as in the port's converted checkpoints).
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
BLUR_KERNEL = (1, 3, 3, 1)
SIZES = tuple(2 ** i for i in range(3, 11))  # 8 ... 1024


def default_channels(channel_multiplier: int = 2) -> dict:
    """The port's channel table: 512 up to 32 px, then 256 * cm at 64, 128 * cm at 128, ... 16 * cm at 1024."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
            1024: 16 * cm}


def resolve_channels(size: int, channel_multiplier: int = 2, channels=None) -> dict:
    """Channels per resolution 4 ... ``size``: the port's table for ``channel_multiplier``; ``channels`` an
    int caps every entry (a small model: e.g. 32); a dict {resolution: channels} replaces the entries it
    names."""
    table = default_channels(channel_multiplier)
    out = {r: table.get(r, 512) for r in (2 ** i for i in range(2, int(math.log2(size)) + 1))}
    if channels is None:
        return out
    if isinstance(channels, dict):
        extra = set(int(k) for k in channels) - set(out)
        if extra:
            raise ValueError(f"channels: resolutions {sorted(extra)} are not in 4 ... {size}")
        out.update({int(k): int(v) for k, v in channels.items()})
    else:
        cap = int(channels)
        out = {r: min(c, cap) for r, c in out.items()}
    if any(c < 1 for c in out.values()):
        raise ValueError(f"channels must be positive, got {out}")
    return out


def _check_size(size: int) -> int:
    size = int(size)
    if size not in SIZES:
        raise ValueError(f"size must be a power of two from 8 to 1024, got {size}")
    return size


# ---------------------------------------------------------------------------------------------------------
# ops in plain PyTorch


def make_kernel(k) -> torch.Tensor:
    """A 1D kernel -> its normalised 2D outer product (a 2D kernel is only normalised)."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.dim() == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Upsample (zero insertion by ``up``), pad (negative pads crop), FIR filter (true convolution with
    ``kernel``, per channel), downsample (keep every ``down``-th sample). ``pad``: (p0, p1) for both axes or
    (x0, x1, y0, y1). Same arithmetic as the port's ``upfirdn2d_native``; output
    (B, C, (H * up + y0 + y1 - kh) // down + 1, ...)."""
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    px0, px1, py0, py1 = (int(p) for p in pad)
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(dtype=x.dtype)[None, None].expand(c, 1, kh, kw)
    return F.conv2d(x, weight, stride=down, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """leaky_relu(x + bias, negative_slope) * scale, ``bias`` per channel (dim 1)."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU (0.2) + gain sqrt(2); parameter ``bias`` (C,)."""

    def __init__(self, channel: int, bias: bool = True, negative_slope: float = 0.2, scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope, self.scale = negative_slope, scale

    def forward(self, x):
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


class Upsample(nn.Module):
    """x2 (``factor``) upsampling with the blur kernel (buffer ``kernel``, scaled by factor^2)."""

    def __init__(self, kernel=BLUR_KERNEL, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Downsample(nn.Module):
    """/2 (``factor``) downsampling with the blur kernel (buffer ``kernel``)."""

    def __init__(self, kernel=BLUR_KERNEL, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, down=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR blur with padding ``pad`` (buffer ``kernel``; times upsample_factor^2 after an upsampling)."""

    def __init__(self, kernel, pad, upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor ** 2
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad)


# ---------------------------------------------------------------------------------------------------------
# equalized layers


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate: ``weight`` (out, in, k, k) ~ N(0, 1) times 1 / sqrt(in k^2)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"


class EqualLinear(nn.Module):
    """Linear with equalized learning rate and learning-rate multiplier ``lr_mul``: ``weight`` (out, in) is
    stored N(0, 1) / lr_mul and used times lr_mul / sqrt(in); ``bias`` times lr_mul. ``activation``
    "fused_lrelu": bias + leaky ReLU + sqrt(2) gain."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation, self.lr_mul = activation, lr_mul
        self.scale = lr_mul / math.sqrt(in_dim)

    def forward(self, x):
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


# ---------------------------------------------------------------------------------------------------------
# generator blocks


class ModulatedConv2d(nn.Module):
    """StyleGAN2's weight-modulated convolution: per-sample weights ``weight * modulation(style)``,
    demodulated (unit L2 norm per output channel), computed as one grouped convolution over the batch.
    ``upsample``: stride-2 transposed convolution then blur; ``downsample``: blur then stride-2 conv.
    Parameters ``weight`` (1, out, in, k, k), ``modulation.weight`` (in, style_dim), ``modulation.bias``
    (in,) initialised to 1; buffer ``blur.kernel`` when resampling."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, downsample: bool = False, blur_kernel=BLUR_KERNEL):
        super().__init__()
        self.eps = 1e-8
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.downsample, self.demodulate = upsample, downsample, demodulate
        factor, nk = 2, len(blur_kernel)
        if upsample:
            p = (nk - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (nk - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
                f"downsample={self.downsample}, demodulate={self.demodulate}")

    def forward(self, x, style):
        b, cin, h, w = x.shape
        cout, k = self.out_channel, self.kernel_size
        s = self.modulation(style).view(b, 1, cin, 1, 1)
        weight = self.scale * self.weight * s  # (B, out, in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4], keepdim=True) + self.eps)
        if self.upsample:
            # transposed conv takes (in, out / groups, k, k) per group
            wt = weight.transpose(1, 2).reshape(b * cin, cout, k, k)
            out = F.conv_transpose2d(x.reshape(1, b * cin, h, w), wt, stride=2, padding=0, groups=b)
            return self.blur(out.view(b, cout, out.shape[-2], out.shape[-1]))
        weight = weight.reshape(b * cout, cin, k, k)
        if self.downsample:
            x = self.blur(x)
            out = F.conv2d(x.reshape(1, b * cin, x.shape[-2], x.shape[-1]), weight, stride=2, padding=0, groups=b)
        else:
            out = F.conv2d(x.reshape(1, b * cin, h, w), weight, padding=self.padding, groups=b)
        return out.view(b, cout, out.shape[-2], out.shape[-1])


class NoiseInjection(nn.Module):
    """x + weight * noise (noise (B or 1, 1, H, W); fresh N(0, 1) when None); ``weight`` (1,) starts at 0."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image, noise=None):
        if noise is None:
            b, _, h, w = image.shape
            noise = image.new_empty(b, 1, h, w).normal_()
        return image + self.weight * noise.to(image.dtype)


class ConstantInput(nn.Module):
    """The learned 4x4 input (parameter ``input`` (1, C, 4, 4)), repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, x):
        return self.input.repeat(x.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """ModulatedConv2d (``conv``) -> NoiseInjection (``noise``) -> bias + leaky ReLU (``activate``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel=BLUR_KERNEL, demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel, demodulate=demodulate)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x, style, noise=None):
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB + ``bias`` (1, 3, 1, 1), plus the upsampled skip image."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel=BLUR_KERNEL):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ---------------------------------------------------------------------------------------------------------
# generator


class Generator(nn.Module):
    """StyleGAN2 generator with the port's module tree (``style``, ``input``, ``conv1``, ``to_rgb1``,
    ``convs``, ``upsamples`` (empty), ``to_rgbs``, ``noises.noise_i``).

    Args:
        size: output resolution (power of two, 8 ... 1024). style_dim: z and w size (512).
        n_mlp: mapping layers (8). channel_multiplier: 1 or 2 (the port's configs; 2 = config-f).
        channels: None (the port's table), an int cap (small models) or {resolution: channels}.
        lr_mlp: learning-rate multiplier of the mapping network (0.01).

    Attributes: ``size``, ``style_dim``, ``n_mlp``, ``n_latent`` (styles read by the synthesis network),
    ``num_layers`` (noise inputs), ``channel_multiplier``, ``channels`` ({resolution: channels}),
    ``latent_avg`` (None or the truncation centre, a non-persistent buffer).
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel=BLUR_KERNEL, lr_mlp: float = 0.01, channels=None):
        super().__init__()
        self.size = _check_size(size)
        self.style_dim, self.n_mlp, self.channel_multiplier, self.lr_mlp = int(style_dim), int(n_mlp), \
            channel_multiplier, lr_mlp
        self.channels = resolve_channels(self.size, channel_multiplier, channels)
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp,
                                                              activation="fused_lrelu") for _ in range(n_mlp)])
        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.log_size = int(math.log2(self.size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.convs, self.upsamples, self.to_rgbs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        cin = ch[4]
        for i in range(3, self.log_size + 1):
            cout = ch[2 ** i]
            self.convs.append(StyledConv(cin, cout, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(cout, cout, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(cout, style_dim))
            cin = cout
        self.n_latent = self.log_size * 2 - 2
        self.register_buffer("latent_avg", None, persistent=False)
        self._mean_cache = None

    def config(self) -> dict:
        """What rebuilds this architecture: Generator(**G.config())."""
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channel_multiplier": self.channel_multiplier, "lr_mlp": self.lr_mlp,
                "channels": dict(self.channels)}

    # -- mapping ------------------------------------------------------------------------------------------
    def mapping_layers(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Mapping-network layers [start, stop) of the ``n_mlp`` EqualLinear layers (PixelNorm first when
        ``start == 0``). ``mapping_layers(z, 0, n_mlp) == mapping(z)``."""
        stop = self.n_mlp if stop is None else int(stop)
        if not 0 <= start <= stop <= self.n_mlp:
            raise ValueError(f"mapping_layers: need 0 <= start <= stop <= {self.n_mlp}, got [{start}, {stop})")
        if start == 0:
            x = self.style[0](x)
        for i in range(start, stop):
            x = self.style[i + 1](x)
        return x

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """w = mapping(z): (B, style_dim) -> (B, style_dim) (the port's ``get_latent``)."""
        return self.style(z)

    get_latent = mapping

    @torch.no_grad()
    def mean_latent(self, n_latent: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of mapping(z) over ``n_latent`` z ~ N(0, I) (drawn on the CPU from ``generator``): (1, style_dim)."""
        dev = self.input.input.device
        z = torch.randn(n_latent, self.style_dim, generator=generator).to(dev, self.input.input.dtype)
        return self.style(z).mean(0, keepdim=True)

    def truncation_center(self) -> torch.Tensor:
        """``latent_avg`` when set, else the mean of the mapping network over 4096 fixed samples (seed 0),
        cached until the mapping weights change (in place or by loading)."""
        if self.latent_avg is not None:
            return self.latent_avg
        params = list(self.style.parameters())
        key = tuple((id(p), p._version, p.device, p.dtype) for p in params)
        if self._mean_cache is None or self._mean_cache[0] != key:
            self._mean_cache = (key, self.mean_latent(4096, torch.Generator().manual_seed(0)))
        return self._mean_cache[1]

    # -- noise --------------------------------------------------------------------------------------------
    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None, device=None) -> list:
        """Per-layer noise inputs [(batch, 1, r, r)] drawn from ``generator`` (on its device; default the
        generator's own device, else the model's)."""
        device = device or (generator.device if generator is not None else self.input.input.device)
        out = []
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            out.append(torch.randn(batch, 1, r, r, generator=generator, device=device))
        return out

    def fixed_noise(self) -> list:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    # -- synthesis ----------------------------------------------------------------------------------------
    def forward(self, styles, return_latents: bool = False, inject_index: int | None = None,
                truncation: float = 1.0, truncation_latent: torch.Tensor | None = None,
                input_is_latent: bool = False, noise: list | None = None, randomize_noise: bool = True):
        """Images (B, 3, size, size) in about [-1, 1].

        Args:
            styles: z (B, style_dim), or with ``input_is_latent`` w (B, style_dim) or w+ (B, n_latent,
                style_dim); or a list of one or two such tensors (two: style mixing at ``inject_index``,
                random in [1, n_latent) when None), as in the port.
            truncation: w <- center + truncation * (w - center) when != 1 (center: ``truncation_latent``,
                else ``latent_avg``, else the mapping mean; see :meth:`truncation_center`).
            noise: per-layer noise list (see :meth:`make_noise`); else ``randomize_noise`` True draws
                fresh noise (global RNG) and False uses the fixed buffers ``noises.noise_i``.
            return_latents: also return the (B, n_latent, style_dim) styles (the port always returns a
                pair; here the image alone unless this is True).
        """
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        styles = list(styles)
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"Generator: one or two style tensors, got {len(styles)}")
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.fixed_noise()
        if truncation != 1:
            center = truncation_latent if truncation_latent is not None else self.truncation_center()
            styles = [center + truncation * (s - center) for s in styles]
        if len(styles) == 1:
            s = styles[0]
            latent = s if s.dim() == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            a = styles[0] if styles[0].dim() == 3 else styles[0].unsqueeze(1).repeat(1, self.n_latent, 1)
            b = styles[1] if styles[1].dim() == 3 else styles[1].unsqueeze(1).repeat(1, self.n_latent, 1)
            latent = torch.cat([a[:, :inject_index], b[:, inject_index:]], 1)
        if latent.shape[1] != self.n_latent:
            raise ValueError(f"Generator: w+ needs {self.n_latent} styles, got {latent.shape[1]}")

        out = self.input(latent)
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv1, conv2, noise1, noise2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2],
                                                        noise[2::2], self.to_rgbs):
            out = conv1(out, latent[:, i], noise=noise1)
            out = conv2(out, latent[:, i + 1], noise=noise2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return (skip, latent) if return_latents else skip


# ---------------------------------------------------------------------------------------------------------
# discriminator


class ConvLayer(nn.Sequential):
    """[Blur (when ``downsample``)] -> EqualConv2d (stride 2 when downsampling) -> [FusedLeakyReLU].
    The conv has its own bias only when there is no activation (the activation carries the bias)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel=BLUR_KERNEL, bias: bool = True, activate: bool = True):
        layers = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """conv1 (3x3) -> conv2 (3x3, downsample) plus a 1x1 downsampling skip (no bias), sum / sqrt(2)."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel=BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False,
                              blur_kernel=blur_kernel)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator (port names: ``convs.0`` the 1x1 fromRGB ConvLayer, ``convs.1 ...``
    ResBlocks down to 4x4, minibatch stddev, ``final_conv``, ``final_linear.0/1``). Logits (B, 1).

    ``forward(img, return_features=True)`` returns ``(logits, feats)``, ``feats[k]`` the output of
    ``convs[k]`` (feats[0]: the fromRGB layer's output at full resolution)."""

    def __init__(self, size: int, channel_multiplier: int = 2, blur_kernel=BLUR_KERNEL, channels=None,
                 stddev_group: int = 4, stddev_feat: int = 1):
        super().__init__()
        self.size = _check_size(size)
        self.channel_multiplier = channel_multiplier
        self.channels = ch = resolve_channels(self.size, channel_multiplier, channels)
        log_size = int(math.log2(self.size))
        convs = [ConvLayer(3, ch[self.size], 1)]
        cin = ch[self.size]
        for i in range(log_size, 2, -1):
            cout = ch[2 ** (i - 1)]
            convs.append(ResBlock(cin, cout, blur_kernel))
            cin = cout
        self.convs = nn.Sequential(*convs)
        self.stddev_group, self.stddev_feat = stddev_group, stddev_feat
        self.final_conv = ConvLayer(cin + 1, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
                                          EqualLinear(ch[4], 1))

    def config(self) -> dict:
        return {"size": self.size, "channel_multiplier": self.channel_multiplier, "channels": dict(self.channels)}

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Appends one channel: the std over groups of samples (group = the largest divisor of the batch
        that is <= ``stddev_group``), averaged over channels and pixels."""
        b, c, h, w = x.shape
        group = min(b, self.stddev_group)
        while b % group:
            group -= 1
        f = self.stddev_feat
        y = x.view(group, -1, f, c // f, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
        y = y.mean([2, 3, 4], keepdim=True).squeeze(2)  # (b / group, f, 1, 1)
        y = y.repeat(group, 1, h, w)
        return torch.cat([x, y], 1)

    def forward(self, x, return_features: bool = False):
        feats = []
        for block in self.convs:
            x = block(x)
            if return_features:
                feats.append(x)
        x = self.final_conv(self.minibatch_stddev(x))
        logits = self.final_linear(x.reshape(x.shape[0], -1))
        return (logits, feats) if return_features else logits
