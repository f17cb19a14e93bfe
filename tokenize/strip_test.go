package tokenize

import "testing"

func TestPyStrip(t *testing.T) {
	// Python 3.11: [hex(c) for c in range(0x110000) if chr(c).isspace()].
	pySpace := []rune{0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
		0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
		0x2028, 0x2029, 0x202f, 0x205f, 0x3000}
	isPy := make(map[rune]bool)
	for _, r := range pySpace {
		isPy[r] = true
		if got := pyStrip(string(r) + "x" + string(r)); got != "x" {
			t.Errorf("pyStrip does not strip U+%04X: %q", r, got)
		}
	}
	for r := rune(0); r < 0x3100; r++ {
		if isPy[r] {
			continue
		}
		if got := pyStrip(string(r)); got == "" {
			t.Errorf("pyStrip strips U+%04X, which Python's str.strip keeps", r)
		}
	}
	for _, r := range []rune{0x180e, 0x200b, 0xfeff} {
		if got := pyStrip(string(r)); got == "" {
			t.Errorf("pyStrip strips U+%04X, which Python's str.strip keeps", r)
		}
	}
}
