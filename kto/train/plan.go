package train

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Memory planning: what one KTO optimizer step needs on the device, from the model config and
// the run's flags alone (`train --plan`), so a user knows before loading 14 GB of weights
// whether a setting fits one GPU. Everything here is arithmetic on shapes: no weight is
// allocated and no graph is built.
//
// The figures are upper bounds for the graphs as this package builds them, not for an ideal
// implementation: every row is taken as MaxLen tokens, all of them scored; attention is the
// block-pair attention of model.go, which materialises each query block's q, its key blocks'
// k and v, and the exp-scores once per (query block, key block) pair; XLA is assumed to keep
// every tensor the backward pass reads (no rematerialisation of its own).

// LoRATargetNames are the seven linear layers of a Mistral decoder layer, in Hugging Face
// order: the names PEFT's target_modules takes.
var LoRATargetNames = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// PlanOptions are the flags that decide a step's memory.
type PlanOptions struct {
	// LoRARank is the adapters' rank r; 0 means full fine-tuning of every weight.
	LoRARank int
	// LoRATargets are the adapted linears (LoRATargetNames); empty means all seven.
	LoRATargets []string
	// DType is the dtype of the frozen weights and of the activations: "float32" or
	// "bfloat16". Trainable weights, gradients and Adam state are float32 either way.
	DType string
	// MaxLen is the row length in tokens; BatchSize the KTO batch (target rows; as many KL
	// rows again go through the policy forward only).
	MaxLen, BatchSize int
	// MicroBatch is the number of target rows per forward/backward pass, gradients
	// accumulated over the batch's passes; 0 means the whole batch in one pass.
	MicroBatch int
	// Recompute keeps only each decoder layer's input for the backward pass and recomputes
	// the layer's activations there, one layer at a time.
	Recompute bool
	// LMHeadChunk is the vocabulary chunk of a chunked LM head (log-softmax per chunk, no
	// [tokens × vocab] tensor kept for the backward pass); 0 means full logits.
	LMHeadChunk int
	// BlockSize is the attention block in tokens (0: the trainer's default).
	BlockSize int
	// GPUMemory is the device memory in bytes the plan must fit (0: unknown, no verdict).
	GPUMemory int64
}

// Plan is the memory of one optimizer step, part by part, in bytes.
type Plan struct {
	Config  ModelConfig
	Options PlanOptions // as resolved: MicroBatch, BlockSize and LoRATargets filled in

	BaseParams    int64 // every weight of the model
	AdapterParams int64 // LoRA A and B of every target in every layer (0 for full fine-tuning)
	// TokensPerPass is MicroBatch·MaxLen, the target tokens of one forward/backward pass;
	// Passes the passes per KTO batch.
	TokensPerPass, Passes int
	// LayerBytesPerToken is what one decoder layer keeps per token for the backward pass
	// (dense part and block attention), the figure DEPENDENCIES.md puts at ≈176 KB.
	LayerDenseBytesPerToken, LayerAttentionBytesPerToken int64

	Weights        int64 // the base weights (frozen in DType for LoRA; float32 masters for full fine-tuning)
	Adapter        int64 // LoRA A and B, float32
	AdapterGrads   int64 // their gradients, float32
	Optimizer      int64 // Adam m and v of the trainable weights, float32
	FullGrads      int64 // full fine-tuning: a float32 gradient of every weight
	GradAccum      int64 // the float32 gradient accumulator when a batch takes several passes
	Activations    int64 // stored for the backward pass during one pass
	Logits         int64 // the LM head's [tokens × vocab] tensors during one pass (or one chunk's)
	KLForward      int64 // the KL rows' forward pass (no gradient): hidden states, one layer's working set, logits
	RuntimeReserve int64 // CUDA context, cuBLAS and XLA workspace: a fixed guess
	Total          int64
	// Fits is Total ≤ GPUMemory; false when GPUMemory is unknown.
	Fits bool
}

// runtimeReserve is set aside for what the arithmetic does not see: the CUDA context
// (~0.5 GB), cuBLAS/cuDNN workspaces and XLA's temporary buffers and fragmentation.
const runtimeReserve = 1 << 30

// ErrBadPlan marks plan options that describe no run.
var ErrBadPlan = errors.New("bad plan options")

// planLinear is one linear layer of a decoder layer: in and out features.
type planLinear struct {
	name    string
	in, out int
}

