package gen

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/ktoloader/ktoloader/loader"
)

// TestWrite: Write is deterministic by seed, writes exactly n lines, and its rows have the
// shapes the package promises, as loader reads them: every row valid but about 1 in 2,000,
// labels 1:1, all 12 behaviors, tool calls with string arguments, ids of the wild shapes
// (some the template refuses).
func TestWrite(t *testing.T) {
	write := func(n int64, seed uint64) string {
		var b bytes.Buffer
		if err := Write(&b, n, seed); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	a := write(3000, 7)
	if b := write(3000, 7); b != a {
		t.Fatal("same seed, different output")
	}
	if c := write(3000, 8); c == a {
		t.Fatal("different seeds, same output")
	}
	if n := bytes.Count([]byte(a), []byte("\n")); n != 3000 {
		t.Fatalf("%d lines, want 3000", n)
	}
	if z := write(0, 7); z != "" {
		t.Errorf("0 rows wrote %d bytes", len(z))
	}
	r, err := loader.NewReader(bytes.NewReader([]byte(a)), "gen", loader.Config{})
	if err != nil {
		t.Fatal(err)
	}
	behaviors := map[string]bool{}
	labels := map[bool]int{}
	bad, calls, stringArgs, badIDs, withSystem := 0, 0, 0, 0, 0
	for {
		row, err := r.Read()
		if err != nil {
			if _, ok := err.(*loader.RowError); ok {
				bad++
				continue
			}
			break
		}
		behaviors[row.Behavior] = true
		labels[row.Label]++
		if row.Messages[0].Role == "system" {
			withSystem++
		}
		for _, m := range row.Messages {
			for _, tc := range m.ToolCalls {
				calls++
				if tc.ArgumentsWasString {
					stringArgs++
				}
				if !regexp.MustCompile(`^[a-zA-Z0-9]{9}$`).MatchString(tc.ID) {
					badIDs++
				}
			}
		}
	}
	if bad > 10 {
		t.Errorf("%d of 3000 rows rejected, want about 1.5", bad)
	}
	if len(behaviors) != 12 {
		t.Errorf("%d behaviors, want 12: %v", len(behaviors), behaviors)
	}
	if d := labels[true] - labels[false]; d < -1-bad || d > 1+bad {
		t.Errorf("labels %v, want 1:1", labels)
	}
	if calls < 1500 || stringArgs < calls*95/100 || badIDs < calls/4 || badIDs > calls*3/4 {
		t.Errorf("%d tool calls, %d with string arguments, %d with ids the template refuses", calls, stringArgs, badIDs)
	}
	if withSystem < 2500 || withSystem > 2900 {
		t.Errorf("%d of 3000 rows have a system prompt, want about 90%%", withSystem)
	}

}
