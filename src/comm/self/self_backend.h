#pragma once
// The size-1 backend: every collective is the identity and completes at once.
#include "comm/group.h"

namespace parallama::comm {

class SelfBackend : public Backend {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "self"; }
  std::shared_ptr<Backend> split(int, int) override { return std::make_shared<SelfBackend>(); }
  std::unique_ptr<PendingOp> all_reduce(void*, int64_t, DType, ReduceOp) override { return done(); }
  std::unique_ptr<PendingOp> reduce_scatter(const void* in, void* out,
                                            const std::vector<int64_t>& c, DType t) override;
  std::unique_ptr<PendingOp> all_gather(const void* in, void* out, const std::vector<int64_t>& c,
                                        DType t) override;
  std::unique_ptr<PendingOp> broadcast(void*, int64_t, DType, int) override { return done(); }
  std::unique_ptr<PendingOp> send(const void*, int64_t, int peer, int) override;
  std::unique_ptr<PendingOp> recv(void*, int64_t, int peer, int) override;
  std::unique_ptr<PendingOp> barrier() override { return done(); }

 private:
  static std::unique_ptr<PendingOp> done();
};

}  // namespace parallama::comm
