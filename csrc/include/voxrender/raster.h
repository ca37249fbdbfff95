// Per-face and per-pixel math of the triangle rasterizer, shared by the C++ CPU op (and later the CUDA
// kernels).
//
// Torch-free: plain structs and scalars only. Conventions: voxrender/reference/rasterize.py (the oracle)
// and shared/specs/rasterization.md. Homogeneous rasterization (Olano & Greer 1997): with the 2D
// homogeneous vertices h_k = (x_k, y_k, w_k) the edge coefficients are e_0 = h_1 x h_2, e_1 = h_2 x h_0,
// e_2 = h_0 x h_1 and det = h_0 . e_0; edge k at pixel centre p = (px, py, 1) is E_k = e_k . p.
//
// Exactness. The op must give EXACTLY the reference's face_id, so every expression below mirrors the
// reference's torch arithmetic operation by operation, in the input type T (float or double):
//   * pixel centres px = -1 + (2j + 1) / W (one division, one addition);
//   * the edge function (a * px + b * py) + c, each product and sum rounded separately (no FMA: the
//     including file must compile these functions with fp-contract off);
//   * sums of three terms left to right, ((t0 + t1) + t2), as torch's reductions over 3 elements do;
//   * the cross products with each product rounded on its own, pq - rs (the reference's `cross`): then
//     the two faces sharing an edge compute exact negatives of its edge function, so the fill rule
//     gives every pixel centre on a shared edge to exactly one of them.
#pragma once

#include <cmath>
#include <cstdint>

#ifndef VR_HD
#if defined(__CUDACC__)
#define VR_HD __host__ __device__ __forceinline__
#else
#define VR_HD inline __attribute__((always_inline))
#endif
#endif

