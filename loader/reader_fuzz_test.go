package loader

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
)

// refLine is one line of an input as the line splitter below sees it: the independent
// reference FuzzReader holds the Reader to.
type refLine struct {
	withEnd []byte // the line with its "\n" (absent on an unterminated last line)
	content []byte // without "\n", "\r" and, on line 1, a UTF-8 BOM
}

// splitLines splits data at "\n" the way a JSONL file is read: a final "\n" ends the last
// line rather than starting an empty one.
func splitLines(data []byte) []refLine {
	var out []refLine
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		var l refLine
		if i < 0 {
			l.withEnd, data = data, nil
		} else {
			l.withEnd, data = data[:i+1], data[i+1:]
		}
		c := bytes.TrimSuffix(l.withEnd, []byte("\n"))
		c = bytes.TrimSuffix(c, []byte("\r"))
		if len(out) == 0 {
			c = bytes.TrimPrefix(c, []byte("\xef\xbb\xbf"))
		}
		l.content = c
		out = append(out, l)
	}
	return out
}

// Reading modes of FuzzReader: the same bytes plain, plain one byte per Read, gzip, zstd.
const (
	modePlain = iota
	modeOneByte
	modeGzip
	modeZstd
	numModes
)

func encodeFor(t *testing.T, mode int, data []byte) io.Reader {
	switch mode {
	case modeOneByte:
		return iotest.OneByteReader(bytes.NewReader(data))
	case modeGzip:
		var b bytes.Buffer
		w := gzipPool.Get().(*gzip.Writer)
		defer gzipPool.Put(w)
		w.Reset(&b)
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return &b
	case modeZstd:
		return bytes.NewReader(zstdEnc.EncodeAll(data, nil))
	}
	return bytes.NewReader(data)
}

var gzipPool = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return w
}}

// zstdEnc is shared: a zstd encoder is costly to make and EncodeAll is safe for concurrent use.
var zstdEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))

// hasMagic reports whether data would be taken for compressed input by NewReader.
func hasMagic(data []byte) bool {
	return bytes.HasPrefix(data, []byte{0x1f, 0x8b}) || bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd})
}

// FuzzReader feeds any bytes to the JSONL reader, plain, read one byte at a time, gzipped and
// zstd-compressed, with a fuzzed line limit, and holds it to a line splitter written here:
//
//   - it never panics, and each Read gives a Row, a *RowError or io.EOF (no stream error can
//     come from an intact stream);
//   - nothing is lost or invented: every line is exactly one of a row, a row error or a
//     blank line (so rows + errors <= lines), in order, with its own line number;
//   - a line longer than the limit is ErrLineTooLong carrying a prefix of the line, and one
//     within it is never that;
//   - every other line gets what ParseRow gives for its content, with Raw the content;
//   - all four encodings give the same rows and errors.
//
// It also feeds the whole input to ParseRow as one line (checkParsed), and reads it as prep
// does, ReadRecord then ParseRow, which must give what Read gives.
func FuzzReader(f *testing.F) {
	f.Add([]byte(okRow+"\n"), uint16(0))
	f.Add([]byte("\xef\xbb\xbf"+okRow+"\r\n\r\n  \n"+okRow), uint16(0))
	f.Add([]byte(okRow+"\n"+okRow), uint16(len(okRow)))
	f.Add([]byte(okRow+"\n"+okRow), uint16(len(okRow)-1))
	f.Add([]byte("\n\n{\"a\":\x00}\n"), uint16(3))
	f.Add([]byte(`{"conversations":[{"role":"user","content":"\ud800"},{"role":"assistant","content":"\ufffd \xef\xbf\xbd"}],"label":true}`), uint16(0))
	f.Add([]byte(`{"conversations":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"abcdefghi","function":{"name":"f","arguments":"{\"a\": [1, {\"b\": \"\\ud83d\\ude00\"}]}"}}]}],"label":false}`), uint16(0))
	if b, err := os.ReadFile("../testdata/broken.jsonl"); err == nil {
		f.Add(b, uint16(4096))
		for _, l := range splitLines(b) {
			f.Add(l.content, uint16(0))
		}
	}
	if b, err := os.ReadFile("../testdata/sample.jsonl"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for i := 0; sc.Scan() && i < 8; i++ {
			f.Add(append([]byte(nil), sc.Bytes()...), uint16(0))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		cfg := Config{}
		if limit > 0 {
			cfg.MaxLineBytes = int(limit)
		}
		checkParsed(t, data)

		lines := splitLines(data)
		var first []result
		for mode := 0; mode < numModes; mode++ {
			if mode <= modeOneByte && hasMagic(data) {
				// Taken for compressed input: only "no panic" and typed results hold.
				readLoose(t, encodeFor(t, mode, data), cfg)
				continue
			}
			got := readChecked(t, encodeFor(t, mode, data), cfg, lines)
			if first == nil {
				first = got
				continue
			}
			if !reflect.DeepEqual(got, first) {
				t.Fatalf("mode %d reads differently from mode 0:\n%+v\n%+v", mode, got, first)
			}
		}
		if !hasMagic(data) {
			if got := readRecords(t, data, cfg); !reflect.DeepEqual(got, first) {
				t.Fatalf("ReadRecord + ParseRow differ from Read:\n%+v\n%+v", got, first)
			}
		}
	})
}

