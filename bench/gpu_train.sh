#!/usr/bin/env bash
# bench/gpu_train.sh — a few KTO steps of LoRA r=16 on a Mistral-7B-shaped model (random bf16
# weights made from ../shared/models/mistral-7b-v0.3/config.json: nothing is downloaded) on
# one H100/H200 through XLA/CUDA, on the Nexus data; prints tokens/s, MFU, peak device memory
# and the time to the first step (compilation). Budget: under 8 minutes on the GPU box.
#
#   bench/gpu_train.sh               build (-tags xla), prep, gen-model, train: all on this machine
#   bench/gpu_train.sh --dry-run     everything the CPU can do: build (no tag), prep, gen-model
#                                    with a tiny config, 1 step on the go backend; stops before CUDA
#   bench/gpu_train.sh --stage DIR   on a machine with Go and ../shared: build the xla binary
#                                    (stripped), prep the data, copy the config into DIR
#   bench/gpu_train.sh --from DIR    on the GPU box (no Go, no ../shared, no network): use DIR
#                                    from --stage; gen-model and train there
#
# Environment: STEPS (6), MAX_LEN (2048), BATCH (8, prep's --kto-batch-size), REF (lazy:
# reference log-probs as batches are used; precomputed would run the reference over the whole
# split first), TRAIN_FLAGS (extra `train` flags, e.g. "--micro-batch 1 --recompute"),
# KTOLOADER_XLA_PLUGIN (the CUDA PJRT plugin or its directory; default: the jax-cuda12/13-pjrt
# plugin of python3's site-packages, then go-xla's directories), KTOLOADER_XLA_MEMORY_FRACTION
# (0.95 here; XLA's default is 0.75), KTOLOADER_XLA_PREALLOCATE (false here, so that
# nvidia-smi's memory.used follows the allocator's high-water mark instead of the
# preallocated pool), PEAK_FLOPS (bf16 dense peak; default by nvidia-smi's name: 989e12 for
# H100 and H200 SXM), KEEP=1 keeps the temp dir (TMPDIR; gen-model writes 14.5 GB there).
#
# MFU = 6·N·tokens/s ÷ PEAK_FLOPS with N the base model's 7.25 B parameters, the customary
# figure for LoRA too (its real backward skips the frozen weights' gradients, ~4N, while the
# KL rows' and the reference's forward passes, 2N each, are not counted), tokens/s as the
# trainer reports it, averaged over the steps after the first.
#
# Not yet run on a GPU (docs/GPU.md). The --dry-run runs end to end here (CPU, go backend).
set -euo pipefail

mode=local stage=""
case "${1:-}" in
  --dry-run) mode=dry ;;
  --stage) mode=stage; stage=${2:?--stage DIR} ;;
  --from) mode=from; stage=${2:?--from DIR} ;;
  "") ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
shared=${KTOLOADER_SHARED:-$root/../shared}
STEPS=${STEPS:-6} MAX_LEN=${MAX_LEN:-2048} BATCH=${BATCH:-8} REF=${REF:-lazy}
BUDGET_S=${BUDGET_S:-470} # the whole script, leaving 10 s of the 8 minutes
start=$SECONDS
left() { echo $((BUDGET_S - (SECONDS - start))); }
say() { printf '[%3ds] %s\n' $((SECONDS - start)) "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu_train.XXXXXX")
bg=()
cleanup() {
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# --- binary --------------------------------------------------------------------------------
build() { # $1 output, rest go build flags
  local out=$1; shift
  say "go build $* ./cmd/ktoloader"
  (cd "$root" && go build "$@" -o "$out" ./cmd/ktoloader)
}
case $mode in
  dry) bin=$tmp/ktoloader; build "$bin" ;;
  stage) mkdir -p "$stage"; bin=$stage/ktoloader
    build "$bin" -tags xla -trimpath -ldflags=-s\ -w ;;
  from) bin=$stage/ktoloader; [ -x "$bin" ] || die "no $bin: run --stage first" ;;
  local) bin=${KTOLOADER_BIN:-}
    if [ -z "$bin" ]; then bin=$tmp/ktoloader; build "$bin" -tags xla; fi ;;
esac

