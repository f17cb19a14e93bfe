package loader

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
)

// Hostile inputs: each ends in a clear verdict (a row error with its reason and field, or a
// stream error naming the input) with memory bounded by the line limit, never by the input.
// The README's table of these cases was measured with cmd/ktoloader's prep on the same shapes.

// hugeLine is an io.Reader of one JSONL line whose user content is n bytes of 'x', then a
// newline and okRow: generated as it is read, so the test holds no copy of it.
type hugeLine struct {
	head, tail []byte
	n          int64 // filler bytes left
}

func newHugeLine(n int64) *hugeLine {
	return &hugeLine{
		head: []byte(`{"conversations":[{"role":"user","content":"`),
		tail: []byte(`"},{"role":"assistant","content":"y"}],"label":true}` + "\n" + okRow + "\n"),
		n:    n,
	}
}

func (h *hugeLine) Read(p []byte) (int, error) {
	k := 0
	if len(h.head) > 0 {
		k = copy(p, h.head)
		h.head = h.head[k:]
		return k, nil
	}
	if h.n > 0 {
		m := int(min(int64(len(p)), h.n))
		for i := range p[:m] {
			p[i] = 'x'
		}
		h.n -= int64(m)
		return m, nil
	}
	if len(h.tail) > 0 {
		k = copy(p, h.tail)
		h.tail = h.tail[k:]
		return k, nil
	}
	return 0, io.EOF
}

// allocated returns the bytes allocated on the heap so far (cumulative, so that no peak is
// missed between samples: what a read allocates bounds what it can hold).
func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestHugeLineBoundedMemory reads one 256 MiB line with a 1 MiB limit: the line is rejected
// as too long with a 4 KiB prefix kept, the next line is read as line 2, and the reader
// allocates a few MiB in all, nothing in proportion to the line.
func TestHugeLineBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 256 MiB")
	}
	const size = 256 << 20
	const limit = 1 << 20
	runtime.GC()
	before := allocated()
	r, err := NewReader(newHugeLine(size), "huge", Config{MaxLineBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	rows, errs := readAll(t, r)
	used := allocated() - before
	if len(errs) != 1 || !errors.Is(errs[0], ErrLineTooLong) || errs[0].Line != 1 || len(errs[0].Raw) != rawPrefix {
		t.Fatalf("want one line_too_long at line 1 with a %d-byte prefix, got %v", rawPrefix, errs)
	}
	if len(rows) != 1 || rows[0].Line != 2 {
		t.Fatalf("the row after the long line: %d rows", len(rows))
	}
	if _, n := r.Digest(); n != size+int64(len(`{"conversations":[{"role":"user","content":"`+`"},{"role":"assistant","content":"y"}],"label":true}`+"\n"+okRow+"\n")) {
		t.Errorf("digest counted %d bytes", n)
	}
	t.Logf("256 MiB line, 1 MiB limit: %.1f MiB allocated", float64(used)/(1<<20))
	if used > 16<<20 {
		t.Errorf("reading a 256 MiB line with a 1 MiB limit allocated %d MiB", used>>20)
	}
}

// TestHostileLines checks the verdict on each hostile line shape.
func TestHostileLines(t *testing.T) {
	nested := func(depth int, open, close string) string {
		return strings.Repeat(open, depth) + strings.Repeat(close, depth)
	}
	row := func(user string) string {
		return `{"conversations":[{"role":"user","content":` + user + `},{"role":"assistant","content":"a"}],"label":true}`
	}
	call := func(args string) string {
		return `{"conversations":[{"role":"user","content":"u"},{"role":"assistant","tool_calls":[{"id":"abcdefghi","function":{"name":"f","arguments":` +
			args + `}}]}],"label":true}`
	}
	tests := []struct {
		name, line string
		reason     string // "" for a valid row
		field      string
	}{
		{"100k nested arrays in arguments (object)", call(`{"a":` + nested(100000, "[", "]") + `}`), "invalid_json", ""},
		{"100k nested arrays in arguments (string)", call(`"{\"a\":` + nested(100000, "[", "]") + `}"`), "bad_arguments", "conversations[1].tool_calls[0].function.arguments"},
		{"100k nested objects in an extra field", `{"x":` + nested(100000, `{"a":`, "}") + `,` + row(`"u"`)[1:], "invalid_json", ""},
		{"9000 nested arrays in arguments", call(`"{\"a\":` + nested(9000, "[", "]") + `}"`), "", ""},
		{"raw NUL byte in a string", row("\"a\x00b\""), "invalid_json", ""},
		{"raw NUL byte between tokens", "\x00" + okRow, "invalid_json", ""},
		{"escaped NUL is text", row(`"a\u0000b"`), "", ""},
		{"invalid UTF-8 in content", row("\"caf\xe9\""), "invalid_utf8", "conversations[0].content"},
		{"invalid UTF-8 in a content part", row("[{\"type\":\"text\",\"text\":\"\xff\"}]"), "invalid_utf8", "conversations[0].content[0].text"},
		{"lone surrogate escape in content", row(`"\ud800x"`), "invalid_utf8", "conversations[0].content"},
		{"reversed surrogate pair", row(`"\udc00\ud800"`), "invalid_utf8", "conversations[0].content"},
		{"invalid UTF-8 in string arguments", call("\"{\\\"a\\\": \\\"\xc3\\\"}\""), "invalid_utf8", "conversations[1].tool_calls[0].function.arguments"},
		{"invalid UTF-8 in object arguments", call("{\"a\": \"\xc3\"}"), "invalid_utf8", "conversations[1].tool_calls[0].function.arguments"},
		{"invalid UTF-8 in a key", "{\"\xff\":1," + okRow[1:], "invalid_utf8", ""},
		{"invalid UTF-8 in a field not read", okRow[:len(okRow)-1] + ",\"pattern\":\"\xfe\"}", "invalid_utf8", ""},
		{"invalid UTF-8 in behavior", okRow[:len(okRow)-4] + "\"\xfe\"}", "invalid_utf8", "behavior"},
		{"invalid UTF-8 in tools", okRow[:len(okRow)-1] + ",\"tools\":[\"\xfe\"]}", "invalid_utf8", "tools"},
		{"U+FFFD spelled as is", row("\"\xef\xbf\xbd\""), "", ""},
		{"U+FFFD escaped", row(`"\ufffd\uFFFD"`), "", ""},
		{"surrogate pair", row(`"\ud83d\ude00"`), "", ""},
		{"escaped backslash before ufffd", row(`"\\ufffd"`), "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRow([]byte(tc.line), "h", 1, Config{})
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			var re *RowError
			if !errors.As(err, &re) || re.Reason() != tc.reason || re.Field != tc.field {
				t.Fatalf("got %v, want %s at %q", err, tc.reason, tc.field)
			}
		})
	}
}

