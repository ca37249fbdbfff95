"""Rotations and camera helpers (pure PyTorch, differentiable).

Frame convention of the whole library: camera looks along +z, x to the right, y down (OpenCV,
grid_sample). A rotation R maps the volume into the camera frame: a camera-frame point p reads the
volume at q = R^T p.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotation_y(t: Tensor) -> Tensor:
    """R_y(t) = [[cos t, 0, sin t], [0, 1, 0], [-sin t, 0, cos t]], batched over t's shape."""
    c, s = torch.cos(t), torch.sin(t)
    o, z = torch.ones_like(t), torch.zeros_like(t)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*t.shape, 3, 3)


def rotation_x(t: Tensor) -> Tensor:
    """R_x(t) = [[1, 0, 0], [0, cos t, -sin t], [0, sin t, cos t]], batched over t's shape."""
    c, s = torch.cos(t), torch.sin(t)
    o, z = torch.ones_like(t), torch.zeros_like(t)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*t.shape, 3, 3)


def rotation_from_angles(azimuth: Tensor, elevation: Tensor | None = None) -> Tensor:
    """R = R_x(elevation) @ R_y(azimuth) (radians); elevation defaults to 0. Shapes (B,) -> (B, 3, 3)."""
    r = rotation_y(azimuth)
    if elevation is not None:
        r = rotation_x(elevation) @ r
    return r
