package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
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

func matVec(x []float64, w [][]float64) []float64 { // x[in] · w[out][in]ᵀ, as nn.Linear
	out := make([]float64, len(w))
	for j, row := range w {
		for i, wji := range row {
			out[j] += x[i] * wji
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

// rowSequences splits rows of T packed tokens into their sequences (segments), scoring
// every position p with labels[p]; a label's slot is its row position p.
func rowSequences(ids, pos, seg, labels []int32, T int) []sequence {
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
	targets, _ := b.sequences(T)
	return targets
}

// layoutLogProbs lays targets and kls out in blocks and runs TokenLogProbs: the log-prob of
// each label, keyed by its slot.
func layoutLogProbs(t *testing.T, ctx *context.Context, cfg ModelConfig, targets, kls []sequence, blockSize int) (batchLayout, map[int32]float64) {
	t.Helper()
	return netLayoutLogProbs(t, ctx, Net{Config: cfg}, targets, kls, blockSize)
}

// netLayoutLogProbs is layoutLogProbs for a Net (a chunked LM head, say).
func netLayoutLogProbs(t *testing.T, ctx *context.Context, net Net, targets, kls []sequence, blockSize int) (batchLayout, map[int32]float64) {
	t.Helper()
	dims := layoutDims{needDims(targets, blockSize).rounded(), needDims(kls, blockSize).rounded()}
	l := newBatchLayout(targets, kls, blockSize, dims)
	exec := context.MustNewExec(testBackend(t), ctx, func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		target, kl := net.TokenLogProbs(ctx, seqInputs(in[inTarget:]), seqInputs(in[inKL:]))
		return []*graph.Node{target, kl}
	})
	outs := exec.MustExec(append(groupArgs(&l.Target), groupArgs(&l.KL)...)...)
	got := map[int32]float64{}
	for i, gr := range []*seqGroup{&l.Target, &l.KL} {
		lp := tensors.MustCopyFlatData[float32](outs[i])
		for j, slot := range gr.Slots {
			if slot >= 0 {
				got[slot] = float64(lp[j])
			}
		}
	}
	return l, got
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
			t.Run(name, func(t *testing.T) { testMatchReference(t, Net{Config: cfg}, bs) })
		}
	}
	// The chunked LM head: chunks of 5 ids (the last of 3) and one chunk of the whole vocabulary.
	for _, chunk := range []int{5, 23} {
		t.Run("head_chunk"+strconv.Itoa(chunk), func(t *testing.T) {
			testMatchReference(t, Net{Config: testModelConfig(), HeadChunk: chunk}, 4)
		})
	}
}

