#!/usr/bin/env python3
"""A small byte-level BPE trainer, independent of parallama, that writes a Llama-3-style
tokenizer.json and tokenizer_config.json: Llama 3's Split pattern and ByteLevel pre-tokenizer,
the BPE model with ignore_merges, Llama 3's special tokens as added tokens, and a post-processor
that puts <|begin_of_text|> first.

Training: the texts are cut into words by an approximation of Llama 3's pattern (Python's re has
no \\p{L}; a trainer only needs plausible words), each word's bytes are the starting symbols, and
the most frequent adjacent pair is merged until the vocabulary has --vocab tokens (ties: the
lowest pair of ids). Any merge list is a valid tokenizer; llama.cpp is what the tests compare to.

Usage: bpe_reference.py --text FILE [--text FILE ...] --vocab N --out DIR
                        [--merges pairs|strings] [--pad-to N]
--pad-to adds never-merged filler tokens so that the vocabulary (with the special tokens) has N
tokens, the special tokens last (ids above 65,535 for the 32-bit shard test).
"""
import argparse
import collections
import heapq
import json
import os
import re

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
WORDS = re.compile(r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\w]?[^\W\d_]+|\d{1,3}| ?[^\s\w]+[\r\n]*|"
                   r"\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|reserved_special_token_2|>", "<|eot_id|>"]


def alphabet():
    """The printable character that stands for each byte (GPT-2's byte-level scheme)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def train(texts, n_tokens):
    counts = collections.Counter()
    for t in texts:
        counts.update(WORDS.findall(t))
    words = [list(w.encode("utf-8")) for w in counts]
    freq = list(counts.values())
    tokens = [bytes([b]) for b in range(256)]
    index = {t: i for i, t in enumerate(tokens)}
    pairs, where = collections.Counter(), collections.defaultdict(set)

    def account(i, sign):
        w = words[i]
        for p in zip(w, w[1:]):
            pairs[p] += sign * freq[i]
            if sign > 0:
                where[p].add(i)

    for i in range(len(words)):
        account(i, 1)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    merges = []
    while len(tokens) < n_tokens and heap:
        c, p = heapq.heappop(heap)
        if -c != pairs.get(p, 0) or c == 0:
            continue  # stale
        merged = tokens[p[0]] + tokens[p[1]]
        if merged not in index:
            index[merged] = len(tokens)
            tokens.append(merged)
        new = index[merged]
        merges.append(p)
        touched = set()
        for i in list(where[p]):
            w = words[i]
            if not any(a == p[0] and b == p[1] for a, b in zip(w, w[1:])):
                continue
            account(i, -1)
            out, k = [], 0
            while k < len(w):
                if k + 1 < len(w) and w[k] == p[0] and w[k + 1] == p[1]:
                    out.append(new)
                    k += 2
                else:
                    out.append(w[k])
                    k += 1
            words[i] = out
            account(i, 1)
            touched.update(zip(out, out[1:]))
        pairs.pop(p, None)
        for q in touched:
            if pairs.get(q, 0) > 0:
                heapq.heappush(heap, (-pairs[q], q))
    return tokens, merges


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", action="append", required=True)
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--merges", choices=["pairs", "strings"], default="pairs")
    ap.add_argument("--pad-to", type=int, default=0)
    a = ap.parse_args()
    texts = [open(f, encoding="utf-8").read() for f in a.text]
    tokens, merges = train(texts, a.vocab - len(SPECIALS))
    alpha = alphabet()
    spell = [''.join(alpha[b] for b in t) for t in tokens]
    while a.pad_to and len(spell) < a.pad_to - len(SPECIALS):
        spell.append("\u0100filler%d" % len(spell))  # never made by a merge
    vocab = {s: i for i, s in enumerate(spell)}
    added = [{"id": len(spell) + k, "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for k, s in enumerate(SPECIALS)]
    merge_list = [[spell[l], spell[r]] for l, r in merges]
    if a.merges == "strings":
        merge_list = [l + " " + r for l, r in merge_list]
    bos = SPECIALS[0]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos, "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos: {"id": bos, "ids": [vocab_size_of(spell)], "tokens": [bos]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merge_list},
    }
    config = {"bos_token": bos, "eos_token": SPECIALS[1], "clean_up_tokenization_spaces": True,
              "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast",
              "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                       for t in added}}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    print("wrote %s: %d tokens (%d merges, %d special)" %
          (a.out, len(spell) + len(SPECIALS), len(merges), len(SPECIALS)))


def vocab_size_of(spell):
    return len(spell)


if __name__ == "__main__":
    main()
