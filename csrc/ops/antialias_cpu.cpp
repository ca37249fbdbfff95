// CPU kernels of voxrender.antialias (analytic edge antialiasing): the ops antialias_forward and
// antialias_backward. Math: csrc/include/voxrender/antialias.h (shared with the CUDA kernels); algorithm
// and conventions: voxrender/reference/antialias.py (the oracle).
//
// Deterministic, race-free and independent of the thread count:
// - walk filter (small meshes): the faces from which a pair's walk can reach a silhouette edge, marked in
//   rounds over the faces (each round reads the previous one's marks only); an exact shortcut;
// - forward: at::parallel_for over image rows; each pixel gathers the deltas of the (at most four) pairs it
//   belongs to, so no two threads write the same output;
// - colour gradient: the same per-pixel gather;
// - vertex gradient: each row records the (vertex, gradient) contributions of the pairs it owns (the right
//   and down pair of each of its pixels) in a per-row list; then, per batch item, the lists are summed in
//   row order into grad_verts. The result is bitwise repeatable whatever the number of threads.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <utility>
#include <vector>

#include "antialias_checks.h"
#include "voxrender/antialias.h"

namespace voxrender {

void check_antialias_inputs(const at::Tensor& color, const at::Tensor& face_id, const at::Tensor& depth,
                            const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& silhouette,
                            const at::Tensor& adjacency, const at::Tensor* grad) {
  TORCH_CHECK_VALUE(color.dim() == 4, "color: expected (B, H, W, C), got ", color.sizes());
  TORCH_CHECK_TYPE(color.scalar_type() == at::kFloat || color.scalar_type() == at::kDouble,
                   "color: expected float32 or float64, got ", color.scalar_type());
  const auto dt = color.scalar_type();
  const auto dev = color.device();
  const int64_t B = color.size(0), H = color.size(1), W = color.size(2);
  TORCH_CHECK_VALUE(face_id.dim() == 3 && face_id.size(0) == B && face_id.size(1) == H && face_id.size(2) == W,
                    "face_id: expected (", B, ", ", H, ", ", W, ") to match color, got ", face_id.sizes());
  TORCH_CHECK_TYPE(face_id.scalar_type() == at::kInt, "face_id: expected int32, got ", face_id.scalar_type());
  TORCH_CHECK_VALUE(depth.sizes() == face_id.sizes(), "depth: expected ", face_id.sizes(), " (face_id's shape), got ",
                    depth.sizes());
  TORCH_CHECK_TYPE(depth.scalar_type() == dt, "depth: expected dtype ", dt, " (color's), got ", depth.scalar_type());
  TORCH_CHECK_VALUE(verts.dim() == 3 && verts.size(0) == B && verts.size(2) == 4, "verts: expected (", B,
                    ", V, 4), got ", verts.sizes());
  TORCH_CHECK_TYPE(verts.scalar_type() == dt, "verts: expected dtype ", dt, " (color's), got ", verts.scalar_type());
  TORCH_CHECK_VALUE(faces.dim() == 3 && faces.size(0) == B && faces.size(2) == 3, "faces: expected (", B,
                    ", F, 3), got ", faces.sizes());
  TORCH_CHECK_TYPE(faces.scalar_type() == at::kLong || faces.scalar_type() == at::kInt,
                   "faces: expected int64 or int32, got ", faces.scalar_type());
  TORCH_CHECK_VALUE(silhouette.sizes() == faces.sizes(), "silhouette: expected ", faces.sizes(),
                    " (faces' shape), got ", silhouette.sizes());
  TORCH_CHECK_TYPE(silhouette.scalar_type() == at::kBool, "silhouette: expected bool, got ",
                   silhouette.scalar_type());
  TORCH_CHECK_VALUE(adjacency.sizes() == faces.sizes(), "adjacency: expected ", faces.sizes(),
                    " (faces' shape), got ", adjacency.sizes());
  TORCH_CHECK_TYPE(adjacency.scalar_type() == at::kLong || adjacency.scalar_type() == at::kInt,
                   "adjacency: expected int64 or int32, got ", adjacency.scalar_type());
  const std::pair<const at::Tensor*, const char*> on_device[] = {
      {&face_id, "face_id"}, {&depth, "depth"},           {&verts, "verts"},
      {&faces, "faces"},     {&silhouette, "silhouette"}, {&adjacency, "adjacency"}};
  for (const auto& [t, name] : on_device) {
    TORCH_CHECK_VALUE(t->device() == dev, name, ": expected device ", dev, " (color's), got ", t->device());
  }
  TORCH_CHECK_VALUE(H < (int64_t(1) << 30) && W < (int64_t(1) << 30), "color: at most 2^30 rows and columns, got (",
                    H, ", ", W, ")");
  TORCH_CHECK_VALUE(color.size(3) < (int64_t(1) << 31), "color: fewer than 2^31 channels expected, got ",
                    color.size(3));
  TORCH_CHECK_VALUE(faces.size(1) < (int64_t(1) << 31), "faces: at most 2^31 - 1 faces per item, got ",
                    faces.size(1));
  if (grad) {
    TORCH_CHECK_VALUE(grad->sizes() == color.sizes(), "grad_out: expected ", color.sizes(), ", got ",
                      grad->sizes());
    TORCH_CHECK_TYPE(grad->scalar_type() == dt, "grad_out: expected dtype ", dt, ", got ", grad->scalar_type());
    TORCH_CHECK_VALUE(grad->device() == dev, "grad_out: expected device ", dev, ", got ", grad->device());
  }
}

namespace {

// Value checks the CPU can afford (one pass over small tensors): indices in range.
void check_antialias_values(const at::Tensor& face_id, const at::Tensor& faces, int64_t V) {
  const int64_t F = faces.size(1);
  if (faces.numel() > 0) {
    const auto mm = at::aminmax(faces);
    const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
    TORCH_CHECK_VALUE(lo >= -1 && hi < V, "faces: indices must be in [0, ", V,
                      ") or -1 for padding rows, got values in [", lo, ", ", hi, "]");
  }
  if (face_id.numel() > 0) {
    const auto mm = at::aminmax(face_id);
    const int64_t lo = std::get<0>(mm).item<int32_t>(), hi = std::get<1>(mm).item<int32_t>();
    TORCH_CHECK_VALUE(lo >= -1 && hi < F, "face_id: expected values in [-1, ", F, "), got values in [", lo, ", ",
                      hi, "]");
  }
}

template <typename T>
AntialiasProblem<T> make_problem(const at::Tensor& color, const at::Tensor& face_id, const at::Tensor& depth,
                                 const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& silhouette,
                                 const at::Tensor& adjacency) {
  AntialiasProblem<T> P;
  P.B = color.size(0), P.H = int(color.size(1)), P.W = int(color.size(2)), P.C = int(color.size(3));
  P.V = verts.size(1), P.F = faces.size(1);
  P.color = color.data_ptr<T>();
  P.face_id = face_id.data_ptr<int32_t>();
  P.depth = depth.data_ptr<T>();
  P.verts = verts.data_ptr<T>();
  P.faces = faces.data_ptr<int64_t>();
  P.silhouette = silhouette.data_ptr<bool>();
  P.adjacency = adjacency.data_ptr<int64_t>();
  return P;
}

// The walk filter of the header (antialias_reach_*), or an empty vector (no filter) when the mesh is large
// for the image: its cost grows with (kAntialiasWalkFaces - 1) B F, the work it saves with the pixels.
// Either way the result is the same; only the time differs.
template <typename T>
std::vector<uint8_t> walk_filter(const AntialiasProblem<T>& P) {
  const int64_t n = P.B * P.F;
  if (n == 0 || (kAntialiasWalkFaces - 1) * P.F > 8 * int64_t(P.H) * P.W) return {};
  std::vector<uint8_t> cur(size_t(n), 0), next(size_t(n), 0);
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) cur[size_t(i)] = antialias_reach_init(P, i / P.F, i % P.F);
  });
  for (int round = 1; round < kAntialiasWalkFaces; ++round) {
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) next[size_t(i)] = antialias_reach_round(P, cur.data(), i / P.F, i % P.F);
    });
    const bool same = next == cur;
    cur.swap(next);
    if (same) break;
  }
  return cur;
}

