// Per-ray math of project_volume, shared by the C++ CPU op and the CUDA kernels.
//
// Torch-free: raw pointers and plain structs only, so csrc/kernels/*.cu compile with nvcc alone.
// Conventions (see voxrender/camera.py and the spec): the volume fills [-1, 1]^3 with grid_sample's
// index order and align_corners=False voxel centres; a camera-frame sample p reads the volume at
// q = R^T p; samples run front (k = 0) to back. Volumes are contiguous (D, H, W) blocks; features are
// C such blocks back to back.
//
// Lanes. Every function works on L neighbouring pixels of one image row (j0 .. j0 + L - 1) in lock-step:
// the CPU op uses L = 8 so the compiler vectorises the per-sample arithmetic across pixels (the loops
// over lanes are branch-free), and the CUDA kernels use L = 1 (one thread per pixel, where the lane
// loops vanish). Lanes past the end of the row (l >= n) compute a copy of the last pixel and are never
// written, and their upstream gradient is taken as zero.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "voxrender/hd.h"

namespace voxrender {

enum Mode : int { kAbsorption = 0, kSum = 1, kMax = 2, kEmissionAbsorption = 3 };
enum Projection : int { kOrthographic = 0, kPerspective = 1 };

// Colour channels handled per pass over a ray in emission_absorption: any C works, in ceil(C / 4)
// passes, so there is no channel cap and the per-ray state stays small.
constexpr int kChannelChunk = 4;

template <typename T>
struct Camera {
  int projection;
  T sx, sy, cam_z, t0, dt, step_scale;  // see voxrender/camera.py
};

struct Grid {
  int D, H, W;
  VR_HD int64_t numel() const { return int64_t(D) * H * W; }
};

// exp. On the GPU the hardware-backed expf / exp. On the host, float uses a branch-free Cody-Waite +
// polynomial version (within 2 ulp of expf on the range that matters here, x <= 0) that the compiler
// vectorises across lanes; libm's expf is an opaque call that would serialise the emission-absorption
// loops. double keeps libm (it is the gradcheck path, not the fast one).
template <typename T>
VR_HD T vr_exp(T x) { return exp(x); }
template <>
VR_HD float vr_exp<float>(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  x = x < -87.0f ? -87.0f : x;  // keeps 2^n a normal float; exp(-87) ~ 1.6e-38
  x = x > 88.0f ? 88.0f : x;
  const float h = x * 1.44269504f + 0.5f;
  int n = int(h);
  n -= int(float(n) > h);  // n = round(x / ln 2), via floor without a libm call
  const float r = (x - float(n) * 0.693145752f) - float(n) * 1.42860677e-6f;  // ln 2 split: n * hi is exact
  // exp(r) on |r| <= ln(2) / 2: degree-6 Taylor polynomial, relative error < 2e-8.
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (n + 127) << 23;  // 2^n
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
#endif
}

// ---------------------------------------------------------------------------------------------------
// Rays. Pixel (i, j): u = -1 + (2j + 1) / Wo, v = -1 + (2i + 1) / Ho; orthographic origin (sx u, sy v, 0)
// and direction (0, 0, 1); perspective origin (0, 0, cam_z) and direction (sx u, sy v, 1). Sample k sits
// at t_k = t0 + (k + 1/2) dt along origin + t direction; delta = dt |direction| step_scale.
template <typename T, int L>
struct Rays {
  T o[3][L], d[3][L];    // camera frame (the rotation gradient needs p = o + t d)
  T qo[3][L], qd[3][L];  // volume frame: R^T o and R^T d, so q_k = qo + t_k qd
  T delta[L];
};

template <typename T, int L>
VR_HD void make_rays(const Camera<T>& cam, const T* R, int i, int j0, int Ho, int Wo, Rays<T, L>& r) {
  const T v = T(-1) + T(2 * i + 1) / T(Ho);
  for (int l = 0; l < L; ++l) {
    const int j = j0 + l < Wo ? j0 + l : Wo - 1;
    const T u = T(-1) + T(2 * j + 1) / T(Wo);
    const bool ortho = cam.projection == kOrthographic;
    r.o[0][l] = ortho ? cam.sx * u : T(0);
    r.o[1][l] = ortho ? cam.sy * v : T(0);
    r.o[2][l] = ortho ? T(0) : cam.cam_z;
    r.d[0][l] = ortho ? T(0) : cam.sx * u;
    r.d[1][l] = ortho ? T(0) : cam.sy * v;
    r.d[2][l] = T(1);
    r.delta[l] = cam.dt * cam.step_scale * sqrt(r.d[0][l] * r.d[0][l] + r.d[1][l] * r.d[1][l] + T(1));
    for (int a = 0; a < 3; ++a) {
      r.qo[a][l] = R[a] * r.o[0][l] + R[3 + a] * r.o[1][l] + R[6 + a] * r.o[2][l];
      r.qd[a][l] = R[a] * r.d[0][l] + R[3 + a] * r.d[1][l] + R[6 + a] * r.d[2][l];
    }
  }
}

template <typename T>
VR_HD T sample_t(const Camera<T>& cam, int k) { return cam.t0 + (T(k) + T(0.5)) * cam.dt; }

// Samples [*k_begin, *k_end) that can touch the grid for any of the lanes: the rest read zero (their
// trilinear cell lies outside), so sum, absorption and emission_absorption may skip them. Conservative
// by a sample on each side; the per-sample masks stay exact.
template <typename T, int L>
VR_HD void sample_range(const Rays<T, L>& r, const Camera<T>& cam, const Grid& g, int K, int* k_begin, int* k_end) {
  const int sizes[3] = {g.W, g.H, g.D};
  T t_lo = T(1e30), t_hi = T(-1e30);
  for (int l = 0; l < L; ++l) {
    T lo = T(-1e30), hi = T(1e30);
    for (int a = 0; a < 3; ++a) {
      const T m = T(1) + T(2) / T(sizes[a]);  // the cube grown by two voxels' worth of margin
      const T qo = r.qo[a][l], qd = r.qd[a][l];
      if (qd == T(0)) {
        if (qo < -m || qo > m) { lo = T(1); hi = T(-1); }
      } else {
        T t1 = (-m - qo) / qd, t2 = (m - qo) / qd;
        if (t1 > t2) { const T s = t1; t1 = t2; t2 = s; }
        lo = t1 > lo ? t1 : lo;
        hi = t2 < hi ? t2 : hi;
      }
    }
    if (lo <= hi) {
      t_lo = lo < t_lo ? lo : t_lo;
      t_hi = hi > t_hi ? hi : t_hi;
    }
  }
  if (!(t_lo <= t_hi)) { *k_begin = 0; *k_end = 0; return; }  // every lane misses the grid
  // (A NaN pose fails every comparison above and keeps the full range, so NaN reaches the output.)
  // k from t: t = t0 + (k + 1/2) dt.
  const T kb = (t_lo - cam.t0) / cam.dt - T(1.5), ke = (t_hi - cam.t0) / cam.dt + T(1.5);
  *k_begin = kb <= T(0) ? 0 : (kb >= T(K) ? K : int(kb));
  *k_end = ke <= T(0) ? 0 : (ke >= T(K) ? K : int(ke) + 1);
}

// ---------------------------------------------------------------------------------------------------
// Trilinear cells, zero padding (grid_sample, align_corners=False). Corner c = bx + 2 by + 4 bz.
template <typename T, int L>
struct Cells {
  int x0[L], y0[L], z0[L];  // lower corner (may lie outside the grid)
  int off[8][L];            // corner offsets in the grid, -1 where the corner lies outside
  T fx[L], fy[L], fz[L];    // fractional offsets towards the upper corner
  T p[3][L];                // the camera-frame sample point (filled when the rotation gradient needs it)
  Grid g;
};

// Offset of corner n (= bx + 2 by + 4 bz) of lane l, or -1 when that corner lies outside the grid.
template <typename T, int L>
VR_HD int corner_offset(const Cells<T, L>& c, int n, int l) {
  const int x = c.x0[l] + (n & 1), y = c.y0[l] + ((n >> 1) & 1), z = c.z0[l] + (n >> 2);
  // '&' rather than '&&': no branches, so the CPU compiler can vectorise the lane loops.
  const bool in = (unsigned(x) < unsigned(c.g.W)) & (unsigned(y) < unsigned(c.g.H)) & (unsigned(z) < unsigned(c.g.D));
  return in ? (z * c.g.H + y) * c.g.W + x : -1;
}

// floor(x) clamped to [-2, size + 1] (outside that the cell misses the grid whatever the exact value).
// An int conversion, because std::floor is a libm call on baseline x86-64 (no SSE4.1).
template <typename T>
VR_HD int floor_clamped(T x, int size) {
  const T hi = T(size + 1);
  x = x < T(-2) ? T(-2) : x;
  x = x > hi ? hi : x;
  const int i = int(x);
  return i - int(T(i) > x);
}

template <typename T, int L>
VR_HD void cells_at(const Rays<T, L>& r, const Camera<T>& cam, const Grid& g, int k, bool with_p, Cells<T, L>& c) {
  const T t = sample_t(cam, k);
  c.g = g;
  // Separate branch-free loops over the lanes, so that the CPU compiler vectorises each of them.
  for (int l = 0; l < L; ++l) {
    // Same unnormalisation as grid_sample: ((q + 1) * size - 1) / 2.
    const T ix = ((r.qo[0][l] + t * r.qd[0][l] + T(1)) * T(g.W) - T(1)) * T(0.5);
    const T iy = ((r.qo[1][l] + t * r.qd[1][l] + T(1)) * T(g.H) - T(1)) * T(0.5);
    const T iz = ((r.qo[2][l] + t * r.qd[2][l] + T(1)) * T(g.D) - T(1)) * T(0.5);
    c.x0[l] = floor_clamped(ix, g.W);
    c.y0[l] = floor_clamped(iy, g.H);
    c.z0[l] = floor_clamped(iz, g.D);
    c.fx[l] = ix - T(c.x0[l]);
    c.fy[l] = iy - T(c.y0[l]);
    c.fz[l] = iz - T(c.z0[l]);
  }
  for (int n = 0; n < 8; ++n)
    for (int l = 0; l < L; ++l) c.off[n][l] = corner_offset(c, n, l);
  if (with_p)
    for (int a = 0; a < 3; ++a)
      for (int l = 0; l < L; ++l) c.p[a][l] = r.o[a][l] + t * r.d[a][l];
}

// The 8 corner values of a volume (0 outside the grid).
template <typename T, int L>
VR_HD void gather(const T* vol, const Cells<T, L>& c, T v[8][L]) {
  for (int n = 0; n < 8; ++n)
    for (int l = 0; l < L; ++l) {
      const int o = c.off[n][l];
      const T x = vol[o < 0 ? 0 : o];  // offset 0 is always readable; masked below
      v[n][l] = o < 0 ? T(0) : x;
    }
}

template <typename T, int L>
VR_HD void trilerp(const Cells<T, L>& c, const T v[8][L], T out[L]) {
  for (int l = 0; l < L; ++l) {
    const T fx = c.fx[l], fy = c.fy[l], fz = c.fz[l];
    const T x00 = v[0][l] + fx * (v[1][l] - v[0][l]), x10 = v[2][l] + fx * (v[3][l] - v[2][l]);
    const T x01 = v[4][l] + fx * (v[5][l] - v[4][l]), x11 = v[6][l] + fx * (v[7][l] - v[6][l]);
    const T y0 = x00 + fy * (x10 - x00), y1 = x01 + fy * (x11 - x01);
    out[l] = y0 + fz * (y1 - y0);
  }
}

// Value and its gradient with respect to the volume-frame position q (d index / d q = size / 2).
template <typename T, int L>
VR_HD void trilerp_grad(const Cells<T, L>& c, const Grid& g, const T v[8][L], T out[L], T dq[3][L]) {
  for (int l = 0; l < L; ++l) {
    const T fx = c.fx[l], fy = c.fy[l], fz = c.fz[l];
    const T dx00 = v[1][l] - v[0][l], dx10 = v[3][l] - v[2][l], dx01 = v[5][l] - v[4][l], dx11 = v[7][l] - v[6][l];
    const T x00 = v[0][l] + fx * dx00, x10 = v[2][l] + fx * dx10, x01 = v[4][l] + fx * dx01, x11 = v[6][l] + fx * dx11;
    const T y0 = x00 + fy * (x10 - x00), y1 = x01 + fy * (x11 - x01);
    out[l] = y0 + fz * (y1 - y0);
    const T ddx0 = dx00 + fy * (dx10 - dx00), ddx1 = dx01 + fy * (dx11 - dx01);
    const T ddy0 = x10 - x00, ddy1 = x11 - x01;
    dq[0][l] = (ddx0 + fz * (ddx1 - ddx0)) * (T(0.5) * T(g.W));
    dq[1][l] = (ddy0 + fz * (ddy1 - ddy0)) * (T(0.5) * T(g.H));
    dq[2][l] = (y1 - y0) * (T(0.5) * T(g.D));
  }
}

// Adds gv * corner weight into grad_vol through add(pointer, value): plain += on the CPU (one thread
// owns a batch item's gradient), atomics on the GPU.
template <typename T, int L, typename Add>
VR_HD void scatter(T* grad_vol, const Cells<T, L>& c, const T gv[L], Add&& add) {
  T w[8][L];  // the corner weights first, in a lane loop the CPU compiler vectorises (written out: the
             // per-corner selects of a loop over n compiled to scalar code with branches) ...
  for (int l = 0; l < L; ++l) {
    const T x0 = gv[l] * (T(1) - c.fx[l]), x1 = gv[l] * c.fx[l];
    const T y0 = T(1) - c.fy[l], y1 = c.fy[l], z0 = T(1) - c.fz[l], z1 = c.fz[l];
    w[0][l] = x0 * y0 * z0; w[1][l] = x1 * y0 * z0; w[2][l] = x0 * y1 * z0; w[3][l] = x1 * y1 * z0;
    w[4][l] = x0 * y0 * z1; w[5][l] = x1 * y0 * z1; w[6][l] = x0 * y1 * z1; w[7][l] = x1 * y1 * z1;
  }
  for (int l = 0; l < L; ++l) {  // ... then the read-modify-writes, which cannot be
    if (gv[l] == T(0)) continue;
    for (int n = 0; n < 8; ++n)
      if (c.off[n][l] >= 0) add(grad_vol + c.off[n][l], w[n][l]);
  }
}

// Rotation gradient, per lane: d loss / d R += p (d loss / d q)^T, since q = R^T p. Kept per lane over a
// ray's samples and summed over the lanes once at the end (add_rotation_grad).
template <typename T, int L>
struct RotationGrad {
  T m[9][L];
  VR_HD void zero() {
    for (int e = 0; e < 9; ++e)
      for (int l = 0; l < L; ++l) m[e][l] = T(0);
  }
  VR_HD void accumulate(const Cells<T, L>& c, const T gq[3][L]) {
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b)
        for (int l = 0; l < L; ++l) m[3 * a + b][l] += c.p[a][l] * gq[b][l];
  }
  VR_HD void add_to(T gR[9]) const {
    for (int e = 0; e < 9; ++e) {
      T s = T(0);
      for (int l = 0; l < L; ++l) s += m[e][l];
      gR[e] += s;
    }
  }
};