namespace voxrender {

// u x v for 3-vectors, each product rounded separately (no FMA; see the note at the top):
// r0 = u1 v2 - u2 v1, r1 = u2 v0 - u0 v2, r2 = u0 v1 - u1 v0.
template <typename T>
VR_HD T diff_of_products(T p, T q, T r, T s) {
  const T pq = p * q;
  const T rs = r * s;
  return pq - rs;
}

template <typename T>
VR_HD void cross3(const T* u, const T* v, T* r) {
  r[0] = diff_of_products(u[1], v[2], u[2], v[1]);
  r[1] = diff_of_products(u[2], v[0], u[0], v[2]);
  r[2] = diff_of_products(u[0], v[1], u[1], v[0]);
}

// NDC coordinate of pixel centre j along an axis of n pixels: -1 + (2j + 1) / n.
template <typename T>
VR_HD T pixel_centre(int j, int n) {
  const T q = T(2 * j + 1) / T(n);
  return T(-1) + q;
}

// A face set up for rasterization: inward-oriented edge coefficients (E_k = (a_k px + b_k py) + c_k,
// all >= 0 inside), the fill-rule ownership of each edge, the vertices' z and w, the raw det, and a
// conservative pixel bounding box [row0, row1] x [col0, col1] (empty when row0 > row1).
template <typename T>
struct FaceSetup {
  T a[3], b[3], c[3];
  T z[3], w[3];
  T det;
  bool owner[3];
  bool live;  // may cover pixels: not padding, det != 0, not culled, bbox not empty
  int row0, row1, col0, col1;
};

// Edge coefficients (e[k][0..2] = a, b, c of edge k, not oriented) and det of the triangle with clip
// vertices v0, v1, v2 (each x, y, z, w), as the reference's edge_coefficients.
template <typename T>
VR_HD void edge_coefficients(const T* v0, const T* v1, const T* v2, T e[3][3], T* det) {
  const T h0[3] = {v0[0], v0[1], v0[3]}, h1[3] = {v1[0], v1[1], v1[3]}, h2[3] = {v2[0], v2[1], v2[3]};
  cross3(h1, h2, e[0]);
  cross3(h2, h0, e[1]);
  cross3(h0, h1, e[2]);
  const T p0 = e[0][0] * h0[0], p1 = e[0][1] * h0[1], p2 = e[0][2] * h0[2];
  *det = (p0 + p1) + p2;
}

// Maps an NDC interval [lo, hi] along an axis of n pixels to the pixel range whose centres may fall in it,
// widened by one pixel on each side (safety margin for the rounding of the edge functions) and clamped to
// [0, n - 1]. Pixel centre j is at NDC -1 + (2j + 1) / n, i.e. j = ((x + 1) n - 1) / 2. Computed in
// double; non-finite bounds give the whole axis.
VR_HD void ndc_to_pixel_range(double lo, double hi, int n, int* first, int* last) {
  if (!(lo == lo) || !(hi == hi) || std::isinf(lo) || std::isinf(hi)) {
    *first = 0;
    *last = n - 1;
    return;
  }
  double f = floor(((lo + 1.0) * n - 1.0) * 0.5) - 1.0;
  double l = ceil(((hi + 1.0) * n - 1.0) * 0.5) + 1.0;
  f = f < 0.0 ? 0.0 : f;
  l = l > double(n - 1) ? double(n - 1) : l;
  if (f > l) {  // misses the image (also when f > n - 1 or l < 0)
    *first = 1;
    *last = 0;
    return;
  }
  *first = int(f);
  *last = int(l);
}

// Sets up face (v0, v1, v2) for an H x W image. valid: false for padding rows.
//
// Bounding box: when all three w > 0 the triangle's visible part lies in the NDC bounding box of its
// projected vertices, converted to pixels with a one-pixel margin. When any w <= 0 the triangle crosses
// (or lies behind) the plane w = 0 and its visible part can reach any image border; the box is then the
// whole image (correct and simple; such faces are few in practice). A near-degenerate sliver could, through
// rounding of nearly parallel edges, cover a pixel more than a pixel outside its vertices' box; such
// coverage is an artefact of rounding and is not reproduced.
template <typename T>
VR_HD FaceSetup<T> setup_face(const T* v0, const T* v1, const T* v2, bool valid, bool cull_backfaces, int H, int W) {
  FaceSetup<T> f;
  T e[3][3];
  edge_coefficients(v0, v1, v2, e, &f.det);
  const T s = f.det < T(0) ? T(-1) : T(1);  // orient the edges inwards
  for (int k = 0; k < 3; ++k) {
    f.a[k] = s * e[k][0];
    f.b[k] = s * e[k][1];
    f.c[k] = s * e[k][2];
    f.owner[k] = f.a[k] > T(0) || (f.a[k] == T(0) && f.b[k] > T(0));
  }
  f.z[0] = v0[2], f.z[1] = v1[2], f.z[2] = v2[2];
  f.w[0] = v0[3], f.w[1] = v1[3], f.w[2] = v2[3];
  f.live = valid && f.det != T(0) && (!cull_backfaces || f.det < T(0));
  f.row0 = 0, f.row1 = H - 1, f.col0 = 0, f.col1 = W - 1;
  if (!f.live) {
    f.row0 = 1, f.row1 = 0;
    return f;
  }
  if (v0[3] > T(0) && v1[3] > T(0) && v2[3] > T(0)) {
    const double x0 = double(v0[0]) / double(v0[3]), x1 = double(v1[0]) / double(v1[3]),
                 x2 = double(v2[0]) / double(v2[3]);
    const double y0 = double(v0[1]) / double(v0[3]), y1 = double(v1[1]) / double(v1[3]),
                 y2 = double(v2[1]) / double(v2[3]);
    const double xlo = fmin(x0, fmin(x1, x2)), xhi = fmax(x0, fmax(x1, x2));
    const double ylo = fmin(y0, fmin(y1, y2)), yhi = fmax(y0, fmax(y1, y2));
    ndc_to_pixel_range(xlo, xhi, W, &f.col0, &f.col1);
    ndc_to_pixel_range(ylo, yhi, H, &f.row0, &f.row1);
    // fmin/fmax drop NaNs; a NaN coordinate anywhere: whole image (the per-pixel tests reject it anyway).
    if (x0 != x0 || x1 != x1 || x2 != x2 || y0 != y0 || y1 != y1 || y2 != y2) {
      f.row0 = 0, f.row1 = H - 1, f.col0 = 0, f.col1 = W - 1;
    }
    if (f.col0 > f.col1) f.row0 = 1, f.row1 = 0;  // empty in x: empty
    if (f.row0 > f.row1) f.live = false;
  }
  return f;
}

// Coverage and depth of face f at the pixel centre (px, py), as the reference's _coverage_chunk:
// true when every E_k > 0 or (E_k == 0 and the face owns edge k), E_0 + E_1 + E_2 > 0, the interpolated
// w > 0 and -1 <= z/w <= 1; *depth = z/w.
template <typename T>
VR_HD bool cover_pixel(const FaceSetup<T>& f, T px, T py, T* depth) {
  T ev[3];
  bool inside = true;
  for (int k = 0; k < 3; ++k) {
    const T ax = f.a[k] * px;
    const T by = f.b[k] * py;
    const T t = ax + by;
    ev[k] = t + f.c[k];
    inside = inside && (ev[k] > T(0) || (ev[k] == T(0) && f.owner[k]));
  }
  if (!inside) return false;
  const T total = (ev[0] + ev[1]) + ev[2];
  if (!(total > T(0))) return false;
  const T b0 = ev[0] / total, b1 = ev[1] / total, b2 = ev[2] / total;
  const T z = (b0 * f.z[0] + b1 * f.z[1]) + b2 * f.z[2];
  const T w = (b0 * f.w[0] + b1 * f.w[1]) + b2 * f.w[2];
  if (!(w > T(0))) return false;
  const T d = z / w;
  if (!(d >= T(-1) && d <= T(1))) return false;
  *depth = d;
  return true;
}

}  // namespace voxrender
