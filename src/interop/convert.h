#pragma once
// `parallama convert`: Hugging Face directories and GGUF files to and from checkpoints.
#include <string>

namespace parallama {

// `convert`: --from hf:DIR --to CKPT, or --from CKPT (or a run directory) --to hf:DIR with the
// tensors stored as dtype (f32 | bf16 | f16; "": the type the model was converted from, else
// f32) in files of at most shard_mb MB (1e6 bytes), or --to gguf:FILE (dtype f32 | f16 | q8_0;
// "": f16) for llama.cpp. fp16 output refuses values beyond fp16's range (before writing
// anything) unless allow_overflow, which clamps them to ±65504. An existing gguf:FILE is
// overwritten only with force. One process.
int run_convert(const std::string& from, const std::string& to, const std::string& dtype,
                double shard_mb = 5000, bool allow_overflow = false, bool force = false);

}  // namespace parallama
