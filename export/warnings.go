package export

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Warning is one thing about a finished run that a user should hear before training on it:
// the run succeeded, but what it wrote may not be what they meant.
type Warning struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Warning codes.
const (
	// WarnNoRows: no row was written (every row rejected, or an empty input).
	WarnNoRows = "no_rows_written"
	// WarnSingleLabel: every written example has the same label. KTO then trains one side
	// of its loss only, the suggested weights mean nothing, and label statistics (report's
	// shortcuts) have no second class to compare with.
	WarnSingleLabel = "single_label"
	// WarnRejected: more than RejectWarnFrac of the rows read were rejected.
	WarnRejected = "many_rejected"
	// WarnBatchesMissLabel: in a split, most KTO batches hold no example of one label.
	WarnBatchesMissLabel = "batches_missing_label"
)

// RejectWarnFrac is the rejected fraction above which a run warns.
const RejectWarnFrac = 0.10

// rejectFlags names, per reject reason, what would have kept such rows; reasons not listed
// are data errors only fixing the input can keep.
func rejectFlags(m *Manifest, reason string) string {
	switch reason {
	case "too_long":
		maxLen := m.Config.MaxLen
		if m.Config.Truncate != "keep-end" {
			return fmt.Sprintf("a larger --max-len (now %d) keeps them; --truncate keep-end keeps those whose completion fits", maxLen)
		}
		return fmt.Sprintf("a larger --max-len (now %d) would keep them (--truncate keep-end never cuts a completion)", maxLen)
	case "line_too_long":
		n := m.Config.MaxLineBytes
		return fmt.Sprintf("a larger --max-line-bytes (now %d) would read them", n)
	case "missing_label":
		return "--missing-label desirable|undesirable would keep them"
	case "drop_last":
		return "without --drop-last they are kept"
	}
	return ""
}

// ComputeWarnings returns the warnings the manifest's counts call for, in a fixed order:
// no rows, rejected fraction, single label, batches missing a label. It reads only the
// manifest, so it can be asked of any finished run (report does, for manifests written
// before warnings existed).
func ComputeWarnings(m *Manifest) []Warning {
	var out []Warning
	add := func(code, format string, args ...any) {
		out = append(out, Warning{Code: code, Message: fmt.Sprintf(format, args...)})
	}
	c := m.Counts
	if c.Written == 0 {
		if c.Read == 0 {
			add(WarnNoRows, "no rows written: the inputs hold no rows")
		} else {
			add(WarnNoRows, "no rows written: all %d rows read were rejected (%s)", c.Read, topReasons(m, 3))
		}
	}
	if c.Read > 0 && c.Written > 0 && float64(c.Rejected) > RejectWarnFrac*float64(c.Read) {
		add(WarnRejected, "%d of %d rows (%.1f%%) were rejected: %s", c.Rejected, c.Read,
			100*float64(c.Rejected)/float64(c.Read), topReasons(m, 3))
	}
	var labels LabelCounts
	for _, sc := range c.Splits {
		labels.Desirable += sc.Desirable
		labels.Undesirable += sc.Undesirable
	}
	single := c.Written > 0 && (labels.Desirable == 0 || labels.Undesirable == 0)
	if single {
		which, other := "desirable", "undesirable"
		if labels.Desirable == 0 {
			which, other = other, which
		}
		add(WarnSingleLabel, "every example is %s (%d), none %s: KTO learns from the contrast, so it trains one side of its loss only; the suggested weights and report's label shortcuts mean nothing here",
			which, labels.Desirable+labels.Undesirable, other)
	}
	if !single {
		for _, split := range sortedSplits(m.KTO.Splits) {
			b := m.KTO.Splits[split]
			for _, miss := range []struct {
				label string
				n     int64
			}{{"desirable", b.NoDesirable}, {"undesirable", b.NoUndesirable}} {
				if b.Batches > 0 && 2*miss.n > b.Batches {
					add(WarnBatchesMissLabel, "%s: %d of %d KTO batches hold no %s example (%d desirable, %d undesirable in the split, --kto-batch-size %d): the labels are too unbalanced to mix in most batches",
						split, miss.n, b.Batches, miss.label, b.Desirable, b.Undesirable, m.KTO.BatchSize)
				}
			}
		}
	}
	return out
}

// topReasons lists the n commonest reject reasons with their counts and, where a flag would
// have kept those rows, the flag.
func topReasons(m *Manifest, n int) string {
	type rc struct {
		reason string
		n      int64
	}
	var rs []rc
	for r, k := range m.Counts.Reasons {
		rs = append(rs, rc{r, k})
	}
	slices.SortFunc(rs, func(a, b rc) int {
		if a.n != b.n {
			return cmp.Compare(b.n, a.n)
		}
		return strings.Compare(a.reason, b.reason)
	})
	var parts []string
	for i, r := range rs {
		if i == n {
			parts = append(parts, fmt.Sprintf("%d other reasons", len(rs)-n))
			break
		}
		s := fmt.Sprintf("%s %d", r.reason, r.n)
		if f := rejectFlags(m, r.reason); f != "" {
			s += " (" + f + ")"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "no reasons recorded"
	}
	return strings.Join(parts, "; ")
}

func sortedSplits[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
