// mxfp4lab: tiny extern "C" wrapper around FlashInfer's installed SM90 mixed-GEMM weight
// interleave (moe_gemm_mixed_utils.cu), for capturing golden interleave output on a GPU host
// without building the whole fused_moe_90 module.
//
// Build (mxfp4lab.build.build_interleave_ext): nvcc -shared -Xcompiler -fPIC
//   -gencode=arch=compute_90a,code=sm_90a -I<flashinfer>/data/csrc/nv_internal/tensorrt_llm/
//   kernels/cutlass_kernels/moe_gemm sm90_interleave.cu
// The FlashInfer source is compiled as part of this unit (included, not copied).
#include <cstdint>

#include <cuda_runtime.h>

#include "moe_gemm_mixed_utils.cu"

extern "C" {

// src, dst: device pointers to uint8 [experts, rows, k_elems / 2] (two E2M1 codes per byte).
// Loops experts like FlashInfer's interleave_moe_weights_for_sm90_mixed_gemm binding with
// quant_type 1 (FP4, W4A16), on the legacy default stream.  Returns cudaGetLastError()
// (0 == cudaSuccess); returns cudaErrorInvalidValue for shapes the kernel does not accept
// (rows % 16 != 0, k_elems % 64 != 0, non-positive sizes, null pointers).
int mxfp4lab_interleave_fp4_sm90(const uint8_t* src, uint8_t* dst, int64_t experts, int64_t rows,
                                 int64_t k_elems) {
  if (src == nullptr || dst == nullptr || experts <= 0 || rows <= 0 || k_elems <= 0 ||
      rows % 16 != 0 || k_elems % 64 != 0) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  int64_t const per_expert_bytes = rows * (k_elems / 2);
  for (int64_t e = 0; e < experts; ++e) {
    tensorrt_llm::kernels::cutlass_kernels::interleave_fp4_weights_for_sm90_mixed_gemm(
        const_cast<uint8_t*>(src) + e * per_expert_bytes, dst + e * per_expert_bytes,
        static_cast<int>(rows), static_cast<int>(k_elems), /*stream=*/0);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // extern "C"
