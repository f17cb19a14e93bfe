//go:build !unix

package pipeline

import "time"

// processCPU is not measured here; BenchmarkPrepNexus then reports wall-clock figures only.
func processCPU() time.Duration { return 0 }
