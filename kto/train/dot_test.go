package train

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
)

// TestDotRegistryFreed: the axes dot records live as long as their graph. Building and
// dropping graphs (as every run, shape bucket and test does in one process) must leave the
// registry as it was, not grow it by every DotGeneral node ever built.
func TestDotRegistryFreed(t *testing.T) {
	backend := testBackend(t)
	rng := rand.New(rand.NewPCG(5, 6))
	lhs, rhs := randomTensor(rng, 2, 3, 4), randomTensor(rng, 4, 5)
	settle := func() int {
		n := dotRegistered()
		for range 50 { // cleanups run on their own goroutine after a collection
			runtime.GC()
			runtime.Gosched()
			if n = dotRegistered(); n == 0 {
				break
			}
		}
		return n
	}
	before := settle()
	build := func() *graph.Exec {
		exec := graph.MustNewExec(backend, func(l, r *graph.Node) []*graph.Node {
			out := dot(l, []int{2}, nil, r, []int{0}, nil)
			return graph.Gradient(graph.ReduceAllSum(graph.Mul(out, out)), l, r)
		})
		exec.MustExec(lhs, rhs)
		return exec
	}
	live := build()
	if n := settle(); n <= before {
		t.Fatalf("registry holds %d nodes with a graph alive, %d before: dot did not register", n, before)
	}
	live.Finalize()
	live = nil
	for range 20 {
		build().Finalize()
	}
	if after := settle(); after > before {
		t.Errorf("dot registry holds %d nodes after 20 graphs were dropped, %d before", after, before)
	}
}
