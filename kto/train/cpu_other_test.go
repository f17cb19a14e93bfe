//go:build !unix

package train

import "time"

// processCPU is not measured here; BenchmarkTrainStep then reports wall-clock figures only.
func processCPU() time.Duration { return 0 }
