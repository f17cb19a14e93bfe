package train

import (
	"fmt"
	"os"
	"strings"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
)

// NewBackend creates a GomlX backend from a config string ("" → $GOMLX_BACKEND → "go").
// A "go" config that names no ops_ mode gets ops_sequential: SimpleGo's default mode, which
// runs a graph's ops in parallel when one graph executes, hung at 0% CPU on a 2-core machine
// (its worker pool waiting on itself). Matrix products still use the worker pool, and the
// trainer runs the reference model beside the training step. Backends not compiled in (xla
// without -tags xla) are an error, not a panic.
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
	if name, opts, _ := strings.Cut(config, ":"); name == simplego.BackendName && !strings.Contains(opts, "ops_") {
		config = simplego.BackendName + ":" + strings.TrimPrefix(opts+",ops_sequential", ",")
	}
	return config
}
