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
// The float operations go through mul_rn/add_rn/sub_rn, which nvcc cannot contract into FMAs either.
//
// Coverage of faces entirely in front of the camera (all w > 0, within the guard band) is decided in
// snapped fixed point with exact int64 edge functions (see the reference's docstring): then the fill rule
// also holds at shared vertices. Faces crossing w = 0 use the float homogeneous edge functions. Depth and
// the depth-range tests always come from the float homogeneous barycentrics.
#pragma once

#include <cmath>
#include <cstdint>

#include "voxrender/hd.h"

namespace voxrender {

// Rounded float operations that no compiler may fuse into an FMA (host files also set fp-contract off).
#if defined(__CUDA_ARCH__)
VR_HD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
VR_HD double mul_rn(double a, double b) { return __dmul_rn(a, b); }
VR_HD float add_rn(float a, float b) { return __fadd_rn(a, b); }
VR_HD double add_rn(double a, double b) { return __dadd_rn(a, b); }
VR_HD float sub_rn(float a, float b) { return __fsub_rn(a, b); }
VR_HD double sub_rn(double a, double b) { return __dsub_rn(a, b); }
#else
template <typename T>
VR_HD T mul_rn(T a, T b) { return a * b; }
template <typename T>
VR_HD T add_rn(T a, T b) { return a + b; }
template <typename T>
VR_HD T sub_rn(T a, T b) { return a - b; }
#endif

// Fixed-point coverage: 8 sub-pixel bits; a vertex farther than +-2^29 sub-pixel units (thousands of
// image widths) sends its face to the float path, so every edge-function term stays below 2^61 in int64.
constexpr int kSubpixelBits = 8;
constexpr double kGuard = double(int64_t(1) << 29);
constexpr int kMaxFixedSize = 1 << 20;  // larger images rasterize every face on the float path

// Sub-pixel screen coordinate of pixel centre j: (2j + 1) * 2^(kSubpixelBits - 1).
VR_HD int64_t pixel_centre_fixed(int j) { return int64_t(2 * j + 1) << (kSubpixelBits - 1); }

// rint((coord / w + 1) * n * 2^(kSubpixelBits - 1)) in float64 (round half to even, as torch.round);
// false when out of the guard band (or NaN).
VR_HD bool snap(double coord, double w, int n, int64_t* out) {
  const double s = (coord / w + 1.0) * double(int64_t(n) << (kSubpixelBits - 1));
  if (!(fabs(s) < kGuard)) return false;
#if defined(__CUDA_ARCH__)
  *out = int64_t(rint(s));
#else
  // Round half to even without a libm call (x86-64's baseline has no SSE4.1 roundsd): for |s| < 2^51,
  // adding and subtracting 1.5 * 2^52 rounds to an integer in the default rounding mode, exactly as rint.
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const double t = s + magic;  // not folded with the subtraction: IEEE arithmetic, no fast-math
  *out = int64_t(t - magic);
#endif
  return true;
}

// floor(a / b) for b > 0.
VR_HD int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// u x v for 3-vectors, each product rounded separately (no FMA; see the note at the top):
// r0 = u1 v2 - u2 v1, r1 = u2 v0 - u0 v2, r2 = u0 v1 - u1 v0.
template <typename T>
VR_HD T diff_of_products(T p, T q, T r, T s) {
  const T pq = mul_rn(p, q);
  const T rs = mul_rn(r, s);
  return sub_rn(pq, rs);
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
  return add_rn(T(-1), q);
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
  bool live;  // may cover pixels: not padding, not degenerate, not culled, bbox not empty
  bool fixed;  // coverage from the exact fixed-point edge functions below (else the float ones above)
  int64_t A[3], B[3], C[3];  // oriented fixed-point edge k: A * PX + B * PY + C >= 0 inside
  bool owner_fixed[3];
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
  const T p0 = mul_rn(e[0][0], h0[0]), p1 = mul_rn(e[0][1], h0[1]), p2 = mul_rn(e[0][2], h0[2]);
  *det = add_rn(add_rn(p0, p1), p2);
}

// A clip vertex snapped to the fixed-point screen grid: (x, y) in sub-pixel units; ok is false when w <= 0,
// the vertex lies beyond the guard band or the image is too large, and then every face using it takes the
// float path. Snapping depends on the vertex alone, so a caller drawing a mesh may snap each vertex once
// and pass the results to setup_face (the CPU op does: a grid mesh shares each vertex among six faces,
// and the divisions of the snap were most of the per-face cost).
struct SnappedVertex {
  static constexpr int32_t kNone = INT32_MIN;  // did not snap (|x|, |y| < 2^29 otherwise: int32 holds them)
  int32_t x, y;
  VR_HD bool ok() const { return x != kNone; }
};

template <typename T>
VR_HD SnappedVertex snap_vertex(const T* v, int H, int W) {
  int64_t x, y;
  if (H > kMaxFixedSize || W > kMaxFixedSize || !(v[3] > T(0)) || !snap(double(v[0]), double(v[3]), W, &x) ||
      !snap(double(v[1]), double(v[3]), H, &y))
    return SnappedVertex{SnappedVertex::kNone, SnappedVertex::kNone};
  return SnappedVertex{int32_t(x), int32_t(y)};
}

// Exact pixel box of snapped X, Y: pixel j is in it when its centre (2j + 1) 2^(bits - 1) lies in
// [min X, max X] (rows likewise), clipped to the image. False when it holds no pixel centre.
VR_HD bool fixed_box(const int64_t* X, const int64_t* Y, int H, int W, int* row0, int* row1, int* col0, int* col1) {
  const int64_t half = int64_t(1) << (kSubpixelBits - 1), one = int64_t(1) << kSubpixelBits;
  const int64_t xlo = X[0] < X[1] ? (X[0] < X[2] ? X[0] : X[2]) : (X[1] < X[2] ? X[1] : X[2]);
  const int64_t xhi = X[0] > X[1] ? (X[0] > X[2] ? X[0] : X[2]) : (X[1] > X[2] ? X[1] : X[2]);
  const int64_t ylo = Y[0] < Y[1] ? (Y[0] < Y[2] ? Y[0] : Y[2]) : (Y[1] < Y[2] ? Y[1] : Y[2]);
  const int64_t yhi = Y[0] > Y[1] ? (Y[0] > Y[2] ? Y[0] : Y[2]) : (Y[1] > Y[2] ? Y[1] : Y[2]);
  int64_t c0 = -floor_div(-(xlo - half), one), c1 = floor_div(xhi - half, one);  // ceil, floor
  int64_t r0 = -floor_div(-(ylo - half), one), r1 = floor_div(yhi - half, one);
  c0 = c0 < 0 ? 0 : c0, r0 = r0 < 0 ? 0 : r0;
  c1 = c1 > W - 1 ? W - 1 : c1, r1 = r1 > H - 1 ? H - 1 : r1;
  *row0 = int(r0), *row1 = int(r1), *col0 = int(c0), *col1 = int(c1);
  return c0 <= c1 && r0 <= r1;
}

// Exact doubled signed area of snapped X, Y (< 0: front-facing in the y-down screen).
VR_HD int64_t fixed_area(const int64_t* X, const int64_t* Y) {
  return (X[1] - X[0]) * (Y[2] - Y[0]) - (X[2] - X[0]) * (Y[1] - Y[0]);
}

// Edge k (from vertex k + 1 to k + 2) oriented by the area's sign s: A * PX + B * PY + C >= 0 inside, and
// whether the face owns the edge under the top-left rule.
VR_HD void fixed_edge(const int64_t* X, const int64_t* Y, int k, int64_t s, int64_t* A, int64_t* B, int64_t* C,
                      bool* owner) {
  const int a = (k + 1) % 3, b = (k + 2) % 3;
  const int64_t dx = X[b] - X[a], dy = Y[b] - Y[a];
  *A = -s * dy;
  *B = s * dx;
  *C = s * (dy * X[a] - dx * Y[a]);
  *owner = *A > 0 || (*A == 0 && *B > 0);
}

// The fixed-point coverage rule at sub-pixel point (PX, PY) for edge (A, B, C, owner).
VR_HD bool fixed_inside(int64_t A, int64_t B, int64_t C, bool owner, int64_t PX, int64_t PY) {
  const int64_t e = A * PX + B * PY + C;
  return (e > 0) | ((e == 0) & owner);  // bitwise: the outcome is a coin toss for small faces
}

// Fixed-point part of the setup from the snapped vertices: the exact pixel bounding box (empty: the face
// covers no pixel centre, and nothing else is computed), the exact signed area and the oriented edge
// functions. Returns false (float path) when a vertex did not snap.
template <typename T>
VR_HD bool setup_fixed(const SnappedVertex& s0, const SnappedVertex& s1, const SnappedVertex& s2, int H, int W,
                       FaceSetup<T>* f, int64_t* area) {
  if (!(s0.ok() && s1.ok() && s2.ok())) return false;
  const int64_t X[3] = {s0.x, s1.x, s2.x}, Y[3] = {s0.y, s1.y, s2.y};
  if (!fixed_box(X, Y, H, W, &f->row0, &f->row1, &f->col0, &f->col1)) {
    f->row0 = 1, f->row1 = 0, f->col0 = 1, f->col1 = 0;
    *area = 0;
    return true;
  }
  *area = fixed_area(X, Y);
  const int64_t s = *area < 0 ? -1 : 1;
  for (int k = 0; k < 3; ++k) fixed_edge(X, Y, k, s, &f->A[k], &f->B[k], &f->C[k], &f->owner_fixed[k]);
  return true;
}

// Binning test of a face from its snapped vertices alone: -1 when a vertex did not snap (the float path:
// the caller sets the face up with setup_face), 0 when it covers no pixel centre (degenerate, culled,
// no pixel centre in its exact box, or a one-pixel box whose centre is outside), 1 when it may cover one
// (then [row0, row1] are its box's rows), 2 when its box is the single pixel (row0, col0) and it covers
// that pixel's centre. Cheaper than setup_face: a mesh finer than the pixels has mostly faces with a
// one-pixel box or none.
VR_HD int fixed_face_live(const SnappedVertex& s0, const SnappedVertex& s1, const SnappedVertex& s2, int H, int W,
                          bool cull_backfaces, int* row0, int* row1, int* col0) {
  if (!(s0.ok() && s1.ok() && s2.ok())) return -1;
  const int64_t X[3] = {s0.x, s1.x, s2.x}, Y[3] = {s0.y, s1.y, s2.y};
  int col1;
  if (!fixed_box(X, Y, H, W, row0, row1, col0, &col1)) return 0;
  const int64_t area = fixed_area(X, Y);
  if (area == 0 || (cull_backfaces && area > 0)) return 0;
  if (*row0 != *row1 || *col0 != col1) return 1;
  const int64_t s = area < 0 ? -1 : 1, PX = pixel_centre_fixed(*col0), PY = pixel_centre_fixed(*row0);
  bool inside = true;
  for (int k = 0; k < 3; ++k) {
    int64_t A, B, C;
    bool owner;
    fixed_edge(X, Y, k, s, &A, &B, &C, &owner);
    inside &= fixed_inside(A, B, C, owner, PX, PY);
  }
  return inside ? 2 : 0;
}

// The float part of the setup: inward-oriented homogeneous edge coefficients, det, the vertices' z and w.
template <typename T>
VR_HD void setup_float(const T* v0, const T* v1, const T* v2, FaceSetup<T>* f) {
  T e[3][3];
  edge_coefficients(v0, v1, v2, e, &f->det);
  const T s = f->det < T(0) ? T(-1) : T(1);  // orient the edges inwards
  for (int k = 0; k < 3; ++k) {
    f->a[k] = s * e[k][0];
    f->b[k] = s * e[k][1];
    f->c[k] = s * e[k][2];
    f->owner[k] = f->a[k] > T(0) || (f->a[k] == T(0) && f->b[k] > T(0));
  }
  f->z[0] = v0[2], f->z[1] = v1[2], f->z[2] = v2[2];
  f->w[0] = v0[3], f->w[1] = v1[3], f->w[2] = v2[3];
}

// How much of a face's setup a caller needs (setup_face).
enum class Setup {
  kFixed,  // fixed-point faces: the exact part only, not the float part (the caller runs setup_float
           // itself once a pixel centre is covered: a lazy setup)
  kFull,   // everything
};

// Sets up face (v0, v1, v2) for an H x W image. valid: false for padding rows. level: how much of a
// fixed-point face to set up (faces on the float path are always set up in full).
// snapped: the three vertices' snap_vertex results if the caller has them (else they are computed here).
//
// Faces with all w > 0 (within the guard band) take the fixed-point path: exact edge functions and an
// exact pixel bounding box; the snapped area decides degeneracy (== 0) and facing (< 0 front).
// Otherwise the float homogeneous path: det decides degeneracy and facing, and the box is the whole image
// (the visible part of a face crossing w = 0 can reach any border; such faces are few in practice).
template <typename T>
VR_HD FaceSetup<T> setup_face(const T* v0, const T* v1, const T* v2, bool valid, bool cull_backfaces, int H, int W,
                              Setup level = Setup::kFull, const SnappedVertex* snapped = nullptr) {
  FaceSetup<T> f;
  int64_t area = 0;
  if (snapped != nullptr) {
    f.fixed = valid && setup_fixed(snapped[0], snapped[1], snapped[2], H, W, &f, &area);
  } else {
    f.fixed = valid && setup_fixed(snap_vertex(v0, H, W), snap_vertex(v1, H, W), snap_vertex(v2, H, W), H, W, &f,
                                   &area);
  }
  if (f.fixed) {
    // Dead when it covers no pixel centre (degenerate, culled, or its exact box holds none): decided
    // before the float setup, which only live faces need.
    f.live = area != 0 && (!cull_backfaces || area < 0) && f.row0 <= f.row1;
    if (!f.live) f.row0 = 1, f.row1 = 0;
    if (!f.live || level != Setup::kFull) return f;
    setup_float(v0, v1, v2, &f);
    return f;
  }
  setup_float(v0, v1, v2, &f);
  f.row0 = 0, f.row1 = H - 1, f.col0 = 0, f.col1 = W - 1;
  f.live = valid && f.det != T(0) && (!cull_backfaces || f.det < T(0));
  if (!f.live) f.row0 = 1, f.row1 = 0;
  return f;
}

// Exact fixed-point coverage of pixel (i, j) by fixed-point face f (edges set up): E_k > 0, or E_k == 0
// and the face owns edge k (the top-left rule), for all three edges.
template <typename T>
VR_HD bool cover_fixed(const FaceSetup<T>& f, int i, int j) {
  const int64_t PX = pixel_centre_fixed(j), PY = pixel_centre_fixed(i);
  bool inside = true;
  for (int k = 0; k < 3; ++k) inside &= fixed_inside(f.A[k], f.B[k], f.C[k], f.owner_fixed[k], PX, PY);
  return inside;
}

// The float part of cover_pixel at the pixel centre (px, py) in NDC (the fixed-point test, for fixed faces,
// is the caller's): the float edge test (float-path faces only), then E_0 + E_1 + E_2 > 0, the
// interpolated w > 0 and -1 <= z/w <= 1; *depth = z/w.
template <typename T>
VR_HD bool cover_float(const FaceSetup<T>& f, T px, T py, T* depth) {
  T ev[3];
  bool inside = true;
  for (int k = 0; k < 3; ++k) {
    const T ax = mul_rn(f.a[k], px);
    const T by = mul_rn(f.b[k], py);
    ev[k] = add_rn(add_rn(ax, by), f.c[k]);
    inside = inside && (ev[k] > T(0) || (ev[k] == T(0) && f.owner[k]));
  }
  if (!f.fixed && !inside) return false;
  const T total = add_rn(add_rn(ev[0], ev[1]), ev[2]);
  if (!(total > T(0))) return false;
  const T b0 = ev[0] / total, b1 = ev[1] / total, b2 = ev[2] / total;
  const T z = add_rn(add_rn(mul_rn(b0, f.z[0]), mul_rn(b1, f.z[1])), mul_rn(b2, f.z[2]));
  const T w = add_rn(add_rn(mul_rn(b0, f.w[0]), mul_rn(b1, f.w[1])), mul_rn(b2, f.w[2]));
  if (!(w > T(0))) return false;
  const T d = z / w;
  if (!(d >= T(-1) && d <= T(1))) return false;
  *depth = d;
  return true;
}

// Coverage and depth of face f (set up in full) at pixel (i, j) with centre (px, py) in NDC, as the
// reference's _coverage_chunk: inside by the fixed-point edge functions (fixed faces) or the float ones,
// then the float tests of cover_float; *depth = z/w.
template <typename T>
VR_HD bool cover_pixel(const FaceSetup<T>& f, int i, int j, T px, T py, T* depth) {
  if (f.fixed && !cover_fixed(f, i, j)) return false;
  return cover_float(f, px, py, depth);
}

}  // namespace voxrender
