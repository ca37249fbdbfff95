"""Reference triangle rasterizer: brute force over faces and pixels, the oracle of the fast backends.

Conventions (``../shared/specs/rasterization.md``):

* input positions are clip coordinates (x, y, z, w); NDC = (x, y, z) / w; pixel (i, j) is centred at NDC
  (-1 + (2j + 1) / W, -1 + (2i + 1) / H) with y down;
* **coverage of faces in front of the camera (all three w > 0): snapped fixed point**, as GPU hardware does.
  The projected vertices are snapped to 1/256 of a pixel, in screen units X = rint((x/w + 1) W 128),
  Y = rint((y/w + 1) H 128) (computed in float64, round half to even; pixel centre (i, j) is at
  ((2j + 1) 128, (2i + 1) 128)), and the edge functions are evaluated exactly in int64:
  E_k(P) = (X_b - X_a)(P_y - Y_a) - (Y_b - Y_a)(P_x - X_a) for the edge a = k + 1, b = k + 2 (mod 3)
  opposite vertex k. Exact integers make the fill rule hold everywhere, along shared edges and at shared
  vertices alike: a pixel centre exactly on a vertex of a closed fan (a depth-map mesh whose vertices are
  the pixel centres) is covered exactly once, where float edge functions leave holes or double coverage.
  The snapped signed area A = (X_1 - X_0)(Y_2 - Y_0) - (X_2 - X_0)(Y_1 - Y_0) decides orientation
  (A < 0: front-facing, A == 0: degenerate, covers nothing). Faces with a vertex beyond the guard band
  (|X| or |Y| >= 2^29, thousands of image widths off screen) or images wider than 2^20 pixels take the
  float path below;
* **faces crossing w = 0 (or beyond the guard band): homogeneous rasterization** (Olano & Greer 1997):
  with the 2D homogeneous vertex coordinates h_k = (x_k, y_k, w_k) and the pixel p = (px, py, 1), the edge
  functions are E_0 = (h_1 x h_2) . p, E_1 = (h_2 x h_0) . p, E_2 = (h_0 x h_1) . p, and
  det = h_0 . (h_1 x h_2). The point of the triangle's plane seen through p has perspective-correct
  barycentrics b_k = E_k / (E_0 + E_1 + E_2) and w = det / (E_0 + E_1 + E_2). It is on the triangle and
  in front of the camera (w > 0) exactly when every sign(det) E_k >= 0: triangles crossing w = 0 are
  covered correctly on their visible part, with no clipping and no smearing; det < 0 is front-facing
  (det = w0 w1 w2 times the NDC signed area when all w > 0), det == 0 covers nothing;
* **fill rule** (both paths): a pixel centre exactly on an edge (oriented edge function == 0) belongs to the
  triangle whose inward edge normal (a_k, b_k), with E_k = a_k px + b_k py + c_k oriented inwards, has
  a_k > 0, or a_k == 0 and b_k > 0. The neighbour across a shared edge computes the exact negation of that
  edge function, so exactly one of the two owns the pixel (the top-left rule);
* visible if additionally the float homogeneous barycentrics give w > 0 and -1 <= z/w <= 1 at the pixel
  centre (z/w = sum b z / sum b w); smaller z/w is closer; equal depth: the lower face index wins;
* front-facing: the spec's (x1 - x0)(y2 - y0) - (x2 - x0)(y1 - y0) < 0 in NDC (A < 0 or det < 0 above).

Gradients: ``bary`` and ``depth`` are recomputed from the visible face's vertices with differentiable
torch ops, so autograd gives their exact derivatives with respect to the vertex positions with the
visibility held fixed; ``face_id`` has none.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Fragments(NamedTuple):
    face_id: Tensor  # (B, H, W) int32, -1 for background
    bary: Tensor  # (B, H, W, 3) perspective-correct barycentrics of face_id's vertices, 0 in background
    depth: Tensor  # (B, H, W) z/w of the visible surface, 1.0 (the far plane) in background


def pixel_centres(height: int, width: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """NDC x and y of the pixel centres, each (H, W)."""
    x = -1 + (2 * torch.arange(width, dtype=like.dtype, device=like.device) + 1) / width
    y = -1 + (2 * torch.arange(height, dtype=like.dtype, device=like.device) + 1) / height
    y, x = torch.meshgrid(y, x, indexing="ij")
    return x, y


def cross(u: Tensor, v: Tensor) -> Tensor:
    """u x v with every product rounded on its own: u1 v2 - u2 v1, u2 v0 - u0 v2, u0 v1 - u1 v0.

    Not torch.cross: ATen's CPU kernel may contract a component into one FMA, and then the two faces
    sharing an edge no longer compute exact negatives of its edge function, which opens cracks along
    shared edges. Separate elementwise ops round each product, so swapping u and v negates exactly.
    """
    u0, u1, u2 = u.unbind(-1)
    v0, v1, v2 = v.unbind(-1)
    return torch.stack([u1 * v2 - u2 * v1, u2 * v0 - u0 * v2, u0 * v1 - u1 * v0], -1)


def edge_coefficients(tri: Tensor) -> tuple[Tensor, Tensor]:
    """tri (..., 3, 4) clip-space vertices -> edge coefficients (..., 3, 3) [k, (a, b, c)] and det (...)."""
    h = tri[..., [0, 1, 3]]  # homogeneous 2D coordinates (x, y, w)
    h0, h1, h2 = h[..., 0, :], h[..., 1, :], h[..., 2, :]
    e = torch.stack([cross(h1, h2), cross(h2, h0), cross(h0, h1)], -2)
    det = (e[..., 0, :] * h0).sum(-1)
    return e, det


# Fixed-point coverage: 8 sub-pixel bits; vertices beyond +-2^29 sub-pixel units take the float path, so
# every edge-function product stays below 2^61 (int64, exact).
SUBPIXEL_BITS = 8
GUARD = float(1 << 29)
MAX_FIXED_SIZE = 1 << 20  # images wider or taller than this use the float path for every face


def snap(coord: Tensor, w: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Clip coordinate and w -> (snapped screen coordinate int64, within the guard band) for an axis of n
    pixels: rint((coord / w + 1) * n * 2^(SUBPIXEL_BITS - 1)), all in float64."""
    s = (coord.double() / w.double() + 1.0) * float(n << (SUBPIXEL_BITS - 1))
    ok = s.abs() < GUARD  # False for NaN and inf
    return torch.where(ok, s, torch.zeros_like(s)).round().long(), ok


