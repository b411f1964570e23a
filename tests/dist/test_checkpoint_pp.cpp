// Checkpoints of pipeline stages (run under mpirun -np 2, 3 and 4 by ctest): every layout of the
// world's ranks into pp stages × tp tensor-parallel ranks with pp ≥ 2 (pp 2 and pp 3 on models
// whose layers do not divide evenly, pp 4, pp 2 × tp 2, and interleaved chunks), tied and untied
// heads. The stages save one file of whole tensors by name (a tied head's copy on the last stage
// not among them), which loads bit for bit into one process and back into the stages, and a
// checkpoint written by one process loads into the stages.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
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

struct Layout {
  int pp = 1, tp = 1;
  bool interleaved = false;  // two chunks of layers per stage
  std::string name() const {
    return "pp" + std::to_string(pp) + "_tp" + std::to_string(tp) + (interleaved ? "_v2" : "");
  }
};

// Every layout of the world with at least two stages.
std::vector<Layout> layouts() {
  switch (world->size()) {
    case 2:
      return {{2, 1, false}, {2, 1, true}};
    case 3:
      return {{3, 1, false}};
    case 4:
      return {{2, 2, false}, {4, 1, false}, {2, 2, true}};
    default:
      return {};
  }
}

// The tiny preset with n_layers layers (grouped-query attention), heads and FFN divisible by tp;
// the vocabulary (101) splits unevenly.
LlamaConfig tiny(int tp, bool tied, int n_layers) {
  LlamaConfig c = llama_preset("tiny");
  c.tie_embeddings = tied;
  c.n_layers = n_layers;
  if (c.n_kv_heads % tp) c.n_kv_heads = tp, c.n_heads = 2 * tp;
  if (c.ffn_dim % tp) c.ffn_dim += tp - c.ffn_dim % tp;
  c.validate();
  return c;
}

// Layers of each virtual stage: `parts` contiguous ranges over n layers, the first ones taking
// one more when they do not divide.
std::vector<std::pair<int, int>> split_layers(int n, int parts) {
  std::vector<std::pair<int, int>> r;
  for (int k = 0, first = 0; k < parts; ++k) {
    const int len = n / parts + (k < n % parts ? 1 : 0);
    r.push_back({first, first + len});
    first += len;
  }
  return r;
}

// Stage `stage`'s shard: with v chunks per stage, virtual stage k runs on stage k % pp.
ModelShard stage_shard(const LlamaConfig& c, const Layout& l, int stage, int tp_rank) {
  const int v = l.interleaved ? 2 : 1;
  const auto ranges = split_layers(c.n_layers, l.pp * v);
  ModelShard s{
      ranges[stage].first, ranges[stage].second, stage == 0, stage == l.pp - 1, tp_rank, l.tp};
  for (int k = 1; k < v; ++k) s.later_chunks.push_back(ranges[k * l.pp + stage]);
  s.validate(c);
  return s;
}

// This rank's place in a layout, as the mesh lays ranks out (tp fastest): its groups and shard.
struct Stage {
  Layout layout;
  LlamaConfig cfg;
  int pp_rank, tp_rank;
  comm::Group tp, pp;
  ParamLayout params;
  Stage(const Layout& l, bool tied)
      : layout(l),
        cfg(tiny(l.tp, tied, l.pp == 2 && !l.interleaved ? 3 : 5)),
        pp_rank(world->rank() / l.tp),
        tp_rank(world->rank() % l.tp),
        tp(world->split(pp_rank, tp_rank)),
        pp(world->split(tp_rank, pp_rank)),
        params(cfg, stage_shard(cfg, l, pp_rank, tp_rank)) {}
  bool last() const { return pp_rank == layout.pp - 1; }
};

// Every rank's count summed: a test fails on every rank when it fails on one.
int64_t everywhere(int64_t n) {
  return world->sum(n);
}

// The JSON header text of a safetensors file, as stored (so that repeated keys are seen).
std::string header_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string text(n, '\0');
  f.read(text.data(), static_cast<std::streamsize>(n));
  return text;
}

int64_t occurrences(const std::string& text, const std::string& what) {
  int64_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class CheckpointPp : public test::SharedDirTest {
 protected:
  CheckpointPp() : SharedDirTest(world, "parallama_ckpt_pp_") {}
};

// On rank 0: the file holds the whole model's tensors (under `prefix`) once each, whole, in stage
// order, and one embedding table only.
void check_file(const std::string& path, const Stage& st,
                const std::vector<std::string>& prefixes) {
  const ParamLayout whole(st.cfg, ModelShard::whole(st.cfg));
  std::vector<std::string> order;  // stage 0's tensors, then stage 1's, ..., for each prefix
  for (const std::string& prefix : prefixes)
    for (int s = 0; s < st.layout.pp; ++s) {
      const ParamLayout stage(st.cfg, stage_shard(st.cfg, st.layout, s, 0));
      for (const ParamSpec& p : stage.specs())
        if (!p.tied_copy) order.push_back(prefix + p.name);
    }
  const io::SafeTensorsReader f(path);
  std::vector<std::string> names;
  for (const io::TensorInfo& t : f.tensors()) names.push_back(t.name);
  EXPECT_EQ(names, order) << path;
  EXPECT_EQ(f.tensors().size(), prefixes.size() * whole.specs().size()) << path;
  for (const std::string& prefix : prefixes)
    for (const ParamSpec& s : whole.specs())
      EXPECT_EQ(f.info(prefix + s.name).shape, s.full_shape) << path << ": " << s.name;
  // (d) In the stored header itself: every tensor once, so one embedding table per prefix.
  const std::string header = header_text(path);
  EXPECT_EQ(occurrences(header, "\"data_offsets\""), static_cast<int64_t>(order.size())) << path;
  for (const std::string& prefix : prefixes)
    EXPECT_EQ(occurrences(header, "\"" + prefix + "model.embed_tokens.weight\""), 1) << path;
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size()) << path;
  for (const std::string& prefix : prefixes)
    EXPECT_EQ(f.has(prefix + "lm_head.weight"), !st.cfg.tie_embeddings) << path;
}

