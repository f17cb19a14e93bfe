package safetensors

import (
	"math"
	"testing"
)

func TestBF16FromFloat32(t *testing.T) {
	cases := []struct {
		name string
		bits uint32 // the float32
		want uint16
	}{
		{"1.0", 0x3F800000, 0x3F80},
		{"-1.0", 0xBF800000, 0xBF80},
		{"+0", 0, 0},
		{"-0", 0x80000000, 0x8000},
		{"+Inf", 0x7F800000, 0x7F80},
		{"-Inf", 0xFF800000, 0xFF80},
		{"pi rounds down", math.Float32bits(math.Pi), 0x4049}, // 0x40490FDB
		{"below half rounds down", 0x3F807FFF, 0x3F80},
		{"half, even below: stays", 0x3F808000, 0x3F80},
		{"half, odd below: rounds up to even", 0x3F818000, 0x3F82},
		{"above half rounds up", 0x3F808001, 0x3F81},
		{"negative half to even", 0xBF818000, 0xBF82},
		{"carry into the exponent", 0x3FFF8000, 0x4000},
		{"largest float32 overflows to Inf", 0x7F7FFFFF, 0x7F80},
		{"largest bfloat16 stays", 0x7F7F0000, 0x7F7F},
		{"just below the overflow tie", 0x7F7F7FFF, 0x7F7F},
		{"subnormal tie to even zero", 0x00008000, 0x0000},
		{"subnormal tie to even up", 0x00018000, 0x0002},
		{"smallest subnormal to zero", 0x00000001, 0x0000},
		{"quiet NaN", 0x7FC00000, 0x7FC0},
		{"NaN whose top bits are zero stays NaN, not Inf", 0x7F800001, 0x7FC0},
		{"negative NaN", 0xFFC00001, 0x7FC0},
	}
	for _, c := range cases {
		if got := BF16FromFloat32(math.Float32frombits(c.bits)); got != c.want {
			t.Errorf("%s: BF16FromFloat32(%#08x) = %#04x, want %#04x", c.name, c.bits, got, c.want)
		}
	}
}

// TestBF16Widening: every bfloat16 widens exactly and narrows back to itself (NaNs to a NaN).
func TestBF16Widening(t *testing.T) {
	if got := Float32FromBF16(0x3F80); got != 1 {
		t.Errorf("Float32FromBF16(0x3F80) = %v", got)
	}
	if got := Float32FromBF16(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("Float32FromBF16(0x8000) = %v, want -0", got)
	}
	for b := range 1 << 16 {
		f := Float32FromBF16(uint16(b))
		if math.Float32bits(f) != uint32(b)<<16 {
			t.Fatalf("Float32FromBF16(%#04x) = %#08x", b, math.Float32bits(f))
		}
		back := BF16FromFloat32(f)
		if f != f {
			if Float32FromBF16(back) == Float32FromBF16(back) {
				t.Fatalf("NaN %#04x narrowed to non-NaN %#04x", b, back)
			}
			continue
		}
		if back != uint16(b) {
			t.Fatalf("%#04x round trips to %#04x", b, back)
		}
	}
}
