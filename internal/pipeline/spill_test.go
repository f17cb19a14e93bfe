package pipeline

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// TestSpillAppendStreamsSameBytes: AppendExample (streamed, for big records) writes exactly
// the bytes of encodeExample + AppendRecord (the in-memory path), small records and big ones
// alike, and GetAt reads every one back (big ones field by field); a cut big record is an
// error, not a panic or a short example.
func TestSpillAppendStreamsSameBytes(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", bigRecord/16+1)
	exs := []tokenize.Example{
		{PromptIDs: []int32{1, 2, 3}, CompletionIDs: []int32{4}, PromptAssistant: []bool{false, true, true},
			Prompt: "p", Completion: "c", Label: true, Behavior: "b", Source: loader.Source{File: "f", Line: 1}, Group: 1 << 50, RepairedIDs: 2, TextWithTools: true},
		{PromptIDs: []int32{1, -7}, CompletionIDs: []int32{}, Prompt: big, Completion: "done", Behavior: "b", Source: loader.Source{File: "f", Line: 2}, Group: 3},
		{PromptIDs: []int32{}, CompletionIDs: []int32{9, 9}, PromptAssistant: []bool{}, Prompt: "", Completion: big[:bigRecord/2],
			Label: true, Behavior: big[:bigRecord/2+3], Source: loader.Source{File: "ü.jsonl", Line: 3}, Group: 4},
	}
	dir := t.TempDir()
	mem, err := newSpill(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	stream, err := newSpill(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var locs []loc
	for i := range exs {
		if _, err := mem.AppendRecord(encodeExample(nil, &exs[i])); err != nil {
			t.Fatal(err)
		}
		off := stream.size
		_, n, err := stream.AppendExample(&exs[i])
		if err != nil {
			t.Fatal(err)
		}
		locs = append(locs, loc{off: off, n: n})
	}
	if recordSize(&exs[1]) < bigRecord || recordSize(&exs[2]) < bigRecord || locs[2].n < bigRecord {
		t.Fatalf("the test needs records over bigRecord on the streamed path")
	}
	for _, sp := range []*spill{mem, stream} {
		if err := sp.Finish(); err != nil {
			t.Fatal(err)
		}
	}
	a, err := os.ReadFile(mem.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(stream.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) || mem.size != stream.size || !reflect.DeepEqual(mem.off, stream.off) {
		t.Fatalf("streamed spill differs: %d bytes vs %d in memory", len(b), len(a))
	}
	for i, w := range exs {
		got, err := stream.GetAt(locs[i].off, locs[i].n)
		if err != nil {
			t.Fatalf("example %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("example %d: read back differs", i)
		}
	}
	// A big record cut short, or read past its end, is corrupt.
	for _, n := range []uint32{locs[1].n - 1, locs[1].n / 2, 9} {
		if n < bigRecord {
			n = bigRecord // the field-by-field path
		}
		if _, err := stream.GetAt(locs[1].off+int64(locs[1].n)-int64(n), n); err == nil {
			t.Errorf("a %d-byte window ending at record 1's end: no error", n)
		}
	}
}
