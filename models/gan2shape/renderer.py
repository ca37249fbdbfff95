"""The Unsup3d / GAN2Shape photo-geometric representation and its renderer, built on voxrender.

An image is explained by a canonical depth map D (B, H, W), a canonical albedo A (B, 3, H, W), a light
(ambient, diffuse, lx, ly) and a viewpoint (rx, ry, rz, tx, ty, tz). This module is the forward model of
Unsup3d (Wu et al., CVPR 2020, ``unsup3d/renderer/renderer.py``), which GAN2Shape (Pan et al., ICLR 2021)
reuses unchanged; Neural Mesh Renderer's depth rendering is replaced by :func:`voxrender.render_depth`.

Conventions (Unsup3d's, all stated in the camera frame of voxrender: x right, y down, z forward, OpenCV
intrinsics with pixel (i, j) centred at u = j, v = i):

- Camera: ``fov`` = 10 degrees between the first and last pixel CENTRES, fx = fy = (S - 1) / 2 / tan(5 deg),
  cx = cy = (S - 1) / 2 (:func:`intrinsics`). Depth is camera z; canonical depths live in [0.9, 1.1].
- The canonical depth map is a height field over the image plane: pixel (i, j) holds the point
  ``D[i, j] * K^-1 (j, i, 1)`` (:func:`depth_to_canonical_points`, = :func:`voxrender.depth_to_points`).
- View: ``view`` (B, 6) = (rx, ry, rz) in RADIANS and (tx, ty, tz) in camera units (depth 1 is the distance
  of the canonical object). R = R_z(rz) R_y(ry) R_x(rx) (:func:`voxrender.euler_to_rotation`, Unsup3d's
  ``get_rotation_matrix``), applied about the centre point (0, 0, 1), then the translation:
  p_view = R (p - c) + c + t. (B, 5) (no tz) and (B, 3) (rotation only) are accepted as in Unsup3d.
  Networks predict raw values in [-1, 1]; :func:`view_from_raw` maps them (rotations x 60 deg,
  translations x 0.1).
- Light: ``light`` (B, 4) = (ambient, diffuse, lx, ly), the light direction being d = normalize(lx, ly, 1).
  Lighting happens in the CANONICAL frame (the light turns with the object): the shaded canonical image
  ``albedo * (ambient + diffuse * max(0, n . d))`` is what gets warped into the view.
  :func:`light_from_raw` maps raw network values (a / 2 + 1 / 2, b / 2 + 1 / 2, dx, dy) as GAN2Shape does.
- Normals (:func:`normals_from_depth`): Unsup3d's sign: n = normalize(dP/du x dP/dv) from central
  differences, which points AWAY from the camera (n = (0, 0, +1) for a fronto-parallel plane); border
  pixels get (0, 0, 1). With d = normalize(lx, ly, 1) also pointing away from the camera, n . d equals
  (outward normal) . (direction to the light) with the light at -d: lx > 0 lights the object from the LEFT
  of the image, ly > 0 from ABOVE, and (0, 0) from the camera.
- Albedo and images are in [0, 1] here (Unsup3d computes in [-1, 1]: ``(albedo / 2 + 0.5) * shading * 2 - 1``
  is the same thing), not clamped unless asked.

Reconstruction (:func:`reconstruct`): the canonical grid mesh is moved into the view and z-buffered
(:func:`warp_canon_depth`); every view pixel is back-projected with that depth, inverse-transformed into
the canonical frame and projected there (:func:`get_inv_warped_2d_grid`), and the shaded canonical image is
read there with ``F.grid_sample(..., mode="bilinear", align_corners=True)``. Gradients reach the canonical
depth through the rendered depth (exact, visibility held fixed) and through the sampling grid, and through
the normals of the shading. The recon mask marks view pixels that see the mesh.

Coverage detail: the rasterizer's top-left fill rule does not cover pixel centres lying exactly on the
right or bottom boundary edge of the mesh, so under the identity view the last row and column of the view
see no surface (mask 0). Any other view moves the boundary off the pixel centres; Unsup3d's border pixels
are similarly unreliable (it clamps a 2-pixel border of the depth, see :func:`clamp_border_depth`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

import voxrender as vr

FOV = 10.0  # degrees, between the first and last pixel centres
MIN_DEPTH, MAX_DEPTH = 0.9, 1.1  # canonical depth range
ROT_CENTER_DEPTH = (MIN_DEPTH + MAX_DEPTH) / 2  # rotations are about (0, 0, 1)
BORDER_DEPTH = 0.7 * MAX_DEPTH + 0.3 * MIN_DEPTH  # Unsup3d's clamped border depth (1.04)
DEPTH_MARGIN = (MAX_DEPTH - MIN_DEPTH) / 2  # warped depth is clamped to [0.8, 1.2]; 1.2 marks "no surface"
NEAR, FAR = 0.1, 10.0  # clipping depths of the depth renderer (Unsup3d's renderer_min/max_depth)
XYZ_ROTATION_RANGE = 60.0  # degrees per unit of raw network output
XY_TRANSLATION_RANGE = 0.1
Z_TRANSLATION_RANGE = 0.1

__all__ = [
    "BORDER_DEPTH",
    "DEPTH_MARGIN",
    "FAR",
    "FOV",
    "MAX_DEPTH",
    "MIN_DEPTH",
    "NEAR",
    "ROT_CENTER_DEPTH",
    "XYZ_ROTATION_RANGE",
    "XY_TRANSLATION_RANGE",
    "Z_TRANSLATION_RANGE",
    "Reconstruction",
    "anchor_depth",
    "anchor_depth_tilt",
    "clamp_border_depth",
    "depth_from_raw",
    "depth_to_canonical_points",
    "get_inv_warped_2d_grid",
    "get_warped_2d_grid",
    "intrinsics",
    "light_direction",
    "light_from_raw",
    "light_to_raw",
    "masked_mean",
    "normals_from_depth",
    "points_to_grid",
    "recon_mask",
    "reconstruct",
    "render_view",
    "shade",
    "unwarp_points",
    "view_from_raw",
    "view_to_raw",
    "view_transform",
    "warp_canon_depth",
    "warp_points",
]


# ---------------------------------------------------------------------------------------------------------
# camera and parametrisation


def intrinsics(image_size: int, fov: float = FOV, dtype=torch.float32, device=None) -> Tensor:
    """(3, 3) Unsup3d intrinsics for an S x S image: fx = fy = (S - 1) / 2 / tan(fov / 2), cx = cy = (S - 1) / 2.

    ``fov`` (degrees) is the angle between the first and last pixel CENTRES (Unsup3d), unlike
    :func:`voxrender.intrinsics_from_fov`, which measures it between the image edges.
    """
    s = int(image_size)
    if s < 2:
        raise ValueError(f"image_size: expected at least 2 pixels, got {image_size!r}")
    f = (s - 1) / 2 / math.tan(math.radians(fov) / 2)
    c = (s - 1) / 2
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def _K(K, image_size: int, like: Tensor) -> Tensor:
    if K is None:
        return intrinsics(image_size, dtype=like.dtype, device=like.device)
    K = torch.as_tensor(K, dtype=like.dtype, device=like.device)
    if K.shape != (3, 3):
        raise ValueError(f"K: expected (3, 3) intrinsics shared by the batch, got {tuple(K.shape)}")
    return K


def depth_from_raw(raw: Tensor, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH) -> Tensor:
    """Unsup3d's depth parametrisation: tanh(raw - mean(raw)) mapped from [-1, 1] to [min_depth, max_depth].

    raw: (B, H, W) or (B, 1, H, W) network output (the channel is squeezed); the mean is per image.
    """
    if raw.dim() == 4:
        if raw.shape[1] != 1:
            raise ValueError(f"raw: expected (B, H, W) or (B, 1, H, W), got {tuple(raw.shape)}")
        raw = raw[:, 0]
    d = torch.tanh(raw - raw.mean(dim=(-2, -1), keepdim=True))
    return (1 + d) / 2 * max_depth + (1 - d) / 2 * min_depth


def anchor_depth(depth: Tensor, mask: Tensor, target: Tensor) -> Tensor:
    """Shifts each depth map (B, H, W) along z so that its mean over ``mask`` (B, H, W) or (B, 1, H, W) (weights
    in [0, 1], at least one pixel each) equals ``target`` (B,) or a number; the shape is unchanged.

    Why: the depth's distance from the renderer's rotation centre (depth 1) is invisible to the reconstruction
    of an image in its own view (a view's translation makes up for it) and to SIDE, yet it decides which way
    an object turned about that centre moves against its outline. This pins it to the prior's
    (:attr:`GAN2ShapeConfig.depth_anchor`).
    """
    target = torch.as_tensor(target, dtype=depth.dtype, device=depth.device).reshape(-1)
    return depth + (target - masked_mean(depth, mask))[:, None, None]


def anchor_depth_tilt(depth: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
    """Moves each depth map (B, H, W) by a plane ``a + b y`` (y the row coordinate, -1 at the top row, 1 at the
    bottom) so that ``depth - reference`` has zero mean AND zero vertical slope over ``mask`` (B, H, W) or (B, 1,
    H, W) (weights in [0, 1], a weighted least-squares fit); ``reference`` (B, H, W) is the ellipsoid prior. The
    mean part is :func:`anchor_depth`'s. A mask on a single row only gets its mean moved (no slope is defined
    there).

    Why: a Lambertian surface seen in one view is ambiguous up to the generalized bas-relief transformation
    ``z -> z + mu x + nu y`` with the light turned to match (Belhumeur, Kriegman and Yuille 1999). The flip
    (symmetry) terms fix ``mu``; nothing in one view fixes ``nu``, only views that turn the object up and down,
    and on the built-in faces the pretraining leans the canonical depth about 35 degrees forward with the light
    turned down by as much (docs/gan2shape.md). This holds ``nu`` at the prior's
    (:attr:`GAN2ShapeConfig.tilt_anchor`). (GAN2Shape's synface prior leans a little itself, +0.025 over the
    object masks of the built-in training faces, whose true canonical depth averages -0.0002 there; holding
    the slope at 0 instead was measured to pretrain worse. The prior built on the mask's own box,
    ``--prior-box plain``, leans -0.0001 there, and pretraining with it was measured to do better,
    docs/gan2shape.md.)
    """
    m = mask.reshape(depth.shape).to(depth.dtype)
    y = torch.linspace(-1, 1, depth.shape[-2], dtype=depth.dtype, device=depth.device)[:, None]
    r = depth - reference.reshape(depth.shape)
    s0, sy, syy = m.sum((-2, -1)), (m * y).sum((-2, -1)), (m * y * y).sum((-2, -1))
    if bool((s0 <= 0).any()):
        raise ValueError("mask: every map needs at least one pixel to fit the tilt over")
    r0, ry = (m * r).sum((-2, -1)), (m * r * y).sum((-2, -1))
    det = s0 * syy - sy * sy
    flat = det <= 1e-9 * s0 * s0
    det = torch.where(flat, torch.ones_like(det), det)
    b = torch.where(flat, torch.zeros_like(det), (s0 * ry - sy * r0) / det)
    a = (r0 - b * sy) / s0
    return depth - a[:, None, None] - b[:, None, None] * y


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """(B,) means of maps ``x`` (B, H, W) over ``mask`` (B, H, W) or (B, 1, H, W) (weights in [0, 1]); a
    ValueError when a mask is empty."""
    m = mask.reshape(x.shape).to(x.dtype)
    area = m.sum(dim=(-2, -1))
    if bool((area <= 0).any()):
        raise ValueError("mask: every map needs at least one pixel to average over")
    return (x * m).sum(dim=(-2, -1)) / area


def clamp_border_depth(depth: Tensor, width: int = 2, value: float = BORDER_DEPTH) -> Tensor:
    """Sets the ``width`` leftmost and rightmost columns of (B, H, W) depth maps to ``value`` (Unsup3d and
    GAN2Shape do this to the canonical depth before rendering: the image border is background)."""
    w = depth.shape[-1]
    col = torch.zeros(w, dtype=depth.dtype, device=depth.device)
    col[:width] = 1
    col[w - width:] = 1
    return depth * (1 - col) + col * value


def view_from_raw(raw: Tensor, rotation_range: float = XYZ_ROTATION_RANGE,
                  xy_translation_range: float = XY_TRANSLATION_RANGE,
                  z_translation_range: float = Z_TRANSLATION_RANGE) -> Tensor:
    """Raw viewpoint network output (B, 6) (or (B, 5) / (B, 3)) -> view in radians and camera units:
    rotations x ``rotation_range`` degrees, xy translation x 0.1, z translation x 0.1 (Unsup3d)."""
    rot = raw[:, :3] * (math.pi / 180 * rotation_range)
    parts = [rot]
    if raw.shape[1] > 3:
        parts.append(raw[:, 3:5] * xy_translation_range)
    if raw.shape[1] > 5:
        parts.append(raw[:, 5:] * z_translation_range)
    return torch.cat(parts, 1)


def view_to_raw(view: Tensor, rotation_range: float = XYZ_ROTATION_RANGE,
                xy_translation_range: float = XY_TRANSLATION_RANGE,
                z_translation_range: float = Z_TRANSLATION_RANGE) -> Tensor:
    """The inverse of :func:`view_from_raw`."""
    parts = [view[:, :3] / (math.pi / 180 * rotation_range)]
    if view.shape[1] > 3:
        parts.append(view[:, 3:5] / xy_translation_range)
    if view.shape[1] > 5:
        parts.append(view[:, 5:] / z_translation_range)
    return torch.cat(parts, 1)


def light_from_raw(raw: Tensor) -> Tensor:
    """Raw light network output (B, 4) in [-1, 1] -> (ambient, diffuse, lx, ly) = (a / 2 + 0.5, b / 2 + 0.5,
    dx, dy), GAN2Shape's mapping (ambient and diffuse in [0, 1])."""
    return torch.cat([raw[:, :2] / 2 + 0.5, raw[:, 2:4]], 1)


