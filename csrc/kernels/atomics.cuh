// Atomic addition for the kernels' backward passes (float and double). Every architecture the build
// targets (sm_70 and later; CUDA 12/13 dropped the older ones) has a native double atomicAdd.
#pragma once

namespace voxrender {
namespace cuda {

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }

}  // namespace cuda
}  // namespace voxrender
