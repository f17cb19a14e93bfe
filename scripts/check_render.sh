#!/usr/bin/env bash
# check_render.sh — checks `ktoloader render` against the two independent references in
# ../shared/tools (DESIGN.md "The training rendering"):
#   1. ids: for every rendered row, prompt_ids + completion_ids must equal Hugging Face
#      tokenizers' encoding of prompt + completion (hf_encode.mjs, control-token strings parsed
#      as special, no BOS added) — except rows whose own text spells a control token, where HF
#      necessarily differs (counted apart);
#   2. text: prompt and completion must equal ref_render.py's (the real chat_template.jinja in
#      Jinja2), fed the messages that render printed (ids already repaired: ref_render repairs
#      nothing) and the row's tools (or --tools). Rows render rejects are fed to ref_render as
#      they are, to see that it refuses them too (or to list where only we refuse).
# It also counts repaired tool-call ids and rows with an assistant message holding both text
# and tool calls.
#
# usage: scripts/check_render.sh [--assistant-text-with-tools keep|drop] [--tools FILE] [FILE.jsonl …]
#   default files: the Nexus KTO set, tau-bench airline (ids9 and verbatim), glaive toolcall.
# needs: go; /usr/bin/python3 (+ Debian python3-jinja2 for part 2); node and
#   @anush008/tokenizers@0.6.0 in $KTOREF_CACHE for part 1 (see ../shared/tools/README.md).
#   A part whose reference is missing is skipped with a message, not failed.
# exit status: 0 when every checked row matches, 1 otherwise.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
shared=${KTOLOADER_SHARED:-$here/../shared}
mode=keep
tools=()
files=()
while [ $# -gt 0 ]; do
  case $1 in
    --assistant-text-with-tools) mode=$2; shift 2 ;;
    --tools) tools=(--tools "$2"); shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) files+=("$1"); shift ;;
  esac
