#!/usr/bin/env bash
# build_demo_tokenizer.sh: trains the small demo tokenizer that ktoloader falls back to when no
# Mistral tokenizer is given or found (DESIGN.md "Commands"), and writes it to
# testdata/demo-tokenizer/tokenizer.model.
#
# It is a SentencePiece BPE model shaped like Mistral v0.3's (ids 0..9 are Mistral's control
# tokens at Mistral's ids, byte fallback, identity normalizer, dummy prefix, split digits, no
# whitespace squeezing, whitespace-only pieces allowed), trained on the text of the project's
# own sample (testdata/sample.jsonl) with Debian's spm_train. Its other ids mean nothing to
# Mistral: shards made with it are for demos and tests only.
#
# Deterministic: one thread, every sentence used in file order (no sampling), a fixed seed,
# and relative paths (spm_train records --input and --model_prefix in the model), so a rerun
# with the same spm_train writes the same bytes.
#
# Needs: python3 (standard library) and spm_train/spm_export_vocab
#   (Debian/Ubuntu: apt-get install -y sentencepiece; built and checked with 0.1.97).
# Usage, from the repository root: scripts/build_demo_tokenizer.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
sample="$root/testdata/sample.jsonl"
out="$root/testdata/demo-tokenizer"
vocab_size=${VOCAB_SIZE:-4000}

for tool in spm_train spm_export_vocab python3; do
	command -v "$tool" >/dev/null || { echo "$0: $tool not found (apt-get install -y sentencepiece)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The corpus: every text the template renders for the sample (message contents, tool names,
# arguments re-serialized as the template writes them, tool schemas), one line per line of text.
python3 - "$sample" >"$work/corpus.txt" <<'PY'
import json, sys

def emit(text):
    for line in text.split("\n"):
        if line.strip():
            print(line)

with open(sys.argv[1], encoding="utf-8") as f:
    for raw in f:
        row = json.loads(raw)
        for m in row.get("conversations") or row.get("messages") or []:
            if m.get("content"):
                emit(m["content"])
            calls = []
            for c in m.get("tool_calls") or []:
                fn = c["function"]
                args = fn["arguments"]
                if isinstance(args, str):
                    args = json.loads(args)
                calls.append({"name": fn["name"], "arguments": args, "id": c["id"]})
            if calls:
                emit(json.dumps(calls, ensure_ascii=False))
        if row.get("tools"):
            emit(json.dumps(row["tools"], ensure_ascii=False))
PY

(
	cd "$work"
	spm_train \
		--input=corpus.txt \
		--model_prefix=tokenizer \
		--model_type=bpe \
		--vocab_size="$vocab_size" \
		--character_coverage=0.99995 \
		--byte_fallback=true \
		--unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
		--control_symbols='[INST],[/INST],[TOOL_CALLS],[AVAILABLE_TOOLS],[/AVAILABLE_TOOLS],[TOOL_RESULTS],[/TOOL_RESULTS]' \
		--add_dummy_prefix=true \
		--split_digits=true \
		--remove_extra_whitespaces=false \
		--normalization_rule_name=identity \
		--allow_whitespace_only_pieces=true \
		--max_sentencepiece_length=16 \
		--max_sentence_length=4192 \
		--num_threads=1 \
		--input_sentence_size=0 \
		--shuffle_input_sentence=false \
		--random_seed=42 \
		--minloglevel=1
	spm_export_vocab --model=tokenizer.model --output=tokenizer.vocab
)

# Mistral's control tokens must sit at Mistral's ids: the template code emits those ids.
want='<unk> <s> </s> [INST] [/INST] [TOOL_CALLS] [AVAILABLE_TOOLS] [/AVAILABLE_TOOLS] [TOOL_RESULTS] [/TOOL_RESULTS]'
got=$(head -n 10 "$work/tokenizer.vocab" | cut -f1 | tr '\n' ' ' | sed 's/ $//')
if [ "$got" != "$want" ]; then
	echo "$0: ids 0..9 are [$got], want [$want]" >&2
	exit 1
fi
n=$(wc -l <"$work/tokenizer.vocab")
if [ "$n" -ne "$vocab_size" ]; then
	echo "$0: vocabulary has $n pieces, want $vocab_size" >&2
	exit 1
fi

mkdir -p "$out"
cp "$work/tokenizer.model" "$out/tokenizer.model.tmp"
mv "$out/tokenizer.model.tmp" "$out/tokenizer.model"
echo "wrote $out/tokenizer.model ($n pieces)"
sha256sum "$out/tokenizer.model"