// readRecords reads data as prep does, ReadRecord on the reader and ParseRow on a worker.
func readRecords(t *testing.T, data []byte, cfg Config) []result {
	t.Helper()
	r, err := NewReader(bytes.NewReader(data), "fuzz", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out := []result{}
	for {
		rec, line, err := r.ReadRecord()
		if err == io.EOF {
			return out
		}
		var re *RowError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("stream error from an intact stream: %v", err)
		}
		if re == nil {
			var row Row
			row, err = ParseRow(rec, "fuzz", line, cfg)
			if err == nil {
				out = append(out, result{Line: line, Row: &row, Raw: string(row.Raw)})
				continue
			}
			if !errors.As(err, &re) {
				t.Fatalf("ParseRow: %v", err)
			}
		}
		if re.Line != line {
			t.Fatalf("record line %d, error line %d", line, re.Line)
		}
		r := result{Line: re.Line, Reason: re.Reason(), Field: re.Field, Raw: string(re.Raw)}
		if errors.Is(re, ErrLineTooLong) {
			r.Field = ""
		}
		out = append(out, r)
	}
}

// result is one Read's outcome, comparable across encodings.
type result struct {
	Line   int64
	Row    *Row
	Reason string
	Field  string
	Raw    string
}

// readChecked reads every row of r, checking each against the reference lines.
func readChecked(t *testing.T, in io.Reader, cfg Config, lines []refLine) []result {
	t.Helper()
	r, err := NewReader(in, "fuzz", cfg)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer r.Close()
	max := cfg.maxLine()
	out := []result{}
	next := 0 // index of the first line not yet accounted for
	for {
		row, err := r.Read()
		if err == io.EOF {
			break
		}
		var line int64
		var re *RowError
		switch {
		case errors.As(err, &re):
			line = re.Line
		case err != nil:
			t.Fatalf("stream error from an intact stream: %v", err)
		default:
			line = row.Line
		}
		// The lines skipped since the last result must all be blank.
		if line < 1 || line > int64(len(lines)) || int(line) <= next {
			t.Fatalf("result for line %d after line %d of %d", line, next, len(lines))
		}
		for k := next; k < int(line)-1; k++ {
			if len(bytes.TrimSpace(lines[k].content)) != 0 {
				t.Fatalf("line %d (%q) vanished: neither a row, an error nor blank", k+1, abbrev(lines[k].withEnd))
			}
		}
		next = int(line)
		l := lines[line-1]
		mustLong := len(l.content) > max
		mayLong := mustLong || len(l.withEnd) > max+2 // "\r\n" is free, a BOM is not
		if re != nil && errors.Is(re, ErrLineTooLong) {
			if !mayLong {
				t.Fatalf("line %d of %d bytes (limit %d) called too long", line, len(l.content), max)
			}
			if re.Field != "" || len(re.Raw) > rawPrefix || !bytes.HasPrefix(l.withEnd, re.Raw) {
				t.Fatalf("too-long line %d: field %q, raw %d bytes, not a prefix of the line", line, re.Field, len(re.Raw))
			}
			out = append(out, result{Line: line, Reason: re.Reason(), Raw: string(re.Raw)})
			continue
		}
		if mustLong {
			t.Fatalf("line %d of %d bytes passed the limit %d", line, len(l.content), max)
		}
		wantRow, wantErr := ParseRow(l.content, "fuzz", line, cfg)
		if re != nil {
			var we *RowError
			if !errors.As(wantErr, &we) || we.Reason() != re.Reason() || we.Field != re.Field ||
				!bytes.Equal(re.Raw, l.content) || re.File != "fuzz" {
				t.Fatalf("line %d: reader says %v (raw %q), ParseRow says %v", line, re, abbrev(re.Raw), wantErr)
			}
			out = append(out, result{Line: line, Reason: re.Reason(), Field: re.Field, Raw: string(re.Raw)})
			continue
		}
		if wantErr != nil || !reflect.DeepEqual(row, wantRow) {
			t.Fatalf("line %d: reader gives a row, ParseRow %v", line, wantErr)
		}
		out = append(out, result{Line: line, Row: &row, Raw: string(row.Raw)})
	}
	for k := next; k < len(lines); k++ {
		if len(bytes.TrimSpace(lines[k].content)) != 0 {
			t.Fatalf("line %d (%q) vanished at the end", k+1, abbrev(lines[k].withEnd))
		}
	}
	if got := int64(len(out)) + r.Blank; got != int64(len(lines)) {
		t.Fatalf("%d results + %d blank lines for %d lines", len(out), r.Blank, len(lines))
	}
	// EOF sticks.
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("Read after EOF: %v", err)
	}
	return out
}

