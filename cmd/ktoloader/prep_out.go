package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/testdata"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Checks prep makes before it reads a row or resolves a tokenizer: the inputs exist and are
// distinct, the output directory is safe to write (export.OpenOutDir), and a finished run
// there is either replaced on --force, or replaced because it is this very run again (same
// flags, input bytes and tokenizer: outputs are deterministic), or refused.

// checkInputs fails (usage error) when an input file is missing or one file is given twice
// (os.SameFile: ./a.jsonl and a.jsonl, a symlink, a hard link) unless allowDup. It returns
// the inputs' paths (stdin and the embedded sample excluded) for export.OutDirOptions.
func (f *inputFlags) checkInputs(allowDup bool) ([]string, error) {
	var paths []string
	var infos []os.FileInfo
	for _, name := range f.names() {
		if name == "-" || name == testdata.SampleName {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			return nil, usagef("--input %s: %v", name, errors.Unwrap(err))
		}
		for i, prev := range infos {
			if os.SameFile(fi, prev) && !allowDup {
				return nil, usagef("--input: %s and %s are the same file, given twice (every row would be written twice); pass --allow-duplicate-inputs if that is meant",
					paths[i], name)
			}
		}
		paths = append(paths, name)
		infos = append(infos, fi)
	}
	return paths, nil
}

// isRefusal reports whether err is the output directory refusing the run: a usage error.
func isRefusal(err error) bool {
	return errors.Is(err, export.ErrOutputExists) || errors.Is(err, export.ErrForeignFiles) ||
		errors.Is(err, export.ErrUnsafeOutput) || errors.Is(err, export.ErrLocked)
}

// configDiff names the flags whose values differ between a finished run's manifest config
// and this run's (as the manifest would record them), "" when none do.
func configDiff(prev map[string]any, now map[string]any) string {
	norm := func(v any) string {
		b, _ := json.Marshal(v)
		var x any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		dec.Decode(&x)
		b, _ = json.Marshal(x)
		return string(b)
	}
	keys := map[string]bool{}
	for k := range prev {
		keys[k] = true
	}
	for k := range now {
		keys[k] = true
	}
	var diffs []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	}) {
		a, b := "unset", "unset"
		if v, ok := prev[k]; ok {
			a = norm(v)
		}
		if v, ok := now[k]; ok {
			b = norm(v)
		}
		if a != b {
			diffs = append(diffs, fmt.Sprintf("%s %s there, %s now", k, a, b))
		}
	}
	return strings.Join(diffs, "; ")
}

// inputsDiff compares the finished run's inputs with these by name and size; with hash set
// also by sha256 (which reads every input once more).
func inputsDiff(prev []export.Input, names []string, hash bool) (string, error) {
	if len(prev) != len(names) {
		return fmt.Sprintf("%d inputs there, %d now", len(prev), len(names)), nil
	}
	for i, name := range names {
		if prev[i].Name != name {
			return fmt.Sprintf("input %d is %s there, %s now", i+1, prev[i].Name, name), nil
		}
		if name == "-" {
			return "stdin cannot be compared with the input that made it", nil
		}
		var size int64
		if name == testdata.SampleName {
			size = int64(len(testdata.SampleJSONL))
		} else {
			fi, err := os.Stat(name)
			if err != nil {
				return "", err
			}
			size = fi.Size()
		}
		if size != prev[i].Bytes {
			return fmt.Sprintf("input %s has %d bytes, %d when that run read it", name, size, prev[i].Bytes), nil
		}
		if !hash {
			continue
		}
		sum, err := fileSHA256(name)
		if err != nil {
			return "", err
		}
		if sum != prev[i].SHA256 {
			return fmt.Sprintf("input %s has sha256 %s, %s when that run read it", name, sum[:12], prev[i].SHA256[:min(12, len(prev[i].SHA256))]), nil
		}
	}
	return "", nil
}

func fileSHA256(name string) (string, error) {
	h := sha256.New()
	if name == testdata.SampleName {
		h.Write(testdata.SampleJSONL)
	} else {
		f, err := os.Open(name)
		if err != nil {
			return "", err
		}
		defer f.Close()
		if _, err := io.Copy(h, f); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// tokenizerDiff compares the tokenizer that made the finished run with this one.
func tokenizerDiff(prev export.TokenizerInfo, tok *tokenize.Tokenizer, res tokenize.Resolution) string {
	if prev.SHA256 != tok.SHA256() || prev.Demo != res.Demo {
		return fmt.Sprintf("tokenizer %s (sha256 %.12s) there, %s (sha256 %.12s) now", prev.Name, prev.SHA256, res.Source, tok.SHA256())
	}
	return ""
}

// refuseFinished is the error for a finished run that this run may not replace.
func refuseFinished(out, why string) error {
	return usageError{fmt.Errorf("%s: %w; it was made with other settings (%s); the same command, flags and input bytes replace it without --force",
		out, export.ErrOutputExists, why)}
}
