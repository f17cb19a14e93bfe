// Package lmhead computes a language model's head on the host, outside the GomlX graph:
// the log-probability of each position's label, log softmax(x·Wᵀ)[label], and its
// gradients with respect to the states x and the head W, for the CPU trainer.
//
// The head is most of a small model's training step (the tiny preset's [positions × 32768]
// logits are ~70% of it), and the CPU backend's matrix product is a scalar loop. Here the
// products run through one AVX2/FMA micro-kernel (a Go loop on other CPUs), over
// vocabulary blocks, so the [positions × vocab] logits are never stored: the forward pass
// keeps a running maximum and sum of exponentials per position, and the backward pass
// recomputes each block's logits from x and W.
//
// Results do not depend on the number of goroutines: work is split into fixed position
// chunks (forward, input gradient) or vocabulary blocks (head gradient), each summed in one
// order. Float32 throughout, as the graph's head; the sums of exponentials are float64
// across blocks.
//
// It imports nothing of this module; kto/train alone uses it.
package lmhead

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

const (
	rows   = 6   // positions per kernel call
	panel  = 16  // vocabulary ids (or state columns) per kernel call
	vBlock = 240 // vocabulary ids per block: a multiple of rows and panel
	pChunk = 48  // positions per forward / input-gradient work item: a multiple of rows
)

// Head is an LM head weight W [vocab, d] (row v: token v's output embedding), with a copy
// packed for the logits' kernel: panels of 16 ids, [d][16] each, zero past the vocabulary.
type Head struct {
	w         []float32
	vocab, d  int
	packed    []float32
	numPanels int
}

// Supported reports whether a head of width d can run here: the kernels take the state in
// columns of 16.
func Supported(d int) bool { return d > 0 && d%panel == 0 }

// NewHead packs w [vocab·d] (row-major). w is read, not copied: it must not change while
// the Head is in use.
func NewHead(w []float32, vocab, d int) (*Head, error) {
	if !Supported(d) || vocab <= 0 || len(w) != vocab*d {
		return nil, fmt.Errorf("lmhead: head [%d, %d] with %d values (the width must be a positive multiple of %d)", vocab, d, len(w), panel)
	}
	h := &Head{w: w, vocab: vocab, d: d, numPanels: (vocab + panel - 1) / panel}
	h.packed = make([]float32, h.numPanels*d*panel)
	parallel(h.numPanels, func(p int) {
		dst := h.packed[p*d*panel : (p+1)*d*panel]
		for j := range panel {
			v := p*panel + j
			if v >= vocab {
				break
			}
			row := w[v*d : (v+1)*d]
			for k, x := range row {
				dst[k*panel+j] = x
			}
		}
	})
	return h, nil
}

// padded copies x [n·d] into a zero-padded [n rounded up to rows, d].
func (h *Head) padded(x []float32, n int) []float32 {
	np := (n + rows - 1) / rows * rows
	out := make([]float32, np*h.d)
	copy(out, x[:n*h.d])
	return out
}

func (h *Head) check(x []float32, labels []int32, outs ...[]float32) int {
	n := len(labels)
	if len(x) != n*h.d {
		panic(fmt.Sprintf("lmhead: %d states of width %d for %d labels", len(x), h.d, n))
	}
	for _, o := range outs {
		if len(o) != n {
			panic(fmt.Sprintf("lmhead: an output of %d for %d labels", len(o), n))
		}
	}
	for i, l := range labels {
		if l < 0 || int(l) >= h.vocab {
			panic(fmt.Sprintf("lmhead: label %d of position %d outside the vocabulary of %d", l, i, h.vocab))
		}
	}
	return n
}

// logitsTile sets tile [g·rows, vBlock] (row stride vBlock) to the logits of the g·rows
// padded positions starting at xp[0] for the ids of vocabulary block b; it returns the
// block's valid ids.
func (h *Head) logitsTile(tile, xp []float32, g, b int) int {
	v0 := b * vBlock
	nv := min(vBlock, h.vocab-v0)
	np := (nv + panel - 1) / panel
	clear(tile[:g*rows*vBlock])
	d := h.d
	for gi := range g {
		xa := xp[gi*rows*d:]
		for p := range np {
			gemm6x16(d, xa, d, h.packed[(v0/panel+p)*d*panel:], panel, tile[gi*rows*vBlock+p*panel:], vBlock)
		}
	}
	return nv
}

func (h *Head) numBlocks() int { return (h.vocab + vBlock - 1) / vBlock }

// LogProbs sets logp[i] = log softmax(x_i·Wᵀ)[labels[i]] and lse[i] = logsumexp(x_i·Wᵀ)
// for the states x [n·d].
func (h *Head) LogProbs(x []float32, labels []int32, logp, lse []float32) {
	n := h.check(x, labels, logp, lse)
	if n == 0 {
		return
	}
	d := h.d
	xp := h.padded(x, n)
	overChunks(n, func(tile []float32, c0, cn, g int) {
		var m [pChunk]float32
		var s [pChunk]float64
		for r := range cn {
			m[r] = float32(math.Inf(-1))
		}
		for b := range h.numBlocks() {
			nv := h.logitsTile(tile, xp[c0*d:], g, b)
			for r := range cn {
				row := tile[r*vBlock : r*vBlock+nv]
				bm := row[0]
				for _, v := range row[1:] {
					bm = max(bm, v)
				}
				if bm > m[r] {
					s[r] *= math.Exp(float64(m[r] - bm))
					m[r] = bm
				}
				s[r] += float64(expShift(row, row, m[r], 1))
			}
		}
		for r := range cn {
			i := c0 + r
			l := float32(float64(m[r]) + math.Log(s[r]))
			lse[i] = l
			logp[i] = h.labelLogit(x[i*d:(i+1)*d], labels[i]) - l
		}
	})
}

