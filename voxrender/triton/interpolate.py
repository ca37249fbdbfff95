"""Triton backend of ``voxrender.interpolate``: per-pixel attributes from the visible faces.

out[b, i, j, :] = (bary_0 attr[v_0] + bary_1 attr[v_1]) + bary_2 attr[v_2] with (v_0, v_1, v_2) =
faces[b, face_id[b, i, j]], and 0 in the background (face_id < 0), as
:func:`voxrender.reference.rasterize.interpolate_reference`.

* Forward (``_interp_forward_kernel``): one program per ``BLOCK`` pixels of one batch item; it gathers
  the face's three vertex indices once and loops over the channels in chunks of ``CC`` (a [BLOCK, CC]
  block, channels innermost as in the (B, H, W, C) output). ``attr`` and ``faces`` are read through
  their strides, so a shared attribute table expanded over the batch (batch stride 0) and expanded faces
  are never copied.
* Backward (``_interp_backward_kernel``): grad_bary[p, k] = sum_c grad_out[p, c] attr[v_k, c] per pixel
  (plain stores), and grad_attr[b, v_k, :] += bary_k grad_out[p, :] with ``tl.atomic_add``, whose float
  rounding depends on the order the GPU runs the programs in: under
  ``torch.use_deterministic_algorithms(True)`` the backward refuses (RuntimeError) when it would need
  grad_attr, like the projection's Triton backward. grad_attr is (B, V, C) per item even for an expanded
  attr: autograd's expand backward then sums it over the batch.

Face ids outside [0, F) read as background (the kernels never read out of bounds); a padding face row
(-1) reads vertex 0, as the reference's gather. The ops are ``voxrender::interpolate_forward_triton``
and ``voxrender::interpolate_backward_triton`` (custom ops with fake kernels; autograd registered on the
forward), so ``opcheck`` and ``torch.compile`` see them. On the CPU they run only under
``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 128  # pixels per program
NUM_WARPS = 4
MAX_CC = 16  # most channels per chunk (power of two)
# No FMA contraction: the forward then rounds exactly as the reference's (b0 a0 + b1 a1) + b2 a2.
_LAUNCH = dict(num_warps=NUM_WARPS, enable_fp_fusion=False)


@triton.jit
def _interp_forward_kernel(attr_ptr, fid_ptr, bary_ptr, faces_ptr, out_ptr,
                           npix, C, F, n_blocks, s_ab, s_av, s_ac, s_fb, s_ff, s_fk,
                           BLOCK: tl.constexpr, CC: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // n_blocks).to(tl.int64)
    pix = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    pmask = pix < npix
    p = b * npix + pix  # int64 pixel index into (B, H, W)
    fid = tl.load(fid_ptr + p, mask=pmask, other=-1)
    hit = pmask & (fid >= 0) & (fid < F)
    fb = faces_ptr + b * s_fb + tl.where(hit, fid, 0).to(tl.int64) * s_ff
    v0 = tl.maximum(tl.load(fb, mask=hit, other=0).to(tl.int64), 0)
    v1 = tl.maximum(tl.load(fb + s_fk, mask=hit, other=0).to(tl.int64), 0)
    v2 = tl.maximum(tl.load(fb + 2 * s_fk, mask=hit, other=0).to(tl.int64), 0)
    q0 = tl.load(bary_ptr + 3 * p, mask=hit, other=0.0)[:, None]
    q1 = tl.load(bary_ptr + 3 * p + 1, mask=hit, other=0.0)[:, None]
    q2 = tl.load(bary_ptr + 3 * p + 2, mask=hit, other=0.0)[:, None]
    abase = attr_ptr + b * s_ab
    r0 = (v0 * s_av)[:, None]
    r1 = (v1 * s_av)[:, None]
    r2 = (v2 * s_av)[:, None]
    for c0 in range(0, C, CC):
        c = c0 + tl.arange(0, CC)
        cm = (c < C)[None, :]
        m = hit[:, None] & cm
        cof = (c.to(tl.int64) * s_ac)[None, :]
        a0 = tl.load(abase + r0 + cof, mask=m, other=0.0)
        a1 = tl.load(abase + r1 + cof, mask=m, other=0.0)
        a2 = tl.load(abase + r2 + cof, mask=m, other=0.0)
        o = (q0 * a0 + q1 * a1) + q2 * a2
        o = tl.where(m, o, 0.0)
        tl.store(out_ptr + p[:, None] * C + c[None, :], o, mask=pmask[:, None] & cm)


@triton.jit
def _interp_backward_kernel(go_ptr, attr_ptr, fid_ptr, bary_ptr, faces_ptr, gattr_ptr, gbary_ptr,
                            npix, C, F, V, n_blocks, s_ab, s_av, s_ac, s_fb, s_ff, s_fk,
                            ATTR_GRAD: tl.constexpr, BARY_GRAD: tl.constexpr,
                            BLOCK: tl.constexpr, CC: tl.constexpr):
    DT: tl.constexpr = go_ptr.dtype.element_ty
    pid = tl.program_id(0)
    b = (pid // n_blocks).to(tl.int64)
    pix = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    pmask = pix < npix
    p = b * npix + pix
    fid = tl.load(fid_ptr + p, mask=pmask, other=-1)
    hit = pmask & (fid >= 0) & (fid < F)
    fb = faces_ptr + b * s_fb + tl.where(hit, fid, 0).to(tl.int64) * s_ff
    v0 = tl.maximum(tl.load(fb, mask=hit, other=0).to(tl.int64), 0)
    v1 = tl.maximum(tl.load(fb + s_fk, mask=hit, other=0).to(tl.int64), 0)
    v2 = tl.maximum(tl.load(fb + 2 * s_fk, mask=hit, other=0).to(tl.int64), 0)
    q0 = tl.load(bary_ptr + 3 * p, mask=hit, other=0.0)[:, None]
    q1 = tl.load(bary_ptr + 3 * p + 1, mask=hit, other=0.0)[:, None]
    q2 = tl.load(bary_ptr + 3 * p + 2, mask=hit, other=0.0)[:, None]
    abase = attr_ptr + b * s_ab
    r0 = (v0 * s_av)[:, None]
    r1 = (v1 * s_av)[:, None]
    r2 = (v2 * s_av)[:, None]
    gbase = gattr_ptr + b * V * C  # grad_attr is a contiguous (B, V, C)
    g0 = (v0 * C)[:, None]
    g1 = (v1 * C)[:, None]
    g2 = (v2 * C)[:, None]
    gb0 = tl.zeros([BLOCK], DT)
    gb1 = tl.zeros([BLOCK], DT)
    gb2 = tl.zeros([BLOCK], DT)
    for c0 in range(0, C, CC):
        c = c0 + tl.arange(0, CC)
        cm = (c < C)[None, :]
        m = hit[:, None] & cm
        go = tl.load(go_ptr + p[:, None] * C + c[None, :], mask=m, other=0.0)
        if BARY_GRAD:
            cof = (c.to(tl.int64) * s_ac)[None, :]
            gb0 += tl.sum(go * tl.load(abase + r0 + cof, mask=m, other=0.0), axis=1)
            gb1 += tl.sum(go * tl.load(abase + r1 + cof, mask=m, other=0.0), axis=1)
            gb2 += tl.sum(go * tl.load(abase + r2 + cof, mask=m, other=0.0), axis=1)
        if ATTR_GRAD:
            am = m & (go != 0.0)  # zero upstream gradients (and the background) add nothing
            cc = c.to(tl.int64)[None, :]
            tl.atomic_add(gbase + g0 + cc, q0 * go, mask=am)
            tl.atomic_add(gbase + g1 + cc, q1 * go, mask=am)
            tl.atomic_add(gbase + g2 + cc, q2 * go, mask=am)
    if BARY_GRAD:
        tl.store(gbary_ptr + 3 * p, gb0, mask=pmask)
        tl.store(gbary_ptr + 3 * p + 1, gb1, mask=pmask)
        tl.store(gbary_ptr + 3 * p + 2, gb2, mask=pmask)


# ---------------------------------------------------------------------------------------------------
# Launchers and op registration.


def _check(attr: Tensor, face_id: Tensor, bary: Tensor, faces: Tensor) -> None:
    if attr.dim() != 3:
        raise ValueError(f"attr: expected (B, V, C), got {tuple(attr.shape)}")
    if attr.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"attr: expected float32 or float64, got {attr.dtype}")
    n_batch = attr.shape[0]
    if face_id.dim() != 3 or face_id.shape[0] != n_batch:
        raise ValueError(f"face_id: expected ({n_batch}, H, W), got {tuple(face_id.shape)}")
    if face_id.dtype != torch.int32:
        raise TypeError(f"face_id: expected int32, got {face_id.dtype}")
    if bary.shape != (*face_id.shape, 3):
        raise ValueError(f"bary: expected {(*face_id.shape, 3)}, got {tuple(bary.shape)}")
    if bary.dtype != attr.dtype:
        raise TypeError(f"bary: expected {attr.dtype} (attr's dtype), got {bary.dtype}")
    if faces.dim() != 3 or faces.shape[0] != n_batch or faces.shape[-1] != 3:
        raise ValueError(f"faces: expected ({n_batch}, F, 3), got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces: expected int32 or int64, got {faces.dtype}")
    for name, t in (("face_id", face_id), ("bary", bary), ("faces", faces)):
        if t.device != attr.device:
            raise ValueError(f"{name}: expected a tensor on {attr.device} (attr's device), got {t.device}")
    npix = face_id.shape[1] * face_id.shape[2]
    if npix >= 1 << 31 or n_batch * triton.cdiv(npix, BLOCK) >= 1 << 31:
        raise ValueError(f"face_id: images of {npix} pixels in a batch of {n_batch} exceed one launch "
                         "(2^31 - 1 pixels per image and programs per launch); split the batch")


def _channel_chunk(c: int) -> int:
    return min(triton.next_power_of_2(max(c, 1)), MAX_CC)


def _launch_args(attr: Tensor, face_id: Tensor, faces: Tensor):
    n_batch, height, width = face_id.shape
    npix = height * width
    n_blocks = triton.cdiv(npix, BLOCK)
    return npix, n_blocks, (n_batch * n_blocks,), (*attr.stride(), *faces.stride())


@torch.library.custom_op("voxrender::interpolate_forward_triton", mutates_args=())
def interpolate_forward_triton(attr: Tensor, face_id: Tensor, bary: Tensor, faces: Tensor) -> Tensor:
    """(B, H, W, C) attributes interpolated with ``bary`` over the vertices of face ``face_id``; 0 where
    face_id < 0. attr (B, V, C) in any strides (batch stride 0 for a shared table)."""
    _check(attr, face_id, bary, faces)
    n_batch, height, width = face_id.shape
    n_verts, n_chan = attr.shape[1:]
    out = attr.new_empty(n_batch, height, width, n_chan)
    if out.numel() == 0 or faces.shape[1] == 0 or n_verts == 0:
        return out.zero_()
    face_id = face_id.contiguous()
    bary = bary.contiguous()
    npix, n_blocks, grid, strides = _launch_args(attr, face_id, faces)
    _interp_forward_kernel[grid](attr, face_id, bary, faces, out, npix, n_chan, faces.shape[1], n_blocks,
                                 *strides, BLOCK=BLOCK, CC=_channel_chunk(n_chan), **_LAUNCH)
    return out


@interpolate_forward_triton.register_fake
def _forward_fake(attr, face_id, bary, faces):
    return attr.new_empty(*face_id.shape, attr.shape[-1])


def _alert_not_deterministic() -> None:
    """grad_attr is summed with atomics, whose float rounding depends on the order the GPU runs the
    programs in. Honour torch.use_deterministic_algorithms like torch's own ops."""
    if torch.are_deterministic_algorithms_enabled():
        msg = ("voxrender::interpolate_backward_triton does not have a deterministic implementation of the "
               "attribute gradient (atomic adds); use backend='cpu' or 'torch', or "
               "torch.use_deterministic_algorithms(False)")
        if torch.is_deterministic_algorithms_warn_only_enabled():
            import warnings

            warnings.warn(msg)
        else:
            raise RuntimeError(msg)


