"""Fake kernels and autograd of the C++ interpolate ops (``torch.ops.voxrender.interpolate`` /
``interpolate_backward``, csrc/ops/interpolate_cpu.cpp and csrc/ops/interpolate_cuda.cpp).

Imported by :mod:`voxrender.ops._cpp_ops` once the extension has loaded. Registers nothing when the loaded
extension predates the interpolate ops (a stale build), so the rest of the extension keeps working.

Gradients flow to ``attr`` and ``bary`` (and from ``bary``, through the torch graph of
``fragments_from_face_ids``, to the vertices); ``face_id`` and ``faces`` are constants. ``grad_attr`` has the
shape of ``attr`` as the op saw it, (B, V, C): when ``attr`` is an ``expand()``ed (V, C) tensor shared by the
batch, autograd's expand backward sums it over the batch.
"""

from __future__ import annotations

import torch

_ops = torch.ops.voxrender


def _register() -> bool:
    if not (hasattr(_ops, "interpolate") and hasattr(_ops, "interpolate_backward")):
        return False

    @torch.library.register_fake("voxrender::interpolate")
    def _forward_fake(attr, face_id, bary, faces):
        torch._check(attr.dim() == 3, lambda: f"attr: expected (B, V, C), got {tuple(attr.shape)}")
        torch._check(face_id.dim() == 3, lambda: f"face_id: expected (B, H, W), got {tuple(face_id.shape)}")
        b, h, w = face_id.shape
        return attr.new_empty(b, h, w, attr.shape[2])

    @torch.library.register_fake("voxrender::interpolate_backward")
    def _backward_fake(grad_out, attr, face_id, bary, faces, attr_grad, bary_grad):
        ga = attr.new_empty(attr.shape) if attr_grad else attr.new_empty(0)
        gb = bary.new_empty(bary.shape) if bary_grad else bary.new_empty(0)
        return ga, gb

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad_out):
        attr, face_id, bary, faces = ctx.saved_tensors
        need_attr, need_bary = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        if not (need_attr or need_bary):
            return None, None, None, None
        ga, gb = _ops.interpolate_backward(grad_out, attr, face_id, bary, faces, need_attr, need_bary)
        return ga if need_attr else None, None, gb if need_bary else None, None

    torch.library.register_autograd("voxrender::interpolate", backward, setup_context=setup_context)
    return True


REGISTERED = _register()
