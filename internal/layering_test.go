// Package internal_test holds the module's layering test: it parses the import clauses of
// every package and fails when one imports a package its layer may not, so the one-way
// dependency order stays a property of the code rather than of its reviewers.
package internal_test

import (
	"go/ast"
	"go/build/constraint"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// allowed is the layering, per package (module-relative path), as the packages it may import
// from this module. The order, from the top:
//
//	cmd/ktoloader → internal/pipeline → export, kto/train → kto → tokenize → loader
//
// A package may import any package below it in that order (kto may import loader directly).
// tokenize/bpe, the base tokenizer, sits under tokenize, which alone imports it (the others
// use its types through tokenize's names). export/report and internal/rowpath sit beside
// export (rowpath: the one path of a row, for pipeline and the commands; report: reads an
// output directory, for the commands); internal/outdir (an output directory held by one
// run) sits under cmd and internal/pipeline, over export. kto/train may read prep's manifest
// through export; export never imports kto/train. internal/pipeline does not import
// kto/train either (stricter than the order above): prep as a library does not pull in the
// trainer and GomlX.
//
// The helpers import nothing of this module but the two leaf codecs (internal/gen and
// internal/safetensors: jsonstr, gen also stablehash), so that any layer can use them, and
// are imported only where listed: internal/hub (the Hugging Face Hub client) by tokenize,
// for the tokenizer, and by kto/train, for weights; internal/safetensors by kto/train;
// internal/gen (synthetic rows) by cmd/ktoloader; internal/lmhead (the CPU trainer's LM
// head kernels) by kto/train; testdata (the embedded sample and demo
// tokenizer), internal/stablehash (the hashes and the random stream that outputs depend on)
// internal/jsonstr (the JSON string decoder and encoders) and internal/pyjson (JSON read and
// written as Python's json module does, over jsonstr) by anyone. internal/shared
// (the ../shared folder for tests) is for tests only, which are not checked here: a test may
// import upwards (report's tests run the pipeline).
//
// A new package must be added here: the test fails for a package it does not know.
var allowed = map[string][]string{
	"loader":            {"testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},
	"tokenize/bpe":      {},
	"tokenize":          {"tokenize/bpe", "loader", "internal/hub", "testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},
	"kto":               {"tokenize", "loader", "testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},
	"export":            {"kto", "tokenize", "loader", "testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},
	"internal/rowpath":  {"kto", "tokenize", "loader", "testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},
	"export/report":     {"export", "kto", "tokenize", "loader", "testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},
	"kto/train":         {"export", "kto", "tokenize", "loader", "internal/safetensors", "internal/hub", "internal/lmhead", "testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},
	"internal/outdir":   {"export", "kto", "tokenize", "loader", "testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},
	"internal/pipeline": {"export", "internal/outdir", "internal/rowpath", "kto", "tokenize", "loader", "testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},
	"cmd/ktoloader": {"internal/pipeline", "internal/outdir", "export", "export/report", "kto/train", "internal/rowpath", "kto",
		"tokenize", "loader", "internal/hub", "internal/safetensors", "internal/gen", "testdata", "internal/stablehash", "internal/pyjson", "internal/jsonstr"},

	"internal/hub":         {},
	"internal/safetensors": {"internal/jsonstr"},
	"internal/gen":         {"internal/stablehash", "internal/jsonstr"},
	"internal/stablehash":  {},
	"internal/lmhead":      {},
	"internal/jsonstr":     {},
	"internal/pyjson":      {"internal/jsonstr"},
	"internal/shared":      {},
	"testdata":             {},
}

// external limits where third-party imports may appear (by import path prefix): GomlX, and
// so the accelerator runtimes, only in the trainer; the command-line libraries only in the
// command.
var external = map[string][]string{
	"github.com/gomlx/":   {"kto/train"},
	"github.com/spf13/":   {"cmd/ktoloader"},
	"github.com/schollz/": {"cmd/ktoloader"},
}

type pkg struct {
	imports map[string][]string // import path → files importing it
	doc     []string            // package doc comments, one per file that has one
}

// modulePackages parses the non-test Go files under root (all build tags: a file for -tags
// xla counts as much as its fallback) and returns the packages by module-relative directory.
func modulePackages(t *testing.T, root string) map[string]*pkg {
	t.Helper()
	out := map[string]*pkg{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			// testdata directories hold fixtures, except the module's testdata package.
			if rel != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
				(name == "testdata" && rel != "testdata")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		if toolOnly(f.Comments) {
			return nil
		}
		dir := filepath.ToSlash(filepath.Dir(rel))
		p := out[dir]
		if p == nil {
			p = &pkg{imports: map[string][]string{}}
			out[dir] = p
		}
		if f.Doc != nil {
			p.doc = append(p.doc, f.Doc.Text())
		}
		for _, im := range f.Imports {
			ip := strings.Trim(im.Path.Value, `"`)
			p.imports[ip] = append(p.imports[ip], rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// toolOnly reports whether a file is built only with -tags tools or ignore (tools.go pins
// dependencies and is never part of a package).
func toolOnly(comments []*ast.CommentGroup) bool {
	for _, cg := range comments {
		for _, c := range cg.List {
			if !constraint.IsGoBuild(c.Text) {
				continue
			}
			expr, err := constraint.Parse(c.Text)
			if err != nil {
				return false
			}
			return !expr.Eval(func(tag string) bool { return tag != "tools" && tag != "ignore" })
		}
	}
	return false
}

func moduleRoot(t *testing.T) (root, module string) {
	t.Helper()
	root = ".."
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return root, strings.TrimSpace(m)
		}
	}
	t.Fatal("go.mod names no module")
	return "", ""
}

func TestLayering(t *testing.T) {
	root, module := moduleRoot(t)
	pkgs := modulePackages(t, root)
	if len(pkgs) < len(allowed)-1 { // the parse found the packages (internal_test has no non-test file)
		t.Fatalf("found %d packages under %s, the table lists %d", len(pkgs), root, len(allowed))
	}
	for dir, p := range pkgs {
		may, known := allowed[dir]
		if !known {
			t.Errorf("package %s is not in the layering table (internal/layering_test.go): place it", dir)
			continue
		}
		for ip, files := range p.imports {
			if rel, ok := strings.CutPrefix(ip, module+"/"); ok {
				if !slices.Contains(may, rel) {
					t.Errorf("%s imports %s (%s): not allowed by the layering (it may import %v)", dir, rel, files[0], may)
				}
				continue
			}
			for prefix, only := range external {
				if strings.HasPrefix(ip, prefix) && !slices.Contains(only, dir) {
					t.Errorf("%s imports %s (%s): only %v may", dir, ip, files[0], only)
				}
			}
		}
	}
	for dir := range allowed {
		if _, ok := pkgs[dir]; !ok {
			t.Errorf("the layering table lists %s, which has no Go files: drop it", dir)
		}
	}
}

// saysImports finds the sentence of a package doc that says what the package may import.
var saysImports = regexp.MustCompile(`(?i)\b(may import|imports (only|nothing|no )|imports:)`)

// TestPackageDocs: every package says what it is for and what it may import, in one package
// doc comment.
func TestPackageDocs(t *testing.T) {
	root, _ := moduleRoot(t)
	for dir, p := range modulePackages(t, root) {
		switch {
		case len(p.doc) == 0:
			t.Errorf("package %s has no doc comment", dir)
		case len(p.doc) > 1:
			t.Errorf("package %s has %d doc comments; keep one (doc.go or the main file)", dir, len(p.doc))
		case !saysImports.MatchString(p.doc[0]):
			t.Errorf("package %s's doc comment does not say what it may import", dir)
		}
	}
}
