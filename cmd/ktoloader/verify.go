package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/export"
)

func newVerifyCmd() *cobra.Command {
	var f struct{ asJSON bool }
	cmd := &cobra.Command{
		Use:   "verify OUT [--json]",
		Short: "Re-read an output directory and check every file against its manifest and the shard contracts",
		Long: `verify re-reads every file that OUT/manifest.json lists and checks:

  - size, sha256 and row count as listed; the schema (column names and types) as
    docs/FORMAT.md gives them; no unlisted or temporary file in kto/, kto_packed/ or sft/;
  - the manifest's counts (read = written + rejected, splits, labels, behaviors) against
    each other, the files and rejects.jsonl;
  - kto/: batches of exactly kto.batch_size rows (the last may be shorter) and TRL's KL
    pairing (each row's KL_completion_ids is the previous row's completion in its batch);
  - kto_packed/: rows exactly max_len long, segments contiguous with positions restarting
    at 0, loss_mask on completions only, and every kto/ example packed token for token;
  - sft/: seq_lengths, positions and labels (-100 off the loss), and exactly the desirable
    kto/ examples.

A file with one violation gets one line, FILE row N: [check] what. A file with more gets its
sha256 line (when the bytes differ from the manifest's) and one summary: how many violations of
each check, then the first few; --json lists up to 20 per file and check and counts them all.
Exit 0 when nothing is wrong, 1 on any violation or when OUT is not a finished run, 2 on a
usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerify(cmd.OutOrStdout(), args[0], f.asJSON)
		},
	}
	cmd.Flags().BoolVar(&f.asJSON, "json", false, `print the report as one JSON object: {"ok", "files", "rows", "violations", "omitted", "counts"}`)
	return cmd
}

// verifyJSON is the --json report: export.Report with its verdict first.
type verifyJSON struct {
	OK bool `json:"ok"`
	export.Report
}

func runVerify(w io.Writer, dir string, asJSON bool) error {
	rep, err := export.Verify(dir)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(verifyJSON{OK: rep.OK(), Report: rep}); err != nil {
			return err
		}
	} else {
		printVerify(w, dir, &rep)
	}
	if !rep.OK() {
		return fmt.Errorf("verify %s: %d violations", dir, len(rep.Violations)+rep.Omitted)
	}
	return nil
}

// verifyExamples is how many violations a file's summary shows (plus the first of any check
// not among them).
const verifyExamples = 3

// printVerify prints the report per file, in the order files were found wrong: a file with
// one violation as that line; one with more as its sha256 line, if any, then one summary of
// the checks it breaks with counts and the first few violations.
func printVerify(w io.Writer, dir string, rep *export.Report) {
	var files []string
	total := map[string]int{}
	checks := map[string][]export.CheckCount{}
	for _, c := range rep.Counts {
		if _, ok := checks[c.File]; !ok {
			files = append(files, c.File)
		}
		checks[c.File] = append(checks[c.File], c)
		total[c.File] += c.N
	}
	listed := map[string][]export.Violation{}
	for _, v := range rep.Violations {
		listed[v.File] = append(listed[v.File], v)
	}
	var damaged []string
	for _, f := range files {
		vs := listed[f]
		if total[f] == 1 && len(vs) == 1 {
			fmt.Fprintln(w, vs[0])
			if vs[0].Check == export.CheckSHA256 {
				damaged = append(damaged, f)
			}
			continue
		}
		n := total[f]
		var rest []export.Violation
		for _, v := range vs {
			if v.Check == export.CheckSHA256 {
				fmt.Fprintln(w, v)
				damaged = append(damaged, f)
				n--
				continue
			}
			rest = append(rest, v)
		}
		var parts []string
		for _, c := range checks[f] {
			if c.Check != export.CheckSHA256 {
				parts = append(parts, fmt.Sprintf("%s %d", c.Check, c.N))
			}
		}
		if n == 0 {
			continue
		}
		name := f
		if name == "" {
			name = export.ManifestName
		}
		if n == 1 && len(rest) == 1 {
			fmt.Fprintln(w, rest[0])
			continue
		}
		fmt.Fprintf(w, "%s: %d violations (%s)\n", name, n, strings.Join(parts, ", "))
		shown := 0
		seen := map[string]bool{}
		for _, v := range rest {
			if shown < verifyExamples || !seen[v.Check] {
				if v.Row >= 0 {
					fmt.Fprintf(w, "    row %d: [%s] %s\n", v.Row, v.Check, v.What)
				} else {
					fmt.Fprintf(w, "    [%s] %s\n", v.Check, v.What)
				}
				shown++
			}
			seen[v.Check] = true
		}
		if n > shown {
			fmt.Fprintf(w, "    … %d more (verify --json lists up to 20 per check)\n", n-shown)
		}
	}
	verdict := "OK"
	if !rep.OK() {
		verdict = fmt.Sprintf("%d violations in %d files", len(rep.Violations)+rep.Omitted, len(files))
		if len(files) == 1 {
			verdict = fmt.Sprintf("%d violations in 1 file", len(rep.Violations)+rep.Omitted)
		}
	}
	fmt.Fprintf(w, "verified %d files, %d rows in %s: %s\n", rep.Files, rep.Rows, dir, verdict)
	if len(damaged) > 0 && len(files) > len(damaged) {
		fmt.Fprintf(w, "%s does not match the manifest's sha256 (damaged or changed after prep): the other violations may follow from it\n", strings.Join(damaged, ", "))
	}
}
