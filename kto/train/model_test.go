package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

func randomTensor(rng *rand.Rand, dims ...int) *tensors.Tensor {
	n := 1
	for _, d := range dims {
		n *= d
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(rng.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(data, dims...)
}

// TestDotGeneralVJP compares the two-matmul gradient with GomlX's own DotGeneral gradient
// on contractions with batch axes, several contracting axes and out-of-order axes.
func TestDotGeneralVJP(t *testing.T) {
	cases := []struct {
		name                   string
		lhsDims, rhsDims       []int
		lhsC, lhsB, rhsC, rhsB []int
	}{
		{"dense", []int{2, 3, 4}, []int{4, 5}, []int{2}, nil, []int{0}, nil},
		{"weight_grad_like", []int{2, 3, 4}, []int{2, 3, 5}, []int{0, 1}, nil, []int{0, 1}, nil},
		{"attention_scores", []int{2, 5, 3, 2, 4}, []int{2, 6, 3, 4}, []int{4}, []int{0, 2}, []int{3}, []int{0, 2}},
		{"mixed_order", []int{2, 3, 4, 5}, []int{5, 2, 6, 3}, []int{3, 1}, []int{0}, []int{0, 3}, []int{1}},
	}
	backend := testBackend(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lhs, rhs := randomTensor(rng, tc.lhsDims...), randomTensor(rng, tc.rhsDims...)
			var outDims []int
			_ = graph.MustNewExec(backend, func(l, r *graph.Node) *graph.Node {
				out := graph.DotGeneral(l, tc.lhsC, tc.lhsB, r, tc.rhsC, tc.rhsB)
				outDims = out.Shape().Dimensions
				return out
			}).MustExec(lhs, rhs)
			weights := randomTensor(rng, outDims...)
			grads := func(useDot bool) []*tensors.Tensor {
				return graph.MustNewExec(backend, func(l, r, w *graph.Node) []*graph.Node {
					var out *graph.Node
					if useDot {
						out = dot(l, tc.lhsC, tc.lhsB, r, tc.rhsC, tc.rhsB)
					} else {
						out = graph.DotGeneral(l, tc.lhsC, tc.lhsB, r, tc.rhsC, tc.rhsB)
					}
					return graph.Gradient(graph.ReduceAllSum(graph.Mul(out, w)), l, r)
				}).MustExec(lhs, rhs, weights)
			}
			got, want := grads(true), grads(false)
			for i, name := range []string{"lhs", "rhs"} {
				g, w := tensors.MustCopyFlatData[float32](got[i]), tensors.MustCopyFlatData[float32](want[i])
				if !got[i].Shape().Equal(want[i].Shape()) {
					t.Fatalf("d/d%s shape %s, GomlX %s", name, got[i].Shape(), want[i].Shape())
				}
				for j := range g {
					if math.Abs(float64(g[j]-w[j])) > 1e-4*(1+math.Abs(float64(w[j]))) {
						t.Fatalf("d/d%s[%d] = %v, GomlX's gradient %v", name, j, g[j], w[j])
					}
				}
			}
		})
	}
}

// testModelConfig is a model small enough for a float64 reference forward in plain Go, with
// weights large enough (InitializerRange 0.5) that attention and norms matter.
func testModelConfig() ModelConfig {
	return ModelConfig{VocabSize: 23, HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2,
		NumAttentionHeads: 4, NumKeyValueHeads: 2, RMSNormEps: 1e-5, RopeTheta: 10000,
		MaxPositionEmbeddings: 64, InitializerRange: 0.5}
}

// newTestModel initialises cfg in a fresh context and randomises the norm scales, which
// start at one, so the reference sees them used.
func newTestModel(t *testing.T, cfg ModelConfig) *context.Context {
	t.Helper()
	ctx := context.New()
	cfg.InitVariables(ctx, 7)
	rng := rand.New(rand.NewPCG(3, 4))
	for v := range ctx.IterVariables() {
		if v.Shape().Rank() == 1 {
			data := tensors.MustCopyFlatData[float32](v.MustValue())
			for i := range data {
				data[i] = 1 + 0.3*float32(rng.NormFloat64())
			}
			v.MustSetValue(tensors.FromFlatDataAndDimensions(data, len(data)))
		}
	}
	return ctx
}

