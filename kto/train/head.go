package train

import (
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// The chunked LM head (Net.HeadChunk > 0). Autodiff of logit[label] − logsumexp(x·Wᵀ) keeps
// the [C, vocab] logits (or their exponentials) for the backward pass: 4.3 GB of float32 for a
// 7B batch's 33k scored positions. The chunked head computes the log-sum-exp over vocabulary
// chunks of HeadChunk ids, combining the chunks' maxima and sums exactly, and its gradient
// recomputes each chunk's logits from x and W in the backward pass:
//
//	d/dx = g ⊙ W[label] − Σ_k (g ⊙ softmax_k)·W_k,  d/dW_k = scatter(g ⊙ x at label) − (g ⊙ softmax_k)ᵀ·x
//
// so only one [C, HeadChunk] block lives at a time, for the price of one more product with the
// head over the positions that get a gradient.
//
// GomlX v0.26 has custom gradients only for an identity of one node
// (graph.IdentityWithCustomGradient), so the head's two inputs travel packed as one:
// z = Identity(Concatenate(x, W)) with the custom gradient, and the log-probs are
// StopGradient(value) + (G − StopGradient(G)), G = z[c, 0] gathered per position. That term
// is exactly zero (a − a), so the value is the chunked computation's bit for bit, and its
// gradient puts the log-probs' adjoint g[c] at z[c, 0], where the custom gradient reads it.

// chunkedLabelLogProbs is labelLogProbs' tail for x [C, d] (normed states at the scored
// positions), head [vocab, d] and labels [C]: log p(labels) [C] float32. headTrainable false
// skips the head's gradient (a LoRA run's frozen head).
func (n Net) chunkedLabelLogProbs(x, head, labels *graph.Node, headTrainable bool) *graph.Node {
	g := x.Graph()
	nl := x.Shape().Dimensions[0]
	vocab := head.Shape().Dimensions[0]
	chunk := min(n.HeadChunk, vocab)
	labelIdx := graph.Reshape(graph.ConvertDType(labels, dtypes.Int32), nl, 1)
	xs, hs := graph.StopGradient(x), graph.StopGradient(head)
	rowIdx := graph.Reshape(graph.Iota(g, shapes.Make(dtypes.Int32, nl), 0), nl, 1)
	type part struct {
		lo, hi int
		w      *graph.Node
	}
	var parts []part
	for lo := 0; lo < vocab; lo += chunk {
		hi := min(lo+chunk, vocab)
		parts = append(parts, part{lo, hi, graph.Slice(hs, graph.AxisRange(lo, hi))})
	}

	// Forward: per chunk the row maximum and the sum of exponentials below it.
	maxes, sums := make([]*graph.Node, len(parts)), make([]*graph.Node, len(parts))
	var picked *graph.Node
	for k, p := range parts {
		logits := n.matmul(xs, p.w) // [C, hi-lo]
		m := graph.ReduceAndKeep(logits, graph.ReduceMax, -1)
		sums[k] = graph.ReduceSum(graph.Exp(graph.Sub(logits, m)), -1)
		maxes[k] = graph.Reshape(m, nl)
		if n.computeDType() != dtypes.Float32 {
			// The picked logit must be the one inside the log-sum-exp, rounded the same way.
			in := graph.LogicalAnd(graph.GreaterOrEqual(labelIdx, graph.Scalar(g, dtypes.Int32, p.lo)),
				graph.LessThan(labelIdx, graph.Scalar(g, dtypes.Int32, p.hi)))
			col := graph.Where(in, graph.SubScalar(labelIdx, p.lo), graph.ZerosLike(labelIdx))
			v := graph.Reshape(graph.Gather(logits, graph.Concatenate([]*graph.Node{rowIdx, col}, 1)), nl)
			v = graph.Where(graph.Reshape(in, nl), v, graph.ZerosLike(v))
			if picked == nil {
				picked = v
			} else {
				picked = graph.Add(picked, v)
			}
		}
	}
	var lse *graph.Node
	if len(parts) == 1 {
		// One chunk: the plain head's operations exactly.
		lse = graph.Add(graph.Log(sums[0]), maxes[0])
	} else {
		top := maxes[0]
		for _, m := range maxes[1:] {
			top = graph.Max(top, m)
		}
		var total *graph.Node
		for k := range parts {
			t := graph.Mul(sums[k], graph.Exp(graph.Sub(maxes[k], top)))
			if total == nil {
				total = t
			} else {
				total = graph.Add(total, t)
			}
		}
		lse = graph.Add(graph.Log(total), top)
	}
	if picked == nil {
		rows := toF32(graph.Gather(hs, labelIdx))
		picked = graph.ReduceSum(graph.Mul(xs, rows), -1)
	}
	value := graph.StopGradient(graph.Sub(picked, lse))

	packed := x
	if headTrainable {
		packed = graph.Concatenate([]*graph.Node{x, toF32(head)}, 0)
	}
	z := graph.IdentityWithCustomGradient(packed, func(_, v *graph.Node) *graph.Node {
		col0 := graph.Concatenate([]*graph.Node{rowIdx, graph.ZerosLike(rowIdx)}, 1)
		adj := graph.Reshape(graph.Gather(v, col0), nl, 1) // g [C, 1]
		lseCol := graph.Reshape(lse, nl, 1)
		var dx *graph.Node
		var dws []*graph.Node
		for _, p := range parts {
			logits := n.matmul(xs, p.w)
			q := graph.Mul(graph.Exp(graph.Sub(logits, lseCol)), adj) // g ⊙ softmax, [C, hi-lo]
			wf := toF32(p.w)
			t := dot(q, []int{1}, nil, wf, []int{0}, nil) // [C, d]
			if dx == nil {
				dx = t
			} else {
				dx = graph.Add(dx, t)
			}
			if headTrainable {
				dws = append(dws, dot(q, []int{0}, nil, xs, []int{0}, nil)) // [hi-lo, d]
			}
		}
		rows := toF32(graph.Gather(hs, labelIdx)) // [C, d]
		dx = graph.Sub(graph.Mul(rows, adj), dx)
		if !headTrainable {
			return dx
		}
		dw := dws[0]
		if len(dws) > 1 {
			dw = graph.Concatenate(dws, 0)
		}
		dw = graph.ScatterSum(graph.Neg(dw), labelIdx, graph.Mul(xs, adj), false, false)
		return graph.Concatenate([]*graph.Node{dx, dw}, 0)
	})
	col0 := graph.Concatenate([]*graph.Node{rowIdx, graph.ZerosLike(rowIdx)}, 1)
	gathered := graph.Reshape(graph.Gather(z, col0), nl)
	return graph.Add(value, graph.Sub(gathered, graph.StopGradient(gathered)))
}
