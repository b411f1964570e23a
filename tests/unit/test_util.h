#pragma once
// Helpers for tests: seeded random data, norm-wise relative error, finite differences, error
// messages, and the tiny model.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "model/params.h"
#include "tensor/error.h"

namespace parallama::test {

inline std::vector<float> randn(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ||a − b|| / ||b||, in double.
template <class A, class B>
double rel_err(const A& a, const B& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

// Central finite differences of a scalar function f of x, at every element of x.
template <class F>
std::vector<double> numeric_grad(std::vector<double>& x, F f, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = f();
    x[i] = keep - h;
    const double down = f();
    x[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The message of the Error that f throws ("" when it throws none).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The tiny preset, whole, with seeded parameters and a gradient buffer.
struct TinyModel {
  LlamaConfig cfg = llama_preset("tiny");
  ParamLayout layout{cfg, ModelShard::whole(cfg)};
  ParamBuffer params{layout}, grads{layout};
  explicit TinyModel(uint64_t seed = 3) { init_params(params, seed); }
};

}  // namespace parallama::test
