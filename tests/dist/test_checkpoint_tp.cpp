// Checkpoints of tensor-parallel shards (run under mpirun -np 2 and 4 by ctest; tp = every rank):
// the slices are saved as whole tensors and load bit for bit into one process and back into the
// slices, and a checkpoint written by one process loads into the slices. Tied and untied heads.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "comm/launcher.h"
#include "dist_test_util.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "tensor/error.h"

namespace parallama {
namespace {

namespace fs = std::filesystem;
using test::differing;
using test::fill_state;

comm::Group* world;

// The tiny preset (grouped-query attention), made divisible by tp where it is not.
LlamaConfig tiny_for(int tp, bool tied) {
  LlamaConfig c = llama_preset("tiny");
  c.tie_embeddings = tied;
  if (c.n_kv_heads % tp) c.n_kv_heads = tp, c.n_heads = 2 * tp;
  if (c.vocab_size % tp) c.vocab_size += tp - c.vocab_size % tp;
  if (c.ffn_dim % tp) c.ffn_dim += tp - c.ffn_dim % tp;
  c.validate();
  return c;
}

class CheckpointTp : public test::SharedDirTest {
 protected:
  CheckpointTp() : SharedDirTest(world, "parallama_ckpt_tp_") {}
};

TEST_P(CheckpointTp, SlicesSaveWholeTensorsThatLoadIntoAnyLayout) {
  const int P = world->size(), r = world->rank();
  const LlamaConfig cfg = tiny_for(P, GetParam());
  const ParamLayout slice(cfg, ModelShard{0, cfg.n_layers, true, true, r, P});
  const ParamLayout whole(cfg, ModelShard::whole(cfg));
  std::set<int> axes;  // the layout splits by rows and by columns, and replicates
  for (const ParamSpec& s : slice.specs()) axes.insert(s.split_axis);
  EXPECT_EQ(axes, (std::set<int>{-1, 0, 1}));
  const OptimConfig oc;
  comm::Group one;

  ParamBuffer mine(slice);
  init_params(mine, 11);
  Optimizer opt(slice, oc);
  fill_state(opt, mine);
  save_checkpoint(dir("step-3"), mine, opt,
                  {3, 42, {{"note", "tp"}, {"tokenizer_hash", 0}}, {}, {}}, *world, one, r == 0);
  world->barrier();
  // Whole tensors under their own names and shapes.
  {
    const io::SafeTensorsReader f(dir("step-3") + "/model.safetensors");
    EXPECT_EQ(f.tensors().size(), whole.specs().size());
    for (const ParamSpec& s : whole.specs())
      EXPECT_EQ(f.info(s.name).shape, s.full_shape) << s.name;
  }

  // (a) One process: the whole model of the same seed, bit for bit.
  ParamBuffer want_whole(whole), got_whole(whole);
  init_params(want_whole, 11);
  Optimizer want_opt_whole(whole, oc), got_opt_whole(whole, oc);
  fill_state(want_opt_whole, want_whole);
  const CheckpointState st = load_checkpoint(dir("step-3"), got_whole, got_opt_whole, one, one);
  EXPECT_EQ(st.step, 3);
  EXPECT_EQ(st.data_position, 42);
  EXPECT_EQ(differing(got_whole, want_whole), 0);
  EXPECT_EQ(differing(got_opt_whole, want_opt_whole), 0);

  // (b) Back into the slices.
  ParamBuffer back(slice);
  Optimizer back_opt(slice, oc);
  load_checkpoint(dir("step-3"), back, back_opt, *world, one);
  EXPECT_EQ(differing(back, mine), 0);
  EXPECT_EQ(differing(back_opt, opt), 0);
  ParamBuffer model_only(slice);
  load_checkpoint_model(dir("step-3"), model_only, *world, one);
  EXPECT_EQ(differing(model_only, mine), 0);

  // (c) Written by one process (seed 12), loaded into the slices.
  if (r == 0) {
    ParamBuffer w(whole);
    init_params(w, 12);
    Optimizer wo(whole, oc);
    fill_state(wo, w);
    save_checkpoint(dir("one"), w, wo, {1, 0, {{"tokenizer_hash", 0}}, {}, {}}, one, one, true);
  }
  world->barrier();
  ParamBuffer want_slice(slice), got_slice(slice);
  init_params(want_slice, 12);
  Optimizer want_opt(slice, oc), got_opt(slice, oc);
  fill_state(want_opt, want_slice);
  load_checkpoint(dir("one"), got_slice, got_opt, *world, one);
  EXPECT_EQ(differing(got_slice, want_slice), 0);
  EXPECT_EQ(differing(got_opt, want_opt), 0);
}

TEST_P(CheckpointTp, FailuresReachEveryRankOfTheGroup) {
  const int P = world->size(), r = world->rank();
  const LlamaConfig cfg = tiny_for(P, GetParam());
  const ParamLayout slice(cfg, ModelShard{0, cfg.n_layers, true, true, r, P});
  ParamBuffer p(slice);
  init_params(p, 3);
  Optimizer opt(slice, OptimConfig{});
  comm::Group one;  // no pipeline
  auto message = [&](auto f) -> std::string {
    try {
      f();
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  };
  // No writer, or two: refused on every rank before anything is written.
  EXPECT_NE(
      message([&] {
        save_checkpoint(dir("x"), p, opt, {0, 0, {{"tokenizer_hash", 0}}, {}, {}}, *world, one,
                        false);
      }).find("exactly one rank of the tensor-parallel and pipeline groups must write, not 0"),
      std::string::npos);
  EXPECT_NE(message([&] {
              save_checkpoint(dir("x"), p, opt, {0, 0, {{"tokenizer_hash", 0}}, {}, {}}, *world,
                              one, r < 2);
            }).find("must write, not 2"),
            std::string::npos);
  // The writer cannot create the directory (its parent is a file): every rank throws, none hangs.
  if (r == 0) {
    fs::create_directories(root_);
    std::ofstream(dir("file")) << "x";
  }
  world->barrier();
  EXPECT_NE(message([&] {
              save_checkpoint(dir("file/step-1"), p, opt, {0, 0, {{"tokenizer_hash", 0}}, {}, {}},
                              *world, one, r == 0);
            }).find("file"),
            std::string::npos);
  // A corrupt checkpoint is refused by every rank, with the file named, whichever rank checked it.
  save_checkpoint(dir("good"), p, opt, {0, 0, {{"tokenizer_hash", 0}}, {}, {}}, *world, one,
                  r == P - 1);
  world->barrier();
  if (r == 0) fs::resize_file(dir("good") + "/optimizer.safetensors", 1000);
  world->barrier();
  EXPECT_NE(message([&] {
              load_checkpoint(dir("good"), p, opt, *world, one);
            }).find("optimizer.safetensors: checksum"),
            std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Heads, CheckpointTp, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "tied" : "untied"; });

}  // namespace
}  // namespace parallama

int main(int argc, char** argv) {
  return parallama::test::run_mpi_tests(argc, argv, parallama::world, /*checked=*/true);
}