// Rows per parallel task: enough pixels to amortise the dispatch.
int64_t row_grain(int64_t W) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(W, 1)); }

template <typename T>
void forward_impl(const AntialiasProblem<T>& P, T* out) {
  at::parallel_for(0, P.B * P.H, row_grain(P.W), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / P.H;
      const int i = int(row % P.H);
      for (int j = 0; j < P.W; ++j) antialias_forward_pixel(P, b, i, j, out + (row * P.W + j) * P.C);
    }
  });
}

template <typename T>
void backward_impl(const AntialiasProblem<T>& P, const T* grad, T* grad_color, T* grad_verts) {
  // Per-row contribution lists (row = b * H + i).
  std::vector<std::vector<std::pair<int64_t, std::array<T, 3>>>> rows(size_t(P.B * P.H));
  at::parallel_for(0, P.B * P.H, row_grain(P.W), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / P.H;
      const int i = int(row % P.H);
      auto& list = rows[size_t(row)];
      for (int j = 0; j < P.W; ++j) {
        antialias_color_grad_pixel(P, grad, b, i, j, grad_color + (row * P.W + j) * P.C);
        for (int axis = 0; axis < 2; ++axis) {
          if (axis == 0 ? j + 1 >= P.W : i + 1 >= P.H) continue;
          AntialiasHit<T> h;
          if (!antialias_pair(P, b, i, j, axis, &h)) continue;
          const T gt = antialias_grad_t(P, grad, b, h);
          std::array<T, 3> ga, gb;
          antialias_vertex_grad(P, b, h, gt, ga.data(), gb.data());
          list.emplace_back(h.va, ga);
          list.emplace_back(h.vb, gb);
        }
      }
    }
  });
  // Ordered reduction per item (items in parallel: each owns its slice of grad_verts).
  at::parallel_for(0, P.B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      T* gv = grad_verts + b * P.V * 4;
      for (int i = 0; i < P.H; ++i) {
        for (const auto& [v, g] : rows[size_t(b * P.H + i)]) {
          gv[4 * v + 0] += g[0];
          gv[4 * v + 1] += g[1];
          gv[4 * v + 3] += g[2];
        }
      }
    }
  });
}

