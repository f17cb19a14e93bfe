#!/usr/bin/env python3
"""KTO with TRL (>= 1.8) on ktoloader's kto/ shards, exactly as written: no re-tokenization.

    python examples/trl_kto.py --data OUT --output-dir runs/kto --max-steps 100

What it relies on, read from TRL's source (trl/trainer/kto_trainer.py, the stable KTOTrainer
that TRL 1.8 promoted out of trl.experimental.kto):

  - KTOTrainer.__init__ calls self._prepare_dataset(dataset, processing_class, args, name) on
    the train and eval datasets. That method extracts prompts, applies the chat template,
    tokenizes prompt and prompt+completion, drops rows whose prompt fills max_length and adds
    KL_completion_ids by rotating completion_ids inside each chunk of
    per_device_train_batch_size rows. ktoloader has already done all of it, token-exactly, so
    ShardKTOTrainer._prepare_dataset returns the dataset as is (after checking its columns).
  - The default collator, DataCollatorForUnpairedPreference.torch_call, reads prompt_ids,
    completion_ids, KL_completion_ids and label from each row: the kto/ column names, so no
    column mapping is needed. It concatenates prompt_ids + completion_ids into input_ids with
    completion_mask 0 on the prompt and 1 on the completion (the loss and log-probs are taken
    where completion_mask is 1, shifted by one), the same for the KL sequence under KL_*, and
    cuts each sequence to max_length. max_length is set to the manifest's max_len, which every
    prompt+completion and prompt+KL already fits, so that cut never fires.
  - The KL pairing is per batch, so a batch must be the manifest's --kto-batch-size rows, in
    file order: per_device_train_batch_size = kto_batch_size and a SequentialSampler
    (KTOConfig.train_sampling_strategy="sequential" does that on transformers >= 5.2, where
    TRL's own _get_train_sampler defers to Trainer; ShardKTOTrainer._get_train_sampler
    returns a SequentialSampler on every version).

Before training, the script checks the shards against TRL's formulas (KL pairs on a sample of
batches, lengths, ids below the model's vocab size) and, after building the trainer, collates
the first batch with the installed TRL's collator and compares it token by token with the rows.
"""

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ktoloader_shards as ks  # noqa: E402  (the folder's shared helper, stdlib only)

TRL_MIN = "1.8.0"  # KTOTrainer/KTOConfig importable from `trl`, DataCollatorForUnpairedPreference contract

# LoRA on every linear layer of a Mistral block; lm_head is left alone (TRL's fused/chunked
# loss paths read lm_head.weight directly and refuse an adapter there).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="ktoloader prep output directory (holds manifest.json)")
    p.add_argument("--model", default="unsloth/mistral-7b-v0.3", help="model id or local path (mistralai/Mistral-7B-v0.3 is the same model, gated)")
    p.add_argument("--tokenizer", default=None, help="tokenizer to hand TRL (only its pad/eos ids are used); default: --model")
    p.add_argument("--output-dir", default="runs/kto", help="checkpoints and the final model/adapter")
    p.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; -1 = --epochs over the train split")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--grad-accum", type=int, default=4, help="micro-batches per optimizer step; the KL estimate stays per micro-batch")
    p.add_argument("--learning-rate", type=float, default=None, help="default: 5e-6 with LoRA, TRL's 1e-6 for full fine-tuning")
    p.add_argument("--beta", type=float, default=0.1, help="KTO beta (TRL's default)")
    p.add_argument("--desirable-weight", type=float, default=None, help="default: manifest kto.desirable_weight")
    p.add_argument("--undesirable-weight", type=float, default=None, help="default: manifest kto.undesirable_weight")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank; 0 = full fine-tuning (a 7B model then needs several GPUs)")
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--attn-implementation", default=None, help="e.g. flash_attention_2, sdpa; default: the model's")
    p.add_argument("--eval-steps", type=int, default=0, help="evaluate on the test split every N steps (0: once at the end)")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--report-to", default="none", help="none, wandb, tensorboard, ...")
    p.add_argument("--check-batches", type=int, default=64, help="KTO batches whose KL pairs are checked before training (plus the last)")
    p.add_argument("--allow-demo-tokenizer", action="store_true", help="accept shards made with the demo tokenizer (plumbing tests only)")
    return p.parse_args(argv)


