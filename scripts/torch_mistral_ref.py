#!/usr/bin/python3
"""torch_mistral_ref.py: an independent PyTorch reference of Hugging Face's Mistral forward (+ PEFT LoRA).

It exists so that `ktoloader score` / `train` can be checked against something that is not ours: it reads
a Hugging Face model directory and an optional PEFT adapter with its own safetensors parser, runs
MistralForCausalLM's eager forward, and prints per-sequence completion log-probs the way TRL sums them.
Needs only Debian's python3-torch (1.13) and libopenblas0-pthread; no transformers, peft or safetensors
package (none is installed here). Run it with /usr/bin/python3 (a pyenv python3 on PATH lacks torch).

Followed line for line (read through the code-search corpus):
  huggingface/transformers src/transformers/models/mistral/modeling_mistral.py (commit 005a187e):
    MistralRMSNorm (fp32 upcast, cast back, weight * x), MistralRotaryEmbedding (inv_freq from int64
    arange, cos/sin in fp32 then cast to the activations' dtype), rotate_half, apply_rotary_pos_emb,
    repeat_kv, MistralAttention (softmax(dtype=float32).to(q.dtype)), MistralMLP, MistralDecoderLayer,
    _prepare_4d_causal_attention_mask_with_cache_position (finfo(dtype).min added to masked scores,
    sliding window: key j masked when j <= i - sliding_window), MistralForCausalLM (lm_head, tied to
    embed_tokens when tie_word_embeddings).
  huggingface/transformers src/transformers/models/mistral/modular_mistral.py (commit 0096ba4f) and
    configuration_mistral.py (commit 001f85b3): the current layout (eager_attention_forward with
    scaling = head_dim**-0.5, used here; identical to "/ sqrt(head_dim)" for head_dim 16/64/128),
    head_dim = config.head_dim or hidden_size // num_attention_heads, defaults rms_norm_eps 1e-6,
    rope_theta 10000, sliding_window 4096, tie_word_embeddings False; rope_theta read from
    rope_parameters in transformers v5 configs.
  huggingface/peft src/peft/tuners/lora/layer.py (commit 00336949): LoraLayer.update_layer
    (scaling = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora) and Linear.forward
    (result = base(x); x cast to lora_A's dtype; result = result + lora_B(lora_A(dropout(x))) * scaling;
    result.to(base dtype)); dropout is the identity at eval. Adapter weights are float32: PEFT's
    autocast_adapter_dtype=True (the default of get_peft_model / PeftModel.from_pretrained) upcasts
    bf16/fp16 adapter weights to float32 (--adapter-dtype model keeps the base dtype instead).
  TRL get_batch_logps: logits cast to float32, log_softmax over the vocabulary, position t scored from
    logits[t-1], summed where loss_mask[t] == 1.

usage:
  torch_mistral_ref.py --model DIR --seqs SEQS.json --out OUT.json [--adapter DIR] [--dtype float32|bfloat16]
                       [--adapter-dtype float32|model] [--grad GRADS.json] [--threads 2]
      SEQS.json: [{"input_ids": [...], "loss_mask": [0/1, ...]}, ...], each one unpadded sequence at
      position 0. OUT.json: {"logps": [float per sequence], "token_logps": [[float per scored position]],
      "dtype": ..., "n_params": ...}. --grad (needs --adapter): d sum(logps) / d every lora_A / lora_B, as
      {"<adapter tensor name>": [flat row-major floats]}.
  torch_mistral_ref.py --write-random DIR --config JSON|FILE [--dtype float32|bfloat16] [--sharded] [--seed S]
                       [--std 0.02]
      writes config.json + model.safetensors (or 3 shards + model.safetensors.index.json) with random
      weights (normal, std --std, norm weights 1 + 0.1*normal so a dropped norm weight shows up).
  torch_mistral_ref.py --write-random-adapter DIR --model DIR --lora-r R --lora-alpha A [--use-rslora]
                       [--targets q_proj,v_proj,...] [--zero-b] [--dtype float32|bfloat16] [--seed S]
      writes a PEFT adapter (adapter_config.json + adapter_model.safetensors) with random A and B.
  torch_mistral_ref.py --selftest
Exit status: 0 ok, 1 a named error on stderr (bad file, key, shape, dtype, input) or a failed self-test.
"""
import argparse, json, math, os, re, struct, sys, tempfile

import torch
import torch.nn.functional as F

PROJ = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
        "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
ST_DTYPES = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2),
             "F64": (torch.float64, 8)}
ST_NAMES = {v[0]: k for k, v in ST_DTYPES.items()}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
MAX_HEADER = 100 << 20  # the safetensors library's own limit on the JSON header


class RefError(Exception):
    """A named input error: the message says which file / tensor / field and why."""


