package bpe

import (
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of sentencepiece_model.proto (ModelProto and its messages) that matter here.
// The file is read with protowire directly: a handful of fields, no generated code.
const (
	spModelPieces     = 1 // repeated SentencePiece
	spModelTrainer    = 2 // TrainerSpec
	spModelNormalizer = 3 // NormalizerSpec

	spPiecePiece = 1 // string
	spPieceScore = 2 // float
	spPieceType  = 3 // enum Type

	spTrainerModelType        = 3  // enum ModelType: UNIGRAM=1 BPE=2 WORD=3 CHAR=4
	spTrainerWhitespaceSuffix = 24 // treat_whitespace_as_suffix
	spTrainerByteFallback     = 35
	spTrainerUnkID            = 40
	spTrainerBosID            = 41
	spTrainerEosID            = 42
	spTrainerUnkSurface       = 44

	spNormName         = 1 // string
	spNormCharsmap     = 2 // bytes
	spNormDummyPrefix  = 3 // bool, default true
	spNormRemoveSpaces = 4 // bool, default true
	spNormEscapeSpaces = 5 // bool, default true
	spNormRuleTSV      = 6 // string
)

// SentencePiece piece types.
const (
	spNormal      = 1
	spUnknown     = 2
	spControl     = 3
	spUserDefined = 4
	spUnused      = 5
	spByte        = 6
)

const spBPE = 2

// parseModelProto reads a serialized SentencePiece ModelProto and reduces it to a model with
// SentencePiece's BPE semantics: every pair of pieces whose concatenation is a normal piece may
// merge, with that piece's score as priority.
func parseModelProto(data []byte) (*model, error) {
	m := &model{format: "sentencepiece", addDummyPrefix: true, bos: 1, eos: 2, unk: 0}
	var scores []float32
	var trainer, norm []byte
	err := eachField(data, "ModelProto", func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch num {
		case spModelPieces:
			if typ != protowire.BytesType {
				return malformed("pieces", "wire type %d", typ)
			}
			p, score, kind, err := parsePiece(v, len(m.pieces))
			if err != nil {
				return err
			}
			m.pieces = append(m.pieces, p)
			scores = append(scores, score)
			m.kinds = append(m.kinds, kind)
		case spModelTrainer:
			if typ != protowire.BytesType {
				return malformed("trainer_spec", "wire type %d", typ)
			}
			trainer = append(trainer, v...) // repeated occurrences of a message field merge
		case spModelNormalizer:
			if typ != protowire.BytesType {
				return malformed("normalizer_spec", "wire type %d", typ)
			}
			norm = append(norm, v...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	modelType, byteFallback := uint64(1), false // proto defaults: UNIGRAM, no byte fallback
	err = eachField(trainer, "trainer_spec", func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		isVarint := typ == protowire.VarintType
		switch num {
		case spTrainerModelType:
			modelType = x
		case spTrainerWhitespaceSuffix:
			if isVarint && x != 0 {
				return unsupported("trainer_spec.treat_whitespace_as_suffix", "true")
			}
		case spTrainerByteFallback:
			byteFallback = x != 0
		case spTrainerUnkID:
			m.unk = int32(x)
		case spTrainerBosID:
			m.bos = int32(x)
		case spTrainerEosID:
			m.eos = int32(x)
		case spTrainerUnkSurface:
			if typ != protowire.BytesType {
				return malformed("trainer_spec.unk_surface", "wire type %d", typ)
			}
			m.unkSurface = string(v)
			return nil
		default:
			return nil
		}
		if !isVarint {
			return malformed(fmt.Sprintf("trainer_spec field %d", num), "wire type %d", typ)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if modelType != spBPE {
		return nil, unsupported("trainer_spec.model_type", "%d (only BPE = 2)", modelType)
	}
	if !byteFallback {
		return nil, unsupported("trainer_spec.byte_fallback", "false")
	}

	removeSpaces, escapeSpaces := true, true
	err = eachField(norm, "normalizer_spec", func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case spNormName:
			if name := string(v); name != "identity" && name != "" {
				return unsupported("normalizer_spec.name", "%q (only identity)", name)
			}
		case spNormCharsmap:
			if len(v) > 0 {
				return unsupported("normalizer_spec.precompiled_charsmap", "a normalization map is present")
			}
		case spNormRuleTSV:
			if len(v) > 0 {
				return unsupported("normalizer_spec.normalization_rule_tsv", "custom rules")
			}
		case spNormDummyPrefix:
			m.addDummyPrefix = x != 0
		case spNormRemoveSpaces:
			removeSpaces = x != 0
		case spNormEscapeSpaces:
			escapeSpaces = x != 0
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if removeSpaces {
		return nil, unsupported("normalizer_spec.remove_extra_whitespaces", "true")
	}
	if !escapeSpaces {
		return nil, unsupported("normalizer_spec.escape_whitespaces", "false")
	}
	if int(m.unk) >= 0 && int(m.unk) < len(m.kinds) && m.kinds[m.unk] != kindUnknown {
		return nil, malformed("trainer_spec.unk_id", "piece %d is not of type UNKNOWN", m.unk)
	}

	var normal []int32
	index := make(map[string]int32, len(m.pieces))
	for id, p := range m.pieces {
		if m.kinds[id] == kindNormal {
			if _, dup := index[p]; dup {
				return nil, malformed(fmt.Sprintf("pieces[%d]", id), "duplicate piece %q", p)
			}
			index[p] = int32(id)
			normal = append(normal, int32(id))
		}
	}
	rank := rankByScore(scores, normal)
	m.merges = make(map[uint64]mergeRule, 2*len(normal))
	for _, id := range normal {
		p := m.pieces[id]
		for k := len(string(firstRune(p))); k < len(p); {
			l, lok := index[p[:k]]
			r, rok := index[p[k:]]
			if lok && rok {
				m.merges[pairKey(l, r)] = mergeRule{rank: rank[id], id: id}
			}
			_, w := utf8.DecodeRuneInString(p[k:])
			k += w
		}
	}
	if err := m.finish(); err != nil {
		return nil, err
	}
	return m, nil
}

func firstRune(s string) rune {
	r, _ := utf8.DecodeRuneInString(s)
	return r
}

func parsePiece(b []byte, idx int) (piece string, score float32, kind pieceKind, err error) {
	typ := uint64(spNormal)
	field := fmt.Sprintf("pieces[%d]", idx)
	err = eachField(b, field, func(num protowire.Number, wt protowire.Type, v []byte, x uint64) error {
		switch num {
		case spPiecePiece:
			if wt != protowire.BytesType {
				return malformed(field+".piece", "wire type %d", wt)
			}
			piece = string(v)
		case spPieceScore:
			if wt != protowire.Fixed32Type {
				return malformed(field+".score", "wire type %d", wt)
			}
			score = math.Float32frombits(uint32(x))
			if score != score {
				return malformed(field+".score", "NaN")
			}
		case spPieceType:
			if wt != protowire.VarintType {
				return malformed(field+".type", "wire type %d", wt)
			}
			typ = x
		}
		return nil
	})
	if err != nil {
		return "", 0, 0, err
	}
	switch typ {
	case spNormal:
		kind = kindNormal
	case spUnknown:
		kind = kindUnknown
	case spControl:
		kind = kindControl
	case spByte:
		kind = kindByte
	case spUserDefined, spUnused:
		return "", 0, 0, unsupported(field+".type", "%d (user-defined and unused pieces are not implemented)", typ)
	default:
		return "", 0, 0, malformed(field+".type", "unknown piece type %d", typ)
	}
	return piece, score, kind, nil
}

// eachField walks the fields of one protobuf message, handing each value to fn: v holds the
// bytes of a length-delimited field, x the value of a varint or fixed-width field.
func eachField(b []byte, what string, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed(what, "bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return malformed(what, "field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
