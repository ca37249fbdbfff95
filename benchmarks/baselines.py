"""Plain-PyTorch volume projection: the grid_sample pipeline that users write today.

This is the comparison point of the benchmarks, written the way a user writes it from the PyTorch
docs (``F.affine_grid`` + ``F.grid_sample`` + a reduction), on purpose independent of voxrender's own
reference module (``voxrender/reference/``): only ``voxrender.rotation_from_angles`` is shared, so both
sides render the same view.

Pipeline (orthographic, the default framing of ``voxrender.project_volume``):

1. R = R_x(elevation) @ R_y(azimuth) (``voxrender.rotation_from_angles``).
2. theta = [R^T | 0] (B, 3, 4); ``F.affine_grid(theta, (B, 1, K, Ho, Wo), align_corners=False)`` builds the
   (B, K, Ho, Wo, 3) sample grid: pixel centres x, y and sample depths z at -1 + (2i + 1) / n, rotated
   into the volume frame (q = R^T p).
3. ``F.grid_sample(..., mode="bilinear", padding_mode="zeros", align_corners=False)`` samples every
   point: (B, C, K, Ho, Wo) values are materialised, and autograd keeps them (and the grid) for the
   backward pass, i.e. O(B * K * Ho * Wo) memory.
4. Reduction over K: absorption 1 - exp(-tau * delta * sum), sum, max, or emission-absorption
   compositing with an exclusive ``cumprod`` of the transmittances (as in PyTorch3D's
   ``EmissionAbsorptionRaymarcher``).

delta = (2 / K) * (D / 2) is the step length in voxel units (1 with K = D), so the images match
``voxrender.project_volume`` with its defaults.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from voxrender import rotation_from_angles

MODES = ("absorption", "sum", "max", "emission_absorption")


def grid_sample_project(
    density: Tensor,
    azimuth: Tensor | None = None,
    elevation: Tensor | None = None,
    *,
    features: Tensor | None = None,
    mode: str = "absorption",
    tau: float = 1.0,
    image_size: int | None = None,
    n_samples: int | None = None,
) -> Tensor:
    """density (B, D, H, W); azimuth, elevation (B,) radians or None (identity view).

    features (B, C, D, H, W) for ``mode="emission_absorption"``. Returns (B, 1, Ho, Wo), or
    (B, C + 1, Ho, Wo) (colour, then opacity, zero background) for emission_absorption.
    """
    b, d, h, w = density.shape
    ho, wo = (h, w) if image_size is None else (image_size, image_size)
    k = d if n_samples is None else n_samples
    delta = (2.0 / k) * (d / 2.0)

    if azimuth is None and elevation is None:
        rot = torch.eye(3, device=density.device, dtype=density.dtype).expand(b, 3, 3)
    else:
        az = azimuth if azimuth is not None else torch.zeros_like(elevation)
        rot = rotation_from_angles(az, elevation)
    theta = torch.cat([rot.transpose(1, 2), rot.new_zeros(b, 3, 1)], 2)  # q = R^T p
    grid = F.affine_grid(theta, [b, 1, k, ho, wo], align_corners=False)  # (B, K, Ho, Wo, 3)

    if mode == "emission_absorption":
        if features is None:
            raise ValueError("features: required with mode='emission_absorption'")
        vol = torch.cat([density[:, None], features], 1)  # one grid_sample for density and colour
    else:
        vol = density[:, None]
    samples = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sigma = samples[:, 0]  # (B, K, Ho, Wo)

    if mode == "absorption":
        return (1 - torch.exp(-tau * delta * sigma.sum(1)))[:, None]
    if mode == "sum":
        return (tau * delta * sigma.sum(1))[:, None]
    if mode == "max":
        return sigma.amax(1, keepdim=True)
    if mode == "emission_absorption":
        colour = samples[:, 1:]  # (B, C, K, Ho, Wo)
        keep = torch.exp(-tau * delta * sigma)  # 1 - alpha_k
        trans = torch.cumprod(torch.cat([torch.ones_like(keep[:, :1]), keep[:, :-1]], 1), 1)  # T_k
        weight = (1 - keep) * trans
        rgb = (weight[:, None] * colour).sum(2)
        opacity = 1 - trans[:, -1:] * keep[:, -1:]
        return torch.cat([rgb, opacity], 1)
    raise ValueError(f"mode: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
