package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// dumpFlags are dump's flag values.
type dumpFlags struct{ kind, split, to string }

func newDumpCmd() *cobra.Command {
	var f dumpFlags
	cmd := &cobra.Command{
		Use:   "dump OUT [--dir kto|kto_packed|sft] [--split S] [--to DIR]",
		Short: "Print the rows of an output directory's shards as JSON lines (no Parquet reader needed)",
		Long: `dump reads the shards of a finished prep output OUT and writes their rows as JSON lines, one
object per row with the columns as keys, in file order (docs/FORMAT.md lists the columns). It
reads what the manifest lists (the .parquet shards, or the .arrow ones when there are none).

  ktoloader dump OUT                          kto/train's rows on stdout
  ktoloader dump OUT --dir sft --split test   sft/test's rows on stdout
  ktoloader dump OUT --to DUMP                every shard as DUMP/KIND/NAME.jsonl, named like
                                              the shard (what examples/check_examples.py
                                              --rows-dir reads on a machine without pyarrow)

DIR must not be OUT or lie inside it. Exit 0 on success, 1 when OUT cannot be read, 2 on a
usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.to != "" {
				if cmd.Flags().Changed("dir") || cmd.Flags().Changed("split") {
					return usagef("dump: --to writes every shard; drop --dir and --split")
				}
				return dumpAll(cmd.ErrOrStderr(), args[0], f.to)
			}
			return dumpSplit(cmd.OutOrStdout(), args[0], f.kind, f.split)
		},
	}
	cmd.Flags().StringVar(&f.kind, "dir", export.KindKTO, "which shards: kto, kto_packed or sft")
	cmd.Flags().StringVar(&f.split, "split", "train", "which split")
	cmd.Flags().StringVar(&f.to, "to", "", "write every shard to this directory as KIND/NAME.jsonl instead")
	return cmd
}

func dumpSplit(w io.Writer, dir, kind, split string) error {
	if !isShardKind(kind) {
		return usagef("dump: --dir %q: want kto, kto_packed or sft", kind)
	}
	m, err := export.ReadManifest(dir)
	if err != nil {
		return err
	}
	files := m.Shards(kind, split)
	if len(files) == 0 {
		return usagef("dump: %s lists no %s/%s shard (splits: %s)", dir, kind, split, strings.Join(splitsOf(m, kind), ", "))
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	for _, fi := range files {
		if err := dumpFile(bw, filepath.Join(dir, filepath.FromSlash(fi.Path)), kind); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func splitsOf(m *export.Manifest, kind string) []string {
	var out []string
	for _, fi := range m.Files {
		if fi.Kind == kind && (len(out) == 0 || out[len(out)-1] != fi.Split) {
			out = append(out, fi.Split)
		}
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

// dumpAll writes every listed shard of dir as to/KIND/NAME.jsonl, each atomically.
func dumpAll(log io.Writer, dir, to string) error {
	m, err := export.ReadManifest(dir)
	if err != nil {
		return err
	}
	absDir, err1 := filepath.Abs(dir)
	absTo, err2 := filepath.Abs(to)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("dump: %v %v", err1, err2)
	}
	if rel, err := filepath.Rel(absDir, absTo); err == nil && !strings.HasPrefix(rel, "..") {
		return usagef("dump: --to %s lies inside %s: the dumps would become unlisted files of the run", to, dir)
	}
	n := 0
	for _, kind := range []string{export.KindKTO, export.KindKTOPacked, export.KindSFT} {
		for _, split := range splitsOf(m, kind) {
			for _, fi := range m.Shards(kind, split) {
				name := strings.TrimSuffix(path.Base(fi.Path), path.Ext(fi.Path)) + ".jsonl"
				dst := filepath.Join(to, kind, name)
				if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
					return err
				}
				f, err := export.CreateAtomic(dst)
				if err != nil {
					return err
				}
				bw := bufio.NewWriterSize(f, 1<<16)
				err = dumpFile(bw, filepath.Join(dir, filepath.FromSlash(fi.Path)), kind)
				if err == nil {
					err = bw.Flush()
				}
				if err == nil {
					err = f.Commit()
				}
				if err != nil {
					f.Abort()
					return err
				}
				n++
			}
		}
	}
	fmt.Fprintf(log, "dump: %d shards of %s written to %s\n", n, dir, to)
	return nil
}

func isShardKind(k string) bool {
	return k == export.KindKTO || k == export.KindKTOPacked || k == export.KindSFT
}

func dumpFile(w io.Writer, p, kind string) error {
	switch kind {
	case export.KindKTO:
		return dumpRows[kto.KTORow](w, p)
	case export.KindKTOPacked:
		return dumpRows[kto.PackedRow](w, p)
	case export.KindSFT:
		return dumpRows[kto.SFTRow](w, p)
	}
	return usagef("dump: unknown shard kind %q", kind)
}

// dumpRows streams the rows of one shard as JSON objects keyed by column name, in column order.
func dumpRows[T any](w io.Writer, p string) error {
	names, err := columnNames[T]()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "<s>" stays readable
	return export.ReadRows(p, func(r T) error {
		buf.Reset()
		buf.WriteByte('{')
		v := reflect.ValueOf(r)
		for i, c := range names {
			if i > 0 {
				buf.WriteByte(',')
			}
			key, _ := json.Marshal(c.name)
			buf.Write(key)
			buf.WriteByte(':')
			f := v.Field(c.field)
			if f.Kind() == reflect.Slice && f.IsNil() {
				buf.WriteString("[]")
				continue
			}
			if err := enc.Encode(f.Interface()); err != nil {
				return err
			}
			buf.Truncate(buf.Len() - 1) // Encode's newline
		}
		buf.WriteString("}\n")
		_, err := w.Write(buf.Bytes())
		return err
	})
}

type dumpColumn struct {
	name  string
	field int
}

// columnNames maps the columns export writes for T (export.Columns, in file order) onto T's
// fields, which carry the same names in their parquet tags.
func columnNames[T any]() ([]dumpColumn, error) {
	cols, err := export.Columns[T]()
	if err != nil {
		return nil, err
	}
	t := reflect.TypeFor[T]()
	byName := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("parquet"), ",")
		byName[name] = i
	}
	out := make([]dumpColumn, len(cols))
	for i, c := range cols {
		f, ok := byName[c.Name]
		if !ok {
			return nil, fmt.Errorf("dump: column %s has no field in %s", c.Name, t)
		}
		out[i] = dumpColumn{c.Name, f}
	}
	return out, nil
}
