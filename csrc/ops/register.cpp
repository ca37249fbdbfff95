// TORCH_LIBRARY schemas of the voxrender C++ ops, the checks every device shares, and the Python
// module that carries build information. Fake kernels and autograd are registered from Python
// (voxrender/ops/_cpp_ops.py).
#include <torch/extension.h>

#include "volume_projection.h"

namespace voxrender {

void check_project_inputs(const at::Tensor& density, const std::optional<at::Tensor>& features,
                          const at::Tensor& rotation, const ProjectArgs& a) {
  TORCH_CHECK_VALUE(density.dim() == 4, "density: expected (B, D, H, W), got ", density.sizes());
  TORCH_CHECK_TYPE(density.scalar_type() == at::kFloat || density.scalar_type() == at::kDouble,
                   "density: expected float32 or float64, got ", density.scalar_type());
  const int64_t B = density.size(0);
  TORCH_CHECK_VALUE(rotation.dim() == 3 && rotation.size(0) == B && rotation.size(1) == 3 && rotation.size(2) == 3,
                    "rotation: expected (", B, ", 3, 3), got ", rotation.sizes());
  TORCH_CHECK_TYPE(rotation.scalar_type() == density.scalar_type(), "rotation: expected dtype ",
                   density.scalar_type(), ", got ", rotation.scalar_type());
  TORCH_CHECK_VALUE(rotation.device() == density.device(), "rotation: expected device ", density.device(),
                    ", got ", rotation.device());
  TORCH_CHECK_VALUE(a.height >= 1 && a.width >= 1, "image_size: expected positive sizes, got (", a.height, ", ",
                    a.width, ")");
  TORCH_CHECK_VALUE(a.n_samples >= 1, "n_samples: expected >= 1, got ", a.n_samples);
  TORCH_CHECK_VALUE(a.mode >= 0 && a.mode <= 3, "mode: expected 0..3, got ", a.mode);
  TORCH_CHECK_VALUE(a.projection == 0 || a.projection == 1, "projection: expected 0 or 1, got ", a.projection);
  TORCH_CHECK_VALUE(a.camera.size() == 6, "camera: expected 6 floats, got ", a.camera.size());
  TORCH_CHECK_VALUE(a.n_samples <= (int64_t(1) << 24), "n_samples: at most 2^24 is supported, got ", a.n_samples);
  const bool ea = a.mode == kEmissionAbsorption;
  TORCH_CHECK_VALUE(features.has_value() == ea,
                    ea ? "features: required by mode emission_absorption" : "features: only valid with mode emission_absorption");
  int64_t per_item = density.numel() / std::max<int64_t>(B, 1);
  if (features) {
    const auto& f = *features;
    TORCH_CHECK_VALUE(f.dim() == 5 && f.size(0) == B && f.size(2) == density.size(1) && f.size(3) == density.size(2) &&
                          f.size(4) == density.size(3),
                      "features: expected (", B, ", C, ", density.size(1), ", ", density.size(2), ", ",
                      density.size(3), "), got ", f.sizes());
    TORCH_CHECK_TYPE(f.scalar_type() == density.scalar_type(), "features: expected dtype ", density.scalar_type(),
                     ", got ", f.scalar_type());
    TORCH_CHECK_VALUE(f.device() == density.device(), "features: expected device ", density.device(), ", got ",
                      f.device());
    per_item = f.numel() / std::max<int64_t>(B, 1);
  }
  // Offsets inside one item's grid are 64-bit in the shared math, but keep kernels' index math simple.
  TORCH_CHECK_VALUE(per_item < (int64_t(1) << 31), "density/features: one batch item must have < 2^31 elements");
}

void check_backward_inputs(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& aux,
                           const at::Tensor& density, const std::optional<at::Tensor>& features, const ProjectArgs& a) {
  const int64_t B = density.size(0), oc = output_channels(density, features, a.mode);
  const std::vector<int64_t> image{B, oc, a.height, a.width}, plane{B, a.height, a.width};
  const std::pair<const at::Tensor*, const char*> saved[] = {{&grad_out, "grad_out"}, {&out, "out"}, {&aux, "aux"}};
  for (const auto& [t, name] : saved) {
    const at::IntArrayRef shape = t == &aux ? at::IntArrayRef(plane) : at::IntArrayRef(image);
    TORCH_CHECK_VALUE(t->sizes() == shape, name, ": expected ", shape, ", got ", t->sizes());
    TORCH_CHECK_TYPE(t->scalar_type() == density.scalar_type(), name, ": expected dtype ", density.scalar_type(),
                     ", got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == density.device(), name, ": expected device ", density.device(), ", got ",
                      t->device());
  }
}

int64_t output_channels(const at::Tensor& density, const std::optional<at::Tensor>& features, int64_t mode) {
  return mode == kEmissionAbsorption ? features->size(1) + 1 : 1;
}

}  // namespace voxrender

TORCH_LIBRARY(voxrender, m) {
  m.def(
      "project_volume_forward(Tensor density, Tensor? features, Tensor rotation, int height, int width, "
      "int n_samples, int mode, float tau, int projection, float[] camera) -> (Tensor, Tensor)");
  m.def(
      "project_volume_backward(Tensor grad_out, Tensor out, Tensor aux, Tensor density, Tensor? features, "
      "Tensor rotation, int height, int width, int n_samples, int mode, float tau, int projection, "
      "float[] camera, bool rotation_grad) -> (Tensor, Tensor, Tensor)");
}

namespace {
bool built_with_cuda() {
#ifdef VOXRENDER_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "voxrender C++/CUDA ops (registered under torch.ops.voxrender)";
  m.def("with_cuda", &built_with_cuda, "whether the CUDA kernels were compiled in");
  m.def("cpu_isa", []() { return std::string(voxrender::cpu_uses_avx2() ? "avx2" : "baseline"); },
        "instruction set of the CPU kernels in use");
  m.def("torch_version", []() { return std::string(TORCH_VERSION); }, "torch version compiled against");
}
