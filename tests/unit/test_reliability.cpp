// What a user names things, and what a checkpoint's trainer.json holds, never make a run
// unloadable: the stored config round-trips exactly, trainer.json is checksummed and every field
// is checked; bad numbers and strings are refused with one line.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include "io/checkpoint.h"
#include "tensor/utf8.h"
#include "test_util.h"
#include "train/run_config.h"

namespace parallama {

using test::error_of;

namespace {

// Strings that read as other TOML or JSON types, or carry quoting, escapes and non-ASCII text.
const char* const kTrickyStrings[] = {"2024",
                                      "1979-05-27",
                                      "1979-05-27T07:32:00Z",
                                      "07:32:00",
                                      "true",
                                      "false",
                                      "3e-4",
                                      "-0",
                                      "inf",
                                      "nan",
                                      "[1, 2]",
                                      "{a = 1}",
                                      "",
                                      " ",
                                      "a b",
                                      "x = 1",
                                      "#not a comment",
                                      "\"quoted\"",
                                      "'single'",
                                      "back\\slash",
                                      "tab\there",
                                      "new\nline",
                                      "runs/2024-01-01",
                                      "ünïcödé ✓",
                                      "0x1F",
                                      "1_000",
                                      "+5",
                                      "null"};

// A random value of the same JSON type as v (float fields get values a float holds exactly).
nlohmann::json random_like(const nlohmann::json& v, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pick(0, std::size(kTrickyStrings) - 1);
  switch (v.type()) {
    case nlohmann::json::value_t::string:
      return kTrickyStrings[pick(rng)];
    case nlohmann::json::value_t::boolean:
      return rng() % 2 == 0;
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return static_cast<int64_t>(rng() % 2147483647);
    case nlohmann::json::value_t::number_float: {
      const float f = std::ldexp(static_cast<float>(rng() % 16777216) / 16777216.0f,
                                 static_cast<int>(rng() % 200) - 100);
      return static_cast<double>(f);
    }
    case nlohmann::json::value_t::array: {
      nlohmann::json a = nlohmann::json::array();
      for (uint64_t i = 0, n = rng() % 4; i < n; ++i) a.push_back(static_cast<int>(rng() % 100));
      return a;
    }
    default:
      return v;
  }
}

}  // namespace

// Property: any config (every value replaced at random by one of its type) written as JSON reads
// back to exactly the same JSON: a string stays a string whatever it looks like.
TEST(ConfigRoundTrip, RandomConfigsRoundTripExactly) {
  const nlohmann::json base = config_to_json(load_run_config("", {}, ConfigUse::none));
  // A setting that takes one of a few names gets one of them.
  std::map<std::string, std::vector<std::string>> names;
  for (const SettingInfo& s : settings_table())
    if (!s.choices.empty()) names[s.key] = s.choices;
  ASSERT_TRUE(names.count("parallel.sync") && names.count("train.precision"));
  std::mt19937_64 rng(20261123);
  for (int trial = 0; trial < 300; ++trial) {
    nlohmann::json j = base;
    for (auto& [sec, table] : j.items())
      for (auto& [key, value] : table.items()) {
        if (sec == "model" && key == "preset") continue;
        const auto named = names.find(sec + "." + key);
        value = named == names.end() ? random_like(value, rng)
                                     : nlohmann::json(named->second[rng() % named->second.size()]);
      }
    const RunConfig c = config_from_json(j, "random", ConfigUse::none);
    ASSERT_EQ(config_to_json(c), j) << "trial " << trial;
    // ... and through the text of trainer.json.
    ASSERT_EQ(config_to_json(
                  config_from_json(nlohmann::json::parse(j.dump(1)), "random", ConfigUse::none)),
              j);
  }
}

TEST(ConfigRoundTrip, StringSettingsOnTheCommandLineAreTakenAsTyped) {
  for (const char* s : {"2024", "1979-05-27", "true", "3e-4", "1979-05-27T07:32:00"}) {
    const RunConfig c = load_run_config(
        "",
        {{"train.out_dir", s}, {"data.dir", s}, {"model.preset", "tiny"}, {"train.seq_len", "16"}});
    EXPECT_EQ(c.train.out_dir, s);
    EXPECT_EQ(c.data.dir, s);
    const RunConfig back = checkpoint_config({{"config", config_to_json(c)}}, "trainer.json");
    EXPECT_EQ(back.train.out_dir, s);
    EXPECT_EQ(back.data.dir, s);
  }
  // A number setting stays strict.
  EXPECT_NE(error_of([] {
              load_run_config("", {{"train.steps", "1979-05-27"}});
            }).find("must be an integer"),
            std::string::npos);
}

TEST(ConfigChecks, NonFiniteAndAbsurdNumbersAreRefused) {
  for (const char* key : {"model.norm_eps", "model.rope_theta", "optim.eps", "train.grad_clip",
                          "optim.weight_decay", "optim.lr", "parallel.timeout_s"})
    for (const char* v : {"inf", "-inf", "nan", "1e300"}) {
      const std::string e = error_of([&] {
        load_run_config("", {{key, v}, {"train.seq_len", "16"}});
      });
      EXPECT_TRUE(e.find("finite") != std::string::npos ||
                  e.find("at most 1e6") != std::string::npos)
          << key << " = " << v << ": " << e;
    }
  EXPECT_NE(error_of([] {
              load_run_config("", {{"parallel.timeout_s", "1e10"}, {"train.seq_len", "16"}});
            }).find("at most 1e6"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              load_run_config("", {{"parallel.pp_layers", "[1, 99999999999]"}});
            }).find("out of range"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              load_run_config("", {{"train.out_dir", "bad\xff"}});
            }).find("UTF-8"),
            std::string::npos);
}

