// Package pyjson reads JSON as Python's json.loads does and writes it back as
// json.dumps(…, ensure_ascii=False) does with the default separators (", " and ": "): the
// chat template's tojson filter (transformers) and the arguments that vLLM and mistral_common
// feed it are Python values, so the bytes the model sees are Python's, not Go's. The loader
// parses tool-call arguments with it once (loader.ToolCall.PyArguments), tokenize renders
// tools lists with it, and the report reads rendered tool calls back with it.
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
//
// It imports only internal/jsonstr (the string codec) and the standard library; any package
// of the module may import it.
package pyjson

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/ktoloader/ktoloader/internal/jsonstr"
)

// ErrInvalid is the cause wrapped by every parse error of this package.
var ErrInvalid = errors.New("invalid JSON")

// maxIntDigits is Python's default int_max_str_digits (3.11+): json.loads refuses longer integers.
const maxIntDigits = 4300

// maxJSONDepth bounds nesting so hostile input cannot exhaust the stack.
const maxJSONDepth = 10000

// Kind is a JSON value's type.
type Kind uint8

// The kinds of Value.
const (
	Null Kind = iota
	Bool
	Number // Text holds the Python rendering of the number
	String // Text holds the decoded string
	Array
	Object
)

// Value is a decoded JSON value that remembers object key order (Go maps do not).
type Value struct {
	Kind  Kind
	Bool  bool
	Text  string
	Items []Value  // array elements, or object values
	Keys  []string // object keys, parallel to Items (each once: see the package comment)
}

// Field returns the value of key in an object.
func (v *Value) Field(key string) (*Value, bool) {
	if v.Kind != Object {
		return nil, false
	}
	for i, k := range v.Keys {
		if k == key {
			return &v.Items[i], true
		}
	}
	return nil, false
}

// Parse decodes data as Python's json.loads would (see the package comment).
func Parse(data []byte) (Value, error) {
	p := pyParser{s: data}
	p.ws()
	v, err := p.value(0)
	if err != nil {
		return Value{}, err
	}
	p.ws()
	if p.i != len(p.s) {
		return Value{}, p.errf("extra data after the value")
	}
	return v, nil
}

// Dumps renders data as Python's json.dumps(json.loads(data), ensure_ascii=False).
func Dumps(data []byte) (string, error) {
	v, err := Parse(data)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	v.Write(&b)
	return b.String(), nil
}

// Write writes v as json.dumps(v, ensure_ascii=False) does.
func (v *Value) Write(b *strings.Builder) {
	switch v.Kind {
	case Null:
		b.WriteString("null")
	case Bool:
		if v.Bool {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case Number:
		b.WriteString(v.Text)
	case String:
		WriteString(b, v.Text)
	case Array:
		b.WriteByte('[')
		for i := range v.Items {
			if i > 0 {
				b.WriteString(", ")
			}
			v.Items[i].Write(b)
		}
		b.WriteByte(']')
	case Object:
		b.WriteByte('{')
		for i := range v.Items {
			if i > 0 {
				b.WriteString(", ")
			}
			WriteString(b, v.Keys[i])
			b.WriteString(": ")
			v.Items[i].Write(b)
		}
		b.WriteByte('}')
	}
}

// WriteString writes s as a JSON string the way Python's encoder does with
// ensure_ascii=False (json.encoder.ESCAPE / ESCAPE_DCT): jsonstr.Append.
func WriteString(b *strings.Builder, s string) {
	var buf [256]byte
	b.Write(jsonstr.Append(buf[:0], s))
}

// floatRepr formats f as Python's repr(float) (and so json.dumps) does.
func floatRepr(f float64) string {
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
	return fmt.Errorf("%w: %s at byte %d", ErrInvalid, fmt.Sprintf(format, args...), p.i)
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

func (p *pyParser) value(depth int) (Value, error) {
	if depth > maxJSONDepth {
		return Value{}, p.errf("nested deeper than %d", maxJSONDepth)
	}
	if p.i >= len(p.s) {
		return Value{}, p.errf("unexpected end of input")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		return Value{Kind: String, Text: s}, err
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case p.lit("true"):
		return Value{Kind: Bool, Bool: true}, nil
	case p.lit("false"):
		return Value{Kind: Bool}, nil
	case p.lit("null"):
		return Value{Kind: Null}, nil
	default:
		return Value{}, p.errf("unexpected character %q", rune(c))
	}
}

func (p *pyParser) lit(word string) bool {
	if len(p.s)-p.i >= len(word) && string(p.s[p.i:p.i+len(word)]) == word {
		p.i += len(word)
		return true
	}
	return false
}

func (p *pyParser) object(depth int) (Value, error) {
	p.i++ // {
	v := Value{Kind: Object}
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
		for j, old := range v.Keys {
			if old == k {
				v.Items[j], dup = val, true
				break
			}
		}
		if !dup {
			v.Keys = append(v.Keys, k)
			v.Items = append(v.Items, val)
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

func (p *pyParser) array(depth int) (Value, error) {
	p.i++ // [
	v := Value{Kind: Array}
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
		v.Items = append(v.Items, val)
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
func (p *pyParser) number() (Value, error) {
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
		return Value{}, p.errf("invalid number")
	}
	intDigits := p.i - intStart
	isFloat := false
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return Value{}, p.errf("invalid number: no digits after '.'")
		}
		isFloat = true
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return Value{}, p.errf("invalid number: no digits in the exponent")
		}
		isFloat = true
	}
	lit := string(p.s[start:p.i])
	if !isFloat {
		if intDigits > maxIntDigits {
			return Value{}, p.errf("integer has %d digits; Python refuses more than %d", intDigits, maxIntDigits)
		}
		if lit == "-0" {
			lit = "0"
		}
		return Value{Kind: Number, Text: lit}, nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return Value{}, p.errf("invalid number %q", lit)
	}
	// Out of range: ParseFloat gives ±Inf (overflow) or ±0 (underflow), as Python's float() does.
	return Value{Kind: Number, Text: floatRepr(f)}, nil
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