done
if [ ${#files[@]} -eq 0 ]; then
  files=("$shared/data/nexus/behavior_merged_kto_v1.5_balanced.jsonl"
         "$shared/data/taubench_airline/gpt-4o-airline.ids9.openai.jsonl"
         "$shared/data/taubench_airline/gpt-4o-airline.openai.jsonl"
         "$shared/data/glaive_toolcall/glaive_toolcall_en_demo.openai.jsonl")
fi
tok=$shared/tokenizers/mistral-7b-v0.3
py=/usr/bin/python3
[ -x $py ] || py=python3

have_hf=1
cache=${KTOREF_CACHE:-/tmp/ktoref}
if ! command -v node >/dev/null || [ ! -d "$cache/node_modules/@anush008/tokenizers" ]; then
  echo "SKIP ids vs HF tokenizers: needs node and @anush008/tokenizers@0.6.0 in \$KTOREF_CACHE ($cache)" >&2
  have_hf=0
fi
have_jinja=1
if ! $py -c 'import jinja2' 2>/dev/null; then
  echo "SKIP text vs ref_render.py: needs python3-jinja2" >&2
  have_jinja=0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$here" && go build -o "$work/ktoloader" ./cmd/ktoloader)

status=0
for f in "${files[@]}"; do
  name=$(basename "$f")
  "$work/ktoloader" render --tokenizer "$tok" --assistant-text-with-tools "$mode" "${tools[@]}" \
    --missing-label false --input "$f" > "$work/render.jsonl"
  # What the references need, from render's output and the input.
  $py - "$f" "$work" ${tools[1]:-} <<'EOF'
import json, sys
src, work = sys.argv[1], sys.argv[2]
default_tools = json.load(open(sys.argv[3], encoding="utf-8")) if len(sys.argv) > 3 else None
lines = open(src, encoding="utf-8").read().split("\n")
with open(f"{work}/render.jsonl", encoding="utf-8") as r, \
     open(f"{work}/hf_in.jsonl", "w", encoding="utf-8") as hf, \
     open(f"{work}/ref_in.jsonl", "w", encoding="utf-8") as ref:
    for out in r:
        o = json.loads(out)
        line = int(o["source"].rsplit(":", 1)[1])
        row = json.loads(lines[line - 1])
        if "error" in o:
            ref.write(json.dumps(row, ensure_ascii=False) + "\n")
            continue
        hf.write(json.dumps(o["prompt"] + o["completion"], ensure_ascii=False) + "\n")
        tools = row.get("tools", default_tools)
        ref.write(json.dumps({"messages": o["messages"], "tools": tools}, ensure_ascii=False) + "\n")
EOF
  if [ $have_hf = 1 ]; then
    KTOREF_CACHE=$cache node "$shared/tools/hf_encode.mjs" --tokenizer "$tok" < "$work/hf_in.jsonl" > "$work/hf_out.jsonl"
  else
    : > "$work/hf_out.jsonl"
  fi
  if [ $have_jinja = 1 ]; then
    $py "$shared/tools/ref_render.py" --tokenizer "$tok" --assistant-text-with-tools "$mode" "$work/ref_in.jsonl" > "$work/ref_out.jsonl"
  else
    : > "$work/ref_out.jsonl"
  fi
  $py - "$f" "$work" "$name" "$have_hf" "$have_jinja" "$tok" <<'EOF' || status=1
import json, re, sys, collections
src, work, name, have_hf, have_jinja, tok = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5] == "1", sys.argv[6]
lines = open(src, encoding="utf-8").read().split("\n")
specials = [t["content"] for t in json.load(open(f"{tok}/tokenizer.json", encoding="utf-8"))["added_tokens"] if t.get("special")]
special_re = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
outs = [json.loads(l) for l in open(f"{work}/render.jsonl", encoding="utf-8")]
hf = [json.loads(l) for l in open(f"{work}/hf_out.jsonl", encoding="utf-8")]
ref = [json.loads(l) for l in open(f"{work}/ref_out.jsonl", encoding="utf-8")]

def texts(msgs):
    for m in msgs:
        c = m.get("content")
        if isinstance(c, str):
            yield c
        for tc in m.get("tool_calls") or []:
            yield json.dumps(tc["function"].get("arguments"), ensure_ascii=False)

def call_ids(msgs):
    return [tc.get("id") for m in msgs for tc in m.get("tool_calls") or []]

def result_ids(msgs):
    return [m.get("tool_call_id") for m in msgs if m.get("role") == "tool"]

st = collections.Counter()
reasons = collections.Counter()
bad = []
hi = ri = 0
for o in outs:
    row = json.loads(lines[int(o["source"].rsplit(":", 1)[1]) - 1])
    r = ref[ri] if have_jinja else None
    ri += 1
    if "error" in o:
        st["rejected"] += 1
        reasons[o["error"]["reason"]] += 1
        if r is not None:
            st["rejected, ref_render refuses too" if "error" in r else "rejected, ref_render renders"] += 1
        continue
    st["rendered"] += 1
    msgs = row.get("conversations", row.get("messages"))
    st["tool-call ids repaired"] += sum(a != b for a, b in zip(call_ids(msgs), call_ids(o["messages"])))
    new_calls = set(call_ids(o["messages"]))
    for a, b in zip(result_ids(msgs), result_ids(o["messages"])):
        if a != b:
            st["tool results following a repaired id" if b in new_calls else "tool-call ids repaired"] += 1
    if any(m["role"] == "assistant" and m.get("tool_calls") and isinstance(m.get("content"), str) and m["content"].strip()
           for m in o["messages"]):
        st["rows with text+tool calls"] += 1
    if have_hf:
        h = hf[hi]; hi += 1
        if h == o["prompt_ids"] + o["completion_ids"]:
            st["ids = HF"] += 1
        elif any(special_re.search(t) for t in texts(o["messages"])):
            st["ids != HF, text spells a control token (expected)"] += 1
        else:
            st["ids != HF"] += 1
            bad.append((o["source"], "ids differ from HF tokenizers"))
    if r is not None:
        if "error" in r:
            st["text: ref_render refuses"] += 1
            bad.append((o["source"], "ref_render: " + r["error"]))
        elif r["prompt"] == o["prompt"] and r["completion"] == o["completion"]:
            st["text = ref_render"] += 1
        else:
            st["text != ref_render"] += 1
            bad.append((o["source"], "prompt/completion differ from ref_render"))
print(f"== {name}: {len(outs)} rows")
for k in sorted(st):
    print(f"   {k}: {st[k]}")
for k, v in sorted(reasons.items()):
    print(f"   reject reason {k}: {v}")
for s, why in bad[:10]:
    print(f"   MISMATCH {s}: {why}")
sys.exit(1 if bad else 0)
EOF
done
exit $status
