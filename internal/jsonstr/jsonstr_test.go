package jsonstr

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// Decode agrees with encoding/json on every string encoding/json decodes without replacing
// anything, and reports the literal's length.
func TestDecodeMatchesEncodingJSON(t *testing.T) {
	cases := []string{`""`, `"abc"`, `"a\"b\\c\/d"`, `"\b\f\n\r\t"`, `"\u00e9\u4e2d"`, `"\ud83d\ude00x"`,
		`"é中😀"`, `"\u0000"`, `"tail\\"`, `"\uD834\uDD1E"`}
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"a", "é", "😀", `\"`, `\\`, `\n`, `\u0041`, `\ud83d\ude00`, " ", "\u2028", "\x7f"}
	for range 2000 {
		var b strings.Builder
		b.WriteByte('"')
		for range r.IntN(12) {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		b.WriteByte('"')
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		var want string
		if err := json.Unmarshal([]byte(c), &want); err != nil {
			t.Fatalf("%s: encoding/json: %v", c, err)
		}
		got, n, err := Decode([]byte(c + `, "next"`))
		if err != nil || got != want || n != len(c) {
			t.Errorf("Decode(%s) = %q, %d, %v; encoding/json %q, length %d", c, got, n, err, want, len(c))
		}
	}
}

// What encoding/json would replace by U+FFFD (or accept raw), Decode refuses, saying where.
func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct {
		in  string
		off int
		msg string
	}{
		{`"ab`, 3, "unterminated string"},
		{`"ab\`, 4, "unterminated string"},
		{"\"a\x01\"", 2, "control character 0x1 in a string"},
		{`"\x"`, 3, `invalid escape \x`},
		{`"\u12"`, 3, `invalid \u escape`},
		{`"\ud83dx"`, 7, `lone UTF-16 surrogate \ud83d`},
		{`"\ude00\ud83d"`, 7, `lone UTF-16 surrogate \ude00`},
		{`"\ud83d\u0041"`, 7, `lone UTF-16 surrogate \ud83d`},
		{"\"\xff\"", 2, "invalid UTF-8 in a string"},
		{"\"\xff\\n\"", 5, "invalid UTF-8 in a string"},
		{`x`, 0, "not a string"},
	} {
		_, _, err := Decode([]byte(c.in))
		var e *Error
		if !errors.As(err, &e) || e.Off != c.off || e.Msg != c.msg {
			t.Errorf("Decode(%q): %v, want %q at %d", c.in, err, c.msg, c.off)
		}
	}
}

// Append's output is what json.dumps(s, ensure_ascii=False) writes: encoding/json reads it
// back as s, and only '"', '\\' and U+0000..U+001F are escaped (U+007F, U+2028 raw, unlike
// encoding/json); AppendASCII's is all ASCII and reads back as s.
func TestAppend(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\s", "\b\f\n\r\t\x00\x1f", "\x7f\u2028<&>", "é中😀"} {
		for name, enc := range map[string]func([]byte, string) []byte{"Append": Append, "AppendASCII": AppendASCII} {
			out := enc([]byte("x"), s)
			if out[0] != 'x' {
				t.Fatalf("%s did not append", name)
			}
			var back string
			if err := json.Unmarshal(out[1:], &back); err != nil || back != s {
				t.Errorf("%s(%q) = %s: reads back as %q (%v)", name, s, out[1:], back, err)
			}
			body := string(out[2 : len(out)-1])
			if name == "AppendASCII" {
				for i := 0; i < len(body); i++ {
					if body[i] >= utf8.RuneSelf {
						t.Errorf("AppendASCII(%q) = %s: not ASCII", s, body)
						break
					}
				}
				continue
			}
			for _, raw := range []string{"\x7f", "\u2028", "<", "é"} {
				if strings.Contains(s, raw) && !strings.Contains(body, raw) {
					t.Errorf("Append(%q) = %s escapes %q", s, body, raw)
				}
			}
		}
	}
	if got := string(Append(nil, "\b\x01")); got != `"\b\u0001"` {
		t.Errorf(`Append("\b\x01") = %s, want "\b\u0001" (json.encoder.ESCAPE_DCT)`, got)
	}
	if got := string(AppendASCII(nil, "é😀")); got != `"\u00e9\ud83d\ude00"` {
		t.Errorf(`AppendASCII("é😀") = %s, want "\u00e9\ud83d\ude00"`, got)
	}
}