// refWeights reads a weight as float64 [rows][cols] (or one row for vectors).
func refWeight(ctx *context.Context, scope string) [][]float64 {
	v := ctx.InAbsPath(scope).GetVariable(weightName)
	flat := tensors.MustCopyFlatData[float32](v.MustValue())
	dims := v.Shape().Dimensions
	cols := dims[len(dims)-1]
	out := make([][]float64, len(flat)/cols)
	for i := range out {
		out[i] = make([]float64, cols)
		for j := range cols {
			out[i][j] = float64(flat[i*cols+j])
		}
	}
	return out
}

func matVec(x []float64, w [][]float64) []float64 { // x[in] · w[in][out]
	out := make([]float64, len(w[0]))
	for i, xi := range x {
		for j, wij := range w[i] {
			out[j] += xi * wij
		}
	}
	return out
}

func refRMSNorm(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	inv := 1 / math.Sqrt(ss/float64(len(x))+eps)
	out := make([]float64, len(x))
	for i := range x {
		out[i] = x[i] * inv * w[i]
	}
	return out
}

// refRope rotates one head vector as Hugging Face's apply_rotary_pos_emb: the first half
// pairs with the second, x·cos + rotate_half(x)·sin.
func refRope(x []float64, pos int, theta float64) []float64 {
	hd, half := len(x), len(x)/2
	out := make([]float64, hd)
	for i := range half {
		a := float64(pos) / math.Pow(theta, float64(2*i)/float64(hd))
		c, s := math.Cos(a), math.Sin(a)
		out[i] = x[i]*c - x[i+half]*s
		out[i+half] = x[i+half]*c + x[i]*s
	}
	return out
}

