// CPU kernels of the fused fragments ops: the perspective-correct barycentrics and depth of the visible
// faces from the visibility pass's face ids (fragments_forward), and their gradient with respect to the
// clip-space vertices (fragments_backward), and the schemas of both ops. Math: csrc/include/voxrender/
// fragments.h (shared with the CUDA kernels; it mirrors the oracle fragments_from_face_ids operation by
// operation, hence fp-contract off here).
//
// Forward: at::parallel_for over pixels (gathers; no temporaries). Backward: a scatter of per-pixel vertex
// gradients. Each batch item's pixels are split into K fixed chunks, K chosen from the shapes alone (never
// from the number of threads); chunk 0 adds into grad_verts, chunk c > 0 into its own zeroed buffer, each
// in pixel order; then the buffers are added to grad_verts in chunk order. Deterministic, bitwise the same
// whatever the thread count, and parallel when B = 1. verts and faces keep their strides (an expand()ed
// shared faces is not copied per item).
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
#include <optional>
#include <tuple>
#include <vector>

#include "fragments_checks.h"
#include "voxrender/fragments.h"

namespace voxrender {
namespace {

template <typename T, typename I>
void check_status(const std::atomic<int>& status, const FragmentsProblem<T, I>& p) {
  const int st = status.load();
  TORCH_CHECK_VALUE(st != kFragmentsBadFaceId, "face_id: expected ids in [-1, ", p.F, ") (faces has ", p.F, " rows)");
  TORCH_CHECK_VALUE(st != kFragmentsBadVertexIndex, "faces: expected vertex indices in [0, ", p.V,
                    ") (verts has ", p.V, " vertices) or -1 for padding rows");
}

constexpr int64_t kPixelGrain = 4096;

// Pixel centres, computed as the reference does (raster.h's pixel_centre).
template <typename T>
void pixel_centres(int64_t H, int64_t W, std::vector<T>* px, std::vector<T>* py) {
  px->resize(size_t(W)), py->resize(size_t(H));
  for (int64_t j = 0; j < W; ++j) (*px)[size_t(j)] = pixel_centre<T>(int(j), int(W));
  for (int64_t i = 0; i < H; ++i) (*py)[size_t(i)] = pixel_centre<T>(int(i), int(H));
}

template <typename T, typename I>
void forward_impl(const FragmentsProblem<T, I>& p, T* bary, T* depth) {
  std::vector<T> px, py;
  pixel_centres(p.H, p.W, &px, &py);
  std::atomic<int> status{kFragmentsOk};
  at::parallel_for(0, p.B * p.P, kPixelGrain, [&](int64_t begin, int64_t end) {
    int st = kFragmentsOk;
    for (int64_t q = begin; q < end; ++q) {
      T* bq = bary + 3 * q;
      FragmentCorners c;
      if (!fragment_corners(p, q, &c, &st)) {
        bq[0] = bq[1] = bq[2] = T(0);
        depth[q] = T(1);
        continue;
      }
      const int64_t r = q - c.b * p.P, i = r / p.W, j = r - i * p.W;
      FragmentGeometry<T> g;
      fragment_geometry(p, c, px[size_t(j)], py[size_t(i)], &g);
      bq[0] = g.bary[0], bq[1] = g.bary[1], bq[2] = g.bary[2];
      depth[q] = g.depth;
    }
    if (st != kFragmentsOk) status.store(st);
  });
  check_status(status, p);
}

// Chunks of pixels per batch item in the backward: a function of the shapes only, so the summation order
// (and every bit of the result) does not depend on the number of threads. Enough chunks to keep a few dozen
// threads busy when B is small; none smaller than kMinChunkPixels; no more than P / V (each extra chunk
// costs a V x 4 buffer to zero and reduce); extra buffers within kBufferBytes.
int64_t backward_chunks(int64_t B, int64_t V, int64_t P, int64_t elem_size) {
  constexpr int64_t kMinChunkPixels = 16384, kTargetTasks = 64, kBufferBytes = int64_t(64) << 20;
  if (B <= 0 || P <= 0 || V <= 0) return 1;
  int64_t k = (P + kMinChunkPixels - 1) / kMinChunkPixels;
  k = std::min(k, (kTargetTasks + B - 1) / B);
  k = std::min(k, std::max<int64_t>(1, P / V));
  k = std::min(k, 1 + kBufferBytes / (B * V * 4 * elem_size));
  return std::max<int64_t>(k, 1);
}

template <typename T, typename I>
void backward_impl(const FragmentsProblem<T, I>& p, const T* grad_bary, const T* grad_depth, T* grad_verts) {
  std::vector<T> px, py;
  pixel_centres(p.H, p.W, &px, &py);
  const int64_t K = backward_chunks(p.B, p.V, p.P, int64_t(sizeof(T)));
  const int64_t item = p.V * 4;
  at::Tensor buffer;
  T* buf = nullptr;
  if (K > 1) {
    buffer = at::empty({p.B * (K - 1) * item}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
    buf = buffer.data_ptr<T>();
  }
  std::atomic<int> status{kFragmentsOk};
  at::parallel_for(0, p.B * K, 1, [&](int64_t begin, int64_t end) {
    int st = kFragmentsOk;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / K, c = task % K;
      T* acc = c == 0 ? grad_verts + b * item : buf + (b * (K - 1) + c - 1) * item;
      if (c > 0) std::fill(acc, acc + item, T(0));
      const int64_t q0 = b * p.P + c * p.P / K, q1 = b * p.P + (c + 1) * p.P / K;
      for (int64_t q = q0; q < q1; ++q) {
        FragmentCorners fc;
        if (!fragment_corners(p, q, &fc, &st)) continue;
        const int64_t r = q - b * p.P, i = r / p.W, j = r - i * p.W;
        FragmentGeometry<T> g;
        fragment_geometry(p, fc, px[size_t(j)], py[size_t(i)], &g);
        T out[3][4];
        fragment_vertex_grads(g, px[size_t(j)], py[size_t(i)], grad_bary ? grad_bary + 3 * q : nullptr,
                              grad_depth ? grad_depth[q] : T(0), out);
        for (int m = 0; m < 3; ++m) {
          T* row = acc + 4 * fc.v[m];
          for (int d = 0; d < 4; ++d) row[d] += out[m][d];
        }
      }
    }
    if (st != kFragmentsOk) status.store(st);
  });
  check_status(status, p);
  if (K > 1) {  // grad_verts += buffers, in chunk order
    at::parallel_for(0, p.B * item, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const int64_t b = e / item, r = e - b * item;
        T s = grad_verts[e];
        for (int64_t c = 1; c < K; ++c) s += buf[(b * (K - 1) + c - 1) * item + r];
        grad_verts[e] = s;
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor> fragments_forward_cpu(const at::Tensor& verts, const at::Tensor& faces,
                                                         const at::Tensor& face_id_in) {
  check_fragments_inputs(verts, faces, face_id_in);
  const at::Tensor face_id = face_id_in.contiguous();
  const int64_t B = face_id.size(0), H = face_id.size(1), W = face_id.size(2);
  at::Tensor bary = at::empty({B, H, W, 3}, verts.options());
  at::Tensor depth = at::empty({B, H, W}, verts.options());
  if (depth.numel() == 0) return {bary, depth};
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "fragments_forward_cpu", [&] {
    if (faces.scalar_type() == at::kInt) {
      forward_impl(make_fragments_problem<scalar_t, int32_t>(verts, faces, face_id), bary.data_ptr<scalar_t>(),
                   depth.data_ptr<scalar_t>());
    } else {
      forward_impl(make_fragments_problem<scalar_t, int64_t>(verts, faces, face_id), bary.data_ptr<scalar_t>(),
                   depth.data_ptr<scalar_t>());
    }
  });
  return {bary, depth};
}

at::Tensor fragments_backward_cpu(const std::optional<at::Tensor>& grad_bary_in,
                                  const std::optional<at::Tensor>& grad_depth_in, const at::Tensor& verts,
                                  const at::Tensor& faces, const at::Tensor& face_id_in) {
  check_fragments_inputs(verts, faces, face_id_in);
  check_fragments_grads(grad_bary_in, grad_depth_in, verts, face_id_in);
  const at::Tensor face_id = face_id_in.contiguous();
  const at::Tensor grad_bary = contiguous_or_undefined(grad_bary_in);
  const at::Tensor grad_depth = contiguous_or_undefined(grad_depth_in);
  at::Tensor grad_verts = at::zeros({verts.size(0), verts.size(1), 4}, verts.options());
  if (face_id.numel() == 0 || grad_verts.numel() == 0 || (!grad_bary.defined() && !grad_depth.defined()))
    return grad_verts;
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "fragments_backward_cpu", [&] {
    const scalar_t* gb = grad_bary.defined() ? grad_bary.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gd = grad_depth.defined() ? grad_depth.data_ptr<scalar_t>() : nullptr;
    if (faces.scalar_type() == at::kInt) {
      backward_impl(make_fragments_problem<scalar_t, int32_t>(verts, faces, face_id), gb, gd,
                    grad_verts.data_ptr<scalar_t>());
    } else {
      backward_impl(make_fragments_problem<scalar_t, int64_t>(verts, faces, face_id), gb, gd,
                    grad_verts.data_ptr<scalar_t>());
    }
  });
  return grad_verts;
}

}  // namespace
}  // namespace voxrender

TORCH_LIBRARY_FRAGMENT(voxrender, m) {
  m.def("fragments_forward(Tensor verts, Tensor faces, Tensor face_id) -> (Tensor bary, Tensor depth)");
  m.def("fragments_backward(Tensor? grad_bary, Tensor? grad_depth, Tensor verts, Tensor faces, Tensor face_id) "
        "-> Tensor grad_verts");
}

TORCH_LIBRARY_IMPL(voxrender, CPU, m) {
  m.impl("fragments_forward", &voxrender::fragments_forward_cpu);
  m.impl("fragments_backward", &voxrender::fragments_backward_cpu);
}
