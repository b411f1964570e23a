#!/usr/bin/env bash
# Llama 3's tokenizer end to end, held to llama.cpp. A byte-level BPE in Llama 3's format
# (tokenizer.json with its Split pattern, ByteLevel pre-tokenizer, ignore_merges, special tokens
# and BOS post-processor; tokenizer_config.json naming BOS and EOS) is trained by an independent
# reference trainer (bpe_reference.py) on King James verses and a multilingual sample written
# here. parallama prepares a corpus with it, trains a tiny model, and exports it to GGUF; llama.cpp
# (node-llama-cpp) must give the same ids for 200+ texts (tokenizer_texts.py: numbers, spaces,
# tabs, contractions, accents, CJK, emoji, broken-looking text, special-token strings), the same
# greedy continuations, and the same perplexity. Then: convert to hf: keeps both tokenizer files
# byte for byte, and back gives the same generation; finetune and classify run with it; a
# vocabulary above 65,535 makes 32-bit shards that train; bad tokenizer files are refused in one
# line with exit 2, writing nothing.
# Usage: llama3_tokenizer.sh PARALLAMA_BIN SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
source "$src/tests/e2e/lib.sh"
source "$src/tests/interop/llama_cpp_lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
py=/usr/bin/python3

bible -f gen1:1-rev22:21 | awk '{ sub(/^[^ ]+ /, "") } NR <= 2000 { print > "text.txt" }
                                NR > 3000 && NR <= 3040 { print > "heldout.txt" }
                                NR > 3040 && NR <= 3160 { print > "verses.txt" }'
cat > multilingual.txt << 'EOF'
Au commencement, Dieu créa les cieux et la terre. La terre était informe et vide.
Im Anfang schuf Gott Himmel und Erde. Und die Erde war wüst und leer, und es war finster.
En el principio creó Dios los cielos y la tierra. ¿Qué más? ¡Sí, señor!
Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν.
В начале сотворил Бог небо и землю. Земля же была безвидна и пуста.
起初，神创造天地。地是空虚混沌，渊面黑暗。
はじめに神は天と地とを創造された。地は形なく、むなしかった。
태초에 하나님이 천지를 창조하시니라.
في البدء خلق الله السماوات والأرض.
आदि में परमेश्वर ने आकाश और पृथ्वी की सृष्टि की।
Emoji too: 😀 👍🏽 🎉 and numbers 1234567 and 3.14159, don't we'll they're I'M.
EOF
for i in 1 2 3 4 5 6 7 8; do cat multilingual.txt; done > multi8.txt
$py "$src/tests/interop/bpe_reference.py" --text text.txt --text multi8.txt --vocab 3000 --out tok
$py "$src/tests/interop/tokenizer_texts.py" verses.txt texts.json
n_texts=$($py -c 'import json; print(len(json.load(open("texts.json"))))')
[ "$n_texts" -ge 200 ] || fail "only $n_texts texts"

# 1. prepare with the tokenizer.json: the data set keeps both files.
cat text.txt multi8.txt > corpus.txt
"$bin" prepare --text corpus.txt --tokenizer tok/tokenizer.json --out data | tee prepare.log
cmp tok/tokenizer.json data/tokenizer.json && cmp tok/tokenizer_config.json data/tokenizer_config.json ||
  fail "prepare did not keep the tokenizer's files"
[ ! -e data/tokenizer.model ] || fail "prepare wrote a tokenizer.model beside tokenizer.json"

# 2. llama.cpp agrees: tokenization, greedy continuations, perplexity.
data=data vocab=3000 texts=texts.json seq_len=64 special=true steps=300
prompts=("And God said" "In the beginning" "Im Anfang schuf Gott" "起初，神创造天地")
# Llama 3.2's shape: tied embedding, grouped-query attention, rotary base 500000 with llama3
# scaling.
check l3 --model.rope_theta 500000 --model.rope_scaling llama3 --model.rope_factor 32 \
  --model.rope_low_freq_factor 1 --model.rope_high_freq_factor 4 --model.rope_original_max_len 64
"$bin" tokenize --ckpt l3 --text texts.json --json 2> speed.txt > /dev/null
cat speed.txt

# 3. hf: both ways keeps the tokenizer files, and the model.
"$bin" convert --from l3 --to hf:hf1 > /dev/null
for f in tokenizer.json tokenizer_config.json; do
  cmp tok/$f hf1/$f || fail "convert --to hf: changed $f"
