// CPU kernels of project_volume: at::parallel_for over image rows (forward) and batch items
// (backward, so each thread owns its item's gradient volume and no atomics are needed). Fused: no
// per-sample tensor is stored; the backward recomputes the samples. Math: csrc/include/voxrender/volume.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "volume_projection.h"

namespace voxrender {
namespace {

struct PlainAdd {
  template <typename T>
  void operator()(T* p, T v) const { *p += v; }
};

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
  const int64_t B = density.size(0), C = features.defined() ? features.size(1) : 0;
  const Grid g{int(density.size(1)), int(density.size(2)), int(density.size(3))};
  const int Ho = int(height), Wo = int(width), K = int(n_samples);
  at::Tensor out = at::empty({B, output_channels(density, features_in, mode), Ho, Wo}, density.options());
  at::Tensor aux = at::empty({B, Ho, Wo}, density.options());
  if (B == 0) return {out, aux};

  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "project_volume_forward_cpu", [&] {
    const Camera<scalar_t> cam = a.camera_as<scalar_t>();
    const scalar_t* dens = density.data_ptr<scalar_t>();
    const scalar_t* feat = features.defined() ? features.data_ptr<scalar_t>() : nullptr;
    const scalar_t* rot = rotation.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* x = aux.data_ptr<scalar_t>();
    const int64_t plane = int64_t(Ho) * Wo, oc = out.size(1);
    const scalar_t t = scalar_t(tau);
    // Grain: a few rows per task keeps scheduling overhead small next to K samples per pixel.
    at::parallel_for(0, B * Ho, 4, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / Ho;
        const int i = int(row % Ho);
        const scalar_t* vb = dens + b * g.numel();
        const scalar_t* Rb = rot + 9 * b;
        for (int j = 0; j < Wo; ++j) {
          const int64_t pix = int64_t(i) * Wo + j;
          scalar_t* op = o + b * oc * plane + pix;
          scalar_t* xp = x + b * plane + pix;
          if (mode != kEmissionAbsorption) {
            ray_forward_scalar(vb, g, Rb, cam, int(mode), t, K, i, j, Ho, Wo, op, xp);
            continue;
          }
          const scalar_t* fb = feat + b * C * g.numel();
          for (int64_t c0 = 0; c0 < std::max<int64_t>(C, 1); c0 += kChannelChunk) {
            const int n = int(std::min<int64_t>(kChannelChunk, C - c0));
            ray_forward_ea(vb, fb, int(c0), std::max(n, 0), g, Rb, cam, t, K, i, j, Ho, Wo, c0 == 0, op, plane,
                           int(C), xp);
          }
        }
      }
    });
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
  const at::Tensor density = density_in.contiguous();
  const at::Tensor rotation = rotation_in.contiguous();
  const at::Tensor features = features_in ? features_in->contiguous() : at::Tensor();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor out = out_in.contiguous();
  const at::Tensor aux = aux_in.contiguous();
  const int64_t B = density.size(0), C = features.defined() ? features.size(1) : 0;
  const Grid g{int(density.size(1)), int(density.size(2)), int(density.size(3))};
  const int Ho = int(height), Wo = int(width), K = int(n_samples);
  TORCH_CHECK_VALUE(grad_out.sizes() == out.sizes(), "grad_out: expected ", out.sizes(), ", got ", grad_out.sizes());

  at::Tensor grad_density = at::zeros_like(density);
  at::Tensor grad_features = features.defined() ? at::zeros_like(features) : at::empty({0}, density.options());
  at::Tensor grad_rotation = at::zeros({B, 3, 3}, density.options());
  if (B == 0) return {grad_density, grad_features, grad_rotation};

  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "project_volume_backward_cpu", [&] {
    const Camera<scalar_t> cam = a.camera_as<scalar_t>();
    const scalar_t* dens = density.data_ptr<scalar_t>();
    const scalar_t* feat = features.defined() ? features.data_ptr<scalar_t>() : nullptr;
    const scalar_t* rot = rotation.data_ptr<scalar_t>();
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    const scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t* x = aux.data_ptr<scalar_t>();
    scalar_t* gd = grad_density.data_ptr<scalar_t>();
    scalar_t* gf = features.defined() ? grad_features.data_ptr<scalar_t>() : nullptr;
    scalar_t* gr = grad_rotation.data_ptr<scalar_t>();
    const int64_t plane = int64_t(Ho) * Wo, oc = out.size(1);
    const scalar_t t = scalar_t(tau);
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* vb = dens + b * g.numel();
        const scalar_t* Rb = rot + 9 * b;
        scalar_t* gdb = gd + b * g.numel();
        scalar_t gR[9] = {};
        scalar_t* gRp = rotation_grad ? gR : nullptr;
        for (int i = 0; i < Ho; ++i) {
          for (int j = 0; j < Wo; ++j) {
            const int64_t pix = int64_t(i) * Wo + j;
            const scalar_t* gop = go + b * oc * plane + pix;
            const scalar_t xv = x[b * plane + pix];
            if (mode != kEmissionAbsorption) {
              ray_backward_scalar(vb, g, Rb, cam, int(mode), t, K, i, j, Ho, Wo, *gop, o[b * oc * plane + pix], xv,
                                  gdb, gRp, PlainAdd{});
              continue;
            }
            const scalar_t* fb = feat + b * C * g.numel();
            scalar_t* gfb = gf + b * C * g.numel();
            for (int64_t c0 = 0; c0 < std::max<int64_t>(C, 1); c0 += kChannelChunk) {
              const int n = int(std::min<int64_t>(kChannelChunk, C - c0));
              ray_backward_ea(vb, fb, int(c0), std::max(n, 0), g, Rb, cam, t, K, i, j, Ho, Wo, c0 == 0, gop, plane,
                              int(C), xv, gdb, gfb, gRp, PlainAdd{});
            }
          }
        }
        for (int e = 0; e < 9; ++e) gr[9 * b + e] = gR[e];
      }
    });
  });
  return {grad_density, grad_features, grad_rotation};
}

TORCH_LIBRARY_IMPL(voxrender, CPU, m) {
  m.impl("project_volume_forward", &project_volume_forward_cpu);
  m.impl("project_volume_backward", &project_volume_backward_cpu);
}

}  // namespace voxrender
