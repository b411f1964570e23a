#include "train/loss_scale.h"

#include <cmath>
#include <string>

#include "tensor/error.h"

namespace parallama {

namespace {
// Bounds that keep the scale a power of two that fp32 gradients can still carry.
constexpr double kMinScale = 1.0, kMaxScale = 1e30;
}  // namespace

LossScaler::LossScaler(double scale, int window) : enabled_(true), scale_(scale), window_(window) {
  if (!(scale >= kMinScale && scale <= kMaxScale) || window < 1)
    throw Error("loss scaling needs a scale in [1, 1e30] and a window of at least 1 step");
}

bool LossScaler::update(bool finite) {
  if (!enabled_) return true;
  if (!finite) {
    scale_ = std::max(kMinScale, scale_ / 2);
    clean_ = 0;
    ++skipped_;
    return false;
  }
  if (++clean_ >= window_) {
    scale_ = std::min(kMaxScale, scale_ * 2);
    clean_ = 0;
  }
  return true;
}

nlohmann::json LossScaler::to_json() const {
  return {{"scale", scale_}, {"clean_steps", clean_}, {"skipped", skipped_}};
}

void LossScaler::from_json(const nlohmann::json& j, const std::string& source) {
  if (!enabled_) return;
  if (!j.is_object() || !j.contains("scale") || !j["scale"].is_number() ||
      !j.contains("clean_steps") || !j["clean_steps"].is_number_integer())
    throw Error(source + ": the fp16 loss scale state is missing or malformed");
  const double s = j["scale"].get<double>();
  const int64_t c = j["clean_steps"].get<int64_t>();
  if (!(s >= kMinScale && s <= kMaxScale) || c < 0)
    throw Error(source + ": loss scale " + std::to_string(s) + " or clean steps " +
                std::to_string(c) + " out of range");
  scale_ = s, clean_ = c;
}

}  // namespace parallama
