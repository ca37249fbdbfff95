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


def rotation_z(t: Tensor) -> Tensor:
    """R_z(t) = [[cos t, -sin t, 0], [sin t, cos t, 0], [0, 0, 1]], batched over t's shape."""
    c, s = torch.cos(t), torch.sin(t)
    o, z = torch.ones_like(t), torch.zeros_like(t)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*t.shape, 3, 3)


def euler_to_rotation(rx: Tensor, ry: Tensor, rz: Tensor) -> Tensor:
    """R = R_z(rz) @ R_y(ry) @ R_x(rx) (radians; rotations about the camera frame's axes, applied x first)."""
    return rotation_z(rz) @ rotation_y(ry) @ rotation_x(rx)


def _center(center, points: Tensor) -> Tensor:
    if center is None:
        return points.new_zeros(3)
    return torch.as_tensor(center, dtype=points.dtype, device=points.device)


def transform_points(points: Tensor, R: Tensor, t: Tensor | None = None, center=None) -> Tensor:
    """Rotates points about ``center`` and translates them: (p - c) R^T + c + t.

    points (..., N, 3); R (..., 3, 3); t (..., 3) or None; center (3,) or (..., 3) or None (the origin).
    This is the view transform of Unsup3d / GAN2Shape (rotation about the object's centre, then shift).
    """
    c = _center(center, points)
    if c.dim() > 1:
        c = c.unsqueeze(-2)
    out = (points - c) @ R.transpose(-1, -2) + c
    if t is not None:
        out = out + t.unsqueeze(-2)
    return out


def inverse_transform_points(points: Tensor, R: Tensor, t: Tensor | None = None, center=None) -> Tensor:
    """The inverse of :func:`transform_points` (R orthonormal): (q - t - c) R + c."""
    c = _center(center, points)
    if c.dim() > 1:
        c = c.unsqueeze(-2)
    if t is not None:
        points = points - t.unsqueeze(-2)
    return (points - c) @ R + c


def look_at(eye: Tensor, at: Tensor, up: Tensor) -> tuple[Tensor, Tensor]:
    """World-to-camera (R, t) with x_cam = R x_world + t, for a camera at ``eye`` looking at ``at``.

    The camera frame is the library's: +z forward, x right, y down, so the world direction ``up`` appears
    towards the top of the image (negative y). Shapes (..., 3) -> R (..., 3, 3), t (..., 3).
    """
    z = torch.nn.functional.normalize(at - eye, dim=-1)
    y = -(up - (up * z).sum(-1, keepdim=True) * z)  # down: minus the part of `up` across the view
    y = torch.nn.functional.normalize(y, dim=-1)
    x = torch.cross(y, z, dim=-1)  # right-handed: x = y cross z
    R = torch.stack([x, y, z], -2)
    t = -(R @ eye.unsqueeze(-1)).squeeze(-1)
    return R, t


def _as_intrinsics(K: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if not isinstance(K, Tensor) or K.shape[-2:] != (3, 3):
        raise ValueError(f"K: expected (3, 3) or (B, 3, 3) OpenCV intrinsics, got {getattr(K, 'shape', K)}")
    return K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]


def perspective(K: Tensor, image_size, near: float, far: float) -> Tensor:
    """4 x 4 projection from OpenCV intrinsics to the library's clip space.

    K: (3, 3) or (B, 3, 3) with fx, fy, cx, cy in pixels, pixel centres at integer coordinates
    (pixel (i, j) is centred at u = j, v = i; the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]).
    Clip space: NDC x = -1 / +1 are the left / right image edges, y = -1 / +1 the top / bottom edges
    (y down), z/w = -1 at ``near`` and +1 at ``far`` (smaller is closer), w = camera depth.
    Use as ``clip = homogeneous_points @ P.transpose(-1, -2)``.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if not 0 < near < far:
        raise ValueError(f"near, far: expected 0 < near < far, got near={near}, far={far}")
    fx, fy, cx, cy = _as_intrinsics(K)
    P = K.new_zeros(*K.shape[:-2], 4, 4)
    P[..., 0, 0] = 2 * fx / w
    P[..., 0, 2] = (2 * cx + 1) / w - 1
    P[..., 1, 1] = 2 * fy / h
    P[..., 1, 2] = (2 * cy + 1) / h - 1
    P[..., 2, 2] = (far + near) / (far - near)
    P[..., 2, 3] = 2 * far * near / (near - far)
    P[..., 3, 2] = 1
    return P


def _pixel_grid(h: int, w: int, like: Tensor) -> tuple[Tensor, Tensor]:
    v, u = torch.meshgrid(torch.arange(h, dtype=like.dtype, device=like.device),
                          torch.arange(w, dtype=like.dtype, device=like.device), indexing="ij")
    return u, v


def depth_to_points(depth: Tensor, K: Tensor) -> Tensor:
    """Back-projects a depth map (B, H, W) (camera z) to camera-space points (B, H, W, 3) (OpenCV K)."""
    if depth.dim() != 3:
        raise ValueError(f"depth: expected (B, H, W), got {tuple(depth.shape)}")
    fx, fy, cx, cy = (x.reshape(-1, 1, 1) if x.dim() else x for x in _as_intrinsics(K))
    u, v = _pixel_grid(depth.shape[1], depth.shape[2], depth)
    return torch.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)


def grid_mesh_faces(h: int, w: int, device=None) -> Tensor:
    """Faces (2 (h-1) (w-1), 3) int64 of the grid mesh over an h x w depth map (vertex i * w + j).

    Per cell: [(i, j), (i+1, j), (i, j+1)] and [(i, j+1), (i+1, j), (i+1, j+1)]; both are front-facing
    (the rasterizer's rule) for the camera that took the depth map.
    """
    i, j = torch.meshgrid(torch.arange(h - 1, device=device), torch.arange(w - 1, device=device), indexing="ij")
    v00, v10, v01, v11 = i * w + j, (i + 1) * w + j, i * w + j + 1, (i + 1) * w + j + 1
    tri = torch.stack([torch.stack([v00, v10, v01], -1), torch.stack([v01, v10, v11], -1)], -2)
    return tri.reshape(-1, 3)


def normals_from_depth(depth: Tensor, K: Tensor) -> Tensor:
    """Unit normals (B, H, W, 3) of a depth map, facing the camera (n_z < 0 for a visible surface).

    From central differences of the back-projected points (one-sided at the borders):
    n = normalize(dP/dv x dP/du), with u to the right and v down.
    """
    p = depth_to_points(depth, K)
    pu = torch.cat([p[:, :, 1:2] - p[:, :, 0:1], (p[:, :, 2:] - p[:, :, :-2]) / 2, p[:, :, -1:] - p[:, :, -2:-1]], 2) \
        if p.shape[2] > 1 else torch.zeros_like(p)
    pv = torch.cat([p[:, 1:2] - p[:, 0:1], (p[:, 2:] - p[:, :-2]) / 2, p[:, -1:] - p[:, -2:-1]], 1) \
        if p.shape[1] > 1 else torch.zeros_like(p)
    return torch.nn.functional.normalize(torch.cross(pv, pu, dim=-1), dim=-1)
