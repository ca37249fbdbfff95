"""Reference `project_volume`: a grid_sample pipeline followed by reductions over the samples.

It stores every sample (O(B * K * Ho * Wo) memory) and gets its gradients from autograd; the fused
backends recompute samples instead. Rays are built from the same :class:`~voxrender.camera.RayCamera`
numbers as every other backend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..camera import RayCamera


def sample_points(camera: RayCamera, rotation: Tensor, height: int, width: int, n_samples: int) -> tuple[Tensor, Tensor]:
    """Volume-frame sample positions q (B, K, Ho, Wo, 3) and per-pixel step length delta (Ho, Wo)."""
    dev, dt = rotation.device, rotation.dtype
    u = -1 + (2 * torch.arange(width, device=dev, dtype=dt) + 1) / width
    v = -1 + (2 * torch.arange(height, device=dev, dtype=dt) + 1) / height
    v, u = torch.meshgrid(v, u, indexing="ij")
    zero, one = torch.zeros_like(u), torch.ones_like(u)
    if camera.projection == 0:
        origin = torch.stack([camera.sx * u, camera.sy * v, zero], -1)
        direction = torch.stack([zero, zero, one], -1)
    else:
        origin = torch.stack([zero, zero, zero + camera.cam_z], -1)
        direction = torch.stack([camera.sx * u, camera.sy * v, one], -1)
    t = camera.t0 + (torch.arange(n_samples, device=dev, dtype=dt) + 0.5) * camera.dt
    p = origin + t[:, None, None, None] * direction  # (K, Ho, Wo, 3) camera frame
    q = torch.einsum("kxyj,bji->bkxyi", p, rotation)  # q = R^T p
    delta = camera.dt * camera.step_scale * direction.norm(dim=-1)
    return q, delta


def project_volume_reference(
    density: Tensor,
    features: Tensor | None,
    rotation: Tensor,
    height: int,
    width: int,
    n_samples: int,
    mode: str,
    tau: float,
    camera: RayCamera,
) -> Tensor:
    """density (B, D, H, W), features (B, C, D, H, W) or None, rotation (B, 3, 3).

    Returns (B, 1, Ho, Wo) for the scalar modes and (B, C + 1, Ho, Wo) (colour, then alpha) for
    emission_absorption, with a zero background (the public op adds the background colour).
    """
    q, delta = sample_points(camera, rotation, height, width, n_samples)
    sigma = F.grid_sample(density[:, None], q, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    # sigma: (B, K, Ho, Wo)
    if mode == "sum":
        return (tau * delta * sigma.sum(1))[:, None]
    if mode == "absorption":
        return (1 - torch.exp(-tau * delta * sigma.sum(1)))[:, None]
    if mode == "max":
        first = sigma.argmax(1, keepdim=True)  # argmax returns the first maximal index
        return sigma.gather(1, first)
    if mode == "emission_absorption":
        colour = F.grid_sample(features, q, mode="bilinear", padding_mode="zeros", align_corners=False)
        depth = tau * delta * sigma  # optical depth of each step, (B, K, Ho, Wo)
        alpha = 1 - torch.exp(-depth)
        before = torch.cumsum(depth, 1) - depth  # exclusive prefix sum
        weight = alpha * torch.exp(-before)
        rgb = (weight[:, None] * colour).sum(2)
        opacity = 1 - torch.exp(-depth.sum(1, keepdim=True))
        return torch.cat([rgb, opacity], 1)
    raise ValueError(f"unknown mode {mode!r}")
