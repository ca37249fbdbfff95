// CUDA kernels of rasterize_face_ids: a deterministic z-buffer with work O(faces + pixels) and no host
// synchronisation, running the same per-face and per-pixel functions as the CPU op
// (csrc/include/voxrender/raster.h), so face ids and depths equal the CPU's bit for bit. Torch-free: the
// glue in csrc/ops/rasterize_cuda.cpp checks, allocates, forms the prefix sum and calls the launchers.
//
// Work distribution. Every face's exact pixel bounding box (the whole image for faces on the float path,
// e.g. crossing w = 0) is split along the image's fixed grid of kRasterTile x kRasterTile tiles; a work item
// is one (face, tile) pair, and one thread handles one item (at most 64 pixels). So a 2048^2 image with one
// huge triangle is 65536 items spread over the whole GPU, and a dense depth-map mesh (about one pixel per
// face) is about one item per face, each covering only its bounding box's few pixels.
//   pass 0 (count):   one thread per face: setup_face, the number of tiles its box overlaps -> tile_count.
//   (glue)            offsets = inclusive cumsum(tile_count) on the device (int64: totals may pass 2^31).
//   pass 1 (depth):   a fixed-size persistent grid walks the work items [0, offsets[last]) (read on the
//                     device, so the host never learns the total: no sync, CUDA-graph capturable). Each
//                     block takes 256 consecutive items per step; two threads binary-search the faces of
//                     the first and last item, and each thread then searches its own face within that
//                     (usually tiny) range. The thread recomputes the face's setup (cheaper than storing
//                     ~200 bytes per face and reading them back), and for each covered pixel of its tile
//                     atomicMin's the order-preserving unsigned encoding of the depth z/w into the
//                     z-buffer (uint32 for float, uint64 for double), which lives in the depth output.
//   pass 2 (ids):     the same walk; where a face's encoded depth equals the z-buffer's final value it
//                     atomicMin's the key (face index << 1 | negative-zero flag) into the face_id output,
//                     so among equal depths the lowest face index wins, as in the CPU op and the reference.
//                     -0.0 and +0.0 are one depth (canonicalised before encoding, as the CPU compares
//                     them equal); the flag restores the sign of the winner's own depth.
//   pass 3 (finish):  one thread per pixel turns keys into face ids (-1 for background) and encodings back
//                     into depths (1.0 for background).
// Memory: the two outputs (used in place as z-buffer and key buffer) plus 16 bytes per face (tile_count
// and offsets). Atomics decide only minima of integers, so the result is deterministic.
#include "rasterize.cuh"

#include "voxrender/raster.h"

