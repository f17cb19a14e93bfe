//go:build daulet

package bpe

import (
	"slices"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// TestDauletAgrees: Hugging Face tokenizers (Rust) and the pure-Go BPE give the same ids and
// the same decoding, in both modes, on the goldens and the Nexus texts.
func TestDauletAgrees(t *testing.T) {
	d, err := NewDaulet(shared.Path(t, "tokenizers", "mistral-7b-v0.3", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var texts []string
	for _, c := range loadGolden(t).Cases {
		texts = append(texts, c.Text)
	}
	texts = append(texts, nexusTexts(t, 0)...)
	for _, spm := range []bool{false, true} {
		ours := mistral(t, "tokenizer.json", spm)
		d.SetSPM(spm)
		for _, s := range texts {
			for _, first := range []bool{true, false} {
				got, want := d.AppendText(nil, s, first), ours.AppendText(nil, s, first)
				if !slices.Equal(got, want) {
					t.Fatalf("spm=%v first=%v %q:\n daulet %v\n ours   %v", spm, first, abbrevText(s), got, want)
				}
			}
		}
	}
	hf := mistral(t, "tokenizer.json", false)
	for _, s := range texts {
		ids := hf.AppendText(nil, s, true)
		if got, want := d.Decode(ids), hf.Decode(ids); got != want {
			t.Fatalf("decode %q: daulet %q, ours %q", abbrevText(s), got, want)
		}
	}
}
