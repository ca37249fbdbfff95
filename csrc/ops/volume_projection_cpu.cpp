// CPU kernels of project_volume: at::parallel_for over image rows (forward) and batch items
// (backward, so each thread owns its item's gradient volume and no atomics are needed: deterministic).
// Fused: no per-sample tensor is stored; the backward recomputes the samples.
// Math: csrc/include/voxrender/volume.h, run on 8 pixels of a row at a time (its "lanes").
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "volume_projection.h"

// The row and item drivers are compiled twice, for baseline x86-64 and for AVX2 + FMA (8-wide gathers
// and arithmetic across the lanes; tuned for Haswell because GCC's generic tuning declines gathers), and
// the AVX2 copy runs when the CPU has it. The shared math is always-inlined into each copy.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VR_HAVE_AVX2_COPY 1
#define VR_AVX2 __attribute__((target("avx2,fma,tune=haswell")))
#else
#define VR_HAVE_AVX2_COPY 0
#define VR_AVX2
#endif

namespace voxrender {
namespace {

// Pixels of a row processed together by the shared math: enough for the compiler to vectorise the
// per-sample arithmetic across them.
constexpr int kLanes = 8;

struct PlainAdd {
  template <typename T>
  inline __attribute__((always_inline)) void operator()(T* p, T v) const { *p += v; }
};

template <typename T>
struct Problem {
  const T* dens;
  const T* feat;  // null unless emission_absorption
  const T* rot;
  int64_t C;
  Grid g;
  int Ho, Wo, K, mode;
  T tau;
  Camera<T> cam;
  int64_t oc;  // output channels
};

template <typename T>
struct Grads {
  const T* go;
  const T* out;
  const T* aux;
  T* gd;
  T* gf;
  T* gr;  // (B, 9)
  bool rotation_grad;
};

template <typename T>
inline __attribute__((always_inline)) void forward_rows(const Problem<T>& p, T* out, T* aux, int64_t begin,
                                                        int64_t end) {
  const int64_t plane = int64_t(p.Ho) * p.Wo, vol = p.g.numel();
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / p.Ho;
    const int i = int(row % p.Ho);
    const T* vb = p.dens + b * vol;
    const T* Rb = p.rot + 9 * b;
    for (int j0 = 0; j0 < p.Wo; j0 += kLanes) {
      const int n = std::min(kLanes, p.Wo - j0);
      const int64_t pix = int64_t(i) * p.Wo + j0;
      T* op = out + b * p.oc * plane + pix;
      T* xp = aux + b * plane + pix;
      if (p.mode != kEmissionAbsorption) {
        rays_forward_scalar<T, kLanes>(vb, p.g, Rb, p.cam, p.mode, p.tau, p.K, i, j0, n, p.Ho, p.Wo, op, xp);
        continue;
      }
      const T* fb = p.feat + b * p.C * vol;
      for (int64_t c0 = 0; c0 < std::max<int64_t>(p.C, 1); c0 += kChannelChunk) {
        const int nc = int(std::max<int64_t>(0, std::min<int64_t>(kChannelChunk, p.C - c0)));
        rays_forward_ea<T, kLanes>(vb, fb, int(c0), nc, p.g, Rb, p.cam, p.tau, p.K, i, j0, n, p.Ho, p.Wo, c0 == 0, op,
                                   plane, int(p.C), xp);
      }
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void backward_items(const Problem<T>& p, const Grads<T>& q, int64_t begin,
                                                          int64_t end) {
  const int64_t plane = int64_t(p.Ho) * p.Wo, vol = p.g.numel();
  for (int64_t b = begin; b < end; ++b) {
    const T* vb = p.dens + b * vol;
    const T* Rb = p.rot + 9 * b;
    T* gdb = q.gd + b * vol;
    T gR[9] = {};
    T* gRp = q.rotation_grad ? gR : nullptr;
    for (int i = 0; i < p.Ho; ++i) {
      for (int j0 = 0; j0 < p.Wo; j0 += kLanes) {
        const int n = std::min(kLanes, p.Wo - j0);
        const int64_t pix = int64_t(i) * p.Wo + j0;
        const T* gop = q.go + b * p.oc * plane + pix;
        const T* xp = q.aux + b * plane + pix;
        if (p.mode != kEmissionAbsorption) {
          rays_backward_scalar<T, kLanes>(vb, p.g, Rb, p.cam, p.mode, p.tau, p.K, i, j0, n, p.Ho, p.Wo, gop,
                                          q.out + b * p.oc * plane + pix, xp, gdb, gRp, PlainAdd{});
          continue;
        }
        const T* fb = p.feat + b * p.C * vol;
        T* gfb = q.gf + b * p.C * vol;
        for (int64_t c0 = 0; c0 < std::max<int64_t>(p.C, 1); c0 += kChannelChunk) {
          const int nc = int(std::max<int64_t>(0, std::min<int64_t>(kChannelChunk, p.C - c0)));
          rays_backward_ea<T, kLanes>(vb, fb, int(c0), nc, p.g, Rb, p.cam, p.tau, p.K, i, j0, n, p.Ho, p.Wo, c0 == 0,
                                      gop, plane, int(p.C), xp, gdb, gfb, gRp, PlainAdd{});
        }
      }
    }
    for (int e = 0; e < 9; ++e) q.gr[9 * b + e] = gR[e];
  }
}

// Entry points per dtype and instruction set.
#define VR_DRIVERS(T, suffix, attr)                                                                   \
  attr void forward_rows_##suffix(const Problem<T>& p, T* out, T* aux, int64_t b, int64_t e) {        \
    forward_rows(p, out, aux, b, e);                                                                  \
  }                                                                                                   \
  attr void backward_items_##suffix(const Problem<T>& p, const Grads<T>& q, int64_t b, int64_t e) {   \
    backward_items(p, q, b, e);                                                                       \
  }
VR_DRIVERS(float, f32, )
VR_DRIVERS(double, f64, )
#if VR_HAVE_AVX2_COPY
VR_DRIVERS(float, f32_avx2, VR_AVX2)
VR_DRIVERS(double, f64_avx2, VR_AVX2)
#endif
#undef VR_DRIVERS

}  // namespace

// Whether the AVX2 copy runs: the CPU has AVX2 and FMA, and VOXRENDER_CPU_BASELINE=1 (which the tests
// use to exercise the portable copy too) is not set. Decided once per process.
bool cpu_uses_avx2() {
#if VR_HAVE_AVX2_COPY
  static const bool use = [] {
    const char* env = std::getenv("VOXRENDER_CPU_BASELINE");
    const bool baseline = env != nullptr && std::string(env) == "1";
    return !baseline && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
#else
  return false;
#endif
}

namespace {

#if VR_HAVE_AVX2_COPY
#define VR_PICK(name, ...) (cpu_uses_avx2() ? name##_avx2(__VA_ARGS__) : name(__VA_ARGS__))
#else
#define VR_PICK(name, ...) name(__VA_ARGS__)
#endif
void run_forward(const Problem<float>& p, float* out, float* aux, int64_t b, int64_t e) {
  VR_PICK(forward_rows_f32, p, out, aux, b, e);
}
void run_forward(const Problem<double>& p, double* out, double* aux, int64_t b, int64_t e) {
  VR_PICK(forward_rows_f64, p, out, aux, b, e);
}
void run_backward(const Problem<float>& p, const Grads<float>& q, int64_t b, int64_t e) {
  VR_PICK(backward_items_f32, p, q, b, e);
}
void run_backward(const Problem<double>& p, const Grads<double>& q, int64_t b, int64_t e) {
  VR_PICK(backward_items_f64, p, q, b, e);
}
#undef VR_PICK

template <typename T>
Problem<T> make_problem(const at::Tensor& density, const at::Tensor& features, const at::Tensor& rotation,
                        const ProjectArgs& a, int64_t oc) {
  return Problem<T>{density.data_ptr<T>(),
                    features.defined() ? features.data_ptr<T>() : nullptr,
                    rotation.data_ptr<T>(),
                    features.defined() ? features.size(1) : 0,
                    Grid{int(density.size(1)), int(density.size(2)), int(density.size(3))},
                    int(a.height),
                    int(a.width),
                    int(a.n_samples),
                    int(a.mode),
                    T(a.tau),
                    a.camera_as<T>(),
                    oc};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> project_volume_forward_cpu(
    const at::Tensor& density_in, const std::optional<at::Tensor>& features_in, const at::Tensor& rotation_in,
    int64_t height, int64_t width, int64_t n_samples, int64_t mode, double tau, int64_t projection,
    c10::ArrayRef<double> camera) {
  const ProjectArgs a{height, width, n_samples, mode, tau, projection, camera};
  check_project_inputs(density_in, features_in, rotation_in, a);
  const at::Tensor density = density_in.contiguous();
  const at::Tensor rotation = rotation_in.contiguous();
  const at::Tensor features = features_in ? features_in->contiguous() : at::Tensor();
  const int64_t B = density.size(0), oc = output_channels(density, features_in, mode);
  at::Tensor out = at::empty({B, oc, height, width}, density.options());
  at::Tensor aux = at::empty({B, height, width}, density.options());
  if (B == 0) return {out, aux};
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "project_volume_forward_cpu", [&] {
    const Problem<scalar_t> p = make_problem<scalar_t>(density, features, rotation, a, oc);
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* x = aux.data_ptr<scalar_t>();
    // Grain: a few rows per task keeps scheduling overhead small next to K samples per pixel.
    at::parallel_for(0, B * height, 4, [&](int64_t begin, int64_t end) { run_forward(p, o, x, begin, end); });
  });
  return {out, aux};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> project_volume_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& out_in, const at::Tensor& aux_in, const at::Tensor& density_in,
    const std::optional<at::Tensor>& features_in, const at::Tensor& rotation_in, int64_t height, int64_t width,
    int64_t n_samples, int64_t mode, double tau, int64_t projection, c10::ArrayRef<double> camera,
    bool rotation_grad) {
  const ProjectArgs a{height, width, n_samples, mode, tau, projection, camera};
  check_project_inputs(density_in, features_in, rotation_in, a);
  check_backward_inputs(grad_out_in, out_in, aux_in, density_in, features_in, a);
  const at::Tensor density = density_in.contiguous();
  const at::Tensor rotation = rotation_in.contiguous();
  const at::Tensor features = features_in ? features_in->contiguous() : at::Tensor();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor out = out_in.contiguous();
  const at::Tensor aux = aux_in.contiguous();
  const int64_t B = density.size(0), oc = output_channels(density, features_in, mode);
  at::Tensor grad_density = at::zeros_like(density);
  at::Tensor grad_features = features.defined() ? at::zeros_like(features) : at::empty({0}, density.options());
  at::Tensor grad_rotation = at::zeros({B, 3, 3}, density.options());
  if (B == 0) return {grad_density, grad_features, grad_rotation};
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "project_volume_backward_cpu", [&] {
    const Problem<scalar_t> p = make_problem<scalar_t>(density, features, rotation, a, oc);
    const Grads<scalar_t> q{grad_out.data_ptr<scalar_t>(),
                            out.data_ptr<scalar_t>(),
                            aux.data_ptr<scalar_t>(),
                            grad_density.data_ptr<scalar_t>(),
                            features.defined() ? grad_features.data_ptr<scalar_t>() : nullptr,
                            grad_rotation.data_ptr<scalar_t>(),
                            rotation_grad};
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) { run_backward(p, q, begin, end); });
  });
  return {grad_density, grad_features, grad_rotation};
}

TORCH_LIBRARY_IMPL(voxrender, CPU, m) {
  m.impl("project_volume_forward", &project_volume_forward_cpu);
  m.impl("project_volume_backward", &project_volume_backward_cpu);
}

}  // namespace voxrender
