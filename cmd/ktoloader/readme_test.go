package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// The README and examples/ as a new user reads them (issue 15): the first-screen command
// works when run twice, and every `ktoloader CMD --flag` they name exists.

// docFiles are the documents whose commands a user copies: README.md, docs/ and examples/.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"../../README.md"}
	for _, pat := range []string{"../../docs/*.md", "../../examples/*.md", "../../examples/*.py"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	return files
}

// firstScreen returns the commands of README.md's first code block.
func firstScreen(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(string(b), "```", 3)
	if len(parts) < 3 {
		t.Fatal("README.md has no code block")
	}
	var cmds []string
	for _, line := range strings.Split(parts[1], "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		if line = strings.TrimSpace(line); line != "" {
			cmds = append(cmds, line)
		}
	}
	return cmds
}

// TestReadmeFirstScreenTwice runs the README's first-screen ktoloader command(s) twice in
// one fresh directory, as the built binary (what `go run ./cmd/ktoloader` builds) with the
// network off: both exit 0 and leave the same manifest.
func TestReadmeFirstScreenTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	var runs [][]string
	for _, c := range firstScreen(t) {
		f := strings.Fields(c)
		switch {
		case len(f) >= 3 && f[0] == "go" && f[1] == "run" && f[2] == "./cmd/ktoloader":
			runs = append(runs, f[3:])
		case len(f) >= 1 && f[0] == "ktoloader":
			runs = append(runs, f[1:])
		}
	}
	if len(runs) == 0 {
		t.Fatalf("no ktoloader command on README's first screen: %q", firstScreen(t))
	}
	bin := buildBinary(t, t.TempDir())
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var manifests [2][]byte
	for i := range 2 {
		for _, args := range runs {
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = work
			cmd.Env = append(os.Environ(), "HF_HUB_OFFLINE=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("run %d: ktoloader %s: %v\n%s", i+1, strings.Join(args, " "), err, out)
			}
		}
		var err error
		if manifests[i], err = os.ReadFile(filepath.Join(work, "shards", "manifest.json")); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
	}
	if !bytes.Equal(manifests[0], manifests[1]) {
		t.Error("the second run's manifest differs from the first's")
	}
}

var (
	codeSpan = regexp.MustCompile("`([^`\n]+)`")
	// "ktoloader CMD", also as "go run ./cmd/ktoloader CMD".
	cmdRef    = regexp.MustCompile(`(?:^|[\s(\[/])ktoloader\s+([a-z][a-z-]*)`)
	flagRef   = regexp.MustCompile(`(?:^|[\s\[(=|,])(--[a-z][a-z0-9-]*)`)
	headingRe = regexp.MustCompile(`^#+\s`)
	// A heading that says whose flags a table lists: "## prep flags", "(`ktoloader train`)".
	headingCmd = regexp.MustCompile("(?:^#+ ([a-z]+) flags|`ktoloader ([a-z]+)`)")
)

// docSnippet is a piece of code in a document: a fenced block's line (continuations
// joined) or an inline code span.
type docSnippet struct {
	file, text string
	line       int
	section    string // the command the enclosing heading names, if any
}

func docSnippets(t *testing.T, file string) []docSnippet {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []docSnippet
	fenced := false
	section := ""
	var cont strings.Builder
	contLine := 0
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			if cont.Len() == 0 {
				contLine = n
			}
			if strings.HasSuffix(line, "\\") {
				cont.WriteString(strings.TrimSuffix(line, "\\") + " ")
				continue
			}
			cont.WriteString(line)
			out = append(out, docSnippet{file, cont.String(), contLine, section})
			cont.Reset()
			continue
		}
		if headingRe.MatchString(line) {
			section = ""
			if m := headingCmd.FindStringSubmatch(line); m != nil {
				section = m[1] + m[2]
			}
		}
		for _, m := range codeSpan.FindAllStringSubmatch(line, -1) {
			out = append(out, docSnippet{file, m[1], n, section})
		}
		// A table row whose first cell is a flag: that section's command's flag.
		if strings.HasPrefix(line, "| `--") {
			cell := strings.SplitN(line[3:], "`", 2)[0]
			out = append(out, docSnippet{file, "ktoloader " + orAny(section) + " " + cell, n, section})
		}
	}
	return out
}

func orAny(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

// TestDocumentedFlagsExist: every `ktoloader CMD … --flag` in README.md and examples/
// names a command that exists and flags that command defines (as --help lists them).
func TestDocumentedFlagsExist(t *testing.T) {
	root := newRootCmd()
	checked := 0
	for _, file := range docFiles(t) {
		for _, s := range docSnippets(t, file) {
			text := strings.ReplaceAll(s.text, `\|`, " ")
			locs := cmdRef.FindAllStringSubmatchIndex(text, -1)
			if strings.HasPrefix(text, "ktoloader * ") {
				locs = [][]int{{0, 11, 10, 11}}
			}
			for k, loc := range locs {
				name := text[loc[2]:loc[3]]
				end := len(text)
				if k+1 < len(locs) {
					end = locs[k+1][0]
				}
				rest := text[loc[1]:end]
				// A shell comment or the next command ends the flags of this one.
				for _, stop := range []string{" #", ";", "&&", " | "} {
					if i := strings.Index(rest, stop); i >= 0 {
						rest = rest[:i]
					}
				}
				var cmds []*cobra.Command
				if name == "*" {
					cmds = root.Commands()
				} else {
					c, _, err := root.Find([]string{name})
					if err != nil || c == root {
						t.Errorf("%s:%d: `ktoloader %s`: no such command", s.file, s.line, name)
						continue
					}
					cmds = []*cobra.Command{c}
				}
				for _, fm := range flagRef.FindAllStringSubmatch(rest, -1) {
					flag := strings.TrimPrefix(fm[1], "--")
					if !anyDefines(cmds, flag) {
						t.Errorf("%s:%d: `ktoloader %s … --%s`: the command has no such flag (%q)", s.file, s.line, name, flag, s.text)
					}
					checked++
				}
			}
		}
	}
	if checked < 50 {
		t.Errorf("only %d documented flags found: is the parsing broken?", checked)
	}
	t.Logf("%d documented flags checked", checked)
}

func anyDefines(cmds []*cobra.Command, flag string) bool {
	for _, c := range cmds {
		if flag == "help" || c.Flags().Lookup(flag) != nil || c.InheritedFlags().Lookup(flag) != nil {
			return true
		}
	}
	return false
}