def light_to_raw(light: Tensor) -> Tensor:
    """The inverse of :func:`light_from_raw`."""
    return torch.cat([(light[:, :2] - 0.5) * 2, light[:, 2:4]], 1)


def _check_view(view: Tensor, like: Tensor) -> Tensor:
    view = torch.as_tensor(view, dtype=like.dtype, device=like.device)
    if view.dim() == 1:
        view = view[None]
    if view.dim() != 2 or view.shape[1] not in (3, 5, 6):
        raise ValueError(f"view: expected (B, 6), (B, 5) or (B, 3), got {tuple(view.shape)}")
    return view


def view_transform(view: Tensor) -> tuple[Tensor, Tensor]:
    """view (B, 6) / (B, 5) / (B, 3) -> rotation R (B, 3, 3) = R_z R_y R_x and translation t (B, 3)."""
    R = vr.euler_to_rotation(view[:, 0], view[:, 1], view[:, 2])
    t = view.new_zeros(view.shape[0], 3)
    if view.shape[1] >= 5:
        t = torch.cat([view[:, 3:5], view[:, 5:6] if view.shape[1] == 6 else view.new_zeros(view.shape[0], 1)], 1)
    return R, t


def _broadcast(depth: Tensor, view: Tensor) -> tuple[Tensor, Tensor]:
    """Depth maps (B or 1, H, W) and views (B or 1, k) expanded to a common batch size."""
    view = _check_view(view, depth)
    b = max(depth.shape[0], view.shape[0])
    if depth.shape[0] not in (1, b) or view.shape[0] not in (1, b):
        raise ValueError(f"batch sizes disagree: depth {depth.shape[0]}, view {view.shape[0]}")
    return depth.expand(b, -1, -1), view.expand(b, -1)


