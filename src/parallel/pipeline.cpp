#include "parallel/pipeline.h"

#include <chrono>
#include <cstring>

#include "tensor/error.h"

namespace parallama {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr int kStampFloats = 4;  // micro-batch, virtual stage, direction, payload size
constexpr int kPostAhead = 4;    // receives posted before the actions that need them
constexpr int kEvalMicro = Llama::kForwardOnly;  // the micro-batch id of forward-only batches

}  // namespace

Pipeline::Pipeline(Llama& model, comm::Group pp, PipeSchedule schedule, int virt, int micro)
    : model_(model),
      pp_(std::move(pp)),
      P_(pp_.size()),
      rank_(pp_.rank()),
      virt_(virt),
      micro_(micro),
      n_(model.batch() * model.seq_len() * model.dim()),
      t_origin_(now()) {
  if (model_.num_chunks() != virt_)
    throw Error("internal: the stage holds " + std::to_string(model_.num_chunks()) +
                " model chunks but the schedule runs " + std::to_string(virt_));
  actions_ = pipeline_schedule(schedule, P_, rank_, micro_, virt_);
  if (2 * (virtual_stages(P_, virt_) * micro_ + micro_) + 2 >= 32000)
    throw Error("too many micro-batches × pipeline stages for message tags (keep stages · " +
                std::string("virtual chunks · micro-batches under 16000)"));
  for (size_t i = 0; i < actions_.size(); ++i) {
    const PipeAction& a = actions_[i];
    const int vk = virtual_stage(P_, rank_, a.chunk);
    const bool needs = a.op == PipeOp::Forward ? vk > 0 : vk < virtual_stages(P_, virt_) - 1;
    recv_pos_.push_back(needs ? static_cast<int>(needs_recv_.size()) : -1);
    if (needs) needs_recv_.push_back(static_cast<int>(i));
  }
  last_backward_.assign(virt_, -1);  // the last backward of each chunk completes its gradients
  for (size_t i = 0; i < actions_.size(); ++i)
    if (actions_[i].op == PipeOp::Backward) last_backward_[actions_[i].chunk] = static_cast<int>(i);
}

int Pipeline::tag(int vstage, int micro, bool grad) const {
  return 1 + 2 * (vstage * (micro_ + 1) + (micro == kEvalMicro ? micro_ : micro)) + (grad ? 1 : 0);
}

Pipeline::Buf& Pipeline::free_buf(std::deque<Buf>& pool) {
  for (Buf& b : pool)
    if (!b.busy || (&pool == &send_pool_ && b.req.test())) {
      b.busy = true;
      return b;
    }
  pool.emplace_back();
  Buf& b = pool.back();
  b.data.resize(static_cast<size_t>(n_ + kStampFloats));
  b.busy = true;
  return b;
}

void Pipeline::stamp(Buf& b, int vstage, int micro, bool grad) const {
  float* s = b.data.data() + n_;
  s[0] = static_cast<float>(micro), s[1] = static_cast<float>(vstage);
  s[2] = grad ? 1.0f : 0.0f, s[3] = static_cast<float>(n_);
}

void Pipeline::check_stamp(const float* msg, int vstage, int micro, bool grad) const {
  const float* s = msg + n_;
  if (s[0] != static_cast<float>(micro) || s[1] != static_cast<float>(vstage) ||
      s[2] != (grad ? 1.0f : 0.0f) || s[3] != static_cast<float>(n_))
    throw Error("pipeline rank " + std::to_string(rank_) + ": expected the " +
                (grad ? "gradient" : "activations") + " of micro-batch " + std::to_string(micro) +
                " for virtual stage " + std::to_string(vstage) + " but received those of " +
                "micro-batch " + std::to_string(static_cast<int>(s[0])) + " for stage " +
                std::to_string(static_cast<int>(s[1])) + (s[2] != 0 ? " (gradient)" : ""));
}

void Pipeline::post_receives(int upto) {
  while (next_recv_ < needs_recv_.size() && (static_cast<int>(next_recv_) <= upto ||
                                             pending_.size() < static_cast<size_t>(kPostAhead))) {
    const int i = needs_recv_[next_recv_++];
    const PipeAction& a = actions_[i];
    const int vk = virtual_stage(P_, rank_, a.chunk);
    const bool grad = a.op == PipeOp::Backward;
    const int from = ((grad ? vk + 1 : vk - 1) % P_ + P_) % P_;
    Buf& b = free_buf(recv_pool_);
    b.req = pp_.irecv(b.data.data(), (n_ + kStampFloats) * 4, from, tag(vk, a.micro, grad));
    pending_.push_back({i, &b});
  }
}

const float* Pipeline::wait_receive(int action) {
  post_receives(recv_pos_[action]);  // this action's receive, if not posted yet
  size_t pos = 0;
  while (pos < pending_.size() && pending_[pos].action != action) ++pos;
  if (pos == pending_.size()) throw Error("internal: no receive posted for a pipeline action");
  Buf* b = pending_[pos].buf;
  pending_.erase(pending_.begin() + static_cast<long>(pos));
  const double t0 = now();
  b->req.wait();
  const double t1 = now();
  stats_.recv_s += t1 - t0;
  const PipeAction& a = actions_[action];
  if (t1 - t0 > 1e-5) event(3, a.micro, a.chunk, t0, t1);
  check_stamp(b->data.data(), virtual_stage(P_, rank_, a.chunk), a.micro, a.op == PipeOp::Backward);
  // Read by the model call that follows, before any other receive is posted into it.
  b->busy = false;
  return b->data.data();
}