// Nesting that would make a reader recurse past the stack is refused with a message: dotted keys
// of a hundred thousand parts (toml++ builds their tables by recursion) and JSON nested as deep
// (dumped for its checksum). Ordinary dotted keys, floats and dotted strings are untouched.
TEST(ConfigChecks, PathologicalNestingIsRefusedNotACrash) {
  std::string header = "[a", key = "a", quoted = "a";
  for (int i = 0; i < 100000; ++i) header += ".a", key += ".a", quoted += ".\"a\"";
  for (const std::string& text : {header + "]\n", "[[" + header.substr(1) + "]]\n", key + " = 1\n",
                                  quoted + " = 1\n", "x = {" + key + " = 1}\n"})
    EXPECT_NE(error_of([&] {
                parse_run_config_text(text, "deep.toml", {}, ConfigUse::none);
              }).find("more than 32 parts"),
              std::string::npos);
  // As a command-line value it is no TOML value, so it is taken as a string (and refused as one).
  EXPECT_NE(error_of([&] { load_run_config("", {{"train.steps", "{" + key + " = 1}"}}); }), "");
  const RunConfig c = parse_run_config_text(
      "train.out_dir = \"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.1.2.3.4.5.6.7.8\"\n"
      "model.\"norm_eps\" = 1e-5\n"
      "[optim]\nlr = 1.5e-3 # "
      "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.1.2.3.4.5.6.7.8\n",
      "ok.toml", {}, ConfigUse::none);
  EXPECT_EQ(c.train.out_dir, "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.1.2.3.4.5.6.7.8");
  EXPECT_EQ(c.optim.lr, 1.5e-3f);
  const std::string deep = "{\"format\": 2, \"x\": " + std::string(100000, '[');
  EXPECT_NE(error_of([&] { parse_trainer_json(deep, "trainer.json"); }).find("levels deep"),
            std::string::npos);
}

TEST(Utf8, ValidAndInvalidSequences) {
  EXPECT_TRUE(valid_utf8("plain"));
  EXPECT_TRUE(valid_utf8("ünïcödé ✓ 𝄞"));
  EXPECT_EQ(first_invalid_utf8("ab\xff"), 2u);
  EXPECT_EQ(first_invalid_utf8("\xc0\xaf"), 0u);          // overlong '/'
  EXPECT_EQ(first_invalid_utf8("x\xed\xa0\x80"), 1u);     // a surrogate
  EXPECT_EQ(first_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("\xe2\x9c"), 0u);          // cut short
}

namespace {

nlohmann::json good_trainer_json() {
  nlohmann::json j = {
      {"format", 2},
      {"step", 40},
      {"data_position", 1280},
      {"epoch", 0},
      {"loss", 3.5},
      {"tokenizer_hash", 12345678901234567890ull},
      {"checksums",
       {{"model.safetensors", "0123456789abcdef"}, {"optimizer.safetensors", "fedcba9876543210"}}},
      {"config", config_to_json(load_run_config("", {}, ConfigUse::none))},
      {"layout", {{"dp", 1}, {"tp", 1}, {"pp", 1}}}};
  seal_json(j);
  return j;
}

std::string parse_error(const nlohmann::json& j) {
  return error_of([&] { parse_trainer_json(j.dump(1), "t/trainer.json"); });
}

}  // namespace

