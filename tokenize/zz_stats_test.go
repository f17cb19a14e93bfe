package tokenize

import (
	"strings"
	"testing"
	"time"
)

func TestZZPathological(t *testing.T) {
	tk := mistral(t, "tokenizer.json", false)
	for name, s := range map[string]string{
		"spaces": strings.Repeat(" ", 1<<20),
		"aaaa":   strings.Repeat("a", 1<<20),
		"digits": strings.Repeat("1234567890", 1<<17),
		"emoji":  strings.Repeat("😀", 1<<18),
		"mixed":  strings.Repeat("ab  \n\t", 1<<18),
		"invalid": strings.Repeat("\xff", 1<<20),
	} {
		t0 := time.Now()
		ids := tk.Encode(s, EncodeOptions{})
		d := time.Since(t0)
		ok := tk.Decode(ids) == strings.TrimPrefix(strings.ReplaceAll(string([]rune(s)), "▁", " "), " ")
		t.Logf("%s: %d bytes -> %d ids in %v roundtrip=%v", name, len(s), len(ids), d, ok)
	}
}
