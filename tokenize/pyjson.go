package tokenize

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/ktoloader/ktoloader/internal/jsonstr"
)

// This file re-serializes JSON text exactly as Python's json.dumps(json.loads(text),
// ensure_ascii=False) does with the default separators (", " and ": "): the chat template's
// tojson filter (transformers) and the arguments that vLLM and mistral_common feed it are
// Python values, so the bytes the model sees are Python's, not Go's.
//
// What Python does, and so what this does:
//   - objects keep their key order; a repeated key keeps the position of its first occurrence
//     and the value of its last (dict assignment);
//   - strings escape only `"`, `\` and U+0000..U+001F (\n \r \t \b \f by name, the rest as
//     \u00XX in lower-case hex); everything else, U+007F and U+2028 included, is written raw;
//   - an integer (no fraction, no exponent) keeps its digits exactly, whatever its size (but
//     "-0" is 0, and more than 4300 digits is a ValueError in Python ≥ 3.11);
//   - any other number becomes a float64 written as repr(): shortest round-trip digits, fixed
//     notation with ".0" for exponents -4 ≤ e < 16 (1e3 → 1000.0), otherwise 1e-07, 1.5e+300;
//     an overflow (1e400) is written Infinity, as json.dumps does;
//   - NaN, Infinity and -Infinity are refused as input (ref_render.py refuses them too: they
//     are not JSON), as are lone UTF-16 surrogates (a Python str may hold one, but no UTF-8
//     text, and so no tokenizer input, can).

// errPyJSON is the cause wrapped by every parse error of this file.
var errPyJSON = errors.New("invalid JSON")

// maxIntDigits is Python's default int_max_str_digits (3.11+): json.loads refuses longer integers.
const maxIntDigits = 4300

// maxJSONDepth bounds nesting so hostile input cannot exhaust the stack.
const maxJSONDepth = 10000

type jsonKind uint8

const (
	jsonNull jsonKind = iota
	jsonBool
	jsonNumber // text holds the Python rendering of the number
	jsonString // text holds the decoded string
	jsonArray
	jsonObject
)

// jsonValue is a decoded JSON value that remembers object key order (Go maps do not).
type jsonValue struct {
	kind  jsonKind
	b     bool
	text  string
	items []jsonValue // array elements, or object values
	keys  []string    // object keys, parallel to items
}

// field returns the value of key in an object.
func (v *jsonValue) field(key string) (*jsonValue, bool) {
	if v.kind != jsonObject {
		return nil, false
	}
	for i, k := range v.keys {
		if k == key {
			return &v.items[i], true
		}
	}
	return nil, false
}

// parsePyJSON decodes data as Python's json.loads would (see the file comment).
func parsePyJSON(data []byte) (jsonValue, error) {
	p := pyParser{s: data}
	p.ws()
	v, err := p.value(0)
	if err != nil {
		return jsonValue{}, err
	}
	p.ws()
	if p.i != len(p.s) {
		return jsonValue{}, p.errf("extra data after the value")
	}
	return v, nil
}

// pyDumps renders data as Python's json.dumps(json.loads(data), ensure_ascii=False).
func pyDumps(data []byte) (string, error) {
	v, err := parsePyJSON(data)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	v.writePy(&b)
	return b.String(), nil
}

// writePy writes v as json.dumps(v, ensure_ascii=False) does.
func (v *jsonValue) writePy(b *strings.Builder) {
	switch v.kind {
	case jsonNull:
		b.WriteString("null")
	case jsonBool:
		if v.b {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case jsonNumber:
		b.WriteString(v.text)
	case jsonString:
		writePyString(b, v.text)
	case jsonArray:
		b.WriteByte('[')
		for i := range v.items {
			if i > 0 {
				b.WriteString(", ")
			}
			v.items[i].writePy(b)
		}
		b.WriteByte(']')
	case jsonObject:
		b.WriteByte('{')
		for i := range v.items {
			if i > 0 {
				b.WriteString(", ")
			}
			writePyString(b, v.keys[i])
			b.WriteString(": ")
			v.items[i].writePy(b)
		}
		b.WriteByte('}')
	}
}

// writePyString writes s as a JSON string the way Python's encoder does with
// ensure_ascii=False (json.encoder.ESCAPE / ESCAPE_DCT): jsonstr.Append.
func writePyString(b *strings.Builder, s string) {
	var buf [256]byte
	b.Write(jsonstr.Append(buf[:0], s))
}

// pyFloatRepr formats f as Python's repr(float) (and so json.dumps) does.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case math.IsNaN(f):
		return "NaN"
	}
	// Shortest round-trip digits, as Python's repr (David Gay's dtoa, mode 0) produces.
	e := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX
	neg := e[0] == '-'
	if neg {
		e = e[1:]
	}
	mant, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(mant, ".", "", 1)
	decpt := exp + 1 // value = 0.digits × 10^decpt

	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	// Python's float_repr_style "short": exponent notation when decpt <= -4 or decpt > 16.
	if decpt <= -4 || decpt > 16 {
		b.WriteString(digits[:1])
		if len(digits) > 1 {
			b.WriteByte('.')
			b.WriteString(digits[1:])
		}
		b.WriteByte('e')
		x := decpt - 1
		if x < 0 {
			b.WriteByte('-')
			x = -x
		} else {
			b.WriteByte('+')
		}
		if x < 10 {
			b.WriteByte('0')
		}
		b.WriteString(strconv.Itoa(x))
		return b.String()
	}
	switch {
	case decpt <= 0:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", -decpt))
		b.WriteString(digits)
	case decpt >= len(digits):
		b.WriteString(digits)
		b.WriteString(strings.Repeat("0", decpt-len(digits)))
		b.WriteString(".0")
	default:
		b.WriteString(digits[:decpt])
		b.WriteByte('.')
		b.WriteString(digits[decpt:])
	}
	return b.String()
}