TEST(TrainerJson, SealedFileRoundTripsAndEditsAreCaught) {
  const nlohmann::json j = good_trainer_json();
  EXPECT_EQ(parse_trainer_json(j.dump(1), "x"), j);
  nlohmann::json edited = j;
  edited["step"] = 41;
  EXPECT_NE(parse_error(edited).find("does not match"), std::string::npos);
  edited = j;
  edited.erase("checksum");
  EXPECT_NE(parse_error(edited).find("checksum"), std::string::npos);
  // Nor is the checksum bypassed by calling the file format 1, which had none: a file of today
  // holds settings no format-1 writer wrote.
  edited = j;
  edited.erase("checksum");
  edited["format"] = 1;
  edited["rng"] = {{"data_seed", 1}, {"data_order", "seeded permutation per epoch"}};
  edited["step"] = 41;
  EXPECT_NE(parse_error(edited).find("not a format-1 file, as it says: it holds the setting"),
            std::string::npos)
      << parse_error(edited);
}

namespace {

// trainer.json as the last format-1 writer wrote it (before trainer.json had its own checksum).
const char* const kFormat1File =
    R"({"checksums":{"model.safetensors":"694d5853694539ef","optimizer.safetensors":"1ee4d7cfb5d59418"},)"
    R"("config":{"bench":{"steps":10,"warmup":2},"data":{"dir":""},"diloco":{"inner-steps":16,)"
    R"("outer-lr":0.699999988079071,"outer-momentum":0.8999999761581421},"local":{"period":8},)"
    R"("model":{"dim":48,"ffn_dim":80,"max_seq_len":16,"n_heads":4,"n_kv_heads":2,"n_layers":2,)"
    R"("norm_eps":9.999999747378752e-06,"preset":"tiny","rope_theta":10000.0,)"
    R"("tie_embeddings":false,"vocab_size":101},"optim":{"beta1":0.8999999761581421,)"
    R"("beta2":0.949999988079071,"dampening":0.0,"eps":9.99999993922529e-09,)"
    R"("lr":0.0003000000142492354,"min_lr":0.0,"momentum":0.8999999761581421,"name":"adamw",)"
    R"("nesterov":false,"warmup_steps":0,"weight_decay":0.10000000149011612},)"
    R"("parallel":{"bucket_mb":4.0,"check_collectives":false,"dp":1,"pp":1,"pp_layers":[],)"
    R"("pp_schedule":"1f1b","pp_trace":"","pp_virtual":1,"reduce_dtype":"fp32",)"
    R"("sync":"allreduce","timeout_s":120.0,"tp":1,"zero":0},"ps":{"max-staleness":2,)"
    R"("servers":1,"slow-ms":0,"slow-rank":-1},"train":{"batch_size":8,"ckpt_every":100,)"
    R"("grad_clip":1.0,"log_every":10,"loss_scale":65536.0,"loss_scale_window":1000,)"
    R"("micro_batches":1,"out_dir":"runs/default","precision":"fp32","recompute":"none",)"
    R"("seed":1337,"seq_len":16,"steps":200,"threads":0,"val_batches":8,"val_every":50}},)"
    R"("data_position":1600,"epoch":3,"format":1,"layout":{"dp":1,"pp":1,"sync":"allreduce",)"
    R"("tp":1},"loss":3.25,"loss_scale":{"clean_steps":12,"scale":65536.0,"skipped":1},)"
    R"("rng":{"data_order":"seeded permutation per epoch","data_seed":1337},"step":200,)"
    R"("tokenizer_hash":16905335551117204539})";

}  // namespace

