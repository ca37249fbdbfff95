"""Fake kernels and autograd of the fused C++ fragments ops (``torch.ops.voxrender.fragments_forward`` /
``fragments_backward``, csrc/ops/fragments_cpu.cpp and csrc/ops/fragments_cuda.cpp).

``fragments_forward(verts, faces, face_id) -> (bary, depth)`` computes, in one pass over the pixels, what
:func:`voxrender.reference.rasterize.fragments_from_face_ids` (the oracle) computes with torch ops: the
perspective-correct barycentrics and z/w depth of each pixel's visible face, 0 and 1.0 in the background.
``fragments_backward(grad_bary, grad_depth, verts, faces, face_id) -> grad_verts`` is its analytic gradient
with respect to ``verts`` (visibility held fixed); either upstream gradient may be None (zero). The math is
in csrc/include/voxrender/fragments.h.

Imported by :mod:`voxrender.ops._cpp_ops` once the extension has loaded. Registers nothing when the loaded
extension predates the fragments ops (a stale build), so the rest of the extension keeps working.

``grad_verts`` has the shape of ``verts`` as the op saw it, (B, V, 4), contiguous; ``faces`` and ``face_id``
are constants. The CPU backward is deterministic (bitwise, whatever the thread count); the CUDA backward
adds with atomics and says so under ``torch.use_deterministic_algorithms(True)``.
"""

from __future__ import annotations

import torch

_ops = torch.ops.voxrender


def _register() -> bool:
    if not (hasattr(_ops, "fragments_forward") and hasattr(_ops, "fragments_backward")):
        return False

    @torch.library.register_fake("voxrender::fragments_forward")
    def _forward_fake(verts, faces, face_id):
        torch._check(verts.dim() == 3, lambda: f"verts: expected (B, V, 4), got {tuple(verts.shape)}")
        torch._check(face_id.dim() == 3, lambda: f"face_id: expected (B, H, W), got {tuple(face_id.shape)}")
        b, h, w = face_id.shape
        return verts.new_empty(b, h, w, 3), verts.new_empty(b, h, w)

    @torch.library.register_fake("voxrender::fragments_backward")
    def _backward_fake(grad_bary, grad_depth, verts, faces, face_id):
        return verts.new_empty(verts.shape[0], verts.shape[1], 4)

    def setup_context(ctx, inputs, output):
        verts, faces, face_id = inputs
        ctx.save_for_backward(verts, faces, face_id)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: the op reads it as zero

    def backward(ctx, grad_bary, grad_depth):
        if not ctx.needs_input_grad[0] or (grad_bary is None and grad_depth is None):
            return None, None, None
        verts, faces, face_id = ctx.saved_tensors
        return _ops.fragments_backward(grad_bary, grad_depth, verts, faces, face_id), None, None

    torch.library.register_autograd("voxrender::fragments_forward", backward, setup_context=setup_context)
    return True


REGISTERED = _register()
