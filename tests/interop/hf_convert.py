"""`parallama convert` against Hugging Face Llama directories that this script writes itself.

    /usr/bin/python3 tests/interop/hf_convert.py PARALLAMA CKPT_LOGITS PEAK_RSS WORK_DIR

For F32, BF16 and F16 weights, in one file or in shards with model.safetensors.index.json, tied
and untied, with and without llama3 rope scaling:
  * hf:DIR -> checkpoint -> hf:DIR gives the same tensors, byte for byte, and the same config;
  * the converted model's logits (training forward and KV-cache generator) equal an independent
    PyTorch Llama (tests/reference/torch_llama.py, float64) within 1e-5 relative, its rotary
    frequencies with llama3 scaling computed here from the published definition;
  * --dtype bf16 | f16 rounds to nearest even;
  * eval, generate and train --init run on the converted checkpoint, and a fine-tuned run
    converts back;
  * what cannot be converted is refused with exit code 2, one line, and nothing written, values
    beyond fp16's range included (clamped instead with --allow-overflow);
  * conversion streams: the peak memory of a convert process stays far below the model's size.
The Hugging Face files are written by hand (json + numpy): no transformers, no safetensors package.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import torch_llama as tl  # noqa: E402

BIN, LOGITS_BIN, PEAK_RSS = sys.argv[1:4]
WORK = os.path.abspath(sys.argv[4])
CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "vocab_size", "rope_theta", "rms_norm_eps",
               "tie_word_embeddings", "max_position_embeddings", "rope_scaling")
TOLERANCE = 1e-5


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def run(*args):
    """Runs parallama (through peak_rss); returns (exit code, stdout, stderr, peak resident KiB)."""
    r = subprocess.run([PEAK_RSS, BIN] + [str(a) for a in args], capture_output=True, text=True)
    lines = r.stderr.splitlines()
    if not lines or not lines[-1].startswith("peak_rss_kib "):
        fail(f"peak_rss printed {r.stderr!r}")
    stderr = "".join(line + "\n" for line in lines[:-1])
    return r.returncode, r.stdout, stderr, int(lines[-1].split()[1])


def ok(*args):
    rc, out, err, _ = run(*args)
    if rc != 0:
        fail(f"exit {rc} for {' '.join(map(str, args))}: {err.strip()}")
    return out


def expect_error(want, *args, absent=None):
    rc, _, err, _ = run(*args)
    lines = err.strip().splitlines()
    if rc != 2 or len(lines) != 1 or want not in lines[0]:
        fail(f"{' '.join(map(str, args))}: exit {rc}, stderr {err!r} (expected exit 2, one line "
             f"with {want!r})")
    if absent and os.path.exists(absent):
        fail(f"{absent} was written by a refused conversion")
    print(f"refused: {lines[0]}")


# ---------------------------------------------------------------------------------------------
# safetensors by hand
# ---------------------------------------------------------------------------------------------

def encode(arr, dtype):
    a = np.ascontiguousarray(arr, dtype=np.float32)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    u = a.view(np.uint32).astype(np.uint64)  # BF16, round to nearest even
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def write_safetensors(path, tensors):
    """tensors: [(name, dtype, float32 array)] in file order."""
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for name, dtype, arr in tensors:
        blob = encode(arr, dtype)
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [at, at + len(blob)]}
        blobs.append(blob)
        at += len(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def read_raw(path):
    """{name: (dtype, shape, bytes)} of one safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    return {k: (v["dtype"], tuple(v["shape"]), data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


def read_hf_raw(d):
    """Every tensor of a Hugging Face directory (one file or shards), raw."""
    index = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_raw(os.path.join(d, "model.safetensors"))
    out = {}
    weight_map = json.load(open(index))["weight_map"]
    for f in sorted(set(weight_map.values())):
        part = read_raw(os.path.join(d, f))
        for name, t in part.items():
            if weight_map.get(name) != f:
                fail(f"{d}: {name} is in {f} but the index says {weight_map.get(name)}")
        out.update(part)
    if set(out) != set(weight_map):
        fail(f"{d}: the index and the files hold different tensors")
    return out


def decode(dtype, shape, blob):
    if dtype == "F32":
        a = np.frombuffer(blob, "<f4")
    elif dtype == "F16":
        a = np.frombuffer(blob, "<f2")
    else:
        a = (np.frombuffer(blob, "<u2").astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float64).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Hugging Face directories
# ---------------------------------------------------------------------------------------------

def hf_config(dim=64, layers=2, heads=4, kv_heads=2, ffn=96, vocab=416, max_pos=64, tied=False,
              rope_scaling=None, dtype="float32"):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
            "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": max_pos,
            "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": tied,
            "rope_scaling": rope_scaling, "hidden_act": "silu", "torch_dtype": dtype,
            "bos_token_id": 1, "eos_token_id": 2}


def ref_cfg(c):
    return dict(dim=c["hidden_size"], n_layers=c["num_hidden_layers"], n_heads=c["num_attention_heads"],
                n_kv_heads=c["num_key_value_heads"], ffn_dim=c["intermediate_size"],
                vocab_size=c["vocab_size"], norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"],
                tie_embeddings=c["tie_word_embeddings"])


def make_weights(c, seed, matrix_std=0.08):
    """{HF name: float32 array}: matrices N(0, std), norm weights near 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tl.param_shapes(ref_cfg(c)).items():
        if len(shape) == 1:
            out[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (matrix_std * rng.standard_normal(shape)).astype(np.float32)
    return out


def write_hf(d, config, weights, dtype, shards=1, tokenizer=None, extra=()):
    """A Hugging Face directory: config.json, weights in `shards` files (with an index when more
    than one, tensors in a shuffled order), tokenizer.model."""
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=2)
    items = [(n, dtype, a) for n, a in weights.items()] + list(extra)
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), items)
    else:
        items = items[::-1]  # not the model's order
        weight_map = {}
        for k in range(shards):
            name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = items[k::shards]
            write_safetensors(os.path.join(d, name), part)
            weight_map.update({t[0]: name for t in part})
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map},
                  open(os.path.join(d, "model.safetensors.index.json"), "w"))
    if tokenizer:
        shutil.copy(tokenizer, os.path.join(d, "tokenizer.model"))


# ---------------------------------------------------------------------------------------------
# the reference's rotary frequencies with llama3 scaling, from the published definition
# ---------------------------------------------------------------------------------------------

def llama3_inv_freq(D, theta, s):
    """Llama 3.1's scaled frequencies: wavelengths below old/high keep their frequency, above
    old/low are divided by factor, in between blend linearly in old / wavelength."""
    inv = theta ** (-np.arange(0, D, 2, dtype=np.float64) / D)
    old, low, high, factor = (s["original_max_position_embeddings"], s["low_freq_factor"],
                              s["high_freq_factor"], s["factor"])
    wavelen = 2 * np.pi / inv
    smooth = (old / wavelen - low) / (high - low)
    return np.where(wavelen < old / high, inv,
                    np.where(wavelen > old / low, inv / factor,
                             (1 - smooth) * inv / factor + smooth * inv))


def reference_logits(config, weights, tokens, scaled=True):
    """float64 logits of the PyTorch reference; with config's llama3 rope scaling if `scaled`."""
    s = config.get("rope_scaling")
    plain = tl.rope_cos_sin
    if s and scaled:
        def scaled_cos_sin(T, D, theta, dtype):
            angles = np.arange(T, dtype=np.float64)[:, None] * llama3_inv_freq(D, theta, s)[None, :]
            emb = torch.tensor(np.concatenate([angles, angles], axis=1))
            return emb.cos().to(dtype), emb.sin().to(dtype)
        tl.rope_cos_sin = scaled_cos_sin
    try:
        model = tl.build_model(ref_cfg(config), weights={k: v for k, v in weights.items()},
                               dtype=torch.float64)
        with torch.no_grad():
            return model(torch.tensor(tokens, dtype=torch.int64)).numpy()
    finally:
        tl.rope_cos_sin = plain


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def our_logits(ckpt, tokens):
    path = os.path.join(WORK, "tokens.txt")
    with open(path, "w") as f:
        f.write(f"{len(tokens)} {len(tokens[0])}\n" + " ".join(str(t) for row in tokens for t in row))
    out = os.path.join(WORK, "logits.safetensors")
    r = subprocess.run([LOGITS_BIN, ckpt, path, out], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"ckpt_logits {ckpt}: {r.stderr.strip()}")
    t = read_raw(out)
    return decode(*t["logits"]), decode(*t["gen_logits"])


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------

def make_tokenizer():
    """A sentencepiece tokenizer and token shards made by `parallama prepare` on a synthetic text."""
    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "da", "pe", "li", "gu", "an", "or"]
    words = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(300)]
    text = os.path.join(WORK, "corpus.txt")
    with open(text, "w") as f:
        for _ in range(3000):
            f.write(" ".join(rng.choice(words, size=rng.integers(4, 14))) + ".\n")
    ok("prepare", "--text", text, "--vocab", 400, "--out", os.path.join(WORK, "data"))
    return os.path.join(WORK, "data")


