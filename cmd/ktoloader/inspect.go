package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Completion markers: what the loss is taken on, in inspect's example row.
const (
	markOpen  = "⟦"
	markClose = "⟧"
	ansiOn    = "\x1b[1;32m"
	ansiOff   = "\x1b[0m"
)

type inspectFlags struct {
	row       int64
	split     string
	tokenizer string
}

func newInspectCmd() *cobra.Command {
	var f inspectFlags
	cmd := &cobra.Command{
		Use:   "inspect OUT [--row N] [--split train] [--tokenizer PATH]",
		Short: "Summarize an output directory and show one kto/ row with its loss tokens marked",
		Long: `inspect prints the manifest of OUT as tables (inputs, tokenizer, config, counts, token
lengths, packing, KTO batches, files), then row N of kto/SPLIT: its source, label, behavior
and batch, and the prompt followed by the completion between ⟦ ⟧ (also in green on a
terminal): the completion is what KTO takes its loss on.

With --tokenizer (tokenizer.model or tokenizer.json) the ids are decoded, which shows what
the model will see; without it, the stored prompt and completion text columns are shown,
with the raw ids. Exit 0 on success, 1 when OUT cannot be read, 2 on a usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInspect(cmd.OutOrStdout(), args[0], &f)
		},
	}
	fl := cmd.Flags()
	fl.Int64Var(&f.row, "row", 0, "row of kto/SPLIT to show, counted from 0 across its shards")
	fl.StringVar(&f.split, "split", "train", "split to show the row from")
	fl.StringVar(&f.tokenizer, "tokenizer", "", "tokenizer.model or tokenizer.json to decode the ids with")
	return cmd
}

func runInspect(w io.Writer, dir string, f *inspectFlags) error {
	if f.row < 0 {
		return usagef("--row %d: want a row number ≥ 0", f.row)
	}
	m, err := export.ReadManifest(dir)
	if err != nil {
		return err
	}
	var tok *tokenize.Tokenizer
	if f.tokenizer != "" {
		if tok, err = tokenize.Load(f.tokenizer); err != nil {
			return err // an explicit tokenizer that fails to load is an error, never a fallback
		}
	}
	printSummary(w, m)
	row, file, idx, err := readKTORow(dir, m, f.split, f.row)
	if err != nil {
		return err
	}
	color := false
	if fd, ok := w.(*os.File); ok {
		color = term.IsTerminal(int(fd.Fd()))
	}
	printRow(w, row, fmt.Sprintf("%s row %d (kto/%s row %d)", file, idx, f.split, f.row), tok, color)
	return nil
}

func newTable(w io.Writer, header ...any) *tablewriter.Table {
	t := tablewriter.NewWriter(w)
	t.Header(header...)
	return t
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func printSummary(w io.Writer, m *export.Manifest) {
	tk := m.Tokenizer
	demo := ""
	if tk.Demo {
		demo = ", DEMO: not Mistral's ids"
	}
	fmt.Fprintf(w, "%s output, format_version %d; tokenizer %s (%s, vocab %d, sha256 %s%s)\n\n",
		m.Tool, m.FormatVersion, tk.Name, tk.Kind, tk.VocabSize, short(tk.SHA256), demo)

	t := newTable(w, "input", "bytes", "sha256")
	for _, in := range m.Inputs {
		t.Append(in.Name, in.Bytes, short(in.SHA256))
	}
	t.Render()

	t = newTable(w, "config", "value")
	cfg, _ := m.Config.Map() // fails only on a NaN fraction, which JSON cannot hold
	for _, k := range sortedKeys(cfg) {
		t.Append(k, fmt.Sprint(cfg[k]))
	}
	t.Render()

	c := m.Counts
	fmt.Fprintf(w, "\nrows read %d, written %d, rejected %d\n", c.Read, c.Written, c.Rejected)
	if len(c.Reasons) > 0 {
		t = newTable(w, "reject reason", "rows")
		for _, k := range sortedKeys(c.Reasons) {
			t.Append(k, c.Reasons[k])
		}
		t.Render()
	}
	if len(c.Notes) > 0 {
		t = newTable(w, "note", "rows")
		for _, k := range sortedKeys(c.Notes) {
			t.Append(k, c.Notes[k])
		}
		t.Render()
	}
	t = newTable(w, "split", "behavior", "desirable", "undesirable", "examples")
	for _, s := range sortedKeys(c.Splits) {
		sc := c.Splits[s]
		for _, b := range sortedKeys(sc.Behaviors) {
			lc := sc.Behaviors[b]
			t.Append(s, behaviorName(b), lc.Desirable, lc.Undesirable, lc.Desirable+lc.Undesirable)
		}
		t.Append(s, "(all)", sc.Desirable, sc.Undesirable, sc.Examples)
	}
	t.Render()

	t = newTable(w, "tokens", "count", "min", "mean", "p50", "p95", "max")
	for _, d := range []struct {
		name string
		d    export.Dist
	}{{"prompt", m.Tokens.Prompt}, {"completion", m.Tokens.Completion}, {"total", m.Tokens.Total}} {
		t.Append(d.name, d.d.Count, d.d.Min, strconv.FormatFloat(d.d.Mean, 'f', 1, 64), d.d.P50, d.d.P95, d.d.Max)
	}
	t.Render()

	t = newTable(w, "packed", "rows", "sequences", "tokens", "fill")
	for _, kind := range []struct {
		name  string
		infos map[string]export.PackInfo
	}{{"kto_packed", m.Packing.KTOPacked}, {"sft", m.Packing.SFT}} {
		for _, s := range sortedKeys(kind.infos) {
			p := kind.infos[s]
			t.Append(kind.name+"/"+s, p.Rows, p.Sequences, p.Tokens, fmt.Sprintf("%.1f%%", 100*p.Fill))
		}
	}
	t.Render()

	fmt.Fprintf(w, "\nKTO batch size %d, max_len %d; suggested weights: desirable %g, undesirable %g\n",
		m.KTO.BatchSize, m.Packing.MaxLen, m.KTO.DesirableWeight, m.KTO.UndesirableWeight)
	t = newTable(w, "kto", "examples", "batches", "last batch", "dropped", "without desirable", "without undesirable", "KL cut")
	for _, s := range sortedKeys(m.KTO.Splits) {
		b := m.KTO.Splits[s]
		t.Append(s, b.Examples, b.Batches, b.LastBatch, b.Dropped, b.NoDesirable, b.NoUndesirable, b.KLTruncated)
	}
	t.Render()

	t = newTable(w, "file", "rows", "bytes", "sha256")
	for _, fi := range m.Files {
		t.Append(fi.Path, fi.Rows, fi.Bytes, short(fi.SHA256))
	}
	t.Render()
	fmt.Fprintln(w)
}

// readKTORow finds row n of kto/split across its shards (Parquet when listed, else Arrow)
// using the row counts of the manifest, and reads it from the one shard that holds it.
func readKTORow(dir string, m *export.Manifest, split string, n int64) (kto.KTORow, string, int64, error) {
	var files []export.FileInfo
	for _, format := range []export.Format{export.FormatParquet, export.FormatArrow} {
		for _, fi := range m.Files {
			if fi.Kind == export.KindKTO && fi.Split == split && fi.Format == format {
				files = append(files, fi)
			}
		}
		if len(files) > 0 {
			break
		}
	}
	if len(files) == 0 {
		var splits []string
		for _, fi := range m.Files {
			if fi.Kind == export.KindKTO && !slices.Contains(splits, fi.Split) {
				splits = append(splits, fi.Split)
			}
		}
		slices.Sort(splits)
		return kto.KTORow{}, "", 0, usagef("--split %s: no kto/ shards of that split (have: %s)", split, strings.Join(splits, ", "))
	}
	slices.SortFunc(files, func(a, b export.FileInfo) int { return strings.Compare(a.Path, b.Path) })
	var total int64
	for _, fi := range files {
		if n >= total+fi.Rows {
			total += fi.Rows
			continue
		}
		want := n - total
		var row kto.KTORow
		var i int64
		errFound := errors.New("found")
		err := export.ReadBatches(filepath.Join(dir, filepath.FromSlash(fi.Path)), 64, func(rows []kto.KTORow) error {
			if want < i+int64(len(rows)) {
				row = rows[want-i]
				return errFound
			}
			i += int64(len(rows))
			return nil
		})
		if errors.Is(err, errFound) {
			return row, fi.Path, want, nil
		}
		if err != nil {
			return row, "", 0, err
		}
		return row, "", 0, fmt.Errorf("%s holds %d rows, the manifest says %d (run ktoloader verify)", fi.Path, i, fi.Rows)
	}
	return kto.KTORow{}, "", 0, usagef("--row %d: kto/%s has %d rows", n, split, total)
}

// printRow shows one kto/ row: the prompt, then the completion between markers.
func printRow(w io.Writer, r kto.KTORow, where string, tok *tokenize.Tokenizer, color bool) {
	label := "undesirable"
	if r.Label {
		label = "desirable"
	}
	behavior := behaviorName(r.Behavior)
	if r.Behavior != "" {
		behavior = strconv.Quote(r.Behavior)
	}
	fmt.Fprintf(w, "%s\n  source %s, %s, behavior %s, batch %d\n  prompt %d ids, completion %d ids, KL completion %d ids\n\n",
		where, r.Source, label, behavior, r.BatchIndex, len(r.PromptIDs), len(r.CompletionIDs), len(r.KLCompletionIDs))
	open, close := markOpen, markClose
	if color {
		open, close = ansiOn+markOpen, markClose+ansiOff
	}
	if tok == nil {
		fmt.Fprintln(w, "stored text (no --tokenizer to decode the ids with):")
		fmt.Fprintf(w, "%s%s%s%s\n\n", r.Prompt, open, r.Completion, close)
		fmt.Fprintf(w, "prompt_ids %v\ncompletion_ids %s%v%s\n", r.PromptIDs, open, r.CompletionIDs, close)
		return
	}
	prompt, completion := decodeSplit(tok, r.PromptIDs, r.CompletionIDs)
	fmt.Fprintln(w, "decoded:")
	fmt.Fprintf(w, "%s%s%s%s\n", prompt, open, completion, close)
	_, kl := decodeSplit(tok, r.PromptIDs, r.KLCompletionIDs)
	fmt.Fprintf(w, "\nKL completion (the previous row's completion in this batch): %s%s%s\n", open, kl, close)
}

// decodeSplit decodes prompt+completion as one sequence, as the model sees it, and splits
// the text where the completion starts; decoding the completion alone would lose its
// leading space (the decoder strips one at the start of a text).
func decodeSplit(tok *tokenize.Tokenizer, prompt, completion []int32) (string, string) {
	pre := tok.Decode(prompt)
	full := tok.Decode(append(slices.Clip(prompt), completion...))
	if strings.HasPrefix(full, pre) {
		return pre, full[len(pre):]
	}
	return pre, tok.Decode(completion)
}

// behaviorName is how a behavior tag is shown: a row without one has the empty tag, which a
// table cell would show as nothing at all.
func behaviorName(b string) string {
	if b == "" {
		return "(none)"
	}
	return b
}