// refTokenLogProbs is an independent float64 forward of one packed row: Mistral's decoder
// with attention restricted to earlier tokens of the same segment (padding sees itself).
func refTokenLogProbs(ctx *context.Context, cfg ModelConfig, ids, pos, seg, labels []int32) []float64 {
	T, hd := len(ids), cfg.headDim()
	group := cfg.NumAttentionHeads / cfg.NumKeyValueHeads
	embed := refWeight(ctx, "/model/embed_tokens")
	h := make([][]float64, T)
	for t := range T {
		h[t] = append([]float64(nil), embed[ids[t]]...)
	}
	for l := range cfg.NumHiddenLayers {
		p := "/model/layers/" + itoa(l)
		q, k, v := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := range T {
			x := refRMSNorm(h[t], refWeight(ctx, p+"/input_layernorm")[0], cfg.RMSNormEps)
			q[t] = matVec(x, refWeight(ctx, p+"/self_attn/q_proj"))
			k[t] = matVec(x, refWeight(ctx, p+"/self_attn/k_proj"))
			v[t] = matVec(x, refWeight(ctx, p+"/self_attn/v_proj"))
			for j := range cfg.NumAttentionHeads {
				copy(q[t][j*hd:], refRope(q[t][j*hd:(j+1)*hd], int(pos[t]), cfg.RopeTheta))
			}
			for j := range cfg.NumKeyValueHeads {
				copy(k[t][j*hd:], refRope(k[t][j*hd:(j+1)*hd], int(pos[t]), cfg.RopeTheta))
			}
		}
		newH := make([][]float64, T)
		for t := range T {
			att := make([]float64, cfg.NumAttentionHeads*hd)
			for j := range cfg.NumAttentionHeads {
				kv := j / group
				var keys []int
				for s := range T {
					if s == t || (s < t && seg[s] == seg[t] && seg[t] != 0) {
						keys = append(keys, s)
					}
				}
				scores := make([]float64, len(keys))
				maxS := math.Inf(-1)
				for i, s := range keys {
					for d := range hd {
						scores[i] += q[t][j*hd+d] * k[s][kv*hd+d]
					}
					scores[i] /= math.Sqrt(float64(hd))
					maxS = math.Max(maxS, scores[i])
				}
				var z float64
				for i := range scores {
					scores[i] = math.Exp(scores[i] - maxS)
					z += scores[i]
				}
				for i, s := range keys {
					for d := range hd {
						att[j*hd+d] += scores[i] / z * v[s][kv*hd+d]
					}
				}
			}
			o := matVec(att, refWeight(ctx, p+"/self_attn/o_proj"))
			res := make([]float64, len(h[t]))
			for i := range res {
				res[i] = h[t][i] + o[i]
			}
			x := refRMSNorm(res, refWeight(ctx, p+"/post_attention_layernorm")[0], cfg.RMSNormEps)
			gate := matVec(x, refWeight(ctx, p+"/mlp/gate_proj"))
			up := matVec(x, refWeight(ctx, p+"/mlp/up_proj"))
			for i := range gate {
				gate[i] = gate[i] / (1 + math.Exp(-gate[i])) * up[i]
			}
			down := matVec(gate, refWeight(ctx, p+"/mlp/down_proj"))
			for i := range res {
				res[i] += down[i]
			}
			newH[t] = res
		}
		h = newH
	}
	out := make([]float64, T)
	for t := range T {
		x := refRMSNorm(h[t], refWeight(ctx, "/model/norm")[0], cfg.RMSNormEps)
		var logits []float64
		if cfg.TieWordEmbeddings {
			logits = make([]float64, len(embed))
			for v, row := range embed {
				for i := range row {
					logits[v] += x[i] * row[i]
				}
			}
		} else {
			logits = matVec(x, refWeight(ctx, "/lm_head"))
		}
		maxL := math.Inf(-1)
		for _, l := range logits {
			maxL = math.Max(maxL, l)
		}
		var z float64
		for _, l := range logits {
			z += math.Exp(l - maxL)
		}
		out[t] = logits[labels[t]] - maxL - math.Log(z)
	}
	return out
}

func itoa(i int) string { return string(rune('0' + i)) }

// rowGroup lays rows of T packed tokens out in blocks of blockSize, scoring every non-padding
// position p with labels[p]. The group's Slots hold each scored entry's row position.
func rowGroup(ids, pos, seg, labels []int32, T, blockSize int) seqGroup {
	b := &Batch{NumRows: len(ids) / T, InputIDs: ids, PositionIDs: pos, SegmentIDs: seg}
	for p, sg := range seg {
		if sg != 0 {
			b.LabelPos = append(b.LabelPos, int32(p))
			b.Labels = append(b.Labels, labels[p])
			b.TargetSlot = append(b.TargetSlot, int32(p))
			b.KLSlot = append(b.KLSlot, -1)
		}
	}
	b.NumLabels = len(b.Labels)
	targets, kls := b.sequences(T)
	if len(kls) != 0 {
		panic("rowGroup: KL sequences")
	}
	return newSeqGroup(targets, blockSize, needDims(targets, blockSize).rounded())
}

// groupLogProbs runs TokenLogProbs on a group and returns the log-prob of each row position
// (NaN where not scored).
func groupLogProbs(t *testing.T, ctx *context.Context, cfg ModelConfig, gr seqGroup, rowLen int) []float64 {
	t.Helper()
	exec := context.MustNewExec(testBackend(t), ctx, func(ctx *context.Context, in []*graph.Node) *graph.Node {
		return cfg.TokenLogProbs(ctx, seqInputs(in))
	})
	got := tensors.MustCopyFlatData[float32](exec.MustExec(groupArgs(&gr)...)[0])
	out := make([]float64, rowLen)
	for i := range out {
		out[i] = math.NaN()
	}
	for i, p := range gr.Slots {
		if p >= 0 {
			out[p] = float64(got[i])
		}
	}
	return out
}