def check_case(name, config, dtype, data, shards=1, shard_mb=None):
    """hf -> ckpt -> hf round trip and the logits of the converted model."""
    hf, ckpt, back = (os.path.join(WORK, name + s) for s in ("-hf", "-ckpt", "-back"))
    weights = make_weights(config, seed=len(name))
    write_hf(hf, config, weights, dtype, shards, tokenizer=os.path.join(data, "tokenizer.model"))
    ok("convert", "--from", "hf:" + hf, "--to", ckpt)
    args = ["convert", "--from", ckpt, "--to", "hf:" + back]
    if shard_mb:
        args += ["--shard-mb", shard_mb]
    ok(*args)  # no --dtype: the type the model came in
    src, out = read_hf_raw(hf), read_hf_raw(back)
    if set(src) != set(out):
        fail(f"{name}: tensors {sorted(set(src) ^ set(out))} differ between {hf} and {back}")
    for t in src:
        if src[t] != out[t]:
            fail(f"{name}: tensor {t} is not the same bytes after the round trip "
                 f"({src[t][0]} {src[t][1]} -> {out[t][0]} {out[t][1]})")
    c_out = json.load(open(os.path.join(back, "config.json")))
    for k in CONFIG_KEYS:
        if c_out.get(k) != config.get(k):
            fail(f"{name}: config {k} {config.get(k)!r} came back as {c_out.get(k)!r}")
    if c_out["torch_dtype"] != config["torch_dtype"]:
        fail(f"{name}: torch_dtype {c_out['torch_dtype']}")
    files = sorted(f for f in os.listdir(back) if f.endswith(".safetensors"))
    if (len(files) > 1) != os.path.exists(os.path.join(back, "model.safetensors.index.json")):
        fail(f"{name}: {files} without an index, or an index for one file")
    if shard_mb and len(files) < 2:
        fail(f"{name}: --shard-mb {shard_mb} wrote one file")

    # The logits, against the reference from the weights as stored (rounded to their dtype).
    stored = {t: decode(*src[t]) for t in src if t in tl.param_shapes(ref_cfg(config))}
    rng = np.random.default_rng(7)
    T = config["max_position_embeddings"] * 3 // 4
    tokens = rng.integers(0, config["vocab_size"], size=(2, T)).tolist()
    ours, gen = our_logits(ckpt, tokens)
    ref = reference_logits(config, stored, tokens)
    e, eg = rel(ours, ref), rel(gen, ref[0])
    if not (e <= TOLERANCE and eg <= TOLERANCE):
        fail(f"{name}: logits differ from the PyTorch reference by {e:.2e} (forward) and {eg:.2e} "
             f"(generator), more than {TOLERANCE}")
    line = f"{name}: {len(src)} tensors {dtype} x {len(files)} file(s) round trip bit-exact; " \
           f"logits vs PyTorch {e:.1e}, generator {eg:.1e}"
    if config.get("rope_scaling"):  # the scaling changes the logits: the path is exercised
        unscaled = rel(ours, reference_logits(config, stored, tokens, scaled=False))
        if unscaled < 100 * TOLERANCE:
            fail(f"{name}: the logits without rope scaling differ by only {unscaled:.1e}")
        line += f" (without llama3 scaling the reference is {unscaled:.1e} away)"
    print(line)
    return hf, ckpt


