//go:build xla

package train

// Importing GomlX's XLA backend registers "xla" (PJRT plugins: xla:cuda, xla:cpu, or
// xla:/abs/path/plugin.so). It needs cgo at build time and the PJRT plugin at run time
// (go-xla downloads it into ~/.local/lib/go-xla/ when online), so default builds leave it
// out and stay pure Go. Build with: go build -tags xla ./cmd/ktoloader
import _ "github.com/gomlx/gomlx/backends/xla"
