package pyjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

// Expected values in this file were produced by /usr/bin/python3 (3.11.2) with
// json.dumps(json.loads(input), ensure_ascii=False) and repr(float), run by hand once and
// pasted here: an independent reference, not this package's output.

func TestPyDumps(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"separators", `{"a":1,"b":[true,false,null],"c":{}}`, `{"a": 1, "b": [true, false, null], "c": {}}`},
		{"nested empty", `{"a": [], "b": {}, "c": [1, {"d": null, "e": true, "f": false}]}`, `{"a": [], "b": {}, "c": [1, {"d": null, "e": true, "f": false}]}`},
		{"key order kept", `{"z": 1, "a": 2, "m": 3}`, `{"z": 1, "a": 2, "m": 3}`},
		{"duplicate key: first position, last value", `{"a":1,"b":2,"a":3}`, `{"a": 3, "b": 2}`},
		{"whitespace", " \t\r\n{ \"a\" :\n[ 1 , 2 ] }\n", `{"a": [1, 2]}`},
		{"escapes", `"\u0000\u0001\u001f\u007f\u2028\"\\\/\b\f\n\r\t é😀"`, "\"\\u0000\\u0001\\u001f\u007f\u2028\\\"\\\\/\\b\\f\\n\\r\\t é😀\""},
		{"non-ASCII kept", `{"q": "best \"café\" 東京\nnow", "emoji": "\ud83d\ude00"}`, `{"q": "best \"café\" 東京\nnow", "emoji": "😀"}`},
		{"escaped key", `{"a\"b": "\u00e9"}`, `{"a\"b": "é"}`},
		{"int", `100`, `100`},
		{"minus zero int", `-0`, `0`},
		{"2^53+1 exact", `9007199254740993`, `9007199254740993`},
		{"big int exact", `-12345678901234567890123`, `-12345678901234567890123`},
		{"1e3", `1e3`, `1000.0`},
		{"1e+2", `1e+2`, `100.0`},
		{"1E400 overflows", `1E400`, `Infinity`},
		{"-1e400 overflows", `-1e400`, `-Infinity`},
		{"1e-400 underflows", `1e-400`, `0.0`},
		{"0e10", `0e10`, `0.0`},
		{"-0e0", `-0e0`, `-0.0`},
		{"-0.0", `-0.0`, `-0.0`},
		{"1.0", `1.0`, `1.0`},
		{"100.0e-2", `100.0e-2`, `1.0`},
		{"floats in list", `[2.50, 0.1, 3.14159, 4.35, 2.675]`, `[2.5, 0.1, 3.14159, 4.35, 2.675]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Dumps([]byte(c.in))
			if err != nil {
				t.Fatalf("Dumps(%q): %v", c.in, err)
			}
			if got != c.want {
				t.Errorf("Dumps(%q)\n got %q\nwant %q", c.in, got, c.want)
			}
		})
	}
}

func TestPyDumpsRejects(t *testing.T) {
	cases := []struct{ name, in string }{
		{"NaN", `{"a": NaN}`},
		{"Infinity", `{"a": Infinity}`},
		{"-Infinity", `[-Infinity]`},
		{"lone high surrogate", `"\ud83d"`},
		{"lone low surrogate", `"\ude00"`},
		{"high surrogate then letter", `"\ud83d\u0041"`},
		{"raw control character", "\"a\tb\""},
		{"invalid UTF-8", "\"\xff\""},
		{"leading zero", `01`},
		{"dot without digits", `1.`},
		{"leading dot", `.5`},
		{"plus sign", `+1`},
		{"empty exponent", `1e`},
		{"trailing comma in list", `[1,]`},
		{"trailing comma in object", `{"a":1,}`},
		{"single quotes", `{'a': 1}`},
		{"bad escape", `"\x41"`},
		{"short unicode escape", `"\u12"`},
		{"unterminated string", `"abc`},
		{"unterminated object", `{"a": 1`},
		{"extra data", `{} {}`},
		{"empty", ``},
		{"bare word", `nul`},
		{"int over 4300 digits", strings.Repeat("9", 4301)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Dumps([]byte(c.in))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Dumps(%q) = %q, %v; want an ErrInvalid error", c.in, got, err)
			}
		})
	}
	// 4300 digits is still fine (Python's limit is "more than 4300").
	if _, err := Dumps([]byte(strings.Repeat("9", 4300))); err != nil {
		t.Errorf("4300-digit integer: %v", err)
	}
}