def check_dtypes(ckpt, hf):
    """--dtype bf16 | f16 of an F32 model: each value rounded to nearest even, as numpy does."""
    src = read_hf_raw(hf)
    for flag, dtype in (("bf16", "BF16"), ("f16", "F16")):
        out = os.path.join(WORK, "dtype-" + flag)
        ok("convert", "--from", ckpt, "--to", "hf:" + out, "--dtype", flag)
        got = read_hf_raw(out)
        for t, (_, shape, blob) in src.items():
            want = encode(np.frombuffer(blob, "<f4").reshape(shape), dtype)
            if got[t] != (dtype, shape, want):
                fail(f"--dtype {flag}: tensor {t} is not the rounded F32 tensor")
        if json.load(open(os.path.join(out, "config.json")))["torch_dtype"] != \
                {"bf16": "bfloat16", "f16": "float16"}[flag]:
            fail(f"--dtype {flag}: config.json's torch_dtype")
        shutil.rmtree(out)
    expect_error("unknown tensor type 'f8'", "convert", "--from", ckpt, "--to",
                 "hf:" + os.path.join(WORK, "dtype-f8"), "--dtype", "f8")
    print("--dtype bf16 and f16 round an F32 model to nearest even")


def check_commands(ckpt, data):
    """eval, generate, train --init on a converted checkpoint; the fine-tuned run converts back."""
    out = ok("eval", "--ckpt", ckpt, "--data", os.path.join(data, "val.bin"), "--batches", 1)
    if "loss" not in out:
        fail(f"eval printed {out!r}")
    ok("generate", "--ckpt", ckpt, "--prompt", "kalo mi", "--max-tokens", 6, "--temperature", 0)
    run_dir = os.path.join(WORK, "finetune")
    out = ok("train", "--config", os.path.join(ckpt, "model.toml"), "--init", ckpt,
             "--data.dir", data, "--train.out_dir", run_dir, "--train.steps", 2,
             "--train.seq_len", 32, "--train.batch_size", 2, "--train.val_every", 0,
             "--train.val_batches", 1, "--train.threads", 1)
    if "starting from the weights of" not in out:
        fail(f"train --init did not say it started from {ckpt}: {out!r}")
    back = os.path.join(WORK, "finetune-hf")
    ok("convert", "--from", run_dir, "--to", "hf:" + back)  # its latest checkpoint, fp32
    if json.load(open(os.path.join(back, "config.json")))["torch_dtype"] != "float32":
        fail("a trained checkpoint converts to float32 by default")
    print("eval, generate and train --init run on the converted checkpoint; the run converts back")


