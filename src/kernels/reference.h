#pragma once
// Slow scalar references for every kernel, written for clarity, templated on the scalar type so
// that tests can run them in double precision (for finite-difference checks) or in float.
// Layouts and shape vocabulary are those of the fast kernels; strides are always dense here.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace parallama::ref {

// y (N, O) = x (N, I) · w (O, I)ᵀ
template <class S>
void linear_forward(S* y, const S* x, const S* w, int64_t N, int64_t I, int64_t O) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      S s = 0;
      for (int64_t i = 0; i < I; ++i) s += x[n * I + i] * w[o * I + i];
      y[n * O + o] = s;
    }
}
// dx (N, I) =; dw (O, I) +=
template <class S>
void linear_backward(S* dx, S* dw, const S* dy, const S* x, const S* w, int64_t N, int64_t I,
                     int64_t O) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < I; ++i) {
      S s = 0;
      for (int64_t o = 0; o < O; ++o) s += dy[n * O + o] * w[o * I + i];
      dx[n * I + i] = s;
    }
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t n = 0; n < N; ++n) dw[o * I + i] += dy[n * O + o] * x[n * I + i];
}

// out (N, C), rstd (N); x (N, C), w (C)
template <class S>
void rmsnorm_forward(S* out, S* rstd, const S* x, const S* w, int64_t N, int64_t C, S eps) {
  for (int64_t n = 0; n < N; ++n) {
    S ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    rstd[n] = S(1) / std::sqrt(ss / S(C) + eps);
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = x[n * C + c] * rstd[n] * w[c];
  }
}
// dx (N, C) =; dw (C) +=
template <class S>
void rmsnorm_backward(S* dx, S* dw, const S* dout, const S* x, const S* w, const S* rstd, int64_t N,
                      int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    const S r = rstd[n];
    S dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += dout[n * C + c] * w[c] * x[n * C + c];
    for (int64_t c = 0; c < C; ++c) {
      dx[n * C + c] = dout[n * C + c] * w[c] * r - x[n * C + c] * dot * r * r * r / S(C);
      dw[c] += dout[n * C + c] * x[n * C + c] * r;
    }
  }
}

// out (N, C) = table (V, C)[tokens]
template <class S>
void embedding_forward(S* out, const int32_t* tokens, const S* table, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = table[tokens[n] * C + c];
}
template <class S>
void embedding_backward(S* dtable, const S* dout, const int32_t* tokens, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) dtable[tokens[n] * C + c] += dout[n * C + c];
}

// x (B, T, NH, D) dense, rotated in place, HF rotate_half convention, positions 0..T-1.
// The angle is formed in float exactly as the fast table does, then used in S.
template <class S>
void rope_apply(S* x, int64_t B, int64_t T, int64_t NH, int64_t D, float theta, S sign) {
  const int64_t half = D / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const float inv_freq = 1.0f / std::pow(theta, float(2 * i) / float(D));
          const S ang = S(float(t) * inv_freq);
          S* v = x + ((b * T + t) * NH + h) * D;
          const S a = v[i], c = v[i + half];
          v[i] = a * std::cos(ang) - c * sign * std::sin(ang);
          v[i + half] = c * std::cos(ang) + a * sign * std::sin(ang);
        }
}
template <class S>
void rope_forward(S* x, int64_t B, int64_t T, int64_t NH, int64_t D, float theta) {
  rope_apply(x, B, T, NH, D, theta, S(1));
}
template <class S>
void rope_backward(S* dx, int64_t B, int64_t T, int64_t NH, int64_t D, float theta) {
  rope_apply(dx, B, T, NH, D, theta, S(-1));
}