func (c ModelConfig) planLinears() []planLinear {
	d, hd, inter := c.HiddenSize, c.headDim(), c.IntermediateSize
	q, kv := c.NumAttentionHeads*hd, c.NumKeyValueHeads*hd
	return []planLinear{
		{"q_proj", d, q}, {"k_proj", d, kv}, {"v_proj", d, kv}, {"o_proj", q, d},
		{"gate_proj", d, inter}, {"up_proj", d, inter}, {"down_proj", inter, d},
	}
}

// resolve fills the defaults and refuses what cannot run.
func (o PlanOptions) resolve() (PlanOptions, error) {
	bad := func(format string, a ...any) (PlanOptions, error) {
		return o, fmt.Errorf("%w: "+format, append([]any{ErrBadPlan}, a...)...)
	}
	switch o.DType {
	case "", "float32":
		o.DType = "float32"
	case "bfloat16", "bf16":
		o.DType = "bfloat16"
	default:
		return bad("dtype %q: want float32 or bfloat16", o.DType)
	}
	if o.MaxLen <= 0 || o.BatchSize <= 0 {
		return bad("max_len %d and batch size %d must be > 0", o.MaxLen, o.BatchSize)
	}
	if o.MicroBatch < 0 || o.MicroBatch > o.BatchSize {
		return bad("micro-batch %d: want 0 (whole batch) … %d", o.MicroBatch, o.BatchSize)
	}
	if o.MicroBatch == 0 {
		o.MicroBatch = o.BatchSize
	}
	if o.LoRARank < 0 || o.LMHeadChunk < 0 || o.BlockSize < 0 || o.GPUMemory < 0 {
		return bad("lora rank %d, lm-head chunk %d, block size %d, gpu memory %d must be ≥ 0",
			o.LoRARank, o.LMHeadChunk, o.BlockSize, o.GPUMemory)
	}
	if o.BlockSize == 0 {
		o.BlockSize = defaultBlockSize
	}
	if len(o.LoRATargets) == 0 {
		o.LoRATargets = slices.Clone(LoRATargetNames)
	}
	seen := map[string]bool{}
	for _, t := range o.LoRATargets {
		if !slices.Contains(LoRATargetNames, t) {
			return bad("LoRA target %q: want some of %s", t, strings.Join(LoRATargetNames, ","))
		}
		if seen[t] {
			return bad("LoRA target %q named twice", t)
		}
		seen[t] = true
	}
	return o, nil
}