def check_refusals(base_config, data):
    tok = os.path.join(data, "tokenizer.model")
    bad = os.path.join(WORK, "bad-hf")
    out = os.path.join(WORK, "bad-ckpt")
    weights = make_weights(base_config, seed=3)
    cfg = dict(base_config, rope_scaling={"type": "linear", "factor": 2.0})
    write_hf(bad, cfg, weights, "F32", tokenizer=tok)
    expect_error("rope_scaling type 'linear' is not supported", "convert", "--from", "hf:" + bad,
                 "--to", out, absent=out)
    write_hf(bad, base_config, weights, "F32")
    json.dump({"version": "1.0", "model": {"type": "BPE"}}, open(os.path.join(bad, "tokenizer.json"), "w"))
    expect_error("the BPE model has no vocab", "convert", "--from", "hf:" + bad, "--to", out, absent=out)
    missing = "model.layers.1.mlp.up_proj.weight"
    write_hf(bad, base_config, {k: v for k, v in weights.items() if k != missing}, "BF16", tokenizer=tok)
    expect_error("no tensor " + missing, "convert", "--from", "hf:" + bad, "--to", out, absent=out)
    write_hf(bad, base_config, weights, "F32", shards=2, tokenizer=tok,
             extra=[("model.layers.0.self_attn.q_proj.bias", "F32", np.zeros(64, np.float32))])
    expect_error("q_proj.bias is not part of a Llama model", "convert", "--from", "hf:" + bad,
                 "--to", out, absent=out)
    wrong = dict(weights, **{"model.norm.weight": np.ones(65, np.float32)})
    write_hf(bad, base_config, wrong, "F32", tokenizer=tok)
    expect_error("model.norm.weight has shape (65)", "convert", "--from", "hf:" + bad, "--to", out,
                 absent=out)
    cfg = dict(base_config, architectures=["MistralForCausalLM"], model_type="mistral")
    write_hf(bad, cfg, weights, "F32", tokenizer=tok)
    expect_error("is not LlamaForCausalLM", "convert", "--from", "hf:" + bad, "--to", out, absent=out)
    write_hf(bad, base_config, weights, "F32", tokenizer=tok)
    os.makedirs(out)
    open(os.path.join(out, "keep"), "w").close()
    expect_error("already exists", "convert", "--from", "hf:" + bad, "--to", out)
    if os.listdir(out) != ["keep"]:
        fail("a refused conversion touched an existing directory")
    expect_error("convert hf:DIR to a checkpoint first", "convert", "--from", "hf:" + bad, "--to",
                 "gguf:m.gguf")
    expect_error("is not a complete checkpoint", "convert", "--from", out, "--to", "gguf:m.gguf")
    expect_error("both checkpoints", "convert", "--from", out, "--to", out + "2")