// ---------------------------------------------------------------------------------------------------
// Scalar modes (absorption, sum, max). out, aux: pixel (i, j0) of their planes, lanes consecutive.
// aux keeps, for the backward: sum_k sigma_k (absorption, sum) or the first arg-max sample k (max).
template <typename T, int L>
VR_HD void rays_forward_scalar(const T* vol, const Grid& g, const T* R, const Camera<T>& cam, int mode, T tau,
                               int K, int i, int j0, int n, int Ho, int Wo, T* out, T* aux) {
  Rays<T, L> r;
  make_rays(cam, R, i, j0, Ho, Wo, r);
  T acc[L], best[L], best_k[L];
  for (int l = 0; l < L; ++l) { acc[l] = T(0); best[l] = T(0); best_k[l] = T(0); }
  int k_begin = 0, k_end = K;
  if (mode != kMax) sample_range(r, cam, g, K, &k_begin, &k_end);  // max needs the zeros outside too
  for (int k = k_begin; k < k_end; ++k) {
    Cells<T, L> c;
    cells_at(r, cam, g, k, false, c);
    T v[8][L], s[L];
    gather(vol, c, v);
    trilerp(c, v, s);
    for (int l = 0; l < L; ++l) {
      acc[l] += s[l];
      const bool better = k == 0 || s[l] > best[l];  // strict '>' keeps the first arg-max
      best[l] = better ? s[l] : best[l];
      best_k[l] = better ? T(k) : best_k[l];
    }
  }
  for (int l = 0; l < n; ++l) {
    if (mode == kMax) {
      out[l] = best[l];
      aux[l] = best_k[l];
    } else {
      const T opt = tau * r.delta[l] * acc[l];
      out[l] = mode == kSum ? opt : T(1) - vr_exp(-opt);
      aux[l] = acc[l];
    }
  }
}

