package loader

import (
	"regexp"
	"strconv"
	"strings"
)

// Stats accounts for every row of a run: Read == Valid + Rejected, always.
type Stats struct {
	Read     int64            `json:"read"`
	Valid    int64            `json:"valid"`
	Rejected int64            `json:"rejected"`
	Reasons  map[string]int64 `json:"reasons"`
	Labels   map[string]int64 `json:"labels"`
	// Behaviors counts valid rows per behavior tag ("" is counted as "(none)").
	Behaviors map[string]int64 `json:"behaviors"`
	// BehaviorFields counts where the tag came from: behavior, pattern, category, or (none).
	BehaviorFields map[string]int64 `json:"behavior_fields"`
	Roles          map[string]int64 `json:"roles"`
	// ToolCallIDs counts tool-call id shapes: alnum9 (what Mistral's template accepts),
	// call_, toolu_, other, missing.
	ToolCallIDs    map[string]int64 `json:"tool_call_ids"`
	ToolCalls      int64            `json:"tool_calls"`
	TextWithTools  int64            `json:"assistant_text_with_tools"`
	DefaultedLabel int64            `json:"defaulted_label"`
	BlankLines     int64            `json:"blank_lines"`
}

// NewStats returns empty stats with every map allocated (so JSON shows {} not null).
func NewStats() *Stats {
	return &Stats{
		Reasons: map[string]int64{}, Labels: map[string]int64{"true": 0, "false": 0},
		Behaviors: map[string]int64{}, BehaviorFields: map[string]int64{}, Roles: map[string]int64{},
		ToolCallIDs: map[string]int64{},
	}
}

// Reject counts one rejected row.
func (s *Stats) Reject(reason string) {
	s.Read++
	s.Rejected++
	s.Reasons[reason]++
}

// Accept counts one valid row and what it holds.
func (s *Stats) Accept(r *Row) {
	s.Read++
	s.Valid++
	s.Labels[strconv.FormatBool(r.Label)]++
	if !r.HasLabel {
		s.DefaultedLabel++
	}
	b := r.Behavior
	if b == "" {
		b = "(none)"
	}
	s.Behaviors[b]++
	f := r.BehaviorField
	if f == "" {
		f = "(none)"
	}
	s.BehaviorFields[f]++
	for i := range r.Messages {
		m := &r.Messages[i]
		s.Roles[m.Role]++
		if len(m.ToolCalls) > 0 && m.Content != nil && strings.TrimSpace(*m.Content) != "" {
			s.TextWithTools++
		}
		for _, tc := range m.ToolCalls {
			s.ToolCalls++
			s.ToolCallIDs[IDShape(tc.ID)]++
		}
	}
}

var alnum9 = regexp.MustCompile(`^[A-Za-z0-9]{9}$`)

// IDShape classifies a tool-call id by the forms seen in real data.
func IDShape(id string) string {
	switch {
	case id == "":
		return "missing"
	case alnum9.MatchString(id):
		return "alnum9"
	case len(id) > 5 && id[:5] == "call_":
		return "call_"
	case len(id) > 6 && id[:6] == "toolu_":
		return "toolu_"
	default:
		return "other"
	}
}
