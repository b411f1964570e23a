#pragma once
// Learning-rate schedule and global-norm gradient clipping.
#include <cstdint>

#include "comm/group.h"
#include "model/params.h"

namespace parallama {

// Linear warmup from lr/warmup to lr over `warmup` steps, then cosine decay to min_lr at
// `total` steps (and min_lr after). Steps count from 1.
float lr_at(int64_t step, float lr, float min_lr, int64_t warmup, int64_t total);

// The L2 norm of all gradients, accumulated in double in a fixed order.
double grad_norm(const ParamBuffer& grads);
// Σ g² over the tensors split across ranks (split_axis ≥ 0) and, when `replicated`, also over
// those every rank holds whole; a tensor-parallel norm adds these over the ranks. A pipeline's
// copy of a tied embedding (tied_copy) never counts: the first stage's table does.
double grad_sq_sum(const ParamBuffer& grads, bool replicated);
// The L2 norm of the whole model's gradient when the ranks of `model` (tensor-parallel slices and
// pipeline stages) share it: every sharded tensor counted on the rank that holds it, every
// replicated tensor (the norm weights) once, on the ranks with counts_replicated, and a last
// stage's copy of a tied embedding not at all.
double global_grad_norm(const ParamBuffer& grads, comm::Group& model, bool counts_replicated);

// Scales every gradient by max_norm / norm when norm > max_norm (max_norm ≤ 0: no clipping).
// Returns the factor applied.
float clip_grads(ParamBuffer& grads, double norm, float max_norm);
// The factor clip_grads would apply, for an optimizer that scales as it reads.
float clip_factor(double norm, float max_norm);

}  // namespace parallama
