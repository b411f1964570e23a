#pragma once
// The automatic layout: every valid way to run a model on a number of ranks (dp × tp × pp,
// virtual stages and schedule, ZeRO stage, micro-batch size and count, recompute, precision when
// allowed) planned with make_plan on a device (a measured profile, plan/profile.h), those that do
// not fit in its memory dropped, the rest ranked by predicted step time. The global batch and
// sequence length are fixed, so every candidate trains on the same samples in the same order:
// only the speed differs.
#include <string>
#include <vector>

#include "plan/plan.h"

namespace parallama {

struct AutoInput {
  PlanInput base;            // model, optimizer moments, bucket size; layout fields are chosen
  int64_t global_batch = 1;  // sequences per optimizer step, over all replicas
  int ranks = 1, ranks_per_host = 1;
  std::vector<Precision> precisions = {Precision::fp32};
  int max_virtual = 2;  // virtual stages per pipeline rank tried: 1 .. max_virtual
};

struct Candidate {
  PlanInput in;
  double step_s = 0, tokens_per_s = 0;
  double memory = 0;     // bytes on the rank that holds the most (ZeRO-2: its backward peak)
  bool fits = false;     // memory within the device's
  std::string dominant;  // what takes most of the step: compute, tp, bubble, dp, pp
  double terms[5] = {};  // seconds of each, in that order
};

struct AutoResult {
  std::vector<Candidate> valid;  // fitting ones first, each part by predicted step time
  int considered = 0;            // layouts enumerated (invalid ones included)
};

// Tensor parallelism stays within a host (tp divides ranks_per_host). Throws Error when the
// ranks do not divide into hosts or the global batch is not positive.
AutoResult search_layouts(const AutoInput& in, const Device& device);

// "dp 2 x tp 1 x pp 2 (v 2, interleaved), ZeRO-1, 4 x 2 sequences, recompute none, fp32"
std::string layout_text(const PlanInput& in);

}  // namespace parallama