// PlanFor computes the memory of one optimizer step of cfg under o.
func PlanFor(cfg ModelConfig, o PlanOptions) (Plan, error) {
	if err := cfg.Validate(); err != nil {
		return Plan{}, err
	}
	o, err := o.resolve()
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Config: cfg, Options: o}
	d, v, layers := int64(cfg.HiddenSize), int64(cfg.VocabSize), int64(cfg.NumHiddenLayers)
	e := int64(4) // activation and frozen-weight element size
	if o.DType == "bfloat16" {
		e = 2
	}
	const f32 = 4

	// Parameters, counted from the linears (not NumParameters, which the tests compare).
	perLayer := 2 * d // input_layernorm, post_attention_layernorm
	for _, l := range cfg.planLinears() {
		perLayer += int64(l.in) * int64(l.out)
		if o.LoRARank > 0 && slices.Contains(o.LoRATargets, l.name) {
			p.AdapterParams += layers * int64(o.LoRARank) * int64(l.in+l.out) // A [r, in], B [out, r]
		}
	}
	p.BaseParams = v*d + layers*perLayer + d // embed_tokens, layers, final norm
	if !cfg.TieWordEmbeddings {
		p.BaseParams += d * v // lm_head
	}

	// Weights and optimizer state.
	trainable := p.AdapterParams
	if o.LoRARank > 0 {
		p.Weights = p.BaseParams * e
		p.Adapter = p.AdapterParams * f32
		p.AdapterGrads = p.AdapterParams * f32
	} else {
		// Trainable weights stay float32 (bf16 masters drift under Adam; DEPENDENCIES.md).
		trainable = p.BaseParams
		p.Weights = p.BaseParams * f32
		p.FullGrads = p.BaseParams * f32
	}
	p.Optimizer = trainable * 2 * f32 // Adam m and v
	p.Passes = (o.BatchSize + o.MicroBatch - 1) / o.MicroBatch
	if p.Passes > 1 {
		p.GradAccum = trainable * f32
	}

	// Activations of one pass over the targets. They are float32 whatever DType says: Net
	// converts every product back to float32 before anything reads it (net.go), so a bf16 run
	// keeps as much per token as a float32 one (only weights shrink).
	const a = f32
	p.TokensPerPass = o.MicroBatch * o.MaxLen
	tokens := int64(p.TokensPerPass)
	p.LayerDenseBytesPerToken, p.LayerAttentionBytesPerToken = cfg.planLayerBytes(o, a)
	layerFull := p.LayerDenseBytesPerToken + p.LayerAttentionBytesPerToken
	masks := tokens * cfg.planMaskBytesPerToken(o)
	if o.Recompute {
		// recompute.go: the L layer inputs and the head's input stay for the backward pass
		// (float32 [tokens, d] each); one layer at a time is recomputed with all its
		// activations, between the incoming and outgoing float32 cotangents.
		p.Activations = tokens*((layers+1)*d*f32+layerFull+2*d*f32) + masks
	} else {
		// Every layer's activations, plus the hidden-state cotangent during the backward pass.
		p.Activations = tokens*(layers*layerFull+d*f32) + masks
	}
	p.Logits = cfg.planHeadBytes(o, tokens, e)

	// The KL rows: as many as the pass's targets, forward only (TRL scores them under
	// no_grad), so nothing is kept for a backward pass. In one graph (a whole batch) they
	// run beside the targets: their hidden state, one layer's working set, their masks and
	// the head. Micro-batched (micro.go), the KL pass runs alone before the gradient passes
	// and also runs the targets' forward (KL pairs attend to their target's prompt): both
	// hidden states, one layer's working set, both groups' masks, the head. (The trainer
	// shares a KL row's prompt with its target's; the plan counts the whole row.)
	if p.Passes > 1 {
		p.KLForward = tokens*(2*d*f32+layerFull) + 2*masks + cfg.planHeadBytes(o, tokens, e)
	} else {
		p.KLForward = tokens*(d*f32+layerFull) + masks + cfg.planHeadBytes(o, tokens, e)
	}

	p.RuntimeReserve = runtimeReserve
	p.Total = p.Weights + p.Adapter + p.AdapterGrads + p.Optimizer + p.FullGrads + p.GradAccum + p.RuntimeReserve
	if p.Passes > 1 {
		p.Total += max(p.Activations+p.Logits, p.KLForward) // one pass at a time
	} else {
		p.Total += p.Activations + p.Logits + p.KLForward
	}
	p.Fits = o.GPUMemory > 0 && p.Total <= o.GPUMemory
	return p, nil
}

// planMaskBytesPerToken is the block attention's mask per token of a pass, built once per
// graph and read by every layer (net.go groupNodes): the input PairBias [pairs, B, B] and
// its broadcast over the heads [pairs, KV, B, G, B], float32; (n+1)/2 pairs per query block
// of a row of n blocks, as in planLayerBytes.
func (c ModelConfig) planMaskBytesPerToken(o PlanOptions) int64 {
	bs := int64(o.BlockSize)
	nb := (int64(o.MaxLen) + bs - 1) / bs
	return (nb + 1) * (int64(c.NumAttentionHeads) + 1) * bs * 4 / 2
}

