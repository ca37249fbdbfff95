"""Fake kernels and autograd of the C++ antialias ops (``torch.ops.voxrender.antialias_forward`` /
``antialias_backward``, csrc/ops/antialias_cpu.cpp and csrc/ops/antialias_cuda.cpp).

Imported by :mod:`voxrender.ops._cpp_ops` once the extension has loaded. Registers nothing when the loaded
extension predates the antialias ops or their ``adjacency`` argument (a stale build), so the rest of the
extension keeps working.
"""

from __future__ import annotations

import torch

_ops = torch.ops.voxrender


def _register() -> bool:
    if not (hasattr(_ops, "antialias_forward") and hasattr(_ops, "antialias_backward")):
        return False
    if len(_ops.antialias_forward.default._schema.arguments) != 7:  # before the walk took ``adjacency``
        return False

    @torch.library.register_fake("voxrender::antialias_forward")
    def _forward_fake(color, face_id, depth, verts, faces, silhouette, adjacency):
        return torch.empty_like(color, memory_format=torch.contiguous_format)

    @torch.library.register_fake("voxrender::antialias_backward")
    def _backward_fake(grad_out, color, face_id, depth, verts, faces, silhouette, adjacency):
        return (torch.empty_like(color, memory_format=torch.contiguous_format),
                torch.empty_like(verts, memory_format=torch.contiguous_format))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad_out):
        color, face_id, depth, verts, faces, silhouette, adjacency = ctx.saved_tensors
        # Gradients to color and verts only: the fragments (face_id, depth) and the topology are constants.
        g_color, g_verts = _ops.antialias_backward(grad_out, color, face_id, depth, verts, faces, silhouette,
                                                   adjacency)
        return (g_color if ctx.needs_input_grad[0] else None, None, None,
                g_verts if ctx.needs_input_grad[3] else None, None, None, None)

    torch.library.register_autograd("voxrender::antialias_forward", backward, setup_context=setup_context)
    return True


REGISTERED = _register()
