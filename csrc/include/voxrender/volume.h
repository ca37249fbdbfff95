// Per-ray math of project_volume, shared by the C++ CPU op and the CUDA kernels.
//
// Torch-free: raw pointers and plain structs only, so csrc/kernels/*.cu compile with nvcc alone.
// Conventions (see voxrender/camera.py and the spec): the volume fills [-1, 1]^3 with grid_sample's
// index order and align_corners=False voxel centres; a camera-frame sample p reads the volume at
// q = R^T p; samples run front (k = 0) to back. Volumes are contiguous (D, H, W) blocks; features are
// C such blocks back to back.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define VR_HD __host__ __device__ __forceinline__
#else
#define VR_HD inline
#endif

namespace voxrender {

enum Mode : int { kAbsorption = 0, kSum = 1, kMax = 2, kEmissionAbsorption = 3 };
enum Projection : int { kOrthographic = 0, kPerspective = 1 };

// Colour channels handled per pass over a ray in emission_absorption: any C works, in ceil(C / 4)
// passes, so there is no channel cap and the per-thread state stays in registers.
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

template <typename T>
struct Ray {
  T ox, oy, oz;  // origin (camera frame)
  T dx, dy, dz;  // direction; sample k sits at origin + t_k * direction
  T delta;       // step length in voxel units
};

template <typename T>
VR_HD T vr_exp(T x) { return exp(x); }
template <>
VR_HD float vr_exp<float>(float x) { return expf(x); }

template <typename T>
VR_HD Ray<T> make_ray(const Camera<T>& cam, int i, int j, int Ho, int Wo) {
  const T u = T(-1) + T(2 * j + 1) / T(Wo);
  const T v = T(-1) + T(2 * i + 1) / T(Ho);
  Ray<T> r;
  if (cam.projection == kOrthographic) {
    r.ox = cam.sx * u; r.oy = cam.sy * v; r.oz = T(0);
    r.dx = T(0); r.dy = T(0); r.dz = T(1);
  } else {
    r.ox = T(0); r.oy = T(0); r.oz = cam.cam_z;
    r.dx = cam.sx * u; r.dy = cam.sy * v; r.dz = T(1);
  }
  r.delta = cam.dt * cam.step_scale * sqrt(r.dx * r.dx + r.dy * r.dy + r.dz * r.dz);
  return r;
}

// Camera-frame point p and volume-frame point q = R^T p of sample k (R row-major 3x3).
template <typename T>
VR_HD void sample_point(const Ray<T>& r, const Camera<T>& cam, const T* R, int k, T p[3], T q[3]) {
  const T t = cam.t0 + (T(k) + T(0.5)) * cam.dt;
  p[0] = r.ox + t * r.dx;
  p[1] = r.oy + t * r.dy;
  p[2] = r.oz + t * r.dz;
  for (int a = 0; a < 3; ++a) q[a] = R[a] * p[0] + R[3 + a] * p[1] + R[6 + a] * p[2];
}

// Trilinear interpolation at q with zero padding (grid_sample, align_corners=False).
template <typename T>
struct Trilinear {
  int x0, y0, z0;  // lower corner (may lie outside the grid)
  T fx, fy, fz;    // fractional offsets towards the upper corner
  T gx, gy, gz;    // d index / d q per axis
};

template <typename T>
VR_HD Trilinear<T> trilinear_setup(const Grid& g, const T q[3]) {
  Trilinear<T> t;
  // Same unnormalisation as grid_sample: ((q + 1) * size - 1) / 2.
  const T ix = ((q[0] + T(1)) * T(g.W) - T(1)) * T(0.5);
  const T iy = ((q[1] + T(1)) * T(g.H) - T(1)) * T(0.5);
  const T iz = ((q[2] + T(1)) * T(g.D) - T(1)) * T(0.5);
  const T fx0 = floor(ix), fy0 = floor(iy), fz0 = floor(iz);
  // Clamp before the int conversion so far-away points cannot overflow it; they stay out of range.
  const T lo = T(-2), hix = T(g.W + 1), hiy = T(g.H + 1), hiz = T(g.D + 1);
  t.x0 = int(fx0 < lo ? lo : (fx0 > hix ? hix : fx0));
  t.y0 = int(fy0 < lo ? lo : (fy0 > hiy ? hiy : fy0));
  t.z0 = int(fz0 < lo ? lo : (fz0 > hiz ? hiz : fz0));
  t.fx = ix - fx0; t.fy = iy - fy0; t.fz = iz - fz0;
  t.gx = T(0.5) * T(g.W); t.gy = T(0.5) * T(g.H); t.gz = T(0.5) * T(g.D);
  return t;
}

// True when the sample's 2x2x2 cell touches the grid at all (otherwise its value is 0).
template <typename T>
VR_HD bool trilinear_touches(const Grid& g, const Trilinear<T>& t) {
  return t.x0 >= -1 && t.x0 < g.W && t.y0 >= -1 && t.y0 < g.H && t.z0 >= -1 && t.z0 < g.D;
}

// Visits the in-range corners: f(offset, weight, dw/dx, dw/dy, dw/dz) with dw/d(index).
template <typename T, typename F>
VR_HD void for_each_corner(const Grid& g, const Trilinear<T>& t, F&& f) {
  if (!trilinear_touches(g, t)) return;
  for (int c = 0; c < 8; ++c) {
    const int bx = c & 1, by = (c >> 1) & 1, bz = (c >> 2) & 1;
    const int x = t.x0 + bx, y = t.y0 + by, z = t.z0 + bz;
    if (x < 0 || x >= g.W || y < 0 || y >= g.H || z < 0 || z >= g.D) continue;
    const T wx = bx ? t.fx : T(1) - t.fx;
    const T wy = by ? t.fy : T(1) - t.fy;
    const T wz = bz ? t.fz : T(1) - t.fz;
    const T sx = bx ? T(1) : T(-1), sy = by ? T(1) : T(-1), sz = bz ? T(1) : T(-1);
    f((int64_t(z) * g.H + y) * g.W + x, wx * wy * wz, sx * wy * wz, wx * sy * wz, wx * wy * sz);
  }
}

template <typename T>
VR_HD T trilinear_value(const T* vol, const Grid& g, const Trilinear<T>& t) {
  T v = T(0);
  for_each_corner(g, t, [&](int64_t o, T w, T, T, T) { v += w * vol[o]; });
  return v;
}

// Value and its gradient with respect to the volume-frame position q.
template <typename T>
VR_HD T trilinear_value_grad(const T* vol, const Grid& g, const Trilinear<T>& t, T dq[3]) {
  T v = T(0), ax = T(0), ay = T(0), az = T(0);
  for_each_corner(g, t, [&](int64_t o, T w, T wx, T wy, T wz) {
    const T val = vol[o];
    v += w * val; ax += wx * val; ay += wy * val; az += wz * val;
  });
  dq[0] = ax * t.gx; dq[1] = ay * t.gy; dq[2] = az * t.gz;
  return v;
}

// Adds g * weight to each corner through add(pointer, value) (plain += on the CPU, atomics on the GPU).
template <typename T, typename Add>
VR_HD void trilinear_scatter(T* grad_vol, const Grid& g, const Trilinear<T>& t, T gv, Add&& add) {
  if (gv == T(0)) return;
  for_each_corner(g, t, [&](int64_t o, T w, T, T, T) { add(grad_vol + o, gv * w); });
}

// d loss / d R += p (d loss / d q)^T, since q = R^T p.
template <typename T>
VR_HD void accumulate_rotation_grad(T gR[9], const T p[3], const T gq[3]) {
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b) gR[3 * a + b] += p[a] * gq[b];
}

