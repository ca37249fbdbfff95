// CUDA glue of project_volume: checks, contiguity, device guard and stream, output allocation, and the
// calls into the torch-free launchers of csrc/kernels/volume_projection.cu. Compiled by the host
// compiler, and only in a CUDA build (setup.py drops *_cuda.cpp otherwise).
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // at::cuda::getCurrentCUDAStream, without ATen/cuda/CUDAContext.h's cuBLAS/cuSPARSE headers
#include <torch/library.h>

#include <climits>

#include "volume_projection.cuh"
#include "volume_projection.h"

namespace voxrender {
namespace {

// Checks on top of check_project_inputs that protect the kernels' index math (int pixel coordinates).
void check_cuda_inputs(const at::Tensor& density, const std::optional<at::Tensor>& features, const ProjectArgs& a) {
  TORCH_CHECK_VALUE(density.is_cuda(), "density: expected a CUDA tensor, got device ", density.device());
  TORCH_CHECK_VALUE(a.height <= INT_MAX && a.width <= INT_MAX, "image_size: expected sizes below 2^31, got (",
                    a.height, ", ", a.width, ")");
  TORCH_CHECK_VALUE(cuda::project_tiles_per_item(a.height, a.width) <= INT_MAX,
                    "image_size: too many pixels for one CUDA launch, got (", a.height, ", ", a.width, ")");
  if (features) {
    TORCH_CHECK_VALUE(features->size(1) <= INT_MAX, "features: expected fewer than 2^31 channels, got ",
                      features->size(1));
  }
}

void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "voxrender: CUDA kernel ", kernel, " failed: ", cudaGetErrorString(err));
}

// A tensor the backward receives from autograd: same dtype and device as density, and the given shape.
}  // namespace

std::tuple<at::Tensor, at::Tensor> project_volume_forward_cuda(
    const at::Tensor& density_in, const std::optional<at::Tensor>& features_in, const at::Tensor& rotation_in,
    int64_t height, int64_t width, int64_t n_samples, int64_t mode, double tau, int64_t projection,
    c10::ArrayRef<double> camera) {
  const ProjectArgs a{height, width, n_samples, mode, tau, projection, camera};
  check_project_inputs(density_in, features_in, rotation_in, a);
  check_cuda_inputs(density_in, features_in, a);
  const c10::cuda::CUDAGuard device_guard(density_in.device());
  const at::Tensor density = density_in.contiguous();
  const at::Tensor rotation = rotation_in.contiguous();
  const at::Tensor features = features_in ? features_in->contiguous() : at::Tensor();
  const int64_t B = density.size(0), C = features.defined() ? features.size(1) : 0;
  const Grid g{int(density.size(1)), int(density.size(2)), int(density.size(3))};
  at::Tensor out = at::empty({B, output_channels(density, features_in, mode), height, width}, density.options());
  at::Tensor aux = at::empty({B, height, width}, density.options());
  if (B == 0) return {out, aux};

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "project_volume_forward_cuda", [&] {
    const cuda::ProjectProblem<scalar_t> p{B,        int(C),         g,           int(height),
                                           int(width), int(n_samples), int(mode), scalar_t(tau),
                                           a.camera_as<scalar_t>()};
    check_launch(cuda::launch_project_volume_forward<scalar_t>(
                     p, density.data_ptr<scalar_t>(), features.defined() ? features.data_ptr<scalar_t>() : nullptr,
                     rotation.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), aux.data_ptr<scalar_t>(), stream),
                 mode == kEmissionAbsorption ? "project_volume forward (emission_absorption)"
                                             : "project_volume forward (scalar modes)");
  });
  return {out, aux};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> project_volume_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& out_in, const at::Tensor& aux_in, const at::Tensor& density_in,
    const std::optional<at::Tensor>& features_in, const at::Tensor& rotation_in, int64_t height, int64_t width,
    int64_t n_samples, int64_t mode, double tau, int64_t projection, c10::ArrayRef<double> camera,
    bool rotation_grad) {
  const ProjectArgs a{height, width, n_samples, mode, tau, projection, camera};
  check_project_inputs(density_in, features_in, rotation_in, a);
  check_cuda_inputs(density_in, features_in, a);
  check_backward_inputs(grad_out_in, out_in, aux_in, density_in, features_in, a);
  const int64_t B = density_in.size(0);
  const int64_t oc = output_channels(density_in, features_in, mode);

  const c10::cuda::CUDAGuard device_guard(density_in.device());
  const at::Tensor density = density_in.contiguous();
  const at::Tensor rotation = rotation_in.contiguous();
  const at::Tensor features = features_in ? features_in->contiguous() : at::Tensor();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor out = out_in.contiguous();
  const at::Tensor aux = aux_in.contiguous();
  const int64_t C = features.defined() ? features.size(1) : 0;
  const Grid g{int(density.size(1)), int(density.size(2)), int(density.size(3))};

  at::Tensor grad_density = at::zeros_like(density);
  at::Tensor grad_features = features.defined() ? at::zeros_like(features) : at::empty({0}, density.options());
  if (B == 0) return {grad_density, grad_features, at::zeros({B, 3, 3}, density.options())};
  // The density/feature gradients are scattered with atomicAdd: the summation order varies run to run.
  at::globalContext().alertNotDeterministic("voxrender::project_volume_backward (CUDA)");

  // One row of 9 partial sums per (item, block), written by exactly one block: no zero-fill needed.
  at::Tensor rot_partial;
  if (rotation_grad) {
    rot_partial = at::empty({B, cuda::project_tiles_per_item(height, width), 9}, density.options());
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "project_volume_backward_cuda", [&] {
    const cuda::ProjectProblem<scalar_t> p{B,        int(C),         g,           int(height),
                                           int(width), int(n_samples), int(mode), scalar_t(tau),
                                           a.camera_as<scalar_t>()};
    check_launch(
        cuda::launch_project_volume_backward<scalar_t>(
            p, density.data_ptr<scalar_t>(), features.defined() ? features.data_ptr<scalar_t>() : nullptr,
            rotation.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
            aux.data_ptr<scalar_t>(), grad_density.data_ptr<scalar_t>(),
            features.defined() ? grad_features.data_ptr<scalar_t>() : nullptr,
            rotation_grad ? rot_partial.data_ptr<scalar_t>() : nullptr, stream),
        mode == kEmissionAbsorption ? "project_volume backward (emission_absorption)"
                                    : "project_volume backward (scalar modes)");
  });
  // Deterministic: a fixed-shape torch reduction over the blocks of each item.
  at::Tensor grad_rotation =
      rotation_grad ? at::sum(rot_partial, {1}).view({B, 3, 3}) : at::zeros({B, 3, 3}, density.options());
  return {grad_density, grad_features, grad_rotation};
}

TORCH_LIBRARY_IMPL(voxrender, CUDA, m) {
  m.impl("project_volume_forward", &project_volume_forward_cuda);
  m.impl("project_volume_backward", &project_volume_backward_cuda);
}

}  // namespace voxrender
