"""Procedural voxel shapes on the library's grid ([-1, 1]^3, voxel centres at -1 + (2i + 1) / N)."""

from __future__ import annotations

import torch
from torch import Tensor


def grid_coords(n: int, dtype=torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """(z, y, x) coordinates of the voxel centres of an n^3 grid, each (n, n, n), index order (d, h, w)."""
    c = -1 + (2 * torch.arange(n, dtype=dtype) + 1) / n
    return torch.meshgrid(c, c, c, indexing="ij")


def ellipsoid(n: int, center=(0.0, 0.0, 0.0), radii=(0.5, 0.5, 0.5), dtype=torch.float32) -> Tensor:
    z, y, x = grid_coords(n, dtype)
    r = ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + ((z - center[2]) / radii[2]) ** 2
    return (r <= 1).to(dtype)


def box(n: int, center=(0.0, 0.0, 0.0), half=(0.4, 0.4, 0.4), dtype=torch.float32) -> Tensor:
    z, y, x = grid_coords(n, dtype)
    inside = ((x - center[0]).abs() <= half[0]) & ((y - center[1]).abs() <= half[1]) & ((z - center[2]).abs() <= half[2])
    return inside.to(dtype)


def torus(n: int, major=0.55, minor=0.2, dtype=torch.float32) -> Tensor:
    """A torus around the y axis (the up axis of the camera frame)."""
    z, y, x = grid_coords(n, dtype)
    ring = (torch.sqrt(x ** 2 + z ** 2) - major) ** 2 + y ** 2
    return (ring <= minor ** 2).to(dtype)


def demo_scene(n: int = 64, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """A small asymmetric scene for pictures: a torus, a box on a post and a ball, with RGB colours.

    Returns density (n, n, n) in [0, 1] and features (3, n, n, n).
    """
    parts = [
        (torus(n, dtype=dtype), (0.9, 0.55, 0.15)),
        (box(n, center=(0.0, -0.45, 0.0), half=(0.22, 0.22, 0.22), dtype=dtype), (0.2, 0.5, 0.95)),
        (box(n, center=(0.0, 0.1, 0.0), half=(0.06, 0.35, 0.06), dtype=dtype), (0.8, 0.8, 0.8)),
        (ellipsoid(n, center=(0.55, 0.45, -0.3), radii=(0.25, 0.25, 0.25), dtype=dtype), (0.3, 0.85, 0.35)),
    ]
    density = torch.zeros(n, n, n, dtype=dtype)
    colour = torch.zeros(3, n, n, n, dtype=dtype)
    for occ, rgb in parts:
        new = occ * (1 - density)
        colour += new[None] * torch.tensor(rgb, dtype=dtype)[:, None, None, None]
        density = torch.maximum(density, occ)
    return density, colour