// readLoose reads r to the end: typed results only, and a stream error sticks.
func readLoose(t *testing.T, in io.Reader, cfg Config) {
	t.Helper()
	r, err := NewReader(in, "fuzz", cfg)
	if err != nil {
		return // a bad compressed header is refused at once
	}
	defer r.Close()
	for n := 0; ; n++ {
		_, err := r.Read()
		if err == io.EOF {
			return
		}
		var re *RowError
		if errors.As(err, &re) {
			if re.Err == nil || re.Reason() == "error" {
				t.Fatalf("row error without a known reason: %v", re)
			}
			continue
		}
		if err != nil {
			if _, again := r.Read(); again != err {
				t.Fatalf("stream error %v did not stick: then %v", err, again)
			}
			return
		}
	}
}

// checkParsed holds ParseRow(data) to its contract: a *RowError with a known reason, the
// position and the raw line; or a row that satisfies what the loader promises later stages.
func checkParsed(t *testing.T, data []byte) {
	t.Helper()
	row, err := ParseRow(data, "f", 3, Config{})
	if err != nil {
		var re *RowError
		if !errors.As(err, &re) {
			t.Fatalf("ParseRow error %T %v is not a *RowError", err, err)
		}
		if re.Err == nil || re.Reason() == "error" || re.File != "f" || re.Line != 3 || !bytes.Equal(re.Raw, data) {
			t.Fatalf("bad RowError %+v", re)
		}
		if re.Error() == "" {
			t.Fatal("empty error text")
		}
		return
	}
	if !json.Valid(data) || !utf8.Valid(data) {
		t.Fatalf("accepted a row that is not valid JSON in UTF-8: %q", abbrev(data))
	}
	if row.File != "f" || row.Line != 3 || !bytes.Equal(row.Raw, data) {
		t.Fatalf("position/raw not kept")
	}
	n := len(row.Messages)
	if n == 0 || row.Messages[n-1].Role != "assistant" {
		t.Fatalf("accepted a conversation that does not end with an assistant message")
	}
	// No silent repair: a U+FFFD in a field must be spelled in the input.
	spelled := bytes.Contains(data, []byte("\uFFFD")) || bytes.Contains(bytes.ToLower(data), []byte(`\ufffd`))
	text := []string{row.Behavior}
	for i := range row.Messages {
		m := &row.Messages[i]
		switch m.Role {
		case "system", "user", "assistant", "tool":
		default:
			t.Fatalf("accepted role %q", m.Role)
		}
		if m.Role != "assistant" && (m.Content == nil || len(m.ToolCalls) > 0) {
			t.Fatalf("message %d (%s): content nil or tool calls", i, m.Role)
		}
		text = append(text, m.Role, m.Text(), m.Name, m.ToolCallID)
		for _, tc := range m.ToolCalls {
			text = append(text, tc.ID, tc.Type, tc.Name)
			if strings.TrimSpace(tc.Name) == "" {
				t.Fatalf("accepted an empty tool name")
			}
			if a := bytes.TrimSpace(tc.Arguments); !json.Valid(a) || a[0] != '{' || !utf8.Valid(a) {
				t.Fatalf("accepted arguments %q", abbrev(tc.Arguments))
			}
		}
	}
	for _, s := range text {
		if !utf8.ValidString(s) {
			t.Fatalf("field %q is not UTF-8", abbrev([]byte(s)))
		}
		if !spelled && strings.ContainsRune(s, utf8.RuneError) {
			t.Fatalf("field %q holds a U+FFFD the input does not: silently replaced", abbrev([]byte(s)))
		}
	}
}

func abbrev(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