def _center(like: Tensor) -> Tensor:
    return torch.tensor([0.0, 0.0, ROT_CENTER_DEPTH], dtype=like.dtype, device=like.device)


# ---------------------------------------------------------------------------------------------------------
# geometry


def depth_to_canonical_points(depth: Tensor, K: Tensor | None = None) -> Tensor:
    """Depth maps (B, H, W) -> camera-frame points (B, H, W, 3): pixel (i, j) at depth d is d K^-1 (j, i, 1)."""
    if depth.dim() != 3:
        raise ValueError(f"depth: expected (B, H, W), got {tuple(depth.shape)}")
    return vr.depth_to_points(depth, _K(K, depth.shape[-1], depth))


def warp_points(points: Tensor, view: Tensor) -> Tensor:
    """Canonical -> view: R (p - c) + c + t with c = (0, 0, 1). points (B, ..., 3), view (B, 6)."""
    view = _check_view(view, points)
    R, t = view_transform(view)
    shape = points.shape
    p = points.reshape(shape[0], -1, 3)
    return vr.transform_points(p, R, t, center=_center(points)).reshape(shape)


def unwarp_points(points: Tensor, view: Tensor) -> Tensor:
    """View -> canonical, the inverse of :func:`warp_points`: R^T (q - t - c) + c."""
    view = _check_view(view, points)
    R, t = view_transform(view)
    shape = points.shape
    q = points.reshape(shape[0], -1, 3)
    return vr.inverse_transform_points(q, R, t, center=_center(points)).reshape(shape)