def check_overflow(base_config, data):
    """fp16 output refuses values beyond fp16's range before writing anything, naming the tensor
    and the count; --allow-overflow clamps them to +-65504."""
    tok = os.path.join(data, "tokenizer.model")
    src, ckpt = os.path.join(WORK, "big-hf"), os.path.join(WORK, "big-ckpt")
    weights = make_weights(base_config, seed=4)
    name = "model.layers.1.mlp.down_proj.weight"
    weights[name][0, :3] = [1e5, -7e4, 65519.0]  # the last rounds to 65504: no overflow
    write_hf(src, base_config, weights, "F32", tokenizer=tok)
    ok("convert", "--from", "hf:" + src, "--to", ckpt)
    out, gguf = os.path.join(WORK, "big-f16"), os.path.join(WORK, "big.gguf")
    expect_error(f"2 value(s) beyond fp16's range (|x| >= 65520, which would become ±inf) in "
                 f"{name} (2); nothing written", "convert", "--from", ckpt, "--to", "hf:" + out,
                 "--dtype", "f16", absent=out)
    expect_error(f"in {name} (2)", "convert", "--from", ckpt, "--to", "gguf:" + gguf, absent=gguf)
    expect_error("--allow-overflow is for fp16 output", "convert", "--from", "hf:" + src, "--to",
                 ckpt + "-2", "--allow-overflow", absent=ckpt + "-2")
    rc, _, err, _ = run("convert", "--from", ckpt, "--to", "hf:" + out, "--dtype", "f16",
                        "--allow-overflow")
    if rc != 0 or "2 value(s)" not in err or "clamped to ±65504" not in err:
        fail(f"--allow-overflow: exit {rc}, stderr {err!r}")
    dtype, shape, blob = read_hf_raw(out)[name]
    got = decode(dtype, shape, blob)
    if list(got[0, :3]) != [65504.0, -65504.0, 65504.0] or not np.isfinite(got).all():
        fail(f"--allow-overflow: {name} starts {got[0, :3]}, not clamped to +-65504")
    ok("convert", "--from", ckpt, "--to", "gguf:" + gguf, "--allow-overflow")
    if not os.path.exists(gguf):
        fail("--allow-overflow: no GGUF file")
    print("fp16 output refuses values beyond its range, or clamps them with --allow-overflow")


