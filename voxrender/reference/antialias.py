"""Reference analytic edge antialiasing: mesh topology, silhouette edges, and the pure-torch blend (the oracle).

Our own implementation of the idea of nvdiffrast's ``antialias`` (Laine et al. 2020): hard rasterization
has no gradient with respect to where a silhouette lies, because moving an outline only changes which face
covers a pixel centre, a discrete event. Antialiasing blends the colours of neighbouring pixels by how far
the silhouette edge lies between their centres, a continuous function of the edge's vertices; a loss on
the blended image then moves the outline.

The algorithm (every backend computes exactly this; ``csrc/include/voxrender/antialias.h`` is the C++/CUDA
copy of the per-pair math):

1. **Topology** (:func:`face_adjacency`): the face across each edge, -1 on a boundary edge. Edge k of a
   face is the one opposite vertex k (vertices (k+1)%3, (k+2)%3), the rasterizer's edge function E_k.
   Edges shared by more than two faces (non-manifold) count as boundary; padding rows (-1) have no edges.
2. **Silhouette edges** (:func:`silhouette_edges`): edge k of face f is a silhouette edge when it is a
   boundary edge or the neighbour's facing differs from f's (front-facing: the homogeneous det of the face
   < 0, as :func:`voxrender.reference.rasterize.edge_coefficients`).
3. **Pixel pairs**: every horizontally (p = (i, j), q = (i, j + 1)) and vertically (q = (i + 1, j))
   adjacent pair with different face ids. The FRONT side s: if one is background (-1) the other; if both
   are faces the smaller ``frags.depth``, equal depth: the lower face id. o is the other pixel and
   f = face_id[s].
4. **The walk to the silhouette**: along the one-pixel segment from the centre of s to the centre of o
   (pixel centres at NDC x_j = -1 + (2j + 1) / W, y_i = -1 + (2i + 1) / H, y down), parameter t (0 at s,
   1 at o). The *exit edge* of a face, searched at t >= lo, excluding one edge: for each edge k of the face
   whose two endpoints have w > 0, with NDC endpoints A = (x/w, y/w) of vertex (k+1)%3 and B of vertex
   (k+2)%3, a horizontal pair (on the line y = y_s) is crossed when (A.y > y_s) != (B.y > y_s), at
   x* = A.x + ((y_s - A.y) (B.x - A.x)) / (B.y - A.y), giving t = (x* - x_s) / (x_o - x_s) (vertical pairs:
   x and y swapped); the exit edge is the crossing edge, other than the excluded one, with the smallest
   t >= lo (ties: the lower k). The walk starts on f with lo = 0 and no excluded edge, and repeats:

   - no exit edge, or its t > 1: the pair does not blend;
   - the exit edge is a silhouette edge (t <= 1): the pair blends with this t (and this edge's vertices);
   - the exit edge is interior (t <= 1): the walk moves into the face across it (``adjacency``; it faces
     the same way, so the screen-space geometry continues), with lo = this t and this edge excluded (by
     its two vertex indices), and searches that face's exit edge;

   looking at :data:`WALK_FACES` = 16 faces at most (f and 15 neighbours: 15 interior edges crossed); a walk
   that reaches the limit does not blend (enough for icospheres up to level 6 at 1024 px; level 7 at
   1024 px, 328 k faces, would blend 98.5 % of its outline pairs with 32 instead of 93 %). This finds the
   silhouette of finely tessellated, smoothly curved surfaces, whose rim faces (seen edge-on) are thinner
   than a pixel and cover no pixel centre: the pixel inside the outline then belongs to an inner face, and
   the segment crosses a few thin rim faces before the silhouette. An edge with a vertex at w <= 0 is
   never crossed, so a walk into a face with a vertex behind the camera stops there (its only other edges
   have that vertex). The walk is the same on every backend: the same expressions, in the same order, for
   every decision.
   Measured on a unit icosphere seen orthographically, filling 70 % of the image (outline pixel pairs that
   blend, without the walk -> with it): level 2 at 48 px 60 / 136 -> 136 / 136; level 4 at 64 px
   0 / 176 -> 168 / 176; at 256 px 126 / 720 -> 708 / 720. Most of the rest have a pixel centre within
   1e-3 pixel of an edge, where the rasterizer's snapped coverage and the float edge disagree about which
   side it lies on, so the walk starts from a face the segment does not cross.
5. **Blend**: every pair changes one pixel, and all read the INPUT colours. If t > 0.5 the front surface
   reaches into o: out[o] += (t - 0.5) (color[s] - color[o]); else
   out[s] += (0.5 - t) (color[o] - color[s]). out = color + the sum of the deltas.
6. **Gradients**: with respect to ``color`` (linear) and to the clip x, y, w of the two vertices of the
   silhouette edge the walk ends on, through t (the faces crossed before it only decide which edge). The
   fragments (face_id, depth, bary) are constants here: no gradient reaches ``frags.depth``.
   d delta / d t = color[s] - color[o] for both branches, so the gradient is continuous at t = 0.5.

:func:`antialias_reference` implements steps 3 to 5 with gathers, ``torch.where`` and ``index_add`` over
the pairs whose face ids differ (O(pixels), no per-pixel Python loop; the walk iterates its steps over all
walking pairs at once), and autograd derives step 6. Pairs whose front face is more than 15 interior
edges from any face with a silhouette edge are dropped first (:func:`_reaches_silhouette`, exact: their
walk cannot blend); the C++ CPU op uses the same filter when the mesh is small for the image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rasterize import edge_coefficients

# Edge k of a face joins its vertices (k + 1) % 3 and (k + 2) % 3 (it is opposite vertex k).
EDGE_A = (1, 2, 0)
EDGE_B = (2, 0, 1)
_KEY_SHIFT = 1 << 31  # edge key lo * 2^31 + hi: unique for vertex indices below 2^31
# The most faces one pair's walk looks at: the front face and up to 15 neighbours across interior edges
# (csrc/include/voxrender/antialias.h: kAntialiasWalkFaces).
WALK_FACES = 16


def face_adjacency(faces: Tensor) -> Tensor:
    """The face across each edge: faces (F, 3) -> (F, 3), or (B, F, 3) -> (B, F, 3), int64.

    ``adj[..., f, k]`` is the face sharing edge k of face f (the edge opposite vertex k, joining vertices
    (k+1)%3 and (k+2)%3), or -1 when the edge is a boundary edge: used by one face only, or by more than
    two (non-manifold edges count as boundary). Rows of -1 (padding) have no edges: their entries are -1
    and they are nobody's neighbour. Per batch item for (B, F, 3). Edge direction is ignored, so a
    neighbour with the opposite winding is still a neighbour.

    Vectorised, O(F log F): one sort over undirected edge keys per item, then runs of exactly two equal
    keys are paired. Compute it once per mesh and pass it to :func:`voxrender.antialias` as ``adjacency=``.
    """
    if not isinstance(faces, Tensor):
        raise TypeError(f"faces: expected a torch.Tensor, got {type(faces).__name__}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces: expected int32 or int64 vertex indices, got dtype {faces.dtype}")
    if faces.dim() not in (2, 3) or faces.shape[-1] != 3:
        raise ValueError(f"faces: expected (F, 3) or (B, F, 3), got {tuple(faces.shape)}")
    shared = faces.dim() == 2
    f = (faces[None] if shared else faces).long()
    B, F, _ = f.shape
    if F == 0:
        out = torch.full((B, 0, 3), -1, dtype=torch.int64, device=faces.device)
        return out[0] if shared else out
    a, b = f[..., list(EDGE_A)], f[..., list(EDGE_B)]
    key = torch.minimum(a, b) * _KEY_SHIFT + torch.maximum(a, b)  # (B, F, 3), undirected
    valid = (f >= 0).all(-1, keepdim=True).expand(-1, -1, 3)
    pos = torch.arange(3 * F, device=f.device).reshape(1, F, 3)
    key = torch.where(valid, key, -1 - pos).reshape(B, 3 * F)  # padding: unique negative keys, never paired
    skey, order = torch.sort(key, dim=1)
    no = torch.zeros(B, 1, dtype=torch.bool, device=f.device)
    eq = skey[:, 1:] == skey[:, :-1]  # sorted i + 1 equals sorted i
    nxt = torch.cat([eq, no], 1)  # sorted i equals sorted i + 1
    prv = torch.cat([no, eq], 1)  # sorted i equals sorted i - 1
    nxt2 = torch.cat([nxt[:, 1:], no], 1)  # sorted i + 1 equals sorted i + 2
    first = nxt & ~prv & ~nxt2  # first of a run of exactly two
    second = torch.cat([no, first[:, :-1]], 1)
    idx = torch.arange(3 * F, device=f.device).expand(B, -1)
    partner = torch.where(first, idx + 1, torch.where(second, idx - 1, torch.zeros_like(idx)))
    nb = torch.where(first | second, order.gather(1, partner) // 3, torch.full_like(idx, -1))
    adj = torch.empty_like(nb).scatter_(1, order, nb).reshape(B, F, 3)
    return adj[0] if shared else adj


def silhouette_edges(verts: Tensor, faces: Tensor, adjacency: Tensor) -> Tensor:
    """(B, F, 3) bool: edge k of face f is a silhouette edge (a boundary edge, or the face across it faces
    the other way). verts (B, V, 4) clip coordinates, faces and adjacency (B, F, 3). Facing is the sign of
    the homogeneous det (det < 0: front-facing), the rasterizer's. Padding rows: False. Not differentiable.
    """
    B, F, _ = faces.shape
    valid = (faces >= 0).all(-1)
    if F == 0 or verts.shape[1] == 0:
        return torch.zeros(B, F, 3, dtype=torch.bool, device=faces.device)
    with torch.no_grad():
        idx = faces.clamp(min=0).long().reshape(B, 3 * F, 1).expand(-1, -1, verts.shape[-1])
        tri = verts.detach().gather(1, idx).reshape(B, F, 3, verts.shape[-1])  # padding rows read vertex 0
        _, det = edge_coefficients(tri)
    front = det < 0  # (B, F)
    nb = adjacency.long()
    nb_front = front.gather(1, nb.clamp(min=0).reshape(B, 3 * F)).reshape(B, F, 3)
    sil = (nb < 0) | (nb_front != front[..., None])
    return sil & valid[..., None]


def _centres(n: int, like: Tensor) -> Tensor:
    """NDC of the n pixel centres along an axis, -1 + (2j + 1) / n, rounded as the C++ code does."""
    return -1 + (2 * torch.arange(n, dtype=like.dtype, device=like.device) + 1) / n


def _pairs(face_id: Tensor, depth: Tensor, axis: int):
    """The pairs of one direction whose face ids differ: flat pixel indices (into B * H * W) of the front
    side s and the other side o, the row/column indices along and across the segment, and f."""
    B, H, W = face_id.shape
    if axis == 0:
        fp, fq = face_id[:, :, :-1], face_id[:, :, 1:]
        dp, dq = depth[:, :, :-1], depth[:, :, 1:]
        step = 1
    else:
        fp, fq = face_id[:, :-1, :], face_id[:, 1:, :]
        dp, dq = depth[:, :-1, :], depth[:, 1:, :]
        step = W
    b, i, j = torch.nonzero(fp != fq, as_tuple=True)
    fp, fq, dp, dq = fp[b, i, j], fq[b, i, j], dp[b, i, j], dq[b, i, j]
    s_is_p = (fq < 0) | ((fp >= 0) & ((dp < dq) | ((dp == dq) & (fp < fq))))
    p = (b * H + i) * W + j
    s = torch.where(s_is_p, p, p + step)
    o = torch.where(s_is_p, p + step, p)
    f = torch.where(s_is_p, fp, fq).long()
    if axis == 0:  # along x: the segment lies on row i, from column j_s to j_o
        across, us_idx, uo_idx = i, j + (~s_is_p).long(), j + s_is_p.long()
    else:  # along y: the segment lies on column j, from row i_s to i_o
        across, us_idx, uo_idx = j, i + (~s_is_p).long(), i + s_is_p.long()
    return b, s, o, f, across, us_idx, uo_idx


def _edge_t(A: Tensor, Bv: Tensor, axis: int, vs: Tensor, us: Tensor, uo: Tensor) -> tuple[Tensor, Tensor]:
    """Edges from clip vertices A to Bv (..., 4): (crossed, t). crossed: both w > 0 and the edge crosses
    the segment's line v = vs; t: where along the segment from us (t = 0) to uo (t = 1), exactly the C++
    expression order; an arbitrary finite value where not crossed."""
    wa, wb = A[..., 3], Bv[..., 3]
    okw = (wa > 0) & (wb > 0)
    one = torch.ones_like(wa)
    wa, wb = torch.where(okw, wa, one), torch.where(okw, wb, one)
    ax, ay = A[..., 0] / wa, A[..., 1] / wa
    bx, by = Bv[..., 0] / wb, Bv[..., 1] / wb
    au, av, bu, bv = (ax, ay, bx, by) if axis == 0 else (ay, ax, by, bx)
    crossed = okw & ((av > vs) != (bv > vs))
    num = (vs - av) * (bu - au)
    ustar = au + num / torch.where(crossed, bv - av, one)
    return crossed, (ustar - us) / (uo - us)


def _reaches_silhouette(silhouette: Tensor, adjacency: Tensor) -> Tensor:
    """(B, F) bool: a face with a silhouette edge lies within WALK_FACES - 1 steps of the face across
    interior edges, i.e. a walk that starts on it can end on a silhouette edge. An exact filter: the walk of
    a pair whose front face is not marked never blends (the same result as walking it, less work)."""
    B, F, _ = silhouette.shape
    nb = adjacency.long()
    inner = ~silhouette & (nb >= 0) & (nb < F)  # the edges a walk crosses
    nb = torch.where(inner, nb, torch.zeros_like(nb)).reshape(B, 3 * F)
    reach = silhouette.any(-1)
    for _ in range(WALK_FACES - 1):
        reach = reach | (inner & reach.gather(1, nb).reshape(B, F, 3)).any(-1)
    return reach


def _walk(verts: Tensor, faces: Tensor, silhouette: Tensor, adjacency: Tensor, b: Tensor, f: Tensor, axis: int,
          vs: Tensor, us: Tensor, uo: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Step 4 for N pairs at once (no autograd): -> (blend (N,) bool, face (N,), k (N,)), the face of the walk
    and the edge k of it that each blending pair leaves through a silhouette edge (arbitrary where blend is
    False). verts (B, V, 4), faces, silhouette, adjacency (B, F, 3); b, f (N,) the item and the front face;
    vs, us, uo (N,) the segments.

    One iteration per walk step, over the pairs still walking (compacted after each step): the exit search on
    their current face, then the pairs whose exit edge is a silhouette edge at t <= 1 stop with a hit, those
    whose exit edge is interior at t <= 1 move into the face across it, and the rest stop with nothing.
    The projections x / w, y / w and the crossing t are the expressions of :func:`_edge_t` (the C++ code's),
    evaluated once per vertex and edge of the current faces; flat ``index_select`` gathers keep it fast."""
    B, V = verts.shape[:2]
    F = faces.shape[1]
    verts_flat = verts.reshape(B * V, 4)
    faces_flat = faces.reshape(B * F, 3).long()
    sil_flat = silhouette.reshape(B * F * 3)
    adj_flat = adjacency.reshape(B * F * 3).long()
    N = f.shape[0]
    blend = torch.zeros(N, dtype=torch.bool, device=f.device)
    hit_face, hit_k = f.clone(), torch.zeros_like(f)
    walking = torch.arange(N, device=f.device)
    lo = torch.zeros_like(vs)  # exits are searched at t >= lo: 0, then the entry t
    ea = eb = torch.full_like(f, -1)  # the edge just entered (its vertex indices); none on the front face
    cur = f
    vs, us, uo = vs[:, None], us[:, None], uo[:, None]
    for _ in range(WALK_FACES):
        if walking.numel() == 0:
            break
        row = b * F + cur
        idx = faces_flat.index_select(0, row)  # (n, 3) vertex indices of the current face
        X = verts_flat.index_select(0, (b[:, None] * V + idx.clamp(min=0)).reshape(-1)).reshape(-1, 3, 4)
        okw = X[..., 3] > 0
        w = torch.where(okw, X[..., 3], torch.ones_like(X[..., 3]))
        pu, pv = X[..., axis] / w, X[..., 1 - axis] / w  # (n, 3): u along the segment, v across it
        # Edge k joins vertices (k + 1) % 3 (A) and (k + 2) % 3 (B): roll by -1 and -2.
        ia, ib = idx.roll(-1, 1), idx.roll(-2, 1)
        au, av, bu, bv = pu.roll(-1, 1), pv.roll(-1, 1), pu.roll(-2, 1), pv.roll(-2, 1)
        entered = ((ia == ea[:, None]) & (ib == eb[:, None])) | ((ia == eb[:, None]) & (ib == ea[:, None]))
        crossed = okw.roll(-1, 1) & okw.roll(-2, 1) & ((av > vs) != (bv > vs)) & ~entered
        num = (vs - av) * (bu - au)
        ustar = au + num / torch.where(crossed, bv - av, torch.ones_like(av))
        t = (ustar - us) / (uo - us)
        cand = crossed & (t >= lo[:, None]) & (idx >= 0).all(-1, keepdim=True)
        tmin, k = torch.where(cand, t, torch.full_like(t, float("inf"))).min(-1)  # the first of ties
        found = cand.any(-1) & (tmin <= 1)
        edge = row * 3 + k
        sil = sil_flat.index_select(0, edge)
        done = (found & sil).nonzero()[:, 0]
        who = walking.index_select(0, done)
        blend[who] = True
        hit_face[who] = cur.index_select(0, done)
        hit_k[who] = k.index_select(0, done)
        nb = adj_flat.index_select(0, edge)
        go = (found & ~sil & (nb >= 0) & (nb < F)).nonzero()[:, 0]
        k1 = k[:, None]
        ea, eb = ia.gather(1, k1)[:, 0].index_select(0, go), ib.gather(1, k1)[:, 0].index_select(0, go)
        walking, b, cur, lo = walking.index_select(0, go), b.index_select(0, go), nb.index_select(0, go), \
            tmin.index_select(0, go)
        vs, us, uo = vs.index_select(0, go), us.index_select(0, go), uo.index_select(0, go)
    return blend, hit_face, hit_k


