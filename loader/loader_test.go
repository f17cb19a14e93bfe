package loader

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// readAll reads every row of r, splitting valid rows from row errors.
func readAll(t testing.TB, r *Reader) (rows []Row, errs []*RowError) {
	t.Helper()
	for {
		row, err := r.Read()
		if err == io.EOF {
			return
		}
		var re *RowError
		if errors.As(err, &re) {
			errs = append(errs, re)
			continue
		}
		if err != nil {
			t.Fatalf("stream error: %v", err)
		}
		rows = append(rows, row)
	}
}

const okRow = `{"conversations":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}],"label":true,"behavior":"b"}`

func TestRejectReasons(t *testing.T) {
	tests := []struct {
		name, line string
		want       error
		field      string
	}{
		{"invalid json", `{"conversations": [`, ErrInvalidJSON, ""},
		{"not an object", `[1,2]`, ErrWrongType, ""},
		{"no conversations", `{"label":true}`, ErrMissingField, "conversations"},
		{"conversations not list", `{"conversations":"x","label":true}`, ErrWrongType, "conversations"},
		{"messages alias wrong type", `{"messages":{},"label":true}`, ErrWrongType, "messages"},
		{"empty conversation", `{"conversations":[],"label":true}`, ErrEmptyConversation, "conversations"},
		{"message not object", `{"conversations":[3],"label":true}`, ErrWrongType, "conversations[0]"},
		{"missing role", `{"conversations":[{"content":"x"}],"label":true}`, ErrMissingField, "conversations[0].role"},
		{"unknown role", `{"conversations":[{"role":"user","content":"x"},{"role":"bot","content":"y"}],"label":true}`, ErrUnknownRole, "conversations[1].role"},
		{"user content missing", `{"conversations":[{"role":"user"},{"role":"assistant","content":"y"}],"label":true}`, ErrMissingField, "conversations[0].content"},
		{"content wrong type", `{"conversations":[{"role":"user","content":5},{"role":"assistant","content":"y"}],"label":true}`, ErrWrongType, "conversations[0].content"},
		{"assistant empty", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","content":null}],"label":true}`, ErrMissingField, "conversations[1].content"},
		{"no final assistant", `{"conversations":[{"role":"user","content":"x"}],"label":true}`, ErrNoFinalAssistant, "conversations[0].role"},
		{"system not first", `{"conversations":[{"role":"user","content":"x"},{"role":"system","content":"s"},{"role":"assistant","content":"y"}],"label":true}`, ErrSystemNotFirst, "conversations[1].role"},
		{"starts with assistant", `{"conversations":[{"role":"system","content":"s"},{"role":"assistant","content":"y"}],"label":true}`, ErrRolesOutOfOrder, "conversations[1].role"},
		{"two users", `{"conversations":[{"role":"user","content":"x"},{"role":"user","content":"x"},{"role":"assistant","content":"y"}],"label":true}`, ErrRolesOutOfOrder, "conversations[1].role"},
		{"tool without call", `{"conversations":[{"role":"user","content":"x"},{"role":"tool","content":"r"},{"role":"assistant","content":"y"}],"label":true}`, ErrRolesOutOfOrder, "conversations[1].role"},
		{"empty tool name", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"abcdefghi","function":{"name":" ","arguments":"{}"}}]}],"label":true}`, ErrEmptyToolName, "conversations[1].tool_calls[0].function.name"},
		{"missing tool name", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"function":{"arguments":"{}"}}]}],"label":true}`, ErrMissingField, "conversations[1].tool_calls[0].function.name"},
		{"missing function", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"x"}]}],"label":true}`, ErrMissingField, "conversations[1].tool_calls[0].function"},
		{"bad arguments", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{\"a\": }"}}]}],"label":true}`, ErrBadArguments, "conversations[1].tool_calls[0].function.arguments"},
		{"NaN arguments", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{\"a\": NaN}"}}]}],"label":true}`, ErrBadArguments, "conversations[1].tool_calls[0].function.arguments"},
		{"arguments list", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"[1]"}}]}],"label":true}`, ErrArgumentsNotObj, "conversations[1].tool_calls[0].function.arguments"},
		{"arguments number", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":3}}]}],"label":true}`, ErrArgumentsNotObj, "conversations[1].tool_calls[0].function.arguments"},
		{"tool calls on user", `{"conversations":[{"role":"user","content":"x","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]},{"role":"assistant","content":"y"}],"label":true}`, ErrWrongType, "conversations[0].tool_calls"},
		{"missing label", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}`, ErrMissingLabel, "label"},
		{"label as string", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}],"label":"true"}`, ErrWrongType, "label"},
		{"label as number", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}],"label":1}`, ErrWrongType, "label"},
		{"behavior not string", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}],"label":true,"behavior":3}`, ErrWrongType, "behavior"},
		{"tools not list", `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}],"label":true,"tools":{}}`, ErrWrongType, "tools"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRow([]byte(tc.line), "f.jsonl", 7, Config{})
			var re *RowError
			if !errors.As(err, &re) {
				t.Fatalf("want a *RowError, got %v", err)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("reason = %v, want %v (%v)", re.Err, tc.want, err)
			}
			if re.Field != tc.field {
				t.Errorf("field = %q, want %q", re.Field, tc.field)
			}
			if re.File != "f.jsonl" || re.Line != 7 || string(re.Raw) != tc.line {
				t.Errorf("position/raw not kept: %+v", re)
			}
		})
	}
}