def kto_config_kwargs(manifest, args, has_eval):
    """KTOConfig keyword arguments: the data-dependent ones come from the manifest."""
    batch = ks.kto_batch_size(manifest)
    des, und = ks.kto_weights(manifest)
    lr = args.learning_rate if args.learning_rate is not None else (5e-6 if args.lora_r > 0 else 1e-6)
    model_init = {"dtype": "bfloat16"}  # TRL would otherwise load the model (and the reference) in float32
    if args.attn_implementation:
        model_init["attn_implementation"] = args.attn_implementation
    kw = dict(
        output_dir=args.output_dir,
        # One micro-batch = one ktoloader batch: the rows whose completions pair as KL.
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        train_sampling_strategy="sequential",
        # The last, partial batch was paired within itself, as TRL pairs it: keep it.
        dataloader_drop_last=False,
        # Every kto/ sequence fits max_len, so the collator's cut (full_ids[:max_length]) is a no-op.
        max_length=ks.max_len(manifest),
        desirable_weight=args.desirable_weight if args.desirable_weight is not None else des,
        undesirable_weight=args.undesirable_weight if args.undesirable_weight is not None else und,
        beta=args.beta,
        learning_rate=lr,
        gradient_accumulation_steps=args.grad_accum,
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        # The collator picks its four columns by name and ignores the rest; keeping the text
        # columns (prompt, completion, source, ...) costs nothing and does not depend on how a
        # given TRL version lists its signature columns.
        remove_unused_columns=False,
        model_init_kwargs=model_init,
        logging_steps=args.logging_steps,
        seed=args.seed,
        report_to=args.report_to,
    )
    if has_eval and args.eval_steps > 0:
        kw.update(eval_strategy="steps", eval_steps=args.eval_steps)
    return kw