def fixed_point_setup(tri: Tensor, height: int, width: int):
    """tri (..., 3, 4) -> (fixed (...) bool: the face takes the fixed-point path, X (..., 3), Y (..., 3) int64,
    area (...) int64 = (X1 - X0)(Y2 - Y0) - (X2 - X0)(Y1 - Y0))."""
    w = tri[..., 3]
    X, okx = snap(tri[..., 0], w, width)
    Y, oky = snap(tri[..., 1], w, height)
    fixed = ((w > 0) & okx & oky).all(-1) & (max(height, width) <= MAX_FIXED_SIZE)
    area = (X[..., 1] - X[..., 0]) * (Y[..., 2] - Y[..., 0]) - (X[..., 2] - X[..., 0]) * (Y[..., 1] - Y[..., 0])
    return fixed, X, Y, area


def _fixed_inside(X: Tensor, Y: Tensor, area: Tensor, height: int, width: int) -> Tensor:
    """X, Y (B, F, 3) int64, area (B, F) -> inside (B, F, H, W) bool by the exact edge functions + fill rule."""
    half = 1 << (SUBPIXEL_BITS - 1)
    PX = (2 * torch.arange(width, device=X.device) + 1) * half
    PY = ((2 * torch.arange(height, device=X.device) + 1) * half)[:, None]
    s = torch.where(area < 0, -1, 1)[..., None]  # orient inwards
    a_idx, b_idx = [1, 2, 0], [2, 0, 1]  # edge k runs from vertex k + 1 to vertex k + 2
    dx = X[..., b_idx] - X[..., a_idx]
    dy = Y[..., b_idx] - Y[..., a_idx]
    A, Bc = -s * dy, s * dx  # inward normal of edge k: E_k = A px + B py + C (oriented)
    owner = (A > 0) | ((A == 0) & (Bc > 0))
    xa, ya = X[..., a_idx], Y[..., a_idx]
    inside = torch.ones(X.shape[:-1] + (height, width), dtype=torch.bool, device=X.device)
    for k in range(3):
        e = (s[..., 0] * dx[..., k])[..., None, None] * (PY - ya[..., k, None, None]) - \
            (s[..., 0] * dy[..., k])[..., None, None] * (PX - xa[..., k, None, None])
        inside &= (e > 0) | ((e == 0) & owner[..., k, None, None])
    return inside & (area != 0)[..., None, None]


def _coverage_chunk(tri: Tensor, valid: Tensor, px: Tensor, py: Tensor, cull_backfaces: bool):
    """For faces tri (B, F, 3, 4): (covered (B, F, H, W) bool, depth z/w (B, F, H, W))."""
    height, width = px.shape
    e, det = edge_coefficients(tri)
    s = torch.where(det < 0, -1.0, 1.0).to(tri.dtype)[..., None]  # orient the edges inwards
    a, b, c = (s * e[..., 0]), (s * e[..., 1]), (s * e[..., 2])  # (B, F, 3) each
    ev = a[..., None, None] * px + b[..., None, None] * py + c[..., None, None]  # (B, F, 3, H, W)
    owner = (a > 0) | ((a == 0) & (b > 0))  # fill rule for pixels exactly on an edge
    fixed, X, Y, area = fixed_point_setup(tri, height, width)
    inside = _fixed_inside(X, Y, area, height, width)
    if not bool(fixed.all()):  # some faces cross w = 0 or leave the guard band: the float path for those
        inside_float = ((ev > 0) | ((ev == 0) & owner[..., None, None])).all(2) & (det != 0)[..., None, None]
        inside = torch.where(fixed[..., None, None], inside, inside_float)
    total = ev.sum(2)  # = sign(det) * (E_0 + E_1 + E_2)
    ok = valid
    if cull_backfaces:
        ok = ok & torch.where(fixed, area < 0, det < 0)
    covered = inside & (total > 0) & ok[..., None, None]
    bary = ev / torch.where(total > 0, total, torch.ones_like(total))[:, :, None]
    z = (bary * tri[..., 2][..., None, None]).sum(2)
    w = (bary * tri[..., 3][..., None, None]).sum(2)
    depth = z / torch.where(w > 0, w, torch.ones_like(w))
    covered = covered & (w > 0) & (depth >= -1) & (depth <= 1)
    return covered, depth