TEST_P(CheckpointPp, StagesSaveOneFileOfWholeTensorsThatLoadsIntoAnyLayout) {
  const std::vector<Layout> all = layouts();
  ASSERT_FALSE(all.empty()) << "run under mpirun with 2, 3 or 4 ranks";
  const OptimConfig oc;
  comm::Group one;
  for (const Layout& l : all) {
    SCOPED_TRACE(l.name());
    Stage st(l, GetParam());
    const ParamLayout whole(st.cfg, ModelShard::whole(st.cfg));
    // The layout holds what it should: a tied head's last stage has its copy of the table.
    int64_t tied_copies = 0;
    for (const ParamSpec& s : st.params.specs()) tied_copies += s.tied_copy;
    EXPECT_EQ(tied_copies, st.cfg.tie_embeddings && st.last() ? 1 : 0);
    EXPECT_EQ(st.params.shard().has_embedding, st.pp_rank == 0);

    ParamBuffer mine(st.params);
    init_params(mine, 11);
    Optimizer opt(st.params, oc);
    fill_state(opt, mine, 7);
    // The stored table is the first stage's: spoil the last stage's copy (and its moments).
    ParamBuffer spoiled(st.params);
    std::memcpy(spoiled.data(), mine.data(), 4 * mine.size());
    Optimizer spoiled_opt(st.params, oc);
    fill_state(spoiled_opt, mine, 7);
    for (const ParamSpec& s : st.params.specs())
      if (s.tied_copy)
        for (int64_t i = 0; i < s.numel; ++i) {
          spoiled.at(s)[i] = 7.0f;
          spoiled_opt.state(0)[s.offset + i] = spoiled_opt.state(1)[s.offset + i] = -7.0f;
        }
    const std::string ck = dir(l.name() + "-step-3");
    save_checkpoint(ck, spoiled, spoiled_opt,
                    {3, 42, {{"note", "pp"}, {"tokenizer_hash", 0}}, {}, {}}, st.tp, st.pp,
                    world->rank() == 0);
    world->barrier();
    if (world->rank() == 0) {
      check_file(ck + "/model.safetensors", st, {""});
      check_file(ck + "/optimizer.safetensors", st, {"exp_avg.", "exp_avg_sq."});
    }

    // (a) One process: the whole model of the same seed, bit for bit.
    ParamBuffer want_whole(whole), got_whole(whole);
    init_params(want_whole, 11);
    Optimizer want_opt_whole(whole, oc), got_opt_whole(whole, oc);
    fill_state(want_opt_whole, want_whole, 7);
    const CheckpointState cs = load_checkpoint(ck, got_whole, got_opt_whole, one, one);
    EXPECT_EQ(cs.step, 3);
    EXPECT_EQ(cs.data_position, 42);
    EXPECT_EQ(everywhere(differing(got_whole, want_whole)), 0);
    EXPECT_EQ(everywhere(differing(got_opt_whole, want_opt_whole)), 0);

    // (b) Back into the stages, the tied copy from the stored table.
    ParamBuffer back(st.params), model_only(st.params);
    Optimizer back_opt(st.params, oc);
    std::fill(back.data(), back.data() + back.size(), -1.0f);
    load_checkpoint(ck, back, back_opt, st.tp, st.pp);
    EXPECT_EQ(everywhere(differing(back, mine)), 0);
    EXPECT_EQ(everywhere(differing(back_opt, opt)), 0);
    load_checkpoint_model(ck, model_only, st.tp, st.pp);
    EXPECT_EQ(everywhere(differing(model_only, mine)), 0);

    // (c) Written by one process (seed 12), loaded into the stages.
    const std::string ck1 = dir(l.name() + "-one");
    if (world->rank() == 0) {
      ParamBuffer w(whole);
      init_params(w, 12);
      Optimizer wo(whole, oc);
      fill_state(wo, w, 5);
      save_checkpoint(ck1, w, wo, {1, 0, {{"tokenizer_hash", 0}}, {}, {}}, one, one, true);
    }
    world->barrier();
    ParamBuffer want(st.params), got(st.params);
    init_params(want, 12);
    Optimizer want_opt(st.params, oc), got_opt(st.params, oc);
    fill_state(want_opt, want, 5);
    load_checkpoint(ck1, got, got_opt, st.tp, st.pp);
    EXPECT_EQ(everywhere(differing(got, want)), 0);
    EXPECT_EQ(everywhere(differing(got_opt, want_opt)), 0);

    // Written by the stages with the writer on the last stage: the same file.
    const std::string ck2 = dir(l.name() + "-last-writes");
    save_checkpoint(ck2, mine, opt, {3, 42, {{"note", "pp"}, {"tokenizer_hash", 0}}, {}, {}}, st.tp,
                    st.pp, world->rank() == world->size() - 1);
    world->barrier();
    if (world->rank() == 0) {
      for (const char* f : {"/model.safetensors", "/optimizer.safetensors"})
        EXPECT_EQ(file_checksum(ck + f), file_checksum(ck2 + f)) << f;
    }
  }
}