func testMatchReference(t *testing.T, net Net, blockSize int) {
	cfg := net.Config
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
	l, got := netLayoutLogProbs(t, ctx, net, rowSequences(ids, pos, seg, labels, T), nil, blockSize)
	if need := l.Target.Need; blockSize == 4 && (need.Blocks != 2+1+3+1 || need.Pairs != 3+1+6+1) {
		t.Fatalf("block layout needs %+v, want 7 blocks and 11 pairs", need)
	}
	for r := range 2 {
		want := refTokenLogProbs(ctx, cfg, ids[r*T:(r+1)*T], pos[r*T:(r+1)*T], seg[r*T:(r+1)*T], labels[r*T:(r+1)*T])
		for tt := range T {
			if seg[r*T+tt] == 0 {
				continue
			}
			if g, ok := got[int32(r*T+tt)]; !ok || math.Abs(g-want[tt]) > 2e-4*(1+math.Abs(want[tt])) {
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
	run := func(ids, pos, seg, lab []int32) map[int32]float64 {
		_, got := layoutLogProbs(t, ctx, cfg, rowSequences(ids, pos, seg, lab, T), nil, 4)
		return got
	}
	alone := run(row(seqB))
	packed := run(row(seqA, seqB))
	for i := range len(seqB) - 1 {
		if math.Abs(alone[int32(i)]-packed[int32(len(seqA)+i)]) > 1e-5 {
			t.Errorf("token %d of the second sequence: %v alone, %v packed after another", i, alone[int32(i)], packed[int32(len(seqA)+i)])
		}
	}
}

// TestKLPrefixSharing lays out two examples whose KL pairs share their prompts (and, for
// one, the first completion token) with their targets, so the KL group computes only the
// rest and attends to the targets' blocks: every log-prob must still match the float64
// reference run on each sequence alone.
func TestKLPrefixSharing(t *testing.T) {
	cfg := testModelConfig()
	ctx := newTestModel(t, cfg)
	seq := func(example int32, slotBase int32, parts ...[]int32) sequence {
		s := sequence{example: example, target: -1}
		for _, p := range parts {
			s.ids = append(s.ids, p...)
		}
		for i := range s.ids {
			s.pos = append(s.pos, int32(i))
		}
		for i := range len(s.ids) - 1 { // every position but the last scores the next token
			s.labelIdx = append(s.labelIdx, i)
			s.labels = append(s.labels, s.ids[i+1])
			s.slots = append(s.slots, slotBase+int32(i))
		}
		return s
	}
	promptA := []int32{1, 3, 5, 7, 9, 11, 13}
	promptB := []int32{1, 4, 4, 8, 15, 16, 17, 18, 19, 20}
	compA, compB := []int32{6, 7, 2}, []int32{6, 9, 9, 12, 2}
	targets := []sequence{seq(0, 0, promptA, compA), seq(1, 100, promptB, compB)}
	// Each KL pair: the example's prompt with the other example's completion.
	kls := []sequence{seq(0, 200, promptA, compB), seq(1, 300, promptB, compA)}
	sharePrefixes(targets, kls)
	// promptA+compB shares promptA and the first completion token (6) with promptA+compA.
	if kls[0].prefix != len(promptA)+1 || kls[1].prefix != len(promptB)+1 {
		t.Fatalf("shared prefixes %d and %d, want %d and %d", kls[0].prefix, kls[1].prefix, len(promptA)+1, len(promptB)+1)
	}
	l, got := layoutLogProbs(t, ctx, cfg, targets, kls, 4)
	// Own KL tokens: 11−8 = 3 → 1 block, 14−11 = 3 → 1 block.
	if l.KL.Need.Blocks != 2 {
		t.Errorf("KL group needs %d blocks, want 2", l.KL.Need.Blocks)
	}
	for _, s := range append(targets, kls...) {
		ones := make([]int32, len(s.ids))
		labels := make([]int32, len(s.ids))
		for i := range ones {
			ones[i] = 1
			if i+1 < len(s.ids) {
				labels[i] = s.ids[i+1]
			}
		}
		want := refTokenLogProbs(ctx, cfg, s.ids, s.pos, ones, labels)
		for j, slot := range s.slots {
			if g, ok := got[slot]; !ok || math.Abs(g-want[j]) > 2e-4*(1+math.Abs(want[j])) {
				t.Errorf("slot %d: log p = %v (found %v), float64 reference %.6f", slot, g, ok, want[j])
			}
		}
	}
}

// TestBlockAttentionGradient checks the gradient of the targets' summed log-probs, through
// multi-block attention (blocks of 4: pairs combined per query block, padding blocks and
// pairs), against central finite differences of the loss in float32 on a few weights of
// every matrix.
func TestBlockAttentionGradient(t *testing.T) {
	cfg := testModelConfig()
	cfg.InitializerRange = 0.2
	ctx := newTestModel(t, cfg)
	const T = 12
	ids := []int32{1, 3, 6, 9, 12, 15, 18, 21, 2, 1, 11, 22}
	seg := []int32{1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2}
	pos := []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2}
	labels := make([]int32, T)
	for i := range labels {
		labels[i] = ids[(i+5)%T]
	}
	targets := rowSequences(ids, pos, seg, labels, T)
	const bs = 4
	dims := layoutDims{needDims(targets, bs).rounded(), needDims(nil, bs).rounded()}
	l := newBatchLayout(targets, nil, bs, dims)
	args := append(groupArgs(&l.Target), groupArgs(&l.KL)...)
	lossOf := func(ctx *context.Context, in []*graph.Node) *graph.Node {
		target, _ := cfg.TokenLogProbs(ctx, seqInputs(in[inTarget:]), seqInputs(in[inKL:]))
		return graph.ReduceAllSum(target)
	}
	var names []string
	for v := range ctx.IterVariables() {
		names = append(names, v.ScopeAndName())
	}
	gradExec := context.MustNewExec(testBackend(t), ctx, func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		loss := lossOf(ctx, in)
		var wrt []*graph.Node
		for v := range ctx.IterVariables() {
			wrt = append(wrt, v.ValueGraph(loss.Graph()))
		}
		return graph.Gradient(loss, wrt...)
	})
	lossExec := context.MustNewExec(testBackend(t), ctx, func(ctx *context.Context, in []*graph.Node) *graph.Node {
		return lossOf(ctx, in)
	})
	grads := gradExec.MustExec(args...)
	loss := func() float64 { return float64(tensors.ToScalar[float32](lossExec.MustExec(args...)[0])) }
	rng := rand.New(rand.NewPCG(5, 6))
	const eps = 1e-2
	i := 0
	for v := range ctx.IterVariables() {
		g := tensors.MustCopyFlatData[float32](grads[i])
		i++
		for range 3 {
			j := rng.IntN(len(g))
			orig := tensors.MustCopyFlatData[float32](v.MustValue())
			at := func(delta float32) float64 {
				w := slices.Clone(orig)
				w[j] += delta
				v.MustSetValue(tensors.FromFlatDataAndDimensions(w, v.Shape().Dimensions...))
				return loss()
			}
			fd := (at(eps) - at(-eps)) / (2 * eps)
			v.MustSetValue(tensors.FromFlatDataAndDimensions(orig, v.Shape().Dimensions...))
			if math.Abs(fd-float64(g[j])) > 3e-3+3e-2*math.Abs(fd) {
				t.Errorf("%s[%d]: gradient %.5f, finite difference %.5f", v.ScopeAndName(), j, g[j], fd)
			}
		}
	}
	if i != len(names) || i == 0 {
		t.Fatalf("%d gradients for %d variables", i, len(names))
	}
}