void Pipeline::send(const float* data, int to_vstage, int micro, bool grad) {
  Buf& b = free_buf(send_pool_);
  std::memcpy(b.data.data(), data, static_cast<size_t>(n_) * sizeof(float));
  stamp(b, to_vstage, micro, grad);
  b.req = pp_.isend(b.data.data(), (n_ + kStampFloats) * 4, to_vstage % P_,
                    tag(to_vstage, micro, grad));
}

void Pipeline::event(int kind, int micro, int chunk, double t0, double t1) {
  if (tracing_) events_.push_back({kind, micro, chunk, t0 - t_origin_, t1 - t_origin_});
}

std::string PipeEvent::name() const {
  const std::string mc = std::to_string(micro) + "." + std::to_string(chunk);
  switch (kind) {
    case 0:
      return "F" + mc;
    case 1:
      return "B" + mc;
    case 2:
      return "send wait";
    case 3:
      return "recv " + mc;
    default:
      return "idle";
  }
}

double Pipeline::step(const ParamBuffer& params, ParamBuffer& grads, const int32_t* tokens,
                      const int32_t* targets, float grad_scale,
                      const std::function<void(int64_t)>& on_final) {
  const int64_t BT = model_.batch() * model_.seq_len();
  stats_ = {};
  model_.reset_peak();
  const double start = now();
  next_recv_ = 0;
  pending_.clear();
  post_receives(-1);
  const int last_v = virtual_stages(P_, virt_) - 1;
  double loss_sum = 0.0;
  double prev_end = start;
  for (size_t i = 0; i < actions_.size(); ++i) {
    const PipeAction& a = actions_[i];
    const int vk = virtual_stage(P_, rank_, a.chunk);
    const int32_t* tok = tokens + a.micro * BT;
    const int32_t* tgt = targets + a.micro * BT;
    const bool fwd = a.op == PipeOp::Forward;
    const bool needs = fwd ? vk > 0 : vk < last_v;
    const float* in = needs ? wait_receive(static_cast<int>(i)) : nullptr;
    const double t0 = now();
    if (t0 - prev_end > 1e-5) event(4, -1, -1, prev_end, t0);
    if (fwd) {
      const float* out = model_.forward_chunk(params, a.chunk, a.micro, tok, tgt, in);
      if (vk == last_v)
        loss_sum += model_.loss_sum();
      else
        send(out, vk + 1, a.micro, false);
    } else {
      const bool final = last_backward_[a.chunk] == static_cast<int>(i);
      const float* din = model_.backward_chunk(params, grads, a.chunk, a.micro, grad_scale, in,
                                               final ? on_final : std::function<void(int64_t)>{});
      if (vk > 0) send(din, vk - 1, a.micro, true);
    }
    const double t1 = now();
    stats_.busy_s += t1 - t0;
    event(fwd ? 0 : 1, a.micro, a.chunk, t0, t1);
    prev_end = t1;
  }
  const double t0 = now();
  for (Buf& b : send_pool_)
    if (b.busy) b.req.wait(), b.busy = false;
  const double t1 = now();
  stats_.send_s = t1 - t0;
  if (t1 - t0 > 1e-5) event(2, -1, -1, t0, t1);
  stats_.step_s = t1 - start;
  stats_.peak_in_flight = model_.peak_in_flight();
  stats_.peak_activation_bytes = model_.peak_activation_bytes();
  return pp_.sum(loss_sum);
}

std::pair<double, int64_t> Pipeline::forward_only(const ParamBuffer& params, const int32_t* tokens,
                                                  const int32_t* targets) {
  const int last_v = virtual_stages(P_, virt_) - 1;
  double loss = 0.0;
  int64_t valid = 0;
  std::vector<float> in(static_cast<size_t>(n_ + kStampFloats));
  for (int c = 0; c < virt_; ++c) {
    const int vk = virtual_stage(P_, rank_, c);
    if (vk > 0) {
      pp_.recv(in.data(), (n_ + kStampFloats) * 4, (vk - 1) % P_, tag(vk, kEvalMicro, false));
      check_stamp(in.data(), vk, kEvalMicro, false);
    }
    const float* out =
        model_.forward_chunk(params, c, kEvalMicro, tokens, targets, vk > 0 ? in.data() : nullptr);
    if (vk == last_v) {
      loss = model_.loss_sum();
      valid = model_.valid_targets();
    } else {
      send(out, vk + 1, kEvalMicro, false);
    }
    model_.discard_chunk(c, kEvalMicro);
  }
  for (Buf& b : send_pool_)
    if (b.busy) b.req.wait(), b.busy = false;
  return {pp_.sum(loss), pp_.sum(valid)};
}

}  // namespace parallama
