// The vectorizing exp against the correctly rounded one (std::exp in double).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
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

#if defined(__AVX512F__)
TEST(VecMath, SixteenWideExpGivesTheBitsOfTheVectorizedLoop) {
  // Every 61st float bit pattern with |x| < 110 (about 37 million), the range's ends, ±inf and
  // NaN: vexp16 equals the compiler's vector vexp bit for bit.
  std::vector<float> x;
  for (uint64_t b = 0; b < 0xffffffffull; b += 61) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(b));
    if (std::fabs(f) < 110.0f || std::isnan(f)) x.push_back(f);
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (float f : {-87.3365447f, 88.7228391f, -inf, inf, 0.0f, -0.0f}) x.push_back(f);
  while (x.size() % 16) x.push_back(1.0f);
  std::vector<float> want(x.size()), got(x.size());
#pragma omp simd
  for (size_t i = 0; i < x.size(); ++i) want[i] = kernels::vexp(x[i]);
  for (size_t i = 0; i < x.size(); i += 16)
    _mm512_storeu_ps(got.data() + i, kernels::vexp16(_mm512_loadu_ps(x.data() + i)));
  EXPECT_GT(x.size(), 30000000u);
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i])) << x[i];
}
#endif

}  // namespace parallama
