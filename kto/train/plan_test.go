package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// mistralConfig loads the real Mistral-7B-v0.3 config.json and its safetensors index from
// ../shared (skipping when absent).
func mistralConfig(t *testing.T) (ModelConfig, string) {
	t.Helper()
	dir := shared.Path(t, "models", "mistral-7b-v0.3")
	cfg, err := LoadModelConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, filepath.Join(dir, "model.safetensors.index.json")
}

// the setting: LoRA r=16 on all seven linears, bf16, max-len 2048, KTO batches of 8.
func mistralOptions() PlanOptions {
	return PlanOptions{LoRARank: 16, DType: "bfloat16", MaxLen: 2048, BatchSize: 8, GPUMemory: 80e9}
}

// TestPlanMistralParameters checks the counts against the checkpoint's own index: its
// total_size is the bf16 bytes of every tensor, and its weight names say which linears
// exist in which layer. The adapter count is summed over those names with r·(in+out)
// from the config's shapes, independently of the plan's own enumeration.
func TestPlanMistralParameters(t *testing.T) {
	cfg, indexPath := mistralConfig(t)
	raw, err := os.ReadFile(indexPath)
	if err != nil {
		t.Fatal(err)
	}
	var index struct {
		Metadata struct {
			TotalSize int64 `json:"total_size"`
		} `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatal(err)
	}
	p, err := PlanFor(cfg, mistralOptions())
	if err != nil {
		t.Fatal(err)
	}
	if p.BaseParams != 7_248_023_552 || p.BaseParams != index.Metadata.TotalSize/2 {
		t.Errorf("base parameters %d, want 7,248,023,552 = total_size/2 = %d", p.BaseParams, index.Metadata.TotalSize/2)
	}
	if int64(cfg.NumParameters()) != p.BaseParams {
		t.Errorf("NumParameters %d, plan %d", cfg.NumParameters(), p.BaseParams)
	}

	kv := cfg.NumKeyValueHeads * cfg.headDim()
	q := cfg.NumAttentionHeads * cfg.headDim()
	shape := map[string][2]int{ // in, out
		"q_proj": {cfg.HiddenSize, q}, "k_proj": {cfg.HiddenSize, kv}, "v_proj": {cfg.HiddenSize, kv},
		"o_proj": {q, cfg.HiddenSize}, "gate_proj": {cfg.HiddenSize, cfg.IntermediateSize},
		"up_proj": {cfg.HiddenSize, cfg.IntermediateSize}, "down_proj": {cfg.IntermediateSize, cfg.HiddenSize},
	}
	linear := regexp.MustCompile(`^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.weight$`)
	const r = 16
	var want int64
	layers := map[int]bool{}
	for name := range index.WeightMap {
		m := linear.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		s, ok := shape[m[3]]
		if !ok {
			t.Fatalf("unexpected linear %s", name)
		}
		l, _ := strconv.Atoi(m[1])
		layers[l] = true
		want += int64(r * (s[0] + s[1]))
	}
	if len(layers) != cfg.NumHiddenLayers {
		t.Fatalf("index has %d layers, config %d", len(layers), cfg.NumHiddenLayers)
	}
	if p.AdapterParams != want || want != 41_943_040 {
		t.Errorf("adapter parameters %d, want %d from the index (41,943,040)", p.AdapterParams, want)
	}

	var out bytes.Buffer
	if err := WritePlan(&out, p); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"7,248,023,552", "41,943,040", "base weights", "14.50 GB", "does NOT fit"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("plan output lacks %q:\n%s", s, out.String())
		}
	}
}

// TestPlanMistralFits80GB: the whole batch in one graph does not fit (the premise),
// and Suggest finds a setting that does.
func TestPlanMistralFits80GB(t *testing.T) {
	cfg, _ := mistralConfig(t)
	p, err := PlanFor(cfg, mistralOptions())
	if err != nil {
		t.Fatal(err)
	}
	if p.Fits {
		t.Fatalf("whole batch, no recompute, full logits fits 80 GB at %d bytes: the premise is wrong", p.Total)
	}
	s, ok := p.Suggest()
	if !ok || !s.Fits || s.Total > 80e9 {
		t.Fatalf("no setting fits 80 GB; smallest %+v", s.Options)
	}
	if s.Options.LoRARank != 16 || s.Options.MaxLen != 2048 || s.Options.BatchSize != 8 {
		t.Fatalf("Suggest changed the run: %+v", s.Options)
	}
	var out bytes.Buffer
	if err := WritePlan(&out, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "verdict: fits") {
		t.Errorf("verdict missing:\n%s", out.String())
	}
	// Recomputation with micro-batches of one row is the smallest setting by far.
	o := mistralOptions()
	o.MicroBatch, o.Recompute, o.LMHeadChunk = 1, true, 4096
	small, err := PlanFor(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	if !small.Fits || small.Total > 40e9 {
		t.Errorf("micro-batch 1 + recompute + chunk: %d bytes, want under 40 GB", small.Total)
	}
}

// TestPlanMonotone: each of the three measures reduces what it should, and nothing else.
func TestPlanMonotone(t *testing.T) {
	for _, cfg := range []ModelConfig{TinyConfig(512, 256), mistralShaped()} {
		base := PlanOptions{LoRARank: 8, DType: "float32", MaxLen: 256, BatchSize: 8}
		plain, err := PlanFor(cfg, base)
		if err != nil {
			t.Fatal(err)
		}
		prev := plain
		for _, mb := range []int{4, 2, 1} {
			o := base
			o.MicroBatch = mb
			p, err := PlanFor(cfg, o)
			if err != nil {
				t.Fatal(err)
			}
			if p.Activations >= prev.Activations || p.Logits >= prev.Logits || p.KLForward >= prev.KLForward {
				t.Errorf("micro-batch %d: activations %d logits %d KL %d not below %d %d %d",
					mb, p.Activations, p.Logits, p.KLForward, prev.Activations, prev.Logits, prev.KLForward)
			}
			// Without recomputation activations are linear in the tokens of a pass.
			if p.Activations*int64(base.BatchSize) != plain.Activations*int64(mb) {
				t.Errorf("micro-batch %d: activations %d not %d/%d of %d", mb, p.Activations, mb, base.BatchSize, plain.Activations)
			}
			if p.GradAccum != p.AdapterParams*4 {
				t.Errorf("micro-batch %d: accumulator %d, want %d", mb, p.GradAccum, p.AdapterParams*4)
			}
			prev = p
		}
		if plain.GradAccum != 0 {
			t.Errorf("one pass needs no accumulator, got %d", plain.GradAccum)
		}
		o := base
		o.Recompute = true
		rc, _ := PlanFor(cfg, o)
		if rc.Activations >= plain.Activations || rc.Logits != plain.Logits || rc.Weights != plain.Weights {
			t.Errorf("recompute: activations %d vs %d, logits %d vs %d", rc.Activations, plain.Activations, rc.Logits, plain.Logits)
		}
		o = base
		o.LMHeadChunk = 64
		ch, _ := PlanFor(cfg, o)
		if ch.Logits >= plain.Logits || ch.Activations != plain.Activations {
			t.Errorf("chunk: logits %d vs %d", ch.Logits, plain.Logits)
		}
		o = base
		o.DType = "bfloat16"
		bf, _ := PlanFor(cfg, o)
		// Activations stay float32 in a bf16 run (Net converts products back): only weights shrink.
		if bf.Weights*2 != plain.Weights || bf.Activations != plain.Activations || bf.Adapter != plain.Adapter {
			t.Errorf("bf16: weights %d vs %d, activations %d vs %d", bf.Weights, plain.Weights, bf.Activations, plain.Activations)
		}
	}
}

// mistralShaped is a ~100M-parameter model with Mistral's proportions (GQA 4:1, SwiGLU 3.5d).
func mistralShaped() ModelConfig {
	c := TinyConfig(32768, 2048)
	c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 512, 1792, 8
	c.NumAttentionHeads, c.NumKeyValueHeads = 8, 2
	return c
}

// TestPlanCountsMatchModel: the plan's count equals the model's own for tied and untied
// heads, and full fine-tuning trains every one of them.
func TestPlanCountsMatchModel(t *testing.T) {
	tied := TinyConfig(512, 64)
	tied.TieWordEmbeddings = true
	for _, cfg := range []ModelConfig{TinyConfig(512, 64), tied, mistralShaped()} {
		p, err := PlanFor(cfg, PlanOptions{MaxLen: 64, BatchSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		n := int64(cfg.NumParameters())
		if p.BaseParams != n || p.AdapterParams != 0 {
			t.Errorf("%+v: plan %d adapter %d, NumParameters %d", cfg, p.BaseParams, p.AdapterParams, n)
		}
		if p.Weights != 4*n || p.FullGrads != 4*n || p.Optimizer != 8*n || p.Adapter != 0 {
			t.Errorf("full fine-tuning parts: %+v", p)
		}
		// LoRA on q only: r·(d + heads·hd) per layer.
		lp, err := PlanFor(cfg, PlanOptions{LoRARank: 4, LoRATargets: []string{"q_proj"}, MaxLen: 64, BatchSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		want := int64(cfg.NumHiddenLayers * 4 * (cfg.HiddenSize + cfg.NumAttentionHeads*cfg.headDim()))
		if lp.AdapterParams != want || lp.Optimizer != 8*want || lp.FullGrads != 0 {
			t.Errorf("q-only adapter %d, want %d", lp.AdapterParams, want)
		}
	}
}

func TestPlanBadOptions(t *testing.T) {
	cfg := TinyConfig(512, 64)
	for _, o := range []PlanOptions{
		{MaxLen: 0, BatchSize: 8},
		{MaxLen: 64, BatchSize: 8, MicroBatch: 9},
		{MaxLen: 64, BatchSize: 8, DType: "float16"},
		{MaxLen: 64, BatchSize: 8, LoRARank: 4, LoRATargets: []string{"qkv"}},
		{MaxLen: 64, BatchSize: 8, LoRARank: 4, LoRATargets: []string{"q_proj", "q_proj"}},
		{MaxLen: 64, BatchSize: 8, LMHeadChunk: -1},
	} {
		if _, err := PlanFor(cfg, o); !errors.Is(err, ErrBadPlan) {
			t.Errorf("%+v: err %v, want ErrBadPlan", o, err)
		}
	}
	if _, err := PlanFor(ModelConfig{}, PlanOptions{MaxLen: 64, BatchSize: 8}); !errors.Is(err, ErrBadModelConfig) {
		t.Errorf("empty config: %v", err)
	}
}

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int64{
		"80GB": 80e9, "80 GiB": 80 << 30, "141gb": 141e9, "1024": 1024, "1.5KiB": 1536, "2TB": 2e12, "512MB": 512e6, "7B": 7,
	} {
		if got, err := ParseMemory(in); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GB", "-1GB", "eighty", "1e30GB", "NaN"} {
		if _, err := ParseMemory(in); !errors.Is(err, ErrBadPlan) {
			t.Errorf("ParseMemory(%q): %v, want ErrBadPlan", in, err)
		}
	}
}
