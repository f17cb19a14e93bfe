"""Reading a ktoloader output directory from Python, and the checks that tie it to TRL.

Standard library only, so that it imports (and examples/check_examples.py runs) without
torch, TRL, datasets or pyarrow. trl_kto.py and trl_sft.py import it from the same folder:
keep the three files together.

What lives here, and why it is not in the scripts:
  - the manifest: which shard files to load, the KTO batch size, max_len, the suggested KTO
    weights, whether the ids came from the demo tokenizer;
  - pure mirrors of the TRL code that consumes the rows, written from TRL's source (file and
    function named at each), so that the shards can be checked against what TRL will do with
    them before a GPU is spent on them:
      trl_kl_completions    TRL's KL pairing  (trl/trainer/kto_trainer.py, KTOTrainer._prepare_dataset,
                            inner add_kl_completion_ids, mapped batched with per_device_train_batch_size)
      kto_collated          DataCollatorForUnpairedPreference.torch_call (same file), one example
      positions_from_seq_lengths, padding_free_batch
                            DataCollatorForLanguageModeling (trl/trainer/sft_trainer.py):
                            get_position_ids_from_packed_seq_lengths and torch_call(padding_free=True)
  - strip_sft_row, the one transformation the SFT script applies (it drops trailing padding,
    it never tokenizes).
"""

import json
import os
import sys

# The columns DataCollatorForUnpairedPreference.torch_call reads from each example (TRL >= 1.8,
# trl/trainer/kto_trainer.py): it builds input_ids = prompt_ids + completion_ids with
# completion_mask 0 on the prompt and 1 on the completion, the same for KL_completion_ids under
# the KL_ prefix, and a tensor from label. ktoloader's kto/ columns have exactly these names.
KTO_COLUMNS = ("prompt_ids", "completion_ids", "KL_completion_ids", "label")

# The columns of sft/. DataCollatorForLanguageModeling reads input_ids, labels and seq_lengths;
# it ignores position_ids and rebuilds them from seq_lengths.
SFT_COLUMNS = ("input_ids", "labels", "position_ids", "seq_lengths")

IGNORE_INDEX = -100  # labels value that takes no loss (Hugging Face convention)


class ShardError(ValueError):
    """The output directory, its manifest or a row does not hold what the scripts rely on."""


class DemoTokenizerError(ShardError):
    """The shards were tokenized with ktoloader's small demo tokenizer, not Mistral's."""


def warn(msg):
    """Print a warning that a long training log will not hide."""
    print(f"\n*** WARNING: {msg}\n", file=sys.stderr, flush=True)


def read_manifest(out_dir):
    """Return OUT/manifest.json as a dict, or raise ShardError naming what is missing."""
    path = os.path.join(out_dir, "manifest.json")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ShardError(f"{path}: not found; is {out_dir!r} a finished `ktoloader prep --out` directory?") from None
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("tool") != "ktoloader":
        raise ShardError(f"{path}: not a ktoloader manifest (tool != 'ktoloader')")
    return manifest


def shard_files(manifest, out_dir, kind, suffix=".parquet"):
    """Return {split: [path, ...]} for the shards of `kind` (kto, kto_packed, sft).

    Paths come from manifest files[] (kind, split, path relative to OUT), keep only those
    ending in `suffix`, and are sorted by path, which is shard order (train-00000-of-00003,
    train-00001-of-00003, ...). Order matters for kto/: a KTO batch may straddle two shards and
    is only whole if the files are read in sequence. A listed file that is absent is an error.
    """
    by_split = {}
    for entry in manifest.get("files") or []:
        if entry.get("kind") != kind or not str(entry.get("path", "")).endswith(suffix):
            continue
        by_split.setdefault(entry["split"], []).append(entry["path"])
    if "train" not in by_split:
        formats = sorted({os.path.splitext(e.get("path", ""))[1] for e in manifest.get("files") or [] if e.get("kind") == kind})
        hint = f" (it has {', '.join(formats)}; re-run prep with --format parquet or both)" if formats else ""
        raise ShardError(f"manifest lists no {kind}/train*{suffix} shard{hint}")
    out = {}
    for split in sorted(by_split):
        paths = []
        for rel in sorted(by_split[split]):
            path = os.path.join(out_dir, *rel.split("/"))
            if not os.path.isfile(path):
                raise ShardError(f"{path}: listed in the manifest but missing")
            paths.append(path)
        out[split] = paths
    return out


