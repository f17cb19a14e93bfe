package export

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
)

// formatDoc is the user-facing contract, kept true by TestFormatDoc.
const formatDoc = "../docs/FORMAT.md"

// docTables reads docs/FORMAT.md and returns, per "### " or "## " heading, the rows of the
// tables under it as cells with backticks and surrounding spaces removed (header and rule
// rows dropped).
func docTables(t *testing.T) map[string][][]string {
	t.Helper()
	f, err := os.Open(formatDoc)
	if err != nil {
		t.Fatalf("the format document is part of the repository: %v", err)
	}
	defer f.Close()
	out := map[string][][]string{}
	heading := ""
	inTable := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if h, ok := strings.CutPrefix(line, "## "); ok {
			heading, inTable = strings.TrimSpace(h), false
			continue
		}
		if h, ok := strings.CutPrefix(line, "### "); ok {
			heading, inTable = strings.TrimSpace(h), false
			continue
		}
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i, c := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(c), "`")
		}
		if !inTable { // the header row
			inTable = true
			continue
		}
		if strings.HasPrefix(cells[0], "---") {
			continue
		}
		out[heading] = append(out[heading], cells)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFormatDoc checks docs/FORMAT.md's tables against the code in both directions: each shard
// kind's columns (names, order, types) against the Arrow schema the writer builds from the row
// structs, and against DesignColumns, which verify enforces; the manifest's field paths and
// JSON types against the Manifest struct's json tags; rejects.jsonl's fields against
// loader.Reject.
func TestFormatDoc(t *testing.T) {
	tables := docTables(t)

	for _, kind := range []struct {
		heading string
		kind    string
		arrow   func() ([]ColumnType, error)
	}{
		{"kto/", KindKTO, arrowColumnsOf[kto.KTORow]},
		{"kto_packed/", KindKTOPacked, arrowColumnsOf[kto.PackedRow]},
		{"sft/", KindSFT, arrowColumnsOf[kto.SFTRow]},
	} {
		rows := tables[kind.heading]
		if len(rows) == 0 {
			t.Errorf("%s: no \"### %s\" column table", formatDoc, kind.heading)
			continue
		}
		var doc []ColumnType
		for _, r := range rows {
			if len(r) < 3 {
				t.Errorf("%s %s: row %q has no type", formatDoc, kind.heading, r)
				continue
			}
			doc = append(doc, ColumnType{r[0], r[1]})
		}
		writer, err := kind.arrow()
		if err != nil {
			t.Fatal(err)
		}
		if d := diffColumns(writer, doc); d != "" {
			t.Errorf("%s %s differs from the writer's Arrow schema: %s", formatDoc, kind.heading, d)
		}
		if d := diffColumns(DesignColumns[kind.kind], doc); d != "" {
			t.Errorf("%s %s differs from export.DesignColumns (what verify checks): %s", formatDoc, kind.heading, d)
		}
	}

	// manifest.json: every documented path exists with its type, and every field is documented.
	want := map[string]string{}
	jsonPaths(reflect.TypeFor[Manifest](), "", want)
	got := docPaths(t, "manifest.json", tables["manifest.json"])
	comparePaths(t, "manifest.json", got, want)

	want = map[string]string{}
	jsonPaths(reflect.TypeFor[loader.Reject](), "", want)
	comparePaths(t, "rejects.jsonl", docPaths(t, "rejects.jsonl", tables["rejects.jsonl"]), want)
}

func arrowColumnsOf[T any]() ([]ColumnType, error) {
	l, err := layoutOf[T]()
	if err != nil {
		return nil, err
	}
	return ArrowColumns(l.schema), nil
}

// docPaths expands a field table's first column ("a.{b,c}.<split>") into paths with map keys
// written "<>", each with the documented type.
func docPaths(t *testing.T, what string, rows [][]string) map[string]string {
	t.Helper()
	if len(rows) == 0 {
		t.Errorf("%s: no %s field table", formatDoc, what)
	}
	key := regexp.MustCompile(`<[^>]*>`)
	out := map[string]string{}
	for _, r := range rows {
		if len(r) < 3 {
			t.Errorf("%s %s: row %q has no type", formatDoc, what, r)
			continue
		}
		for _, p := range expandBraces(key.ReplaceAllString(r[0], "<>")) {
			if _, dup := out[p]; dup {
				t.Errorf("%s %s: %s documented twice", formatDoc, what, p)
			}
			out[p] = r[1]
		}
	}
	return out
}

// expandBraces expands the first {a,b} of s, recursively.
func expandBraces(s string) []string {
	i := strings.IndexByte(s, '{')
	j := strings.IndexByte(s, '}')
	if i < 0 || j < i {
		return []string{s}
	}
	var out []string
	for _, alt := range strings.Split(s[i+1:j], ",") {
		out = append(out, expandBraces(s[:i]+alt+s[j+1:])...)
	}
	return out
}

// jsonPaths records the JSON path and type of every field reachable from t: struct fields by
// their json tag, map values under "<>", array elements under "[]". Maps of scalars and values
// of type any are leaves ("object"), except the manifest's split, which holds kto.SplitStats.
func jsonPaths(t reflect.Type, prefix string, out map[string]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		p := name
		if prefix != "" {
			p = prefix + "." + name
		}
		ft := f.Type
		if t == reflect.TypeFor[Manifest]() && name == "split" {
			ft = reflect.TypeFor[kto.SplitStats]()
		}
		jsonField(ft, p, out)
	}
}

func jsonField(ft reflect.Type, p string, out map[string]string) {
	for ft.Kind() == reflect.Pointer {
		ft = ft.Elem()
	}
	switch ft.Kind() {
	case reflect.Struct:
		out[p] = "object"
		jsonPaths(ft, p, out)
	case reflect.Map:
		out[p] = "object"
		if v := ft.Elem(); v.Kind() == reflect.Struct {
			jsonField(v, p+".<>", out)
		}
	case reflect.Slice:
		out[p] = "array"
		if e := ft.Elem(); e.Kind() == reflect.Struct {
			jsonPaths(e, p+"[]", out)
		}
	case reflect.Interface:
		out[p] = "object"
	case reflect.String:
		out[p] = "string"
	case reflect.Bool:
		out[p] = "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		out[p] = "integer"
	case reflect.Float32, reflect.Float64:
		out[p] = "number"
	default:
		out[p] = "unsupported(" + ft.String() + ")"
	}
}

func comparePaths(t *testing.T, what string, doc, code map[string]string) {
	t.Helper()
	var keys []string
	for k := range code {
		keys = append(keys, k)
	}
	for k := range doc {
		if _, ok := code[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	keys = slices.Compact(keys)
	for _, k := range keys {
		d, inDoc := doc[k]
		c, inCode := code[k]
		switch {
		case !inDoc:
			t.Errorf("%s %s: field %s (%s) is not documented", formatDoc, what, k, c)
		case !inCode:
			t.Errorf("%s %s: documents %s, which the code does not write", formatDoc, what, k)
		case d != c:
			t.Errorf("%s %s: %s is documented as %s, the code writes %s", formatDoc, what, k, d, c)
		}
	}
}
