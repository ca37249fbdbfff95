"""Renderers built on ``rasterize`` + ``interpolate``: a depth (z-buffer) renderer and a shaded mesh preview.

Both are plain differentiable PyTorch on top of the rasterization primitives, so they run on every
backend the primitives have, and gradients reach the vertices (through the perspective-correct
barycentrics, visibility held fixed) and every per-vertex attribute.

Frames (the library's, see :func:`voxrender.perspective`): the camera looks along +z with x to the
right and y down (OpenCV); image row 0 is the top. Intrinsics K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
are in pixels with pixel centres at integer coordinates: pixel (i, j) is centred at u = j, v = i, and
the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]. A depth map back-projected by
:func:`voxrender.depth_to_points` therefore puts vertex (i, j) exactly on the centre of pixel (i, j).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from .geometry import perspective, rotation_from_angles
from .ops.rasterize import interpolate, rasterize
from .ops.volume_projection import image_size_arg

DEFAULT_NEAR = 0.1
DEFAULT_FAR = 10.0


def intrinsics_from_fov(fov: float, image_size, dtype=torch.float32, device=None) -> Tensor:
    """(3, 3) OpenCV intrinsics of a centred pinhole camera with square pixels and vertical field of view
    ``fov`` (degrees) measured between the top and bottom image EDGES: fy = fx = (H / 2) / tan(fov / 2),
    cx = (W - 1) / 2, cy = (H - 1) / 2 (pixel centres at integers). The same framing as
    ``project_volume(..., projection="perspective", fov=...)``.

    (Unsup3d / GAN2Shape measure the angle between the first and last pixel CENTRES instead,
    f = (S - 1) / 2 / tan(fov / 2); build K directly for that convention.)
    """
    h, w = image_size_arg(image_size)
    if not (isinstance(fov, numbers.Real) and 0 < fov < 180):
        raise ValueError(f"fov: expected degrees in (0, 180), got {fov!r}")
    f = (h / 2) / math.tan(math.radians(fov) / 2)
    return torch.tensor([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def _check_points(points, name: str) -> Tensor:
    if not isinstance(points, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(points).__name__}")
    if not points.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {points.dtype}")
    if points.dim() == 2:
        points = points[None]
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name}: expected (B, N, 3) or (N, 3), got {tuple(points.shape)}")
    return points


def _check_intrinsics(K, points: Tensor) -> Tensor:
    if not isinstance(K, Tensor):
        try:
            K = torch.as_tensor(K, dtype=points.dtype, device=points.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"K: expected a (3, 3) or (B, 3, 3) tensor, got {type(K).__name__}") from None
    if K.device != points.device:
        raise ValueError(f"K: expected a tensor on {points.device} (the points' device), got {K.device}")
    if not K.is_floating_point():
        K = K.to(points.dtype)
    if K.dim() not in (2, 3) or K.shape[-2:] != (3, 3):
        raise ValueError(f"K: expected (3, 3) or (B, 3, 3) OpenCV intrinsics, got {tuple(K.shape)}")
    return K.to(points.dtype)


def _batch_size(**sizes) -> int:
    """The common batch size of arguments of batch size 1 (broadcast) or B; a clear error otherwise."""
    big = {name: n for name, n in sizes.items() if n != 1}
    if len(set(big.values())) > 1:
        raise ValueError("batch sizes disagree: " + ", ".join(f"{k} {v}" for k, v in big.items()))
    return next(iter(big.values()), 1)


def project_points(points_cam: Tensor, K: Tensor, image_size, near: float, far: float) -> Tensor:
    """Camera-frame points (B, N, 3) -> clip coordinates (B, N, 4) for :func:`voxrender.rasterize`."""
    P = perspective(K, image_size, near, far)
    hom = torch.cat([points_cam, torch.ones_like(points_cam[..., :1])], -1)
    return hom @ P.transpose(-1, -2)


def _fill(values: Tensor, hit: Tensor, background) -> Tensor:
    bg = torch.as_tensor(background, dtype=values.dtype, device=values.device)
    return torch.where(hit, values, bg)


def _interpolate(attr: Tensor, frags, faces: Tensor) -> Tensor:
    """:func:`voxrender.interpolate`, also for zero faces (all background: zeros)."""
    if faces.shape[-2] == 0:
        B, H, W = frags.face_id.shape
        return attr.sum() * 0 + attr.new_zeros(B, H, W, attr.shape[-1])
    return interpolate(attr, frags, faces)


def render_depth(points_cam: Tensor, faces: Tensor, K, image_size, *, near: float = DEFAULT_NEAR,
                 far: float = DEFAULT_FAR, background=None, cull_backfaces: bool = False,
                 backend: str | None = None) -> Tensor:
    """The z-buffer: camera-space depth z of the visible surface of a mesh given in the camera frame.

    Args:
        points_cam: (B, N, 3) or (N, 3) vertices in the OpenCV camera frame (x right, y down, z forward).
        faces: (F, 3) int32/int64 shared by the batch, or (B, F, 3) with rows of -1 as padding.
        K: (3, 3) shared or (B, 3, 3) intrinsics in pixels, pixel centres at integer coordinates
            (pixel (i, j) is centred at u = j, v = i; see :func:`voxrender.perspective`). A point projects
            to u = fx x / z + cx, v = fy y / z + cy, and ``depth[b, i, j]`` is the depth of the surface
            seen through the centre of pixel (i, j).
        image_size: int or (H, W).
        near, far: clipping depths (0 < near < far); surfaces outside [near, far] are not drawn.
            The defaults (0.1, 10) are Unsup3d's renderer's.
        background: value of pixels that see no surface: a number or a tensor broadcastable to
            (B, H, W); None (default) gives ``far``, as Neural Mesh Renderer's ``render_depth`` does.
        cull_backfaces: drop faces whose right-hand normal (v1 - v0) x (v2 - v0) points away from the
            camera. Off by default: both sides are drawn (Unsup3d's ``fill_back=True``).
        backend: rasterization backend (None: automatic).

    Returns:
        (B, H, W) depth. It is the interpolation of the vertices' z with the rasterizer's perspective-
        correct barycentrics, i.e. the exact ray-plane intersection depth of the visible triangle, and
        differentiable with respect to ``points_cam`` (and ``K``) with the visibility held fixed.
        Rendering ``depth_to_points(depth, K)`` as ``grid_mesh_faces(H, W)`` gives ``depth`` back, except
        on the last row and column: their pixel centres lie exactly on the mesh's right and bottom
        boundary edges, which the top-left fill rule leaves uncovered (they get ``background``).
    """
    points = _check_points(points_cam, "points_cam")
    K = _check_intrinsics(K, points)
    h, w = image_size_arg(image_size)
    if not isinstance(faces, Tensor):
        raise TypeError(f"faces: expected a torch.Tensor, got {type(faces).__name__}")
    B = _batch_size(points_cam=points.shape[0], K=K.shape[0] if K.dim() == 3 else 1,
                    faces=faces.shape[0] if faces.dim() == 3 else 1)
    points = points.expand(B, -1, -1)
    clip = project_points(points, K, (h, w), near, far)
    frags = rasterize(clip, faces, (h, w), cull_backfaces=cull_backfaces, backend=backend)
    z = _interpolate(points[..., 2:], frags, faces)[..., 0]
    return _fill(z, frags.face_id >= 0, far if background is None else background)


# ---------------------------------------------------------------------------------------------------
# Shaded mesh preview


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals of verts (B, V, 3) or (V, 3) and faces (F, 3) or (B, F, 3)
    (rows of -1 ignored), shaped like ``verts``: the normalised sum of the right-hand normals
    (v1 - v0) x (v2 - v0) of the faces around each vertex (each as long as twice its face's area), so
    they point out of an outward-wound solid. Vertices on no face get 0. Differentiable."""
    single = verts.dim() == 2
    v = verts[None] if single else verts
    f = faces[None] if faces.dim() == 2 else faces
    B = max(v.shape[0], f.shape[0])
    v, f = v.expand(B, -1, -1), f.expand(B, -1, -1)
    V = v.shape[1]
    valid = (f >= 0).all(-1)
    idx = f.clamp(min=0).long() + torch.arange(B, device=v.device)[:, None, None] * V  # (B, F, 3)
    tri = v.reshape(-1, 3)[idx]  # (B, F, 3, 3)
    fn = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1) * valid[..., None]
    src = fn[:, :, None].expand(-1, -1, 3, -1).reshape(-1, 3)
    acc = v.new_zeros(B * V, 3).index_add(0, idx.reshape(-1), src)
    n = torch.nn.functional.normalize(acc.reshape(B, V, 3), dim=-1)
    return n[0] if single and B == 1 else n


