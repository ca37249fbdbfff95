// CPU kernel of rasterize_face_ids: the hard z-buffer pass of voxrender.rasterize (face ids and z/w depth;
// barycentrics and gradients are recomputed in Python from face_id).
//
// Binned, O(faces + pixels) per image: (0) snap every vertex to the fixed-point grid once; (1) test every
// face from its snapped vertices (at::parallel_for over chunks of faces: exact pixel box, area, and for a
// one-pixel box the exact coverage of its centre), keeping only the live faces (those that may cover a
// pixel centre), in face order; (2) per batch item, bin the faces into bands of kBandRows image rows, in
// face-index order (counting sort, no fixed-size bins, nothing dropped); (3) at::parallel_for over (item,
// band) pairs: each band runs its faces in index order over bbox ∩ band with the band's rows of the
// outputs as z-buffer, replacing only on strictly smaller depth, so the lower face index wins ties. In a
// mesh finer than the pixels most faces die in (1), and most live ones cover exactly their one pixel.
// Deterministic. Math: csrc/include/voxrender/raster.h, which mirrors the reference's arithmetic exactly
// (hence fp-contract off here: no FMA contraction of the edge functions).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "rasterize_checks.h"
#include "voxrender/raster.h"

namespace voxrender {
namespace {

constexpr int kBandRows = 16;


template <typename T>
void rasterize_cpu_impl(const at::Tensor& verts, const at::Tensor& faces, int H, int W, bool cull,
                        at::Tensor& face_id, at::Tensor& depth) {
  const int64_t B = verts.size(0), V = verts.size(1), F = faces.size(1);
  const T* vp = verts.data_ptr<T>();
  const int64_t* fp = faces.data_ptr<int64_t>();
  int32_t* out_id = face_id.data_ptr<int32_t>();
  T* out_d = depth.data_ptr<T>();
  const int64_t plane = int64_t(H) * W;
  const int nbands = (H + kBandRows - 1) / kBandRows;

  // Pixel centres, computed as the reference does.
  std::vector<T> px(W), py(H);
  for (int j = 0; j < W; ++j) px[j] = pixel_centre<T>(j, W);
  for (int i = 0; i < H; ++i) py[i] = pixel_centre<T>(i, H);

  // (1) Face setup, keeping only the live faces (those that may cover a pixel centre) as (face, rows), in
  // face order: fixed-size chunks of each item's faces fill their own lists, concatenated in chunk order.
  // The setup (about 170 bytes) is recomputed where a face is drawn rather than stored: moving it through
  // memory cost more than computing it again.
  struct Live {
    int32_t face, row0, row1;
    int32_t col;  // >= 0: the face's box is pixel (row0, col), whose centre it covers (exact test done)
  };
  constexpr int64_t kChunk = 4096;
  const int64_t chunks_per_item = std::max<int64_t>(1, (F + kChunk - 1) / kChunk);
  std::vector<std::vector<Live>> chunk_live(size_t(B * chunks_per_item));
  // Every vertex is snapped to the fixed-point grid once (a vertex of a grid mesh has six faces; the snap's
  // divisions dominated the per-face cost when each face snapped its own corners).
  std::vector<SnappedVertex> snapped(size_t(B * V));
  at::parallel_for(0, B * V, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) snapped[size_t(q)] = snap_vertex<T>(vp + 4 * q, H, W);
  });
  auto face_setup = [&](int64_t b, const int64_t* idx, Setup level) {
    const T* base = vp + b * V * 4;
    const SnappedVertex* sb = snapped.data() + b * V;
    const SnappedVertex s[3] = {sb[idx[0]], sb[idx[1]], sb[idx[2]]};
    return setup_face<T>(base + 4 * idx[0], base + 4 * idx[1], base + 4 * idx[2], true, cull, H, W, level, s);
  };
  at::parallel_for(0, B * chunks_per_item, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t b = c / chunks_per_item, f0 = (c % chunks_per_item) * kChunk, f1 = std::min(F, f0 + kChunk);
      auto& out = chunk_live[size_t(c)];
      if (V == 0) continue;  // only padding rows can reach here (indices were checked)
      for (int64_t fi = f0; fi < f1; ++fi) {
        const int64_t* idx = fp + 3 * (b * F + fi);
        if (idx[0] < 0 || idx[1] < 0 || idx[2] < 0) continue;  // padding row
        const SnappedVertex* sb = snapped.data() + b * V;
        int row0, row1, col0;
        int live = fixed_face_live(sb[idx[0]], sb[idx[1]], sb[idx[2]], H, W, cull, &row0, &row1, &col0);
        if (live < 0) {  // the float path
          const FaceSetup<T> f = face_setup(b, idx, Setup::kFull);
          live = f.live, row0 = f.row0, row1 = f.row1;
        }
        if (live) out.push_back(Live{int32_t(fi), row0, row1, live == 2 ? col0 : -1});
      }
    }
  });
  std::vector<std::vector<Live>> live(static_cast<size_t>(B));
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      size_t n = 0;
      for (int64_t c = 0; c < chunks_per_item; ++c) n += chunk_live[size_t(b * chunks_per_item + c)].size();
      auto& all = live[size_t(b)];
      all.reserve(n);
      for (int64_t c = 0; c < chunks_per_item; ++c) {
        auto& part = chunk_live[size_t(b * chunks_per_item + c)];
        all.insert(all.end(), part.begin(), part.end());
        std::vector<Live>().swap(part);
      }
    }
  });

  // (2) Binning per item: band_start[b][k] .. band_start[b][k + 1] index bin_faces[b].
  std::vector<std::vector<int64_t>> band_start(size_t(B), std::vector<int64_t>(size_t(nbands) + 1, 0));
  std::vector<std::vector<Live>> bin_faces(static_cast<size_t>(B));
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      auto& start = band_start[size_t(b)];
      const auto& fs = live[size_t(b)];
      const int64_t n = int64_t(fs.size());
      for (int64_t q = 0; q < n; ++q)
        for (int k = fs[q].row0 / kBandRows; k <= fs[q].row1 / kBandRows; ++k) ++start[size_t(k) + 1];
      for (int k = 0; k < nbands; ++k) start[size_t(k) + 1] += start[size_t(k)];
      auto& list = bin_faces[size_t(b)];
      list.resize(size_t(start[size_t(nbands)]));
      std::vector<int64_t> fill(start.begin(), start.end() - 1);
      for (int64_t q = 0; q < n; ++q)
        for (int k = fs[q].row0 / kBandRows; k <= fs[q].row1 / kBandRows; ++k)
          list[size_t(fill[size_t(k)]++)] = fs[q];
    }
  });

  // (3) Rasterize bands.
  at::parallel_for(0, B * nbands, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nbands;
      const int band = int(task % nbands);
      const int r_lo = band * kBandRows, r_hi = std::min(H, r_lo + kBandRows) - 1;
      int32_t* id = out_id + b * plane;
      T* zb = out_d + b * plane;
      std::fill(id + int64_t(r_lo) * W, id + int64_t(r_hi + 1) * W, int32_t(-1));
      std::fill(zb + int64_t(r_lo) * W, zb + int64_t(r_hi + 1) * W, std::numeric_limits<T>::infinity());
      const auto& start = band_start[size_t(b)];
      const Live* list = bin_faces[size_t(b)].data();
      const T* base = vp + b * V * 4;
      for (int64_t e = start[size_t(band)]; e < start[size_t(band) + 1]; ++e) {
        const int32_t fi = list[e].face;
        const int64_t* idx = fp + 3 * (b * F + fi);
        const T *v0 = base + 4 * idx[0], *v1 = base + 4 * idx[1], *v2 = base + 4 * idx[2];
        T d;
        if (list[e].col >= 0) {  // covers the centre of its one-pixel box (tested exactly in pass 1)
          FaceSetup<T> f;
          f.fixed = true;
          setup_float(v0, v1, v2, &f);
          const int i = list[e].row0, j = list[e].col;
          if (cover_float(f, px[size_t(j)], py[size_t(i)], &d) && d < zb[int64_t(i) * W + j]) {
            zb[int64_t(i) * W + j] = d;
            id[int64_t(i) * W + j] = fi;
          }
          continue;
        }
        // Fixed-point faces get their float setup only once a pixel centre is covered: in a mesh finer
        // than the pixels, many faces whose box holds a pixel centre cover none.
        FaceSetup<T> f = face_setup(b, idx, Setup::kFixed);
        bool float_ready = !f.fixed;
        const int i0 = std::max(f.row0, r_lo), i1 = std::min(f.row1, r_hi);
        for (int i = i0; i <= i1; ++i) {
          const T y = py[size_t(i)];
          int32_t* idr = id + int64_t(i) * W;
          T* zr = zb + int64_t(i) * W;
          for (int j = f.col0; j <= f.col1; ++j) {
            if (f.fixed && !cover_fixed(f, i, j)) continue;
            if (!float_ready) {
              setup_float(v0, v1, v2, &f);
              float_ready = true;
            }
            if (cover_float(f, px[size_t(j)], y, &d) && d < zr[j]) {
              zr[j] = d;
              idr[j] = fi;
            }
          }
        }
      }
      for (int64_t p = int64_t(r_lo) * W; p < int64_t(r_hi + 1) * W; ++p)
        if (id[p] < 0) zb[p] = T(1);  // background: the far plane
    }
  });
}

