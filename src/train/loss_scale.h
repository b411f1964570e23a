#pragma once
// Dynamic loss scaling for fp16 mixed precision (Micikevicius et al. 2018). fp16 holds values up
// to ±65504 and, below 6e-5, ever fewer bits down to 6e-8: small gradients vanish. Multiplying
// the loss (so every gradient) by a scale S lifts them into range; the optimizer divides by S.
// If any gradient overflowed to inf (or became NaN) the step is skipped, on every rank alike (the
// global gradient norm says so), and S halves; after `window` clean steps in a row S doubles.
#include <nlohmann/json.hpp>

#include <cstdint>

namespace parallama {

class LossScaler {
 public:
  LossScaler() = default;  // disabled: the scale is 1 and every step applies
  LossScaler(double scale, int window);

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  // After the step's gradients were summed: `finite` is whether their global norm is finite.
  // Returns true when the step applies (then the gradients are to be divided by the scale that
  // was in force); false: skip it. Updates the scale for the next step.
  bool update(bool finite);
  int64_t clean_steps() const { return clean_; }  // finite steps since the last change
  int64_t skipped() const { return skipped_; }    // steps skipped in this run

  // For checkpoints: {"scale", "clean_steps", "skipped"}; from_json restores them.
  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j, const std::string& source);

 private:
  bool enabled_ = false;
  double scale_ = 1.0;
  int window_ = 1;
  int64_t clean_ = 0, skipped_ = 0;
};

}  // namespace parallama
