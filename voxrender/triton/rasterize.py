"""Triton backend of the rasterizer's visibility pass: ``face_id`` (B, H, W), exactly the reference's.

Three stages, O(faces + pixels) work per image:

1. **Face setup, in torch** (O(faces)), with the reference's own functions (one source of truth):
   :func:`~voxrender.reference.rasterize.edge_coefficients` gives the float homogeneous edge coefficients
   and det, oriented inwards by sign(det) with their fill-rule owner flags;
   :func:`~voxrender.reference.rasterize.fixed_point_setup` gives the snapped vertices, from which the
   exact int64 oriented edge functions E_k = A_k PX + B_k PY + C_k (PX = (2j + 1) 128, raster.h's
   setup_fixed), their owner flags and the exact pixel bounding box follow. Faces on the float path
   (a vertex with w <= 0 or beyond the guard band) get the whole image as their box. Padding rows,
   zero-area faces and culled faces get an empty box.
2. **Binning, in torch**: the image is cut into tiles of ``TILE_H x TILE_W`` pixels; every live face
   emits one (tile, face) pair per tile its box touches, and a stable sort by tile keeps each tile's faces
   in increasing face index. Nothing has a fixed capacity, so nothing can be dropped. This needs **one
   host synchronisation** (the number of pairs sizes the pair arrays; the same read also reports face
   indices out of range), so the op cannot be captured in a CUDA graph; ``torch.compile`` treats the
   whole op as one opaque custom op (``voxrender::rasterize_face_ids_triton``, with a fake kernel).
3. **One Triton program per tile** (``_raster_tile_kernel``): it walks its faces in index order with a
   per-pixel z-buffer and face id in registers and replaces only on a strictly smaller depth, so ties go
   to the lower face index, as in the reference. Deterministic (no atomics). Background -1.

Exactness: the kernel repeats the reference's arithmetic (``_coverage_chunk``) operation by operation, as
``csrc/include/voxrender/raster.h`` does: pixel centres come from the reference's ``pixel_centres`` (torch),
coverage of fixed-point faces from the exact int64 edge functions, of float-path faces from
E_k = (a_k px + b_k py) + c_k with each product and sum rounded on its own; total = (E_0 + E_1) + E_2;
bary_k = E_k / total; z = (b_0 z_0 + b_1 z_1) + b_2 z_2 (likewise w) and depth = z / w. Two things keep
the GPU compiler from changing the rounding: kernels are launched with ``enable_fp_fusion=False`` (no
FMA contraction of a * px + b * py), and float32 divisions use ``tl.div_rn`` (Triton's float32 ``/`` is
the approximate ``div.full.f32`` on NVIDIA; float64 ``/`` is IEEE). The Triton interpreter (numpy)
rounds every operation as IEEE anyway.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..reference.rasterize import SUBPIXEL_BITS, edge_coefficients, face_vertices, fixed_point_setup, pixel_centres

TILE_H = 8  # tile rows
TILE_W = 16  # tile columns: TILE_H * TILE_W = 128 pixels per program, one per thread with NUM_WARPS = 4
NUM_WARPS = 4
# No FMA contraction: the edge functions and barycentrics must round exactly as the reference's torch ops.
_LAUNCH = dict(num_warps=NUM_WARPS, enable_fp_fusion=False)

# Per-face parameter rows. Float row (the kernel dtype): a0 a1 a2 b0 b1 b2 c0 c1 c2 z0 z1 z2 w0 w1 w2 (pad).
N_FPRM = 16
# Int64 row: A0 A1 A2 B0 B1 B2 C0 C1 C2 flags: the oriented fixed-point edge functions E_k = A_k PX +
# B_k PY + C_k, with the fill rule folded into C_k (+ 1 on an owned edge, so "E > 0 or E == 0 on an owned
# edge" is "A PX + B PY + C > 0"); flags bit k (k < 3) is the float fill-rule owner of edge k, and bit 6
# marks a fixed-point face.
N_IPRM = 10
FLAG_FIXED = 1 << 6


# ---------------------------------------------------------------------------------------------------
# Kernel.


@triton.jit
def _raster_tile_kernel(fprm_ptr, iprm_ptr, px_ptr, py_ptr, tile_start_ptr, pair_face_ptr, out_ptr,
                        H, W, F, n_tiles, n_tiles_x,
                        TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    DT: tl.constexpr = fprm_ptr.dtype.element_ty
    N: tl.constexpr = TILE_H * TILE_W
    HALF: tl.constexpr = 1 << 7  # 2^(SUBPIXEL_BITS - 1)
    pid = tl.program_id(0)
    b = pid // n_tiles
    t = pid - b * n_tiles
    ty = t // n_tiles_x
    tx = t - ty * n_tiles_x
    lane = tl.arange(0, N)
    i = ty * TILE_H + lane // TILE_W
    j = tx * TILE_W + lane % TILE_W
    row_ok = i < H
    col_ok = j < W
    pmask = row_ok & col_ok
    px = tl.load(px_ptr + j, mask=col_ok, other=0.0)  # the reference's pixel centres (computed in torch)
    py = tl.load(py_ptr + i, mask=row_ok, other=0.0)
    PX = (2 * j + 1).to(tl.int64) * HALF  # fixed-point pixel centres
    PY = (2 * i + 1).to(tl.int64) * HALF

    best = tl.full([N], float("inf"), DT)
    fid = tl.full([N], -1, tl.int32)
    face0 = b.to(tl.int64) * F
    start = tl.load(tile_start_ptr + pid)
    end = tl.load(tile_start_ptr + pid + 1)
    for e in range(start, end):  # this tile's faces, in increasing index
        f = tl.load(pair_face_ptr + e)
        g = face0 + f
        fp = fprm_ptr + g * 16  # N_FPRM
        ip = iprm_ptr + g * 10  # N_IPRM
        flags = tl.load(ip + 9)
        a0 = tl.load(fp + 0)
        a1 = tl.load(fp + 1)
        a2 = tl.load(fp + 2)
        b0 = tl.load(fp + 3)
        b1 = tl.load(fp + 4)
        b2 = tl.load(fp + 5)
        c0 = tl.load(fp + 6)
        c1 = tl.load(fp + 7)
        c2 = tl.load(fp + 8)
        # (a px + b py) + c, every product and sum rounded on its own (no FMA: enable_fp_fusion=False).
        ax0 = a0 * px
        by0 = b0 * py
        ev0 = (ax0 + by0) + c0
        ax1 = a1 * px
        by1 = b1 * py
        ev1 = (ax1 + by1) + c1
        ax2 = a2 * px
        by2 = b2 * py
        ev2 = (ax2 + by2) + c2
        if (flags & 64) != 0:  # fixed point: the exact int64 edge functions decide coverage
            # C already holds + 1 on owned edges, so E + owner > 0 is E > 0, or E == 0 on an owned edge.
            e0 = tl.load(ip + 0) * PX + tl.load(ip + 3) * PY + tl.load(ip + 6)
            e1 = tl.load(ip + 1) * PX + tl.load(ip + 4) * PY + tl.load(ip + 7)
            e2 = tl.load(ip + 2) * PX + tl.load(ip + 5) * PY + tl.load(ip + 8)
            inside = (e0 > 0) & (e1 > 0) & (e2 > 0)
        else:  # float homogeneous path (faces crossing w = 0 or beyond the guard band)
            # E > 0, or E == 0 on an owned edge. (tl.where rather than '&' with the scalar flag: the
            # interpreter of Triton 3.9 mistypes a broadcast scalar bool in '&'.)
            inside = tl.where((flags & 1) != 0, ev0 >= 0.0, ev0 > 0.0)
            inside = inside & tl.where((flags & 2) != 0, ev1 >= 0.0, ev1 > 0.0)
            inside = inside & tl.where((flags & 4) != 0, ev2 >= 0.0, ev2 > 0.0)
        total = (ev0 + ev1) + ev2
        tpos = total > 0.0
        tt = tl.where(tpos, total, 1.0)
        # bary_k = E_k / total, z = (b0 z0 + b1 z1) + b2 z2 (likewise w), depth = z / w. IEEE divisions as
        # torch's: tl.div_rn for float32 (Triton's float32 '/' is approximate on NVIDIA GPUs); float64 '/'
        # is already div.rn.f64. Helpers are inlined by hand: every jit-function call costs the interpreter.
        if DT == tl.float32:
            q0 = tl.div_rn(ev0, tt)
            q1 = tl.div_rn(ev1, tt)
            q2 = tl.div_rn(ev2, tt)
        else:
            q0 = ev0 / tt
            q1 = ev1 / tt
            q2 = ev2 / tt
        z = (q0 * tl.load(fp + 9) + q1 * tl.load(fp + 10)) + q2 * tl.load(fp + 11)
        w = (q0 * tl.load(fp + 12) + q1 * tl.load(fp + 13)) + q2 * tl.load(fp + 14)
        wpos = w > 0.0
        if DT == tl.float32:
            d = tl.div_rn(z, tl.where(wpos, w, 1.0))
        else:
            d = z / tl.where(wpos, w, 1.0)
        cov = inside & tpos & wpos & (d >= -1.0) & (d <= 1.0) & pmask
        upd = cov & (d < best)  # strict: the lower face index keeps ties
        best = tl.where(upd, d, best)
        fid = tl.where(upd, f, fid)

    out = out_ptr + b.to(tl.int64) * H * W + i.to(tl.int64) * W + j
    tl.store(out, fid, mask=pmask)


# ---------------------------------------------------------------------------------------------------
# Setup and binning (torch), launcher and op registration.


def _face_setup(verts: Tensor, faces: Tensor, height: int, width: int, cull: bool):
    """Per-face rows for the kernel and the exact pixel box, with the reference's arithmetic.

    Returns (fprm (B*F, 16) float, iprm (B*F, 10) int64, live (B, F) bool, row0, row1, col0, col1 (B, F)
    int64) and ``bad``, a 0-dim bool tensor: some face index is out of range.
    """
    n_verts = verts.shape[1]
    bad = ((faces < -1) | (faces >= n_verts)).any()
    valid = (faces >= 0).all(-1)
    tri = face_vertices(verts, faces.clamp(max=n_verts - 1))  # padding rows read vertex 0, as the reference
    e, det = edge_coefficients(tri)
    s = torch.where(det < 0, -1.0, 1.0).to(tri.dtype)[..., None]  # orient the edges inwards
    a, b, c = s * e[..., 0], s * e[..., 1], s * e[..., 2]  # (B, F, 3) each
    owner = (a > 0) | ((a == 0) & (b > 0))
    fixed, X, Y, area = fixed_point_setup(tri, height, width)
    fixed = fixed & valid

    # Oriented exact edge functions (raster.h setup_fixed): edge k runs from vertex k + 1 to k + 2.
    si = torch.where(area < 0, -1, 1)[..., None]
    a_idx, b_idx = [1, 2, 0], [2, 0, 1]
    xa, ya = X[..., a_idx], Y[..., a_idx]
    dx = X[..., b_idx] - xa
    dy = Y[..., b_idx] - ya
    A, Bc, C = -si * dy, si * dx, si * (dy * xa - dx * ya)
    owner_fixed = (A > 0) | ((A == 0) & (Bc > 0))
    # Fill rule folded into the constant: E >= 0 on an owned edge is E + 1 > 0 (exact integers; |E| < 2^61).
    C = C + owner_fixed.long()
    bits = torch.tensor([1, 2, 4], dtype=torch.int64, device=verts.device)
    flags = (owner.long() * bits).sum(-1) + fixed.long() * FLAG_FIXED

    # Exact pixel box of fixed faces: pixel j is in it when (2j + 1) 2^(bits - 1) lies in [min X, max X].
    half, one = 1 << (SUBPIXEL_BITS - 1), 1 << SUBPIXEL_BITS
    col0 = torch.where(fixed, -((half - X.amin(-1)) // one), 0).clamp(min=0)  # ceil((xlo - half) / one)
    col1 = torch.where(fixed, (X.amax(-1) - half) // one, width - 1).clamp(max=width - 1)
    row0 = torch.where(fixed, -((half - Y.amin(-1)) // one), 0).clamp(min=0)
    row1 = torch.where(fixed, (Y.amax(-1) - half) // one, height - 1).clamp(max=height - 1)
    live = torch.where(fixed, area != 0, valid & (det != 0))
    if cull:
        live = live & torch.where(fixed, area < 0, det < 0)
    live = live & (col0 <= col1) & (row0 <= row1)

    fprm = torch.cat([a, b, c, tri[..., 2], tri[..., 3], torch.zeros_like(a[..., :1])], -1)
    iprm = torch.cat([A, Bc, C, flags[..., None]], -1)
    return (fprm.reshape(-1, N_FPRM).contiguous(), iprm.reshape(-1, N_IPRM).contiguous(), live,
            row0, row1, col0, col1, bad)


def _tile_ranges(live, row0, row1, col0, col1, height: int, width: int):
    """Per face (flattened, face-major): the number of tiles its box touches (0 unless live), the box's
    width in tiles, its first tile row and column; and the tile grid (n_tiles per image, n_tiles_x)."""
    n_tx = triton.cdiv(width, TILE_W)
    n_tiles = triton.cdiv(height, TILE_H) * n_tx
    tr0, tr1 = row0 // TILE_H, row1 // TILE_H
    tc0, tc1 = col0 // TILE_W, col1 // TILE_W
    ncols = (tc1 - tc0 + 1).clamp(min=1)
    count = torch.where(live, (tr1 - tr0 + 1) * ncols, 0).reshape(-1)  # pairs per face, face-major order
    return count, ncols.reshape(-1), tr0.reshape(-1), tc0.reshape(-1), n_tiles, n_tx


def _pairs(count, ncols, tr0, tc0, n_faces: int, n_tiles: int, n_tx: int, n_pairs: int, n_programs: int):
    """(tile_start (B * n_tiles + 1,) int64, pair_face (n_pairs,) int32): the (tile, face) pairs sorted by
    program (batch item, tile), then face index; program p runs pair_face[tile_start[p]:tile_start[p + 1]]."""
    device = count.device
    face = torch.repeat_interleave(torch.arange(count.numel(), device=device), count, output_size=n_pairs)
    first = torch.cumsum(count, 0) - count
    k = torch.arange(n_pairs, device=device) - first[face]  # pair's rank among its face's tiles
    nc = ncols[face]
    tile = (tr0[face] + k // nc) * n_tx + tc0[face] + k % nc
    key = (face // n_faces) * n_tiles + tile  # program id: batch item, then tile
    key, order = torch.sort(key, stable=True)  # stable: each tile keeps its faces in index order
    pair_face = (face[order] % n_faces).to(torch.int32)
    tile_start = torch.searchsorted(key, torch.arange(n_programs + 1, device=device, dtype=key.dtype))
    return tile_start, pair_face


def _check(verts: Tensor, faces: Tensor, height: int, width: int) -> None:
    if verts.dim() != 3 or verts.shape[-1] != 4:
        raise ValueError(f"verts: expected (B, V, 4), got {tuple(verts.shape)}")
    if verts.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"verts: expected float32 or float64, got {verts.dtype}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces: expected int32 or int64, got {faces.dtype}")
    if faces.dim() != 3 or faces.shape[-1] != 3 or faces.shape[0] != verts.shape[0]:
        raise ValueError(f"faces: expected ({verts.shape[0]}, F, 3), got {tuple(faces.shape)}")
    if faces.device != verts.device:
        raise ValueError(f"faces: expected a tensor on {verts.device} (verts' device), got {faces.device}")
    if height < 1 or width < 1:
        raise ValueError(f"image_size: expected positive sizes, got ({height}, {width})")
    if height >= 1 << 30 or width >= 1 << 30 or faces.shape[1] >= 1 << 31:
        raise ValueError(f"image_size/faces: at most 2^30 - 1 pixels per side and 2^31 - 1 faces per item, "
                         f"got ({height}, {width}) and {faces.shape[1]} faces")


@torch.library.custom_op("voxrender::rasterize_face_ids_triton", mutates_args=())
def rasterize_face_ids_triton_op(verts: Tensor, faces: Tensor, height: int, width: int,
                                 cull_backfaces: bool) -> Tensor:
    """face_id (B, H, W) int32 of verts (B, V, 4) clip coordinates, faces (B, F, 3) (rows of -1: padding),
    exactly as :func:`voxrender.reference.rasterize.rasterize_reference`'s. One host synchronisation."""
    _check(verts, faces, height, width)
    n_batch, n_verts = verts.shape[:2]
    n_faces = faces.shape[1]
    # Every tile's program writes all its pixels (-1 where nothing covers them): no fill needed.
    out = torch.empty((n_batch, height, width), dtype=torch.int32, device=verts.device)
    if n_batch == 0 or n_faces == 0:
        return out.fill_(-1)
    if n_verts == 0:  # only padding rows are possible
        if bool(((faces != -1)).any()):
            raise ValueError("faces: indices must lie in [0, V - 1] (or -1 for a padding row), but V = 0")
        return out.fill_(-1)
    verts = verts.detach()
    fprm, iprm, live, row0, row1, col0, col1, bad = _face_setup(verts, faces, height, width, bool(cull_backfaces))
    count, ncols, tr0, tc0, n_tiles, n_tx = _tile_ranges(live, row0, row1, col0, col1, height, width)
    n_pairs, n_bad = torch.stack([count.sum(), bad.long()]).tolist()  # the one host synchronisation
    if n_bad:
        raise ValueError(f"faces: indices must lie in [0, {n_verts - 1}] (or -1 for a padding row)")
    if n_pairs == 0:
        return out.fill_(-1)
    n_programs = n_batch * n_tiles
    if n_programs >= 1 << 31:  # one program per tile: the grid (and program ids) are 32-bit
        raise ValueError(f"verts/image_size: {n_batch} items of {n_tiles} tiles ({TILE_H} x {TILE_W} pixels) "
                         f"exceed the 2^31 - 1 programs of one launch; split the batch")
    tile_start, pair_face = _pairs(count, ncols, tr0, tc0, n_faces, n_tiles, n_tx, n_pairs, n_programs)
    px = pixel_centres(1, width, verts)[0][0].contiguous()  # the reference's pixel centres, (W,) and (H,)
    py = pixel_centres(height, 1, verts)[1][:, 0].contiguous()
    _raster_tile_kernel[(n_programs,)](fprm, iprm, px, py, tile_start, pair_face, out, height, width, n_faces,
                                       n_tiles, n_tx, TILE_H=TILE_H, TILE_W=TILE_W, **_LAUNCH)
    return out


@rasterize_face_ids_triton_op.register_fake
def _rasterize_fake(verts, faces, height, width, cull_backfaces):
    return verts.new_empty(verts.shape[0], height, width, dtype=torch.int32)


def rasterize_face_ids_triton(verts: Tensor, faces: Tensor, height: int, width: int, cull_backfaces: bool) -> Tensor:
    """The ``triton`` backend's visibility pass for :func:`voxrender.rasterize` (CUDA tensors, or CPU
    tensors under ``TRITON_INTERPRET=1``): face_id (B, H, W) int32, -1 for background."""
    return rasterize_face_ids_triton_op(verts, faces, height, width, cull_backfaces)