namespace voxrender {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRasterBlocksPerSM = 4;  // at most, in the persistent grid of passes 1 and 2
constexpr int kMaxBlocksPerSM = 16;    // grid-stride grids of passes 0 and 3
constexpr unsigned int kNoKey = 0xFFFFFFFFu;

// Order-preserving map of a depth to an unsigned integer (a < b <=> enc(a) < enc(b) for non-NaN values,
// -0.0 excluded: depths are canonicalised first). All-ones (the memset value) is above every depth.
template <typename T>
struct DepthCode;

template <>
struct DepthCode<float> {
  using U = unsigned int;
  static __device__ __forceinline__ U encode(float d) {
    const U u = __float_as_uint(d);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  static __device__ __forceinline__ float decode(U u) {
    return __uint_as_float((u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u);
  }
  static __device__ __forceinline__ U bits(float d) { return __float_as_uint(d); }
};

template <>
struct DepthCode<double> {
  using U = unsigned long long;
  static __device__ __forceinline__ U encode(double d) {
    const U u = static_cast<U>(__double_as_longlong(d));
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
  }
  static __device__ __forceinline__ double decode(U u) {
    return __longlong_as_double(static_cast<long long>((u & 0x8000000000000000ull) ? (u & 0x7FFFFFFFFFFFFFFFull) : ~u));
  }
  static __device__ __forceinline__ U bits(double d) { return static_cast<U>(__double_as_longlong(d)); }
};

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Sets up face g = b * F + f. Returns whether it may cover pixels (f->live); rows with an index outside
// [0, V) (padding, or bad values: the CUDA op does not check them on the host) cover nothing.
template <typename T, typename I>
__device__ __forceinline__ bool load_face(const RasterProblem<T, I>& p, int64_t g, FaceSetup<T>* f) {
  const int64_t b = g / p.F, fi = g - b * p.F;
  const I* row = p.faces + b * p.face_stride[0] + fi * p.face_stride[1];
  int64_t idx[3];
  bool valid = true;
  for (int k = 0; k < 3; ++k) {
    idx[k] = static_cast<int64_t>(row[k * p.face_stride[2]]);
    valid = valid && idx[k] >= 0 && idx[k] < p.V;
  }
  if (!valid) {
    f->live = false;
    return false;
  }
  const T* base = p.verts + b * p.V * 4;
  *f = setup_face<T>(base + 4 * idx[0], base + 4 * idx[1], base + 4 * idx[2], true, p.cull, p.H, p.W);
  return f->live;
}

template <typename T>
__device__ __forceinline__ int64_t tile_cols(const FaceSetup<T>& f) {
  return int64_t(f.col1 / kRasterTile - f.col0 / kRasterTile + 1);
}

template <typename T>
__device__ __forceinline__ int64_t tile_rows(const FaceSetup<T>& f) {
  return int64_t(f.row1 / kRasterTile - f.row0 / kRasterTile + 1);
}

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads) count_kernel(const RasterProblem<T, I> p, int64_t* __restrict__ count) {
  const int64_t n = p.B * p.F;
  for (int64_t g = int64_t(blockIdx.x) * kThreads + threadIdx.x; g < n; g += int64_t(gridDim.x) * kThreads) {
    FaceSetup<T> f;
    count[g] = load_face(p, g, &f) ? tile_rows(f) * tile_cols(f) : 0;
  }
}

// First index in [lo, hi) with a[index] > x (hi when none).
__device__ __forceinline__ int64_t upper_bound(const int64_t* __restrict__ a, int64_t lo, int64_t hi, int64_t x) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (a[mid] > x) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// Passes 1 (kIds = false: depth minima) and 2 (kIds = true: lowest face index at the minimum depth).
template <typename T, typename I, bool kIds>
__global__ void __launch_bounds__(kThreads)
    raster_kernel(const RasterProblem<T, I> p, const int64_t* __restrict__ offsets,
                  typename DepthCode<T>::U* zbuf, unsigned int* keys) {
  using U = typename DepthCode<T>::U;
  __shared__ int64_t face_range[2];
  const int64_t n = p.B * p.F;
  const int64_t total = offsets[n - 1];
  const int64_t plane = int64_t(p.H) * p.W;
  for (int64_t base = int64_t(blockIdx.x) * kThreads; base < total; base += int64_t(gridDim.x) * kThreads) {
    // Block-uniform loop: every thread reaches both barriers.
    const int64_t last = min64(base + kThreads, total) - 1;
    if (threadIdx.x == 0) face_range[0] = upper_bound(offsets, 0, n, base);
    if (threadIdx.x == 32) face_range[1] = upper_bound(offsets, 0, n, last);
    __syncthreads();
    const int64_t lo = face_range[0], hi = face_range[1];
    __syncthreads();
    const int64_t item = base + threadIdx.x;
    if (item > last) continue;
    const int64_t g = upper_bound(offsets, lo, hi + 1, item);
    FaceSetup<T> f;
    if (!load_face(p, g, &f)) continue;  // never taken: faces with items are live
    const int64_t local = item - (g > 0 ? offsets[g - 1] : 0);
    const int64_t ncols = tile_cols(f);
    const int tr = f.row0 / kRasterTile + int(local / ncols);
    const int tc = f.col0 / kRasterTile + int(local - (local / ncols) * ncols);
    const int i0 = max(f.row0, tr * kRasterTile), i1 = min(f.row1, tr * kRasterTile + kRasterTile - 1);
    const int j0 = max(f.col0, tc * kRasterTile), j1 = min(f.col1, tc * kRasterTile + kRasterTile - 1);
    const int64_t b = g / p.F;
    const unsigned int fi = static_cast<unsigned int>(g - b * p.F);
    for (int i = i0; i <= i1; ++i) {
      const T py = pixel_centre<T>(i, p.H);
      const int64_t row = b * plane + int64_t(i) * p.W;
      for (int j = j0; j <= j1; ++j) {
        T d;
        if (!cover_pixel(f, i, j, pixel_centre<T>(j, p.W), py, &d)) continue;
        const bool neg_zero = d == T(0) && signbit(d);
        const U code = DepthCode<T>::encode(d == T(0) ? T(0) : d);
        U* z = zbuf + row + j;
        if (!kIds) {
          if (code < *z) atomicMin(z, code);
        } else if (code == *z) {
          const unsigned int key = (fi << 1) | (neg_zero ? 1u : 0u);
          unsigned int* k = keys + row + j;
          if (key < *k) atomicMin(k, key);
        }
      }
    }
  }
}

// Pass 3: keys -> face ids, encodings -> depths, in place (through the unsigned views only).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    finish_kernel(int64_t n, typename DepthCode<T>::U* zbuf, unsigned int* keys) {
  using U = typename DepthCode<T>::U;
  for (int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x; q < n; q += int64_t(gridDim.x) * kThreads) {
    const unsigned int key = keys[q];
    if (key == kNoKey) {
      keys[q] = kNoKey;  // int32 -1
      zbuf[q] = DepthCode<T>::bits(T(1));
    } else {
      keys[q] = key >> 1;
      const T d = DepthCode<T>::decode(zbuf[q]);
      zbuf[q] = DepthCode<T>::bits((key & 1u) ? -d : d);  // the flag is only set at depth 0: -0.0
    }
  }
}

int multiprocessors() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0) {
    cudaGetLastError();  // clear the failed query's error; the launches report any real problem
    return 80;
  }
  return sms;
}