// planLayerBytes is what one decoder layer keeps per token for its backward pass: the
// dense part (norms, projections, MLP) and the block attention's per-pair tensors. e is
// the activation element size; norm statistics, softmax sums and exp-scores are float32.
func (c ModelConfig) planLayerBytes(o PlanOptions, e int64) (dense, attention int64) {
	d, inter := int64(c.HiddenSize), int64(c.IntermediateSize)
	hd, h, kv := int64(c.headDim()), int64(c.NumAttentionHeads), int64(c.NumKeyValueHeads)
	const f32 = 4
	dense = d*e + // h: the layer input (residual stream), read by input_layernorm's backward
		d*e + // x = input_layernorm(h): the input of q, k, v (and of their LoRA A)
		f32 + // input_layernorm's 1/rms
		h*hd*e + // q after RoPE and 1/√hd: an operand of the scores
		kv*hd*e + // k after RoPE: the other operand
		kv*hd*e + // v: an operand of the attention-weighted sum
		h*hd*e + // the attention output, o_proj's input
		d*e + // h + o_proj(…): the residual, read by post_attention_layernorm's backward
		d*e + // x = post_attention_layernorm(…): the input of gate and up
		f32 + // post_attention_layernorm's 1/rms
		inter*e + // gate = x·W_gate: read by SiLU's backward
		inter*e + // up = x·W_up: an operand of silu(gate)·up
		inter*e + // sigmoid(gate): SiLU is written gate·sigmoid(gate), Sigmoid's backward reads its output
		inter*e + // silu(gate) = gate·sigmoid(gate): the other operand of ·up
		inter*e // silu(gate)·up: down_proj's input
	if o.LoRARank > 0 {
		// x·Aᵀ [r] per adapted linear: read by the gradient of B.
		dense += int64(len(o.LoRATargets)) * int64(o.LoRARank) * e
	}
	// Block attention (model.go blockAttention): a sequence of n blocks has n(n+1)/2
	// (query block, key block) pairs, so each query block is gathered (n+1)/2 times on
	// average, and so is each key block. Per token, for rows of MaxLen tokens:
	bs := int64(o.BlockSize)
	nb := (int64(o.MaxLen) + bs - 1) / bs
	// Pairs per token, ×2 to keep integers: (n+1)/2 copies of each token's q, k and v.
	copies2 := nb + 1
	attention = (copies2*h*hd*e+ // q gathered per pair: the scores' operand
		copies2*kv*hd*e+ // k gathered per pair: the scores' other operand
		copies2*kv*hd*e+ // v gathered per pair: an operand of the weighted sum
		copies2*h*bs*f32)/2 + // exp(scores − max) [pair, heads, B, B]: Exp's and the sum's backward read it
		h*hd*f32 + // the numerator Σ e·v summed over pairs: read by the division's backward
		h*f32 // the denominator Σ e
	return dense, attention
}

// planHeadBytes is the LM head's memory for one pass over tokens scored positions: the final
// norm's input and output, and the logits. Plain, the head keeps exp(logits − max)
// [tokens × vocab] float32 for the backward pass and materialises the logits (forward) or
// their gradient (backward) beside it; chunked, the same two tensors exist for one
// [tokens × chunk] slice at a time, plus a running max and sum per token.
func (c ModelConfig) planHeadBytes(o PlanOptions, tokens, e int64) int64 {
	d, v := int64(c.HiddenSize), int64(c.VocabSize)
	const f32 = 4
	norm := tokens * (d*e + d*e) // the gathered hidden state and the final norm's output
	if o.LMHeadChunk > 0 && int64(o.LMHeadChunk) < v {
		return norm + tokens*(2*int64(o.LMHeadChunk)*f32+2*f32)
	}
	return norm + tokens*2*v*f32
}

// Suggest returns the first setting, from p's options, that fits GPUMemory: recomputation
// off before on, then the micro-batch whole, 4, 2, 1 rows. Both cost about one more forward
// pass over the targets (recompute.go, micro.go), so fewer, larger passes come first (they
// keep a GPU busier). The LM head stays as the options say: a chunked head is tried, after
// full logits, only when the options name a chunk. ok is false when GPUMemory is unknown or
// nothing fits; the returned plan is then the smallest tried.
func (p Plan) Suggest() (best Plan, ok bool) {
	o := p.Options
	chunks := []int{0}
	if o.LMHeadChunk > 0 {
		chunks = append(chunks, o.LMHeadChunk)
	}
	first := true
	for _, rc := range []bool{false, true} {
		seen := map[int]bool{}
		for _, mb := range []int{o.BatchSize, 4, 2, 1} {
			if mb > o.BatchSize || seen[mb] {
				continue
			}
			seen[mb] = true
			for _, ch := range chunks {
				q := o
				q.MicroBatch, q.Recompute, q.LMHeadChunk = mb, rc, ch
				cand, err := PlanFor(p.Config, q)
				if err != nil {
					continue
				}
				if cand.Fits {
					return cand, true
				}
				if first || cand.Total < best.Total {
					best, first = cand, false
				}
			}
		}
	}
	return best, false
}

