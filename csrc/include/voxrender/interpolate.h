// Per-pixel math of voxrender.interpolate, shared by the C++ CPU op (csrc/ops/interpolate_cpu.cpp) and the
// CUDA kernels (csrc/kernels/interpolate.cu).
//
// Torch-free: plain pointers, strides and scalars. For a pixel q of batch item b showing face f = face_id[q]
// with vertices v_k = faces[b, f, k] and barycentrics bary[q, k]:
//   out[q, c]          = (bary_0 attr[b, v_0, c] + bary_1 attr[b, v_1, c]) + bary_2 attr[b, v_2, c]
//   grad_bary[q, k]    = sum_c grad_out[q, c] attr[b, v_k, c]           (c in increasing order)
//   grad_attr[b, v, c] = sum over the pixels q and corners k with v_k = v of bary[q, k] grad_out[q, c]
// and 0 / no contribution in the background (face_id -1). Products and sums go through mul_rn/add_rn, so
// the CPU and CUDA forwards (and grad_bary) agree bit for bit; grad_attr's summation order is the pixel
// order on the CPU (deterministic) and the atomics' order on CUDA.
//
// Values: a pixel whose face row holds -1 (a padding row) is background. A face id outside [-1, F) or a
// vertex index outside [-1, V) is reported through *status (the CPU op raises) and read as background, so
// the CUDA kernels, which do not check values on the host, never read out of bounds.
#pragma once

#include <cstdint>

#include "voxrender/raster.h"  // VR_HD, mul_rn, add_rn

namespace voxrender {

enum InterpolateStatus : int { kInterpolateOk = 0, kBadFaceId = 1, kBadVertexIndex = 2 };

// One call. attr (B, V, C) and faces (B, F, 3) with element strides (expand()ed batch dims are fine: stride
// 0); face_id (B, P) with P = H * W pixels per item, bary (B, P, 3), grad_out and out (B, P, C): contiguous.
template <typename T, typename I>
struct InterpolateProblem {
  int64_t B, V, F, C, P;
  const T* attr;
  int64_t attr_stride[3];
  const int32_t* face_id;
  const T* bary;
  const I* faces;
  int64_t face_stride[3];
};

// The face a pixel shows: its batch item and the three vertex indices.
struct InterpolateCorners {
  int64_t b;
  int64_t v[3];
};

// Pixel q (0 <= q < B * P): true when it shows a face (then *corners is set), false for background.
template <typename T, typename I>
VR_HD bool interpolate_pixel(const InterpolateProblem<T, I>& p, int64_t q, InterpolateCorners* corners, int* status) {
  const int64_t fid = p.face_id[q];
  if (fid < 0 || fid >= p.F) {
    if (fid < -1 || fid >= p.F) *status = kBadFaceId;
    return false;
  }
  corners->b = q / p.P;
  const I* row = p.faces + corners->b * p.face_stride[0] + fid * p.face_stride[1];
  bool ok = true;
  for (int k = 0; k < 3; ++k) {
    const int64_t v = static_cast<int64_t>(row[k * p.face_stride[2]]);
    if (v < 0 || v >= p.V) {
      if (v < -1 || v >= p.V) *status = kBadVertexIndex;
      ok = false;
    }
    corners->v[k] = v;
  }
  return ok;
}

template <typename T, typename I>
VR_HD T interpolate_attr(const InterpolateProblem<T, I>& p, const InterpolateCorners& f, int k, int64_t c) {
  return p.attr[f.b * p.attr_stride[0] + f.v[k] * p.attr_stride[1] + c * p.attr_stride[2]];
}

// out[q, c] for a pixel that shows face f.
template <typename T, typename I>
VR_HD T interpolate_value(const InterpolateProblem<T, I>& p, int64_t q, const InterpolateCorners& f, int64_t c) {
  const T* bq = p.bary + 3 * q;
  const T t0 = mul_rn(bq[0], interpolate_attr(p, f, 0, c));
  const T t1 = mul_rn(bq[1], interpolate_attr(p, f, 1, c));
  const T t2 = mul_rn(bq[2], interpolate_attr(p, f, 2, c));
  return add_rn(add_rn(t0, t1), t2);
}

// grad_bary[q, k] for a pixel that shows face f; g = grad_out + q * C.
template <typename T, typename I>
VR_HD T interpolate_grad_bary(const InterpolateProblem<T, I>& p, const T* g, const InterpolateCorners& f, int k) {
  T s = T(0);
  for (int64_t c = 0; c < p.C; ++c) s = add_rn(s, mul_rn(g[c], interpolate_attr(p, f, k, c)));
  return s;
}

// The term bary[q, k] grad_out[q, c] that corner k of pixel q adds to grad_attr[b, v_k, c].
template <typename T>
VR_HD T interpolate_grad_attr_term(T bary_k, T g_c) {
  return mul_rn(bary_k, g_c);
}

}  // namespace voxrender
