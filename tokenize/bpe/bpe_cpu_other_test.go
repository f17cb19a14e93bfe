//go:build !unix

package bpe

import "time"

// processCPU is not measured here; BenchmarkEncode then reports wall-clock figures only.
func processCPU() time.Duration { return 0 }
