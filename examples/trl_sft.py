#!/usr/bin/env python3
"""SFT with TRL (>= 1.8) on ktoloader's sft/ shards: already packed, already labelled.

    python examples/trl_sft.py --data OUT --output-dir runs/sft --max-steps 100

What it relies on, read from TRL's source (trl/trainer/sft_trainer.py and sft_config.py):

  - dataset_kwargs={"skip_prepare_dataset": True} makes SFTTrainer.__init__ skip
    _prepare_dataset: no chat template, no tokenization, no label building, no truncation, no
    packing. The rows reach the collator as written.
  - padding_free=True selects DataCollatorForLanguageModeling(padding_free=True). Its
    torch_call reads input_ids, labels (used as given: -100 takes no loss) and seq_lengths;
    it concatenates the batch's rows into one sequence, rebuilds position_ids from seq_lengths
    (get_position_ids_from_packed_seq_lengths: restart at 0 per sequence, exactly the shards'
    position_ids), sends no attention_mask, and sets labels to -100 where position_ids == 0.
    SFTTrainer refuses padding_free without packing unless max_length=None (the rows already
    fit max_len), and with packing=False nothing is re-packed.
  - The one transformation: each row is cut at sum(seq_lengths). ktoloader pads rows to
    max_len; seq_lengths covers only the real tokens, so a padded row would give the collator
    more input_ids than position_ids. Cutting the padding is required and changes no token
    (ktoloader_shards.strip_sft_row checks the row on the way).
  - Sequences in one flattened row must not attend to each other. FlashAttention
    (attn_implementation flash_attention_2/3) separates them from the position_ids resets;
    it is the default here. Other implementations depend on transformers' own packed-sequence
    detection (masking_utils.find_packed_sequence_indices) and TRL warns about them.

After building the trainer, the script collates two rows with the installed TRL's collator and
compares the result token by token with what the shards say it must be.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ktoloader_shards as ks  # noqa: E402  (the folder's shared helper, stdlib only)

TRL_MIN = "1.8.0"  # the version trl_kto.py needs; SFT's padding-free contract is the same there
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="ktoloader prep output directory (holds manifest.json)")
    p.add_argument("--model", default="unsloth/mistral-7b-v0.3", help="model id or local path (mistralai/Mistral-7B-v0.3 is the same model, gated)")
    p.add_argument("--tokenizer", default=None, help="tokenizer to hand TRL (only its pad id is used); default: --model")
    p.add_argument("--output-dir", default="runs/sft", help="checkpoints and the final model/adapter")
    p.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; -1 = --epochs over the train split")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=2, help="packed rows per micro-batch (each up to max_len tokens)")
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=None, help="default: 1e-4 with LoRA, TRL's 2e-5 for full fine-tuning")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank; 0 = full fine-tuning")
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--attn-implementation", default="flash_attention_2",
                   help="flash_attention_2 (default; keeps packed sequences apart), or e.g. sdpa, see README")
    p.add_argument("--eval-steps", type=int, default=0, help="evaluate on the test split every N steps (0: once at the end)")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--report-to", default="none", help="none, wandb, tensorboard, ...")
    p.add_argument("--allow-demo-tokenizer", action="store_true", help="accept shards made with the demo tokenizer (plumbing tests only)")
    return p.parse_args(argv)


def sft_config_kwargs(manifest, args, has_eval):
    """SFTConfig keyword arguments for already-packed, already-labelled rows."""
    ks.max_len(manifest)  # a manifest without it is not one these rows can be trusted from
    lr = args.learning_rate if args.learning_rate is not None else (1e-4 if args.lora_r > 0 else 2e-5)
    kw = dict(
        output_dir=args.output_dir,
        dataset_kwargs={"skip_prepare_dataset": True},  # rows are final: no template, tokenizer or packer
        packing=False,  # already packed (best-fit-decreasing) by ktoloader
        padding_free=True,  # flatten each batch; boundaries come from seq_lengths
        max_length=None,  # required by padding_free without packing; every row fits max_len already
        completion_only_loss=False,  # `labels` already carries the loss mask (--sft-loss)
        # The collator reads input_ids, labels and seq_lengths by name; no column need be dropped.
        remove_unused_columns=False,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=lr,
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        model_init_kwargs={"dtype": "bfloat16", "attn_implementation": args.attn_implementation},
        logging_steps=args.logging_steps,
        seed=args.seed,
        report_to=args.report_to,
    )
    if has_eval and args.eval_steps > 0:
        kw.update(eval_strategy="steps", eval_steps=args.eval_steps)
    return kw


def load_split(datasets, files, manifest, split):
    """Load sft/SPLIT, check it against the manifest, strip each row's padding."""
    ds = datasets.load_dataset("parquet", data_files={split: files}, split=split)
    ks.check_columns(ds.column_names, ks.SFT_COLUMNS, f"sft/{split}")
    want = ks.expected_rows(manifest, "sft", split)
    if len(ds) != want:
        raise ks.ShardError(f"sft/{split}: {len(ds)} rows loaded, manifest says {want}")
    # map (not with_transform): the result is cached and TRL sees a plain dataset.
    return ds.map(ks.strip_sft_row, remove_columns=["position_ids"], desc=f"Stripping padding from sft/{split}")


def main(argv=None):
    args = parse_args(argv)
    manifest = ks.read_manifest(args.data)
    ks.check_tokenizer(manifest, allow_demo=args.allow_demo_tokenizer)
    files = ks.shard_files(manifest, args.data, "sft")

    try:
        import datasets
        import pyarrow.compute as pc
        import transformers
        import trl
    except ImportError as e:
        sys.exit(f"trl_sft.py needs {e.name}: pip install 'trl>={TRL_MIN}' peft datasets pyarrow accelerate")

    if not ks.version_at_least(trl.__version__, TRL_MIN):
        sys.exit(f"trl {trl.__version__} is installed; this script needs trl >= {TRL_MIN} (pip install -U 'trl>={TRL_MIN}')")
    from trl import SFTConfig, SFTTrainer

    data = {split: load_split(datasets, paths, manifest, split) for split, paths in files.items()}
    max_id = max(pc.max(pc.list_flatten(ds.with_format("arrow")[:]["input_ids"])).as_py() or 0 for ds in data.values())
    ks.check_vocab(max_id, transformers.AutoConfig.from_pretrained(args.model).vocab_size, manifest)
    if not args.attn_implementation.startswith(("flash_attention", "kernels-community/")):
        ks.warn(f"attn_implementation={args.attn_implementation}: packed sequences stay apart only if transformers "
                "detects them from position_ids (masking_utils.find_packed_sequence_indices); flash_attention_2 is TRL's supported path")

    tokenizer = transformers.AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    peft_config = None
    if args.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM")

    eval_ds = data.get("test")
    trainer = SFTTrainer(
        model=args.model,
        args=SFTConfig(**sft_config_kwargs(manifest, args, eval_ds is not None)),
        train_dataset=data["train"],
        eval_dataset=eval_ds,
        processing_class=tokenizer,  # a tokenizer, not AutoProcessor's guess; only its pad id is used
        peft_config=peft_config,
    )

    # Proof on the installed TRL: its padding-free collator turns two rows into exactly the
    # shards' tokens, labels and position ids.
    rows = [data["train"][i] for i in range(min(2, len(data["train"])))]
    collated = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in trainer.data_collator(rows).items()}
    ks.check_collated_sft(rows, collated)

    trainer.train()
    if eval_ds is not None:
        print(trainer.evaluate())
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    try:
        main()
    except ks.ShardError as e:
        sys.exit(f"trl_sft.py: {e}")