// The persistent grid of passes 1 and 2: as many blocks as can be resident at once (so the strided walk
// over the work items is balanced across all of them), at least one per multiprocessor.
template <typename Kernel>
int resident_blocks(Kernel kernel, int sms) {
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0) != cudaSuccess || per_sm < 1) {
    cudaGetLastError();  // clear the failed query's error
    per_sm = 1;
  }
  return sms * (per_sm < kRasterBlocksPerSM ? per_sm : kRasterBlocksPerSM);
}

int grid_for(int64_t n, int max_blocks) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return int(blocks < max_blocks ? (blocks < 1 ? 1 : blocks) : max_blocks);
}

}  // namespace

template <typename T, typename I>
cudaError_t launch_rasterize_count(const RasterProblem<T, I>& p, int64_t* tile_count, cudaStream_t stream) {
  const int64_t n = p.B * p.F;
  if (n == 0) return cudaSuccess;
  count_kernel<T, I><<<grid_for(n, multiprocessors() * kMaxBlocksPerSM), kThreads, 0, stream>>>(p, tile_count);
  return cudaGetLastError();
}

template <typename T, typename I>
cudaError_t launch_rasterize_faces(const RasterProblem<T, I>& p, const int64_t* offsets, int32_t* face_id, T* depth,
                                   cudaStream_t stream) {
  using U = typename DepthCode<T>::U;
  const int64_t pixels = p.B * int64_t(p.H) * p.W;
  if (pixels == 0) return cudaSuccess;
  U* zbuf = reinterpret_cast<U*>(depth);
  unsigned int* keys = reinterpret_cast<unsigned int*>(face_id);
  cudaError_t err = cudaMemsetAsync(zbuf, 0xFF, size_t(pixels) * sizeof(U), stream);
  if (err != cudaSuccess) return err;
  err = cudaMemsetAsync(keys, 0xFF, size_t(pixels) * sizeof(unsigned int), stream);
  if (err != cudaSuccess) return err;
  const int sms = multiprocessors();
  if (p.B * p.F > 0) {
    const int blocks1 = resident_blocks(raster_kernel<T, I, false>, sms);
    raster_kernel<T, I, false><<<blocks1, kThreads, 0, stream>>>(p, offsets, zbuf, keys);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    const int blocks2 = resident_blocks(raster_kernel<T, I, true>, sms);
    raster_kernel<T, I, true><<<blocks2, kThreads, 0, stream>>>(p, offsets, zbuf, keys);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  finish_kernel<T><<<grid_for(pixels, sms * kMaxBlocksPerSM), kThreads, 0, stream>>>(pixels, zbuf, keys);
  return cudaGetLastError();
}

#define VOXRENDER_INSTANTIATE_RASTER(T, I)                                                                     \
  template cudaError_t launch_rasterize_count<T, I>(const RasterProblem<T, I>&, int64_t*, cudaStream_t);      \
  template cudaError_t launch_rasterize_faces<T, I>(const RasterProblem<T, I>&, const int64_t*, int32_t*, T*, \
                                                    cudaStream_t);
VOXRENDER_INSTANTIATE_RASTER(float, int32_t)
VOXRENDER_INSTANTIATE_RASTER(float, int64_t)
VOXRENDER_INSTANTIATE_RASTER(double, int32_t)
VOXRENDER_INSTANTIATE_RASTER(double, int64_t)
#undef VOXRENDER_INSTANTIATE_RASTER

}  // namespace cuda
}  // namespace voxrender
