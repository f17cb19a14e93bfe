package train

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// touch creates the file at the path, with its directories.
func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestPlanXLALayouts: the plugin is found in go-xla's installer layout (plugin inside
// nvidia/, CUDA 12 compiler parts in nvidia/cuda_nvcc) and in a wheel tree (plugin in
// jax_plugins/xla_cuda12/, site-packages/nvidia/ two levels up), by file or directory, and the CUDA
// data dir is the one holding nvvm/libdevice.
func TestPlanXLALayouts(t *testing.T) {
	root := t.TempDir()
	goxla := filepath.Join(root, "home", ".local", "lib", "go-xla")
	touch(t, filepath.Join(goxla, "nvidia", "pjrt_c_api_cuda_plugin.so"))
	touch(t, filepath.Join(goxla, "nvidia", "cuda_nvcc", "nvvm", "libdevice", "libdevice.10.bc"))
	touch(t, filepath.Join(goxla, "nvidia", "bin", "ptxas"))

	site := filepath.Join(root, "site-packages")
	touch(t, filepath.Join(site, "jax_plugins", "xla_cuda12", "xla_cuda_plugin.so"))
	touch(t, filepath.Join(site, "nvidia", "cu13", "bin", "ptxas"))

	cases := []struct {
		name              string
		opts              XLAOptions
		env               map[string]string
		home              string
		wantPlugin, wantD string
	}{
		{"go-xla dir", XLAOptions{Plugin: goxla}, nil, "",
			filepath.Join(goxla, "nvidia", "pjrt_c_api_cuda_plugin.so"), filepath.Join(goxla, "nvidia", "cuda_nvcc")},
		{"go-xla by home", XLAOptions{}, nil, filepath.Join(root, "home"),
			filepath.Join(goxla, "nvidia", "pjrt_c_api_cuda_plugin.so"), filepath.Join(goxla, "nvidia", "cuda_nvcc")},
		{"env file", XLAOptions{}, map[string]string{EnvXLAPlugin: filepath.Join(site, "jax_plugins", "xla_cuda12", "xla_cuda_plugin.so")}, "",
			filepath.Join(site, "jax_plugins", "xla_cuda12", "xla_cuda_plugin.so"), filepath.Join(site, "nvidia", "cu13")},
		{"PJRT_PLUGIN_LIBRARY_PATH", XLAOptions{}, map[string]string{"PJRT_PLUGIN_LIBRARY_PATH": "/nonexistent:" + filepath.Join(site, "jax_plugins", "xla_cuda12")}, "",
			filepath.Join(site, "jax_plugins", "xla_cuda12", "xla_cuda_plugin.so"), filepath.Join(site, "nvidia", "cu13")},
	}
	for _, c := range cases {
		s, err := planXLA(c.opts, envOf(c.env), c.home)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if s.pluginPath != c.wantPlugin {
			t.Errorf("%s: plugin %q, want %q", c.name, s.pluginPath, c.wantPlugin)
		}
		if got := s.env["XLA_FLAGS"]; got != "--xla_gpu_cuda_data_dir="+c.wantD {
			t.Errorf("%s: XLA_FLAGS %q, want data dir %q", c.name, got, c.wantD)
		}
		if s.env["GOMLX_NO_AUTO_INSTALL"] != "1" || s.env["GOPJRT_CUDA_CHECKS"] != "0" {
			t.Errorf("%s: env %v", c.name, s.env)
		}
	}

	// CUDA_HOME when no nvidia/ tree is near the plugin.
	cudaHome := filepath.Join(root, "cuda")
	touch(t, filepath.Join(cudaHome, "nvvm", "libdevice", "libdevice.10.bc"))
	lone := filepath.Join(root, "lone", "pjrt_c_api_cuda_plugin.so")
	touch(t, lone)
	s, err := planXLA(XLAOptions{Plugin: lone}, envOf(map[string]string{"CUDA_HOME": cudaHome}), "")
	if err != nil || s.env["XLA_FLAGS"] != "--xla_gpu_cuda_data_dir="+cudaHome {
		t.Errorf("CUDA_HOME: %v %v", s.env, err)
	}
}

func TestPlanXLAOptions(t *testing.T) {
	s, err := planXLA(XLAOptions{}, envOf(map[string]string{
		EnvXLAAutoInstall: "1", EnvXLAMemoryFraction: "0.95", EnvXLAPreallocate: "false", EnvXLAAllocator: "cuda_async",
	}), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, set := s.env["GOMLX_NO_AUTO_INSTALL"]; set || !s.opts.AutoInstall {
		t.Errorf("auto-install asked for, env %v", s.env)
	}
	got := s.clientOptions()
	if got["memory_fraction"] != float32(0.95) || got["preallocate"] != false || got["allocator"] != "cuda_async" || len(got) != 3 {
		t.Errorf("client options %v", got)
	}
	// Options win over the environment; nothing set, nothing passed.
	s, _ = planXLA(XLAOptions{MemoryFraction: 0.5}, envOf(map[string]string{EnvXLAMemoryFraction: "0.9"}), "")
	if s.clientOptions()["memory_fraction"] != float32(0.5) {
		t.Errorf("option did not win: %v", s.clientOptions())
	}
	if s, _ := planXLA(XLAOptions{}, envOf(nil), ""); len(s.clientOptions()) != 0 {
		t.Errorf("defaults pass options %v", s.clientOptions())
	}

	for _, c := range []struct {
		opts XLAOptions
		env  map[string]string
	}{
		{XLAOptions{MemoryFraction: 1.5}, nil},
		{XLAOptions{}, map[string]string{EnvXLAMemoryFraction: "most"}},
		{XLAOptions{}, map[string]string{EnvXLAPreallocate: "sometimes"}},
		{XLAOptions{Allocator: "arena"}, nil},
		{XLAOptions{Plugin: filepath.Join(t.TempDir(), "missing.so")}, nil},
		{XLAOptions{Plugin: t.TempDir()}, nil}, // a directory without a plugin
	} {
		if _, err := planXLA(c.opts, envOf(c.env), ""); !errors.Is(err, ErrBadOption) {
			t.Errorf("%+v %v: err %v, want ErrBadOption", c.opts, c.env, err)
		}
	}
}