def expected_rows(manifest, kind, split, suffix=".parquet"):
    """Rows the manifest promises for kind/split (summed over its shards)."""
    return sum(
        int(e.get("rows", 0))
        for e in manifest.get("files") or []
        if e.get("kind") == kind and e.get("split") == split and str(e.get("path", "")).endswith(suffix)
    )


def kto_batch_size(manifest):
    """The KTO batch size the kto/ rows were grouped and KL-paired by.

    TRL must use it as per_device_train_batch_size: its KL term is computed per batch from the
    KL_completion_ids of the rows in that batch, and ktoloader paired each row with the previous
    row of *its* batch. config.kto_batch_size and kto.batch_size must agree; TRL refuses < 2.
    """
    cfg = (manifest.get("config") or {}).get("kto_batch_size")
    kto = (manifest.get("kto") or {}).get("batch_size")
    if cfg is None and kto is None:
        raise ShardError("manifest has neither config.kto_batch_size nor kto.batch_size")
    if cfg is not None and kto is not None and int(cfg) != int(kto):
        raise ShardError(f"manifest disagrees with itself: config.kto_batch_size={cfg}, kto.batch_size={kto}")
    b = int(cfg if cfg is not None else kto)
    if b < 2:
        raise ShardError(f"kto batch size {b}: TRL's KTOTrainer needs at least 2 (its KL term needs other rows)")
    return b


def max_len(manifest):
    """The --max-len every kto/ sequence (prompt+completion and prompt+KL) and sft/ row fits."""
    v = (manifest.get("config") or {}).get("max_len") or (manifest.get("packing") or {}).get("max_len")
    if not v:
        raise ShardError("manifest has no config.max_len")
    return int(v)


def kto_weights(manifest):
    """The suggested (desirable_weight, undesirable_weight) from the manifest, 1.0 when absent."""
    kto = manifest.get("kto") or {}
    return float(kto.get("desirable_weight", 1.0)), float(kto.get("undesirable_weight", 1.0))


def check_tokenizer(manifest, allow_demo):
    """Refuse demo-tokenizer shards unless allow_demo.

    The demo tokenizer (used by an offline `prep` with no Mistral tokenizer found) puts
    Mistral's control tokens at Mistral's ids but everything else is its own small vocabulary:
    a real Mistral would train on ids that mean other words. The vocabulary check cannot catch
    it (4000 < 32768), so the manifest flag is the only guard.
    """
    tok = manifest.get("tokenizer") or {}
    if not tok.get("demo"):
        return
    msg = (
        f"these shards were tokenized with ktoloader's DEMO tokenizer ({tok.get('name', '?')}, "
        f"vocab {tok.get('vocab_size', '?')}), not Mistral's: their ids are not Mistral's ids. "
        "Re-run `ktoloader prep --tokenizer PATH/mistral-7b-v0.3` (or with the model in the Hugging Face cache)."
    )
    if not allow_demo:
        raise DemoTokenizerError(msg + " Pass --allow-demo-tokenizer only for a plumbing smoke test.")
    warn(msg + " Continuing because --allow-demo-tokenizer was given: the result is NOT a trained model.")


def check_vocab(max_id, model_vocab_size, manifest):
    """Raise unless every id is below the model's vocabulary size; warn on a size mismatch.

    An id >= vocab_size indexes past the embedding table (a CUDA device-side assert at best).
    """
    if max_id is None:
        raise ShardError("no token ids found in the shards")
    if max_id >= model_vocab_size:
        raise ShardError(f"largest token id in the shards is {max_id} but the model's vocab_size is {model_vocab_size}")
    tok_vocab = (manifest.get("tokenizer") or {}).get("vocab_size")
    if tok_vocab and int(tok_vocab) != int(model_vocab_size):
        warn(f"the shards' tokenizer has {tok_vocab} tokens, the model's vocabulary {model_vocab_size}: is it the model the shards were made for?")