std::tuple<at::Tensor, at::Tensor> rasterize_face_ids_cpu(const at::Tensor& verts_in, const at::Tensor& faces_in,
                                                          int64_t height, int64_t width, bool cull_backfaces) {
  check_rasterize_inputs(verts_in, faces_in, height, width);
  const int64_t B = verts_in.size(0), V = verts_in.size(1);
  const at::Tensor verts = verts_in.contiguous();
  const at::Tensor faces = faces_in.to(at::kLong).contiguous();
  check_face_index_values(faces, V);
  at::Tensor face_id = at::empty({B, height, width}, verts.options().dtype(at::kInt));
  at::Tensor depth = at::empty({B, height, width}, verts.options());
  if (B == 0) return {face_id, depth};
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "rasterize_face_ids_cpu", [&] {
    rasterize_cpu_impl<scalar_t>(verts, faces, int(height), int(width), cull_backfaces, face_id, depth);
  });
  return {face_id, depth};
}

}  // namespace
}  // namespace voxrender

TORCH_LIBRARY_FRAGMENT(voxrender, m) {
  m.def("rasterize_face_ids(Tensor verts, Tensor faces, int height, int width, bool cull_backfaces) -> "
        "(Tensor face_id, Tensor depth)");
}

TORCH_LIBRARY_IMPL(voxrender, CPU, m) { m.impl("rasterize_face_ids", &voxrender::rasterize_face_ids_cpu); }
