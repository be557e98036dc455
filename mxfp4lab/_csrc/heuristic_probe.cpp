// mxfp4lab: host-only probe that prints the SM90 candidate configs FlashInfer's heuristic
// (cutlass_heuristic.cpp, compiled alongside with the same defines as the module) offers the
// W4A16 mixed grouped GEMM: get_candidate_configs(90, 1, WEIGHT_ONLY | GROUPED_GEMM | HOPPER).
// One line per config, in mxfp4lab.build.MixedConfig label form ("128x64x128_coop_1x1x1").
// Used by mxfp4lab.build.heuristic_candidates() to prove candidates == compiled set on a CPU.
#include <cstdio>

#include "tensorrt_llm/kernels/cutlass_kernels/cutlass_heuristic.h"

using tensorrt_llm::cutlass_extensions::CutlassGemmConfig;
using tensorrt_llm::cutlass_extensions::MainloopScheduleType;

int main() {
  auto const param = static_cast<CutlassGemmConfig::CandidateConfigTypeParam>(
      CutlassGemmConfig::WEIGHT_ONLY | CutlassGemmConfig::GROUPED_GEMM | CutlassGemmConfig::HOPPER);
  auto configs = tensorrt_llm::kernels::cutlass_kernels::get_candidate_configs(90, 1, param);
  for (auto const& c : configs) {
    auto const [m, n, k] = tensorrt_llm::cutlass_extensions::enum_to_shape_tuple(c.tile_config_sm90);
    auto const [cm, cn, ck] = tensorrt_llm::cutlass_extensions::enum_to_shape_tuple(c.cluster_shape);
    char const* sched = c.mainloop_schedule == MainloopScheduleType::COOPERATIVE ? "coop"
                        : c.mainloop_schedule == MainloopScheduleType::PINGPONG  ? "pingpong"
                                                                                 : "other";
    std::printf("%dx%dx%d_%s_%dx%dx%d\n", m, n, k, sched, cm, cn, ck);
  }
  return 0;
}