def check_columns(columns, required, what):
    """Raise ShardError naming the columns of `required` that `columns` lacks."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise ShardError(f"{what}: missing column(s) {', '.join(missing)}; has {', '.join(columns)}")


def version_at_least(have, minimum):
    """Compare 'X.Y.Z[suffix]' versions by their first three numbers ('1.10.0.dev0' >= '1.8')."""

    def nums(v):
        out = []
        for part in str(v).split(".")[:3]:
            digits = ""
            for ch in part:
                if not ch.isdigit():
                    break
                digits += ch
            out.append(int(digits or 0))
        return tuple(out + [0] * (3 - len(out)))

    return nums(have) >= nums(minimum)


# ---- KTO: mirrors of trl/trainer/kto_trainer.py (TRL >= 1.8) ----


def trl_kl_completions(completions, batch_size):
    """The KL completions TRL itself would assign, batch by batch.

    Mirrors KTOTrainer._prepare_dataset's inner add_kl_completion_ids, which datasets.map runs
    with batched=True, batch_size=per_device_train_batch_size, i.e. on consecutive chunks of
    batch_size rows (the last may be shorter):
        examples["KL_completion_ids"] = [examples["completion_ids"][-1]] + examples["completion_ids"][:-1]
    """
    out = []
    for start in range(0, len(completions), batch_size):
        chunk = completions[start : start + batch_size]
        out.extend([chunk[-1]] + chunk[:-1])
    return out


def kl_pairing_errors(prompts, completions, kls, batch_size, max_length):
    """Indices of rows whose KL_completion_ids is not TRL's pairing.

    Expected: trl_kl_completions(completions, batch_size)[i], cut to max_length - len(prompt_i)
    when prompt+KL would not fit: ktoloader applies, at write time, the cut that
    DataCollatorForUnpairedPreference.torch_call makes (full_ids[: max_length]), so that TRL's
    own cut is a no-op. Rows must start at a batch boundary.
    """
    expected = trl_kl_completions(list(completions), batch_size)
    bad = []
    for i, (p, want, got) in enumerate(zip(prompts, expected, kls)):
        room = max(0, max_length - len(p))
        if list(got) != list(want)[:room]:
            bad.append(i)
    return bad


def kto_length_errors(prompt_lens, completion_lens, kl_lens, max_length):
    """Indices of rows where prompt+completion or prompt+KL exceeds max_length.

    Such a row would be silently cut by the collator (keep_start): its completion, the part
    that takes the loss, would lose its end. ktoloader never writes one; this checks it.
    """
    return [
        i
        for i, (p, c, k) in enumerate(zip(prompt_lens, completion_lens, kl_lens))
        if p + c > max_length or p + k > max_length
    ]


def kto_collated(row, max_length):
    """One example as DataCollatorForUnpairedPreference.torch_call builds it, before padding.

    For prefix "" with completion_ids and "KL_" with KL_completion_ids:
        full_ids = prompt_ids + answer_ids
        completion_mask = [0] * len(prompt_ids) + [1] * len(answer_ids)
        truncated to max_length (keep_start); attention_mask is 1 on every kept token.
    Padding (right, pad_token_id; attention_mask 0, completion_mask 0) comes after.
    """
    out = {}
    for prefix, key in (("", "completion_ids"), ("KL_", "KL_completion_ids")):
        if key not in row:
            continue
        ids = list(row["prompt_ids"]) + list(row[key])
        mask = [0] * len(row["prompt_ids"]) + [1] * len(row[key])
        if max_length is not None:
            ids, mask = ids[:max_length], mask[:max_length]
        out[prefix + "input_ids"] = ids
        out[prefix + "attention_mask"] = [1] * len(ids)
        out[prefix + "completion_mask"] = mask
    out["label"] = bool(row["label"])
    return out


def check_collated_kto(rows, batch, max_length):
    """Raise unless TRL's collated batch (tensors as lists) holds exactly rows' ids.

    Run by trl_kto.py on the first batch, against the collator of the TRL actually installed:
    if a future TRL renamed a column or changed how it assembles the sequence, this fails
    before training instead of training on something else.
    """
    for key in ("input_ids", "attention_mask", "completion_mask", "KL_input_ids", "KL_attention_mask", "KL_completion_mask", "label"):
        if key not in batch:
            raise ShardError(f"TRL's KTO collator returned no {key!r} (keys: {sorted(batch)}); this TRL's data contract differs from the one these examples were written for")
    for i, row in enumerate(rows):
        want = kto_collated(row, max_length)
        for key in ("input_ids", "attention_mask", "completion_mask", "KL_input_ids", "KL_attention_mask", "KL_completion_mask"):
            got = list(batch[key][i])
            n = len(want[key])
            if got[:n] != want[key]:
                raise ShardError(f"TRL's collator built {key}[{i}] differently from prompt_ids + completion ids")
            if key.endswith("mask") and any(got[n:]):
                raise ShardError(f"TRL's collator left {key}[{i}] non-zero on padding")
        if bool(batch["label"][i]) != want["label"]:
            raise ShardError(f"TRL's collator changed label[{i}]")


# ---- SFT: mirrors of trl/trainer/sft_trainer.py, DataCollatorForLanguageModeling ----


def positions_from_seq_lengths(seq_lengths):
    """Position ids that restart at 0 per sequence, for one packed row.

    What DataCollatorForLanguageModeling.get_position_ids_from_packed_seq_lengths computes
    (ones, a negative jump at each sequence start, cumsum), written as the plain loop.
    """
    out = []
    for n in seq_lengths:
        out.extend(range(int(n)))
    return out


def strip_sft_row(row):
    """Drop the trailing padding of one sft/ row, checking the row on the way.

    ktoloader pads every packed row to max_len (input 0, label -100, position 0). TRL's
    padding-free collator concatenates a batch's rows and derives position_ids from
    seq_lengths, whose sum is the *unpadded* length: kept, the padding would make input_ids
    longer than position_ids, and the two no longer line up. Cutting each row at
    sum(seq_lengths) is therefore required, and it is the only change made: no id is
    re-tokenized or moved. Returns {"input_ids", "labels", "seq_lengths"}; position_ids is
    checked against seq_lengths and then dropped (TRL rebuilds the same values).
    """
    seq = [int(n) for n in row["seq_lengths"]]
    n = sum(seq)
    ids, labels = list(row["input_ids"]), list(row["labels"])
    if not seq or any(s <= 0 for s in seq):
        raise ShardError(f"seq_lengths {seq}: must be positive")
    if len(labels) != len(ids) or n > len(ids):
        raise ShardError(f"row of {len(ids)} ids, {len(labels)} labels, seq_lengths summing to {n}")
    if any(lbl != IGNORE_INDEX for lbl in labels[n:]):
        raise ShardError("padding after sum(seq_lengths) carries labels: seq_lengths is short")
    if "position_ids" in row and row["position_ids"] is not None:
        if list(row["position_ids"][:n]) != positions_from_seq_lengths(seq):
            raise ShardError("position_ids do not restart at 0 where seq_lengths says a sequence starts")
    return {"input_ids": ids[:n], "labels": labels[:n], "seq_lengths": seq}


def padding_free_batch(rows):
    """A batch of stripped rows as DataCollatorForLanguageModeling(padding_free=True) builds it.

    torch_call concatenates the rows into one sequence of shape [1, total], position_ids from
    seq_lengths, no attention_mask (FlashAttention reads the sequence boundaries from the
    position resets), and then sets labels to -100 wherever position_ids == 0: the first token
    of every sequence, which would otherwise be predicted from the previous sequence's end.
    """
    ids, labels, pos = [], [], []
    for r in rows:
        ids.extend(r["input_ids"])
        labels.extend(r["labels"])
        pos.extend(positions_from_seq_lengths(r["seq_lengths"]))
    if len(pos) != len(ids):
        raise ShardError(f"flattened batch has {len(ids)} ids but {len(pos)} positions (unstripped padding?)")
    labels = [IGNORE_INDEX if p == 0 else lbl for p, lbl in zip(pos, labels)]
    return {"input_ids": [ids], "labels": [labels], "position_ids": [pos]}


def check_collated_sft(rows, batch):
    """Raise unless TRL's padding-free batch (tensors as lists) equals padding_free_batch(rows)."""
    want = padding_free_batch(rows)
    if "attention_mask" in batch:
        raise ShardError("TRL's SFT collator returned an attention_mask: padding_free is not in effect")
    for key in ("input_ids", "labels", "position_ids"):
        if key not in batch:
            raise ShardError(f"TRL's SFT collator returned no {key!r} (keys: {sorted(batch)})")
        got = [list(r) for r in batch[key]]
        n = len(want[key][0])
        # pad_to_multiple_of may pad the end (ids: pad id, labels: -100, positions: 0).
        if len(got) != 1 or got[0][:n] != want[key][0]:
            raise ShardError(f"TRL's padding-free collator built {key} differently from the shards' rows")
