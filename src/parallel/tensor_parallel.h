#pragma once
// Tensor-parallel helpers outside the model: the layers themselves (column- and row-parallel
// projections, vocabulary-parallel embedding, head and cross-entropy) live in model/llama.
#include "comm/group.h"
#include "model/params.h"

namespace parallama {

// The L2 norm of the whole model's gradient when `tp` shares it: every sharded tensor counted on
// the rank that holds it, every replicated tensor (the norm weights) once.
double global_grad_norm(const ParamBuffer& grads, comm::Group& tp);

}  // namespace parallama