// Backward of the scalar modes: go, out, aux as above; scatters into grad_vol and, when gR is not null,
// accumulates the rotation gradient there.
template <typename T, int L, typename Add>
VR_HD void rays_backward_scalar(const T* vol, const Grid& g, const T* R, const Camera<T>& cam, int mode, T tau,
                                int K, int i, int j0, int n, int Ho, int Wo, const T* go, const T* out,
                                const T* aux, T* grad_vol, T* gR, Add&& add) {
  Rays<T, L> r;
  make_rays(cam, R, i, j0, Ho, Wo, r);
  T gs[L];  // d loss / d sigma_k, the same for every contributing sample of a ray
  bool any = false;
  for (int l = 0; l < L; ++l) {
    const T gl = l < n ? go[l] : T(0);
    T s = gl;
    if (mode != kMax) {
      s = gl * tau * r.delta[l];
      if (mode == kAbsorption && l < n) s *= (T(1) - out[l]);  // d(1 - e^-x)/dx = e^-x = 1 - I
    }
    gs[l] = s;
    any = any || s != T(0);
  }
  if (!any) return;
  RotationGrad<T, L> rg;
  rg.zero();
  int k_begin = 0, k_end = K;
  if (mode == kMax) {
    // One sample per ray, at a different k per lane: visit each lane's arg-max with the others zeroed.
    for (int l = 0; l < n; ++l) {
      if (gs[l] == T(0)) continue;
      const int k = int(aux[l]);
      T one[L];
      for (int m = 0; m < L; ++m) one[m] = m == l ? gs[l] : T(0);
      Cells<T, L> c;
      cells_at(r, cam, g, k, gR != nullptr, c);
      scatter(grad_vol, c, one, add);
      if (gR) {
        T v[8][L], s[L], dq[3][L], gq[3][L];
        gather(vol, c, v);
        trilerp_grad(c, g, v, s, dq);
        for (int a = 0; a < 3; ++a)
          for (int m = 0; m < L; ++m) gq[a][m] = one[m] * dq[a][m];
        rg.accumulate(c, gq);
      }
    }
    if (gR) rg.add_to(gR);
    return;
  }
  sample_range(r, cam, g, K, &k_begin, &k_end);
  for (int k = k_begin; k < k_end; ++k) {
    Cells<T, L> c;
    cells_at(r, cam, g, k, gR != nullptr, c);
    scatter(grad_vol, c, gs, add);
    if (gR) {
      T v[8][L], s[L], dq[3][L], gq[3][L];
      gather(vol, c, v);
      trilerp_grad(c, g, v, s, dq);
      for (int a = 0; a < 3; ++a)
        for (int l = 0; l < L; ++l) gq[a][l] = gs[l] * dq[a][l];
      rg.accumulate(c, gq);
    }
  }
  if (gR) rg.add_to(gR);
}

