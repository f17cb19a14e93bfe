package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/export"
)

func init() {
	var asJSON bool
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

Each violation is printed as FILE row N: [check] what. Exit 0 when nothing is wrong, 1 on
any violation or when OUT is not a finished run, 2 on a usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerify(cmd.OutOrStdout(), args[0], asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print the report as one JSON object: {"ok", "files", "rows", "violations", "omitted"}`)
	rootCmd.AddCommand(cmd)
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
		for _, v := range rep.Violations {
			fmt.Fprintln(w, v)
		}
		if rep.Omitted > 0 {
			fmt.Fprintf(w, "… and %d more violations not listed\n", rep.Omitted)
		}
		verdict := "OK"
		if !rep.OK() {
			verdict = fmt.Sprintf("%d violations", len(rep.Violations)+rep.Omitted)
		}
		fmt.Fprintf(w, "verified %d files, %d rows in %s: %s\n", rep.Files, rep.Rows, dir, verdict)
	}
	if !rep.OK() {
		return fmt.Errorf("verify %s: %d violations", dir, len(rep.Violations)+rep.Omitted)
	}
	return nil
}