# ----------------------------------------------------------------------------------------- safetensors
def read_safetensors(path):
    """Returns {name: tensor} from one safetensors file, refusing a header whose claims the file cannot back."""
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as e:
        raise RefError(f"{path}: {e.strerror}")
    with f:
        head = f.read(8)
        if len(head) < 8:
            raise RefError(f"{path}: truncated: {len(head)} bytes, no 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or n > size - 8:
            raise RefError(f"{path}: header length {n} exceeds the file ({size} bytes) or {MAX_HEADER}")
        try:
            hdr = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise RefError(f"{path}: header is not JSON: {e}")
        if not isinstance(hdr, dict):
            raise RefError(f"{path}: header is not a JSON object")
        data_len = size - 8 - n
        spans, metas = [], {}
        for name, m in hdr.items():
            if name == "__metadata__":
                continue
            if not isinstance(m, dict) or set(m) != {"dtype", "shape", "data_offsets"}:
                raise RefError(f"{path}: tensor {name}: header entry needs exactly dtype, shape, data_offsets")
            if m["dtype"] not in ST_DTYPES:
                raise RefError(f"{path}: tensor {name}: dtype {m['dtype']!r} not supported (F32, BF16, F16, F64)")
            shape, offs = m["shape"], m["data_offsets"]
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise RefError(f"{path}: tensor {name}: bad shape {shape!r}")
            if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                    or not 0 <= offs[0] <= offs[1] <= data_len):
                raise RefError(f"{path}: tensor {name}: data_offsets {offs!r} outside the {data_len}-byte data")
            want = math.prod(shape) * ST_DTYPES[m["dtype"]][1]
            if offs[1] - offs[0] != want:
                raise RefError(f"{path}: tensor {name}: shape {shape} {m['dtype']} needs {want} bytes, "
                               f"offsets give {offs[1] - offs[0]}")
            spans.append((offs[0], offs[1], name))
            metas[name] = m
        spans.sort()
        pos = 0
        for b, e, name in spans:
            if b != pos:
                raise RefError(f"{path}: tensor {name}: data starts at {b}, expected {pos} (gap or overlap)")
            pos = e
        if pos != data_len:
            raise RefError(f"{path}: tensors cover {pos} of {data_len} data bytes")
        buf = bytearray(f.read(data_len))
        if len(buf) != data_len:
            raise RefError(f"{path}: truncated while reading tensor data")
    out = {}
    for name, m in metas.items():
        dt, isz = ST_DTYPES[m["dtype"]]
        b, e = m["data_offsets"]
        if e == b:
            out[name] = torch.zeros(m["shape"], dtype=dt)
            continue
        # bfloat16 through int16 + view: frombuffer's own bf16 support varies across torch versions.
        raw = torch.frombuffer(buf, dtype={2: torch.int16, 4: torch.int32, 8: torch.int64}[isz],
                               count=(e - b) // isz, offset=b)
        out[name] = raw.view(dt).reshape(m["shape"]).clone()
    return out


def write_safetensors(path, tensors):
    """Writes {name: tensor} in the safetensors layout (header padded to 8 bytes, tensors in name order)."""
    hdr, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        isz = ST_DTYPES[ST_NAMES[t.dtype]][1]
        raw = t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[isz]).numpy().tobytes() if t.numel() else b""
        hdr[name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    atomic_write(path, struct.pack("<Q", len(h)) + h + b"".join(blobs))


def atomic_write(path, data):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise RefError(f"{path}: {e.strerror}")
    except ValueError as e:
        raise RefError(f"{path}: not JSON: {e}")


# ----------------------------------------------------------------------------------------- model files
class Config:
    def __init__(self, c, where="config.json"):
        def need(k):
            v = c.get(k)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise RefError(f"{where}: {k} must be a positive integer, got {v!r}")
            return v
        self.V, self.D, self.F = need("vocab_size"), need("hidden_size"), need("intermediate_size")
        self.L, self.H = need("num_hidden_layers"), need("num_attention_heads")
        self.KV = c.get("num_key_value_heads") or self.H
        self.hd = c.get("head_dim") or self.D // self.H
        if self.H % self.KV:
            raise RefError(f"{where}: num_attention_heads {self.H} not a multiple of num_key_value_heads {self.KV}")
        if self.hd % 2:
            raise RefError(f"{where}: head_dim {self.hd} must be even for RoPE")
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        rp = c.get("rope_parameters") or {}
        self.theta = float(c.get("rope_theta", rp.get("rope_theta", 10000.0)))
        rs = c.get("rope_scaling") or rp
        if rs.get("rope_type", rs.get("type", "default")) != "default":
            raise RefError(f"{where}: rope scaling {rs!r} not supported (default RoPE only)")
        self.window = c.get("sliding_window", 4096)
        self.tied = bool(c.get("tie_word_embeddings", False))
        if c.get("hidden_act", "silu") != "silu":
            raise RefError(f"{where}: hidden_act {c.get('hidden_act')!r} not supported (silu)")
        if c.get("model_type", "mistral") not in ("mistral", "llama"):
            raise RefError(f"{where}: model_type {c.get('model_type')!r} is not mistral")
        self.raw = c

    def shapes(self):
        """Every tensor a MistralForCausalLM checkpoint holds, with its shape."""
        s = {"model.embed_tokens.weight": [self.V, self.D], "model.norm.weight": [self.D]}
        if not self.tied:
            s["lm_head.weight"] = [self.V, self.D]
        for i in range(self.L):
            p = f"model.layers.{i}."
            s[p + "input_layernorm.weight"] = [self.D]
            s[p + "post_attention_layernorm.weight"] = [self.D]
            for m, shp in self.proj_shapes().items():
                s[f"{p}{PROJ[m]}.{m}.weight"] = shp
        return s

    def proj_shapes(self):
        H, KV, hd, D, Fi = self.H, self.KV, self.hd, self.D, self.F
        return {"q_proj": [H * hd, D], "k_proj": [KV * hd, D], "v_proj": [KV * hd, D], "o_proj": [D, H * hd],
                "gate_proj": [Fi, D], "up_proj": [Fi, D], "down_proj": [D, Fi]}


def load_model_dir(d, dtype=None):
    """Reads config.json + model.safetensors or the sharded index; returns (Config, weights, dtype)."""
    cfg = Config(read_json(os.path.join(d, "config.json")), os.path.join(d, "config.json"))
    idx = os.path.join(d, "model.safetensors.index.json")
    single = os.path.join(d, "model.safetensors")
    w, origin = {}, {}
    if os.path.exists(idx):
        wm = read_json(idx).get("weight_map")
        if not isinstance(wm, dict):
            raise RefError(f"{idx}: no weight_map object")
        for shard in sorted(set(wm.values())):
            if not isinstance(shard, str) or "/" in shard or shard.startswith("."):
                raise RefError(f"{idx}: bad shard name {shard!r}")
            sp = os.path.join(d, shard)
            for k, t in read_safetensors(sp).items():
                if wm.get(k) != shard:
                    raise RefError(f"{sp}: tensor {k} is not mapped to this shard by {idx}")
                w[k], origin[k] = t, sp
        for k in wm:
            if k not in w:
                raise RefError(f"{idx}: tensor {k} mapped to {wm[k]} but absent there")
    elif os.path.exists(single):
        w = read_safetensors(single)
        origin = {k: single for k in w}
    elif os.path.exists(os.path.join(d, "consolidated.safetensors")):
        raise RefError(f"{d}: only Mistral's native consolidated.safetensors; need the Hugging Face layout")
    else:
        raise RefError(f"{d}: neither model.safetensors nor model.safetensors.index.json")
    want = cfg.shapes()
    if cfg.tied and "lm_head.weight" in w:
        if not torch.equal(w["lm_head.weight"], w["model.embed_tokens.weight"]):
            raise RefError(f"{origin['lm_head.weight']}: lm_head.weight differs from embed_tokens though tied")
        del w["lm_head.weight"]
    for k in sorted(w):
        if k not in want:
            raise RefError(f"{origin[k]}: unexpected tensor {k}")
        if list(w[k].shape) != want[k]:
            raise RefError(f"{origin[k]}: tensor {k} has shape {list(w[k].shape)}, config wants {want[k]}")
    for k in sorted(want):
        if k not in w:
            raise RefError(f"{d}: missing tensor {k}")
    dts = {t.dtype for t in w.values()}
    if dtype is None:
        if len(dts) != 1:
            raise RefError(f"{d}: mixed tensor dtypes {sorted(map(str, dts))}; pass --dtype")
        dtype = dts.pop()
    if dtype not in (torch.float32, torch.bfloat16, torch.float64):
        raise RefError(f"{d}: weights are {dtype}; run them as float32 or bfloat16 with --dtype")
    return cfg, {k: t.to(dtype) for k, t in w.items()}, dtype


def lora_targets(cfg, target_modules, where):
    """The module names (model.layers.N.self_attn.q_proj ...) PEFT would wrap for target_modules."""
    names = [f"model.layers.{i}.{PROJ[m]}.{m}" for i in range(cfg.L) for m in PROJ]
    if target_modules == "all-linear":
        return names  # PEFT's all-linear excludes the output layer (lm_head)
    if isinstance(target_modules, str):
        return [n for n in names if re.fullmatch(target_modules, n)]
    if not isinstance(target_modules, list) or not all(isinstance(t, str) for t in target_modules):
        raise RefError(f"{where}: target_modules must be a list of names or a string, got {target_modules!r}")
    for t in target_modules:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise RefError(f"{where}: target module {t!r} matches no q/k/v/o/gate/up/down projection")
    return [n for n in names if any(n == t or n.endswith("." + t) for t in target_modules)]


def load_adapter(d, cfg, adapter_dtype):
    """Reads a PEFT LoRA adapter; returns ({module: (A, B)}, scaling, tensor-name map)."""
    cp = os.path.join(d, "adapter_config.json")
    c = read_json(cp)
    if c.get("peft_type", "LORA") != "LORA":
        raise RefError(f"{cp}: peft_type {c.get('peft_type')!r} is not LORA")
    r, alpha = c.get("r"), c.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise RefError(f"{cp}: r must be a positive integer, got {r!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise RefError(f"{cp}: lora_alpha must be a number, got {alpha!r}")
    for k, ok in (("use_dora", False), ("fan_in_fan_out", False), ("bias", "none"), ("lora_bias", False)):
        if c.get(k, ok) != ok:
            raise RefError(f"{cp}: {k}={c[k]!r} not supported (want {ok!r})")
    for k in ("layers_to_transform", "layers_pattern", "modules_to_save", "rank_pattern", "alpha_pattern",
              "exclude_modules", "target_parameters", "trainable_token_indices"):
        if c.get(k):
            raise RefError(f"{cp}: {k}={c[k]!r} not supported")
    scaling = alpha / math.sqrt(r) if c.get("use_rslora", False) else alpha / r
    mods = lora_targets(cfg, c.get("target_modules"), cp)
    sp = os.path.join(d, "adapter_model.safetensors")
    if not os.path.exists(sp) and os.path.exists(os.path.join(d, "adapter_model.bin")):
        raise RefError(f"{d}: adapter_model.bin (pickle) not supported; need adapter_model.safetensors")
    t = read_safetensors(sp)
    want, names = {}, {}
    shp = cfg.proj_shapes()
    for m in mods:
        out_f, in_f = shp[m.rsplit(".", 1)[1]]
        want[f"base_model.model.{m}.lora_A.weight"] = [r, in_f]
        want[f"base_model.model.{m}.lora_B.weight"] = [out_f, r]
    for k in sorted(t):
        if k not in want:
            raise RefError(f"{sp}: unknown key {k} (not a lora_A/lora_B of a targeted module)")
        if list(t[k].shape) != want[k]:
            raise RefError(f"{sp}: tensor {k} has shape {list(t[k].shape)}, want {want[k]}")
    for k in sorted(want):
        if k not in t:
            raise RefError(f"{sp}: missing tensor {k}")
    lora = {}
    for m in mods:
        a, b = f"base_model.model.{m}.lora_A.weight", f"base_model.model.{m}.lora_B.weight"
        lora[m] = (t[a].to(adapter_dtype), t[b].to(adapter_dtype))
        names[m] = (a, b)
    return lora, scaling, names


# ----------------------------------------------------------------------------------------- forward
class Mistral:
    """MistralForCausalLM's eager forward on batch size 1, weights in one dtype, optional LoRA."""

    def __init__(self, cfg, w, dtype, lora=None, scaling=1.0):
        self.c, self.w, self.dtype, self.lora, self.scaling = cfg, w, dtype, lora or {}, scaling
        # transformers upcasts norms / softmax to float32; the float64 mode (self-test only) stays in float64.
        self.up = torch.float64 if dtype == torch.float64 else torch.float32

    def linear(self, x, name):
        result = F.linear(x, self.w[name + ".weight"])
        if name in self.lora:  # peft/tuners/lora/layer.py Linear.forward
            A, B = self.lora[name]
            torch_result_dtype = result.dtype
            x = x if x.dtype == A.dtype else x.to(A.dtype)
            result = result + F.linear(F.linear(x, A), B) * self.scaling
            result = result.to(torch_result_dtype)
        return result

    def rms(self, x, wname):
        input_dtype = x.dtype
        x = x.to(self.up)
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.c.eps)
        return self.w[wname] * x.to(input_dtype)

    def rope(self, T):
        hd = self.c.hd
        inv_freq = 1.0 / (self.c.theta ** (torch.arange(0, hd, 2, dtype=torch.int64).to(self.up) / hd))
        pos = torch.arange(T, dtype=self.up)
        freqs = (inv_freq[:, None] @ pos[None, :]).transpose(0, 1)  # [T, hd/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.dtype)[None, None], emb.sin().to(self.dtype)[None, None]

    def mask(self, T):
        min_dtype = torch.finfo(self.dtype).min
        i = torch.arange(T).reshape(-1, 1)
        j = torch.arange(T)
        masked = j > i
        if self.c.window is not None:
            masked = masked | (j <= i - self.c.window)
        m = torch.zeros(T, T, dtype=self.dtype).masked_fill(masked, min_dtype)
        return m[None, None]

    def logits(self, ids):
        c, w = self.c, self.w
        T = ids.shape[1]
        h = F.embedding(ids, w["model.embed_tokens.weight"])
        cos, sin = self.rope(T)
        mask = self.mask(T)
        n_rep = c.H // c.KV
        for l in range(c.L):
            p = f"model.layers.{l}."
            residual = h
            x = self.rms(h, p + "input_layernorm.weight")
            q = self.linear(x, p + "self_attn.q_proj").view(1, T, -1, c.hd).transpose(1, 2)
            k = self.linear(x, p + "self_attn.k_proj").view(1, T, -1, c.hd).transpose(1, 2)
            v = self.linear(x, p + "self_attn.v_proj").view(1, T, -1, c.hd).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
            aw = torch.matmul(q, k.transpose(2, 3)) * (c.hd ** -0.5)
            aw = aw + mask
            aw = F.softmax(aw, dim=-1, dtype=self.up).to(q.dtype)
            ao = torch.matmul(aw, v).transpose(1, 2).contiguous().reshape(1, T, -1)
            h = residual + self.linear(ao, p + "self_attn.o_proj")
            residual = h
            x = self.rms(h, p + "post_attention_layernorm.weight")
            m = self.linear(F.silu(self.linear(x, p + "mlp.gate_proj")) * self.linear(x, p + "mlp.up_proj"),
                            p + "mlp.down_proj")
            h = residual + m
        h = self.rms(h, "model.norm.weight")
        head = w["model.embed_tokens.weight"] if c.tied else w["lm_head.weight"]
        return F.linear(h, head)

    def seq_logps(self, ids, loss_mask):
        """(sum, per scored token) of log p(ids[t] | ids[:t]) over loss_mask[t] == 1, in float32 like TRL."""
        logits = self.logits(torch.tensor([ids]))[0].to(torch.float64 if self.up == torch.float64 else torch.float32)
        lp = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
        lm = torch.tensor(loss_mask[1:], dtype=lp.dtype)
        tok = lp[lm.bool()]
        return (lp * lm).sum(-1), tok


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(hs, n_rep):
    b, kvh, slen, hd = hs.shape
    if n_rep == 1:
        return hs
    return hs[:, :, None, :, :].expand(b, kvh, n_rep, slen, hd).reshape(b, kvh * n_rep, slen, hd)


def read_seqs(path, V):
    s = read_json(path)
    if not isinstance(s, list):
        raise RefError(f"{path}: want a JSON list of {{input_ids, loss_mask}}")
    out = []
    for i, e in enumerate(s):
        if not isinstance(e, dict):
            raise RefError(f"{path}: sequence {i}: not an object")
        ids, lm = e.get("input_ids"), e.get("loss_mask")
        if not isinstance(ids, list) or not ids or not all(isinstance(x, int) and 0 <= x < V for x in ids):
            raise RefError(f"{path}: sequence {i}: input_ids must be a non-empty list of ints in [0, {V})")
        if not isinstance(lm, list) or len(lm) != len(ids) or not all(x in (0, 1) for x in lm):
            raise RefError(f"{path}: sequence {i}: loss_mask must be 0/1 of the same length as input_ids")
        if lm[0]:
            raise RefError(f"{path}: sequence {i}: loss_mask[0] is 1 but position 0 has no prediction")
        out.append((ids, lm))
    return out


def run(a):
    torch.set_num_threads(a.threads)
    cfg, w, dtype = load_model_dir(a.model, DTYPES[a.dtype] if a.dtype else None)
    lora, scaling, names = {}, 1.0, {}
    if a.adapter:
        ad = dtype if a.adapter_dtype == "model" or dtype == torch.float64 else torch.float32
        lora, scaling, names = load_adapter(a.adapter, cfg, ad)
    elif a.grad:
        raise RefError("--grad needs --adapter (gradients are taken w.r.t. lora_A / lora_B)")
    seqs = read_seqs(a.seqs, cfg.V)
    m = Mistral(cfg, w, dtype, lora, scaling)
    logps, toks = [], []
    if a.grad:
        for A, B in lora.values():
            A.requires_grad_(True)
            B.requires_grad_(True)
        total = 0
        for ids, lm in seqs:
            s, t = m.seq_logps(ids, lm)
            total = total + s
            logps.append(s.item())
            toks.append(t.detach().tolist())
        total.backward()
        grads = {}
        for mod, (A, B) in lora.items():
            grads[names[mod][0]] = A.grad.reshape(-1).tolist()
            grads[names[mod][1]] = B.grad.reshape(-1).tolist()
        atomic_write(a.grad, json.dumps(grads))
    else:
        with torch.no_grad():
            for ids, lm in seqs:
                s, t = m.seq_logps(ids, lm)
                logps.append(s.item())
                toks.append(t.tolist())
    atomic_write(a.out, json.dumps({"logps": logps, "token_logps": toks, "dtype": str(dtype).replace("torch.", ""),
                                    "adapter": bool(a.adapter), "scaling": scaling}))


# ----------------------------------------------------------------------------------------- writers
def full_config(c, dtype_name):
    cfg = Config(c, "--config")
    out = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
           "rms_norm_eps": 1e-5, "rope_theta": 1e6, "sliding_window": None, "tie_word_embeddings": False,
           "max_position_embeddings": 32768, "bos_token_id": 1, "eos_token_id": 2,
           "num_key_value_heads": cfg.KV, "head_dim": cfg.hd, "attention_dropout": 0.0}
    out.update(c)
    out["torch_dtype"] = dtype_name
    return out


