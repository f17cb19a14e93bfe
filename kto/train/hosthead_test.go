package train

import (
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/ktoloader/ktoloader/internal/safetensors"
)

// TestHostHeadStepEqualsGraph: steps with the LM head on the host (three graphs and
// internal/lmhead, whose kernels are checked against a float64 head there) take the same
// steps as the single graph with the head in it: losses, z0, rewards, gradient norms, updated
// weights, and evaluation; full fine-tuning (the head, embedding and norms trained), with
// gradient accumulation, with a tied head, and LoRA (the head frozen). The reference runs
// on the fly, so its forward is the host head's too.
func TestHostHeadStepEqualsGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("trains models")
	}
	dir := writeSynData(t, 6, 2)
	model := filepath.Join(t.TempDir(), "model")
	writeHFModel(t, model, hfTestConfig(), safetensors.F32, 1<<30, 9)
	tiedModel := filepath.Join(t.TempDir(), "tied")
	tied := hfTestConfig()
	tied.TieWordEmbeddings = true
	writeHFModel(t, tiedModel, tied, safetensors.F32, 1<<30, 10)
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"tiny preset", Options{DataDir: dir, Steps: 3, Ref: RefOnTheFly}},
		{"tiny preset, grad-accum 2", Options{DataDir: dir, Steps: 2, GradAccum: 2, Ref: RefOnTheFly}},
		{"pretrained, full fine-tuning", Options{DataDir: dir, Model: model, LearningRate: 5e-3, Steps: 3, Ref: RefOnTheFly}},
		{"pretrained, tied head", Options{DataDir: dir, Model: tiedModel, LearningRate: 5e-3, Steps: 3, Ref: RefOnTheFly}},
		{"LoRA (frozen head)", Options{DataDir: dir, Model: model, LoRA: LoRAConfig{Rank: 4, Alpha: 8},
			LearningRate: 5e-3, Steps: 3, Ref: RefOnTheFly}},
	} {
		graphRun := c.o
		graphRun.HostHead = HostHeadOff
		sg, stepsG := trainLoRA(t, graphRun)
		hostRun := c.o
		hostRun.HostHead = HostHeadOn
		sh, stepsH := trainLoRA(t, hostRun)
		if sg.hostHead || !sh.hostHead {
			t.Fatalf("%s: host head %v with off, %v with on", c.name, sg.hostHead, sh.hostHead)
		}
		lr := c.o.LearningRate
		if lr == 0 {
			lr = TinyLearningRate
		}
		compareRuns(t, c.name, lr, trainableValues(sg), trainableValues(sh), stepsG, stepsH)
		mg, err := sg.evaluate()
		if err != nil {
			t.Fatal(err)
		}
		mh, err := sh.evaluate()
		if err != nil {
			t.Fatal(err)
		}
		for name, pair := range map[string][2]float64{"loss": {mg.Loss, mh.Loss}, "kl": {mg.KL, mh.KL},
			"rewards_chosen":   {deref(mg.RewardsChosen), deref(mh.RewardsChosen)},
			"rewards_rejected": {deref(mg.RewardsRejected), deref(mh.RewardsRejected)}} {
			if math.Abs(pair[0]-pair[1]) > 2e-5+2e-5*math.Abs(pair[0]) {
				t.Errorf("%s: evaluation %s %.7g with the host head, %.7g in the graph", c.name, name, pair[1], pair[0])
			}
		}
	}
}

// TestHostHeadOnRefusesWhatItCannotRun: --host-head on names why it cannot run.
func TestHostHeadOnRefusesWhatItCannotRun(t *testing.T) {
	dir := writeSynData(t, 2, 0)
	for name, o := range map[string]Options{
		"micro-batch": {MicroBatch: 1},
		"recompute":   {Recompute: true},
		"head chunks": {HeadChunk: 8},
	} {
		o.DataDir, o.Steps, o.NoEval, o.HostHead, o.Backend = dir, 1, true, HostHeadOn, "go"
		s := &runState{opts: o, status: func(string) {}}
		err := s.setup()
		if !errors.Is(err, ErrBadOption) {
			t.Errorf("%s: --host-head on gave %v, want an ErrBadOption naming why", name, err)
		}
	}
}

// trainableValues are a run's trainable variables by scope/name.
func trainableValues(s *runState) map[string][]float32 {
	out := map[string][]float32{}
	for v := range s.ctx.IterVariables() {
		if v.Trainable {
			out[v.ScopeAndName()] = tensors.MustCopyFlatData[float32](v.MustValue())
		}
	}
	return out
}
