// CPU kernels of voxrender.interpolate (attribute interpolation over the rasterizer's fragments), and the
// schemas of the interpolate ops. Math: csrc/include/voxrender/interpolate.h (shared with the CUDA kernels;
// hence fp-contract off here, so the forward matches the CUDA one bit for bit).
//
// Forward and grad_bary: at::parallel_for over pixels. grad_attr: a scatter; each batch item's pixels are
// summed in pixel order, in tasks over (item, block of channels), which write disjoint parts of grad_attr:
// deterministic, and independent of the number of threads. attr and faces keep their strides (an expand()ed
// shared attr or faces is not copied per item); grad_attr is per item (B, V, C) and autograd sums it over an
// expanded batch dim.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <tuple>

#include "interpolate_checks.h"
#include "voxrender/interpolate.h"

namespace voxrender {
namespace {

template <typename T, typename I>
void check_status(const std::atomic<int>& status, const InterpolateProblem<T, I>& p) {
  const int st = status.load();
  TORCH_CHECK_VALUE(st != kBadFaceId, "face_id: expected ids in [-1, ", p.F, ") (faces has ", p.F, " rows)");
  TORCH_CHECK_VALUE(st != kBadVertexIndex, "faces: expected vertex indices in [0, ", p.V,
                    ") (attr has ", p.V, " vertices) or -1 for padding rows");
}

constexpr int64_t kPixelGrain = 2048;

template <typename T, typename I>
void forward_impl(const InterpolateProblem<T, I>& p, T* out) {
  std::atomic<int> status{kInterpolateOk};
  at::parallel_for(0, p.B * p.P, kPixelGrain, [&](int64_t begin, int64_t end) {
    int st = kInterpolateOk;
    for (int64_t q = begin; q < end; ++q) {
      T* o = out + q * p.C;
      InterpolateCorners f;
      if (!interpolate_pixel(p, q, &f, &st)) {
        std::fill(o, o + p.C, T(0));
        continue;
      }
      for (int64_t c = 0; c < p.C; ++c) o[c] = interpolate_value(p, q, f, c);
    }
    if (st != kInterpolateOk) status.store(st);
  });
  check_status(status, p);
}

template <typename T, typename I>
void grad_bary_impl(const InterpolateProblem<T, I>& p, const T* grad_out, T* grad_bary) {
  std::atomic<int> status{kInterpolateOk};
  at::parallel_for(0, p.B * p.P, kPixelGrain, [&](int64_t begin, int64_t end) {
    int st = kInterpolateOk;
    for (int64_t q = begin; q < end; ++q) {
      T* gb = grad_bary + 3 * q;
      InterpolateCorners f;
      if (!interpolate_pixel(p, q, &f, &st)) {
        gb[0] = gb[1] = gb[2] = T(0);
        continue;
      }
      for (int k = 0; k < 3; ++k) gb[k] = interpolate_grad_bary(p, grad_out + q * p.C, f, k);
    }
    if (st != kInterpolateOk) status.store(st);
  });
  check_status(status, p);
}

template <typename T, typename I>
void grad_attr_impl(const InterpolateProblem<T, I>& p, const T* grad_out, T* grad_attr) {
  if (p.C == 0 || p.V == 0) return;
  // Tasks: (item, block of channels). Each grad_attr element is summed over its item's pixels in pixel
  // order whatever the blocking, so the result does not depend on the number of threads.
  const int64_t threads = at::get_num_threads();
  const int64_t blocks = std::min<int64_t>(p.C, std::max<int64_t>(1, (threads + p.B - 1) / std::max<int64_t>(p.B, 1)));
  const int64_t width = (p.C + blocks - 1) / blocks;
  std::atomic<int> status{kInterpolateOk};
  at::parallel_for(0, p.B * blocks, 1, [&](int64_t begin, int64_t end) {
    int st = kInterpolateOk;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, c0 = (task % blocks) * width, c1 = std::min(p.C, c0 + width);
      T* ga = grad_attr + b * p.V * p.C;
      for (int64_t q = b * p.P; q < (b + 1) * p.P; ++q) {
        InterpolateCorners f;
        if (!interpolate_pixel(p, q, &f, &st)) continue;
        const T* g = grad_out + q * p.C;
        const T* bq = p.bary + 3 * q;
        for (int k = 0; k < 3; ++k) {
          T* row = ga + f.v[k] * p.C;
          for (int64_t c = c0; c < c1; ++c) row[c] = add_rn(row[c], interpolate_grad_attr_term(bq[k], g[c]));
        }
      }
    }
    if (st != kInterpolateOk) status.store(st);
  });
  check_status(status, p);
}

at::Tensor interpolate_cpu(const at::Tensor& attr, const at::Tensor& face_id_in, const at::Tensor& bary_in,
                           const at::Tensor& faces) {
  check_interpolate_inputs(attr, face_id_in, bary_in, faces);
  const at::Tensor face_id = face_id_in.contiguous(), bary = bary_in.contiguous();
  at::Tensor out = at::empty({attr.size(0), face_id.size(1), face_id.size(2), attr.size(2)}, attr.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_cpu", [&] {
    if (faces.scalar_type() == at::kInt) {
      forward_impl(make_interpolate_problem<scalar_t, int32_t>(attr, face_id, bary, faces), out.data_ptr<scalar_t>());
    } else {
      forward_impl(make_interpolate_problem<scalar_t, int64_t>(attr, face_id, bary, faces), out.data_ptr<scalar_t>());
    }
  });
  return out;
}

