package loader

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// TestParquetInput writes a Parquet file shaped as Hugging Face stores this data
// (conversations as list<struct>, arguments as strings, nulls for absent fields) with
// arrow-go's writer and reads it back through the loader.
func TestParquetInput(t *testing.T) {
	fn := arrow.StructOf(arrow.Field{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "arguments", Type: arrow.BinaryTypes.String, Nullable: true})
	call := arrow.StructOf(arrow.Field{Name: "id", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "type", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "function", Type: fn, Nullable: true})
	msg := arrow.StructOf(arrow.Field{Name: "role", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "content", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "tool_calls", Type: arrow.ListOf(call), Nullable: true})
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "conversations", Type: arrow.ListOf(msg), Nullable: true},
		{Name: "label", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "behavior", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	js := `[
{"conversations":[{"role":"user","content":"hi","tool_calls":null},{"role":"assistant","content":null,"tool_calls":[{"id":"abcdefghi","type":"function","function":{"name":"f","arguments":"{\"b\": 1, \"a\": 2}"}}]}],"label":true,"behavior":"x"},
{"conversations":[{"role":"user","content":"hi","tool_calls":null}],"label":false,"behavior":"y"},
{"conversations":[{"role":"user","content":"hé","tool_calls":null},{"role":"assistant","content":"ok","tool_calls":[]}],"label":null,"behavior":"z"}
]`
	rec, _, err := array.RecordFromJSON(memory.DefaultAllocator, schema, strings.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	p := filepath.Join(t.TempDir(), "d.parquet")
	f, _ := os.Create(p)
	w, err := pqarrow.NewFileWriter(schema, f, nil, pqarrow.DefaultWriterProps())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	w.Close()

	r, err := Open(p, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rows, errs := readAll(t, r)
	if len(rows) != 1 || len(errs) != 2 {
		t.Fatalf("rows %d errs %v", len(rows), errs)
	}
	if got := string(rows[0].Messages[1].ToolCalls[0].Arguments); got != `{"b": 1, "a": 2}` {
		t.Errorf("arguments %q", got)
	}
	if errs[0].Line != 2 || Reason(errs[0]) != "no_final_assistant" || errs[1].Line != 3 || Reason(errs[1]) != "missing_label" {
		t.Errorf("errors %v %v", errs[0], errs[1])
	}

	// A file that is not Parquet is an error, not a panic.
	bad := filepath.Join(t.TempDir(), "bad.parquet")
	os.WriteFile(bad, []byte("PAR1 not really"), 0o644)
	if _, err := Open(bad, Config{}); err == nil {
		t.Error("garbage opened as Parquet")
	}
}
