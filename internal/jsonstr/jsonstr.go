// Package jsonstr is the module's one JSON string codec: Decode, the strict decoder that the
// loader's fast row path and the template's Python-JSON parser share, and Append /
// AppendASCII, the encoders that write strings as Python's json.dumps does (ensure_ascii
// False, which is also serde_json's escaping, and True), for the template, safetensors
// headers and index files, and the synthetic rows.
//
// It imports only the standard library; any package of the module may import it.
package jsonstr

import (
	"bytes"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// Error is a malformed string literal: Msg says what (in the words tokenize's parse errors
// use) and Off is the offset in the literal where the decoder stood when it found it.
type Error struct {
	Off int
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("%s at byte %d of the string", e.Msg, e.Off) }

func fail(off int, format string, args ...any) *Error {
	return &Error{Off: off, Msg: fmt.Sprintf(format, args...)}
}

// Decode decodes the JSON string literal that starts at b[0] == '"' and returns its value
// and the literal's length in b (what follows it is not read). It is strict where
// encoding/json is lenient: invalid UTF-8, a control character, a bad escape and a lone
// UTF-16 surrogate (which no UTF-8 text can carry) are errors, never U+FFFD. A high
// surrogate followed by an escaped low one is one character, as in Python and encoding/json.
func Decode(b []byte) (string, int, error) {
	if len(b) == 0 || b[0] != '"' {
		return "", 0, fail(0, "not a string")
	}
	// Fast path: the first quote ends the string, with no escape or control character before
	// it (IndexByte is vectorized; most strings in rows are plain).
	q := bytes.IndexByte(b[1:], '"') + 1
	if q > 0 {
		s := b[1:q]
		if bytes.IndexByte(s, '\\') < 0 && !hasControl(s) {
			if !utf8.Valid(s) {
				return "", 0, fail(q, "invalid UTF-8 in a string")
			}
			return string(s), q + 1, nil
		}
	}
	// Sized for the text up to the first quote: b may run on far past the string.
	out := make([]byte, 0, q)
	i := 1
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			i++
			if !utf8.Valid(out) {
				return "", 0, fail(i, "invalid UTF-8 in a string")
			}
			return string(out), i, nil
		case c < 0x20:
			return "", 0, fail(i, "control character %#x in a string", c)
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		i++ // backslash
		if i >= len(b) {
			break
		}
		e := b[i]
		i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(b[i:])
			if !ok {
				return "", 0, fail(i, "invalid \\u escape")
			}
			i += 4
			if utf16.IsSurrogate(r) {
				if r < 0xdc00 && i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
					if r2, ok := hex4(b[i+2:]); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
						out = utf8.AppendRune(out, utf16.DecodeRune(r, r2))
						i += 6
						continue
					}
				}
				return "", 0, fail(i, "lone UTF-16 surrogate \\u%04x", r)
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", 0, fail(i, "invalid escape \\%c", e)
		}
	}
	return "", 0, fail(len(b), "unterminated string")
}

func hasControl(s []byte) bool {
	for _, c := range s {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// hex4 reads four hex digits.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

const hexDigits = "0123456789abcdef"

// Append appends s quoted as Python's json.dumps(ensure_ascii=False) writes it
// (json.encoder.ESCAPE_DCT), which is also how serde_json writes strings: '"' and '\\'
// escaped, \b \f \n \r \t by name, the other characters below U+0020 as \u00xx in
// lower-case hex, everything else (U+007F, U+2028, invalid UTF-8 bytes) as is.
func Append(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		b = appendEscape(b, rune(c))
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendASCII appends s quoted as Python's json.dumps(ensure_ascii=True) writes it: as
// Append, and every character outside ' '..'~' as \uxxxx (lower-case hex; UTF-16 surrogate
// pairs above the BMP).
func AppendASCII(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r < 0x20 || r == '"' || r == '\\':
			b = appendEscape(b, r)
		case r <= '~':
			b = append(b, byte(r))
		case r > 0xFFFF:
			r -= 0x10000
			b = appendU(b, 0xD800|(r>>10)&0x3FF)
			b = appendU(b, 0xDC00|r&0x3FF)
		default:
			b = appendU(b, r)
		}
	}
	return append(b, '"')
}

// appendEscape escapes one of '"', '\\' or a character below U+0020.
func appendEscape(b []byte, r rune) []byte {
	switch r {
	case '"', '\\':
		return append(b, '\\', byte(r))
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return appendU(b, r)
}

func appendU(b []byte, r rune) []byte {
	return append(b, '\\', 'u', hexDigits[r>>12&0xF], hexDigits[r>>8&0xF], hexDigits[r>>4&0xF], hexDigits[r&0xF])
}