def face_vertices(verts: Tensor, faces: Tensor) -> Tensor:
    """verts (B, V, D), faces (B, F, 3) with -1 padding -> (B, F, 3, D) (padding rows read vertex 0)."""
    idx = faces.clamp(min=0).long()
    b = torch.arange(verts.shape[0], device=verts.device)[:, None, None]
    return verts[b, idx]


def rasterize_reference(verts: Tensor, faces: Tensor, height: int, width: int, cull_backfaces: bool = False,
                        face_chunk: int = 512) -> Fragments:
    """verts (B, V, 4) clip coordinates; faces (B, F, 3) integer, rows of -1 are padding.

    Brute force, O(F * H * W) work in chunks of ``face_chunk`` faces (O(face_chunk * H * W) memory).
    """
    B = verts.shape[0]
    px, py = pixel_centres(height, width, verts)
    best = torch.full((B, height, width), float("inf"), dtype=verts.dtype, device=verts.device)
    face_id = torch.full((B, height, width), -1, dtype=torch.int32, device=verts.device)
    with torch.no_grad():
        for f0 in range(0, faces.shape[1], face_chunk):
            fc = faces[:, f0:f0 + face_chunk]
            covered, depth = _coverage_chunk(face_vertices(verts, fc), (fc >= 0).all(-1), px, py, cull_backfaces)
            depth = torch.where(covered, depth, torch.full_like(depth, float("inf")))
            arg = depth.argmin(1)  # argmin returns the first (lowest) index among equal depths
            d_min = depth.gather(1, arg[:, None])[:, 0]
            better = d_min < best  # strict: earlier chunks (lower indices) keep ties
            best = torch.where(better, d_min, best)
            face_id = torch.where(better, (arg + f0).to(torch.int32), face_id)
    return fragments_from_face_ids(verts, faces, face_id)


def fragments_from_face_ids(verts: Tensor, faces: Tensor, face_id: Tensor) -> Fragments:
    """Perspective-correct ``bary`` and ``depth`` of the visible faces, from the visibility ``face_id``.

    Plain differentiable torch ops on the (B, H, W) gathered triangles: autograd gives the exact
    derivatives with respect to ``verts`` with the visibility held fixed, in O(pixels). Every backend's
    visibility pass ends here, so they share one formula for the differentiable part.
    """
    B, height, width = face_id.shape
    if faces.shape[1] == 0:  # zero faces: all background
        zero = verts.sum() * 0  # keeps the graph connected to verts
        return Fragments(face_id, torch.zeros(B, height, width, 3, dtype=verts.dtype, device=verts.device) + zero,
                         torch.ones(B, height, width, dtype=verts.dtype, device=verts.device) + zero)
    px, py = pixel_centres(height, width, verts)
    hit = face_id >= 0
    tri = face_vertices(verts, faces.gather(1, face_id.clamp(min=0).long().reshape(B, -1, 1).expand(-1, -1, 3)))
    tri = tri.reshape(B, height, width, 3, 4)
    e, _ = edge_coefficients(tri)
    ev = e[..., 0] * px[..., None] + e[..., 1] * py[..., None] + e[..., 2]  # (B, H, W, 3)
    total = ev.sum(-1, keepdim=True)
    total = torch.where(hit[..., None], total, torch.ones_like(total))
    bary = torch.where(hit[..., None], ev / total, torch.zeros_like(ev))
    z = (bary * tri[..., 2]).sum(-1)
    w = (bary * tri[..., 3]).sum(-1)
    depth = torch.where(hit, z / torch.where(hit, w, torch.ones_like(w)), torch.ones_like(z))
    return Fragments(face_id, bary, depth)


def interpolate_reference(attr: Tensor, frags: Fragments, faces: Tensor) -> Tensor:
    """attr (B, V, C) -> (B, H, W, C): sum_k bary_k attr[face vertex k]; 0 in background."""
    B, H, W = frags.face_id.shape
    if faces.shape[1] == 0:  # zero faces: all background (kept connected to attr's graph)
        return torch.zeros(B, H, W, attr.shape[-1], dtype=attr.dtype, device=attr.device) + attr.sum() * 0
    fid = frags.face_id.clamp(min=0).long().reshape(B, -1, 1).expand(-1, -1, 3)
    tri = face_vertices(attr, faces.gather(1, fid)).reshape(B, H, W, 3, -1)
    out = (frags.bary[..., None] * tri).sum(-2)
    return torch.where((frags.face_id >= 0)[..., None], out, torch.zeros_like(out))
