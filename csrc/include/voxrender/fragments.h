// Per-pixel math of the fused fragments ops (perspective-correct barycentrics and depth of the visible face,
// and their gradients with respect to the clip-space vertices), shared by the C++ CPU op
// (csrc/ops/fragments_cpu.cpp) and the CUDA kernels (csrc/kernels/fragments.cu).
//
// Torch-free: plain pointers, strides and scalars, templated on the float type T (float or double) and the
// index type I (int32_t or int64_t) of faces.
//
// Forward, for a pixel q of batch item b showing face f = face_id[q] with vertices v_k = faces[b, f, k],
// homogeneous 2D vertices h_k = (x_k, y_k, w_k) and the pixel centre p = (px, py, 1) (raster.h's
// pixel_centre), as the oracle voxrender/reference/rasterize.py's fragments_from_face_ids, operation by
// operation (so the values agree with it to float rounding; on the CPU bit for bit where torch's own kernels
// round the same way):
//   e_0 = h_1 x h_2, e_1 = h_2 x h_0, e_2 = h_0 x h_1          (raster.h's cross3: each product rounded)
//   E_k = (e_k0 px + e_k1 py) + e_k2                           (= p . e_k)
//   T   = (E_0 + E_1) + E_2,   bary_k = E_k / T
//   zs  = (bary_0 z_0 + bary_1 z_1) + bary_2 z_2,   ws = the same with w,   depth = zs / ws
// Background (face_id -1, or a face row holding -1: a padding row): bary 0, depth 1 (the far plane).
//
// Backward, with upstream gradients g_b (3) and g_d of bary and depth (either may be absent: zero). With
// s = sum_k g_b_k bary_k, the gradient with respect to the unnormalised edge values E_m is
//   dL/dE_m = [(g_b_m - s) + g_d (z_m - depth w_m) / ws] / T
// (from bary_m = E_m / T, and depth = sum E z / sum E w = zs / ws, whose derivative with respect to E_m is
// (z_m - depth w_m) / sum_k E_k w_k and sum_k E_k w_k = T ws). Directly, through zs and ws:
//   dL/dz_m = g_d bary_m / ws,          dL/dw_m += -g_d depth bary_m / ws.
// Through E_k = p . (h_{k+1} x h_{k+2}) = h_{k+1} . (h_{k+2} x p) = h_{k+2} . (p x h_{k+1}):
//   dE_k/dh_{k+1} = h_{k+2} x p,   dE_k/dh_{k+2} = p x h_{k+1} = -(h_{k+1} x p).
// Vertex m appears in E_{m-1} (as h_{k+1}) and E_{m+1} (as h_{k+2}); with c_m = h_m x p:
//   dL/dh_m = dL/dE_{m-1} c_{m+1} - dL/dE_{m+1} c_{m-1}          (indices mod 3)
// and (dL/dx_m, dL/dy_m, dL/dw_m) = dL/dh_m (+ the direct w term above). The per-pixel, per-corner gradient
// is added to grad_verts[b, v_m]; the summation over pixels is the caller's (CPU: fixed chunks reduced in a
// fixed order; CUDA: atomics).
//
// Values: a face id outside [-1, F) or a vertex index outside [-1, V) is reported through *status (the CPU
// op raises) and read as background, so the CUDA kernels, which do not check values on the host, never read
// out of bounds.
#pragma once

#include <cstdint>

#include "voxrender/raster.h"  // VR_HD, mul_rn, add_rn, sub_rn, cross3, pixel_centre

