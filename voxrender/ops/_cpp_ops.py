"""Fake (meta) kernels and autograd for the C++ ops ``torch.ops.voxrender.*`` (schemas in csrc/ops/register.cpp).

Imported by :func:`voxrender.backends.extension_status` once the extension has loaded.
"""

from __future__ import annotations

import torch

from . import antialias_autograd  # noqa: F401  (fake kernels and autograd of the antialias ops)
from . import interpolate_autograd  # noqa: F401  (fake kernels and autograd of the interpolate ops)
from . import fragments_autograd  # noqa: F401  (fake kernels and autograd of the fused bary/depth ops)
from .volume_projection_autograd import register_projection_autograd

_ops = torch.ops.voxrender


@torch.library.register_fake("voxrender::project_volume_forward")
def _forward_fake(density, features, rotation, height, width, n_samples, mode, tau, projection, camera):
    channels = features.shape[1] + 1 if features is not None else 1
    b = density.shape[0]
    return density.new_empty(b, channels, height, width), density.new_empty(b, height, width)


@torch.library.register_fake("voxrender::project_volume_backward")
def _backward_fake(grad_out, out, aux, density, features, rotation, height, width, n_samples, mode, tau,
                   projection, camera, rotation_grad):
    gf = torch.empty_like(features) if features is not None else density.new_empty(0)
    return torch.empty_like(density), gf, density.new_empty(density.shape[0], 3, 3)


register_projection_autograd("voxrender::project_volume_forward", _ops.project_volume_backward)


@torch.library.register_fake("voxrender::rasterize_face_ids")
def _rasterize_fake(verts, faces, height, width, cull_backfaces):
    b = verts.shape[0]
    return verts.new_empty(b, height, width, dtype=torch.int32), verts.new_empty(b, height, width)


def project_volume_cpp(density, features, rotation, height, width, n_samples, mode, tau, camera):
    """The ``cpu`` and ``cuda`` backends: the same op, dispatched by the tensors' device."""
    out, _ = _ops.project_volume_forward(density, features, rotation, height, width, n_samples, mode, tau,
                                         camera.projection, camera.floats())
    return out
