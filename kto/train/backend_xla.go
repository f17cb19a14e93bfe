//go:build xla

package train

// Importing GomlX's XLA backend registers "xla" (PJRT plugins: xla:cuda, xla:cpu, or
// xla:/abs/path/plugin.so). It needs cgo at build time and the PJRT plugin at run time, so
// default builds leave it out and stay pure Go. Build with: go build -tags xla ./cmd/ktoloader
//
// This file re-registers "xla" with a constructor that applies XLAOptions (backend_opts.go):
// no download unless asked, the CUDA plugin found by path or directory, and the CUDA
// client's memory options, which GomlX's registered constructor cannot pass.

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/xla"
)

var (
	xlaMu    sync.Mutex
	xlaState xlaSetup
	xlaErr   error // from the environment at start, reported when a backend is asked for
	// userNoAutoInstall: $GOMLX_NO_AUTO_INSTALL was set before this package set it.
	userNoAutoInstall bool
)

func init() {
	xlaConfigure = applyXLA
	_, userNoAutoInstall = os.LookupEnv(xla.NoAutoInstallEnv)
	home, _ := os.UserHomeDir()
	s, err := planXLA(XLAOptions{}, os.Getenv, home)
	if err != nil {
		xlaErr = err
		// Still no download: the bad variable may be the one that asked for it.
		xla.EnableAutoInstall(false)
	} else {
		_ = applyXLA(s)
	}
	for _, name := range []string{xla.BackendName, "stablehlo", "hlo", "shlo"} {
		backends.Register(name, newXLABackend)
	}
}

// applyXLA sets the environment where unset and keeps s for newXLABackend.
func applyXLA(s xlaSetup) error {
	xlaMu.Lock()
	defer xlaMu.Unlock()
	for k, v := range s.env {
		if _, set := os.LookupEnv(k); set {
			continue
		}
		if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("setting %s: %w", k, err)
		}
	}
	// GomlX reads GOMLX_NO_AUTO_INSTALL once, at its init: set the flag itself.
	xla.EnableAutoInstall(s.opts.AutoInstall && !userNoAutoInstall)
	xlaState, xlaErr = s, nil
	return nil
}

// newXLABackend is the "xla" constructor: config is what follows "xla:" ("cuda", "cpu",
// "/abs/plugin.so", optionally ",opt…").
func newXLABackend(config string) (backends.Backend, error) {
	xlaMu.Lock()
	s, err := xlaState, xlaErr
	xlaMu.Unlock()
	if err != nil {
		return nil, err
	}
	name, rest, _ := strings.Cut(config, ",")
	if rest != "" {
		rest = "," + rest
	}
	if (name == "" || name == "cuda") && s.pluginPath != "" {
		name = s.pluginPath
	}
	var opts map[string]any
	if strings.Contains(strings.ToLower(name), "cuda") {
		opts = s.clientOptions()
	}
	b, err := xla.NewWithOptions(name+rest, opts)
	if err != nil {
		if name == "cuda" || name == "" {
			return nil, fmt.Errorf("%w (no CUDA plugin found: set %s to the plugin or its directory, see docs/GPU.md; downloads are off unless %s=1)",
				err, EnvXLAPlugin, EnvXLAAutoInstall)
		}
		return nil, err
	}
	return b, nil
}
