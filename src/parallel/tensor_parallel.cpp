#include "parallel/tensor_parallel.h"

#include <cmath>

#include "optim/schedule.h"

namespace parallama {

double global_grad_norm(const ParamBuffer& grads, comm::Group& tp) {
  if (tp.size() == 1) return grad_norm(grads);
  return std::sqrt(tp.sum(grad_sq_sum(grads, /*replicated=*/tp.rank() == 0)));
}

}  // namespace parallama