// TestManyToolCalls parses one message with 10^6 tool calls (a 60 MB line): it is a valid row,
// and parsing it allocates a bounded multiple of the line.
func TestManyToolCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 60 MB line")
	}
	const n = 1_000_000
	var b bytes.Buffer
	b.WriteString(`{"conversations":[{"role":"user","content":"u"},{"role":"assistant","tool_calls":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"id":"abcdefghi","function":{"name":"f","arguments":"{}"}}`)
	}
	b.WriteString(`]}],"label":true}`)
	line := b.Bytes()
	runtime.GC()
	before := allocated()
	row, err := ParseRow(line, "h", 1, Config{})
	used := allocated() - before
	if err != nil {
		t.Fatal(err)
	}
	if got := len(row.Messages[1].ToolCalls); got != n {
		t.Fatalf("%d tool calls, want %d", got, n)
	}
	t.Logf("%d-byte line with %d tool calls: %.0f MiB allocated (%.1f× the line)", len(line), n, float64(used)/(1<<20), float64(used)/float64(len(line)))
	if used > 40*uint64(len(line)) {
		t.Errorf("parsing allocated %d MiB for a %d MiB line", used>>20, len(line)>>20)
	}
}

// TestHostileFiles: CRLF endings, a BOM, an empty file, a truncated gzip, a directory.
func TestHostileFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	read := func(p string) ([]Row, []*RowError, error) {
		r, err := Open(p, Config{})
		if err != nil {
			return nil, nil, err
		}
		defer r.Close()
		var rows []Row
		var errs []*RowError
		for {
			row, err := r.Read()
			if err == io.EOF {
				return rows, errs, nil
			}
			var re *RowError
			if errors.As(err, &re) {
				errs = append(errs, re)
				continue
			}
			if err != nil {
				return rows, errs, err
			}
			rows = append(rows, row)
		}
	}

	t.Run("CRLF", func(t *testing.T) {
		rows, errs, err := read(write("crlf.jsonl", []byte(okRow+"\r\n\r\n"+okRow+"\r\n")))
		if err != nil || len(errs) != 0 || len(rows) != 2 || rows[1].Line != 3 || bytes.HasSuffix(rows[0].Raw, []byte("\r")) {
			t.Fatalf("rows %d errs %v err %v", len(rows), errs, err)
		}
	})
	t.Run("BOM", func(t *testing.T) {
		// A BOM starts the file: not content. A BOM inside is not JSON whitespace.
		rows, errs, err := read(write("bom.jsonl", []byte("\xef\xbb\xbf"+okRow+"\n\xef\xbb\xbf"+okRow+"\n")))
		if err != nil || len(rows) != 1 || len(errs) != 1 || errs[0].Line != 2 || errs[0].Reason() != "invalid_json" {
			t.Fatalf("rows %d errs %v err %v", len(rows), errs, err)
		}
	})
	t.Run("empty", func(t *testing.T) {
		rows, errs, err := read(write("empty.jsonl", nil))
		if err != nil || len(rows)+len(errs) != 0 {
			t.Fatalf("rows %d errs %v err %v", len(rows), errs, err)
		}
	})
	t.Run("truncated gzip", func(t *testing.T) {
		var gz bytes.Buffer
		w := gzip.NewWriter(&gz)
		for i := 0; i < 2000; i++ {
			w.Write([]byte(okRow + "\n"))
		}
		w.Close()
		p := write("cut.jsonl.gz", gz.Bytes()[:gz.Len()/2])
		rows, _, err := read(p)
		if err == nil || !strings.Contains(err.Error(), p) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("after %d rows: err %v, want an unexpected EOF naming the file", len(rows), err)
		}
	})
	t.Run("gzip header only", func(t *testing.T) {
		if _, err := Open(write("hdr.jsonl.gz", []byte{0x1f, 0x8b, 8}), Config{}); err == nil {
			t.Fatal("a 3-byte gzip header opened")
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, err := Open(dir, Config{})
		if err == nil || !strings.Contains(err.Error(), "is a directory") {
			t.Fatalf("err %v", err)
		}
	})
}
