package train

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// XLA on an offline GPU box. go-xla v0.1.4 as GomlX v0.26 uses it downloads PJRT plugins on
// every backend creation unless told not to (and fails offline even with the CUDA plugin
// present, because it also wants a CPU plugin), finds the CUDA plugin only in a few fixed
// directories, and, when XLA_FLAGS is unset and it finds nvidia/ beside the plugin, points
// XLA at a CUDA directory hard-coded to its author's home. Memory fraction and
// preallocation reach the CUDA client only as client-create options. This file holds the
// pure-Go part (options, environment, plugin and CUDA directory lookup), built always so it
// is tested without cgo; backend_xla.go (-tags xla) applies it.

// XLAOptions configure the XLA backend before NewBackend creates it. A zero field takes its
// environment variable (named beside it), else the default.
type XLAOptions struct {
	// Plugin is the CUDA PJRT plugin: a .so path (made absolute), or a directory holding
	// pjrt_c_api_cuda_plugin.so (or xla_cuda_plugin.so, jax's name) directly or in nvidia/.
	// $KTOLOADER_XLA_PLUGIN; else the directories of $PJRT_PLUGIN_LIBRARY_PATH,
	// ~/.local/lib/go-xla and /usr/local/lib/go-xla are searched the same way. The plugin
	// found replaces "cuda" in an "xla:cuda" (or bare "xla") backend config.
	Plugin string
	// AutoInstall lets go-xla download missing plugins from the network
	// ($KTOLOADER_XLA_AUTO_INSTALL=1). Off by default, and always off when
	// $GOMLX_NO_AUTO_INSTALL is set.
	AutoInstall bool
	// MemoryFraction is the share of device memory XLA's CUDA allocator may take, in (0, 1]
	// ($KTOLOADER_XLA_MEMORY_FRACTION). 0: XLA's default, 0.75.
	MemoryFraction float64
	// Preallocate reserves the memory fraction up front ($KTOLOADER_XLA_PREALLOCATE=true|false).
	// nil: XLA's default (true).
	Preallocate *bool
	// Allocator is XLA's CUDA allocator: "default", "bfc", "cuda_async" or "platform"
	// ($KTOLOADER_XLA_ALLOCATOR). Empty: XLA's default (bfc).
	Allocator string
}

// Environment variables read by ConfigureXLA.
const (
	EnvXLAPlugin         = "KTOLOADER_XLA_PLUGIN"
	EnvXLAAutoInstall    = "KTOLOADER_XLA_AUTO_INSTALL"
	EnvXLAMemoryFraction = "KTOLOADER_XLA_MEMORY_FRACTION"
	EnvXLAPreallocate    = "KTOLOADER_XLA_PREALLOCATE"
	EnvXLAAllocator      = "KTOLOADER_XLA_ALLOCATOR"
)

// CUDA plugin file names: go-xla's installer's and the jax-cuda12/13-pjrt wheels'.
var cudaPluginNames = []string{"pjrt_c_api_cuda_plugin.so", "xla_cuda_plugin.so"}

var xlaAllocators = []string{"default", "bfc", "cuda_async", "platform"}

// xlaSetup is what backend_xla.go applies: resolved options and the environment to set
// where unset.
type xlaSetup struct {
	opts       XLAOptions
	pluginPath string            // absolute CUDA plugin path, "" when none was found
	env        map[string]string // variables to set when unset
}

// clientOptions are the PJRT CUDA client-create options (names from XLA's
// pjrt_c_api_gpu_internal.cc; the float must be float32 for go-xla's NamedValuesMap).
func (s xlaSetup) clientOptions() map[string]any {
	m := map[string]any{}
	if s.opts.MemoryFraction > 0 {
		m["memory_fraction"] = float32(s.opts.MemoryFraction)
	}
	if s.opts.Preallocate != nil {
		m["preallocate"] = *s.opts.Preallocate
	}
	if s.opts.Allocator != "" {
		m["allocator"] = s.opts.Allocator
	}
	return m
}

// withEnv fills o's zero fields from the environment (getenv) and checks them.
func (o XLAOptions) withEnv(getenv func(string) string) (XLAOptions, error) {
	bad := func(field, v, why string) (XLAOptions, error) {
		return o, fmt.Errorf("%w: XLA %s %q: %s", ErrBadOption, field, v, why)
	}
	if o.Plugin == "" {
		o.Plugin = getenv(EnvXLAPlugin)
	}
	if !o.AutoInstall && getenv(EnvXLAAutoInstall) == "1" {
		o.AutoInstall = true
	}
	if o.MemoryFraction == 0 {
		if v := getenv(EnvXLAMemoryFraction); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return bad(EnvXLAMemoryFraction, v, "not a number")
			}
			o.MemoryFraction = f
		}
	}
	if !(o.MemoryFraction >= 0 && o.MemoryFraction <= 1) {
		return bad("memory fraction", strconv.FormatFloat(o.MemoryFraction, 'g', -1, 64), "want (0, 1], or 0 for XLA's default")
	}
	if o.Preallocate == nil {
		if v := getenv(EnvXLAPreallocate); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad(EnvXLAPreallocate, v, "want true or false")
			}
			o.Preallocate = &b
		}
	}
	if o.Allocator == "" {
		o.Allocator = getenv(EnvXLAAllocator)
	}
	if o.Allocator != "" && !slices.Contains(xlaAllocators, o.Allocator) {
		return bad("allocator", o.Allocator, "want one of "+strings.Join(xlaAllocators, ", "))
	}
	return o, nil
}