def points_to_grid(points: Tensor, K: Tensor, image_size: int) -> Tensor:
    """Projects camera-frame points (B, H, W, 3) to ``grid_sample`` coordinates (B, H, W, 2) for
    ``align_corners=True``: (u, v) = K (p / z), then u / (S - 1) * 2 - 1 (pixel centre 0 -> -1, S - 1 -> +1)."""
    s = int(image_size)
    z = points[..., 2:3]
    uv = points[..., :2] / z * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])
    return uv / (s - 1) * 2 - 1


def warp_canon_depth(canon_depth: Tensor, view: Tensor, K: Tensor | None = None, *, clamp: bool = True,
                     backend: str | None = None) -> Tensor:
    """Renders the canonical depth map, as a grid mesh (:func:`voxrender.grid_mesh_faces`) moved into the
    view, with the z-buffer :func:`voxrender.render_depth` (near 0.1, far 10, both sides drawn).

    Returns the view's depth (B, H, W). With ``clamp`` (Unsup3d) it is clamped to [0.8, 1.2] (the depth range
    with a margin of half its width), so pixels that see no surface hold exactly 1.2 (see :func:`recon_mask`).
    Differentiable with respect to ``canon_depth`` and ``view`` (visibility held fixed; zero gradient where
    clamped).
    """
    if canon_depth.dim() != 3:
        raise ValueError(f"canon_depth: expected (B, H, W), got {tuple(canon_depth.shape)}")
    canon_depth, view = _broadcast(canon_depth, view)
    b, h, w = canon_depth.shape
    K = _K(K, w, canon_depth)
    pts = warp_points(vr.depth_to_points(canon_depth, K).reshape(b, -1, 3), view)
    faces = vr.grid_mesh_faces(h, w, device=canon_depth.device)
    depth = vr.render_depth(pts, faces, K, (h, w), near=NEAR, far=FAR, backend=backend)
    if clamp:
        depth = depth.clamp(MIN_DEPTH - DEPTH_MARGIN, MAX_DEPTH + DEPTH_MARGIN)
    return depth


