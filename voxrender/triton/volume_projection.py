"""Triton backend of ``project_volume``: fused forward and backward kernels, one ray per pixel lane.

The kernels mirror the per-ray math of ``csrc/include/voxrender/volume.h`` (the C++/CUDA backends)
formula for formula, so the three fused backends and the torch reference agree to rounding:

* rays exactly as :mod:`voxrender.camera` builds them (pixel centres, orthographic or perspective,
  ``t_k = t0 + (k + 1/2) dt``, ``q_k = R^T p_k``, ``delta = dt * step_scale * |direction|``);
* trilinear sampling with zero padding and ``grid_sample``'s ``align_corners=False`` unnormalisation
  ``((q + 1) * size - 1) / 2``: floor, lower corner clamped to [-2, size + 1], 8 masked corner loads
  visited in volume.h's order;
* modes absorption / sum / max / emission_absorption (zero background; the public op adds it), with the
  per-pixel ``aux`` of volume.h: the total sampled density (absorption, sum, emission_absorption) or the
  first arg-max sample index as a float (max; strict ``>`` keeps the first).

One program renders ``BLOCK`` pixels of one batch item (one pixel per thread) and loops over the K
samples (front to back). Blocks keep pixels as their last dimension: a sample's 8 density corners are
one [8, BLOCK] gather, and emission_absorption's colour channels a [CC, BLOCK] block per corner, with
CC <= ``CHANNEL_CHUNK`` channels per program (more channels go to further programs, like volume.h's
channel passes; those programs recompute the density). Nothing per sample is stored: the backward
kernels recompute the samples from the inputs, ``out`` and ``aux``. Backward:

* scalar modes: d loss / d sigma_k is the same for every contributing sample (max: only the saved
  arg-max sample), scattered to the 8 corners with ``tl.atomic_add``;
* emission_absorption: volume.h's back-to-front scan with ``T_k = exp(-tau delta max(aux - suffix, 0))``
  and the colour / opacity rendered behind each sample carried along (no division);
* rotation: d loss / dR[a][b] += p[a] * gq[b] with gq = d loss / d q (trilinear derivative times
  size / 2 per axis), summed over the program's pixels and written as per-program partials that torch
  sums afterwards (deterministic). Only compiled in when the rotation needs a gradient.

Kernels compute in the input dtype (float32 or float64); the camera floats and tau reach them through
a small tensor of that dtype, since Triton would pass Python floats as float32. The ops are registered
as ``voxrender::project_volume_forward_triton`` / ``voxrender::project_volume_backward_triton`` with
the C++ ops' schemas, fake kernels and the shared autograd formula, so ``opcheck`` and
``torch.compile`` treat them like the C++ ops. On the CPU they run only under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..ops.volume_projection_autograd import register_projection_autograd

BLOCK = 128  # pixels per program: one per thread with NUM_WARPS warps
NUM_WARPS = 4
CHANNEL_CHUNK = 4  # emission_absorption: most colour channels per program (power of two; volume.h's kChannelChunk)
# FMA contraction on, as nvcc compiles the CUDA backend (passing it explicitly also silences Triton 3.9's
# warning about the default changing in 3.10).
_LAUNCH = dict(num_warps=NUM_WARPS, enable_fp_fusion=True)

_MAX, _EA = 2, 3  # mode ids (voxrender.camera.MODE_ID)


# ---------------------------------------------------------------------------------------------------
# Device helpers (volume.h: rays, sample points, trilinear cells and their corners).


@triton.jit
def _pixel_block(pid, n_blocks, Ho, Wo, BLOCK: tl.constexpr):
    """Batch item, pixels per image, this program's BLOCK pixel indices and their in-image mask."""
    b = (pid // n_blocks).to(tl.int64)
    npix = Ho * Wo
    pix = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    return b, npix, pix, pix < npix


@triton.jit
def _load_rotation(rot_ptr, b):
    """The 9 entries of item b's rotation, row-major."""
    rot = rot_ptr + b * 9
    return (tl.load(rot + 0), tl.load(rot + 1), tl.load(rot + 2), tl.load(rot + 3), tl.load(rot + 4),
            tl.load(rot + 5), tl.load(rot + 6), tl.load(rot + 7), tl.load(rot + 8))


@triton.jit
def _load_camera(prm_ptr):
    # prm = [sx, sy, cam_z, t0, dt, step_scale, tau] in the kernel dtype.
    return (tl.load(prm_ptr + 0), tl.load(prm_ptr + 1), tl.load(prm_ptr + 2), tl.load(prm_ptr + 3),
            tl.load(prm_ptr + 4), tl.load(prm_ptr + 5), tl.load(prm_ptr + 6))


@triton.jit
def _make_ray(pix, Ho, Wo, sx, sy, cam_z, dt, step_scale, PERSPECTIVE: tl.constexpr, DT: tl.constexpr):
    """Origin, direction and step length in voxel units of each pixel's ray (volume.h make_ray)."""
    i = pix // Wo
    j = pix - i * Wo
    if DT == tl.float32:  # IEEE division like the C++ code ('/' is div.full.f32, 2 ulp, on NVIDIA)
        u = -1.0 + tl.div_rn(tl.cast(2 * j + 1, DT), tl.cast(Wo, DT))
        v = -1.0 + tl.div_rn(tl.cast(2 * i + 1, DT), tl.cast(Ho, DT))
    else:
        u = -1.0 + tl.cast(2 * j + 1, DT) / tl.cast(Wo, DT)
        v = -1.0 + tl.cast(2 * i + 1, DT) / tl.cast(Ho, DT)
    if PERSPECTIVE:
        ox = tl.zeros_like(u)
        oy = tl.zeros_like(u)
        oz = tl.zeros_like(u) + cam_z
        dx = sx * u
        dy = sy * v
        dz = tl.zeros_like(u) + 1.0
        norm2 = dx * dx + dy * dy + dz * dz
        if DT == tl.float32:
            norm = tl.sqrt_rn(norm2)  # IEEE sqrt like the C++ code (tl.sqrt is approximate for fp32)
        else:
            norm = tl.sqrt(norm2)
        delta = dt * step_scale * norm
    else:
        ox = sx * u
        oy = sy * v
        oz = tl.zeros_like(u)
        dx = tl.zeros_like(u)
        dy = tl.zeros_like(u)
        dz = tl.zeros_like(u) + 1.0
        delta = tl.zeros_like(u) + dt * step_scale  # * |(0, 0, 1)| = 1
    return ox, oy, oz, dx, dy, dz, delta


@triton.jit
def _sample_point(t, ox, oy, oz, dx, dy, dz, r0, r1, r2, r3, r4, r5, r6, r7, r8):
    """Camera-frame p = o + t d and volume-frame q = R^T p (R row-major)."""
    p0 = ox + t * dx
    p1 = oy + t * dy
    p2 = oz + t * dz
    q0 = r0 * p0 + r3 * p1 + r6 * p2
    q1 = r1 * p0 + r4 * p1 + r7 * p2
    q2 = r2 * p0 + r5 * p1 + r8 * p2
    return p0, p1, p2, q0, q1, q2


@triton.jit
def _lower_corner(q, size, DT: tl.constexpr):
    """grid_sample's unnormalisation, floor, clamped integer lower corner and fractional offset."""
    sf = tl.cast(size, DT)
    iq = ((q + 1.0) * sf - 1.0) * 0.5
    f0 = tl.floor(iq)
    lo = tl.where(f0 < -2.0, -2.0, tl.where(f0 > sf + 1.0, sf + 1.0, f0))  # no int overflow far away
    return lo.to(tl.int32), iq - f0


@triton.jit
def _trilinear_setup(q0, q1, q2, D, H, W, DT: tl.constexpr):
    x0, fx = _lower_corner(q0, W, DT)
    y0, fy = _lower_corner(q1, H, DT)
    z0, fz = _lower_corner(q2, D, DT)
    touch = (x0 >= -1) & (x0 < W) & (y0 >= -1) & (y0 < H) & (z0 >= -1) & (z0 < D)
    return x0, y0, z0, fx, fy, fz, touch


@triton.jit
def _corner(x0, y0, z0, fx, fy, fz, D, H, W, BX: tl.constexpr, BY: tl.constexpr, BZ: tl.constexpr):
    """Offset, in-range mask, weight and d weight / d index of corner (BX, BY, BZ)."""
    x = x0 + BX
    y = y0 + BY
    z = z0 + BZ
    m = (x >= 0) & (x < W) & (y >= 0) & (y < H) & (z >= 0) & (z < D)
    off = (z * H + y) * W + x
    if BX == 1:
        wx = fx
    else:
        wx = 1.0 - fx
    if BY == 1:
        wy = fy
    else:
        wy = 1.0 - fy
    if BZ == 1:
        wz = fz
    else:
        wz = 1.0 - fz
    w = wx * wy * wz
    wdx = wy * wz
    wdy = wx * wz
    wdz = wx * wy
    if BX == 0:
        wdx = -wdx
    if BY == 0:
        wdy = -wdy
    if BZ == 0:
        wdz = -wdz
    return off, m, w, wdx, wdy, wdz


@triton.jit
def _corners8(x0, y0, z0, fx, fy, fz, D, H, W):
    """All 8 corners at once, [8, BLOCK] in volume.h's order (corner c: bits x, y, z = c & 1, c >> 1 & 1,
    c >> 2): offsets, in-range mask, and the per-axis weights. Pixels are the last (thread) dimension, so
    a thread keeps its pixel's 8 corners and the corner sums stay inside the thread."""
    c = tl.arange(0, 8)
    bx = (c & 1)[:, None]
    by = ((c >> 1) & 1)[:, None]
    bz = (c >> 2)[:, None]
    x = x0[None, :] + bx
    y = y0[None, :] + by
    z = z0[None, :] + bz
    m = (x >= 0) & (x < W) & (y >= 0) & (y < H) & (z >= 0) & (z < D)
    off = (z * H + y) * W + x
    fx2 = fx[None, :]
    fy2 = fy[None, :]
    fz2 = fz[None, :]
    wx = tl.where(bx == 1, fx2, 1.0 - fx2)
    wy = tl.where(by == 1, fy2, 1.0 - fy2)
    wz = tl.where(bz == 1, fz2, 1.0 - fz2)
    return off, m, wx, wy, wz, bx, by, bz


@triton.jit
def _sample(vol, x0, y0, z0, fx, fy, fz, D, H, W, GRAD: tl.constexpr):
    """Trilinear value of one volume at each lane and (GRAD) its derivative w.r.t. the index."""
    off, m, wx, wy, wz, bx, by, bz = _corners8(x0, y0, z0, fx, fy, fz, D, H, W)
    val = tl.load(vol + off, mask=m, other=0.0)
    v = tl.sum(wx * wy * wz * val, axis=0)
    if GRAD:
        wyz = wy * wz * val
        wxz = wx * wz * val
        wxy = wx * wy * val
        ax = tl.sum(tl.where(bx == 1, wyz, -wyz), axis=0)
        ay = tl.sum(tl.where(by == 1, wxz, -wxz), axis=0)
        az = tl.sum(tl.where(bz == 1, wxy, -wxy), axis=0)
    else:
        ax = v
        ay = v
        az = v
    return v, ax, ay, az


@triton.jit
def _sample_channels(fbase, cmask, x0, y0, z0, fx, fy, fz, D, H, W, GRAD: tl.constexpr, BLOCK: tl.constexpr,
                     CC: tl.constexpr):
    """_sample for a [CC, BLOCK] block of channels; fbase: [CC, 1] pointers to the channel volumes."""
    v = tl.zeros([CC, BLOCK], fx.dtype)
    ax = tl.zeros([CC, BLOCK], fx.dtype)
    ay = tl.zeros([CC, BLOCK], fx.dtype)
    az = tl.zeros([CC, BLOCK], fx.dtype)
    for bz in tl.static_range(2):
        for by in tl.static_range(2):
            for bx in tl.static_range(2):
                off, m, w, wdx, wdy, wdz = _corner(x0, y0, z0, fx, fy, fz, D, H, W, bx, by, bz)
                val = tl.load(fbase + off[None, :], mask=m[None, :] & cmask, other=0.0)
                v += w[None, :] * val
                if GRAD:
                    ax += wdx[None, :] * val
                    ay += wdy[None, :] * val
                    az += wdz[None, :] * val
    return v, ax, ay, az


@triton.jit
def _scatter(gvol, g, x0, y0, z0, fx, fy, fz, D, H, W):
    """grad_vol[corner] += g * weight for the in-range corners of each lane with g != 0."""
    off, m, wx, wy, wz, bx, by, bz = _corners8(x0, y0, z0, fx, fy, fz, D, H, W)
    tl.atomic_add(gvol + off, g[None, :] * (wx * wy * wz), mask=m & (g != 0.0)[None, :])


@triton.jit
def _sample_scatter_channels(fbase, gfbase, g, cmask, x0, y0, z0, fx, fy, fz, D, H, W, GRAD: tl.constexpr,
                             BLOCK: tl.constexpr, CC: tl.constexpr):
    """_sample_channels fused with the scatter grad_features[corner] += g * weight (g: [CC, BLOCK];
    lanes with g == 0 skip their atomics)."""
    v = tl.zeros([CC, BLOCK], fx.dtype)
    ax = tl.zeros([CC, BLOCK], fx.dtype)
    ay = tl.zeros([CC, BLOCK], fx.dtype)
    az = tl.zeros([CC, BLOCK], fx.dtype)
    nz = (g != 0.0) & cmask
    for bz in tl.static_range(2):
        for by in tl.static_range(2):
            for bx in tl.static_range(2):
                off, m, w, wdx, wdy, wdz = _corner(x0, y0, z0, fx, fy, fz, D, H, W, bx, by, bz)
                val = tl.load(fbase + off[None, :], mask=m[None, :] & cmask, other=0.0)
                v += w[None, :] * val
                if GRAD:
                    ax += wdx[None, :] * val
                    ay += wdy[None, :] * val
                    az += wdz[None, :] * val
                tl.atomic_add(gfbase + off[None, :], g * w[None, :], mask=m[None, :] & nz)
    return v, ax, ay, az


@triton.jit
def _zeros9(BLOCK: tl.constexpr, DT: tl.constexpr):
    """Nine zero accumulators: a row-major 3 x 3 of per-pixel rotation-gradient partials."""
    z = tl.zeros([BLOCK], DT)
    return z, z, z, z, z, z, z, z, z


@triton.jit
def _outer_add(g00, g01, g02, g10, g11, g12, g20, g21, g22, p0, p1, p2, gq0, gq1, gq2):
    """g + p gq^T (row-major 3 x 3): one sample's share of dL/dR, with p the camera-frame point and gq
    dL/dq of its volume-frame point q = R^T p (volume.h accumulates the same outer product)."""
    return (g00 + p0 * gq0, g01 + p0 * gq1, g02 + p0 * gq2, g10 + p1 * gq0, g11 + p1 * gq1, g12 + p1 * gq2,
            g20 + p2 * gq0, g21 + p2 * gq1, g22 + p2 * gq2)


@triton.jit
def _store_rotation_partials(grot, pmask, g00, g01, g02, g10, g11, g12, g20, g21, g22):
    tl.store(grot + 0, tl.sum(tl.where(pmask, g00, 0.0), axis=0))
    tl.store(grot + 1, tl.sum(tl.where(pmask, g01, 0.0), axis=0))
    tl.store(grot + 2, tl.sum(tl.where(pmask, g02, 0.0), axis=0))
    tl.store(grot + 3, tl.sum(tl.where(pmask, g10, 0.0), axis=0))
    tl.store(grot + 4, tl.sum(tl.where(pmask, g11, 0.0), axis=0))
    tl.store(grot + 5, tl.sum(tl.where(pmask, g12, 0.0), axis=0))
    tl.store(grot + 6, tl.sum(tl.where(pmask, g20, 0.0), axis=0))
    tl.store(grot + 7, tl.sum(tl.where(pmask, g21, 0.0), axis=0))
    tl.store(grot + 8, tl.sum(tl.where(pmask, g22, 0.0), axis=0))


# ---------------------------------------------------------------------------------------------------
# Scalar modes (volume.h's scalar forward / backward). Grid: (B * pixel blocks,).


@triton.jit
def _forward_scalar_kernel(vol_ptr, rot_ptr, prm_ptr, out_ptr, aux_ptr, D, H, W, Ho, Wo, K, n_blocks,
                           MODE: tl.constexpr, PERSPECTIVE: tl.constexpr, BLOCK: tl.constexpr):
    DT: tl.constexpr = vol_ptr.dtype.element_ty
    pid = tl.program_id(0)
    b, npix, pix, pmask = _pixel_block(pid, n_blocks, Ho, Wo, BLOCK)
    sx, sy, cam_z, t0, dt, step_scale, tau = _load_camera(prm_ptr)
    ox, oy, oz, dx, dy, dz, delta = _make_ray(pix, Ho, Wo, sx, sy, cam_z, dt, step_scale, PERSPECTIVE, DT)
    r0, r1, r2, r3, r4, r5, r6, r7, r8 = _load_rotation(rot_ptr, b)
    vol = vol_ptr + b * (D * H * W)

    acc = tl.zeros([BLOCK], DT)
    best = tl.zeros([BLOCK], DT)
    best_k = tl.zeros([BLOCK], DT) - 1.0  # -1: no sample yet (volume.h's k == 0 case)
    for k in range(0, K):
        kf = tl.cast(k, DT)
        t = t0 + (kf + 0.5) * dt
        p0, p1, p2, q0, q1, q2 = _sample_point(t, ox, oy, oz, dx, dy, dz, r0, r1, r2, r3, r4, r5, r6, r7, r8)
        x0, y0, z0, fx, fy, fz, touch = _trilinear_setup(q0, q1, q2, D, H, W, DT)
        s, _ax, _ay, _az = _sample(vol, x0, y0, z0, fx, fy, fz, D, H, W, False)
        if MODE == 2:
            upd = (best_k < 0.0) | (s > best)  # strict '>' keeps the first arg-max
            best = tl.where(upd, s, best)
            best_k = tl.where(upd, kf, best_k)
        else:
            acc += s

    if MODE == 2:
        res = best
        aux = best_k
    else:
        opt = tau * delta * acc
        if MODE == 1:
            res = opt
        else:
            res = 1.0 - tl.exp(-opt)
        aux = acc
    tl.store(out_ptr + b * npix + pix, res, mask=pmask)
    tl.store(aux_ptr + b * npix + pix, aux, mask=pmask)


@triton.jit
def _backward_scalar_kernel(go_ptr, out_ptr, aux_ptr, vol_ptr, rot_ptr, prm_ptr, gvol_ptr, grot_ptr,
                            D, H, W, Ho, Wo, n_iter, n_blocks,
                            MODE: tl.constexpr, PERSPECTIVE: tl.constexpr, ROT_GRAD: tl.constexpr,
                            BLOCK: tl.constexpr):
    DT: tl.constexpr = vol_ptr.dtype.element_ty
    pid = tl.program_id(0)
    b, npix, pix, pmask = _pixel_block(pid, n_blocks, Ho, Wo, BLOCK)
    sx, sy, cam_z, t0, dt, step_scale, tau = _load_camera(prm_ptr)
    ox, oy, oz, dx, dy, dz, delta = _make_ray(pix, Ho, Wo, sx, sy, cam_z, dt, step_scale, PERSPECTIVE, DT)
    r0, r1, r2, r3, r4, r5, r6, r7, r8 = _load_rotation(rot_ptr, b)
    vol = vol_ptr + b * (D * H * W)
    gvol = gvol_ptr + b * (D * H * W)
    gx = 0.5 * tl.cast(W, DT)
    gy = 0.5 * tl.cast(H, DT)
    gz = 0.5 * tl.cast(D, DT)

    go = tl.load(go_ptr + b * npix + pix, mask=pmask, other=0.0)
    active = pmask & (go != 0.0)
    aux = tl.load(aux_ptr + b * npix + pix, mask=active, other=0.0)
    if MODE == 2:
        gs = go  # only the saved arg-max sample contributes (n_iter == 1)
    else:
        gs = go * tau * delta
        if MODE == 0:
            out = tl.load(out_ptr + b * npix + pix, mask=active, other=0.0)
            gs *= 1.0 - out  # d(1 - e^-x)/dx = e^-x = 1 - I
    gs = tl.where(active, gs, 0.0)

    g00, g01, g02, g10, g11, g12, g20, g21, g22 = _zeros9(BLOCK, DT)
    for k in range(0, n_iter):
        if MODE == 2:
            kf = aux
        else:
            kf = tl.cast(k, DT)
        t = t0 + (kf + 0.5) * dt
        p0, p1, p2, q0, q1, q2 = _sample_point(t, ox, oy, oz, dx, dy, dz, r0, r1, r2, r3, r4, r5, r6, r7, r8)
        x0, y0, z0, fx, fy, fz, touch = _trilinear_setup(q0, q1, q2, D, H, W, DT)
        _scatter(gvol, gs, x0, y0, z0, fx, fy, fz, D, H, W)
        if ROT_GRAD:
            s, ax, ay, az = _sample(vol, x0, y0, z0, fx, fy, fz, D, H, W, True)
            gq0 = gs * (ax * gx)
            gq1 = gs * (ay * gy)
            gq2 = gs * (az * gz)
            g00, g01, g02, g10, g11, g12, g20, g21, g22 = _outer_add(g00, g01, g02, g10, g11, g12, g20, g21, g22,
                                                                           p0, p1, p2, gq0, gq1, gq2)
    if ROT_GRAD:
        _store_rotation_partials(grot_ptr + pid.to(tl.int64) * 9, active,
                                 g00, g01, g02, g10, g11, g12, g20, g21, g22)


# ---------------------------------------------------------------------------------------------------
# emission_absorption (volume.h's EA forward / backward). Grid: (B * pixel blocks, channel
# chunks); chunk 0 also handles the opacity channel and aux.


@triton.jit
def _forward_ea_kernel(vol_ptr, feat_ptr, rot_ptr, prm_ptr, out_ptr, aux_ptr, D, H, W, Ho, Wo, K, C, n_blocks,
                       PERSPECTIVE: tl.constexpr, BLOCK: tl.constexpr, CC: tl.constexpr):
    DT: tl.constexpr = vol_ptr.dtype.element_ty
    pid = tl.program_id(0)
    chunk = tl.program_id(1)
    b, npix, pix, pmask = _pixel_block(pid, n_blocks, Ho, Wo, BLOCK)
    cidx = chunk * CC + tl.arange(0, CC)
    cmask = (cidx < C)[:, None]
    sx, sy, cam_z, t0, dt, step_scale, tau = _load_camera(prm_ptr)
    ox, oy, oz, dx, dy, dz, delta = _make_ray(pix, Ho, Wo, sx, sy, cam_z, dt, step_scale, PERSPECTIVE, DT)
    r0, r1, r2, r3, r4, r5, r6, r7, r8 = _load_rotation(rot_ptr, b)
    numel = D * H * W
    vol = vol_ptr + b * numel
    fbase = feat_ptr + b * C * numel + (cidx.to(tl.int64) * numel)[:, None]
    scale = tau * delta

    colour = tl.zeros([CC, BLOCK], DT)
    acc = tl.zeros([BLOCK], DT)  # sum of sigma in front of the current sample
    for k in range(0, K):
        kf = tl.cast(k, DT)
        t = t0 + (kf + 0.5) * dt
        p0, p1, p2, q0, q1, q2 = _sample_point(t, ox, oy, oz, dx, dy, dz, r0, r1, r2, r3, r4, r5, r6, r7, r8)
        x0, y0, z0, fx, fy, fz, touch = _trilinear_setup(q0, q1, q2, D, H, W, DT)
        s, _ax, _ay, _az = _sample(vol, x0, y0, z0, fx, fy, fz, D, H, W, False)
        w = (1.0 - tl.exp(-scale * s)) * tl.exp(-scale * acc)  # alpha_k * T_k
        w = tl.where(touch, w, 0.0)  # volume.h skips samples whose cell misses the grid
        acc += tl.where(touch, s, 0.0)
        col, _cx, _cy, _cz = _sample_channels(fbase, cmask, x0, y0, z0, fx, fy, fz, D, H, W, False, BLOCK, CC)
        colour += w[None, :] * col

    oc = C + 1
    obase = out_ptr + b * oc * npix
    tl.store(obase + cidx.to(tl.int64)[:, None] * npix + pix[None, :], colour, mask=pmask[None, :] & cmask)
    first = pmask & ((pix * 0 + chunk) == 0)  # opacity and aux: chunk 0 only
    tl.store(obase + tl.cast(C, tl.int64) * npix + pix, 1.0 - tl.exp(-scale * acc), mask=first)
    tl.store(aux_ptr + b * npix + pix, acc, mask=first)


@triton.jit
def _backward_ea_kernel(go_ptr, aux_ptr, vol_ptr, feat_ptr, rot_ptr, prm_ptr, gvol_ptr, gfeat_ptr, grot_ptr,
                        D, H, W, Ho, Wo, K, C, n_blocks,
                        PERSPECTIVE: tl.constexpr, ROT_GRAD: tl.constexpr, BLOCK: tl.constexpr,
                        CC: tl.constexpr):
    DT: tl.constexpr = vol_ptr.dtype.element_ty
    pid = tl.program_id(0)
    chunk = tl.program_id(1)
    b, npix, pix, pmask = _pixel_block(pid, n_blocks, Ho, Wo, BLOCK)
    cidx = chunk * CC + tl.arange(0, CC)
    cmask = (cidx < C)[:, None]
    sx, sy, cam_z, t0, dt, step_scale, tau = _load_camera(prm_ptr)
    ox, oy, oz, dx, dy, dz, delta = _make_ray(pix, Ho, Wo, sx, sy, cam_z, dt, step_scale, PERSPECTIVE, DT)
    r0, r1, r2, r3, r4, r5, r6, r7, r8 = _load_rotation(rot_ptr, b)
    numel = D * H * W
    vol = vol_ptr + b * numel
    gvol = gvol_ptr + b * numel
    coff = b * C * numel + (cidx.to(tl.int64) * numel)[:, None]
    fbase = feat_ptr + coff
    gfbase = gfeat_ptr + coff
    scale = tau * delta
    gx = 0.5 * tl.cast(W, DT)
    gy = 0.5 * tl.cast(H, DT)
    gz = 0.5 * tl.cast(D, DT)

    oc = C + 1
    gobase = go_ptr + b * oc * npix
    gc = tl.load(gobase + cidx.to(tl.int64)[:, None] * npix + pix[None, :], mask=pmask[None, :] & cmask, other=0.0)
    ga = tl.load(gobase + tl.cast(C, tl.int64) * npix + pix, mask=pmask & ((pix * 0 + chunk) == 0), other=0.0)
    any_c = tl.max(tl.where(gc != 0.0, 1, 0), axis=0) > 0
    active = pmask & (any_c | (ga != 0.0))
    aux = tl.load(aux_ptr + b * npix + pix, mask=active, other=0.0)

    g00, g01, g02, g10, g11, g12, g20, g21, g22 = _zeros9(BLOCK, DT)
    behind = tl.zeros([CC, BLOCK], DT)  # colour rendered from the samples behind k
    alpha_behind = tl.zeros([BLOCK], DT)  # opacity of the samples behind k
    suffix = tl.zeros([BLOCK], DT)  # sum_{j >= k} sigma_j
    for kk in range(0, K):
        kf = tl.cast(K - 1 - kk, DT)
        t = t0 + (kf + 0.5) * dt
        p0, p1, p2, q0, q1, q2 = _sample_point(t, ox, oy, oz, dx, dy, dz, r0, r1, r2, r3, r4, r5, r6, r7, r8)
        x0, y0, z0, fx, fy, fz, touch = _trilinear_setup(q0, q1, q2, D, H, W, DT)
        use = active & touch  # volume.h skips samples whose cell misses the grid
        s, sdx, sdy, sdz = _sample(vol, x0, y0, z0, fx, fy, fz, D, H, W, ROT_GRAD)
        s = tl.where(touch, s, 0.0)
        suffix += s
        rest = aux - suffix
        before = tl.where(rest > 0.0, rest, 0.0)
        trans = tl.exp(-scale * before)  # T_k
        keep = tl.exp(-scale * s)  # 1 - alpha_k
        alpha = 1.0 - keep
        w = alpha * trans
        d_alpha = ga * trans * (1.0 - alpha_behind)
        g_col = tl.where(use[None, :], gc * w[None, :], 0.0)  # d loss / d c_k
        col, cdx, cdy, cdz = _sample_scatter_channels(fbase, gfbase, g_col, cmask, x0, y0, z0, fx, fy, fz, D, H, W,
                                                      ROT_GRAD, BLOCK, CC)
        d_alpha += tl.sum(gc * trans[None, :] * (col - behind), axis=0)
        behind = alpha[None, :] * col + keep[None, :] * behind
        alpha_behind = alpha + keep * alpha_behind
        d_sigma = tl.where(use, d_alpha * scale * keep, 0.0)
        _scatter(gvol, d_sigma, x0, y0, z0, fx, fy, fz, D, H, W)
        if ROT_GRAD:
            gq0 = tl.sum(g_col * (cdx * gx), axis=0) + d_sigma * (sdx * gx)
            gq1 = tl.sum(g_col * (cdy * gy), axis=0) + d_sigma * (sdy * gy)
            gq2 = tl.sum(g_col * (cdz * gz), axis=0) + d_sigma * (sdz * gz)
            g00, g01, g02, g10, g11, g12, g20, g21, g22 = _outer_add(g00, g01, g02, g10, g11, g12, g20, g21, g22,
                                                                           p0, p1, p2, gq0, gq1, gq2)
    if ROT_GRAD:
        slot = chunk.to(tl.int64) * tl.num_programs(0) + pid
        _store_rotation_partials(grot_ptr + slot * 9, active, g00, g01, g02, g10, g11, g12, g20, g21, g22)


# ---------------------------------------------------------------------------------------------------
# Launchers and op registration.


def _check(density, features, rotation, height, width, n_samples, mode, projection, camera) -> None:
    if density.dim() != 4:
        raise ValueError(f"density: expected (B, D, H, W), got {tuple(density.shape)}")
    if density.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"density: expected float32 or float64, got {density.dtype}")
    b = density.shape[0]
    if rotation.shape != (b, 3, 3):
        raise ValueError(f"rotation: expected ({b}, 3, 3), got {tuple(rotation.shape)}")
    if rotation.dtype != density.dtype or rotation.device != density.device:
        raise TypeError(f"rotation: expected {density.dtype} on {density.device}, "
                        f"got {rotation.dtype} on {rotation.device}")
    if height < 1 or width < 1:
        raise ValueError(f"image_size: expected positive sizes, got ({height}, {width})")
    if not 1 <= n_samples <= 1 << 24:
        raise ValueError(f"n_samples: expected 1..2^24, got {n_samples}")
    if mode not in (0, 1, 2, 3):
        raise ValueError(f"mode: expected 0..3, got {mode}")
    if projection not in (0, 1):
        raise ValueError(f"projection: expected 0 or 1, got {projection}")
    if len(camera) != 6:
        raise ValueError(f"camera: expected 6 floats, got {len(camera)}")
    if (features is not None) != (mode == _EA):
        raise ValueError("features: required by mode emission_absorption" if mode == _EA
                         else "features: only valid with mode emission_absorption")
    per_item = density[0].numel() if b else 0
    if features is not None:
        if features.dim() != 5 or features.shape[0] != b or features.shape[2:] != density.shape[1:]:
            raise ValueError(f"features: expected ({b}, C, {', '.join(map(str, density.shape[1:]))}), "
                             f"got {tuple(features.shape)}")
        if features.dtype != density.dtype or features.device != density.device:
            raise TypeError(f"features: expected {density.dtype} on {density.device}, "
                            f"got {features.dtype} on {features.device}")
        per_item = features[0].numel() if b else 0
    if per_item >= 1 << 31 or height * width >= 1 << 31:
        raise ValueError("density/features: one batch item (and one image) must have < 2^31 elements")