// planXLA resolves o against the environment and the file system: the plugin, and the
// variables to set where unset (GOMLX_NO_AUTO_INSTALL, GOPJRT_CUDA_CHECKS, XLA_FLAGS).
// home is the user's home directory ("" when unknown).
func planXLA(o XLAOptions, getenv func(string) string, home string) (xlaSetup, error) {
	o, err := o.withEnv(getenv)
	if err != nil {
		return xlaSetup{}, err
	}
	s := xlaSetup{opts: o, env: map[string]string{}}
	if !o.AutoInstall {
		s.env["GOMLX_NO_AUTO_INSTALL"] = "1"
	}
	if o.Plugin != "" {
		p, err := findCUDAPlugin(o.Plugin)
		if err != nil {
			return s, err
		}
		s.pluginPath = p
	} else {
		var dirs []string
		if v := getenv("PJRT_PLUGIN_LIBRARY_PATH"); v != "" {
			dirs = append(dirs, filepath.SplitList(v)...)
		}
		if home != "" {
			dirs = append(dirs, filepath.Join(home, ".local", "lib", "go-xla"))
		}
		dirs = append(dirs, "/usr/local/lib/go-xla")
		for _, d := range dirs {
			if p, err := findCUDAPlugin(d); err == nil {
				s.pluginPath = p
				break
			}
		}
	}
	// go-xla's driver check would set XLA_FLAGS to a path from its author's machine.
	s.env["GOPJRT_CUDA_CHECKS"] = "0"
	if dir := cudaDataDir(s.pluginPath, getenv); dir != "" {
		s.env["XLA_FLAGS"] = "--xla_gpu_cuda_data_dir=" + dir
	}
	return s, nil
}

// findCUDAPlugin returns the absolute path of the CUDA plugin that p names: the file, or
// the plugin in directory p or p/nvidia.
func findCUDAPlugin(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%w: XLA plugin %q: %v", ErrBadOption, p, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%w: XLA plugin %q: %v", ErrBadOption, p, err)
	}
	if !st.IsDir() {
		return abs, nil
	}
	var tried []string
	for _, sub := range []string{"", "nvidia"} {
		for _, name := range cudaPluginNames {
			cand := filepath.Join(abs, sub, name)
			if fi, err := os.Stat(cand); err == nil && !fi.IsDir() {
				return cand, nil
			}
			tried = append(tried, cand)
		}
	}
	return "", fmt.Errorf("%w: XLA plugin directory %q holds no CUDA plugin (looked for %s)",
		ErrBadOption, p, strings.Join(tried, ", "))
}

// cudaDataDir is XLA's --xla_gpu_cuda_data_dir: a directory with nvvm/libdevice and
// bin/ptxas. go-xla's installer and the nvidia-* wheels put the CUDA parts in an nvidia/
// directory holding the plugin (go-xla) or one or two levels above it (a wheel install:
// site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so beside site-packages/nvidia/);
// within it the compiler parts are in cuda_nvcc/ (CUDA 12 wheels) or cu13/ (CUDA 13).
// Else $CUDA_HOME, $CUDA_PATH, /usr/local/cuda. "" when none has libdevice or ptxas.
func cudaDataDir(pluginPath string, getenv func(string) string) string {
	var cands []string
	if pluginPath != "" {
		d := filepath.Dir(pluginPath)
		up, up2 := filepath.Dir(d), filepath.Dir(filepath.Dir(d))
		for _, nv := range []string{d, filepath.Join(d, "nvidia"), filepath.Join(up, "nvidia"), filepath.Join(up2, "nvidia")} {
			if filepath.Base(nv) != "nvidia" {
				continue
			}
			cands = append(cands, filepath.Join(nv, "cuda_nvcc"), filepath.Join(nv, "cu13"), nv)
		}
	}
	for _, v := range []string{getenv("CUDA_HOME"), getenv("CUDA_PATH"), "/usr/local/cuda"} {
		if v != "" {
			cands = append(cands, v)
		}
	}
	has := func(dir, rel string) bool {
		_, err := os.Stat(filepath.Join(dir, rel))
		return err == nil
	}
	for _, c := range cands {
		if has(c, filepath.Join("nvvm", "libdevice")) {
			return c
		}
	}
	for _, c := range cands {
		if has(c, filepath.Join("bin", "ptxas")) {
			return c
		}
	}
	return ""
}

// xlaConfigure is set by backend_xla.go; nil in builds without -tags xla.
var xlaConfigure func(s xlaSetup) error

// ConfigureXLA applies o (zero fields from the environment, see XLAOptions) to the XLA
// backend that NewBackend creates later: it sets GOMLX_NO_AUTO_INSTALL (unless auto-install
// is asked for), GOPJRT_CUDA_CHECKS=0 and XLA_FLAGS=--xla_gpu_cuda_data_dir=… where unset,
// and makes "xla:cuda" use the plugin found and the memory options. Builds without -tags
// xla check o and do nothing else. In xla builds the environment alone is applied at start,
// so calling ConfigureXLA is needed only to pass options from flags.
func ConfigureXLA(o XLAOptions) error {
	home, _ := os.UserHomeDir()
	s, err := planXLA(o, os.Getenv, home)
	if err != nil {
		return err
	}
	if xlaConfigure == nil {
		return nil
	}
	return xlaConfigure(s)
}