def get_warped_2d_grid(canon_depth: Tensor, view: Tensor, K: Tensor | None = None) -> Tensor:
    """Where each canonical pixel lands in the view: (B, H, W, 2) in grid_sample (align_corners=True)
    coordinates. Sampling a VIEW image with it brings the view into the canonical frame (GAN2Shape uses
    this to carry the object mask into the canonical frame)."""
    canon_depth, view = _broadcast(canon_depth, view)
    K = _K(K, canon_depth.shape[-1], canon_depth)
    pts = warp_points(vr.depth_to_points(canon_depth, K), view)
    return points_to_grid(pts, K, canon_depth.shape[-1])


def get_inv_warped_2d_grid(recon_depth: Tensor, view: Tensor, K: Tensor | None = None) -> Tensor:
    """Back-projects every view pixel with the view's depth (B, H, W), moves the point into the canonical
    frame (:func:`unwarp_points`) and projects it: (B, H, W, 2) grid_sample (align_corners=True)
    coordinates into the canonical image. ``F.grid_sample(canon_image, grid, align_corners=True)`` renders
    the canonical image in the view."""
    recon_depth, view = _broadcast(recon_depth, view)
    K = _K(K, recon_depth.shape[-1], recon_depth)
    pts = unwarp_points(vr.depth_to_points(recon_depth, K), view)
    return points_to_grid(pts, K, recon_depth.shape[-1])