// TestTokenLogProbsMatchReference runs two packed rows through the graph model (in block
// layout) and through refTokenLogProbs: same log-probs at every non-padding position, with
// an untied LM head (Mistral) and with tied embeddings, with blocks of 4 (sequences span up
// to three blocks: cross-block pairs, padding blocks, pairs and labels) and of 32 (one block).
func TestTokenLogProbsMatchReference(t *testing.T) {
	for _, tied := range []bool{false, true} {
		for _, bs := range []int{4, 32} {
			cfg := testModelConfig()
			cfg.TieWordEmbeddings = tied
			name := map[bool]string{false: "untied", true: "tied"}[tied] + "_block" + itoa(bs/4)
			t.Run(name, func(t *testing.T) { testMatchReference(t, cfg, bs) })
		}
	}
}

func testMatchReference(t *testing.T, cfg ModelConfig, blockSize int) {
	ctx := newTestModel(t, cfg)
	const T = 12
	ids := []int32{
		1, 5, 9, 2, 7, 1, 4, 4, 8, 0, 0, 0,
		1, 3, 6, 9, 12, 15, 18, 21, 2, 1, 11, 22,
	}
	seg := []int32{
		1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
	}
	pos := []int32{
		0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 0,
		0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2,
	}
	labels := make([]int32, len(ids))
	for i := range labels {
		labels[i] = ids[(i+1)%len(ids)] // any valid ids: every position is compared
	}
	gr := rowGroup(ids, pos, seg, labels, T, blockSize)
	if blockSize == 4 && (gr.Need.Blocks != 2+1+3+1 || gr.Need.Pairs != 3+1+6+1) {
		t.Fatalf("block layout needs %+v, want 7 blocks and 11 pairs", gr.Need)
	}
	got := groupLogProbs(t, ctx, cfg, gr, len(ids))
	for r := range 2 {
		want := refTokenLogProbs(ctx, cfg, ids[r*T:(r+1)*T], pos[r*T:(r+1)*T], seg[r*T:(r+1)*T], labels[r*T:(r+1)*T])
		for tt := range T {
			if seg[r*T+tt] == 0 {
				continue
			}
			if g := got[r*T+tt]; math.IsNaN(g) || math.Abs(g-want[tt]) > 2e-4*(1+math.Abs(want[tt])) {
				t.Errorf("row %d position %d: log p = %.6f, float64 reference %.6f", r, tt, g, want[tt])
			}
		}
	}
}

// TestPackingIsolation packs the same sequence alone and after another one (positions
// restarting): its log-probs must not change, so no sequence sees another.
func TestPackingIsolation(t *testing.T) {
	cfg := testModelConfig()
	ctx := newTestModel(t, cfg)
	seqA := []int32{1, 4, 8, 15, 16, 2}
	seqB := []int32{1, 9, 9, 3}
	const T = 12
	row := func(parts ...[]int32) (ids, pos, seg, lab []int32) {
		ids, pos, seg, lab = make([]int32, T), make([]int32, T), make([]int32, T), make([]int32, T)
		off := 0
		for s, p := range parts {
			for i, id := range p {
				ids[off+i], pos[off+i], seg[off+i] = id, int32(i), int32(s+1)
				if i+1 < len(p) {
					lab[off+i] = p[i+1]
				}
			}
			off += len(p)
		}
		return
	}
	run := func(ids, pos, seg, lab []int32) []float64 {
		return groupLogProbs(t, ctx, cfg, rowGroup(ids, pos, seg, lab, T, 4), T)
	}
	alone := run(row(seqB))
	packed := run(row(seqA, seqB))
	for i := range len(seqB) - 1 {
		if math.Abs(alone[i]-packed[len(seqA)+i]) > 1e-5 {
			t.Errorf("token %d of the second sequence: %v alone, %v packed after another", i, alone[i], packed[len(seqA)+i])
		}
	}
}
