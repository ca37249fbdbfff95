// Torch-side declarations shared by the registration, CPU and CUDA files of project_volume.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "voxrender/volume.h"

namespace voxrender {

// Arguments after the tensors, in schema order (see csrc/ops/register.cpp).
struct ProjectArgs {
  int64_t height, width, n_samples, mode;
  double tau;
  int64_t projection;
  c10::ArrayRef<double> camera;  // sx, sy, cam_z, t0, dt, step_scale

  template <typename T>
  Camera<T> camera_as() const {
    return Camera<T>{int(projection), T(camera[0]), T(camera[1]), T(camera[2]),
                     T(camera[3]), T(camera[4]), T(camera[5])};
  }
};

// Checks shared by every device; the Python wrapper has already given users friendlier messages.
void check_project_inputs(const at::Tensor& density, const std::optional<at::Tensor>& features,
                          const at::Tensor& rotation, const ProjectArgs& a);

// The backward's saved tensors and upstream gradient: shapes, dtype and device (a wrong shape would be an
// out-of-bounds read, on the GPU an illegal address that kills the CUDA context).
void check_backward_inputs(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& aux,
                           const at::Tensor& density, const std::optional<at::Tensor>& features, const ProjectArgs& a);

// Whether the CPU kernels run their AVX2 copy (see volume_projection_cpu.cpp).
bool cpu_uses_avx2();

// Output shape: (B, 1, Ho, Wo) or (B, C + 1, Ho, Wo) for emission_absorption.
int64_t output_channels(const at::Tensor& density, const std::optional<at::Tensor>& features, int64_t mode);

std::tuple<at::Tensor, at::Tensor> project_volume_forward_cpu(
    const at::Tensor& density, const std::optional<at::Tensor>& features, const at::Tensor& rotation,
    int64_t height, int64_t width, int64_t n_samples, int64_t mode, double tau, int64_t projection,
    c10::ArrayRef<double> camera);

std::tuple<at::Tensor, at::Tensor, at::Tensor> project_volume_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& aux, const at::Tensor& density,
    const std::optional<at::Tensor>& features, const at::Tensor& rotation, int64_t height, int64_t width,
    int64_t n_samples, int64_t mode, double tau, int64_t projection, c10::ArrayRef<double> camera,
    bool rotation_grad);

}  // namespace voxrender