template <typename T, typename I>
void backward_impl(const InterpolateProblem<T, I>& p, const T* grad_out, T* grad_attr, T* grad_bary) {
  if (grad_bary) grad_bary_impl(p, grad_out, grad_bary);
  if (grad_attr) grad_attr_impl(p, grad_out, grad_attr);
}

std::tuple<at::Tensor, at::Tensor> interpolate_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& attr,
                                                            const at::Tensor& face_id_in, const at::Tensor& bary_in,
                                                            const at::Tensor& faces, bool attr_grad, bool bary_grad) {
  check_interpolate_inputs(attr, face_id_in, bary_in, faces);
  check_interpolate_grad(grad_out_in, attr, face_id_in);
  const at::Tensor face_id = face_id_in.contiguous(), bary = bary_in.contiguous(), grad_out = grad_out_in.contiguous();
  at::Tensor grad_attr = attr_grad ? at::zeros({attr.size(0), attr.size(1), attr.size(2)}, attr.options())
                                   : at::empty({0}, attr.options());
  at::Tensor grad_bary = bary_grad ? at::empty(bary.sizes(), bary.options()) : at::empty({0}, bary.options());
  if (face_id.numel() == 0 || (!attr_grad && !bary_grad)) return {grad_attr, grad_bary};
  AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_backward_cpu", [&] {
    scalar_t* ga = attr_grad ? grad_attr.data_ptr<scalar_t>() : nullptr;
    scalar_t* gb = bary_grad ? grad_bary.data_ptr<scalar_t>() : nullptr;
    if (faces.scalar_type() == at::kInt) {
      backward_impl(make_interpolate_problem<scalar_t, int32_t>(attr, face_id, bary, faces),
                    grad_out.data_ptr<scalar_t>(), ga, gb);
    } else {
      backward_impl(make_interpolate_problem<scalar_t, int64_t>(attr, face_id, bary, faces),
                    grad_out.data_ptr<scalar_t>(), ga, gb);
    }
  });
  return {grad_attr, grad_bary};
}

}  // namespace
}  // namespace voxrender

TORCH_LIBRARY_FRAGMENT(voxrender, m) {
  m.def("interpolate(Tensor attr, Tensor face_id, Tensor bary, Tensor faces) -> Tensor");
  m.def("interpolate_backward(Tensor grad_out, Tensor attr, Tensor face_id, Tensor bary, Tensor faces, "
        "bool attr_grad, bool bary_grad) -> (Tensor grad_attr, Tensor grad_bary)");
}

TORCH_LIBRARY_IMPL(voxrender, CPU, m) {
  m.impl("interpolate", &voxrender::interpolate_cpu);
  m.impl("interpolate_backward", &voxrender::interpolate_backward_cpu);
}
