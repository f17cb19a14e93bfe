package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/olekukonko/tablewriter"
	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/internal/outdir"
	"github.com/ktoloader/ktoloader/internal/pipeline"
	"github.com/ktoloader/ktoloader/internal/rowpath"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// validateFlags are validate's flag values.
type validateFlags struct {
	in             inputFlags
	asJSON         bool
	rejects, tools string
}

func newValidateCmd() *cobra.Command {
	var f validateFlags
	cmd := &cobra.Command{
		Use:   "validate [--input FILE…|-] [--json] [--rejects FILE] [--tools FILE]",
		Short: "Read every row, check it, and account for it: valid, or rejected with line and reason",
		Long: `validate streams the inputs, checks every row against the tool-calling format
(roles, order, tool calls, JSON arguments, label, behavior) and the Mistral v0.3 chat
template's own rules (alternation, tool-call ids, tools list) and prints a summary: rows read,
valid, rejected by reason, labels, behaviors, roles and tool-call id shapes. read = valid +
rejected, always. Rejected rows are written to --rejects as JSONL (file, line, field, reason, raw).
Rejected rows alone do not fail the command (exit 0) unless --strict.

validate runs the same row path as prep and rejects the same rows for the same reasons and
fields, with one exception: it has no tokenizer, so it cannot count tokens and never rejects
too_long (rows over prep's --max-len). Give it prep's --tools to check that list too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opt := tokenize.Options{}
			if f.tools != "" {
				data, err := os.ReadFile(f.tools)
				if err != nil {
					return fmt.Errorf("--tools: %w", err)
				}
				opt.Tools = data
				if err := opt.Validate(); err != nil {
					return usagef("--tools %s: want a JSON list of tools: %v", f.tools, err)
				}
			}
			lcfg, err := f.in.config()
			if err != nil {
				return err
			}
			rp, err := rowpath.New(rowpath.Config{Loader: lcfg, Render: opt})
			if err != nil {
				return err
			}
			if f.rejects != "" {
				if err := outdir.CheckFile("--rejects", f.rejects, f.in.names(), outdir.IsRejectsFile); err != nil {
					return err
				}
			}
			rw, err := pipeline.NewRejects(f.rejects)
			if err != nil {
				return err
			}
			st := loader.NewStats()
			bad := func(re *loader.RowError) error { st.Reject(re.Reason()); return rw.Write(re) }
			err = f.in.eachRow(
				func(r *loader.Row) error {
					res := rp.Row(r, nil)
					if res.Reject == nil {
						st.Accept(r)
						return nil
					}
					if err := bad(res.Reject); err != nil {
						return err
					}
					if f.in.strict {
						return fmt.Errorf("%w: %v", errStrict, res.Reject)
					}
					return nil
				},
				bad,
			)
			if err != nil {
				rw.Abort()
				return err
			}
			if err := rw.Commit(); err != nil {
				return err
			}
			if f.asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetEscapeHTML(false)
				return enc.Encode(struct {
					*loader.Stats
					NotChecked []string `json:"not_checked"`
				}{st, []string{"too_long"}})
			}
			printStats(cmd.OutOrStdout(), st)
			return nil
		},
	}
	f.in.register(cmd)
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the summary as one JSON object")
	cmd.Flags().StringVar(&f.rejects, "rejects", "", "write rejected rows to this JSONL file")
	cmd.Flags().StringVar(&f.tools, "tools", "", "prep's --tools file: a tools list for rows without their own, checked as the template does")
	return cmd
}

func printStats(w io.Writer, st *loader.Stats) {
	fmt.Fprintf(w, "rows read %d, valid %d, rejected %d\n\n", st.Read, st.Valid, st.Rejected)
	table(w, "reason", "rows", st.Reasons)
	table(w, "label", "rows", st.Labels)
	table(w, "behavior", "rows", st.Behaviors)
	table(w, "behavior from field", "rows", st.BehaviorFields)
	table(w, "role", "messages", st.Roles)
	table(w, "tool call id", "calls", st.ToolCallIDs)
	fmt.Fprintf(w, "assistant messages with text and tool calls: %d\n", st.TextWithTools)
	fmt.Fprintln(w, "not checked: too_long (prep's --max-len needs the tokenizer); every other prep check was run")
}

// table prints a count map as a two-column table, largest first, ties by name.
func table(w io.Writer, key, val string, m map[string]int64) {
	if len(m) == 0 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	t := tablewriter.NewWriter(w)
	t.Header(key, val)
	for _, k := range keys {
		t.Append(k, fmt.Sprint(m[k]))
	}
	t.Render()
	fmt.Fprintln(w)
}
