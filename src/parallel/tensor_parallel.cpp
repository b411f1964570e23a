#include "parallel/tensor_parallel.h"

#include <cmath>

#include "optim/schedule.h"

namespace parallama {

double global_grad_norm(const ParamBuffer& grads, comm::Group& model, bool counts_replicated) {
  if (model.size() == 1) return grad_norm(grads);
  return std::sqrt(model.sum(grad_sq_sum(grads, counts_replicated)));
}

}  // namespace parallama
