#include "data/loader.h"

#include <numeric>
#include <random>
#include <string>

#include "tensor/error.h"

namespace parallama {

DataLoader::DataLoader(const std::vector<int32_t>& tokens, int64_t T, uint64_t seed, int rank,
                       int world)
    : tokens_(tokens), T_(T), num_samples_(0), seed_(seed), rank_(rank), world_(world) {
  if (T < 1) throw Error("sequence length must be positive");
  if (world < 1 || rank < 0 || rank >= world)
    throw Error("invalid data-parallel rank " + std::to_string(rank));
  const int64_t n = static_cast<int64_t>(tokens.size());
  num_samples_ = n > T ? (n - 1) / T : 0;
  if (num_samples_ == 0)
    throw Error("the data holds " + std::to_string(n) + " tokens, fewer than one sequence of " +
                std::to_string(T + 1));
}

void DataLoader::set_position(int64_t p) {
  if (p < 0) throw Error("data position " + std::to_string(p) + " is negative");
  position_ = p;
}

void seeded_permutation(std::vector<int64_t>& order, int64_t n, uint64_t rng_seed) {
  // Fisher-Yates with a fixed generator and unbiased bounded draws: the same order on every
  // platform and standard library.
  std::mt19937_64 rng(rng_seed);
  order.resize(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  for (int64_t j = n - 1; j > 0; --j) {
    const uint64_t range = static_cast<uint64_t>(j) + 1;
    const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t r;
    do r = rng();
    while (r >= limit);
    std::swap(order[j], order[r % range]);
  }
}

int64_t DataLoader::sample_at(int64_t g) {
  if (g < 0) throw Error("sample " + std::to_string(g) + " is negative");
  const int64_t epoch = g / num_samples_, i = g % num_samples_;
  Perm& slot = cache_[epoch & 1];
  if (slot.epoch != epoch) {
    seeded_permutation(slot.order, num_samples_,
                       seed_ * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(epoch) + 1);
    slot.epoch = epoch;
  }
  return slot.order[i];
}

void DataLoader::micro_batch(int k, int64_t B, int32_t* tokens, int32_t* targets) {
  global_micro_batch(static_cast<int64_t>(k) * world_ + rank_, B, tokens, targets);
}

void DataLoader::global_micro_batch(int64_t m, int64_t B, int32_t* tokens, int32_t* targets) {
  const int64_t first = position_ + m * B;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* src = tokens_.data() + sample_at(first + b) * T_;
    for (int64_t t = 0; t < T_; ++t) {
      tokens[b * T_ + t] = src[t];
      targets[b * T_ + t] = src[t + 1];
    }
  }
}

}  // namespace parallama
