#pragma once
// The planner behind `parallama plan`: for a model and a layout, on paper (nothing is
// allocated, so published shapes such as llama3-8b plan as well as the small ones), each rank's
// memory (parameters, gradients, optimizer state, activations), its communication per step on
// each mesh axis, the pipeline bubble, and an estimated step time and MFU on a given device.
//
// Memory follows what this program allocates: parameters are the real shard's flat buffer
// (ParamLayout, padding included), activations are what Llama allocates per micro-batch slot per
// model chunk plus its shared scratch (model/llama.cpp), and the slots a chunk holds are counted
// by walking the real pipeline schedule (parallel/schedule.h), and ZeRO's shards are the real
// division of the gradient buckets (parallel/zero.h). Communication counts bytes sent plus
// received on each mesh axis, the way comm::Group's counters and `bench` do (a ring all-reduce
// moves 2(n-1)/n of its buffer each way, reduce-scatter and all-gather (n-1)/n of the whole,
// send and receive exactly their message).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/llama.h"
#include "model/shard.h"
#include "parallel/config.h"
#include "parallel/mesh.h"
#include "parallel/schedule.h"

namespace parallama {

// Precision (model/llama.h) as the planner counts it. fp32: parameters, gradients, optimizer
// moments and activations in 4 bytes. bf16 and fp16: mixed precision as in the ZeRO paper: 16-bit
// parameters, gradients and activations, an fp32 master copy of the parameters beside the fp32
// optimizer moments.
double param_bytes(Precision p);       // bytes per parameter (also per gradient element)
double activation_bytes(Precision p);  // bytes per activation element

// The model state of one data-parallel rank, in bytes.
struct StateBytes {
  double params = 0, grads = 0, optimizer = 0;
  double total() const { return params + grads + optimizer; }
};

// Model state for `numel` parameters held by one rank of a data-parallel group of `dp`, with
// `moments` optimizer moments per parameter (AdamW 2, SGD 1) under ZeRO stage `zero`:
//   bytes per parameter  P + G + K,  with P = G = 4 (fp32) or 2 (bf16) and
//   K = 4·moments (fp32) or 4 + 4·moments (bf16: the fp32 master copy too; AdamW: K = 12);
//   ZeRO-1 divides K by dp; ZeRO-2 also G (the kept gradient shard; the whole gradient buffer is
//   resident only during backward, until its reduce-scatter).
// This is the ZeRO paper's accounting (its Figure 1), which the per-rank plan below follows
// with the real shards (each gradient bucket divided over dp, parallel/zero.h).
StateBytes model_state_bytes(double numel, Precision p, int moments, int zero, int dp);

// Micro-batch slots that each model chunk of pipeline rank `rank` holds at its peak, by walking
// the schedule's action list (each chunk keeps at least the one slot allocated up front). A
// single stage runs its micro-batches one after the other: one slot.
std::vector<int> slots_per_chunk(PipeSchedule s, int stages, int rank, int micro, int virt);

// Bytes of activations a rank holds: `slots[c]` slots of chunk c of `shard` (each keeping its
// layers' activations from forward to backward, and for the head chunk the logits and loss
// buffers) plus the scratch shared by all (rotary tables, backward buffers). With `recompute`
// a slot keeps only each layer's input and the scratch holds one layer's activations, redone in
// backward (attention: a slot keeps all but the attention output and its log-sum-exp, of which
// the scratch holds one layer's). Attention keeps no (B, H, T, T) weights, as the model does.
double activation_bytes(const LlamaConfig& m, const ModelShard& shard, int64_t B, int64_t T,
                        const std::vector<int>& slots, Recompute recompute, Precision p);

// Model FLOPs per token of training at sequence length seq_len, as bench, plan and the run report
// count them: 6·N + 12·L·T·C (N: the matmul parameters, output head included).
double model_flops_per_token(const LlamaConfig& m, int64_t seq_len);
// The idle share of a pipeline's step: (p - 1) / (v·m + p - 1) for p stages of v chunks each
// and m micro-batches (0 for one stage).
double pipeline_bubble(int stages, int chunks, int64_t micro_batches);

struct PlanInput {
  LlamaConfig model;
  MeshShape shape;  // dp, tp, pp, pp_layers, pp_virtual, seq_len
  PipeSchedule schedule = PipeSchedule::OneFOneB;
  int64_t batch = 1, seq_len = 1;  // B, T of one micro-batch
  int micro_batches = 1;           // per optimizer step, per data-parallel replica
  int zero = 0;
  Recompute recompute = Recompute::none;
  Precision precision = Precision::fp32;
  int moments = 2;         // optimizer moments per parameter: AdamW 2, SGD 1
  double bucket_mb = 4.0;  // data-parallel all-reduce bucket
  // The untied embedding's gradient all-reduced as the rows of the step's tokens (without ZeRO):
  // the plan counts at most one row per token of the step over every replica, at most V.
  bool sparse_embedding = false;
  // How the gradients travel over the data-parallel group (parallel.compress): bytes per value on
  // the wire 4 (or the gradients' own), 2 (bf16) or 1 + 4/256 (int8's values and block scales);
  // int8 also keeps a residual of 4 bytes per parameter (error feedback); powersgd sends each
  // matrix's two fp32 factors of rank powersgd_rank (the rest whole in fp32) and keeps a residual
  // and the factors' warm start.
  Compress compress = Compress::none;
  int powersgd_rank = 4;
};

// The device and its links. Every default is stated by `parallama plan`.
struct Device {
  double tflops = 0;                      // dense peak, TFLOP/s; 0: an H100 SXM's for the precision
  double efficiency = 0.7;                // share of the peak the kernels sustain (an assumption)
  double link_gbps = 400;                 // per rank, between machines (dp and pp), Gbit/s
  double tp_link_gbps = 3600;             // per rank, within a machine (tp), Gbit/s
  double memory_gb = 80;                  // per device, GB (1e9 bytes)
  double peak_tflops(Precision p) const;  // tflops, or 989 (bf16) / 495 (fp32 as TF32)
  // Measured (a profile, plan/profile.h); empty or 0: not modelled, the assumptions above.
  std::vector<std::pair<double, double>> gemm_gflops;  // GEMM size -> GFLOP/s, increasing size
  double memory_gbps = 0;                              // streaming, per rank
  double latency_us = 0, tp_latency_us = 0;            // per message: between, within machines
  // Ranks' threads per core of a host (1: a core each or fewer). Above 1 a rank that waits
  // (a pipeline bubble) gives its core to the others, which then run that much faster.
  double oversubscription = 1;
  double page_fault_us = 0;  // a page of memory handed back and touched again
  bool measured() const { return !gemm_gflops.empty(); }
};

// The time model's terms, each on its own (a unit test each):
// FLOP/s of an M×N×K GEMM: the measured curve at size cbrt(M·N·K), log-linear between its
// points and flat beyond its ends; without one the peak times the efficiency.
double gemm_rate(const Device& d, Precision p, double m, double n, double k);
// Seconds of one micro-batch's forward and backward matrix multiplies of shard's layers, the
// embedding's and the head's (N tokens; attention's two batched products per head), each at its
// own shape's rate; a recomputed forward counted again.
double matmul_seconds(const Device& d, Precision p, const LlamaConfig& m, const ModelShard& shard,
                      int64_t batch, int64_t seq_len, Recompute recompute);
// Seconds of the streaming work of one micro-batch (norms, rotary, SwiGLU, residuals, the loss's
// softmax: bytes per token and layer as the kernels read and write them) and of one optimizer
// update of `owned` parameters; 0 without a measured memory bandwidth.
double stream_seconds(const Device& d, Precision p, const LlamaConfig& m, const ModelShard& shard,
                      int64_t batch, int64_t seq_len);
double optimizer_seconds(const Device& d, Precision p, int moments, double owned);
// Seconds of latency of a ring collective over n ranks (2(n-1) steps for an all-reduce, n-1 for
// a reduce-scatter or an all-gather), `latency_us` a step.
double ring_latency_s(int n, bool all_reduce, double latency_us);
// Seconds to take back `bytes` of memory handed back to the system (ZeRO-2's gradient buffer,
// released after each step's reduce-scatter): a page fault per 4 KiB page.
double refault_seconds(const Device& d, double bytes);

// Ranks that plan alike: one pipeline stage, and within it the tensor-parallel ranks whose
// shards have the same sizes (an uneven vocabulary split makes the first ranks one row larger).
struct RankGroup {
  int stage = 0;
  std::vector<int> ranks;  // world ranks, increasing
  ModelShard shard;        // of the group's first rank
  int64_t numel = 0;       // floats of its flat parameter buffer (padding included)
  int64_t owned = 0;       // ZeRO: floats of the buckets' pieces that dp rank 0 owns (the most)
  std::vector<int> slots;  // micro-batch slots per chunk
  StateBytes state;
  double activations = 0;
  double grads_in_backward = 0;  // ZeRO-2: the whole gradient buffer, resident during backward
  double dp_bytes = 0, tp_bytes = 0, pp_bytes = 0;  // sent + received per step (twice the sent)
  double flops = 0;                                 // executed per step, recompute included
  double compute_s = 0, tp_exposed_s = 0, dp_s = 0, dp_exposed_s = 0;
  double memory() const { return state.total() + activations; }
};

struct Plan {
  PlanInput in;
  Device device;
  std::vector<RankGroup> groups;  // by stage, then tensor-parallel rank
  std::vector<int> group_of_rank;
  int largest = 0;          // the group with the most memory
  double bubble = 0;        // (p - 1) / (v·m + p - 1)
  double pp_exposed_s = 0;  // pipeline fill and drain transfers, tied-embedding sum
  double step_s = 0;        // estimated
  double model_flops = 0;   // per step, all ranks: (6·N + 12·L·T·C) per token, as bench
  double mfu = 0;           // model_flops / (ranks · step_s · peak)
  // The FLOPs executed (causal attention, recompute included), and their share of the peak.
  double hardware_flops = 0, hfu = 0;
  double tokens_per_step = 0;  // all replicas
};

// Throws Error for a layout that does not divide the model (as training would).
Plan make_plan(const PlanInput& in, const Device& device);

}  // namespace parallama