// out (B, T, H, D); att (B, H, T, T); q (B, T, H, D); k, v (B, T, KVH, D); all dense
template <class S>
void attention_forward(S* out, S* att, const S* q, const S* k, const S* v, int64_t B, int64_t T,
                       int64_t H, int64_t KVH, int64_t D) {
  const S scale = S(1) / std::sqrt(S(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KVH);
      for (int64_t t = 0; t < T; ++t) {
        S* p = att + ((b * H + h) * T + t) * T;
        S mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < T; ++j) {
          if (j > t) {
            p[j] = 0;
            continue;
          }
          S s = 0;
          for (int64_t i = 0; i < D; ++i)
            s += q[((b * T + t) * H + h) * D + i] * k[((b * T + j) * KVH + g) * D + i];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = 0; j <= t; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int64_t j = 0; j <= t; ++j) p[j] /= sum;
        for (int64_t i = 0; i < D; ++i) {
          S o = 0;
          for (int64_t j = 0; j <= t; ++j) o += p[j] * v[((b * T + j) * KVH + g) * D + i];
          out[((b * T + t) * H + h) * D + i] = o;
        }
      }
    }
}
// dq (B, T, H, D), dk, dv (B, T, KVH, D) =
template <class S>
void attention_backward(S* dq, S* dk, S* dv, const S* dout, const S* att, const S* q, const S* k,
                        const S* v, int64_t B, int64_t T, int64_t H, int64_t KVH, int64_t D) {
  const S scale = S(1) / std::sqrt(S(D));
  for (int64_t i = 0; i < B * T * H * D; ++i) dq[i] = 0;
  for (int64_t i = 0; i < B * T * KVH * D; ++i) dk[i] = dv[i] = 0;
  std::vector<S> dp(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KVH);
      for (int64_t t = 0; t < T; ++t) {
        const S* p = att + ((b * H + h) * T + t) * T;
        const S* go = dout + ((b * T + t) * H + h) * D;
        S s = 0;
        for (int64_t j = 0; j <= t; ++j) {
          dp[j] = 0;
          for (int64_t i = 0; i < D; ++i) dp[j] += go[i] * v[((b * T + j) * KVH + g) * D + i];
          s += p[j] * dp[j];
        }
        for (int64_t j = 0; j <= t; ++j) {
          const S ds = p[j] * (dp[j] - s) * scale;
          for (int64_t i = 0; i < D; ++i) {
            dq[((b * T + t) * H + h) * D + i] += ds * k[((b * T + j) * KVH + g) * D + i];
            dk[((b * T + j) * KVH + g) * D + i] += ds * q[((b * T + t) * H + h) * D + i];
            dv[((b * T + j) * KVH + g) * D + i] += p[j] * go[i];
          }
        }
      }
    }
}

// out (N, F); gu (N, 2F) = [gate | up]
template <class S>
void swiglu_forward(S* out, const S* gu, int64_t N, int64_t F) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t f = 0; f < F; ++f) {
      const S g = gu[n * 2 * F + f], u = gu[n * 2 * F + F + f];
      out[n * F + f] = g / (S(1) + std::exp(-g)) * u;
    }
}
template <class S>
void swiglu_backward(S* dgu, const S* dout, const S* gu, int64_t N, int64_t F) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t f = 0; f < F; ++f) {
      const S g = gu[n * 2 * F + f], u = gu[n * 2 * F + F + f], d = dout[n * F + f];
      const S sig = S(1) / (S(1) + std::exp(-g));
      dgu[n * 2 * F + f] = d * u * (sig + g * sig * (S(1) - sig));
      dgu[n * 2 * F + F + f] = d * g * sig;
    }
}

// losses (N), logits (N, V), targets (N) with -100 ignored
template <class S>
void cross_entropy_forward(S* losses, const S* logits, const int32_t* targets, int64_t N,
                           int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] == -100) {
      losses[n] = 0;
      continue;
    }
    S mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, logits[n * V + v]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[n * V + v] - mx);
    losses[n] = mx + std::log(sum) - logits[n * V + targets[n]];
  }
}
template <class S>
void cross_entropy_backward(S* dlogits, const S* logits, const int32_t* targets, S dloss, int64_t N,
                            int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    S mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, logits[n * V + v]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[n * V + v] - mx);
    for (int64_t v = 0; v < V; ++v) {
      const S p = std::exp(logits[n * V + v] - mx) / sum;
      dlogits[n * V + v] = targets[n] == -100 ? S(0) : (p - S(v == targets[n])) * dloss;
    }
  }
}

// Optimizer updates, one element at a time, in double.
inline void adamw_update(float* p, float* m, float* v, const float* g, int64_t n, double lr,
                         double b1, double b2, double eps, double wd, int64_t step) {
  for (int64_t i = 0; i < n; ++i) {
    double pi = p[i] * (1.0 - lr * wd);
    const double mi = b1 * m[i] + (1 - b1) * g[i], vi = b2 * v[i] + (1 - b2) * double(g[i]) * g[i];
    const double mhat = mi / (1 - std::pow(b1, step)), vhat = vi / (1 - std::pow(b2, step));
    pi -= lr * mhat / (std::sqrt(vhat) + eps);
    p[i] = float(pi), m[i] = float(mi), v[i] = float(vi);
  }
}
inline void sgd_update(float* p, float* buf, const float* g, int64_t n, double lr, double mu,
                       double damp, double wd, bool nesterov, bool first) {
  for (int64_t i = 0; i < n; ++i) {
    const double d = g[i] + wd * p[i];
    double step = d;
    if (mu != 0) {
      const double b = first ? d : mu * buf[i] + (1 - damp) * d;
      buf[i] = float(b);
      step = nesterov ? d + mu * b : b;
    }
    p[i] = float(p[i] - lr * step);
  }
}

}  // namespace parallama::ref
