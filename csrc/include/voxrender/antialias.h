// Per-pixel-pair math of voxrender.antialias (analytic edge antialiasing), shared by the C++ CPU op
// (csrc/ops/antialias_cpu.cpp) and the CUDA kernels (csrc/kernels/antialias.cu).
//
// Torch-free: plain pointers and scalars. The algorithm and its conventions are those of the reference,
// voxrender/reference/antialias.py (the oracle); in short, for a pair of adjacent pixels with different face
// ids, the front side s (face over background; of two faces the smaller depth, ties to the lower face id)
// walks along the one-pixel segment from its centre to the other pixel o's centre (parameter t, 0 at s, 1
// at o): from its face f, through the faces across the interior edges the segment leaves them by, until it
// leaves a face through a silhouette edge at t <= 1 (the pair blends with that edge's t), passes t = 1, or
// has looked at kAntialiasWalkFaces faces (the pair does not blend). A blending pair changes one pixel:
//   t > 0.5:  out[o] += (t - 0.5) (color[s] - color[o])
//   else:     out[s] += (0.5 - t) (color[o] - color[s])
// i.e. out[tgt] += a (color[src] - color[tgt]) with (tgt, src, a) = (o, s, t - 0.5) or (s, o, 0.5 - t).
//
// Exactness. The discrete decisions (which edges cross, the smallest t >= lo, t <= 1, t > 0.5: every step
// of the walk) must match the reference's, so the arithmetic mirrors its torch expressions operation by
// operation in the input type T: A = (x / w, y / w); u* = u_A + ((v_s - v_A) (u_B - u_A)) / (v_B - v_A);
// t = (u* - u_s) / (u_o - u_s); pixel centres -1 + (2j + 1) / n. None of these has a product feeding an
// addition, so FMA contraction (nvcc's default) cannot change them; only the blended values and the
// gradients may round differently.
//
// Pairs. Pair (b, i, j, axis) joins pixel p = (i, j) with q = (i, j + 1) (axis 0, horizontal) or
// q = (i + 1, j) (axis 1, vertical). Along the segment the coordinate is u (x for axis 0, y for axis 1) and
// across it v (y, resp. x), constant on the segment.
#pragma once

#include <cstdint>

#include "voxrender/hd.h"

