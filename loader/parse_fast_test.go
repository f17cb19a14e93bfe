package loader

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// fastCases are rows that take the fast path or its edges: escapes of every kind, surrogate
// pairs, extra keys, the messages alias, tools, null fields, arguments as objects, and rows
// the fast path must hand back to parseRow (duplicates, escaped keys, parts, U+FFFD).
var fastCases = []string{
	okRow,
	`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}],"label":false,"x":[1,{"y":null}],"z":"\u00e9"}`,
	`{"conversations":null,"messages":[{"role":"user","content":"a\"b\\c\/d\b\f\n\r\t\u0041\u00e9\u4e2d\ud83d\ude00"},{"role":"assistant","content":"ok"}],"label":true}`,
	`{"conversations":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"  {\"a\": [1, 2.5e3, \"x\\ny\"]}  "}}]},{"role":"tool","tool_call_id":"call_1","name":"f","content":"r"},{"role":"assistant","content":"done"}],"label":true,"behavior":"b","tools":[{"type":"function"}]}`,
	`{"conversations":[{"role":"user","content":"u"},{"role":"assistant","content":"t","tool_calls":[{"function":{"name":"g","arguments":{"k":{"n":-0.0}}},"extra":1}]}],"label":null,"pattern":"p","category":"c"}`,
	` {"conversations":[{"role":"user","content":"u","other":{"deep":[true,false,null]}},{"role":"assistant","content":"a","tool_calls":[]}],"label":true,"behavior":null,"pattern":"p"} `,
	`{"conversations":[{"role":"user","content":"u"},{"role":"assistant","content":"a"}],"label":true,"label":false}`,
	`{"conversations":[{"role":"user","content":"u"},{"role":"assistant","content":"a"}],"lab\u0065l":true}`,
	`{"conversations":[{"role":"user","content":[{"type":"text","text":"u"}]},{"role":"assistant","content":"a"}],"label":true}`,
	`{"conversations":[{"role":"user","content":"\ufffd"},{"role":"assistant","content":"a"}],"label":true}`,
	`{"conversations":[{"role":"user","content":"\ud800"},{"role":"assistant","content":"a"}],"label":true}`,
	`{"conversations":[{"role":"user","role":"user","content":"u"},{"role":"assistant","content":"a"}],"label":true}`,
	`{"conversations":[{"role":"user","content":"u"},{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"[1]"}}]}],"label":true}`,
	`{"conversations":[{"role":"user","content":"u"},{"role":"assistant","tool_calls":[{"function":{"name":" ","arguments":"{}"}}]}],"label":true}`,
	`{"conversations":[{"role":"user","content":"u"}],"label":true}`,
	`{"conversations":[],"label":true}`,
	`{"conversations":[{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}`,
	`{"conversations":[{"role":"user","content":"u"},{"role":"assistant","content":"a"}],"label":"yes"}`,
	`[1,2]`, `null`, `{"a":}`, "{\"conversations\":\"\xff\"}",
}

// checkFast fails when fastRow accepts data and parseRow does not return the same row; it
// reports whether the fast path took the row.
func checkFast(t *testing.T, data []byte, cfg Config) bool {
	t.Helper()
	fast, ok := fastRow(data, cfg)
	if !ok {
		return false
	}
	slow, err := parseRow(data, cfg)
	if err != nil {
		t.Fatalf("fast path accepted a row parseRow rejects (%v): %s", err, data)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("fast path row differs:\nfast %+v\nslow %+v\nrow  %s", fast, slow, data)
	}
	return true
}

func TestFastRowMatches(t *testing.T) {
	yes := true
	for _, cfg := range []Config{{}, {MissingLabel: &yes}} {
		for _, c := range fastCases {
			checkFast(t, []byte(c), cfg)
		}
	}
	// Every line of the test files, and of the shared data sets when present. On the real
	// data the fast path must take every valid row, or it is not doing its job.
	files := []string{"../testdata/sample.jsonl", "../testdata/broken.jsonl"}
	if dir := shared.Find(); dir != "" {
		for _, f := range []string{"nexus/behavior_merged_kto_v1.5_balanced.jsonl", "nexus/tools_sft_v1.5_11.29.25.jsonl",
			"taubench_airline/gpt-4o-airline.openai.jsonl", "glaive_toolcall/glaive_toolcall_en_demo.openai.jsonl"} {
			files = append(files, filepath.Join(dir, "data", f))
		}
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 64<<20)
		valid, fast := 0, 0
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			if checkFast(t, line, Config{}) {
				fast++
			}
			if _, err := parseRow(line, Config{}); err == nil {
				valid++
			}
		}
		f.Close()
		t.Logf("%s: fast path took %d of %d valid rows", filepath.Base(name), fast, valid)
		if filepath.Base(name) != "broken.jsonl" && fast != valid {
			t.Errorf("%s: fast path took %d of %d valid rows", name, fast, valid)
		}
	}
}

// FuzzFastRow: whatever the bytes, a row the fast path accepts is the row parseRow makes.
func FuzzFastRow(f *testing.F) {
	for _, c := range fastCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFast(t, data, Config{})
	})
}
