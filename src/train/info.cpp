// `parallama info`: a model's shape and parameter count, and with --dp/--tp/--pp the mesh.
// `parallama settings`: the table of every configuration setting.
#include <cstdio>
#include <string>

#include "parallel/mesh.h"
#include "train/info.h"

namespace parallama {

int run_info(const RunConfig& cfg) {
  const LlamaConfig& m = cfg.model;
  std::printf("model %s%s\n", m.name.c_str(), m.shape_only ? " (shape only)" : "");
  std::printf(
      "  dim %d, layers %d, heads %d, kv heads %d, head dim %d, ffn %d, vocab %d, max seq %d\n",
      m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim(), m.ffn_dim, m.vocab_size,
      m.max_seq_len);
  std::printf("  rope theta %g, norm eps %g, output head %s\n", m.rope_theta, m.norm_eps,
              m.tie_embeddings ? "tied to the embedding" : "separate");
  std::printf("  parameters: %lld (%.3f B), in matmuls: %lld\n",
              static_cast<long long>(m.num_params()), m.num_params() / 1e9,
              static_cast<long long>(m.num_matmul_params()));
  const MeshShape shape = mesh_shape(cfg);
  if (shape.size() > 1) std::printf("%s", describe_mesh(m, shape).c_str());
  return 0;
}

int run_settings() {
  std::printf("| setting | type | default | meaning |\n|---|---|---|---|\n");
  for (const SettingInfo& s : settings_table()) {
    std::string type = s.type;
    for (size_t i = 0; i < s.choices.size(); ++i) type += (i ? ", `" : " `") + s.choices[i] + "`";
    std::printf("| `%s` | %s | `%s` | %s |\n", s.key.c_str(), type.c_str(), s.default_value.c_str(),
                s.meaning.c_str());
  }
  return 0;
}

}  // namespace parallama
