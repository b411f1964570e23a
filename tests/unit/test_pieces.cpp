// Checkpoints written by every rank (io/pieces.h): the pieces of tensor-parallel slices and ZeRO
// shards, indexed, read back whole and in slices exactly as the whole files hold them, and an
// index that does not add up refused.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/param_io.h"
#include "io/pieces.h"
#include "parallel/zero.h"
#include "scratch_dir.h"
#include "test_util.h"

namespace parallama {

namespace {

class Pieces : public test::ScratchDirTest {
 protected:
  // The tiny model (untied) and AdamW state with seeded values, saved whole; then the pieces of
  // tp 2 × dp 3 ranks under ZeRO (rank (d · 2 + t)), each rank's slice read from the whole
  // files, written into dir_/ckpt.
  void SetUp() override {
    ScratchDirTest::SetUp();
    cfg_.tie_embeddings = false;
    const ParamLayout whole(cfg_, ModelShard::whole(cfg_));
    ParamBuffer p(whole);
    init_params(p, 5);
    Optimizer o(whole, oc_);
    for (int i = 0; i < o.num_states(); ++i) {
      const auto v = test::randn(p.size(), 7 + i);
      std::copy(v.begin(), v.end(), o.state(i));
    }
    o.set_steps_taken(9);
    io::save_params(p, file("model.safetensors"));
    comm::Group one;
    io::save_optimizer(o, file("optimizer.safetensors"), one, one, true);
    std::filesystem::create_directories(ckpt());
    for (int t = 0; t < 2; ++t) {
      const ParamLayout slice(cfg_, ModelShard{0, cfg_.n_layers, true, true, t, 2});
      ParamBuffer sp(slice);
      io::load_params(sp, file("model.safetensors"));
      for (int d = 0; d < 3; ++d) {
        Optimizer so(slice, oc_, make_zero_plan(slice, 3, d, 3000).runs);
        io::load_optimizer(so, file("optimizer.safetensors"));
        io::write_rank_pieces(ckpt(), d * 2 + t, sp, so, io::PieceShare{d, 3});
        if (t == 0 && d == 0) last_ = std::make_unique<Optimizer>(slice, oc_);
      }
    }
    last_->set_steps_taken(9);
  }
  std::filesystem::path ckpt() const { return dir_ / "ckpt"; }

  LlamaConfig cfg_ = llama_preset("tiny");
  OptimConfig oc_;
  std::unique_ptr<Optimizer> last_;  // for the index's optimizer name and step
};

}  // namespace

TEST_F(Pieces, ReadBackAsTheWholeFilesHoldThem) {
  const auto sums = io::make_piece_index(ckpt(), 6, cfg_, *last_);
  EXPECT_EQ(sums.size(), 12u);  // a model and an optimizer file from each of the 6 ranks
  for (const char* kind : {"model", "optimizer"}) {
    const io::SafeTensorsReader whole(file(std::string(kind) + ".safetensors"));
    const io::PieceSource pieces(ckpt().string(), kind);
    EXPECT_EQ(pieces.metadata(), whole.metadata()) << kind;
    for (const io::TensorInfo& t : whole.tensors()) {
      ASSERT_TRUE(pieces.has(t.name)) << t.name;
      std::vector<float> want(static_cast<size_t>(numel(t.shape))), got(want.size(), -1.0f);
      whole.read_f32(t.name, want.data(), t.shape);
      pieces.read_f32(t.name, got.data(), t.shape);
      EXPECT_EQ(want, got) << t.name;
      // A slice on the last axis crosses the pieces' boundaries of either split.
      const int axis = static_cast<int>(t.shape.size()) - 1;
      const int64_t n = t.shape[axis], b = n / 3, c = n / 2;
      Shape part = t.shape;
      part[axis] = c;
      std::vector<float> ws(static_cast<size_t>(numel(part))), gs(ws.size(), -1.0f);
      whole.read_f32_slice(t.name, ws.data(), t.shape, axis, b, c);
      pieces.read_f32_slice(t.name, gs.data(), t.shape, axis, b, c);
      EXPECT_EQ(ws, gs) << t.name;
    }
  }
}

TEST_F(Pieces, IndexThatDoesNotAddUpIsRefused) {
  // A rank's part missing: named.
  std::filesystem::rename(ckpt() / io::part_file(4), dir_ / "part4");
  EXPECT_NE(
      test::error_of([&] { io::make_piece_index(ckpt(), 6, cfg_, *last_); }).find("rank 4's part"),
      std::string::npos);
  // Given twice (a rank's pieces counted twice): the sizes do not add up.
  std::filesystem::copy_file(ckpt() / io::part_file(5), ckpt() / io::part_file(4));
  EXPECT_NE(
      test::error_of([&] { io::make_piece_index(ckpt(), 6, cfg_, *last_); }).find("elements of"),
      std::string::npos);
  // An index whose piece lies outside its tensor.
  std::filesystem::copy_file(dir_ / "part4", ckpt() / io::part_file(4),
                             std::filesystem::copy_options::overwrite_existing);
  io::make_piece_index(ckpt(), 6, cfg_, *last_);
  const std::string index = (ckpt() / io::kPieceIndex).string();
  auto j = nlohmann::json::parse(std::ifstream(index));
  j["model"]["tensors"]["model.norm.weight"]["pieces"][0]["start"][0] = 1000;
  std::ofstream(index) << j.dump();
  EXPECT_NE(test::error_of([&] { io::PieceSource(ckpt().string(), "model"); }).find("outside"),
            std::string::npos);
}

}  // namespace parallama
