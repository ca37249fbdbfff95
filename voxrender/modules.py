"""``nn.Module`` wrappers of the rasterization ops and renderers, for use inside models.

They hold the fixed settings (image size, camera intrinsics as a buffer so that ``.to(device)`` moves
them, shading constants) and take the per-call tensors in ``forward``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .ops.rasterize import rasterize
from .ops.volume_projection import image_size_arg
from .reference.rasterize import Fragments
from .render import DEFAULT_FAR, DEFAULT_NEAR, render_depth, render_mesh


class MeshRasterizer(nn.Module):
    """``forward(verts_clip, faces) -> Fragments``: :func:`voxrender.rasterize` with fixed settings."""

    def __init__(self, image_size, cull_backfaces: bool = False, backend: str | None = None):
        super().__init__()
        self.image_size = image_size_arg(image_size)
        self.cull_backfaces = bool(cull_backfaces)
        self.backend = backend

    def forward(self, verts_clip: Tensor, faces: Tensor) -> Fragments:
        return rasterize(verts_clip, faces, self.image_size, cull_backfaces=self.cull_backfaces,
                         backend=self.backend)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, cull_backfaces={self.cull_backfaces}, backend={self.backend!r}"


class DepthRenderer(nn.Module):
    """``forward(points_cam, faces) -> depth (B, H, W)``: :func:`voxrender.render_depth` with a fixed camera.

    K (3, 3) or (B, 3, 3) is stored as a buffer (it follows ``.to()`` and is saved in the state dict).
    """

    def __init__(self, K, image_size, near: float = DEFAULT_NEAR, far: float = DEFAULT_FAR, background=None,
                 cull_backfaces: bool = False, backend: str | None = None):
        super().__init__()
        K = torch.as_tensor(K)
        if K.dim() not in (2, 3) or K.shape[-2:] != (3, 3):
            raise ValueError(f"K: expected (3, 3) or (B, 3, 3) OpenCV intrinsics, got {tuple(K.shape)}")
        if not 0 < near < far:
            raise ValueError(f"near, far: expected 0 < near < far, got near={near}, far={far}")
        self.register_buffer("K", K.to(torch.get_default_dtype()) if not K.is_floating_point() else K.clone())
        self.image_size = image_size_arg(image_size)
        self.near, self.far = float(near), float(far)
        self.background = background
        self.cull_backfaces = bool(cull_backfaces)
        self.backend = backend

    def forward(self, points_cam: Tensor, faces: Tensor) -> Tensor:
        return render_depth(points_cam, faces, self.K, self.image_size, near=self.near, far=self.far,
                            background=self.background, cull_backfaces=self.cull_backfaces, backend=self.backend)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, near={self.near}, far={self.far}, cull_backfaces={self.cull_backfaces}"


class MeshRenderer(nn.Module):
    """``forward(verts, faces, colors=None, **camera) -> image (B, H, W, 3)``: :func:`voxrender.render_mesh`
    with fixed settings.

    The keyword arguments of the constructor are :func:`voxrender.render_mesh`'s (``image_size``, ``K``,
    ``fov``, ``distance``, ``light_dir``, ``ambient``, ``diffuse``, ``background``, ``normals``,
    ``cull_backfaces``, ``antialias``, ``return_mask``, ``backend``, ...); ``forward`` may override any of
    them for one call, e.g. the camera: ``renderer(verts, faces, azimuth=a)`` or ``R=R, t=t``.
    """

    def __init__(self, image_size=256, **settings):
        super().__init__()
        settings = dict(settings, image_size=image_size_arg(image_size))
        K = settings.pop("K", None)
        if K is not None:
            self.register_buffer("K", torch.as_tensor(K).clone())
        else:
            self.K = None
        # Fail early on unknown names (render_mesh's signature is the contract).
        import inspect

        allowed = set(inspect.signature(render_mesh).parameters) - {"verts", "faces"}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise TypeError(f"MeshRenderer: unknown setting(s) {', '.join(unknown)}; "
                            f"expected render_mesh's keywords ({', '.join(sorted(allowed))})")
        self.settings = settings

    def forward(self, verts: Tensor, faces: Tensor, colors=None, **overrides):
        kw = dict(self.settings)
        if self.K is not None:
            kw["K"] = self.K
        kw.update(overrides)
        if colors is not None:
            kw["colors"] = colors
        return render_mesh(verts, faces, **kw)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
