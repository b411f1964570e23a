// Runs a parallama model exported to GGUF in llama.cpp (through node-llama-cpp, CPU only) and
// holds it to what parallama itself computes, given in a JSON spec (see gguf_llama_cpp.sh):
//   load:     GGUF files that must load and score a sequence with finite logits (f16, q8_0)
//   f32:      the f32 GGUF, checked against parallama:
//   verses:   texts, with parallama_ids: parallama's ids of each (no <s>): tokenization must match
//             (special_tokens: special-token strings in a text are those tokens, as in parallama)
//   bos, eos: the model's ids of <s> and </s> (default 1 and 2)
//   prompts:  texts, with greedy_ids: parallama's greedy continuation of <s> + prompt
//             (--max-tokens max_tokens, stopping at </s>): llama.cpp's must match
//   stream, seq_len, parallama_loss: a held-out token stream, cut into windows of seq_len + 1
//             starting every seq_len tokens (as parallama eval does); llama.cpp's mean negative
//             log-likelihood of the targets gives the perplexity, within max_rel of parallama's
// Prints the measured values as lines "name: value" and exits 1 on any mismatch.
// Usage: node llama_cpp_check.mjs SPEC.json   (NODE_PATH or a parent node_modules: node-llama-cpp)
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const require = createRequire(path.join(spec.node_modules, "noop.js"));
const { getLlama, LlamaLogLevel } = await import(require.resolve("node-llama-cpp"));

const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
};

// Prebuilt CPU binaries only: never build llama.cpp, never download anything.
const llama = await getLlama({
  gpu: false,
  build: "never",
  usePrebuiltBinaries: true,
  skipDownload: true,
  progressLogs: false,
  logLevel: LlamaLogLevel.error,
  maxThreads: 1,
});
console.log(`llama.cpp: node-llama-cpp ${spec.version}, build ${llama.llamaCppRelease?.release ?? "?"}`);

async function open(file, contextSize) {
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0, useMmap: true });
  const context = await model.createContext({
    contextSize,
    batchSize: contextSize,
    sequences: 1,
    threads: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32", // llama.cpp's default is an F16 cache: keep fp32 for f32
    experimentalKvCacheValueType: "F32",
  });
  return { model, context, seq: context.getSequence() };
}

// The log-softmax of the logits after each of `tokens` (fed from an empty sequence) at targets.
async function target_logprobs(seq, tokens, targets) {
  await seq.clearHistory();
  {
    const input = tokens.map((t) => [t, { generateNext: { logits: true } }]);
    const out = await seq.controlledEvaluate(input);
    return targets.map((target, i) => {
      const logits = out[i]?.next?.logits;
      if (!logits) throw new Error(`no logits at position ${i}`);
      let max = -Infinity;
      for (const v of logits.values()) max = Math.max(max, v);
      let sum = 0;
      for (const v of logits.values()) sum += Math.exp(v - max);
      const lt = logits.get(target);
      if (lt === undefined) throw new Error(`no logit for token ${target}`);
      return lt - max - Math.log(sum);
    });
  }
}

// The summed negative log-likelihood of the held-out stream, window by window.
async function stream_nll(seq) {
  const T = spec.seq_len;
  const windows = Math.floor((spec.stream.length - 1) / T);
  let nll = 0, n = 0;
  for (let w = 0; w < windows; w++) {
    const tokens = spec.stream.slice(w * T, w * T + T);
    const targets = spec.stream.slice(w * T + 1, w * T + T + 1);
    const lp = await target_logprobs(seq, tokens, targets);
    for (const v of lp) nll -= v;
    n += lp.length;
  }
  return { nll, n, windows };
}