# --- data ----------------------------------------------------------------------------------
prep() { # $1 out dir, $2 max-len
  local data=$shared/data/nexus/behavior_merged_kto_v1.5_balanced.jsonl
  local tok=$shared/tokenizers/mistral-7b-v0.3
  [ -f "$data" ] && [ -d "$tok" ] || die "no $data or $tok (set KTOLOADER_SHARED)"
  say "prep $(basename "$data") max-len $2 batch $BATCH"
  timeout 120 "$bin" prep --input "$data" --tokenizer "$tok" --offline --out "$1" --max-len "$2" \
    --kto-batch-size "$BATCH" --truncate keep-end --no-progress --workers "$(nproc)" >/dev/null \
    || die "prep"
}
config=$shared/models/mistral-7b-v0.3/config.json
case $mode in
  dry)
    data=$tmp/data; prep "$data" 512
    # Mistral's shape, shrunk: the tokenizer's vocabulary, 2 layers of d=64.
    config=$tmp/tiny_config.json
    cat > "$config" <<'EOF'
{"architectures": ["MistralForCausalLM"], "hidden_size": 64, "intermediate_size": 224,
 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
 "vocab_size": 32768, "max_position_embeddings": 32768, "rms_norm_eps": 1e-05,
 "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false,
 "initializer_range": 0.02, "torch_dtype": "bfloat16"}
EOF
    ;;
  stage)
    prep "$stage/data" "$MAX_LEN"; cp "$config" "$stage/config.json"
    say "staged $(du -sh "$stage" | cut -f1) in $stage: carry it and run bench/gpu_train.sh --from $stage"
    exit 0 ;;
  from) data=$stage/data; config=$stage/config.json ;;
  local) data=$tmp/data; prep "$data" "$MAX_LEN" ;;
esac
[ -f "$config" ] || die "no model config $config"

# --- model: random bf16 weights in the config's shape ----------------------------------------
model=$tmp/model
lora=(--lora-r 16 --dtype bfloat16)
if "$bin" gen-model --help >/dev/null 2>&1; then
  say "gen-model $(basename "$config") → $model (bfloat16)"
  timeout $(( $(left) / 3 )) "$bin" gen-model --config "$config" --out "$model" --dtype bfloat16 --seed 1 >&2 \
    || die "gen-model"
  say "model: $(du -sh "$model" | cut -f1)"
elif [ $mode = dry ]; then
  # Until gen-model lands the dry run still exercises the trainer: a config.json model
  # starts from random float32 weights.
  say "WARNING: no gen-model subcommand yet: dry run trains $config from random init"
  model=$config
else
  die "this ktoloader has no gen-model subcommand (issue 12)"
fi
# (Not `train --help | grep -q`: grep's early exit kills the writer, and pipefail fails the test.)
train_help=$("$bin" train --help 2>&1 || true)
if ! grep -q -- --lora-r <<<"$train_help"; then
  [ $mode = dry ] || die "this ktoloader's train has no --lora-r (issue 12)"
  say "WARNING: train has no --lora-r/--dtype yet: dry run trains every weight in float32"
  lora=()
fi

# --- the run -------------------------------------------------------------------------------
args=(train --data "$data" --model "$model" "${lora[@]}" --json --no-progress
      --no-eval --ref "$REF")
if [ $mode = dry ]; then
  args+=(--steps 1 --backend go)
  say "ktoloader ${args[*]} (dry run: go backend)"
  timeout "$(left)" "$bin" "${args[@]}" ${TRAIN_FLAGS:-} > "$tmp/steps.jsonl" || die "train (go backend)"
  tail -n 2 "$tmp/steps.jsonl" >&2
  say "dry run done: the CUDA run would now use --backend xla:cuda --steps $STEPS at max-len $MAX_LEN"
  exit 0
fi

command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA GPU here (try --dry-run)"
if [ -z "${KTOLOADER_XLA_PLUGIN:-}" ] && command -v python3 >/dev/null; then
  # jax's CUDA PJRT wheel (jax-cuda13-pjrt / jax-cuda12-pjrt), with nvidia/ in the same site-packages.
  KTOLOADER_XLA_PLUGIN=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site, sys
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for p in sorted(glob.glob(os.path.join(d, "jax_plugins", "xla_cuda*", "xla_cuda_plugin.so")), reverse=True):
        print(p); sys.exit(0)
PY
)
  [ -n "$KTOLOADER_XLA_PLUGIN" ] && say "plugin from python3's jax: $KTOLOADER_XLA_PLUGIN"
