#!/usr/bin/env bash
# train_peer.sh [N]: `ktoloader train --model tiny` against the PyTorch peer (../shared/bench/torch_kto_peer.py,
# packed mode) on the same shards, the same 5 KTO batches and the same thread count, run alternately N times
# (default 3); prints each run, both medians and the ratio ktoloader/torch (issue 14).
#
# The shards are the first $ROWS (160) Nexus rows prepped with the real Mistral tokenizer (prep defaults:
# max-len 2048, KTO batch 8, seed 42). Both sides report tokens/s over the non-padding tokens of the batches
# and over training steps only: the peer computes its reference log-probs first and leaves them out of its
# clock; ktoloader reads them from OUT/ref_logps/, filled by one untimed warm-up run (`--ref precomputed`
# does all 20 batches: minutes, once; $WORK is reused between invocations while the input rows are the same).
#
# Needs: ../shared (data, tokenizer, the peer), Go, Debian python3-torch + libopenblas0-pthread for
# /usr/bin/python3, node + npm's @duckdb/node-api in $KTOREF_CACHE (installed there on first use, outside
# the repo; never by tests). Env: ROWS, STEPS (5), THREADS (2), WORK (/tmp/ktoloader-train-peer),
# KTOREF_CACHE (/tmp/ktoref), SHARED (../shared next to the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
ROWS=${ROWS:-160} STEPS=${STEPS:-5} THREADS=${THREADS:-2}
WORK=${WORK:-/tmp/ktoloader-train-peer}
export KTOREF_CACHE=${KTOREF_CACHE:-/tmp/ktoref}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
PEER=$SHARED/bench/torch_kto_peer.py
DATA=$SHARED/data/nexus/behavior_merged_kto_v1.5_balanced.jsonl
TOK=$SHARED/tokenizers/mistral-7b-v0.3

die() { echo "train_peer.sh: $*" >&2; exit 1; }
[[ -f $PEER && -f $DATA && -d $TOK ]] || die "needs $PEER, $DATA and $TOK (the ../shared checkout)"
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
  die "needs PyTorch for /usr/bin/python3: apt-get install -y python3-torch libopenblas0-pthread"
command -v node >/dev/null || die "needs node (Debian nodejs) for ../shared/bench/dump_parquet.mjs"
if [[ ! -d $KTOREF_CACHE/node_modules/@duckdb/node-api ]]; then
  echo "installing @duckdb/node-api into $KTOREF_CACHE (once)" >&2
  mkdir -p "$KTOREF_CACHE"
  npm install --silent --no-audit --no-fund --prefix "$KTOREF_CACHE" @duckdb/node-api@1.5.6-r.1 >&2
fi

mkdir -p "$WORK"
go build -o "$WORK/ktoloader" ./cmd/ktoloader
head -n "$ROWS" "$DATA" > "$WORK/in.jsonl.new"
if [[ -f $WORK/out/manifest.json && -f $WORK/in.jsonl ]] && cmp -s "$WORK/in.jsonl" "$WORK/in.jsonl.new"; then
  rm "$WORK/in.jsonl.new"   # same rows: keep the shards and their cached reference log-probs
else
  mv "$WORK/in.jsonl.new" "$WORK/in.jsonl"
  rm -rf "$WORK/out" "$WORK/dump"
  "$WORK/ktoloader" prep --input "$WORK/in.jsonl" --tokenizer "$TOK" --offline --out "$WORK/out" --no-progress >&2
fi
if [[ ! -s $WORK/dump/packed.jsonl ]]; then
  mkdir -p "$WORK/dump"
  node "$SHARED/bench/dump_parquet.mjs" "$WORK"/out/kto_packed/train-*.parquet "$WORK/dump/packed.jsonl" >/dev/null
  node "$SHARED/bench/dump_parquet.mjs" "$WORK"/out/kto/train-*.parquet "$WORK/dump/kto.jsonl" >/dev/null
fi

ktol() { GOMAXPROCS=$THREADS "$WORK/ktoloader" train --data "$WORK/out" --model tiny --steps "$STEPS" \
           --no-eval --no-progress --json 2>>"$WORK/train.err"; }
if [[ ! -f $WORK/out/ref_logps/train.parquet ]]; then
  echo "warm-up: ktoloader computes and caches the reference log-probs (untimed)" >&2
  ktol >/dev/null
fi

field() { /usr/bin/python3 -c 'import json,sys
for l in sys.stdin:
    o = json.loads(l); o = o.get("summary", o)
    if sys.argv[1] in o: v = o; print(v[sys.argv[1]], v.get(sys.argv[2], ""))' "$@"; }
torch_tps=() ktol_tps=()
for i in $(seq 1 "$N"); do
  read -r t tok < <(/usr/bin/python3 "$PEER" packed "$STEPS" "$THREADS" "$WORK/dump" | field tokens_per_s tokens)
  torch_tps+=("$t")
  read -r k ktok < <(ktol | field mean_tokens_per_s tokens)
  ktol_tps+=("$k")
  [[ $tok == "$ktok" ]] || die "run $i: the peer saw $tok tokens, ktoloader $ktok: not the same batches"
  printf 'run %d: torch %s tokens/s, ktoloader %.0f tokens/s (%s tokens each, %s steps, %s threads)\n' \
    "$i" "$t" "$k" "$tok" "$STEPS" "$THREADS"
done
/usr/bin/python3 - "${torch_tps[*]}" "${ktol_tps[*]}" <<'EOF'
import statistics, sys
t = [float(x) for x in sys.argv[1].split()]; k = [float(x) for x in sys.argv[2].split()]
mt, mk = statistics.median(t), statistics.median(k)
print(f"median: torch (packed) {mt:.0f} tokens/s, ktoloader {mk:.0f} tokens/s, ratio ktoloader/torch {mk / mt:.2f}")
EOF