// --- the f32 model against parallama -------------------------------------------------------
{
  const { model, context, seq } = await open(spec.f32, spec.seq_len + 8);
  const [bos, eos] = [spec.bos ?? 1, spec.eos ?? 2];
  const special = spec.special_tokens ?? false;
  check(model.tokens.bos === bos && model.tokens.eos === eos, `bos/eos ids ${model.tokens.bos}/${model.tokens.eos}, parallama ${bos}/${eos}`);

  // (a) tokenization
  let same = 0;
  spec.verses.forEach((text, i) => {
    const got = Array.from(model.tokenize(text, special));
    const want = spec.parallama_ids[i];
    if (JSON.stringify(got) === JSON.stringify(want)) same++;
    else failures.push(`tokenization of ${JSON.stringify(text)}: llama.cpp ${JSON.stringify(got)}, parallama ${JSON.stringify(want)}`);
  });
  console.log(`tokenization: ${same}/${spec.verses.length} texts give the same ids`);

  // (b) greedy continuations: argmax of the logits, step by step, stopping at </s>
  let greedy_same = 0;
  for (const [i, prompt] of spec.prompts.entries()) {
    await seq.clearHistory();
    const ids = [model.tokens.bos, ...model.tokenize(prompt, special)];
    const got = [];
    let next = ids;
    for (let step = 0; step < spec.max_tokens; step++) {
      const items = next.map((t, k) => (k === next.length - 1 ? [t, { generateNext: { logits: true } }] : t));
      const out = await seq.controlledEvaluate(items);
      const logits = out[items.length - 1].next.logits;
      const [top] = logits.entries().next().value; // sorted by logit, highest first
      if (top === model.tokens.eos) break;
      got.push(top);
      next = [top];
    }
    const want = spec.greedy_ids[i];
    const prefix = (a, b) => a.findIndex((t, k) => t !== b[k]);
    if (JSON.stringify(got) === JSON.stringify(want)) greedy_same++;
    else failures.push(`greedy continuation of ${JSON.stringify(prompt)}: llama.cpp ${JSON.stringify(got)}, parallama ${JSON.stringify(want)} (first difference at ${prefix(got, want)})`);
    console.log(`greedy ${JSON.stringify(prompt)}: ${JSON.stringify(model.detokenize(got))}`);
  }
  console.log(`greedy: ${greedy_same}/${spec.prompts.length} continuations of ${spec.max_tokens} tokens identical`);

  // (c) perplexity on held-out text, in parallama's windows
  const { nll, n, windows } = await stream_nll(seq);
  const loss = nll / n, ppl = Math.exp(loss), ppl_p = Math.exp(spec.parallama_loss);
  const rel = Math.abs(ppl - ppl_p) / ppl_p;
  console.log(`perplexity: llama.cpp ${ppl.toFixed(6)}, parallama ${ppl_p.toFixed(6)} over ${n} tokens in ${windows} windows; relative difference ${rel.toExponential(3)}`);
  check(n === spec.parallama_tokens, `llama.cpp scored ${n} tokens, parallama ${spec.parallama_tokens}`);
  check(rel <= spec.max_rel, `perplexity differs by ${rel.toExponential(3)} relative (allowed ${spec.max_rel})`);
  await context.dispose();
  await model.dispose();
}

// --- the other types load and compute -------------------------------------------------------
for (const { file, max_rel } of spec.load) {
  const { model, context, seq } = await open(file, spec.seq_len + 8);
  const { nll, n } = await stream_nll(seq);
  const ppl = Math.exp(nll / n), ppl_p = Math.exp(spec.parallama_loss);
  const rel = Math.abs(ppl - ppl_p) / ppl_p;
  console.log(`${path.basename(file)}: perplexity ${ppl.toFixed(6)} (relative difference to parallama's f32 ${rel.toExponential(3)}, allowed ${max_rel})`);
  check(rel <= max_rel, `${file}: perplexity ${ppl} against parallama's ${ppl_p}`);
  await context.dispose();
  await model.dispose();
}

await llama.dispose();
if (failures.length) {
  for (const f of failures) console.log(`FAIL: ${f}`);
  process.exit(1);
}
console.log("llama.cpp agrees with parallama");