fi
export KTOLOADER_XLA_PLUGIN
export KTOLOADER_XLA_MEMORY_FRACTION=${KTOLOADER_XLA_MEMORY_FRACTION:-0.95}
export KTOLOADER_XLA_PREALLOCATE=${KTOLOADER_XLA_PREALLOCATE:-false}

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)
if [ -z "${PEAK_FLOPS:-}" ]; then
  case $gpu in
    *H100*|*H200*) PEAK_FLOPS=989e12 ;; # bf16 dense, SXM (H100 PCIe: 756e12)
    *) PEAK_FLOPS=0 ;;
  esac
fi
say "GPU: $gpu, peak bf16 ${PEAK_FLOPS} FLOP/s"

# The plan's prediction beside the measurement (when this binary has train --plan).
"$bin" train --plan --data "$data" --model "$config" "${lora[@]}" \
  --gpu-memory "$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n1)MiB" \
  ${TRAIN_FLAGS:-} > "$tmp/plan.txt" 2>&1 && cat "$tmp/plan.txt" >&2 || say "(no train --plan in this binary)"

base_mib=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$tmp/mem.txt" &
bg+=($!)
args+=(--steps "$STEPS" --backend xla:cuda)
say "ktoloader ${args[*]} ${TRAIN_FLAGS:-}"
t0=$(date +%s.%N)
set +e
timeout "$(left)" "$bin" "${args[@]}" ${TRAIN_FLAGS:-} 2> "$tmp/train.err" |
  while IFS= read -r line; do printf '%s\t%s\n' "$(date +%s.%N)" "$line"; done > "$tmp/steps.tsv"
rc=${PIPESTATUS[0]}
set -e
kill "${bg[@]}" 2>/dev/null || true
tail -n 20 "$tmp/train.err" >&2
[ "$rc" = 0 ] || say "train exited $rc (124: out of the time budget); figures below cover the steps it finished"

python3 - "$tmp/steps.tsv" "$tmp/mem.txt" "$t0" "$base_mib" "$config" "$PEAK_FLOPS" <<'PY'
import json, statistics, sys
steps_path, mem_path, t0, base_mib, config_path, peak = sys.argv[1:]
t0, base_mib, peak = float(t0), float(base_mib), float(peak)
steps, summary = [], None
for line in open(steps_path):
    ts, _, body = line.rstrip("\n").partition("\t")
    try:
        obj = json.loads(body)
    except ValueError:
        continue
    if "summary" in obj:
        summary = obj["summary"]
    elif "step" in obj:
        steps.append((float(ts), obj))
c = json.load(open(config_path))
d, v, L, inter = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"], c["intermediate_size"]
hd = c.get("head_dim") or d // c["num_attention_heads"]
q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
n = v * d + L * (2 * d + 2 * d * q + 2 * d * kv + 3 * d * inter) + d + (0 if c.get("tie_word_embeddings") else d * v)
mem = [float(x) for x in open(mem_path) if x.strip().replace(".", "").isdigit()]
print(f"parameters N: {n:,} (base; LoRA r=16 trains 41.9 M of them)")
if not steps:
    sys.exit("no step finished: see the train errors above")
first_t = steps[0][0] - t0
later = [s for _, s in steps[1:]] or [steps[0][1]]
tps = statistics.mean(s["tokens_per_s"] for s in later)
step_s = statistics.median(b[0] - a[0] for a, b in zip(steps, steps[1:])) if len(steps) > 1 else 0.0
print(f"steps: {len(steps)}; tokens/step {statistics.mean(s['tokens'] for _, s in steps):.0f}")
print(f"tokens/s: {tps:.0f} (mean of steps 2…{len(steps)}; mistral-finetune's anchor: 5720 per H100)")
if peak > 0:
    print(f"MFU: {6 * n * tps / peak * 100:.1f}% (6·N·tokens/s ÷ {peak:.3g} FLOP/s)")
else:
    print("MFU: unknown GPU, set PEAK_FLOPS")
print(f"time to first step: {first_t:.1f} s (start, weight load, data scan, XLA compilation, step 1);"
      f" compile+load ≈ {first_t - step_s:.1f} s (minus one steady step of {step_s:.2f} s)")
if mem:
    print(f"peak device memory: {max(mem) / 1024:.2f} GiB used ({(max(mem) - base_mib) / 1024:.2f} GiB over the {base_mib / 1024:.2f} GiB before the run; nvidia-smi every 200 ms)")
if summary:
    print(f"final loss {summary.get('final_loss')}, backend {summary.get('backend')}")
PY
say "done"
