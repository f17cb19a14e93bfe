#!/usr/bin/env bash
# bench/tokenize.sh — encode throughput of the pure-Go BPE (package tokenize) against Debian's
# spm_encode (C++ SentencePiece), single-threaded, on the same lines with the same
# tokenizer.model, and a check that both give the same ids.
#
#   bench/tokenize.sh [LINES_FILE]
#
# Without LINES_FILE the text is every message content and tool-call argument string of
# shared/data/nexus/behavior_merged_kto_v1.5_balanced.jsonl, cut at newlines (spm_encode
# encodes one line at a time), empty lines dropped. Needs go, python3 and spm_encode
# (apt-get install -y sentencepiece).
#
# Figures are MB of UTF-8 input per second of CPU time (user + system), best of $RUNS runs:
# on a machine that other jobs keep busy, CPU time compares the two fairly where wall time
# does not (wall-clock figures are printed too). Ours is BenchmarkEncode/cold: every pass
# starts with empty caches, as one prep run does.
set -euo pipefail

RUNS=${RUNS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${KTOLOADER_SHARED:-$root/../shared}
model=$shared/tokenizers/mistral-7b-v0.3/tokenizer.model
command -v spm_encode >/dev/null || { echo "spm_encode not found: apt-get install -y sentencepiece" >&2; exit 1; }
[ -f "$model" ] || { echo "no $model (set KTOLOADER_SHARED)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
lines=${1:-}
if [ -z "$lines" ]; then
  lines=$tmp/lines.txt
  python3 - "$shared/data/nexus/behavior_merged_kto_v1.5_balanced.jsonl" "$lines" <<'PY'
import json, sys
with open(sys.argv[2], "w", encoding="utf-8", newline="\n") as out:
    for row in open(sys.argv[1], encoding="utf-8"):
        r = json.loads(row)
        for m in r.get("conversations") or r.get("messages") or []:
            texts = [m["content"]] if isinstance(m.get("content"), str) else []
            texts += [tc["function"]["arguments"] for tc in m.get("tool_calls") or []]
            for t in texts:
                for line in t.split("\n"):
                    if line:
                        out.write(line + "\n")
PY
fi
bytes=$(wc -c < "$lines")
nlines=$(wc -l < "$lines")
echo "text: $nlines lines, $bytes bytes ($lines)"

# spm_encode: best CPU and best wall time of $RUNS runs.
best_cpu=""; best_wall=""
TIMEFORMAT='%R %U %S'
for _ in $(seq "$RUNS"); do
  t=$( { time spm_encode --model="$model" --output_format=id < "$lines" > "$tmp/spm_ids.txt"; } 2>&1 )
  read -r wall user sys <<< "$t"
  cpu=$(python3 -c "print($user + $sys)")
  best_cpu=$(python3 -c "print(min(x for x in [$cpu, ${best_cpu:-1e18}]))")
  best_wall=$(python3 -c "print(min(x for x in [$wall, ${best_wall:-1e18}]))")
done
spm_cpu=$(python3 -c "print(f'{$bytes / 1e6 / $best_cpu:.2f}')")
spm_wall=$(python3 -c "print(f'{$bytes / 1e6 / $best_wall:.2f}')")

# Ours: the Go benchmark on the same lines.
cd "$root"
out=$(KTOLOADER_SHARED=$shared KTOLOADER_BENCH_TEXT=$lines go test ./tokenize/ -run '^$' \
  -bench 'BenchmarkEncode/cold' -benchtime 3x -count "$RUNS" -cpu 1)
echo "$out" | grep '^Benchmark' || true
read -r go_cpu go_wall go_tok <<< "$(echo "$out" | python3 -c '
import re, sys
cpu, wall, tok = [], [], []
for l in sys.stdin:
    if l.startswith("BenchmarkEncode/cold"):
        m = dict((u, float(v)) for v, u in re.findall(r"([\d.]+) (\S+/s)", l))
        wall.append(m["MB/s"]); tok.append(m["tokens/s"]); cpu.append(m.get("cpu-MB/s", m["MB/s"]))
print(f"{max(cpu):.2f} {max(wall):.2f} {max(tok):.0f}")')"

# Same ids? (ktoloader encode --spm is the same encoder as the benchmark.)
python3 -c '
import json, sys
with open(sys.argv[1], encoding="utf-8", newline="\n") as f, open(sys.argv[2], "w") as o:
    for line in f.read().split("\n")[:-1]:
        o.write(json.dumps(line) + "\n")' "$lines" "$tmp/lines.jsonl"
go run ./cmd/ktoloader encode --spm --tokenizer "$model" < "$tmp/lines.jsonl" | tr -d '[]' | tr ',' ' ' > "$tmp/go_ids.txt"
if cmp -s "$tmp/go_ids.txt" "$tmp/spm_ids.txt"; then same="identical ids on all $nlines lines"; else same="IDS DIFFER: diff $tmp/go_ids.txt $tmp/spm_ids.txt"; fi

echo
printf '%-28s %10s %10s\n' "" "cpu MB/s" "wall MB/s"
printf '%-28s %10s %10s\n' "spm_encode (C++)" "$spm_cpu" "$spm_wall"
printf '%-28s %10s %10s   (%s tokens/s wall)\n' "ktoloader tokenize (Go)" "$go_cpu" "$go_wall" "$go_tok"
python3 -c "print(f'ratio Go/spm_encode: {$go_cpu / $spm_cpu:.2f}x (cpu), {$go_wall / $spm_wall:.2f}x (wall); target 1.5x')"
echo "check: $same"
[[ $same == identical* ]]
