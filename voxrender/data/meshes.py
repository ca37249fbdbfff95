"""Procedural triangle meshes: icospheres (closed, outward-wound) and depth-map grids.

Winding: every face's right-hand normal (v1 - v0) x (v2 - v0) points out of the solid, so a camera outside
sees front faces (the rasterizer's rule, ``voxrender.rasterize(..., cull_backfaces=True)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..geometry import grid_mesh_faces


def icosphere(level: int = 2, radius: float = 1.0, dtype=torch.float32, device=None) -> tuple[Tensor, Tensor]:
    """Unit icosahedron subdivided ``level`` times: (verts (V, 3), faces (F, 3) int64), F = 20 * 4^level.

    Level 3 has 1280 faces, 5: 20k, 7: 328k, 8: 1.3M. Vertices lie on the sphere of ``radius``.
    """
    if level < 0:
        raise ValueError(f"level: expected >= 0, got {level}")
    t = (1.0 + math.sqrt(5.0)) / 2.0
    v = torch.tensor([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                      [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=torch.float64)
    f = torch.tensor([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                      [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
                      [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=torch.int64)
    v = v / v.norm(dim=1, keepdim=True)
    for _ in range(level):
        # Midpoint of every edge, shared by the two faces on it (unique over sorted vertex pairs).
        e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])  # (3F, 2): edges 01, 12, 20
        key = e.min(1).values * len(v) + e.max(1).values
        uniq, inv = torch.unique(key, return_inverse=True)
        a, b = uniq // len(v), uniq % len(v)
        mid = v[a] + v[b]
        mid = mid / mid.norm(dim=1, keepdim=True)
        m = (inv + len(v)).reshape(3, -1).T  # (F, 3): midpoints of edges 01, 12, 20
        v = torch.cat([v, mid])
        f = torch.cat([torch.stack([f[:, 0], m[:, 0], m[:, 2]], 1), torch.stack([f[:, 1], m[:, 1], m[:, 0]], 1),
                       torch.stack([f[:, 2], m[:, 2], m[:, 1]], 1), m])
    return (v * radius).to(dtype=dtype, device=device), f.to(device)


def depth_grid_mesh(h: int, w: int, amplitude: float = 0.1, seed: int = 0, dtype=torch.float32,
                    device=None) -> tuple[Tensor, Tensor]:
    """A bumpy height field over [-1, 1]^2 as a grid mesh (the shape of a depth-map mesh): verts (h w, 3)
    with z in [-amplitude, amplitude], faces (2 (h-1) (w-1), 3) from :func:`voxrender.grid_mesh_faces`."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64), torch.linspace(-1, 1, w, dtype=torch.float64),
                          indexing="ij")
    z = torch.zeros_like(x)
    for _ in range(4):
        fx, fy, ph = (torch.rand(3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 3.0, 6.28])).tolist()
        z = z + torch.sin(fx * math.pi * x + ph) * torch.cos(fy * math.pi * y)
    z = amplitude * z / z.abs().max().clamp(min=1e-12)
    verts = torch.stack([x, y, z], -1).reshape(-1, 3)
    return verts.to(dtype=dtype, device=device), grid_mesh_faces(h, w, device=device)
