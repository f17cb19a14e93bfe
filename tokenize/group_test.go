package tokenize

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/loader"
)

// TestGroupOfStreams: GroupOf hashes exactly the text strings.Join(strings.Fields(
// strings.ToLower(s)), " ") of each field, as it did before it stopped building it.
func TestGroupOfStreams(t *testing.T) {
	ref := func(msgs []loader.Message) uint64 {
		h := uint64(14695981039346656037)
		add := func(s string) {
			for _, b := range []byte(strings.Join(strings.Fields(strings.ToLower(s)), " ")) {
				h = (h ^ uint64(b)) * 1099511628211
			}
			h = (h ^ 0xff) * 1099511628211
		}
		for i := 0; i < len(msgs)-1; i++ {
			m := &msgs[i]
			if m.Role == "system" {
				continue
			}
			add(m.Role)
			add(m.Text())
			for _, tc := range m.ToolCalls {
				add(tc.Name)
				add(string(tc.Arguments))
			}
		}
		if h == 0 {
			h = 1
		}
		return h
	}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []rune("aB Z\t\n\u00a0\u2003ÉßİΣ漢\u0085x\x00\u1680🙂")
	str := func() string {
		var b strings.Builder
		for range rng.IntN(30) {
			b.WriteRune(alphabet[rng.IntN(len(alphabet))])
		}
		if rng.IntN(10) == 0 {
			b.WriteString("\xff") // invalid UTF-8: ToLower writes U+FFFD
		}
		return b.String()
	}
	for k := 0; k < 3000; k++ {
		u, a, tr := str(), str(), str()
		msgs := []loader.Message{
			{Role: "user", Content: &u},
			{Role: "assistant", ToolCalls: []loader.ToolCall{loader.ToolCall{ID: "abcDEF123", Name: str()}.WithArguments([]byte(`{"x": "` + str() + `"}`))}},
			{Role: "tool", Content: &tr, ToolCallID: "abcDEF123"},
			{Role: "assistant", Content: &a},
		}
		if got, want := GroupOf(msgs), ref(msgs); got != want {
			t.Fatalf("case %d: GroupOf %x, reference %x (%q %q)", k, got, want, u, tr)
		}
	}
}
