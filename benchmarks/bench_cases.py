"""Benchmark cases shared by the pytest-benchmark suites and ``compare_projection.py``.

A case is (size, mode, rotation, pass, variant); ``make_inputs`` builds its tensors from a seed (so every
variant, and every subprocess of the memory measurement, sees the same numbers) and ``make_step``
returns the zero-argument callable that is timed.

- variants: the voxrender backends ``torch``, ``cpu``, ``cuda``, ``triton`` and ``grid_sample``, the
  plain-PyTorch pipeline of ``baselines.py``.
- passes: ``fwd`` (inputs do not require grad, so no graph is recorded), ``fwd+bwd`` (gradients of
  density, features and, with a random rotation, the angles: the pose is learned through the renderer),
  ``fwd+bwd-density`` (gradients of density and features only: fixed poses).
- the density is uniform in [0, 2 / N), so a ray through the cube sees an optical depth of about 1:
  images are not saturated and no gradient is exactly zero (a saturated absorption image would let a
  kernel skip its scatter and look faster than it is in training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import voxrender as vr
from baselines import grid_sample_project

BASELINE = "grid_sample"
MODES = ("absorption", "sum", "max", "emission_absorption")
ROTATIONS = ("identity", "random")
PASSES = ("fwd", "fwd+bwd", "fwd+bwd-density")
CHANNELS = 3  # emission_absorption colour channels


@dataclass(frozen=True)
class Size:
    batch: int
    grid: int  # N: the volume is N^3
    image: int  # Ho = Wo
    samples: int  # K

    @property
    def label(self) -> str:
        return f"B{self.batch} {self.grid}^3->{self.image}^2 K{self.samples}"

    @property
    def id(self) -> str:
        return f"B{self.batch}-{self.grid}^3-{self.image}^2-K{self.samples}"

    @classmethod
    def parse(cls, text: str) -> "Size":
        """'BxN' (N^3 -> N^2, K = N), 'BxNxS' (image S^2) or 'BxNxSxK'."""
        parts = [int(p) for p in text.lower().split("x")]
        if not 2 <= len(parts) <= 4 or min(parts) < 1:
            raise ValueError(f"size {text!r}: expected BxN, BxNxS or BxNxSxK with positive integers")
        b, n = parts[:2]
        s = parts[2] if len(parts) > 2 else n
        k = parts[3] if len(parts) > 3 else n
        return cls(b, n, s, k)


# Real sizes (the default sizes of compare_projection.py, and of the suites with --benchmark-enable) and the
# smoke size (the suites with benchmarks disabled, the default: each case runs once).
CPU_SIZES = (Size(16, 32, 32, 32),)
GPU_SIZES = (Size(64, 64, 64, 64), Size(32, 128, 128, 128))
SMOKE = Size(2, 12, 12, 12)


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def make_inputs(size: Size, mode: str, rotation: str, device, dtype=torch.float32, seed: int = 0,
                elevation: bool = True) -> dict:
    """density (B, N, N, N), features (B, 3, N, N, N) for emission_absorption, and for a random rotation
    azimuth in [0, 2 pi) and (when ``elevation``) elevation in [-pi/6, pi/6]."""
    gen = torch.Generator().manual_seed(seed)
    b, n = size.batch, size.grid
    inputs = {"density": torch.rand(b, n, n, n, generator=gen, dtype=dtype) * (2.0 / n)}
    if mode == "emission_absorption":
        inputs["features"] = torch.rand(b, CHANNELS, n, n, n, generator=gen, dtype=dtype)
    if rotation == "random":
        inputs["azimuth"] = torch.rand(b, generator=gen, dtype=dtype) * (2 * math.pi)
        if elevation:
            inputs["elevation"] = (torch.rand(b, generator=gen, dtype=dtype) - 0.5) * (math.pi / 3)
    elif rotation != "identity":
        raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
    return {k: v.to(device) for k, v in inputs.items()}


def render(variant: str, inputs: dict, mode: str, size: Size) -> torch.Tensor:
    """One projection by ``variant`` (a voxrender backend or the grid_sample baseline)."""
    kwargs = dict(features=inputs.get("features"), mode=mode, n_samples=size.samples, image_size=size.image)
    az, el = inputs.get("azimuth"), inputs.get("elevation")
    if variant == BASELINE:
        return grid_sample_project(inputs["density"], az, el, **kwargs)
    return vr.project_volume(inputs["density"], azimuth=az, elevation=el, backend=variant, **kwargs)


def grad_names(inputs: dict, pass_: str) -> list[str]:
    """The inputs that require grad in this pass."""
    if pass_ == "fwd":
        return []
    names = [n for n in ("density", "features") if n in inputs]
    if pass_ == "fwd+bwd":
        names += [n for n in ("azimuth", "elevation") if n in inputs]
    elif pass_ != "fwd+bwd-density":
        raise ValueError(f"pass: expected one of {PASSES}, got {pass_!r}")
    return names


def make_step(variant: str, inputs: dict, mode: str, size: Size, pass_: str, sync: bool = True):
    """The timed callable: one forward (and backward) pass, synchronised on CUDA when ``sync``.

    The inputs that need gradients are detached copies made once, outside the callable; the backward
    uses ``torch.autograd.grad`` with a fixed random upstream gradient (nothing accumulates in .grad).
    """
    names = grad_names(inputs, pass_)
    inputs = {k: (v.detach().clone().requires_grad_(True) if k in names else v) for k, v in inputs.items()}
    device = inputs["density"].device
    do_sync = sync and device.type == "cuda"
    if not names:
        def step():
            out = render(variant, inputs, mode, size)
            if do_sync:
                torch.cuda.synchronize()
            return out
        return step

    shape = (size.batch, output_channels(mode), size.image, size.image)
    gen = torch.Generator().manual_seed(1234)
    grad_out = torch.rand(shape, generator=gen, dtype=inputs["density"].dtype).to(device)
    wrt = [inputs[n] for n in names]

    def step():
        out = render(variant, inputs, mode, size)
        grads = torch.autograd.grad(out, wrt, grad_out)
        if do_sync:
            torch.cuda.synchronize()
        return out, grads

    return step


def output_channels(mode: str) -> int:
    return CHANNELS + 1 if mode == "emission_absorption" else 1


def output_bytes(size: Size, mode: str, itemsize: int = 4) -> int:
    return size.batch * output_channels(mode) * size.image * size.image * itemsize


def grid_bytes(size: Size, mode: str, itemsize: int = 4) -> int:
    """Bytes of the volumes read by a projection: density, plus the colour features."""
    channels = 1 + (CHANNELS if mode == "emission_absorption" else 0)
    return size.batch * channels * size.grid ** 3 * itemsize


def floor_bytes(size: Size, mode: str, pass_: str, itemsize: int = 4) -> int:
    """Memory-bandwidth floor of a pass, in bytes moved (see README.md, "The floor").

    fwd: read the volumes once, write the image once. Backward adds: read the upstream gradient, read
    the volumes again, write their gradients once.
    """
    g, o = grid_bytes(size, mode, itemsize), output_bytes(size, mode, itemsize)
    fwd = g + o
    return fwd if pass_ == "fwd" else fwd + o + 2 * g
