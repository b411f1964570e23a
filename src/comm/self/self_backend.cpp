#include "comm/self/self_backend.h"

#include <cstring>

#include "tensor/error.h"

namespace parallama::comm {

namespace {
struct Done : PendingOp {
  bool test() override { return true; }
};
}  // namespace

std::unique_ptr<PendingOp> SelfBackend::done() {
  return std::make_unique<Done>();
}

std::unique_ptr<PendingOp> SelfBackend::reduce_scatter(const void* in, void* out,
                                                       const std::vector<int64_t>& c, DType t) {
  if (in != out) std::memmove(out, in, c[0] * dtype_size(t));
  return done();
}

std::unique_ptr<PendingOp> SelfBackend::all_gather(const void* in, void* out,
                                                   const std::vector<int64_t>& c, DType t) {
  if (in != out) std::memmove(out, in, c[0] * dtype_size(t));
  return done();
}

std::unique_ptr<PendingOp> SelfBackend::send(const void*, int64_t, int peer, int) {
  throw Error("send to rank " + std::to_string(peer) + " in a group of one");
}

std::unique_ptr<PendingOp> SelfBackend::recv(void*, int64_t, int peer, int) {
  throw Error("recv from rank " + std::to_string(peer) + " in a group of one");
}

}  // namespace parallama::comm
