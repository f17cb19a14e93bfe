package train

import (
	"runtime"
	"slices"
	"sync"
	"weak"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// GomlX v0.26's gradient of DotGeneral multiplies the adjoint by the other operand before
// reducing, which materialises an outer product: for one dense layer on [8,256,128] inputs
// that is an [8,256,128,512] tensor, and a tiny model took 23 s a step on the CPU backend.
// The gradient of a contraction is itself two contractions; dot records the axes of the
// DotGeneral nodes it creates, and dotGeneralVJP, registered in graph.VJPRegistration,
// computes their gradients as two DotGenerals plus a transpose. DotGeneral nodes built
// elsewhere (GomlX's own Einsum, say) keep GomlX's gradient.

// dotAxes are the DotGeneral axes of a node created by dot.
type dotAxes struct {
	lhsContracting, lhsBatch, rhsContracting, rhsBatch []int
}

// dotRegistry holds the axes of the nodes dot made, keyed by weak pointers: an entry lives
// as long as its node (and so its graph) does, and a cleanup deletes it once the node is
// collected. A process that builds graphs for many runs and shapes (tests, score after
// train, shape buckets rebuilt under a small compile cache) keeps only the live ones'.
var (
	dotMu         sync.Mutex
	dotRegistry   = map[weak.Pointer[graph.Node]]dotAxes{}
	dotInstall    sync.Once
	originalDotFn graph.VJP
)

// dotRegistered is how many nodes dotRegistry holds.
func dotRegistered() int {
	dotMu.Lock()
	defer dotMu.Unlock()
	return len(dotRegistry)
}

func forgetDot(key weak.Pointer[graph.Node]) {
	dotMu.Lock()
	delete(dotRegistry, key)
	dotMu.Unlock()
}

// installDotGeneralVJP swaps GomlX's DotGeneral gradient for dotGeneralVJP, once per
// process. It changes nothing for DotGeneral nodes that dot did not create.
func installDotGeneralVJP() {
	dotInstall.Do(func() {
		originalDotFn = graph.VJPRegistration[graph.NodeTypeDotGeneral]
		graph.VJPRegistration[graph.NodeTypeDotGeneral] = dotGeneralVJP
	})
}

// dot is graph.DotGeneral with the two-matmul gradient of dotGeneralVJP. Axes must be
// non-negative. The output axes are: batch axes, then lhs free axes, then rhs free axes.
func dot(lhs *graph.Node, lhsContracting, lhsBatch []int, rhs *graph.Node, rhsContracting, rhsBatch []int) *graph.Node {
	installDotGeneralVJP()
	out := graph.DotGeneral(lhs, lhsContracting, lhsBatch, rhs, rhsContracting, rhsBatch)
	key := weak.Make(out)
	dotMu.Lock()
	dotRegistry[key] = dotAxes{
		lhsContracting: slices.Clone(lhsContracting), lhsBatch: slices.Clone(lhsBatch),
		rhsContracting: slices.Clone(rhsContracting), rhsBatch: slices.Clone(rhsBatch),
	}
	dotMu.Unlock()
	runtime.AddCleanup(out, forgetDot, key)
	return out
}

// freeAxes lists the axes of a rank-r operand that are neither contracted nor batch, in order.
func freeAxes(rank int, contracting, batch []int) []int {
	var free []int
	for a := range rank {
		if !slices.Contains(contracting, a) && !slices.Contains(batch, a) {
			free = append(free, a)
		}
	}
	return free
}

// iotaInts returns [start, start+1, ..., start+n-1].
func iotaInts(start, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = start + i
	}
	return out
}

// dotGeneralVJP is the gradient of out = DotGeneral(lhs, rhs) for nodes made by dot:
// dlhs = DotGeneral(v, rhs) contracting the rhs free axes, drhs = DotGeneral(lhs, v)
// contracting the lhs free axes, each transposed back to its operand's axis order.
func dotGeneralVJP(node *graph.Node, vjps []*graph.Node, outputShape shapes.Shape) []*graph.Node {
	dotMu.Lock()
	ax, ok := dotRegistry[weak.Make(node)]
	dotMu.Unlock()
	if !ok {
		return originalDotFn(node, vjps, outputShape)
	}
	v := vjps[0]
	lhs, rhs := node.Inputs()[0], node.Inputs()[1]
	nb := len(ax.lhsBatch)
	lhsFree := freeAxes(lhs.Rank(), ax.lhsContracting, ax.lhsBatch)
	rhsFree := freeAxes(rhs.Rank(), ax.rhsContracting, ax.rhsBatch)
	vBatch := iotaInts(0, nb)
	vLhsFree := iotaInts(nb, len(lhsFree))
	vRhsFree := iotaInts(nb+len(lhsFree), len(rhsFree))

	var dlhs, drhs *graph.Node
	if needsGradient(lhs) {
		// Layout: [batch, lhs free (from v), rhs contracting axes in rhs order].
		g := graph.DotGeneral(v, vRhsFree, vBatch, rhs, rhsFree, ax.rhsBatch)
		perm := make([]int, lhs.Rank())
		for i, a := range ax.lhsBatch {
			perm[a] = i
		}
		for j, a := range lhsFree {
			perm[a] = nb + j
		}
		for k, ra := range sortedCopy(ax.rhsContracting) {
			perm[ax.lhsContracting[slices.Index(ax.rhsContracting, ra)]] = nb + len(lhsFree) + k
		}
		dlhs = graph.TransposeAllAxes(g, perm...)
	}
	if needsGradient(rhs) {
		// Layout: [batch, lhs contracting axes in lhs order, rhs free (from v)].
		g := graph.DotGeneral(lhs, lhsFree, ax.lhsBatch, v, vLhsFree, vBatch)
		perm := make([]int, rhs.Rank())
		for i, a := range ax.rhsBatch {
			perm[a] = i
		}
		for k, la := range sortedCopy(ax.lhsContracting) {
			perm[ax.rhsContracting[slices.Index(ax.lhsContracting, la)]] = nb + k
		}
		for j, a := range rhsFree {
			perm[a] = nb + len(ax.lhsContracting) + j
		}
		drhs = graph.TransposeAllAxes(g, perm...)
	}
	return []*graph.Node{dlhs, drhs}
}

// needsGradient is false for operands no gradient can flow into: constants and
// StopGradient nodes. Skipping them saves a matrix product per attention layer (RoPE's
// rotation matrix) and per token (one-hot masks).
func needsGradient(n *graph.Node) bool {
	return n.Type() != graph.NodeTypeConstant && !n.StopGradient()
}

func sortedCopy(s []int) []int {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