def write_random(d, c, dtype_name, sharded, seed, std=0.02):
    os.makedirs(d, exist_ok=True)
    c = full_config(c, dtype_name)
    cfg = Config(c)
    g = torch.Generator().manual_seed(seed)
    w = {}
    for k, shp in sorted(cfg.shapes().items()):
        if k.endswith("norm.weight"):
            w[k] = 1 + 0.1 * torch.randn(shp, generator=g)
        else:
            w[k] = std * torch.randn(shp, generator=g)
    w = {k: t.to(DTYPES[dtype_name]) for k, t in w.items()}
    atomic_write(os.path.join(d, "config.json"), json.dumps(c, indent=2) + "\n")
    if not sharded:
        write_safetensors(os.path.join(d, "model.safetensors"), w)
        return w
    names = sorted(w)
    n = 3
    parts = [names[i::n] for i in range(n)]
    wm = {}
    for i, part in enumerate(parts):
        fn = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        write_safetensors(os.path.join(d, fn), {k: w[k] for k in part})
        wm.update({k: fn for k in part})
    total = sum(t.numel() * t.element_size() for t in w.values())
    atomic_write(os.path.join(d, "model.safetensors.index.json"),
                 json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}, indent=2))
    return w


def write_random_adapter(d, model_dir, r, alpha, rslora, targets, zero_b, dtype_name, seed):
    cfg = Config(read_json(os.path.join(model_dir, "config.json")))
    os.makedirs(d, exist_ok=True)
    tm = targets if targets else list(PROJ)
    mods = lora_targets(cfg, tm, "--targets")
    g = torch.Generator().manual_seed(seed)
    shp = cfg.proj_shapes()
    t = {}
    for m in mods:
        out_f, in_f = shp[m.rsplit(".", 1)[1]]
        t[f"base_model.model.{m}.lora_A.weight"] = torch.randn(r, in_f, generator=g) / math.sqrt(in_f)
        t[f"base_model.model.{m}.lora_B.weight"] = (torch.zeros(out_f, r) if zero_b
                                                    else 0.05 * torch.randn(out_f, r, generator=g))
    write_safetensors(os.path.join(d, "adapter_model.safetensors"), {k: v.to(DTYPES[dtype_name]) for k, v in t.items()})
    conf = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
            "target_modules": tm, "use_rslora": rslora, "bias": "none", "fan_in_fan_out": False,
            "init_lora_weights": True, "inference_mode": True, "use_dora": False, "modules_to_save": None,
            "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
            "base_model_name_or_path": os.path.abspath(model_dir)}
    atomic_write(os.path.join(d, "adapter_config.json"), json.dumps(conf, indent=2) + "\n")