struct Inputs {
  at::Tensor color, face_id, depth, verts, faces, silhouette, adjacency;
};

Inputs contiguous_inputs(const at::Tensor& color, const at::Tensor& face_id, const at::Tensor& depth,
                         const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& silhouette,
                         const at::Tensor& adjacency) {
  return {color.contiguous(),
          face_id.contiguous(),
          depth.contiguous(),
          verts.contiguous(),
          faces.to(at::kLong).contiguous(),
          silhouette.contiguous(),
          adjacency.to(at::kLong).contiguous()};
}

at::Tensor antialias_forward_cpu(const at::Tensor& color, const at::Tensor& face_id, const at::Tensor& depth,
                                 const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& silhouette,
                                 const at::Tensor& adjacency) {
  check_antialias_inputs(color, face_id, depth, verts, faces, silhouette, adjacency);
  check_antialias_values(face_id, faces, verts.size(1));
  const Inputs in = contiguous_inputs(color, face_id, depth, verts, faces, silhouette, adjacency);
  at::Tensor out = at::empty(in.color.sizes(), in.color.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.color.scalar_type(), "antialias_forward_cpu", [&] {
    auto P = make_problem<scalar_t>(in.color, in.face_id, in.depth, in.verts, in.faces, in.silhouette,
                                     in.adjacency);
    const std::vector<uint8_t> reach = walk_filter(P);
    P.reach = reach.empty() ? nullptr : reach.data();
    forward_impl<scalar_t>(P, out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> antialias_backward_cpu(const at::Tensor& grad_out, const at::Tensor& color,
                                                          const at::Tensor& face_id, const at::Tensor& depth,
                                                          const at::Tensor& verts, const at::Tensor& faces,
                                                          const at::Tensor& silhouette, const at::Tensor& adjacency) {
  check_antialias_inputs(color, face_id, depth, verts, faces, silhouette, adjacency, &grad_out);
  check_antialias_values(face_id, faces, verts.size(1));
  const Inputs in = contiguous_inputs(color, face_id, depth, verts, faces, silhouette, adjacency);
  const at::Tensor grad = grad_out.contiguous();
  at::Tensor grad_color = at::empty(in.color.sizes(), in.color.options());
  at::Tensor grad_verts = at::zeros(in.verts.sizes(), in.verts.options());
  if (grad_color.numel() == 0) return {grad_color, grad_verts};
  AT_DISPATCH_FLOATING_TYPES(in.color.scalar_type(), "antialias_backward_cpu", [&] {
    auto P = make_problem<scalar_t>(in.color, in.face_id, in.depth, in.verts, in.faces, in.silhouette,
                                     in.adjacency);
    const std::vector<uint8_t> reach = walk_filter(P);
    P.reach = reach.empty() ? nullptr : reach.data();
    backward_impl<scalar_t>(P, grad.data_ptr<scalar_t>(), grad_color.data_ptr<scalar_t>(),
                            grad_verts.data_ptr<scalar_t>());
  });
  return {grad_color, grad_verts};
}

}  // namespace
}  // namespace voxrender

TORCH_LIBRARY_FRAGMENT(voxrender, m) {
  m.def("antialias_forward(Tensor color, Tensor face_id, Tensor depth, Tensor verts, Tensor faces, "
        "Tensor silhouette, Tensor adjacency) -> Tensor");
  m.def("antialias_backward(Tensor grad_out, Tensor color, Tensor face_id, Tensor depth, Tensor verts, "
        "Tensor faces, Tensor silhouette, Tensor adjacency) -> (Tensor grad_color, Tensor grad_verts)");
}

TORCH_LIBRARY_IMPL(voxrender, CPU, m) {
  m.impl("antialias_forward", &voxrender::antialias_forward_cpu);
  m.impl("antialias_backward", &voxrender::antialias_backward_cpu);
}