TEST_P(CheckpointPp, FailuresReachEveryRankOfTheReplica) {
  comm::Group one;
  auto message = [&](auto f) -> std::string {
    try {
      f();
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  };
  auto all_find = [&](const std::string& msg, const std::string& what) {
    return everywhere(msg.find(what) == std::string::npos ? 1 : 0) == 0;
  };
  for (const Layout& l : layouts()) {
    SCOPED_TRACE(l.name());
    Stage st(l, GetParam());
    ParamBuffer p(st.params);
    init_params(p, 3);
    Optimizer opt(st.params, OptimConfig{});
    const int r = world->rank();
    // No writer, or two in different stages: refused on every rank before anything is written.
    EXPECT_TRUE(all_find(message([&] {
                           save_checkpoint(dir("x"), p, opt,
                                           {0, 0, {{"tokenizer_hash", 0}}, {}, {}}, st.tp, st.pp,
                                           false);
                         }),
                         "must write, not 0"));
    EXPECT_TRUE(all_find(message([&] {
                           save_checkpoint(dir("x"), p, opt,
                                           {0, 0, {{"tokenizer_hash", 0}}, {}, {}}, st.tp, st.pp,
                                           r == 0 || r == world->size() - 1);
                         }),
                         "must write, not 2"));
    // The writer cannot create the directory (its parent is a file): every rank throws.
    if (r == 0) {
      fs::create_directories(root_);
      std::ofstream(dir("file")) << "x";
    }
    world->barrier();
    EXPECT_TRUE(all_find(message([&] {
                           save_checkpoint(dir("file/step-1"), p, opt,
                                           {0, 0, {{"tokenizer_hash", 0}}, {}, {}}, st.tp, st.pp,
                                           r == 0);
                         }),
                         "file"));
    // A stage saving without its pipeline group: the writer's stage alone does not hold the
    // whole model and refuses; the other stages have no writer. Nothing is left behind.
    const std::string part = dir(l.name() + "-part");
    const std::string msg = message([&] {
      save_checkpoint(part, p, opt, {0, 0, {{"tokenizer_hash", 0}}, {}, {}}, st.tp, one, r == 0);
    });
    EXPECT_NE(msg.find(st.pp_rank == 0 ? "no pipeline stage holds model.layers." : "not 0"),
              std::string::npos)
        << msg;
    world->barrier();
    EXPECT_FALSE(fs::exists(part));
    for (const auto& e : fs::directory_iterator(root_))  // no temporary left behind
      EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
    // A corrupt checkpoint is refused by every rank, whichever rank checked it.
    const std::string good = dir(l.name() + "-good");
    save_checkpoint(good, p, opt, {0, 0, {{"tokenizer_hash", 0}}, {}, {}}, st.tp, st.pp, r == 0);
    world->barrier();
    if (r == 0) fs::resize_file(good + "/optimizer.safetensors", 1000);
    world->barrier();
    EXPECT_TRUE(all_find(message([&] { load_checkpoint(good, p, opt, st.tp, st.pp); }),
                         "optimizer.safetensors: checksum"));
    // A checkpoint of a shallower model fails on the later stages only: every rank throws.
    const std::string shallow = dir(l.name() + "-shallow");
    if (r == 0) {
      LlamaConfig c = st.cfg;
      c.n_layers = st.params.shard().last_layer;  // stage 0's first chunk ends the model
      const ParamLayout wl(c, ModelShard::whole(c));
      ParamBuffer w(wl);
      init_params(w, 4);
      Optimizer wo(wl, OptimConfig{});
      save_checkpoint(shallow, w, wo, {0, 0, {{"tokenizer_hash", 0}}, {}, {}}, one, one, true);
    }
    world->barrier();
    EXPECT_TRUE(all_find(message([&] { load_checkpoint_model(shallow, p, st.tp, st.pp); }),
                         "model.layers."));
  }
}

INSTANTIATE_TEST_SUITE_P(Heads, CheckpointPp, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "tied" : "untied"; });

}  // namespace
}  // namespace parallama

int main(int argc, char** argv) {
  return parallama::test::run_mpi_tests(argc, argv, parallama::world, /*checked=*/true);
}