namespace voxrender {

enum FragmentsStatus : int { kFragmentsOk = 0, kFragmentsBadFaceId = 1, kFragmentsBadVertexIndex = 2 };

// One call. verts (B, V, 4) and faces (B, F, 3) with element strides (expand()ed batch dims are fine:
// stride 0); face_id (B, H, W) contiguous; P = H * W pixels per item.
template <typename T, typename I>
struct FragmentsProblem {
  int64_t B, V, F, H, W, P;
  const T* verts;
  int64_t vert_stride[3];
  const I* faces;
  int64_t face_stride[3];
  const int32_t* face_id;
};

// The face a pixel shows: its batch item and the three vertex indices.
struct FragmentCorners {
  int64_t b;
  int64_t v[3];
};

// Pixel q (0 <= q < B * P): true when it shows a face (then *c is set), false for background.
template <typename T, typename I>
VR_HD bool fragment_corners(const FragmentsProblem<T, I>& p, int64_t q, FragmentCorners* c, int* status) {
  const int64_t fid = p.face_id[q];
  if (fid < 0 || fid >= p.F) {
    if (fid < -1 || fid >= p.F) *status = kFragmentsBadFaceId;
    return false;
  }
  c->b = q / p.P;
  const I* row = p.faces + c->b * p.face_stride[0] + fid * p.face_stride[1];
  bool ok = true;
  for (int k = 0; k < 3; ++k) {
    const int64_t v = static_cast<int64_t>(row[k * p.face_stride[2]]);
    if (v < 0 || v >= p.V) {
      if (v < -1 || v >= p.V) *status = kFragmentsBadVertexIndex;
      ok = false;
    }
    c->v[k] = v;
  }
  return ok;
}

// Everything the forward computes at a pixel; the backward reuses it.
template <typename T>
struct FragmentGeometry {
  T h[3][3];  // (x, y, w) of each corner
  T z[3];
  T ev[3];  // E_k
  T total;  // T = E_0 + E_1 + E_2
  T bary[3];
  T ws;  // sum_k bary_k w_k (the oracle's w)
  T depth;
};

// The forward at pixel (i, j) (centre (px, py) in NDC) of a pixel that shows the face with corners c.
template <typename T, typename I>
VR_HD void fragment_geometry(const FragmentsProblem<T, I>& p, const FragmentCorners& c, T px, T py,
                             FragmentGeometry<T>* g) {
  for (int k = 0; k < 3; ++k) {
    const T* v = p.verts + c.b * p.vert_stride[0] + c.v[k] * p.vert_stride[1];
    g->h[k][0] = v[0];
    g->h[k][1] = v[p.vert_stride[2]];
    g->z[k] = v[2 * p.vert_stride[2]];
    g->h[k][2] = v[3 * p.vert_stride[2]];
  }
  T e[3][3];
  cross3(g->h[1], g->h[2], e[0]);
  cross3(g->h[2], g->h[0], e[1]);
  cross3(g->h[0], g->h[1], e[2]);
  for (int k = 0; k < 3; ++k) g->ev[k] = add_rn(add_rn(mul_rn(e[k][0], px), mul_rn(e[k][1], py)), e[k][2]);
  g->total = add_rn(add_rn(g->ev[0], g->ev[1]), g->ev[2]);
  for (int k = 0; k < 3; ++k) g->bary[k] = g->ev[k] / g->total;
  const T zs = add_rn(add_rn(mul_rn(g->bary[0], g->z[0]), mul_rn(g->bary[1], g->z[1])), mul_rn(g->bary[2], g->z[2]));
  g->ws = add_rn(add_rn(mul_rn(g->bary[0], g->h[0][2]), mul_rn(g->bary[1], g->h[1][2])),
                 mul_rn(g->bary[2], g->h[2][2]));
  g->depth = zs / g->ws;
}

// The backward at a pixel with geometry g and pixel centre (px, py): out[m][0..3] = dL/d(x, y, z, w) of
// corner m, from the upstream gradients gb (3 values; null: zero) and gd (of depth).
template <typename T>
VR_HD void fragment_vertex_grads(const FragmentGeometry<T>& g, T px, T py, const T* gb, T gd, T out[3][4]) {
  T gbk[3] = {T(0), T(0), T(0)};
  if (gb) gbk[0] = gb[0], gbk[1] = gb[1], gbk[2] = gb[2];
  const T s = add_rn(add_rn(mul_rn(gbk[0], g.bary[0]), mul_rn(gbk[1], g.bary[1])), mul_rn(gbk[2], g.bary[2]));
  const T inv_t = T(1) / g.total;
  const T gd_ws = gd / g.ws;  // g_d / ws
  T ge[3];                    // dL/dE_m
  for (int m = 0; m < 3; ++m) {
    const T dz = sub_rn(g.z[m], mul_rn(g.depth, g.h[m][2]));  // z_m - depth w_m
    ge[m] = mul_rn(add_rn(sub_rn(gbk[m], s), mul_rn(gd_ws, dz)), inv_t);
  }
  const T pv[3] = {px, py, T(1)};
  T cr[3][3];  // c_m = h_m x p
  for (int m = 0; m < 3; ++m) cross3(g.h[m], pv, cr[m]);
  for (int m = 0; m < 3; ++m) {
    const int prev = (m + 2) % 3, next = (m + 1) % 3;
    T gh[3];
    for (int d = 0; d < 3; ++d) gh[d] = sub_rn(mul_rn(ge[prev], cr[next][d]), mul_rn(ge[next], cr[prev][d]));
    const T gz = mul_rn(gd_ws, g.bary[m]);  // dL/dz_m = g_d bary_m / ws
    out[m][0] = gh[0];
    out[m][1] = gh[1];
    out[m][2] = gz;
    out[m][3] = sub_rn(gh[2], mul_rn(gz, g.depth));  // through h_m, and -g_d depth bary_m / ws through ws
  }
}

}  // namespace voxrender
