#pragma once
// Tensor-parallel helpers outside the model: the layers themselves (column- and row-parallel
// projections, vocabulary-parallel embedding, head and cross-entropy) live in model/llama.
#include "comm/group.h"
#include "model/params.h"

namespace parallama {

// The L2 norm of the whole model's gradient when the ranks of `model` (tensor-parallel slices and
// pipeline stages) share it: every sharded tensor counted on the rank that holds it, every
// replicated tensor (the norm weights) once, on the ranks with counts_replicated, and a last
// stage's copy of a tied embedding not at all.
double global_grad_norm(const ParamBuffer& grads, comm::Group& model, bool counts_replicated);

}  // namespace parallama