// pyParser is a strict RFC 8259 parser (what json.loads accepts, minus NaN/Infinity).
type pyParser struct {
	s []byte
	i int
}

func (p *pyParser) errf(format string, args ...any) error {
	return fmt.Errorf("%w: %s at byte %d", errPyJSON, fmt.Sprintf(format, args...), p.i)
}

func (p *pyParser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *pyParser) value(depth int) (jsonValue, error) {
	if depth > maxJSONDepth {
		return jsonValue{}, p.errf("nested deeper than %d", maxJSONDepth)
	}
	if p.i >= len(p.s) {
		return jsonValue{}, p.errf("unexpected end of input")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		return jsonValue{kind: jsonString, text: s}, err
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case p.lit("true"):
		return jsonValue{kind: jsonBool, b: true}, nil
	case p.lit("false"):
		return jsonValue{kind: jsonBool}, nil
	case p.lit("null"):
		return jsonValue{kind: jsonNull}, nil
	default:
		return jsonValue{}, p.errf("unexpected character %q", rune(c))
	}
}

func (p *pyParser) lit(word string) bool {
	if len(p.s)-p.i >= len(word) && string(p.s[p.i:p.i+len(word)]) == word {
		p.i += len(word)
		return true
	}
	return false
}

func (p *pyParser) object(depth int) (jsonValue, error) {
	p.i++ // {
	v := jsonValue{kind: jsonObject}
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return v, nil
	}
	for {
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return v, p.errf("expected a string key")
		}
		k, err := p.str()
		if err != nil {
			return v, err
		}
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return v, p.errf("expected ':'")
		}
		p.i++
		p.ws()
		val, err := p.value(depth + 1)
		if err != nil {
			return v, err
		}
		// A repeated key keeps its first position and takes the new value, as a dict does.
		dup := false
		for j, old := range v.keys {
			if old == k {
				v.items[j], dup = val, true
				break
			}
		}
		if !dup {
			v.keys = append(v.keys, k)
			v.items = append(v.items, val)
		}
		p.ws()
		if p.i >= len(p.s) {
			return v, p.errf("unexpected end of input in an object")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return v, nil
		default:
			return v, p.errf("expected ',' or '}'")
		}
	}
}

func (p *pyParser) array(depth int) (jsonValue, error) {
	p.i++ // [
	v := jsonValue{kind: jsonArray}
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return v, nil
	}
	for {
		p.ws()
		val, err := p.value(depth + 1)
		if err != nil {
			return v, err
		}
		v.items = append(v.items, val)
		p.ws()
		if p.i >= len(p.s) {
			return v, p.errf("unexpected end of input in a list")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return v, nil
		default:
			return v, p.errf("expected ',' or ']'")
		}
	}
}

// number reads -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)? (json.scanner.NUMBER_RE) and renders it
// as Python would: int for no fraction and no exponent, float otherwise.
func (p *pyParser) number() (jsonValue, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	intStart := p.i
	switch {
	case p.i < len(p.s) && p.s[p.i] == '0':
		p.i++
	case p.i < len(p.s) && p.s[p.i] >= '1' && p.s[p.i] <= '9':
		p.digits()
	default:
		return jsonValue{}, p.errf("invalid number")
	}
	intDigits := p.i - intStart
	isFloat := false
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return jsonValue{}, p.errf("invalid number: no digits after '.'")
		}
		isFloat = true
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return jsonValue{}, p.errf("invalid number: no digits in the exponent")
		}
		isFloat = true
	}
	lit := string(p.s[start:p.i])
	if !isFloat {
		if intDigits > maxIntDigits {
			return jsonValue{}, p.errf("integer has %d digits; Python refuses more than %d", intDigits, maxIntDigits)
		}
		if lit == "-0" {
			lit = "0"
		}
		return jsonValue{kind: jsonNumber, text: lit}, nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return jsonValue{}, p.errf("invalid number %q", lit)
	}
	// Out of range: ParseFloat gives ±Inf (overflow) or ±0 (underflow), as Python's float() does.
	return jsonValue{kind: jsonNumber, text: pyFloatRepr(f)}, nil
}

func (p *pyParser) digits() int {
	n := 0
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// str reads a JSON string starting at the opening quote and returns its decoded value
// (internal/jsonstr's decoder; its errors say where, as the other parse errors do).
func (p *pyParser) str() (string, error) {
	v, n, err := jsonstr.Decode(p.s[p.i:])
	if err != nil {
		var e *jsonstr.Error
		if !errors.As(err, &e) {
			return "", err
		}
		p.i += e.Off
		return "", p.errf("%s", e.Msg)
	}
	p.i += n
	return v, nil
}