done
grep -q '"bos_token_id": 2992' hf1/config.json || fail "config.json's bos_token_id: $(grep bos hf1/config.json)"
"$bin" convert --from hf:hf1 --to ck2 > /dev/null
"$bin" convert --from ck2 --to hf:hf2 > /dev/null
cmp hf1/tokenizer.json hf2/tokenizer.json || fail "a second round trip changed tokenizer.json"
a=$("$bin" generate --ckpt l3 --prompt "And God said" --temperature 0 --max-tokens 12 --ids | tail -n 1)
b=$("$bin" generate --ckpt ck2 --prompt "And God said" --temperature 0 --max-tokens 12 --ids | tail -n 1)
[ "$a" = "$b" ] || fail "generation after hf: both ways: $b, before: $a"
# The docs' path from a Hugging Face directory: fine-tune on a text file, generate, export.
bible -f gen1:1-rev22:21 | awk 'NR > 5000 && NR <= 5400 { sub(/^[^ ]+ /, ""); print }' > ft.txt
"$bin" prepare --text ft.txt --tokenizer ck2/tokenizer.json --out ftdata > /dev/null
cmp ck2/tokenizer_config.json ftdata/tokenizer_config.json || fail "prepare lost tokenizer_config.json"
"$bin" train --config ck2/model.toml --init ck2 --data.dir ftdata --train.seq_len 32 \
  --train.batch_size 4 --train.steps 3 --train.val_every 0 --train.ckpt_every 3 \
  --train.out_dir ft > /dev/null
"$bin" generate --ckpt ft --prompt "And God said" --max-tokens 8 > /dev/null
"$bin" convert --from ft --to gguf:ft.gguf > /dev/null

# 4. finetune and classify with it.
bible -f gen1:1-rev22:21 | awk 'NR % 30 == 1' > cls_verses.txt
"$bin" prepare-classify --task testament --verses cls_verses.txt --out cls > /dev/null
"$bin" finetune --task classify --init l3 --data cls --batch 4 --seq-len 32 --steps 3 \
  --out clf > /dev/null
cmp tok/tokenizer.json clf/classifier/tokenizer.json || fail "the classifier lacks tokenizer.json"
head -3 heldout.txt > lines.txt
"$bin" classify --ckpt clf/classifier --text lines.txt --out labels.jsonl > /dev/null
[ "$(wc -l < labels.jsonl)" -eq 3 ] || fail "classify gave $(wc -l < labels.jsonl) lines"

# 5. A vocabulary above 65,535: 32-bit shards, and a model that trains on them.
$py "$src/tests/interop/bpe_reference.py" --text text.txt --vocab 1000 --pad-to 70000 --out big \
  --merges strings > /dev/null
head -300 text.txt | sed 's/$/<|eot_id|>/' > big.txt
"$bin" prepare --text big.txt --tokenizer big/tokenizer.json --out bigdata > /dev/null
width=$($py -c 'import struct; print(struct.unpack_from("<I", open("bigdata/train.bin","rb").read(), 12)[0])')
[ "$width" = 4 ] || fail "a 70,000-token vocabulary gave $width-byte tokens"
"$bin" train --config "$src/configs/tiny.toml" --data.dir bigdata --model.vocab_size 70000 \
  --train.steps 2 --train.val_every 0 --train.ckpt_every 2 --train.out_dir bigrun > /dev/null
head -2 big.txt > biglines.txt
"$bin" tokenize --ckpt bigrun --text biglines.txt 2> /dev/null | grep -q "69999" ||
  fail "the special token <|eot_id|> (id 69999) is missing from the tokens"

# 6. Bad tokenizer files: one line, exit 2, nothing written.
bad() {  # bad NAME PYTHON_EDIT MESSAGE: tok/tokenizer.json edited by PYTHON_EDIT (on j) is refused
  mkdir -p "bad-$1"
  cp tok/tokenizer_config.json "bad-$1/"
  $py -c "import json; j = json.load(open('tok/tokenizer.json')); $2; json.dump(j, open('bad-$1/tokenizer.json', 'w'))"
  expect_error "$3" prepare --text text.txt --tokenizer "bad-$1/tokenizer.json" --out "out-$1"
  [ ! -e "out-$1" ] || fail "a refused tokenizer ($1) left out-$1"
}
bad wordpiece "j['model']['type'] = 'WordPiece'" "the model is WordPiece, not BPE"
bad unigram "j['model'] = {'type': 'Unigram', 'vocab': [['a', 0.0]]}" "the model is Unigram"
bad merge "j['model']['merges'].append(['zzq', 'qzz'])" "names 'zzq', which is not in the vocabulary"
bad gap "del j['model']['vocab']['Ġthe']" "no token has id"
bad normalizer "j['normalizer'] = {'type': 'NFC'}" "the normalizer NFC is not supported"
printf '{"model": {"type": "BPE", "vocab": ' > bad-trunc.json
expect_error "not JSON" prepare --text text.txt --tokenizer bad-trunc.json --out out-trunc
[ ! -e out-trunc ] || fail "a malformed tokenizer.json left out-trunc"
# A vocabulary larger than the model's embedding: refused by train and by convert hf:.
expect_error "made with a vocabulary of 3000 but model.vocab_size is 2000" train --config "$src/configs/tiny.toml" \
  --data.dir data --model.vocab_size 2000 --train.steps 1 --train.out_dir never
[ ! -e never ] || fail "a refused train left its run directory"
cp -r hf1 hf-small
$py -c "import json; c = json.load(open('hf-small/config.json')); c['vocab_size'] = 2000; json.dump(c, open('hf-small/config.json', 'w'))"
expect_error "3000 tokens, more than the model's vocab_size 2000" convert --from hf:hf-small --to never2
[ ! -e never2 ] || fail "a refused convert left never2"
echo "PASS: Llama 3's tokenizer end to end, $n_texts texts as llama.cpp tokenizes them"