@torch.library.custom_op("voxrender::interpolate_backward_triton", mutates_args=())
def interpolate_backward_triton(grad_out: Tensor, attr: Tensor, face_id: Tensor, bary: Tensor, faces: Tensor,
                                attr_grad: bool, bary_grad: bool) -> tuple[Tensor, Tensor]:
    """(grad_attr (B, V, C), grad_bary (B, H, W, 3)) of interpolate_forward_triton; each is zeros unless
    its flag is set. grad_attr uses atomics (refused under torch.use_deterministic_algorithms)."""
    _check(attr, face_id, bary, faces)
    if grad_out.shape != (*face_id.shape, attr.shape[-1]):
        raise ValueError(f"grad_out: expected {(*face_id.shape, attr.shape[-1])}, got {tuple(grad_out.shape)}")
    if attr_grad:
        _alert_not_deterministic()
    grad_attr = torch.zeros(attr.shape, dtype=attr.dtype, device=attr.device)
    grad_bary = torch.empty_like(bary, memory_format=torch.contiguous_format)
    n_verts, n_chan = attr.shape[1:]
    if grad_out.numel() == 0 or faces.shape[1] == 0 or n_verts == 0 or not bary_grad:
        grad_bary.zero_()  # else the kernel writes every pixel
    if grad_out.numel() == 0 or faces.shape[1] == 0 or n_verts == 0 or not (attr_grad or bary_grad):
        return grad_attr, grad_bary
    grad_out = grad_out.to(attr.dtype).contiguous()
    face_id = face_id.contiguous()
    bary = bary.contiguous()
    npix, n_blocks, grid, strides = _launch_args(attr, face_id, faces)
    _interp_backward_kernel[grid](grad_out, attr, face_id, bary, faces, grad_attr, grad_bary,
                                  npix, n_chan, faces.shape[1], n_verts, n_blocks, *strides,
                                  ATTR_GRAD=bool(attr_grad), BARY_GRAD=bool(bary_grad), BLOCK=BLOCK,
                                  CC=_channel_chunk(n_chan), **_LAUNCH)
    return grad_attr, grad_bary