namespace voxrender {

// The inputs of one call, all contiguous: color (B, H, W, C), face_id (B, H, W) (-1 background; ids outside
// [0, F) are read as background), depth (B, H, W) z/w, verts (B, V, 4) clip coordinates, faces (B, F, 3)
// (rows with a negative index are padding; a face with an index outside [0, V) is treated like one, so the
// kernels never read out of bounds even when the glue skips the value checks), silhouette (B, F, 3) and
// adjacency (B, F, 3) (the face across each edge, voxrender.face_adjacency; entries outside [0, F) end the
// walk).
template <typename T>
struct AntialiasProblem {
  int64_t B, V, F;
  int H, W, C;
  const T* color;
  const int32_t* face_id;
  const T* depth;
  const T* verts;
  const int64_t* faces;
  const bool* silhouette;
  const int64_t* adjacency;
  // Optional walk filter (nullptr: none), (B, F): nonzero for the faces from which a walk can end on a
  // silhouette edge (antialias_reach_*). Pairs whose front face is not marked are skipped: the same result,
  // less work.
  const uint8_t* reach = nullptr;
};

// The most faces one pair's walk looks at: the front face and up to 15 neighbours across interior edges
// (voxrender/reference/antialias.py: WALK_FACES).
constexpr int kAntialiasWalkFaces = 16;

// A blending pair: pixel indices within the item (i * W + j) of the pixel that changes (tgt) and of the
// one whose colour it takes (src), the coverage t, the silhouette edge's vertices (va = vertex (k+1)%3 of
// the face of the walk that exits through it, vb = (k+2)%3) and the segment geometry (u_s, u_o, v_s)
// needed by the gradient.
template <typename T>
struct AntialiasHit {
  int64_t tgt, src;
  int64_t s, o;
  int64_t va, vb;
  T t;
  T us, uo, vs;
  int axis;
};

// NDC of pixel centre j on an axis of n pixels: -1 + (2j + 1) / n (as the reference computes it).
template <typename T>
VR_HD T aa_pixel_centre(int j, int n) {
  const T q = T(2 * j + 1) / T(n);
  return T(-1) + q;
}

// The exit search on one face of the walk: among its edges whose two vertices have w > 0, that cross the
// segment's line, that are not the edge just entered (vertex indices ea, eb, either order; -1: none) and
// whose t >= lo, the one with the smallest t (ties: the lower k). Returns k (-1: none) and its t in *t_out.
// idx: the face's three vertex indices (in range), vbase: the item's verts. The same expressions, in the same
// order, as the reference's _edge_t: each vertex is projected once (x / w, y / w are the same values however
// often they are computed).
template <typename T>
VR_HD int antialias_exit_edge(const T* vbase, const int64_t* idx, int axis, T vs, T us, T uo, T lo, int64_t ea,
                              int64_t eb, T* t_out) {
  T pu[3] = {T(0), T(0), T(0)}, pv[3] = {T(0), T(0), T(0)};  // read only where okw
  bool okw[3];
  for (int c = 0; c < 3; ++c) {
    const T* X = vbase + 4 * idx[c];
    okw[c] = X[3] > T(0);
    if (okw[c]) {
      const T x = X[0] / X[3], y = X[1] / X[3];
      pu[c] = axis ? y : x;
      pv[c] = axis ? x : y;
    }
  }
  T best_t = T(0);
  int best_k = -1;
  for (int k = 0; k < 3; ++k) {
    const int a = (k + 1) % 3, c = (k + 2) % 3;
    if (!(okw[a] && okw[c])) continue;
    if ((idx[a] == ea && idx[c] == eb) || (idx[a] == eb && idx[c] == ea)) continue;  // the edge just entered
    const T au = pu[a], av = pv[a], bu = pu[c], bv = pv[c];
    if ((av > vs) == (bv > vs)) continue;
    const T num = (vs - av) * (bu - au);
    const T ustar = au + num / (bv - av);
    const T t = (ustar - us) / (uo - us);
    if (t >= lo && (best_k < 0 || t < best_t)) {  // smallest t >= lo; ties keep the lower k
      best_t = t;
      best_k = k;
    }
  }
  *t_out = best_t;
  return best_k;
}

// The walk filter (voxrender/reference/antialias.py: _reaches_silhouette): reach[b F + f] marks the faces
// within kAntialiasWalkFaces - 1 steps across interior edges (not silhouette, neighbour in [0, F)) of a face
// with a silhouette edge. Round 0 (antialias_reach_init) marks the faces with a silhouette edge; each round
// (antialias_reach_round, from the previous round's marks) adds the faces with an interior edge to a marked
// face. After kAntialiasWalkFaces - 1 rounds (or when a round changes nothing) a pair whose front face is
// not marked cannot blend: its walk ends on no silhouette edge.
template <typename T>
VR_HD uint8_t antialias_reach_init(const AntialiasProblem<T>& P, int64_t b, int64_t f) {
  const bool* sil = P.silhouette + (b * P.F + f) * 3;
  return uint8_t(sil[0] || sil[1] || sil[2]);
}

template <typename T>
VR_HD uint8_t antialias_reach_round(const AntialiasProblem<T>& P, const uint8_t* prev, int64_t b, int64_t f) {
  const int64_t row = b * P.F + f;
  if (prev[row]) return 1;
  for (int k = 0; k < 3; ++k) {
    if (P.silhouette[row * 3 + k]) continue;
    const int64_t nb = P.adjacency[row * 3 + k];
    if (nb >= 0 && nb < P.F && prev[b * P.F + nb]) return 1;
  }
  return 0;
}

// Evaluates pair (b, i, j, axis); the caller guarantees q is inside the image. Returns true (and fills
// *hit) when the pair blends.
//
// The walk: starting on the front face f, find its exit edge (t >= 0). At t > 1 (or with no exit edge) the
// pair does not blend. A silhouette exit edge at t <= 1 is the hit. An interior exit edge at t <= 1 leads
// into the face across it (P.adjacency; an entry outside [0, F) ends the walk), whose exit edge is searched
// at t >= the entry t without the edge just entered, and so on, for at most kAntialiasWalkFaces faces.
template <typename T>
VR_HD bool antialias_pair(const AntialiasProblem<T>& P, int64_t b, int i, int j, int axis, AntialiasHit<T>* hit) {
  const int i2 = axis ? i + 1 : i, j2 = axis ? j : j + 1;
  const int64_t base = b * int64_t(P.H) * P.W;
  const int64_t p = int64_t(i) * P.W + j, q = int64_t(i2) * P.W + j2;
  int64_t fp = P.face_id[base + p], fq = P.face_id[base + q];
  if (fp < 0 || fp >= P.F) fp = -1;
  if (fq < 0 || fq >= P.F) fq = -1;
  if (fp == fq) return false;
  bool s_is_p;
  if (fp < 0) {
    s_is_p = false;
  } else if (fq < 0) {
    s_is_p = true;
  } else {
    const T dp = P.depth[base + p], dq = P.depth[base + q];
    s_is_p = dp < dq || (dp == dq && fp < fq);
  }
  int64_t cur = s_is_p ? fp : fq;  // the front face f, then the faces of the walk
  if (P.reach && !P.reach[b * P.F + cur]) return false;
  // Segment geometry: v across (constant), u along from s to o.
  T us, uo, vs;
  if (axis == 0) {
    vs = aa_pixel_centre<T>(i, P.H);
    us = aa_pixel_centre<T>(s_is_p ? j : j2, P.W);
    uo = aa_pixel_centre<T>(s_is_p ? j2 : j, P.W);
  } else {
    vs = aa_pixel_centre<T>(j, P.W);
    us = aa_pixel_centre<T>(s_is_p ? i : i2, P.H);
    uo = aa_pixel_centre<T>(s_is_p ? i2 : i, P.H);
  }
  const T* vbase = P.verts + b * P.V * 4;
  T lo = T(0);               // exits are searched at t >= lo: 0, then the entry t
  int64_t ea = -1, eb = -1;  // the edge just entered (vertex indices)
  for (int step = 0; step < kAntialiasWalkFaces; ++step) {
    const int64_t row = (b * P.F + cur) * 3;
    const int64_t* idx = P.faces + row;
    for (int k = 0; k < 3; ++k) {  // a padding row covers nothing; out-of-range indices are never read
      if (idx[k] < 0 || idx[k] >= P.V) return false;
    }
    T t;
    const int k = antialias_exit_edge(vbase, idx, axis, vs, us, uo, lo, ea, eb, &t);
    if (k < 0 || !(t <= T(1))) return false;
    if (P.silhouette[row + k]) {
      hit->s = s_is_p ? p : q;
      hit->o = s_is_p ? q : p;
      const bool far = t > T(0.5);
      hit->tgt = far ? hit->o : hit->s;
      hit->src = far ? hit->s : hit->o;
      hit->va = idx[(k + 1) % 3];
      hit->vb = idx[(k + 2) % 3];
      hit->t = t;
      hit->us = us, hit->uo = uo, hit->vs = vs;
      hit->axis = axis;
      return true;
    }
    const int64_t next = P.adjacency[row + k];  // interior edge: the face across it has the same facing
    if (next < 0 || next >= P.F) return false;
    ea = idx[(k + 1) % 3];
    eb = idx[(k + 2) % 3];
    lo = t;
    cur = next;
  }
  return false;  // the step limit
}

// The blend weight a of a hit: out[tgt] += a (color[src] - color[tgt]).
template <typename T>
VR_HD T antialias_weight(const AntialiasHit<T>& h) {
  return h.t > T(0.5) ? h.t - T(0.5) : T(0.5) - h.t;
}

// Calls fn(hit) for every blending pair that has pixel (i, j) of item b as one of its two pixels, in a
// fixed order: left, right, up, down neighbour.
template <typename T, typename Fn>
VR_HD void antialias_pixel_pairs(const AntialiasProblem<T>& P, int64_t b, int i, int j, Fn&& fn) {
  // Fast path: the four neighbours have this pixel's face id (most pixels), so no pair differs.
  const int32_t* fid = P.face_id + (b * P.H + i) * int64_t(P.W) + j;
  const int32_t me = fid[0];
  if ((j == 0 || fid[-1] == me) && (j + 1 == P.W || fid[1] == me) && (i == 0 || fid[-int64_t(P.W)] == me) &&
      (i + 1 == P.H || fid[P.W] == me))
    return;
  AntialiasHit<T> h;
  if (j > 0 && antialias_pair(P, b, i, j - 1, 0, &h)) fn(h);
  if (j + 1 < P.W && antialias_pair(P, b, i, j, 0, &h)) fn(h);
  if (i > 0 && antialias_pair(P, b, i - 1, j, 1, &h)) fn(h);
  if (i + 1 < P.H && antialias_pair(P, b, i, j, 1, &h)) fn(h);
}

// Forward of pixel (i, j) of item b: out[c] = color[c] + the deltas of the pairs whose tgt it is.
// out points at the pixel's C outputs.
template <typename T>
VR_HD void antialias_forward_pixel(const AntialiasProblem<T>& P, int64_t b, int i, int j, T* out) {
  const int64_t item = b * int64_t(P.H) * P.W;
  const int64_t pix = int64_t(i) * P.W + j;
  const T* col = P.color + (item + pix) * P.C;
  for (int c = 0; c < P.C; ++c) out[c] = col[c];
  antialias_pixel_pairs(P, b, i, j, [&](const AntialiasHit<T>& h) {
    if (h.tgt != pix) return;
    const T a = antialias_weight(h);
    const T* cs = P.color + (item + h.src) * P.C;
    for (int c = 0; c < P.C; ++c) out[c] += a * (cs[c] - col[c]);
  });
}

// Colour gradient of pixel (i, j) of item b, gathered from the pairs touching it (no scatter):
// g_color[pix] = g[pix] - sum_{tgt == pix} a g[pix] + sum_{src == pix} a g[tgt]. gout points at the
// pixel's C outputs, grad (B, H, W, C) is the incoming gradient.
template <typename T>
VR_HD void antialias_color_grad_pixel(const AntialiasProblem<T>& P, const T* grad, int64_t b, int i, int j, T* gout) {
  const int64_t item = b * int64_t(P.H) * P.W;
  const int64_t pix = int64_t(i) * P.W + j;
  const T* g = grad + (item + pix) * P.C;
  for (int c = 0; c < P.C; ++c) gout[c] = g[c];
  antialias_pixel_pairs(P, b, i, j, [&](const AntialiasHit<T>& h) {
    const T a = antialias_weight(h);
    if (h.tgt == pix) {
      for (int c = 0; c < P.C; ++c) gout[c] -= a * g[c];
    } else {  // h.src == pix
      const T* gt = grad + (item + h.tgt) * P.C;
      for (int c = 0; c < P.C; ++c) gout[c] += a * gt[c];
    }
  });
}

// d loss / d t of a hit: sum_c grad[tgt][c] (color[s][c] - color[o][c]) (the same for both branches:
// d delta / d t = color[s] - color[o]).
template <typename T>
VR_HD T antialias_grad_t(const AntialiasProblem<T>& P, const T* grad, int64_t b, const AntialiasHit<T>& h) {
  const int64_t item = b * int64_t(P.H) * P.W;
  const T* g = grad + (item + h.tgt) * P.C;
  const T* cs = P.color + (item + h.s) * P.C;
  const T* co = P.color + (item + h.o) * P.C;
  T acc = T(0);
  for (int c = 0; c < P.C; ++c) acc += g[c] * (cs[c] - co[c]);
  return acc;
}

// Chain rule from d loss / d t (gt) to the clip (x, y, w) of the exit edge's vertices: ga for va, gb for
// vb (z has no gradient). With r = (v_s - v_A) / (v_B - v_A), m = (u_B - u_A) / (v_B - v_A) and
// G = gt / (u_o - u_s): d/du_A = G (1 - r), d/du_B = G r, d/dv_A = -G m (1 - r), d/dv_B = -G m r; then
// u = x / w (or y / w) gives d/dx = d/du / w and d/dw = -(d/du u + d/dv v) / w.
template <typename T>
VR_HD void antialias_vertex_grad(const AntialiasProblem<T>& P, int64_t b, const AntialiasHit<T>& h, T gt, T ga[3],
                                 T gb[3]) {
  const T* A = P.verts + (b * P.V + h.va) * 4;
  const T* Bv = P.verts + (b * P.V + h.vb) * 4;
  const T ax = A[0] / A[3], ay = A[1] / A[3];
  const T bx = Bv[0] / Bv[3], by = Bv[1] / Bv[3];
  const int axis = h.axis;
  const T au = axis ? ay : ax, av = axis ? ax : ay;
  const T bu = axis ? by : bx, bv = axis ? bx : by;
  const T dv = bv - av;
  const T r = (h.vs - av) / dv;
  const T m = (bu - au) / dv;
  const T G = gt / (h.uo - h.us);
  const T g_au = G * (T(1) - r), g_bu = G * r;
  const T g_av = -G * m * (T(1) - r), g_bv = -G * m * r;
  const T ga_x = axis ? g_av : g_au, ga_y = axis ? g_au : g_av;
  const T gb_x = axis ? g_bv : g_bu, gb_y = axis ? g_bu : g_bv;
  ga[0] = ga_x / A[3];
  ga[1] = ga_y / A[3];
  ga[2] = -(ga_x * ax + ga_y * ay) / A[3];
  gb[0] = gb_x / Bv[3];
  gb[1] = gb_y / Bv[3];
  gb[2] = -(gb_x * bx + gb_y * by) / Bv[3];
}

}  // namespace voxrender
