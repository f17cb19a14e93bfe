package loader

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// TestReadOwnedRecord: records from ReadOwnedRecord stay intact while the reader goes on
// (a long line is handed over, a short one copied), the reader drops a buffer grown for a
// long line, and ParseOwnedRow gives what ParseRow gives.
func TestReadOwnedRecord(t *testing.T) {
	row := func(content string) string {
		return `{"conversations":[{"role":"user","content":"` + content + `"},{"role":"assistant","content":"ok"}],"label":true}`
	}
	lines := []string{row("short"), row(strings.Repeat("x", 3*handOverBytes)), row("after"), row(strings.Repeat("y", handOverBytes/2)), row("end"), `{"label":true}`}
	r, err := NewReader(strings.NewReader(strings.Join(lines, "\n")+"\n"), "own.jsonl", Config{})
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for {
		data, line, err := r.ReadOwnedRecord()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if line != int64(len(got)+1) {
			t.Fatalf("line %d, want %d", line, len(got)+1)
		}
		got = append(got, data)
		if len(got) == 3 && cap(r.lr.buf) > keepBufBytes {
			t.Errorf("after a %d-byte line the reader keeps a %d-byte buffer", len(lines[1]), cap(r.lr.buf))
		}
	}
	if len(got) != len(lines) {
		t.Fatalf("%d records, want %d", len(got), len(lines))
	}
	for i, data := range got {
		if string(data) != lines[i] {
			t.Fatalf("record %d changed after later reads (%d bytes, want %d)", i+1, len(data), len(lines[i]))
		}
		want, werr := ParseRow(data, "own.jsonl", int64(i+1), Config{})
		own, oerr := ParseOwnedRow(bytes.Clone(data), "own.jsonl", int64(i+1), Config{})
		if fmt.Sprint(werr) != fmt.Sprint(oerr) || !reflect.DeepEqual(want, own) {
			t.Errorf("record %d: ParseOwnedRow differs from ParseRow", i+1)
		}
		if re, ok := oerr.(*RowError); ok && string(re.Raw) != lines[i] {
			t.Errorf("record %d: the owned error's Raw is %q", i+1, re.Raw)
		}
	}
}