def _camera(verts: Tensor, R, t, azimuth, elevation, distance) -> tuple[Tensor, Tensor]:
    """World-to-camera R (Br, 3, 3), t (Bt, 3) from explicit R, t or from angles and distance."""
    dt, dev = verts.dtype, verts.device
    if R is None:
        az = torch.as_tensor(0.0 if azimuth is None else azimuth, dtype=dt, device=dev).reshape(-1)
        el = torch.as_tensor(0.0 if elevation is None else elevation, dtype=dt, device=dev).reshape(-1)
        R = rotation_from_angles(*torch.broadcast_tensors(az, el))
    elif azimuth is not None or elevation is not None:
        raise ValueError("R: give either R (and t) or azimuth / elevation, not both")
    R = torch.as_tensor(R, dtype=dt, device=dev)
    if R.dim() not in (2, 3) or R.shape[-2:] != (3, 3):
        raise ValueError(f"R: expected (3, 3) or (B, 3, 3), got {tuple(R.shape)}")
    if t is None:
        if isinstance(distance, bool) or not (isinstance(distance, numbers.Real) and distance > 0):
            raise ValueError(f"distance: expected a positive number, got {distance!r}")
        t = torch.tensor([0.0, 0.0, float(distance)], dtype=dt, device=dev)
    t = torch.as_tensor(t, dtype=dt, device=dev)
    if t.dim() not in (1, 2) or t.shape[-1] != 3:
        raise ValueError(f"t: expected (3,) or (B, 3), got {tuple(t.shape)}")
    return R.reshape(-1, 3, 3), t.reshape(-1, 3)