def kl_check_rows(n_rows, batch_size, n_batches):
    """Row indices of the first n_batches batches and of the last batch (which may be partial)."""
    total = -(-n_rows // batch_size)
    picked = list(range(min(n_batches, total))) + ([total - 1] if total > n_batches else [])
    return [i for b in picked for i in range(b * batch_size, min((b + 1) * batch_size, n_rows))]


def check_split(ds, manifest, split, batch_size, max_length, n_batches):
    """Check one loaded kto/ split against the manifest and TRL's formulas; return its max id."""
    import pyarrow.compute as pc

    ks.check_columns(ds.column_names, ks.KTO_COLUMNS, f"kto/{split}")
    want = ks.expected_rows(manifest, "kto", split)
    if len(ds) != want:
        raise ks.ShardError(f"kto/{split}: {len(ds)} rows loaded, manifest says {want}")
    table = ds.with_format("arrow")[:]  # the split as one pyarrow.Table, in file order
    lens = {c: pc.list_value_length(table[c]).to_pylist() for c in ("prompt_ids", "completion_ids", "KL_completion_ids")}
    bad = ks.kto_length_errors(lens["prompt_ids"], lens["completion_ids"], lens["KL_completion_ids"], max_length)
    if bad:
        raise ks.ShardError(f"kto/{split}: {len(bad)} rows longer than max_len {max_length} (first: row {bad[0]})")
    idx = kl_check_rows(len(ds), batch_size, n_batches)
    sample = ds.select(idx)[:]
    # Check batch by batch: kl_pairing_errors expects its rows to start at a batch boundary.
    for start in range(0, len(idx), batch_size):
        end = min(start + batch_size, len(idx))
        if idx[start] % batch_size or idx[end - 1] - idx[start] != end - start - 1:
            continue
        errs = ks.kl_pairing_errors(sample["prompt_ids"][start:end], sample["completion_ids"][start:end],
                                    sample["KL_completion_ids"][start:end], batch_size, max_length)
        if errs:
            raise ks.ShardError(
                f"kto/{split}: row {idx[start + errs[0]]}'s KL_completion_ids is not TRL's pairing for batch size "
                f"{batch_size}; were the shards made with another --kto-batch-size, or reordered?"
            )
    return max(pc.max(pc.list_flatten(table[c])).as_py() or 0 for c in ("prompt_ids", "completion_ids", "KL_completion_ids"))


def main(argv=None):
    args = parse_args(argv)
    manifest = ks.read_manifest(args.data)
    ks.check_tokenizer(manifest, allow_demo=args.allow_demo_tokenizer)
    files = ks.shard_files(manifest, args.data, "kto")
    batch_size, max_length = ks.kto_batch_size(manifest), ks.max_len(manifest)

    # Heavy imports only now, so that --help and the checks above work anywhere.
    try:
        import datasets
        import transformers
        import trl
        from torch.utils.data import SequentialSampler
    except ImportError as e:
        sys.exit(f"trl_kto.py needs {e.name}: pip install 'trl>={TRL_MIN}' peft datasets pyarrow accelerate")

    if not ks.version_at_least(trl.__version__, TRL_MIN):
        sys.exit(f"trl {trl.__version__} is installed; this script needs trl >= {TRL_MIN} (pip install -U 'trl>={TRL_MIN}')")
    from trl import KTOConfig, KTOTrainer

    class ShardKTOTrainer(KTOTrainer):
        """KTOTrainer that trains on ktoloader's rows as they are."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            # TRL >= 1.8 signature (trl/trainer/kto_trainer.py, KTOTrainer._prepare_dataset).
            # Skipped: prompt extraction, chat template, tokenization, max_length filter, KL
            # rotation. ktoloader did each of them; doing them again would re-tokenize text.
            ks.check_columns(dataset.column_names, ks.KTO_COLUMNS, f"kto/{dataset_name}")
            return dataset

        def _get_train_sampler(self, train_dataset=None):
            # transformers >= 4.56 passes the dataset; rows must stay in file order so that each
            # micro-batch is one ktoloader batch. (DDP: accelerate hands whole batches of
            # per_device_train_batch_size consecutive rows to each process.)
            return SequentialSampler(self.train_dataset if train_dataset is None else train_dataset)

    data = datasets.load_dataset("parquet", data_files=files)
    max_id = max(check_split(data[s], manifest, s, batch_size, max_length, args.check_batches) for s in data)
    ks.check_vocab(max_id, transformers.AutoConfig.from_pretrained(args.model).vocab_size, manifest)

    tokenizer = transformers.AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    first = data["train"][0]
    if first["prompt_ids"][0] != tokenizer.bos_token_id or first["completion_ids"][-1] != tokenizer.eos_token_id:
        ks.warn(f"the shards' rows start with id {first['prompt_ids'][0]} and end with {first['completion_ids'][-1]}, "
                f"this tokenizer's bos/eos are {tokenizer.bos_token_id}/{tokenizer.eos_token_id}: wrong model?")

    peft_config = None
    if args.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM")

    eval_ds = data.get("test")
    config_kw = kto_config_kwargs(manifest, args, eval_ds is not None)
    if "train_sampling_strategy" not in {f.name for f in dataclasses.fields(KTOConfig)}:
        # A KTOConfig without the field predates it; the sampler override above covers it.
        del config_kw["train_sampling_strategy"]
    trainer = ShardKTOTrainer(
        model=args.model,  # with LoRA the reference model is the base with the adapter disabled
        args=KTOConfig(**config_kw),
        train_dataset=data["train"],
        eval_dataset=eval_ds,
        processing_class=tokenizer,  # used for pad_token_id only (padding is masked out)
        peft_config=peft_config,
    )

    # Proof on the installed TRL, not just on the source we read: its collator turns the first
    # batch into exactly the shards' ids.
    rows = [data["train"][i] for i in range(min(batch_size, len(data["train"])))]
    collated = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in trainer.data_collator(rows).items()}
    ks.check_collated_kto(rows, collated, max_length)

    trainer.train()
    if eval_ds is not None:
        print(trainer.evaluate())
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    try:
        main()
    except ks.ShardError as e:
        sys.exit(f"trl_kto.py: {e}")