def _params(camera, tau, like: Tensor) -> Tensor:
    return torch.tensor(list(camera) + [tau], dtype=like.dtype, device=like.device)


def _channel_chunk(c: int) -> int:
    return min(triton.next_power_of_2(max(c, 1)), CHANNEL_CHUNK)


@torch.library.custom_op("voxrender::project_volume_forward_triton", mutates_args=())
def project_volume_forward_triton(density: Tensor, features: Optional[Tensor], rotation: Tensor, height: int,
                                  width: int, n_samples: int, mode: int, tau: float, projection: int,
                                  camera: list[float]) -> tuple[Tensor, Tensor]:
    """Triton counterpart of ``voxrender::project_volume_forward``: returns (out, aux)."""
    _check(density, features, rotation, height, width, n_samples, mode, projection, camera)
    density = density.contiguous()
    rotation = rotation.contiguous()
    b = density.shape[0]
    d, h, w = density.shape[1:]
    c = features.shape[1] if features is not None else 0
    out = density.new_empty(b, c + 1 if mode == _EA else 1, height, width)
    aux = density.new_empty(b, height, width)
    if b == 0:
        return out, aux
    prm = _params(camera, tau, density)
    n_blocks = triton.cdiv(height * width, BLOCK)
    persp = projection == 1
    if mode == _EA:
        features = features.contiguous()
        cc = _channel_chunk(c)
        grid = (b * n_blocks, triton.cdiv(c, cc))
        _forward_ea_kernel[grid](density, features, rotation, prm, out, aux, d, h, w, height, width, n_samples, c,
                                 n_blocks, PERSPECTIVE=persp, BLOCK=BLOCK, CC=cc, **_LAUNCH)
    else:
        _forward_scalar_kernel[(b * n_blocks,)](density, rotation, prm, out, aux, d, h, w, height, width, n_samples,
                                                n_blocks, MODE=mode, PERSPECTIVE=persp, BLOCK=BLOCK,
                                                **_LAUNCH)
    return out, aux