// labelLogit is x·W[label], summed in float64.
func (h *Head) labelLogit(x []float32, label int32) float32 {
	w := h.w[int(label)*h.d : (int(label)+1)*h.d]
	var s float64
	for k, v := range x {
		s += float64(v) * float64(w[k])
	}
	return float32(s)
}

// Backward sets dx [n·d] to the gradient of Σ_i g_i·logp_i with respect to x, and, when dw
// is not nil, dw [vocab·d] to its gradient with respect to W; lse is LogProbs' output:
//
//	dx_i = g_i·W[label_i] − Σ_v q_iv·W_v,   dW_v = Σ_{i: label_i = v} g_i·x_i − Σ_i q_iv·x_i,
//
// with q_iv = g_i·softmax(x_i·Wᵀ)_v, recomputed block by block.
func (h *Head) Backward(x []float32, labels []int32, lse, g, dx, dw []float32) {
	n := h.check(x, labels, lse, g)
	d := h.d
	if len(dx) != n*d || (dw != nil && len(dw) != h.vocab*d) {
		panic(fmt.Sprintf("lmhead: gradient buffers of %d and %d for %d states and a [%d, %d] head", len(dx), len(dw), n, h.vocab, d))
	}
	if n == 0 {
		clear(dw)
		return
	}
	xp := h.padded(x, n)
	np := len(xp) / d
	gp := make([]float32, np)
	lp := make([]float32, np)
	copy(gp, g)
	copy(lp, lse)

	// dx: per position chunk, Σ_v q_iv·W_v over the vocabulary blocks in order.
	acc := make([]float32, np*d)
	overChunks(n, func(tile []float32, c0, _, g int) {
		for b := range h.numBlocks() {
			nv := h.logitsTile(tile, xp[c0*d:], g, b)
			h.softmaxWeights(tile, gp[c0:], lp[c0:], g*rows, nv)
			v0 := b * vBlock
			for gi := range g {
				for k0 := 0; k0 < d; k0 += panel {
					gemm6x16(nv, tile[gi*rows*vBlock:], vBlock, h.w[v0*d+k0:], d, acc[(c0+gi*rows)*d+k0:], d)
				}
			}
		}
	})
	for i := range n {
		w := h.w[int(labels[i])*d : (int(labels[i])+1)*d]
		for k := range d {
			dx[i*d+k] = g[i]*w[k] - acc[i*d+k]
		}
	}
	if dw == nil {
		return
	}

	// dW: per vocabulary block, −Σ_i q_iv·x_i with the block's q transposed to [ids, positions].
	type scratch struct{ tile, qt, out []float32 }
	bufs := sync.Pool{New: func() any {
		return &scratch{tile: make([]float32, rows*vBlock), qt: make([]float32, vBlock*np), out: make([]float32, vBlock*d)}
	}}
	parallel(h.numBlocks(), func(b int) {
		sc := bufs.Get().(*scratch)
		defer bufs.Put(sc)
		var nv int
		for c0 := 0; c0 < np; c0 += rows {
			nv = h.logitsTile(sc.tile, xp[c0*d:], 1, b)
			h.softmaxWeights(sc.tile, gp[c0:], lp[c0:], rows, nv)
			for r := range rows {
				for j, q := range sc.tile[r*vBlock : r*vBlock+nv] {
					sc.qt[j*np+c0+r] = q
				}
			}
		}
		clear(sc.out)
		for j0 := 0; j0 < nv; j0 += rows {
			for k0 := 0; k0 < d; k0 += panel {
				gemm6x16(np, sc.qt[j0*np:], np, xp[k0:], d, sc.out[j0*d+k0:], d)
			}
		}
		v0 := b * vBlock
		for j := range nv * d {
			dw[v0*d+j] = -sc.out[j]
		}
	})
	for i := range n {
		row := dw[int(labels[i])*d : (int(labels[i])+1)*d]
		for k := range d {
			row[k] += g[i] * x[i*d+k]
		}
	}
}

// softmaxWeights turns the logits tile's first nr rows into q = g·exp(logit − lse) over the
// block's nv ids; rows of g 0 (padding) become 0.
func (h *Head) softmaxWeights(tile, g, lse []float32, nr, nv int) {
	for r := range nr {
		row := tile[r*vBlock : r*vBlock+nv]
		gr := g[r]
		if gr == 0 {
			clear(row)
			continue
		}
		expShift(row, row, lse[r], gr)
	}
}

// overChunks runs fn in parallel over the chunks of pChunk positions of n: c0 the first,
// cn how many, g the kernel row groups covering them; tile is a [pChunk, vBlock] scratch
// the call owns.
func overChunks(n int, fn func(tile []float32, c0, cn, g int)) {
	tiles := sync.Pool{New: func() any { s := make([]float32, pChunk*vBlock); return &s }}
	parallel((n+pChunk-1)/pChunk, func(ci int) {
		tp := tiles.Get().(*[]float32)
		defer tiles.Put(tp)
		c0 := ci * pChunk
		cn := min(pChunk, n-c0)
		fn(*tp, c0, cn, (cn+rows-1)/rows)
	})
}

// parallel runs fn(0…n−1) on up to GOMAXPROCS goroutines.
func parallel(n int, fn func(int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}