// TestPyFloatRepr: inputs are JSON number literals; wants are Python's json.dumps of
// json.loads(input). The first block is hand-picked edge cases (notation switch points,
// subnormals, rounding); the second holds float64 values from random bit patterns (Python's
// repr of them, used as the literal); the third, random decimal literals.
func TestPyFloatRepr(t *testing.T) {
	cases := []struct{ in, want string }{
		{"1e-7", "1e-07"},
		{"1.5e300", "1.5e+300"},
		{"1e16", "1e+16"},
		{"1e15", "1000000000000000.0"},
		{"0.0001", "0.0001"},
		{"0.00001", "1e-05"},
		{"1e-4", "0.0001"},
		{"1e-5", "1e-05"},
		{"1e-6", "1e-06"},
		{"5e-324", "5e-324"},
		{"123456789012345678.0", "1.2345678901234568e+17"},
		{"0.1", "0.1"},
		{"2.5e-5", "2.5e-05"},
		{"1e22", "1e+22"},
		{"1e21", "1e+21"},
		{"1.7976931348623157e308", "1.7976931348623157e+308"},
		{"1.23e-10", "1.23e-10"},
		{"0.000123", "0.000123"},
		{"1234567890123456.7", "1234567890123456.8"},
		{"12345678901234567.0", "1.2345678901234568e+16"},
		{"9.999999999999999e15", "1e+16"},

		{"-1.989032661366619e+244", "-1.989032661366619e+244"},
		{"7.761117632285041e+178", "7.761117632285041e+178"},
		{"3.980498358697587e-249", "3.980498358697587e-249"},
		{"-1.5432835417340557e+88", "-1.5432835417340557e+88"},
		{"1.3647584518757569e-192", "1.3647584518757569e-192"},
		{"-1.3701135617873088e-206", "-1.3701135617873088e-206"},
		{"-1.7160537630466207e+197", "-1.7160537630466207e+197"},
		{"6.294675241195386e-44", "6.294675241195386e-44"},
		{"1.0613447212142254e-202", "1.0613447212142254e-202"},
		{"4.708325160387546e+207", "4.708325160387546e+207"},
		{"6.387016158513563e-12", "6.387016158513563e-12"},
		{"-9.973130378568733e-246", "-9.973130378568733e-246"},
		{"8.779753225680271e-236", "8.779753225680271e-236"},
		{"-5.795503248498993e-228", "-5.795503248498993e-228"},
		{"-5.988180159386011e+243", "-5.988180159386011e+243"},
		{"-1.306052388527796e-147", "-1.306052388527796e-147"},
		{"-3.51527970626667e-203", "-3.51527970626667e-203"},
		{"4.6678633181812096e-36", "4.6678633181812096e-36"},
		{"-3.0536383926309363e-84", "-3.0536383926309363e-84"},
		{"5.249822308814304e-77", "5.249822308814304e-77"},
		{"-3.953625698224792e-47", "-3.953625698224792e-47"},
		{"-2.72491267476498e-229", "-2.72491267476498e-229"},
		{"1.441484839555994e+304", "1.441484839555994e+304"},
		{"-7.939416668807721e+33", "-7.939416668807721e+33"},
		{"0.024301399287089676", "0.024301399287089676"},
		{"-1.2570882301712172e+37", "-1.2570882301712172e+37"},
		{"1.8721667527122837e+62", "1.8721667527122837e+62"},
		{"3.422978398947072e+302", "3.422978398947072e+302"},

		{"40582433850.76756e-23", "4.058243385076756e-13"},
		{"96.159367e29", "9.6159367e+30"},
		{"41111.081390e18", "4.111108139e+22"},
		{"91133.623241e1", "911336.23241"},
		{"1.606020e13", "16060200000000.0"},
		{"6320.363861e-29", "6.320363861e-26"},
		{"22026.122783", "22026.122783"},
		{"409940.84495e-20", "4.0994084495e-15"},
		{"576129.926295e-22", "5.76129926295e-17"},
		{"37369042.435469e-8", "0.37369042435469"},
		{"1002170858.871464", "1002170858.871464"},
		{"4619.152752e-4", "0.4619152752"},
		{"9383022.417406e-5", "93.83022417406"},
		{"3.170187e-23", "3.170187e-23"},
		{"13618316.643550", "13618316.64355"},
		{"628.155766e10", "6281557660000.0"},
	}
	for _, c := range cases {
		got, err := Dumps([]byte(c.in))
		if err != nil {
			t.Errorf("Dumps(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("Dumps(%q) = %q, Python gives %q", c.in, got, c.want)
		}
	}
	if got := floatRepr(math.Copysign(0, -1)); got != "-0.0" {
		t.Errorf("floatRepr(-0) = %q, want -0.0", got)
	}
}

// FuzzPyDumps: never a panic; encoding/json's verdict agrees except where Python is stricter
// (lone surrogates, integers over 4300 digits, invalid UTF-8); the output is valid JSON
// (unless a float overflowed to Infinity) and a fixed point: dumps(loads(dumps(x))) == dumps(x).
func FuzzPyDumps(f *testing.F) {
	for _, s := range []string{`{"a": 1e3, "b": [-0.0, 9007199254740993, "\u00e9\n"]}`, `[]`, `"\ud83d\ude00"`, `{"a":1,"a":2}`, `1E400`, `-0`, `[1.5e300, 1e-7]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Dumps(data)
		if err != nil {
			if json.Valid(data) && utf8.Valid(data) && !bytes.Contains(data, []byte(`\u`)) && len(data) < maxIntDigits {
				t.Fatalf("Dumps(%q) refused valid JSON: %v", data, err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("Dumps(%q) accepted invalid JSON: %q", data, out)
		}
		if strings.Contains(out, "Infinity") {
			return
		}
		if !json.Valid([]byte(out)) {
			t.Fatalf("Dumps(%q) = %q, not valid JSON", data, out)
		}
		again, err := Dumps([]byte(out))
		if err != nil || again != out {
			t.Fatalf("not a fixed point: %q -> %q -> %q, %v", data, out, again, err)
		}
	})
}
