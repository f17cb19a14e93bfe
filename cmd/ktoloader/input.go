package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/testdata"
)

// inputFlags are the reading flags shared by validate, render and prep.
type inputFlags struct {
	inputs       []string
	maxLineBytes int
	missingLabel string
	strict       bool
}

func (f *inputFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringSliceVarP(&f.inputs, "input", "i", nil,
		"input files (JSONL, .jsonl.gz, .jsonl.zst, .parquet; - for stdin); repeat or comma-separate; default: the embedded sample")
	cmd.Flags().IntVar(&f.maxLineBytes, "max-line-bytes", loader.DefaultMaxLineBytes,
		"longest accepted input line in bytes; longer lines are rejected (bounds memory per row)")
	cmd.Flags().StringVar(&f.missingLabel, "missing-label", "",
		"label for rows without one: true or false (default: reject such rows)")
	cmd.Flags().BoolVar(&f.strict, "strict", false, "stop at the first bad row (exit 1)")
}

func (f *inputFlags) config() (loader.Config, error) {
	cfg := loader.Config{MaxLineBytes: f.maxLineBytes}
	switch f.missingLabel {
	case "":
	case "true", "false":
		v := f.missingLabel == "true"
		cfg.MissingLabel = &v
	default:
		return cfg, usagef("--missing-label must be true or false, not %q", f.missingLabel)
	}
	if f.maxLineBytes <= 0 {
		return cfg, usagef("--max-line-bytes must be positive")
	}
	return cfg, nil
}

// names lists the inputs as they will be recorded (the embedded sample when none is given).
func (f *inputFlags) names() []string {
	if len(f.inputs) == 0 {
		return []string{testdata.SampleName}
	}
	return f.inputs
}

// open returns a reader for one named input.
func openInput(name string, cfg loader.Config) (*loader.Reader, error) {
	if name == testdata.SampleName {
		return loader.NewReader(bytes.NewReader(testdata.SampleJSONL), name, cfg)
	}
	return loader.Open(name, cfg)
}

// errStrict wraps the first bad row under --strict.
var errStrict = errors.New("stopped at the first bad row (--strict)")

// eachRow streams every input, calling ok for valid rows and bad for rejected ones (a
// *loader.RowError). Stream errors end the run; under strict the first bad row does too.
func (f *inputFlags) eachRow(ok func(*loader.Row) error, bad func(*loader.RowError) error) error {
	cfg, err := f.config()
	if err != nil {
		return err
	}
	for _, name := range f.names() {
		r, err := openInput(name, cfg)
		if err != nil {
			return err
		}
		for {
			row, err := r.Read()
			if err == io.EOF {
				break
			}
			var re *loader.RowError
			if errors.As(err, &re) {
				if err := bad(re); err != nil {
					r.Close()
					return err
				}
				if f.strict {
					r.Close()
					return fmt.Errorf("%w: %v", errStrict, re)
				}
				continue
			}
			if err != nil {
				r.Close()
				return err
			}
			if err := ok(&row); err != nil {
				r.Close()
				return err
			}
		}
		if err := r.Close(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}