// WritePlan prints p as a table of parts with their sizes, then the verdict.
func WritePlan(w io.Writer, p Plan) error {
	o := p.Options
	mode := "full fine-tuning"
	if o.LoRARank > 0 {
		mode = fmt.Sprintf("LoRA r=%d on %s", o.LoRARank, strings.Join(o.LoRATargets, ","))
	}
	head := "full logits"
	if o.LMHeadChunk > 0 {
		head = fmt.Sprintf("LM head chunk %d", o.LMHeadChunk)
	}
	fmt.Fprintf(w, "model: %d layers, hidden %d, intermediate %d, heads %d/%d kv, head dim %d, vocab %d\n",
		p.Config.NumHiddenLayers, p.Config.HiddenSize, p.Config.IntermediateSize,
		p.Config.NumAttentionHeads, p.Config.NumKeyValueHeads, p.Config.headDim(), p.Config.VocabSize)
	fmt.Fprintf(w, "parameters: %s base (%s), %s adapter (%s)\n",
		commas(p.BaseParams), humanCount(p.BaseParams), commas(p.AdapterParams), humanCount(p.AdapterParams))
	fmt.Fprintf(w, "step: %s, %s; KTO batch %d rows × max-len %d (+%d KL rows, forward only); micro-batch %d rows (%d passes, %d tokens each); recompute %v; %s; attention block %d\n",
		mode, o.DType, o.BatchSize, o.MaxLen, o.BatchSize, o.MicroBatch, p.Passes, p.TokensPerPass, o.Recompute, head, o.BlockSize)
	fmt.Fprintf(w, "per token per layer kept for backward: %s dense + %s block attention = %s\n\n",
		humanBytes(p.LayerDenseBytesPerToken), humanBytes(p.LayerAttentionBytesPerToken),
		humanBytes(p.LayerDenseBytesPerToken+p.LayerAttentionBytesPerToken))
	parts := p.Parts()
	width := len("total")
	for _, r := range parts {
		width = max(width, len(r.Name))
	}
	for _, r := range append(parts, PlanPart{"total", p.Total}) {
		fmt.Fprintf(w, "  %-*s  %10s  %18s\n", width, r.Name, humanBytes(r.Bytes), commas(r.Bytes))
	}
	if p.Passes > 1 {
		fmt.Fprintln(w, "  (micro-batched: the KL pass runs alone before the gradient passes; the total counts the larger of the two)")
	}
	var err error
	switch {
	case o.GPUMemory == 0:
		_, err = fmt.Fprintln(w, "\nverdict: no --gpu-memory given")
	case p.Fits:
		_, err = fmt.Fprintf(w, "\nverdict: fits %s (%s free)\n", humanBytes(o.GPUMemory), humanBytes(o.GPUMemory-p.Total))
	default:
		_, err = fmt.Fprintf(w, "\nverdict: does NOT fit %s (%s over)\n", humanBytes(o.GPUMemory), humanBytes(p.Total-o.GPUMemory))
	}
	return err
}

// PlanPart is one row of WritePlan's table.
type PlanPart struct {
	Name  string
	Bytes int64
}

// Parts lists the non-zero parts in table order.
func (p Plan) Parts() []PlanPart {
	all := []PlanPart{
		{"base weights", p.Weights},
		{"adapter (LoRA A, B; f32)", p.Adapter},
		{"adapter gradients (f32)", p.AdapterGrads},
		{"full fine-tuning gradients (f32)", p.FullGrads},
		{"optimizer (Adam m, v; f32)", p.Optimizer},
		{"gradient accumulator (f32)", p.GradAccum},
		{"activations per micro-batch", p.Activations},
		{"logits per micro-batch", p.Logits},
		{"KL forward (no grad)", p.KLForward},
		// (micro-batched: the KL pass of one micro-batch, its targets' forward included)
		{"runtime reserve (CUDA, workspace; a guess)", p.RuntimeReserve},
	}
	return slices.DeleteFunc(all, func(r PlanPart) bool { return r.Bytes == 0 })
}

// humanBytes writes n in decimal units, GB = 1e9 bytes (an "80 GB" H100 has 80 GiB = 85.9e9
// bytes, so a plan against 80e9 leaves it 5.9e9 of slack).
func humanBytes(n int64) string {
	units := []string{"B", "KB", "MB", "GB", "TB"}
	f, i := float64(n), 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.2f %s", f, units[i])
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f M", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f k", float64(n)/1e3)
	}
	return strconv.FormatInt(n, 10)
}

// commas writes n with thousands separators.
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// ParseMemory reads a --gpu-memory value: bytes, or a number with a unit (KB, MB, GB, TB
// decimal; KiB, MiB, GiB, TiB binary), e.g. "80GB", "141GB", "80GiB", "85899345920".
func ParseMemory(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	mult := 1.0
	for _, u := range units {
		if len(t) > len(u.suffix) && strings.EqualFold(t[len(t)-len(u.suffix):], u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || !(f >= 0) || f*mult > 1<<62 {
		return 0, fmt.Errorf("%w: memory %q: want bytes or a number with KB/MB/GB/TB or KiB/MiB/GiB/TiB", ErrBadPlan, s)
	}
	return int64(f * mult), nil
}
