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

// TestTokenLogProbsMatchReference runs two packed rows through the graph model and through
// refTokenLogProbs: same log-probs at every position, padding included, with an untied LM
// head (Mistral) and with tied embeddings.
func TestTokenLogProbsMatchReference(t *testing.T) {
	for _, tied := range []bool{false, true} {
		cfg := testModelConfig()
		cfg.TieWordEmbeddings = tied
		t.Run(map[bool]string{false: "untied", true: "tied"}[tied], func(t *testing.T) { testMatchReference(t, cfg) })
	}
}

func testMatchReference(t *testing.T, cfg ModelConfig) {
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
	exec := context.MustNewExec(testBackend(t), ctx, func(ctx *context.Context, in []*graph.Node) *graph.Node {
		return cfg.TokenLogProbs(ctx, in[0], in[1], in[2], in[3], in[4])
	})
	shaped := func(x []int32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, 2, T) }
	// Score every position, in reverse order, to exercise the gather.
	labelPos := make([]int32, 2*T)
	revLabels := make([]int32, 2*T)
	for i := range labelPos {
		labelPos[i] = int32(2*T - 1 - i)
		revLabels[i] = labels[labelPos[i]]
	}
	gotRev := tensors.MustCopyFlatData[float32](exec.MustExec(shaped(ids), shaped(pos), shaped(seg), labelPos, revLabels)[0])
	got := make([]float32, 2*T)
	for i, p := range labelPos {
		got[p] = gotRev[i]
	}
	for r := range 2 {
		want := refTokenLogProbs(ctx, cfg, ids[r*T:(r+1)*T], pos[r*T:(r+1)*T], seg[r*T:(r+1)*T], labels[r*T:(r+1)*T])
		for tt := range T {
			if g := float64(got[r*T+tt]); math.Abs(g-want[tt]) > 2e-4*(1+math.Abs(want[tt])) {
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
	exec := context.MustNewExec(testBackend(t), ctx, func(ctx *context.Context, in []*graph.Node) *graph.Node {
		return cfg.TokenLogProbs(ctx, in[0], in[1], in[2], in[3], in[4])
	})
	run := func(ids, pos, seg, lab []int32) []float32 {
		sh := func(x []int32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, 1, T) }
		all := make([]int32, T)
		for i := range all {
			all[i] = int32(i)
		}
		return tensors.MustCopyFlatData[float32](exec.MustExec(sh(ids), sh(pos), sh(seg), all, lab)[0])
	}
	alone := run(row(seqB))
	packed := run(row(seqA, seqB))
	for i := range len(seqB) - 1 {
		if math.Abs(float64(alone[i]-packed[len(seqA)+i])) > 1e-5 {
			t.Errorf("token %d of the second sequence: %v alone, %v packed after another", i, alone[i], packed[len(seqA)+i])
		}
	}
}