def check_padded_and_special(base_config, data):
    """A model vocabulary padded past its tokenizer (416 rows, 400 pieces) whose padded rows would
    win every choice: generation never samples them (greedy and sampled, one prompt and a prompts
    file). A tokenizer whose special ids are not unk 0, bos 1, eos 2 is refused in one line."""
    tok = os.path.join(data, "tokenizer.model")
    weights = make_weights(base_config, seed=5)
    head = weights["lm_head.weight"]
    head[400:] = 50.0 * np.abs(head[400:])  # large rows: their logits dominate
    hf, ckpt = os.path.join(WORK, "padded-hf"), os.path.join(WORK, "padded-ckpt")
    write_hf(hf, base_config, weights, "F32", tokenizer=tok)
    ok("convert", "--from", "hf:" + hf, "--to", ckpt)
    for temp in (0, 1):
        out = ok("generate", "--ckpt", ckpt, "--prompt", "kalo mi", "--max-tokens", 12,
                 "--temperature", temp, "--ids")
        ids = json.loads(out.strip().splitlines()[-1])
        if not ids or max(ids) >= 400:
            fail(f"generate (temperature {temp}) sampled {ids}: ids past the tokenizer's 400")
    prompts, results = os.path.join(WORK, "prompts.txt"), os.path.join(WORK, "padded.jsonl")
    open(prompts, "w").write("kalo mi\nsa te vo\n")
    ok("generate", "--ckpt", ckpt, "--prompts", prompts, "--out", results, "--max-tokens", 8,
       "--temperature", 0)
    if len(open(results).read().splitlines()) != 2:
        fail("generate --prompts on a padded model wrote no results")
    # The same corpus, a tokenizer with unk 2, bos 0, eos 1 (sentencepiece's own trainer).
    spm = os.path.join(WORK, "ids")
    r = subprocess.run(["spm_train", "--input", os.path.join(WORK, "corpus.txt"), "--model_prefix",
                        spm, "--vocab_size", "400", "--model_type", "bpe", "--unk_id", "2",
                        "--bos_id", "0", "--eos_id", "1", "--byte_fallback", "true",
                        "--minloglevel", "2"], capture_output=True, text=True)
    if r.returncode != 0:
        fail("spm_train: " + r.stderr[-500:])
    write_hf(hf, base_config, weights, "F32", tokenizer=spm + ".model")
    expect_error("parallama needs unk 0, bos 1, eos 2", "convert", "--from", "hf:" + hf, "--to",
                 ckpt + "2", absent=ckpt + "2")
    print("padded vocabulary: never sampled; other special ids: refused")


def check_memory(data):
    """The peak memory of converting a model whose fp32 weights are 35 MB, both ways."""
    cfg = hf_config(dim=256, layers=1, heads=4, kv_heads=4, ffn=512, vocab=32000, max_pos=64,
                    tied=True, dtype="bfloat16")
    hf, ckpt, back = (os.path.join(WORK, "mem" + s) for s in ("-hf", "-ckpt", "-back"))
    weights = make_weights(cfg, seed=11)
    write_hf(hf, cfg, weights, "BF16", tokenizer=os.path.join(data, "tokenizer.model"))
    model_kib = sum(a.size for a in weights.values()) * 4 / 1024
    _, _, _, base = run("convert", "--from", "hf:" + hf + "-absent", "--to", ckpt)  # start-up only
    peaks = []
    for args in (("--from", "hf:" + hf, "--to", ckpt), ("--from", ckpt, "--to", "hf:" + back)):
        rc, _, err, peak = run("convert", *args)
        if rc != 0:
            fail(f"convert {' '.join(args)}: {err.strip()}")
        peaks.append(peak - base)
        if peak - base > 0.4 * model_kib:
            fail(f"convert {' '.join(args)} peaked at {peak} KiB, {peak - base} KiB above start-up: "
                 f"the fp32 model is {model_kib:.0f} KiB, so it is not streaming")
    print(f"memory: model {model_kib / 1024:.1f} MiB in fp32; convert peaks "
          f"{peaks[0] / 1024:.1f} MiB (hf -> ckpt) and {peaks[1] / 1024:.1f} MiB (ckpt -> hf) "
          f"above a start-up of {base / 1024:.1f} MiB")
    for d in (hf, ckpt, back):
        shutil.rmtree(d)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    torch.set_num_threads(1)
    data = make_tokenizer()
    llama3 = {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 32, "rope_type": "llama3"}
    hf, ckpt = check_case("f32", hf_config(), "F32", data)
    check_dtypes(ckpt, hf)
    check_case("bf16-tied-llama3", hf_config(tied=True, rope_scaling=llama3, dtype="bfloat16"),
               "BF16", data)
    check_case("f16-sharded", hf_config(dtype="float16", kv_heads=4), "F16", data, shards=3,
               shard_mb=0.03)
    check_case("bf16-sharded-llama3", hf_config(rope_scaling=llama3, dtype="bfloat16", layers=3),
               "BF16", data, shards=2)
    check_commands(ckpt, data)
    check_refusals(hf_config(), data)
    check_overflow(hf_config(), data)
    check_padded_and_special(hf_config(), data)
    check_memory(data)
    print("hf_convert: all checks passed")


if __name__ == "__main__":
    main()