def normals_from_depth(depth: Tensor, K: Tensor | None = None, eps: float = 0.0) -> Tensor:
    """Unit normals (B, H, W, 3) of depth maps, Unsup3d's ``get_normal_from_depth``: from the back-projected
    points P, n = normalize((P[i, j+1] - P[i, j-1]) x (P[i+1, j] - P[i-1, j])), which points AWAY from the
    camera ((0, 0, 1) for a fronto-parallel plane; the opposite sign of :func:`voxrender.normals_from_depth`).
    The one-pixel border gets (0, 0, 1).

    ``eps``: Unsup3d divides by (|n| + 1e-7). The un-normalised cross product is only about 4 / fx^2 long
    (3e-5 at 64 px, 8e-6 at 128 px), so that shortens its normals by 0.3 % (64 px) and 1.3 % (128 px), which
    alone puts acos(n . n) at 6.5 and 13 degrees for identical fronto-parallel depth maps. By default (0) the normals are
    exactly unit length; pass ``eps=1e-7`` to reproduce Unsup3d bit for bit."""
    w = depth.shape[-1]
    p = vr.depth_to_points(depth, _K(K, w, depth))
    tu = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
    tv = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
    inner = torch.cross(tu, tv, dim=-1)
    n = torch.zeros_like(p)
    n[..., 2] = 1
    n[:, 1:-1, 1:-1] = inner
    norm = n.pow(2).sum(-1, keepdim=True).sqrt()
    if eps > 0:
        return n / (norm + eps)
    return n / norm.clamp(min=torch.finfo(n.dtype).tiny ** 0.5)


def light_direction(light: Tensor) -> Tensor:
    """(B, 4) light -> unit direction d = normalize(lx, ly, 1) (B, 3), Unsup3d's sign (see the module doc)."""
    d = torch.cat([light[:, 2:4], torch.ones_like(light[:, :1])], 1)
    return d / d.pow(2).sum(1, keepdim=True).sqrt()


def shade(albedo: Tensor, normal: Tensor, light: Tensor) -> tuple[Tensor, Tensor]:
    """Lambertian shading: returns (image, diffuse) with diffuse = max(0, n . d) (B, 1, H, W) and
    image = albedo * (ambient + diffuse_strength * diffuse) (B, 3, H, W). albedo (B, 3, H, W),
    normal (B, H, W, 3) (:func:`normals_from_depth`), light (B, 4) = (ambient, diffuse, lx, ly)."""
    light = torch.as_tensor(light, dtype=albedo.dtype, device=albedo.device)
    if light.dim() == 1:
        light = light[None]
    d = light_direction(light)
    diffuse = (normal * d[:, None, None, :]).sum(-1).clamp(min=0)[:, None]
    shading = light[:, 0, None, None, None] + light[:, 1, None, None, None] * diffuse
    return albedo * shading, diffuse


def recon_mask(recon_depth: Tensor) -> Tensor:
    """Unsup3d's validity mask of a clamped warped depth (:func:`warp_canon_depth`): 1.0 where
    depth < 1.2 (the view pixel sees the mesh), else 0.0; (B, H, W), no gradient."""
    return (recon_depth < MAX_DEPTH + DEPTH_MARGIN).to(recon_depth.dtype).detach()