func TestLineTooLong(t *testing.T) {
	long := `{"conversations":[{"role":"user","content":"` + strings.Repeat("x", 10000) + `"},{"role":"assistant","content":"y"}],"label":true}`
	in := okRow + "\n" + long + "\n" + okRow + "\n"
	r, err := NewReader(strings.NewReader(in), "mem", Config{MaxLineBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	rows, errs := readAll(t, r)
	if len(rows) != 2 || len(errs) != 1 {
		t.Fatalf("rows %d errs %d, want 2 and 1", len(rows), len(errs))
	}
	if !errors.Is(errs[0], ErrLineTooLong) || errs[0].Line != 2 || len(errs[0].Raw) > 4096 {
		t.Errorf("got %v (line %d, raw %d bytes)", errs[0], errs[0].Line, len(errs[0].Raw))
	}
	if rows[1].Line != 3 {
		t.Errorf("line after the long one is %d, want 3", rows[1].Line)
	}
}

func TestParsedFields(t *testing.T) {
	line := "\xef\xbb\xbf" + `{"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},` +
		`{"role":"assistant","content":"t","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"z\": 1, \"a\": [1.0, 2e3]}"}},` +
		`{"id":"x","function":{"name":"g","arguments":{"b":2,"a":1}}}]},{"role":"tool","tool_call_id":"call_1","content":"r"},{"role":"assistant","content":"done"}],` +
		`"label":false,"pattern":"p","category":"c","extra":{"k":1}}` + "\r\n\n  \n" + okRow
	r, err := NewReader(strings.NewReader(line), "mem", Config{})
	if err != nil {
		t.Fatal(err)
	}
	rows, errs := readAll(t, r)
	if len(errs) != 0 || len(rows) != 2 {
		t.Fatalf("rows %d, errs %v", len(rows), errs)
	}
	row := rows[0]
	if row.Label || !row.HasLabel || row.Behavior != "p" || row.BehaviorField != "pattern" {
		t.Errorf("label/behavior: %+v", row)
	}
	if got := row.Messages[1].Text(); got != "ab" {
		t.Errorf("content parts joined = %q", got)
	}
	tc := row.Messages[2].ToolCalls
	if string(tc[0].Arguments) != `{"z": 1, "a": [1.0, 2e3]}` || !tc[0].ArgumentsWasString {
		t.Errorf("string arguments not kept verbatim: %s", tc[0].Arguments)
	}
	if string(tc[1].Arguments) != `{"b":2,"a":1}` || tc[1].ArgumentsWasString {
		t.Errorf("object arguments not kept verbatim: %s", tc[1].Arguments)
	}
	if row.Messages[3].ToolCallID != "call_1" || string(row.Extra["extra"]) != `{"k":1}` {
		t.Errorf("tool_call_id/extra lost: %+v", row)
	}
	if _, ok := row.Extra["category"]; ok {
		t.Error("category is a known key, not extra")
	}
	if rows[1].Line != 4 || r.Blank != 2 {
		t.Errorf("line numbering across blank lines: line %d blank %d", rows[1].Line, r.Blank)
	}
}

func TestMissingLabelDefault(t *testing.T) {
	line := `{"conversations":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}`
	f := false
	row, err := ParseRow([]byte(line), "f", 1, Config{MissingLabel: &f})
	if err != nil || row.Label || row.HasLabel {
		t.Fatalf("row %+v err %v", row, err)
	}
}

// TestBrokenFile feeds every line of testdata/broken.jsonl and checks each verdict against
// testdata/broken.expect.tsv, and that read = valid + rejected.
func TestBrokenFile(t *testing.T) {
	exp := map[int64][2]string{}
	maxLine := 0
	f, err := os.Open("../testdata/broken.expect.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if v, ok := strings.CutPrefix(l, "# max-line-bytes: "); ok {
			maxLine, _ = strconv.Atoi(strings.TrimSpace(v))
			continue
		}
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		cols := strings.SplitN(l, "\t", 3)
		n, _ := strconv.ParseInt(cols[0], 10, 64)
		exp[n] = [2]string{cols[1], cols[2]}
	}
	r, err := Open("../testdata/broken.jsonl", Config{MaxLineBytes: maxLine})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rows, errs := readAll(t, r)
	for _, row := range rows {
		if e := exp[row.Line]; e[0] != "ok" {
			t.Errorf("line %d accepted, want %s at %q", row.Line, e[0], e[1])
		}
	}
	for _, re := range errs {
		e := exp[re.Line]
		if re.Reason() != e[0] || re.Field != e[1] {
			t.Errorf("line %d: got %s at %q, want %s at %q (%v)", re.Line, re.Reason(), re.Field, e[0], e[1], re)
		}
	}
	if int64(len(rows)+len(errs)) != int64(len(exp)) {
		t.Errorf("read %d rows (valid %d + rejected %d), the file has %d", len(rows)+len(errs), len(rows), len(errs), len(exp))
	}
	seen := map[string]bool{}
	for _, re := range errs {
		seen[re.Reason()] = true
	}
	for _, name := range reasonNames {
		if !seen[name] {
			t.Errorf("no broken row exercises reason %s", name)
		}
	}
}

func TestCompressed(t *testing.T) {
	plain := []byte(okRow + "\n" + okRow + "\n{bad\n")
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(plain)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(plain)
	zw.Close()
	dir := t.TempDir()
	for name, data := range map[string][]byte{"a.jsonl.gz": gz.Bytes(), "a.jsonl.zst": zs.Bytes(), "a.jsonl": plain} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		r, err := Open(p, Config{})
		if err != nil {
			t.Fatal(err)
		}
		rows, errs := readAll(t, r)
		r.Close()
		if len(rows) != 2 || len(errs) != 1 || errs[0].Line != 3 {
			t.Errorf("%s: rows %d errs %d", name, len(rows), len(errs))
		}
	}
	// A truncated gzip is a stream error, not a silent short read.
	p := filepath.Join(dir, "trunc.jsonl.gz")
	os.WriteFile(p, gz.Bytes()[:gz.Len()-10], 0o644)
	r, err := Open(p, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var last error
	for {
		_, err := r.Read()
		var re *RowError
		if errors.As(err, &re) {
			continue
		}
		if err != nil {
			last = err
			break
		}
	}
	if last == io.EOF {
		t.Error("truncated gzip read as a clean end of file")
	}
}

func TestDirectoryInput(t *testing.T) {
	if _, err := Open(t.TempDir(), Config{}); err == nil {
		t.Error("a directory was accepted as input")
	}
}

// TestNexusKTO checks the facts on the real file: 4572 rows, lines 1511 and 2947
// rejected for having no assistant answer, nothing else rejected.
func TestNexusKTO(t *testing.T) {
	p := shared.Path(t, "data", "nexus", "behavior_merged_kto_v1.5_balanced.jsonl")
	r, err := Open(p, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st := NewStats()
	for {
		row, err := r.Read()
		if err == io.EOF {
			break
		}
		var re *RowError
		if errors.As(err, &re) {
			st.Reject(re.Reason())
			if re.Line != 1511 && re.Line != 2947 {
				t.Errorf("unexpected reject %v", re)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		st.Accept(&row)
	}
	if st.Read != 4572 || st.Rejected != 2 || st.Reasons["no_final_assistant"] != 2 {
		t.Errorf("stats %+v", st)
	}
	if st.ToolCalls != 3153 || st.TextWithTools != 120 {
		t.Errorf("tool calls %d (want 3153), text+tools %d (want 120)", st.ToolCalls, st.TextWithTools)
	}
}

func TestNexusSFTMissingLabel(t *testing.T) {
	p := shared.Path(t, "data", "nexus", "tools_sft_v1.5_11.29.25.jsonl")
	count := func(cfg Config) *Stats {
		r, err := Open(p, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		st := NewStats()
		rows, errs := readAll(t, r)
		for i := range rows {
			st.Accept(&rows[i])
		}
		for _, e := range errs {
			st.Reject(e.Reason())
		}
		return st
	}
	st := count(Config{})
	if st.Read != 6794 || st.Reasons["missing_label"] != 1986 || st.Rejected != 1986 {
		t.Errorf("default: %+v", st)
	}
	tr := true
	st = count(Config{MissingLabel: &tr})
	if st.Rejected != 0 || st.DefaultedLabel != 1986 {
		t.Errorf("--missing-label=true: %+v", st)
	}
}

func TestDigest(t *testing.T) {
	data := okRow + "\n" + okRow + "\n"
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write([]byte(data))
	gw.Close()
	r, err := NewReader(bytes.NewReader(gz.Bytes()), "mem.gz", Config{})
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, r)
	sum, n := r.Digest()
	want := sha256.Sum256(gz.Bytes())
	if sum != hex.EncodeToString(want[:]) || n != int64(gz.Len()) {
		t.Errorf("digest %s %d, want the compressed bytes' %x %d", sum, n, want, gz.Len())
	}
}