// ---------------------------------------------------------------------------------------------------
// emission_absorption with a zero background (the Python op adds T_K * background). One pass renders
// colour channels [c0, c0 + nc), nc <= kChannelChunk; with_alpha also writes the opacity 1 - T_K (channel
// C) and aux = sum_k sigma_k. out: channel 0 of pixel (i, j0); channels are out_stride apart.
template <typename T, int L>
VR_HD void rays_forward_ea(const T* vol, const T* feat, int c0, int nc, const Grid& g, const T* R,
                           const Camera<T>& cam, T tau, int K, int i, int j0, int n, int Ho, int Wo,
                           bool with_alpha, T* out, int64_t out_stride, int C, T* aux) {
  Rays<T, L> r;
  make_rays(cam, R, i, j0, Ho, Wo, r);
  const int64_t cs = g.numel();
  T colour[kChannelChunk][L], acc[L], trans[L], scale[L];
  for (int l = 0; l < L; ++l) {
    acc[l] = T(0);
    trans[l] = T(1);  // T_k, carried as a product of the per-step transmittances
    scale[l] = tau * r.delta[l];
    for (int ch = 0; ch < kChannelChunk; ++ch) colour[ch][l] = T(0);
  }
  int k_begin, k_end;
  sample_range(r, cam, g, K, &k_begin, &k_end);
  for (int k = k_begin; k < k_end; ++k) {
    Cells<T, L> c;
    cells_at(r, cam, g, k, false, c);
    T v[8][L], s[L], w[L];
    gather(vol, c, v);
    trilerp(c, v, s);
    for (int l = 0; l < L; ++l) {
      const T keep = vr_exp(-scale[l] * s[l]);  // 1 - alpha_k
      w[l] = (T(1) - keep) * trans[l];          // alpha_k T_k
      trans[l] *= keep;
      acc[l] += s[l];
    }
    for (int ch = 0; ch < kChannelChunk; ++ch) {
      if (ch >= nc) break;
      T col[L];
      gather(feat + (c0 + ch) * cs, c, v);
      trilerp(c, v, col);
      for (int l = 0; l < L; ++l) colour[ch][l] += w[l] * col[l];
    }
  }
  for (int l = 0; l < n; ++l) {
    for (int ch = 0; ch < nc; ++ch) out[(c0 + ch) * out_stride + l] = colour[ch][l];
    if (with_alpha) {
      out[C * out_stride + l] = T(1) - vr_exp(-scale[l] * acc[l]);
      aux[l] = acc[l];
    }
  }
}