def _colors(colors, verts: Tensor) -> Tensor:
    B, V, _ = verts.shape
    if colors is None:
        colors = 0.8
    colors = torch.as_tensor(colors, dtype=verts.dtype, device=verts.device)
    if colors.dim() == 0:
        colors = colors.expand(3)
    if colors.dim() == 1:
        if colors.shape[0] != 3:
            raise ValueError(f"colors: expected a number, (3,), (V, 3) or (B, V, 3), got {tuple(colors.shape)}")
        colors = colors.expand(V, 3)
    if colors.dim() == 2:
        colors = colors[None]
    if colors.dim() != 3 or colors.shape[1:] != (V, 3) or colors.shape[0] not in (1, B):
        raise ValueError(f"colors: expected a number, (3,), ({V}, 3) or ({B}, {V}, 3), got {tuple(colors.shape)}")
    return colors.expand(B, V, 3)


def render_mesh(verts: Tensor, faces: Tensor, *, colors=None, K=None, R=None, t=None, azimuth=None,
                elevation=None, distance: float = 4.0, fov: float = 40.0, image_size=256,
                near: float = DEFAULT_NEAR, far: float = 100.0, light_dir=(-0.4, -0.6, -1.0),
                ambient: float = 0.35, diffuse: float = 0.65, background=1.0, normals: str = "vertex",
                cull_backfaces: bool = False, antialias: bool = True, return_mask: bool = False,
                backend: str | None = None):
    """A differentiable Lambertian preview of a mesh: ``vr.render_mesh(*icosphere(3))`` draws a grey ball.

    Args:
        verts: (B, V, 3) or (V, 3) world-space vertices.
        faces: (F, 3) shared or (B, F, 3) (rows of -1 are padding); front faces have their right-hand
            normal (v1 - v0) x (v2 - v0) pointing out of the solid (towards a camera outside).
        colors: albedo: None (0.8 grey), a number, (3,), (V, 3) or (B, V, 3) per-vertex RGB,
            interpolated across faces.
        K: (3, 3) or (B, 3, 3) intrinsics in pixels (pixel centres at integers); None builds them from
            ``fov`` (vertical, degrees, edge to edge) with :func:`intrinsics_from_fov`.
        R, t: world-to-camera transform x_cam = R x + t ((3, 3) / (B, 3, 3) and (3,) / (B, 3)).
            By default R = R_x(elevation) @ R_y(azimuth) (radians, both 0 by default; a positive
            elevation looks down on the mesh from above, world up being -y) and
            t = (0, 0, distance): the camera sits ``distance`` in front of the origin and looks at it
            along +z with y down, exactly the camera of ``project_volume(..., projection="perspective")``,
            so a mesh and a voxelisation of it render in the same place.
        near, far: clipping depths of the camera.
        light_dir: direction from the surface towards a directional light, in the CAMERA frame (so the
            light moves with the camera); default up-left-front. (3,) or (B, 3); normalised here.
        ambient, diffuse: shading = ambient + diffuse * max(0, n . l).
        background: colour of empty pixels: a number or (3,) (default white).
        normals: ``"vertex"`` (default): area-weighted vertex normals interpolated across each face and
            renormalised per pixel (smooth shading); ``"face"``: the flat normal of each face. Where
            the back of a face is seen (cull_backfaces=False), its normal is flipped, so both sides are lit.
        cull_backfaces: do not draw faces seen from behind.
        antialias: blend silhouette edges with ``voxrender.antialias`` when the library provides it
            (silhouette gradients to the vertices); ignored otherwise.
        return_mask: also return the coverage mask.
        backend: rasterization backend.

    Returns:
        image (B, H, W, 3) in [0, 1] (= albedo * shading over the background), and with
        ``return_mask=True`` also mask (B, H, W) in [0, 1] (1 where the mesh covers the pixel centre;
        fractional at silhouettes when antialiased). Differentiable with respect to ``verts``,
        ``colors``, the camera and the light.
    """
    verts = _check_points(verts, "verts")
    if normals not in ("vertex", "face"):
        raise ValueError(f"normals: expected 'vertex' or 'face', got {normals!r}")
    h, w = image_size_arg(image_size)
    Rm, tv = _camera(verts, R, t, azimuth, elevation, distance)
    if K is None:
        K = intrinsics_from_fov(fov, (h, w), dtype=verts.dtype, device=verts.device)
    K = _check_intrinsics(K, verts)
    light = torch.as_tensor(light_dir, dtype=verts.dtype, device=verts.device)
    if light.dim() not in (1, 2) or light.shape[-1] != 3:
        raise ValueError(f"light_dir: expected (3,) or (B, 3), got {tuple(light.shape)}")
    light = torch.nn.functional.normalize(light.reshape(-1, 3), dim=-1)
    bg = torch.as_tensor(background, dtype=verts.dtype, device=verts.device)
    if bg.shape not in ((), (1,), (3,)):
        raise ValueError(f"background: expected a number or an RGB triple, got shape {tuple(bg.shape)}")
    if not isinstance(faces, Tensor):
        raise TypeError(f"faces: expected a torch.Tensor, got {type(faces).__name__}")
    B = _batch_size(verts=verts.shape[0], faces=faces.shape[0] if faces.dim() == 3 else 1, R=Rm.shape[0],
                    t=tv.shape[0], K=K.shape[0] if K.dim() == 3 else 1, light_dir=light.shape[0])
    verts = verts.expand(B, -1, -1)
    vertex_colors = _colors(colors, verts)
    pts = verts @ Rm.expand(B, 3, 3).transpose(-1, -2) + tv.expand(B, 3)[:, None]  # camera frame
    clip = project_points(pts, K, (h, w), near, far)
    frags = rasterize(clip, faces, (h, w), cull_backfaces=cull_backfaces, backend=backend)
    fb = faces[None].expand(B, -1, -1) if faces.dim() == 2 else faces
    hit = frags.face_id >= 0

    # Shading normals in the camera frame, flipped on faces seen from behind.
    fid = frags.face_id.clamp(min=0).long().reshape(B, -1)
    fsafe = fb if fb.shape[1] else fb.new_zeros(B, 1, 3)  # zero faces: every pixel is background anyway
    tri_idx = fsafe.gather(1, fid[..., None].expand(-1, -1, 3)).clamp(min=0).long()  # (B, HW, 3)
    bidx = torch.arange(B, device=verts.device)[:, None, None]
    tri = pts[bidx, tri_idx]  # (B, HW, 3, 3)
    fn = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    facing = ((fn * tri[:, :, 0]).sum(-1) <= 0).reshape(B, h, w, 1)  # normal towards the camera at 0
    if normals == "vertex":
        n = _interpolate(vertex_normals(pts, fb), frags, fb)
    else:
        n = fn.reshape(B, h, w, 3)
    n = torch.nn.functional.normalize(torch.where(facing, n, -n), dim=-1)
    shading = ambient + diffuse * (n * light[:, None, None, :]).sum(-1, keepdim=True).clamp(min=0)
    albedo = _interpolate(vertex_colors, frags, fb)
    rgb = torch.where(hit[..., None], (albedo * shading).clamp(0, 1), bg)
    mask = hit.to(pts.dtype)

    import voxrender
    from . import backends

    aa = getattr(voxrender, "antialias", None)
    if antialias and aa is not None:
        # A backend named for this call applies to antialiasing too where that op has it.
        aa_backend = backend if backend in backends.IMPLEMENTED.get("antialias", ()) else None
        out = aa(torch.cat([rgb, mask[..., None]], -1), frags, clip, faces, backend=aa_backend)
        rgb, mask = out[..., :3].clamp(0, 1), out[..., 3].clamp(0, 1)
    return (rgb, mask) if return_mask else rgb
