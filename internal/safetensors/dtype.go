package safetensors

import "math"

// DType is a safetensors element type, spelled as in the header ("F32", "BF16", ...).
type DType string

// The element types this package reads and writes. The names are the header's.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	F64  DType = "F64"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"
	U16  DType = "U16"
	U32  DType = "U32"
	U64  DType = "U64"

	F8E5M2 DType = "F8_E5M2"
	F8E4M3 DType = "F8_E4M3"
	F8E8M0 DType = "F8_E8M0"
	C64    DType = "C64"
)

// dtypeInfo gives each known dtype its size and its rank in the Rust crate's Dtype enum
// (huggingface/safetensors, safetensors/src/tensor.rs: BOOL, F4, F6_E2M3, F6_E3M2, U8, I8,
// F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32,
// C64, F64, I64, U64). The writer orders tensors by that rank, descending, as the crate's
// prepare() does, so the ranks must keep the enum's order; the gaps are the sub-byte and
// FNUZ types, which this package does not handle (their size is not a whole byte count or
// they are too rare to matter).
var dtypeInfo = map[DType]struct{ size, rank int }{
	Bool:   {1, 0},
	U8:     {1, 4},
	I8:     {1, 5},
	F8E5M2: {1, 6},
	F8E4M3: {1, 7},
	F8E8M0: {1, 8},
	I16:    {2, 11},
	U16:    {2, 12},
	F16:    {2, 13},
	BF16:   {2, 14},
	I32:    {4, 15},
	U32:    {4, 16},
	F32:    {4, 17},
	C64:    {8, 18},
	F64:    {8, 19},
	I64:    {8, 20},
	U64:    {8, 21},
}

// Size is the number of bytes per element, 0 for a dtype this package does not know.
func (d DType) Size() int { return dtypeInfo[d].size }

// Known reports whether d is a dtype this package reads and writes.
func (d DType) Known() bool { _, ok := dtypeInfo[d]; return ok }

// BF16FromFloat32 rounds f to the nearest bfloat16, ties to even, as PyTorch's
// c10::BFloat16 does (round_to_nearest_even); a NaN becomes the canonical quiet NaN 0x7FC0
// as there, so that merged weights match torch's .to(torch.bfloat16) bit for bit.
// Values past the largest bfloat16 round to ±Inf.
func BF16FromFloat32(f float32) uint16 {
	if f != f {
		return 0x7FC0
	}
	b := math.Float32bits(f)
	b += 0x7FFF + (b>>16)&1
	return uint16(b >> 16)
}

// Float32FromBF16 widens a bfloat16 exactly.
func Float32FromBF16(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }
