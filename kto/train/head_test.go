package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// TestChunkedHeadEqualsPlain: the chunked LM head (chunks of 5 and 7 ids of 23, the last
// shorter; one chunk of the whole vocabulary; a chunk larger than it) gives the plain head's
// log-probs and the same gradients of Σ w·log p with respect to its input states, the head
// and the final norm, within float32 rounding, untied and tied (the head is the embedding)
// and with a frozen head (a LoRA run's: only the states' gradient). Log-probs and the head's
// gradient are also checked against a float64 computation.
func TestChunkedHeadEqualsPlain(t *testing.T) {
	const n, nl = 9, 7 // states, scored positions
	rng := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct {
		name         string
		tied, frozen bool
	}{{"untied", false, false}, {"tied", true, false}, {"frozen_head", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testModelConfig()
			cfg.TieWordEmbeddings = tc.tied
			ctx := newTestModel(t, cfg)
			headScope := "/lm_head"
			if tc.tied {
				headScope = "/model/embed_tokens"
			}
			head := ctx.InAbsPath(headScope).GetVariable(weightName)
			if tc.frozen {
				head.SetTrainable(false)
			}
			h := randomTensor(rng, n, cfg.HiddenSize)
			pos := []int32{0, 2, 3, 5, 6, 8, 8}
			labels := []int32{0, 22, 4, 5, 17, 9, 21}
			weights := make([]float32, nl)
			for i := range weights {
				weights[i] = float32(rng.NormFloat64())
			}
			run := func(chunk int) (lp []float32, grads [][]float32) {
				net := Net{Config: cfg, HeadChunk: chunk}
				outs := context.MustNewExec(testBackend(t), ctx, func(ctx *context.Context, in []*graph.Node) []*graph.Node {
					g := in[0].Graph()
					lp := net.labelLogProbs(ctx, in[0], in[1], in[2])
					loss := graph.ReduceAllSum(graph.Mul(lp, in[3]))
					wrt := []*graph.Node{in[0], weight(ctx, g, "/model/norm")}
					if !tc.frozen {
						wrt = append(wrt, weight(ctx, g, headScope))
					}
					return append([]*graph.Node{lp}, graph.Gradient(loss, wrt...)...)
				}).MustExec(h, tensors.FromFlatDataAndDimensions(pos, nl), tensors.FromFlatDataAndDimensions(labels, nl),
					tensors.FromFlatDataAndDimensions(weights, nl))
				for _, o := range outs[1:] {
					grads = append(grads, tensors.MustCopyFlatData[float32](o))
				}
				return tensors.MustCopyFlatData[float32](outs[0]), grads
			}
			plainLP, plainGrads := run(0)
			for _, chunk := range []int{5, 7, 23, 64} {
				lp, grads := run(chunk)
				for i := range lp {
					if math.Abs(float64(lp[i]-plainLP[i])) > 1e-5*(1+math.Abs(float64(plainLP[i]))) {
						t.Errorf("chunk %d: log p[%d] = %v, plain head %v", chunk, i, lp[i], plainLP[i])
					}
				}
				for k, name := range []string{"states", "norm", "head"}[:len(grads)] {
					for i := range grads[k] {
						if d := math.Abs(float64(grads[k][i] - plainGrads[k][i])); d > 1e-5*(1+math.Abs(float64(plainGrads[k][i]))) {
							t.Fatalf("chunk %d: d/d%s[%d] = %v, plain head %v", chunk, name, i, grads[k][i], plainGrads[k][i])
						}
					}
				}
			}

			// float64: x = RMSNorm(h at pos), log p = x·W[label] − logsumexp(x·Wᵀ),
			// d/dW[v] = Σ_c w_c (1[v = label_c] − softmax_c[v]) x_c.
			hf := tensors.MustCopyFlatData[float32](h)
			normW := refWeight(ctx, "/model/norm")[0]
			headW := refWeight(ctx, headScope)
			d := cfg.HiddenSize
			dW := make([][]float64, cfg.VocabSize)
			for v := range dW {
				dW[v] = make([]float64, d)
			}
			for c := range nl {
				row := make([]float64, d)
				for i := range row {
					row[i] = float64(hf[int(pos[c])*d+i])
				}
				x := refRMSNorm(row, normW, cfg.RMSNormEps)
				logits := matVec(x, headW)
				top := math.Inf(-1)
				for _, l := range logits {
					top = math.Max(top, l)
				}
				var s float64
				for _, l := range logits {
					s += math.Exp(l - top)
				}
				lse := top + math.Log(s)
				want := logits[labels[c]] - lse
				if got := float64(plainLP[c]); math.Abs(got-want) > 1e-4*(1+math.Abs(want)) {
					t.Errorf("log p[%d] = %v, float64 %v", c, got, want)
				}
				for v := range dW {
					coef := -math.Exp(logits[v] - lse)
					if v == int(labels[c]) {
						coef++
					}
					for i := range d {
						dW[v][i] += float64(weights[c]) * coef * x[i]
					}
				}
			}
			if tc.frozen {
				return
			}
			_, grads := run(5)
			for v := range dW {
				for i := range d {
					if got, want := float64(grads[2][v*d+i]), dW[v][i]; math.Abs(got-want) > 1e-4*(1+math.Abs(want)) {
						t.Fatalf("chunk 5: d/dhead[%d][%d] = %v, float64 %v", v, i, got, want)
					}
				}
			}
		})
	}
}