// ---------------------------------------------------------------------------------------------------
// Scalar modes (absorption, sum, max). out: the pixel value; aux: the total sampled density sum_k
// sigma_k (absorption, sum) or the first arg-max sample index k (max), kept for the backward pass.
template <typename T>
VR_HD void ray_forward_scalar(const T* vol, const Grid& g, const T* R, const Camera<T>& cam, int mode,
                              T tau, int K, int i, int j, int Ho, int Wo, T* out, T* aux) {
  const Ray<T> r = make_ray(cam, i, j, Ho, Wo);
  T acc = T(0), best = T(0);
  int best_k = 0;
  for (int k = 0; k < K; ++k) {
    T p[3], q[3];
    sample_point(r, cam, R, k, p, q);
    const T s = trilinear_value(vol, g, trilinear_setup(g, q));
    acc += s;
    if (k == 0 || s > best) { best = s; best_k = k; }  // strict '>' keeps the first arg-max
  }
  if (mode == kMax) {
    *out = best;
    *aux = T(best_k);
  } else {
    const T opt = tau * r.delta * acc;
    *out = mode == kSum ? opt : T(1) - vr_exp(-opt);
    *aux = acc;
  }
}

// Backward of the scalar modes for one pixel with upstream gradient go: scatters into grad_vol and,
// when gR is not null, accumulates the rotation gradient there.
template <typename T, typename Add>
VR_HD void ray_backward_scalar(const T* vol, const Grid& g, const T* R, const Camera<T>& cam, int mode,
                               T tau, int K, int i, int j, int Ho, int Wo, T go, T out, T aux,
                               T* grad_vol, T* gR, Add&& add) {
  if (go == T(0)) return;
  const Ray<T> r = make_ray(cam, i, j, Ho, Wo);
  int k_begin = 0, k_end = K;
  T gs;  // d loss / d sigma_k, the same for every sample that contributes
  if (mode == kMax) {
    k_begin = int(aux);
    k_end = k_begin + 1;
    gs = go;
  } else {
    gs = go * tau * r.delta;
    if (mode == kAbsorption) gs *= (T(1) - out);  // d(1 - e^-x)/dx = e^-x = 1 - I
  }
  for (int k = k_begin; k < k_end; ++k) {
    T p[3], q[3];
    sample_point(r, cam, R, k, p, q);
    const Trilinear<T> t = trilinear_setup(g, q);
    trilinear_scatter(grad_vol, g, t, gs, add);
    if (gR) {
      T dq[3];
      trilinear_value_grad(vol, g, t, dq);
      const T gq[3] = {gs * dq[0], gs * dq[1], gs * dq[2]};
      accumulate_rotation_grad(gR, p, gq);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// emission_absorption, with a zero background (the Python op adds T_K * background). One pass renders
// colour channels [c0, c0 + n), n <= kChannelChunk; with_alpha also writes the opacity 1 - T_K and
// aux = sum_k sigma_k. out points at channel 0 of the pixel; channels are out_stride apart.
template <typename T>
VR_HD void ray_forward_ea(const T* vol, const T* feat, int c0, int n, const Grid& g, const T* R,
                          const Camera<T>& cam, T tau, int K, int i, int j, int Ho, int Wo, bool with_alpha,
                          T* out, int64_t out_stride, int C, T* aux) {
  const Ray<T> r = make_ray(cam, i, j, Ho, Wo);
  const int64_t cs = g.numel();
  const T scale = tau * r.delta;
  T colour[kChannelChunk] = {};
  T acc = T(0);  // sum of sigma in front of the current sample
  for (int k = 0; k < K; ++k) {
    T p[3], q[3];
    sample_point(r, cam, R, k, p, q);
    const Trilinear<T> t = trilinear_setup(g, q);
    if (!trilinear_touches(g, t)) continue;
    const T s = trilinear_value(vol, g, t);
    const T w = (T(1) - vr_exp(-scale * s)) * vr_exp(-scale * acc);  // alpha_k * T_k
    acc += s;
    for (int c = 0; c < n; ++c) colour[c] += w * trilinear_value(feat + (c0 + c) * cs, g, t);
  }
  for (int c = 0; c < n; ++c) out[(c0 + c) * out_stride] = colour[c];
  if (with_alpha) {
    out[C * out_stride] = T(1) - vr_exp(-scale * acc);
    *aux = acc;
  }
}

// Backward of one emission_absorption pass (channels [c0, c0 + n), plus the opacity when with_alpha):
// a single back-to-front scan carrying the colour rendered behind each sample, no division:
//   d colour / d alpha_k = T_k (c_k - C_behind_k),  d opacity / d alpha_k = T_k (1 - A_behind_k),
//   d alpha_k / d sigma_k = tau delta (1 - alpha_k),  d colour / d c_k = alpha_k T_k,
// with T_k = exp(-tau delta (S - sum_{j >= k} sigma_j)) recomputed from the saved total S = aux.
template <typename T, typename Add>
VR_HD void ray_backward_ea(const T* vol, const T* feat, int c0, int n, const Grid& g, const T* R,
                           const Camera<T>& cam, T tau, int K, int i, int j, int Ho, int Wo, bool with_alpha,
                           const T* go, int64_t go_stride, int C, T aux, T* grad_vol, T* grad_feat, T* gR,
                           Add&& add) {
  const Ray<T> r = make_ray(cam, i, j, Ho, Wo);
  const int64_t cs = g.numel();
  const T scale = tau * r.delta;
  T gc[kChannelChunk], behind[kChannelChunk];
  bool any = false;
  for (int c = 0; c < n; ++c) {
    gc[c] = go[(c0 + c) * go_stride];
    behind[c] = T(0);
    any = any || gc[c] != T(0);
  }
  const T ga = with_alpha ? go[C * go_stride] : T(0);
  if (!any && ga == T(0)) return;
  T alpha_behind = T(0), suffix = T(0);
  for (int k = K - 1; k >= 0; --k) {
    T p[3], q[3];
    sample_point(r, cam, R, k, p, q);
    const Trilinear<T> t = trilinear_setup(g, q);
    if (!trilinear_touches(g, t)) continue;
    T dq_s[3] = {T(0), T(0), T(0)}, gq[3] = {T(0), T(0), T(0)};
    const T s = gR ? trilinear_value_grad(vol, g, t, dq_s) : trilinear_value(vol, g, t);
    suffix += s;
    const T before = aux - suffix > T(0) ? aux - suffix : T(0);
    const T trans = vr_exp(-scale * before);  // T_k
    const T keep = vr_exp(-scale * s);        // 1 - alpha_k
    const T alpha = T(1) - keep;
    const T w = alpha * trans;
    T d_alpha = with_alpha ? ga * trans * (T(1) - alpha_behind) : T(0);
    for (int c = 0; c < n; ++c) {
      const T* fc = feat + (c0 + c) * cs;
      T dq_c[3];
      const T col = gR ? trilinear_value_grad(fc, g, t, dq_c) : trilinear_value(fc, g, t);
      d_alpha += gc[c] * trans * (col - behind[c]);
      const T g_col = gc[c] * w;
      trilinear_scatter(grad_feat + (c0 + c) * cs, g, t, g_col, add);
      if (gR) for (int a = 0; a < 3; ++a) gq[a] += g_col * dq_c[a];
      behind[c] = alpha * col + keep * behind[c];
    }
    alpha_behind = alpha + keep * alpha_behind;
    const T d_sigma = d_alpha * scale * keep;
    trilinear_scatter(grad_vol, g, t, d_sigma, add);
    if (gR) {
      for (int a = 0; a < 3; ++a) gq[a] += d_sigma * dq_s[a];
      accumulate_rotation_grad(gR, p, gq);
    }
  }
}

}  // namespace voxrender