// Backward of one emission_absorption pass (channels [c0, c0 + nc), plus the opacity when with_alpha):
// a single back-to-front scan carrying the colour rendered behind each sample, no division:
//   d colour / d alpha_k = T_k (c_k - C_behind_k),  d opacity / d alpha_k = T_k (1 - A_behind_k),
//   d alpha_k / d sigma_k = tau delta (1 - alpha_k),  d colour / d c_k = alpha_k T_k,
// with T_k = exp(-tau delta (S - sum_{j >= k} sigma_j)) recomputed from the saved total S = aux.
// go: channel 0 of pixel (i, j0) of the upstream gradient, channels go_stride apart.
template <typename T, int L, typename Add>
VR_HD void rays_backward_ea(const T* vol, const T* feat, int c0, int nc, const Grid& g, const T* R,
                            const Camera<T>& cam, T tau, int K, int i, int j0, int n, int Ho, int Wo,
                            bool with_alpha, const T* go, int64_t go_stride, int C, const T* aux, T* grad_vol,
                            T* grad_feat, T* gR, Add&& add) {
  Rays<T, L> r;
  make_rays(cam, R, i, j0, Ho, Wo, r);
  const int64_t cs = g.numel();
  T gc[kChannelChunk][L], behind[kChannelChunk][L], ga[L], alpha_behind[L], suffix[L], total[L], scale[L];
  bool any = false;
  for (int l = 0; l < L; ++l) {
    for (int ch = 0; ch < kChannelChunk; ++ch) {
      gc[ch][l] = ch < nc && l < n ? go[(c0 + ch) * go_stride + l] : T(0);
      behind[ch][l] = T(0);
      any = any || gc[ch][l] != T(0);
    }
    ga[l] = with_alpha && l < n ? go[C * go_stride + l] : T(0);
    any = any || ga[l] != T(0);
    alpha_behind[l] = T(0);
    suffix[l] = T(0);
    total[l] = l < n ? aux[l] : T(0);
    scale[l] = tau * r.delta[l];
  }
  if (!any) return;
  int k_begin, k_end;
  sample_range(r, cam, g, K, &k_begin, &k_end);
  const bool with_p = gR != nullptr;
  RotationGrad<T, L> rg;
  rg.zero();
  for (int k = k_end - 1; k >= k_begin; --k) {
    Cells<T, L> c;
    cells_at(r, cam, g, k, with_p, c);
    T v[8][L], s[L], dq_s[3][L], gq[3][L], trans[L], keep[L], w[L], d_alpha[L];
    gather(vol, c, v);
    if (with_p) trilerp_grad(c, g, v, s, dq_s); else trilerp(c, v, s);
    for (int l = 0; l < L; ++l) {
      suffix[l] += s[l];
      const T before = total[l] - suffix[l] > T(0) ? total[l] - suffix[l] : T(0);
      trans[l] = vr_exp(-scale[l] * before);  // T_k
      keep[l] = vr_exp(-scale[l] * s[l]);     // 1 - alpha_k
      w[l] = (T(1) - keep[l]) * trans[l];
      d_alpha[l] = ga[l] * trans[l] * (T(1) - alpha_behind[l]);
      alpha_behind[l] = (T(1) - keep[l]) + keep[l] * alpha_behind[l];
      for (int a = 0; a < 3; ++a) gq[a][l] = T(0);
    }
    for (int ch = 0; ch < kChannelChunk; ++ch) {
      if (ch >= nc) break;
      T col[L], dq_c[3][L], g_col[L];
      gather(feat + (c0 + ch) * cs, c, v);
      if (with_p) trilerp_grad(c, g, v, col, dq_c); else trilerp(c, v, col);
      for (int l = 0; l < L; ++l) {
        g_col[l] = gc[ch][l] * w[l];
        d_alpha[l] += gc[ch][l] * trans[l] * (col[l] - behind[ch][l]);
        behind[ch][l] = (T(1) - keep[l]) * col[l] + keep[l] * behind[ch][l];
        if (with_p)
          for (int a = 0; a < 3; ++a) gq[a][l] += g_col[l] * dq_c[a][l];
      }
      scatter(grad_feat + (c0 + ch) * cs, c, g_col, add);
    }
    T d_sigma[L];
    for (int l = 0; l < L; ++l) d_sigma[l] = d_alpha[l] * scale[l] * keep[l];
    scatter(grad_vol, c, d_sigma, add);
    if (with_p) {
      for (int a = 0; a < 3; ++a)
        for (int l = 0; l < L; ++l) gq[a][l] += d_sigma[l] * dq_s[a][l];
      rg.accumulate(c, gq);
    }
  }
  if (gR) rg.add_to(gR);
}