# ----------------------------------------------------------------------------------------- self-test
def naive_logps(cfg, w, lora, scaling, ids, lm):
    """A float64 loop-per-head Mistral written from the architecture, not from the code above: RoPE on
    (j, j + hd/2) pairs with explicit angles, kv head h // (H/KV), -inf masking, merged LoRA weights."""
    W = {k: v.double() for k, v in w.items()}
    for m, (A, B) in lora.items():
        W[m + ".weight"] = W[m + ".weight"] + scaling * (B.double() @ A.double())
    T, hd, half = len(ids), cfg.hd, cfg.hd // 2

    def norm(x, g):
        return g * x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.eps)

    def rope(x, t):  # x [hd]
        out = torch.empty_like(x)
        for j in range(half):
            ang = t * cfg.theta ** (-2.0 * j / hd)
            c, s = math.cos(ang), math.sin(ang)
            out[j] = x[j] * c - x[j + half] * s
            out[j + half] = x[j + half] * c + x[j] * s
        return out

    h = W["model.embed_tokens.weight"][torch.tensor(ids)]
    for l in range(cfg.L):
        p = f"model.layers.{l}."
        x = norm(h, W[p + "input_layernorm.weight"])
        q = (x @ W[p + "self_attn.q_proj.weight"].T).reshape(T, cfg.H, hd)
        k = (x @ W[p + "self_attn.k_proj.weight"].T).reshape(T, cfg.KV, hd)
        v = (x @ W[p + "self_attn.v_proj.weight"].T).reshape(T, cfg.KV, hd)
        att = torch.zeros(T, cfg.H, hd, dtype=torch.float64)
        for hh in range(cfg.H):
            g = hh // (cfg.H // cfg.KV)
            for i in range(T):
                qi = rope(q[i, hh], i)
                keep = [j for j in range(i + 1) if cfg.window is None or i - j < cfg.window]
                sc = torch.stack([qi @ rope(k[j, g], j) for j in keep]) / math.sqrt(hd)
                pr = torch.exp(sc - sc.max())
                pr = pr / pr.sum()
                att[i, hh] = sum(pr[n] * v[j, g] for n, j in enumerate(keep))
        h = h + att.reshape(T, -1) @ W[p + "self_attn.o_proj.weight"].T
        x = norm(h, W[p + "post_attention_layernorm.weight"])
        gt = x @ W[p + "mlp.gate_proj.weight"].T
        h = h + ((gt * torch.sigmoid(gt)) * (x @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    h = norm(h, W["model.norm.weight"])
    logits = h @ (W["model.embed_tokens.weight"] if cfg.tied else W["lm_head.weight"]).T
    z = logits - torch.logsumexp(logits, -1, keepdim=True)
    return sum(z[t - 1, ids[t]].item() for t in range(1, T) if lm[t])


def selftest():
    torch.set_num_threads(2)
    fails = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            fails.append(what)

    def rel(a, b):
        return abs(a - b) / max(abs(b), 1e-12)

    base = {"vocab_size": 61, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 1e4, "rms_norm_eps": 1e-5}
    g = torch.Generator().manual_seed(7)
    seqs = []
    for T in (1, 2, 5, 9):
        ids = torch.randint(0, 61, (T,), generator=g).tolist()
        lm = [0] + [int(x) for x in (torch.rand(T - 1, generator=g) < 0.7).tolist()]
        seqs.append((ids, lm))
    seqs.append(([3, 1, 4, 1, 5, 9, 2, 6], [0, 0, 0, 1, 1, 1, 1, 1]))
    with tempfile.TemporaryDirectory() as tmp:
        P = lambda *x: os.path.join(tmp, *x)
        # 1. writer/reader round trip; sharded == single; bf16 close to f32.
        results = {}
        for dt in ("float32", "bfloat16"):
            for sh in (False, True):
                d = P(f"m-{dt}-{sh}")
                w0 = write_random(d, base, dt, sh, seed=1)
                cfg, w, dtype = load_model_dir(d)
                check(dtype == DTYPES[dt] and all(torch.equal(w[k], w0[k]) for k in w0) and set(w) == set(w0),
                      f"round trip {dt} sharded={sh}: every tensor bit-identical, dtype {dtype}")
                m = Mistral(cfg, w, dtype)
                with torch.no_grad():
                    results[(dt, sh)] = [m.seq_logps(i, l)[0].item() for i, l in seqs]
        check(results[("float32", False)] == results[("float32", True)], "float32: sharded == single file")
        check(results[("bfloat16", False)] == results[("bfloat16", True)], "bfloat16: sharded == single file")
        cfg, w32, _ = load_model_dir(P("m-float32-False"))
        # 2. against the naive float64 implementation (GQA mapping, RoPE, masking, norms, head).
        for name, extra in (("untied", {}), ("tied + sliding_window 3", {"tie_word_embeddings": True,
                                                                          "sliding_window": 3})):
            d = P("naive-" + name.split()[0])
            # std 0.15: sharp attention, so RoPE / GQA / mask mistakes move the log-probs visibly.
            write_random(d, dict(base, **extra), "float32", False, seed=2, std=0.15)
            c2, w2, dt2 = load_model_dir(d)
            m = Mistral(c2, w2, dt2)
            with torch.no_grad():
                got = [m.seq_logps(i, l)[0].item() for i, l in seqs]
            want = [naive_logps(c2, w2, {}, 1.0, i, l) for i, l in seqs]
            worst = max(rel(a, b) for a, b in zip(got, want) if b != 0)
            check(worst < 1e-5, f"float32 forward vs naive float64 loops ({name}): worst rel {worst:.2e} < 1e-5")
        b16 = results[("bfloat16", False)]
        m32 = Mistral(cfg, {k: v.to(torch.bfloat16).float() for k, v in w32.items()}, torch.float32)
        with torch.no_grad():
            f32_of_b16w = [m32.seq_logps(i, l)[0].item() for i, l in seqs]
        worst = max(rel(a, b) for a, b in zip(b16, f32_of_b16w) if b != 0)
        check(0 < worst < 2e-2, f"bfloat16 compute vs float32 compute of the same weights: rel {worst:.2e} in (0, 2e-2)")
        # 3. causality: full forward == forward over each prefix, token by token; no leakage.
        m = Mistral(cfg, w32, torch.float32)
        ids = seqs[3][0]
        with torch.no_grad():
            full = m.logits(torch.tensor([ids]))[0].log_softmax(-1)
            worst = 0.0
            for t in range(1, len(ids) + 1):
                pre = m.logits(torch.tensor([ids[:t]]))[0, -1].log_softmax(-1)
                worst = max(worst, (pre - full[t - 1]).abs().max().item())
            check(worst < 1e-5, f"causal: full forward == step-by-step prefixes, max |diff| {worst:.1e}")
            alt = list(ids)
            alt[5] = (alt[5] + 1) % 61
            fa = m.logits(torch.tensor([alt]))[0]
            fb = m.logits(torch.tensor([ids]))[0]
            check(torch.equal(fa[:5], fb[:5]) and not torch.equal(fa[5], fb[5]),
                  "causal: changing token 5 leaves logits 0..4 bit-identical and changes logits 5")
        # 4. LoRA: B = 0 is the base exactly; B != 0 equals the merged weights; rsLoRA scaling.
        for dt in ("float32", "bfloat16"):
            md = P(f"m-{dt}-False")
            write_random_adapter(P(f"a0-{dt}"), md, 4, 8, False, None, True, "float32", seed=3)
            c, w, dtype = load_model_dir(md)
            lora, sc, _ = load_adapter(P(f"a0-{dt}"), c, torch.float32)
            with torch.no_grad():
                got = [Mistral(c, w, dtype, lora, sc).seq_logps(i, l)[0].item() for i, l in seqs]
            check(got == results[(dt, False)], f"{dt}: LoRA with B = 0 gives the base log-probs bit-identically")
        write_random_adapter(P("a1"), P("m-float32-False"), 4, 8, False, ["q_proj", "v_proj", "down_proj"], False,
                             "float32", seed=4)
        lora, sc, _ = load_adapter(P("a1"), cfg, torch.float32)
        check(sc == 2.0 and len(lora) == 6, f"scaling alpha/r = 8/4 = {sc}, 3 targets x 2 layers = {len(lora)} modules")
        with torch.no_grad():
            la = [Mistral(cfg, w32, torch.float32, lora, sc).seq_logps(i, l)[0].item() for i, l in seqs]
            merged = dict(w32)
            for mod, (A, B) in lora.items():
                merged[mod + ".weight"] = w32[mod + ".weight"] + sc * (B @ A)
            lm_ = [Mistral(cfg, merged, torch.float32).seq_logps(i, l)[0].item() for i, l in seqs]
        worst = max(rel(a, b) for a, b in zip(la, lm_) if b != 0)
        moved = max(abs(a - b) for a, b in zip(la, results[("float32", False)]))
        check(worst < 1e-5 and moved > 1e-3, f"LoRA B != 0: unmerged == merged W + s*B@A (rel {worst:.1e}), "
                                             f"moves log-probs by {moved:.3f}")
        want = [naive_logps(cfg, w32, lora, sc, i, l) for i, l in seqs]
        worst = max(rel(a, b) for a, b in zip(la, want) if b != 0)
        check(worst < 1e-5, f"LoRA forward vs naive float64 with merged weights: rel {worst:.1e}")
        cpath = P("a1", "adapter_config.json")
        conf = read_json(cpath)
        conf.update(use_rslora=True, lora_alpha=4)  # 4/sqrt(4) = 2 = 8/4
        atomic_write(cpath, json.dumps(conf))
        lora_rs, sc_rs, _ = load_adapter(P("a1"), cfg, torch.float32)
        with torch.no_grad():
            lr = [Mistral(cfg, w32, torch.float32, lora_rs, sc_rs).seq_logps(i, l)[0].item() for i, l in seqs]
        check(sc_rs == 2.0 and lr == la, "use_rslora: alpha/sqrt(r) = 4/2 gives the same log-probs as alpha/r = 8/4")
        # 5. gradients of sum(logps) w.r.t. A and B against central differences, in float64.
        w64 = {k: v.double() for k, v in w32.items()}
        l64 = {k: (A.double().requires_grad_(True), B.double().requires_grad_(True)) for k, (A, B) in lora.items()}
        m64 = Mistral(cfg, w64, torch.float64, l64, sc)
        tot = sum(m64.seq_logps(i, l)[0] for i, l in seqs)
        tot.backward()
        worst = 0.0
        with torch.no_grad():
            for mod in sorted(l64)[:3]:
                for which in (0, 1):
                    t = l64[mod][which]
                    for idx in [(0, 0), (t.shape[0] - 1, t.shape[1] - 1), (1, 2)]:
                        old = t[idx].item()
                        t[idx] = old + 1e-6
                        up = sum(m64.seq_logps(i, l)[0] for i, l in seqs).item()
                        t[idx] = old - 1e-6
                        dn = sum(m64.seq_logps(i, l)[0] for i, l in seqs).item()
                        t[idx] = old
                        fd = (up - dn) / 2e-6
                        worst = max(worst, abs(fd - t.grad[idx].item()) / max(abs(fd), 1e-3))
        check(worst < 1e-5, f"grad of sum(logps) w.r.t. lora_A/lora_B vs central differences: rel {worst:.1e}")
        # 6. named errors, no crash: hostile and broken files.
        def refuses(what, fn, needle):
            try:
                fn()
            except RefError as e:
                check(needle in str(e), f"refuses {what}: {e}")
                return
            check(False, f"refuses {what}: accepted")
        hp = P("hostile.safetensors")
        atomic_write(hp, struct.pack("<Q", 1 << 63) + b"{}")
        refuses("header length 2^63", lambda: read_safetensors(hp), "header length")
        hdr = json.dumps({"x": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 16]}}).encode()
        atomic_write(hp, struct.pack("<Q", len(hdr)) + hdr + b"\0" * 16)
        refuses("huge shape", lambda: read_safetensors(hp), "needs")
        src = P("m-float32-False", "model.safetensors")
        raw = open(src, "rb").read()
        bad = P("trunc")
        os.makedirs(bad)
        atomic_write(os.path.join(bad, "config.json"), open(P("m-float32-False", "config.json")).read())
        atomic_write(os.path.join(bad, "model.safetensors"), raw[:-10])
        refuses("truncated file", lambda: load_model_dir(bad), "outside")
        c2 = dict(read_json(P("m-float32-False", "config.json")), intermediate_size=40)
        atomic_write(os.path.join(bad, "config.json"), json.dumps(c2))
        atomic_write(os.path.join(bad, "model.safetensors"), raw)
        refuses("misshapen tensor", lambda: load_model_dir(bad), "has shape")
        tw = dict(w32)
        del tw["model.layers.1.mlp.up_proj.weight"]
        tw["model.layers.1.mlp.extra.weight"] = torch.zeros(2)
        write_safetensors(os.path.join(bad, "model.safetensors"), tw)
        atomic_write(os.path.join(bad, "config.json"), open(P("m-float32-False", "config.json")).read())
        refuses("extra tensor", lambda: load_model_dir(bad), "unexpected tensor")
        del tw["model.layers.1.mlp.extra.weight"]
        write_safetensors(os.path.join(bad, "model.safetensors"), tw)
        refuses("missing tensor", lambda: load_model_dir(bad), "missing tensor")
        at = read_safetensors(P("a1", "adapter_model.safetensors"))
        at["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = torch.zeros(4, 32)
        write_safetensors(P("a1", "adapter_model.safetensors"), at)
        refuses("unknown adapter key", lambda: load_adapter(P("a1"), cfg, torch.float32), "unknown key")
        sp = P("seqs.json")
        atomic_write(sp, json.dumps([{"input_ids": [1, 99], "loss_mask": [0, 1]}]))
        refuses("token id out of range", lambda: read_seqs(sp, 61), "input_ids")
    print("selftest: %d failure(s)" % len(fails))
    return 1 if fails else 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--adapter")
    ap.add_argument("--seqs")
    ap.add_argument("--out")
    ap.add_argument("--grad", metavar="GRADS.json")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"])
    ap.add_argument("--adapter-dtype", choices=["float32", "model"], default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-random", metavar="DIR")
    ap.add_argument("--config", metavar="JSON|FILE")
    ap.add_argument("--sharded", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--write-random-adapter", metavar="DIR")
    ap.add_argument("--lora-r", type=int, default=4)
    ap.add_argument("--lora-alpha", type=float, default=8)
    ap.add_argument("--use-rslora", action="store_true")
    ap.add_argument("--targets")
    ap.add_argument("--zero-b", action="store_true")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.selftest:
            return selftest()
        if a.write_random:
            if not a.config:
                ap.error("--write-random needs --config")
            c = read_json(a.config) if os.path.exists(a.config) else json.loads(a.config)
            write_random(a.write_random, c, a.dtype or "float32", a.sharded, a.seed, a.std)
            return 0
        if a.write_random_adapter:
            if not a.model:
                ap.error("--write-random-adapter needs --model")
            la = int(a.lora_alpha) if a.lora_alpha == int(a.lora_alpha) else a.lora_alpha
            write_random_adapter(a.write_random_adapter, a.model, a.lora_r, la, a.use_rslora,
                                 a.targets.split(",") if a.targets else None, a.zero_b, a.dtype or "float32", a.seed)
            return 0
        if not (a.model and a.seqs and a.out):
            ap.error("need --model, --seqs and --out (or --selftest, --write-random, --write-random-adapter)")
        run(a)
        return 0
    except RefError as e:
        print(f"torch_mistral_ref: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # e.g. --config that is neither a file nor JSON
        print(f"torch_mistral_ref: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
