#pragma once
// The matrix-multiply peak of this machine, as bench and the run report count MFU against it.
#include "model/llama.h"

namespace parallama {

// Best of several timed square GEMMs (n = 2048), in GFLOP/s, in the precision of the run's
// matrix multiplies: fp32 (sgemm), bf16 (bf16 operands, fp32 sums) or fp16 (as the model runs
// them: on CPUs without fp16 units, widened to fp32).
// Ranks that share a machine measure at once, so that each gets its share of it.
double measure_gemm_peak(Precision p);

}  // namespace parallama
