package train

import (
	"fmt"
	"os"
	"strings"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
)

// NewBackend creates a GomlX backend from a config string ("" → $GOMLX_BACKEND → "go").
// A "go" config that names neither an ops_ mode nor a parallelism gets
// "parallelism=-1,ops_parallel": independent ops of a graph (the targets' and the KL pairs'
// LM heads, the two operands' gradients of a product) run at once, which on two cores made a
// tiny-preset step on Nexus batches 1.4× faster than running ops one after another, with
// bit-identical results (each op computes the same way in either mode). SimpleGo's default,
// parallel ops under a worker pool of NumCPU, hung at 0% CPU on a 2-core machine (the pool
// waiting on itself); an unlimited pool leaves the scheduling to GOMAXPROCS. A config with a
// parallelism but no ops_ mode gets ops_sequential, for the same reason. Backends not
// compiled in (xla without -tags xla) are an error, not a panic.
func NewBackend(config string) (b backends.Backend, err error) {
	if config == "" {
		config = os.Getenv(backends.ConfigEnvVar)
	}
	config = backendConfig(config)
	// SimpleGo prints its parallelism setting on stdout, which belongs to --json output.
	stdout := os.Stdout
	os.Stdout = os.Stderr
	defer func() { os.Stdout = stdout }()
	if perr := catchPanic(func() { b, err = backends.NewWithConfig(config) }); perr != nil {
		name, _, _ := strings.Cut(config, ":")
		return nil, fmt.Errorf("%w: backend %q: %v (compiled in: %v; XLA needs `go build -tags xla`)",
			ErrBadOption, name, perr, backends.List())
	}
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", config, err)
	}
	return b, nil
}

// backendConfig completes a backend config as NewBackend says.
func backendConfig(config string) string {
	if config == "" {
		config = simplego.BackendName
	}
	name, opts, _ := strings.Cut(config, ":")
	if name != simplego.BackendName || strings.Contains(opts, "ops_") {
		return config
	}
	mode := ",ops_sequential"
	if !strings.Contains(opts, "parallelism") {
		mode = ",parallelism=-1,ops_parallel"
	}
	return simplego.BackendName + ":" + strings.TrimPrefix(opts+mode, ",")
}

// isCPU reports whether b is the pure-Go CPU backend.
func isCPU(b any) bool { _, ok := b.(*simplego.Backend); return ok }