def _alert_not_deterministic() -> None:
    """The density / feature gradients are summed with atomics: their float rounding depends on the
    order the GPU runs the programs in. Honour torch.use_deterministic_algorithms like torch's own ops."""
    if torch.are_deterministic_algorithms_enabled():
        msg = ("voxrender::project_volume_backward_triton does not have a deterministic implementation "
               "(atomic adds); use backend='cpu' or 'torch', or torch.use_deterministic_algorithms(False)")
        if torch.is_deterministic_algorithms_warn_only_enabled():
            import warnings

            warnings.warn(msg)
        else:
            raise RuntimeError(msg)


@torch.library.custom_op("voxrender::project_volume_backward_triton", mutates_args=())
def project_volume_backward_triton(grad_out: Tensor, out: Tensor, aux: Tensor, density: Tensor,
                                   features: Optional[Tensor], rotation: Tensor, height: int, width: int,
                                   n_samples: int, mode: int, tau: float, projection: int, camera: list[float],
                                   rotation_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Triton counterpart of ``voxrender::project_volume_backward``.

    Returns (grad_density, grad_features or an empty tensor, grad_rotation (B, 3, 3); zeros unless
    ``rotation_grad``).
    """
    _check(density, features, rotation, height, width, n_samples, mode, projection, camera)
    _alert_not_deterministic()
    if grad_out.shape != out.shape:
        raise ValueError(f"grad_out: expected {tuple(out.shape)}, got {tuple(grad_out.shape)}")
    density = density.contiguous()
    rotation = rotation.contiguous()
    grad_out = grad_out.to(density.dtype).contiguous()
    out = out.contiguous()
    aux = aux.contiguous()
    b = density.shape[0]
    d, h, w = density.shape[1:]
    grad_density = torch.zeros_like(density)
    grad_features = torch.zeros_like(features) if features is not None else density.new_empty(0)
    grad_rotation = density.new_zeros(b, 3, 3)
    if b == 0:
        return grad_density, grad_features, grad_rotation
    prm = _params(camera, tau, density)
    n_blocks = triton.cdiv(height * width, BLOCK)
    persp = projection == 1
    rot_grad = bool(rotation_grad)
    if mode == _EA:
        features = features.contiguous()
        c = features.shape[1]
        cc = _channel_chunk(c)
        n_chunks = triton.cdiv(c, cc)
        partials = density.new_zeros(n_chunks, b, n_blocks, 9) if rot_grad else density.new_zeros(1)
        _backward_ea_kernel[(b * n_blocks, n_chunks)](
            grad_out, aux, density, features, rotation, prm, grad_density, grad_features, partials,
            d, h, w, height, width, n_samples, c, n_blocks,
            PERSPECTIVE=persp, ROT_GRAD=rot_grad, BLOCK=BLOCK, CC=cc, **_LAUNCH)
        if rot_grad:
            grad_rotation = partials.sum((0, 2)).reshape(b, 3, 3)
    else:
        partials = density.new_zeros(b, n_blocks, 9) if rot_grad else density.new_zeros(1)
        _backward_scalar_kernel[(b * n_blocks,)](
            grad_out, out, aux, density, rotation, prm, grad_density, partials,
            d, h, w, height, width, 1 if mode == _MAX else n_samples, n_blocks,
            MODE=mode, PERSPECTIVE=persp, ROT_GRAD=rot_grad, BLOCK=BLOCK, **_LAUNCH)
        if rot_grad:
            grad_rotation = partials.sum(1).reshape(b, 3, 3)
    return grad_density, grad_features, grad_rotation


@project_volume_forward_triton.register_fake
def _forward_fake(density, features, rotation, height, width, n_samples, mode, tau, projection, camera):
    channels = features.shape[1] + 1 if features is not None else 1
    b = density.shape[0]
    return density.new_empty(b, channels, height, width), density.new_empty(b, height, width)


@project_volume_backward_triton.register_fake
def _backward_fake(grad_out, out, aux, density, features, rotation, height, width, n_samples, mode, tau,
                   projection, camera, rotation_grad):
    gf = torch.empty_like(features) if features is not None else density.new_empty(0)
    return torch.empty_like(density), gf, density.new_empty(density.shape[0], 3, 3)


register_projection_autograd("voxrender::project_volume_forward_triton", project_volume_backward_triton)


def project_volume_triton(density, features, rotation, height, width, n_samples, mode, tau, camera):
    """The ``triton`` backend of :func:`voxrender.project_volume` (CUDA tensors, or CPU tensors under
    ``TRITON_INTERPRET=1``): returns ``out`` (B, 1 or C + 1, Ho, Wo) with a zero background."""
    out, _ = project_volume_forward_triton(density, features, rotation, height, width, n_samples, mode, tau,
                                           camera.projection, camera.floats())
    return out
