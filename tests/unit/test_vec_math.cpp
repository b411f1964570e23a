// The vectorizing exp against the correctly rounded one (std::exp in double).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/vec_math.h"

namespace parallama {

TEST(VecMath, ExpIsWithinTwoUlpEverywhereAndHandlesTheEdges) {
  double worst = 0;
  float at = 0;
  int checked = 0;
  for (float x = -87.3f; x < 88.7f; x += 1e-4f * (1.0f + std::fabs(x)), ++checked) {
    const double want = std::exp(static_cast<double>(x));
    const float rounded = static_cast<float>(want);
    const double ulp = std::nextafter(rounded, std::numeric_limits<float>::infinity()) - rounded;
    const double e = std::fabs(kernels::vexp(x) - want) / ulp;
    if (e > worst) worst = e, at = x;
  }
  EXPECT_GT(checked, 80000);
  EXPECT_LE(worst, 2.0) << "at x = " << at;
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(kernels::vexp(-inf), 0.0f);  // masked attention scores
  EXPECT_EQ(kernels::vexp(-100.0f), 0.0f);
  EXPECT_EQ(kernels::vexp(100.0f), inf);
  EXPECT_EQ(kernels::vexp(inf), inf);
  EXPECT_TRUE(std::isnan(kernels::vexp(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(kernels::vexp(0.0f), 1.0f);
  // The same values in a vectorized loop as one at a time.
  std::vector<float> x(1000), y(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = -50.0f + 0.1f * static_cast<float>(i);
#pragma omp simd
  for (size_t i = 0; i < x.size(); ++i) y[i] = kernels::vexp(x[i]);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], kernels::vexp(x[i])) << x[i];
}

}  // namespace parallama