@interpolate_backward_triton.register_fake
def _backward_fake(grad_out, attr, face_id, bary, faces, attr_grad, bary_grad):
    return attr.new_empty(attr.shape), torch.empty_like(bary, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    attr, face_id, bary, faces = inputs
    ctx.save_for_backward(attr, face_id, bary, faces)


def _backward(ctx, grad_out):
    attr, face_id, bary, faces = ctx.saved_tensors
    need_attr, _, need_bary, _ = ctx.needs_input_grad
    if not (need_attr or need_bary):
        return None, None, None, None
    grad_attr, grad_bary = interpolate_backward_triton(grad_out, attr, face_id, bary, faces, bool(need_attr),
                                                       bool(need_bary))
    return (grad_attr if need_attr else None), None, (grad_bary if need_bary else None), None


interpolate_forward_triton.register_autograd(_backward, setup_context=_setup_context)


def interpolate_triton(attr: Tensor, face_id: Tensor, bary: Tensor, faces: Tensor) -> Tensor:
    """The ``triton`` backend of :func:`voxrender.interpolate` (CUDA tensors, or CPU tensors under
    ``TRITON_INTERPRET=1``): attr (B, V, C), face_id (B, H, W) int32, bary (B, H, W, 3) of attr's dtype,
    faces (B, F, 3) -> (B, H, W, C), differentiable with respect to attr and bary."""
    return interpolate_forward_triton(attr, face_id, bary, faces)