// ---------------------------------------------------------------------------------------------------
// One pixel (L = 1): the entry points of the CUDA kernels (one thread per pixel).
template <typename T>
VR_HD void ray_forward_scalar(const T* vol, const Grid& g, const T* R, const Camera<T>& cam, int mode, T tau, int K,
                              int i, int j, int Ho, int Wo, T* out, T* aux) {
  rays_forward_scalar<T, 1>(vol, g, R, cam, mode, tau, K, i, j, 1, Ho, Wo, out, aux);
}

template <typename T, typename Add>
VR_HD void ray_backward_scalar(const T* vol, const Grid& g, const T* R, const Camera<T>& cam, int mode, T tau, int K,
                               int i, int j, int Ho, int Wo, T go, T out, T aux, T* grad_vol, T* gR, Add&& add) {
  rays_backward_scalar<T, 1>(vol, g, R, cam, mode, tau, K, i, j, 1, Ho, Wo, &go, &out, &aux, grad_vol, gR, add);
}

template <typename T>
VR_HD void ray_forward_ea(const T* vol, const T* feat, int c0, int nc, const Grid& g, const T* R, const Camera<T>& cam,
                          T tau, int K, int i, int j, int Ho, int Wo, bool with_alpha, T* out, int64_t out_stride,
                          int C, T* aux) {
  rays_forward_ea<T, 1>(vol, feat, c0, nc, g, R, cam, tau, K, i, j, 1, Ho, Wo, with_alpha, out, out_stride, C, aux);
}

template <typename T, typename Add>
VR_HD void ray_backward_ea(const T* vol, const T* feat, int c0, int nc, const Grid& g, const T* R, const Camera<T>& cam,
                           T tau, int K, int i, int j, int Ho, int Wo, bool with_alpha, const T* go, int64_t go_stride,
                           int C, T aux, T* grad_vol, T* grad_feat, T* gR, Add&& add) {
  rays_backward_ea<T, 1>(vol, feat, c0, nc, g, R, cam, tau, K, i, j, 1, Ho, Wo, with_alpha, go, go_stride, C, &aux,
                         grad_vol, grad_feat, gR, add);
}

}  // namespace voxrender