TEST(TrainerJson, FormatOneOnlyForFilesItsWritersMade) {
  const nlohmann::json f1 = nlohmann::json::parse(kFormat1File);
  EXPECT_EQ(parse_error(f1), "");
  EXPECT_EQ(checkpoint_config(f1, "t").model.dim, 48);
  // Anything a format-1 writer never wrote: a checksum, a later field or setting, a missing one.
  const std::vector<std::pair<std::string, std::function<void(nlohmann::json&)>>> edits = {
      {"holds \"checksum\"", [](auto& j) { j["checksum"] = "0123456789abcdef"; }},
      {"holds \"converted_from\"",
       [](auto& j) {
         j["converted_from"] = {{"format", "hf"}};
       }},
      {"setting model.rope_scaling",
       [](auto& j) { j["config"]["model"]["rope_scaling"] = "none"; }},
      {"setting parallel.balance", [](auto& j) { j["config"]["parallel"]["balance"] = "off"; }},
      {"lacks \"tokenizer_hash\"", [](auto& j) { j.erase("tokenizer_hash"); }},
      {"lacks \"rng\"", [](auto& j) { j.erase("rng"); }}};
  for (const auto& [what, edit] : edits) {
    nlohmann::json j = f1;
    edit(j);
    const std::string e = parse_error(j);
    EXPECT_NE(e.find("not a format-1 file"), std::string::npos) << what << ": " << e;
    EXPECT_NE(e.find(what), std::string::npos) << what << ": " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  // Format 2 needs its checksum and the tokenizer's hash.
  nlohmann::json j = good_trainer_json();
  j.erase("tokenizer_hash");
  seal_json(j);
  EXPECT_NE(parse_error(j).find("no \"tokenizer_hash\""), std::string::npos) << parse_error(j);
}

TEST(TrainerJson, FormatOneLoadsWithOneWarning) {
  const std::string dir = ::testing::TempDir() + "parallama_format1_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/trainer.json") << kFormat1File;
  ::testing::internal::CaptureStderr();
  const std::string e = error_of([&] {
    read_trainer_json(dir);
    read_trainer_json(dir);
  });
  const std::string err = ::testing::internal::GetCapturedStderr();
  std::filesystem::remove_all(dir);
  EXPECT_EQ(e, "");
  EXPECT_EQ(err, "warning: " + dir +
                     "/trainer.json is checkpoint format 1 (older, without a checksum of its "
                     "own): an edit to it cannot be detected\n");
}

TEST(TrainerJson, EveryFieldIsTypeAndRangeChecked) {
  const std::vector<std::pair<std::string, nlohmann::json>> bad = {
      {"data_position", -100},
      {"data_position", "0"},
      {"data_position", 1.5},
      {"step", -1},
      {"step", 1e15},
      {"step", "7"},
      {"step", nullptr},
      {"epoch", -3},
      {"tokenizer_hash", -1},
      {"tokenizer_hash", "abc"},
      {"checksums", "x"},
      {"config", 5},
      {"loss_scale", "big"},
      {"loss", "low"},
      {"format", 99},
      {"format", "2"},
      {"layout", nlohmann::json::array()}};
  for (const auto& [key, value] : bad) {
    nlohmann::json j = good_trainer_json();
    j[key] = value;
    seal_json(j);  // a well-formed checksum: the field check itself must catch it
    const std::string e = parse_error(j);
    EXPECT_NE(e, "") << key << " = " << value.dump();
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    EXPECT_EQ(e.find("json.exception"), std::string::npos) << e;
  }
  nlohmann::json j = good_trainer_json();
  j.erase("step");
  seal_json(j);
  EXPECT_NE(parse_error(j).find("step"), std::string::npos);
  j = good_trainer_json();
  j["checksums"]["model.safetensors"] = "XYZ";
  seal_json(j);
  EXPECT_NE(parse_error(j).find("model.safetensors"), std::string::npos);
  EXPECT_NE(error_of([] { parse_trainer_json("{\"step\": ", "t"); }).find("corrupt"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_trainer_json("[1, 2]", "t"); }).find("not a JSON object"),
            std::string::npos);
  // The config inside is read strictly, and a missing one is named.
  EXPECT_NE(error_of([] { checkpoint_config(nlohmann::json::object(), "t"); }).find("config"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              checkpoint_config({{"config", {{"train", {{"steps", "many"}}}}}}, "t");
            }).find("train.steps"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              checkpoint_config({{"config", {{"train", {{"steps", nullptr}}}}}}, "t");
            }).find("train.steps"),
            std::string::npos);
  // Settings parallama no longer has still load from older checkpoints, and only from them.
  EXPECT_EQ(error_of([] {
              checkpoint_config(
                  {{"config",
                    {{"train", {{"seq_len", 16}}}, {"ps", {{"slow-rank", -1}, {"slow-ms", 0}}}}}},
                  "t");
            }),
            "");
  EXPECT_NE(error_of([] {
              load_run_config("", {{"ps.slow-rank", "2"}});
            }).find("unknown key"),
            std::string::npos);
}

}  // namespace parallama