def antialias_reference(color: Tensor, face_id: Tensor, depth: Tensor, verts: Tensor, faces: Tensor,
                        silhouette: Tensor, adjacency: Tensor) -> Tensor:
    """color (B, H, W, C), face_id (B, H, W) (-1 background), depth (B, H, W), verts (B, V, 4) clip,
    faces (B, F, 3), silhouette (B, F, 3) bool, adjacency (B, F, 3) (:func:`face_adjacency`)
    -> (B, H, W, C). Autograd gives the gradients with respect to ``color`` and ``verts``; ``depth`` is
    only compared. See the module docstring.

    Two stages per direction: the discrete choices (front side, the walk, whether the pair blends) are
    made without autograd on all differing pairs (:func:`_walk`); then t is recomputed, with autograd and
    by the same expressions (bitwise the same value), for the final silhouette edge of the blending pairs
    only, so the graph holds only what the gradient needs and no unselected edge (w <= 0, parallel,
    overflowing) can leak a NaN into it."""
    B, H, W, C = color.shape
    flat = color.reshape(B * H * W, C)
    depth = depth.detach()
    with torch.no_grad():
        reach = _reaches_silhouette(silhouette, adjacency)
    targets, deltas = [], []
    for axis in (0, 1):
        b, s, o, f, across, us_idx, uo_idx = _pairs(face_id, depth, axis)
        keep = reach[b, f]  # only these pairs can blend (the same result, less work)
        b, s, o, f, across, us_idx, uo_idx = (x[keep] for x in (b, s, o, f, across, us_idx, uo_idx))
        n_across, n_along = (H, W) if axis == 0 else (W, H)
        c_across, c_along = _centres(n_across, verts), _centres(n_along, verts)
        vs, us, uo = c_across[across], c_along[us_idx], c_along[uo_idx]
        with torch.no_grad():
            blend, hit_face, k = _walk(verts.detach(), faces, silhouette, adjacency, b, f, axis, vs, us, uo)
        b, hit_face, k, vs, us, uo = b[blend], hit_face[blend], k[blend], vs[blend], us[blend], uo[blend]
        idx = faces[b, hit_face].long()  # (n, 3) vertex indices of the face holding the silhouette edge
        va = idx.gather(1, (k[:, None] + 1) % 3)[:, 0]  # the exit edge's vertices (k+1)%3 and (k+2)%3
        vb = idx.gather(1, (k[:, None] + 2) % 3)[:, 0]
        _, t = _edge_t(verts[b, va], verts[b, vb], axis, vs, us, uo)
        s, o = s[blend], o[blend]
        far = t.detach() > 0.5  # the face reaches into o: o is the pixel that changes
        tgt, src = torch.where(far, o, s), torch.where(far, s, o)
        a = torch.where(far, t - 0.5, 0.5 - t)
        targets.append(tgt)
        deltas.append(a[:, None] * (flat[src] - flat[tgt]))
    out = flat.index_add(0, torch.cat(targets), torch.cat(deltas).to(flat.dtype))
    return out.reshape(B, H, W, C)