class Reconstruction(NamedTuple):
    """What :func:`reconstruct` returns (all batched)."""

    image: Tensor  # (B, C, H, W) the shaded canonical image seen in the view (0 where mask is 0)
    mask: Tensor  # (B, H, W) 1.0 where the view pixel sees the canonical mesh, no gradient
    depth: Tensor  # (B, H, W) the view's depth, clamped to [0.8, 1.2] (1.2: no surface)
    grid: Tensor  # (B, H, W, 2) the inverse-warp sampling grid (align_corners=True)
    canon_image: Tensor  # (B, C, H, W) albedo * shading in the canonical frame
    canon_normal: Tensor  # (B, H, W, 3) canonical normals (Unsup3d sign)
    diffuse: Tensor  # (B, 1, H, W) max(0, n . d) in the canonical frame


def render_view(canon_image: Tensor, canon_depth: Tensor, view: Tensor, K: Tensor | None = None, *,
                mode: str = "bilinear", backend: str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Warps any canonical image (B, C, H, W) (a shaded image, a mask, normals as colours) into the view:
    returns (image, mask, depth, grid). Out-of-mask pixels are zeroed. Unsup3d's ``render_given_view`` with
    ``grid_sample=True``."""
    depth = warp_canon_depth(canon_depth, view, K, backend=backend)
    grid = get_inv_warped_2d_grid(depth, view, K)
    mask = recon_mask(depth)
    img = F.grid_sample(canon_image, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return img * mask[:, None], mask, depth, grid


def reconstruct(canon_depth: Tensor, canon_albedo: Tensor, view: Tensor, light: Tensor, K: Tensor | None = None,
                *, clamp: bool = False, backend: str | None = None) -> Reconstruction:
    """The Unsup3d / GAN2Shape forward model: the image of the canonical (depth, albedo) under ``light`` seen
    from ``view``.

    Args:
        canon_depth: (B, H, W) canonical depth (camera z, nominally in [0.9, 1.1]).
        canon_albedo: (B, C, H, W) albedo in [0, 1] (C = 3 usually). Batch sizes of 1 broadcast (one
            canonical face under many views, as in GAN2Shape's pseudo samples).
        view: (B, 6) / (B, 5) / (B, 3) or (6,): radians and camera units (:func:`view_from_raw` for raw).
        light: (B, 4) or (4,): (ambient, diffuse, lx, ly) (:func:`light_from_raw` for raw).
        K: intrinsics (default :func:`intrinsics` of the image size: fov 10 deg).
        clamp: clamp the image to [0, 1] (GAN2Shape clamps its reconstructions).

    Returns:
        :class:`Reconstruction` (image, mask, depth, grid, canon_image, canon_normal, diffuse); the image is
        multiplied by the (detached) recon mask, like Unsup3d's masked photometric loss inputs.
    """
    if canon_albedo.dim() != 4 or canon_albedo.shape[-2:] != canon_depth.shape[-2:]:
        raise ValueError(f"canon_albedo: expected (B, C, H, W) matching canon_depth {tuple(canon_depth.shape)}, "
                         f"got {tuple(canon_albedo.shape)}")
    light = torch.as_tensor(light, dtype=canon_depth.dtype, device=canon_depth.device)
    light = light[None] if light.dim() == 1 else light
    view = _check_view(view, canon_depth)
    sizes = {"canon_depth": canon_depth.shape[0], "canon_albedo": canon_albedo.shape[0], "view": view.shape[0],
             "light": light.shape[0]}
    b = max(sizes.values())
    if any(n not in (1, b) for n in sizes.values()):
        raise ValueError("batch sizes disagree: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    canon_depth, view, light = canon_depth.expand(b, -1, -1), view.expand(b, -1), light.expand(b, -1)
    K = _K(K, canon_depth.shape[-1], canon_depth)
    normal = normals_from_depth(canon_depth, K)
    canon_image, diffuse = shade(canon_albedo.expand(b, -1, -1, -1), normal, light)
    image, mask, depth, grid = render_view(canon_image, canon_depth, view, K, backend=backend)
    if clamp:
        image = image.clamp(0, 1)
    return Reconstruction(image, mask, depth, grid, canon_image, normal, diffuse)
