#!/usr/bin/env python3
"""Self-check of the TRL examples without torch, TRL or a GPU (standard library only).

    python3 examples/check_examples.py                 # helpers and script settings, synthetic rows
    python3 examples/check_examples.py --data OUT      # also every row of OUT's kto/ and sft/ shards
                                                       # (needs pyarrow to read Parquet)
    python3 examples/check_examples.py --data OUT --rows-dir DUMP
                                                       # same without pyarrow, reading DUMP/kto/train-…jsonl
                                                       # as `ktoloader dump OUT --to DUMP` writes them

Exit status: 0 every check ran and passed; 1 a check failed; 2 bad arguments; 3 SKIPPED: a
check that was asked for could not run (--data without pyarrow and without --rows-dir), so
nothing is claimed about it. A run without --data checks the helpers only and says so.

The references are TRL's own formulas and docstring examples (trl/trainer/kto_trainer.py:
add_kl_completion_ids in KTOTrainer._prepare_dataset, DataCollatorForUnpairedPreference;
trl/trainer/sft_trainer.py: DataCollatorForLanguageModeling) transcribed as TRL writes them,
not the helpers' loops, and ktoloader's pairing rule (kto/batch.go, BatchRows). On real shards
it also checks that the sft/ sequences are the desirable kto/ examples token for token.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import ktoloader_shards as ks  # noqa: E402
import trl_kto  # noqa: E402
import trl_sft  # noqa: E402

DATA = None  # --data
ROWS_DIR = None  # --rows-dir


def pad_right(rows, value):
    width = max(len(r) for r in rows)
    return [list(r) + [value] * (width - len(r)) for r in rows]


def trl_rotate_reference(completions, batch_size):
    """TRL's code as written, run the way datasets.map(batched=True, batch_size=B) runs it."""

    def add_kl_completion_ids(examples):  # trl/trainer/kto_trainer.py, KTOTrainer._prepare_dataset
        examples["KL_completion_ids"] = [examples["completion_ids"][-1]] + examples["completion_ids"][:-1]
        return examples

    out = []
    for start in range(0, len(completions), batch_size):
        out += add_kl_completion_ids({"completion_ids": completions[start : start + batch_size]})["KL_completion_ids"]
    return out


def trl_positions_reference(batch_seq_lengths):
    """DataCollatorForLanguageModeling.get_position_ids_from_packed_seq_lengths, without torch."""
    example_lengths = [sum(s) for s in batch_seq_lengths]
    flat = [n for s in batch_seq_lengths for n in s]
    pos = [1] * sum(example_lengths)
    pos[0] = 0
    acc = 0
    for n in flat[:-1]:  # position_ids[cumsum(lengths[:-1])] = -(lengths[:-1] - 1)
        acc += n
        pos[acc] = -(n - 1)
    for i in range(1, len(pos)):  # cumsum
        pos[i] += pos[i - 1]
    out, at = [], 0
    for n in example_lengths:  # split back per example
        out.append(pos[at : at + n])
        at += n
    return out


def ktoloader_batch_rows(batch, max_len):
    """kto/batch.go BatchRows: row j's KL is row j-1's completion (row 0 takes the last), cut to fit."""
    rows = []
    for j, (p, c, label) in enumerate(batch):
        kl = batch[(j + len(batch) - 1) % len(batch)][1]
        rows.append({"prompt_ids": p, "completion_ids": c, "KL_completion_ids": kl[: max(0, max_len - len(p))], "label": label})
    return rows


def synthetic_examples(n, rng, vocab=50):
    return [([1] + [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 9))],
             [rng.randrange(3, vocab) for _ in range(rng.randrange(0, 6))] + [2],
             i % 2 == 0) for i in range(n)]


def manifest_for(tmp, files, **over):
    m = {
        "format_version": 1, "tool": "ktoloader",
        "config": {"kto_batch_size": 4, "max_len": 2048, "sft_loss": "completion"},
        "tokenizer": {"name": "tokenizer.model", "demo": False, "vocab_size": 32768},
        "packing": {"max_len": 2048},
        "kto": {"batch_size": 4, "desirable_weight": 1.25, "undesirable_weight": 1.0},
        "files": files,
    }
    for k, v in over.items():
        m[k] = v
    with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(m, f)
    return m


def touch(tmp, rel):
    path = os.path.join(tmp, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


class ManifestTest(unittest.TestCase):
    def test_shard_files_sorted_by_path_and_filtered(self):
        with tempfile.TemporaryDirectory() as tmp:
            files = [
                {"path": "kto/train-00001-of-00002.parquet", "kind": "kto", "split": "train", "rows": 3},
                {"path": "kto/train-00000-of-00002.parquet", "kind": "kto", "split": "train", "rows": 4},
                {"path": "kto/train-00000-of-00001.arrow", "kind": "kto", "split": "train", "rows": 7},
                {"path": "kto/test-00000-of-00001.parquet", "kind": "kto", "split": "test", "rows": 2},
                {"path": "sft/train-00000-of-00001.parquet", "kind": "sft", "split": "train", "rows": 1},
            ]
            for f in files:
                touch(tmp, f["path"])
            m = manifest_for(tmp, files)
            got = ks.shard_files(ks.read_manifest(tmp), tmp, "kto")
            self.assertEqual(sorted(got), ["test", "train"])
            self.assertEqual([os.path.basename(p) for p in got["train"]],
                             ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"])
            self.assertEqual(ks.expected_rows(m, "kto", "train"), 7)
            self.assertEqual(list(ks.shard_files(m, tmp, "sft")), ["train"])

    def test_missing_shard_and_arrow_only_are_errors(self):
        with tempfile.TemporaryDirectory() as tmp:
            m = manifest_for(tmp, [{"path": "kto/train-00000-of-00001.parquet", "kind": "kto", "split": "train"}])
            with self.assertRaisesRegex(ks.ShardError, "missing"):
                ks.shard_files(m, tmp, "kto")
            m = manifest_for(tmp, [{"path": "kto/train-00000-of-00001.arrow", "kind": "kto", "split": "train"}])
            with self.assertRaisesRegex(ks.ShardError, r"\.arrow"):
                ks.shard_files(m, tmp, "kto")

    def test_read_manifest_refuses_other_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(ks.ShardError, "not found"):
                ks.read_manifest(tmp)
            with open(os.path.join(tmp, "manifest.json"), "w") as f:
                f.write('{"tool": "other"}')
            with self.assertRaisesRegex(ks.ShardError, "not a ktoloader manifest"):
                ks.read_manifest(tmp)

    def test_batch_size_weights_max_len(self):
        m = {"config": {"kto_batch_size": 8, "max_len": 1024}, "kto": {"batch_size": 8, "desirable_weight": 1.33}}
        self.assertEqual(ks.kto_batch_size(m), 8)
        self.assertEqual(ks.max_len(m), 1024)
        self.assertEqual(ks.kto_weights(m), (1.33, 1.0))
        with self.assertRaisesRegex(ks.ShardError, "disagrees"):
            ks.kto_batch_size({"config": {"kto_batch_size": 8}, "kto": {"batch_size": 4}})
        with self.assertRaisesRegex(ks.ShardError, "at least 2"):
            ks.kto_batch_size({"config": {"kto_batch_size": 1}})

    def test_demo_tokenizer_refused_unless_allowed(self):
        m = {"tokenizer": {"name": "<embedded>/demo-tokenizer/tokenizer.model", "demo": True, "vocab_size": 4000}}
        with self.assertRaises(ks.DemoTokenizerError):
            ks.check_tokenizer(m, allow_demo=False)
        ks.check_tokenizer(m, allow_demo=True)  # warns, does not raise
        ks.check_tokenizer({"tokenizer": {"demo": False}}, allow_demo=False)

    def test_vocab(self):
        m = {"tokenizer": {"vocab_size": 32768}}
        ks.check_vocab(32767, 32768, m)
        with self.assertRaisesRegex(ks.ShardError, "vocab_size is 32768"):
            ks.check_vocab(32768, 32768, m)

    def test_version_at_least(self):
        self.assertTrue(ks.version_at_least("1.8.0", "1.8.0"))
        self.assertTrue(ks.version_at_least("1.10.0.dev0", "1.8.0"))
        self.assertTrue(ks.version_at_least("2.0", "1.8.0"))
        self.assertFalse(ks.version_at_least("1.7.3", "1.8.0"))
        self.assertFalse(ks.version_at_least("0.29.1", "1.8.0"))


class KTOContractTest(unittest.TestCase):
    def test_rotation_matches_trl(self):
        for n in range(0, 21):
            for b in range(2, 6):
                comps = [[i] for i in range(n)]
                self.assertEqual(ks.trl_kl_completions(comps, b), trl_rotate_reference(comps, b), (n, b))

    def test_ktoloader_pairing_is_trl_pairing(self):
        rng = random.Random(7)
        for trial in range(200):
            b = rng.randrange(2, 9)
            exs = synthetic_examples(rng.randrange(1, 40), rng)
            max_len = rng.choice([6, 10, 2048])
            rows = [r for s in range(0, len(exs), b) for r in ktoloader_batch_rows(exs[s : s + b], max_len)]
            cols = {k: [r[k] for r in rows] for k in ks.KTO_COLUMNS}
            self.assertEqual(ks.kl_pairing_errors(cols["prompt_ids"], cols["completion_ids"], cols["KL_completion_ids"], b, max_len), [])
            if max_len == 2048:  # nothing cut: the KL column is exactly TRL's rotation
                self.assertEqual(cols["KL_completion_ids"], trl_rotate_reference(cols["completion_ids"], b))

    def test_pairing_errors_found(self):
        rng = random.Random(3)
        exs = synthetic_examples(12, rng)
        rows = [r for s in range(0, 12, 4) for r in ktoloader_batch_rows(exs[s : s + 4], 2048)]
        p, c, k = ([r[key] for r in rows] for key in ("prompt_ids", "completion_ids", "KL_completion_ids"))
        k[5] = k[5] + [7]
        self.assertEqual(ks.kl_pairing_errors(p, c, k, 4, 2048), [5])
        k[5] = k[5][:-1]
        self.assertNotEqual(ks.kl_pairing_errors(p, c, k, 3, 2048), [])  # made for 4, checked as 3

    def test_length_errors(self):
        self.assertEqual(ks.kto_length_errors([3, 3, 3], [5, 6, 1], [1, 1, 6], 8), [1, 2])

    def test_collated_matches_trl_docstring(self):
        # DataCollatorForUnpairedPreference docstring example (trl/trainer/kto_trainer.py), pad_token_id=0.
        examples = [
            {"prompt_ids": [1, 2, 3], "completion_ids": [4, 5], "KL_completion_ids": [6], "label": True},
            {"prompt_ids": [7, 8], "completion_ids": [9], "KL_completion_ids": [10, 11], "label": False},
        ]
        trl_output = {
            "input_ids": [[1, 2, 3, 4, 5], [7, 8, 9, 0, 0]],
            "attention_mask": [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]],
            "completion_mask": [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]],
            "KL_input_ids": [[1, 2, 3, 6], [7, 8, 10, 11]],
            "KL_attention_mask": [[1, 1, 1, 1], [1, 1, 1, 1]],
            "KL_completion_mask": [[0, 0, 0, 1], [0, 0, 1, 1]],
            "label": [True, False],
        }
        mine = [ks.kto_collated(e, None) for e in examples]
        for key, pad in (("input_ids", 0), ("attention_mask", 0), ("completion_mask", 0),
                         ("KL_input_ids", 0), ("KL_attention_mask", 0), ("KL_completion_mask", 0)):
            self.assertEqual(pad_right([m[key] for m in mine], pad), trl_output[key], key)
        ks.check_collated_kto(examples, trl_output, None)
        bad = dict(trl_output, input_ids=[[1, 2, 3, 4, 6], [7, 8, 9, 0, 0]])
        with self.assertRaisesRegex(ks.ShardError, "input_ids"):
            ks.check_collated_kto(examples, bad, None)
        bad = dict(trl_output, completion_mask=[[0, 0, 0, 1, 1], [0, 0, 1, 1, 0]])
        with self.assertRaisesRegex(ks.ShardError, "completion_mask"):
            ks.check_collated_kto(examples, bad, None)
        older = {k.replace("input_ids", "completion_input_ids"): v for k, v in trl_output.items()}
        with self.assertRaisesRegex(ks.ShardError, "no 'input_ids'"):
            ks.check_collated_kto(examples, older, None)

    def test_collator_cut_is_noop_when_rows_fit(self):
        row = {"prompt_ids": [1, 5, 6], "completion_ids": [7, 2], "KL_completion_ids": [8, 9, 2], "label": True}
        self.assertEqual(ks.kto_collated(row, 6), ks.kto_collated(row, None))
        self.assertEqual(ks.kto_collated(row, 5)["KL_input_ids"], [1, 5, 6, 8, 9])  # what a too-long row loses


class SFTContractTest(unittest.TestCase):
    def test_positions_match_trl(self):
        rng = random.Random(11)
        for _ in range(300):
            batch = [[rng.randrange(1, 7) for _ in range(rng.randrange(1, 5))] for _ in range(rng.randrange(1, 4))]
            self.assertEqual([ks.positions_from_seq_lengths(s) for s in batch], trl_positions_reference(batch))

    def test_padding_free_matches_trl_docstring(self):
        # DataCollatorForLanguageModeling docstring (trl/trainer/sft_trainer.py): prebuilt labels, padding_free=True.
        rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "seq_lengths": [3]},
                {"input_ids": [4, 5], "labels": [-100, 5], "seq_lengths": [2]}]
        want = {"input_ids": [[1, 2, 3, 4, 5]], "position_ids": [[0, 1, 2, 0, 1]], "labels": [[-100, 2, 3, -100, 5]]}
        self.assertEqual(ks.padding_free_batch(rows), want)
        ks.check_collated_sft(rows, want)
        with self.assertRaisesRegex(ks.ShardError, "attention_mask"):
            ks.check_collated_sft(rows, dict(want, attention_mask=[[1] * 5]))
        with self.assertRaisesRegex(ks.ShardError, "position_ids"):
            ks.check_collated_sft(rows, dict(want, position_ids=[[0, 1, 2, 3, 4]]))
        # Labels on a sequence's first token are dropped by torch_call:
        # output["labels"][output["position_ids"] == 0] = -100
        rows = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "seq_lengths": [2, 1]}]
        self.assertEqual(ks.padding_free_batch(rows)["labels"], [[-100, 2, -100]])

    def packed_row(self):
        # Two sequences (3 and 2 tokens) padded to 8, as ktoloader writes sft/ rows.
        return {"input_ids": [1, 11, 12, 1, 21, 0, 0, 0],
                "labels": [-100, -100, 12, -100, 21, -100, -100, -100],
                "position_ids": [0, 1, 2, 0, 1, 0, 0, 0],
                "seq_lengths": [3, 2]}

    def test_strip(self):
        got = ks.strip_sft_row(self.packed_row())
        self.assertEqual(got, {"input_ids": [1, 11, 12, 1, 21], "labels": [-100, -100, 12, -100, 21], "seq_lengths": [3, 2]})
        batch = ks.padding_free_batch([got, got])
        self.assertEqual(batch["position_ids"], [[0, 1, 2, 0, 1, 0, 1, 2, 0, 1]])
        self.assertEqual(batch["labels"], [got["labels"] * 2])  # TRL's position-0 masking drops no trained token

    def test_unstripped_rows_break_padding_free(self):
        # The reason for stripping: positions cover sum(seq_lengths), ids cover max_len.
        row = dict(self.packed_row())
        del row["position_ids"]
        with self.assertRaisesRegex(ks.ShardError, "unstripped"):
            ks.padding_free_batch([row])

    def test_strip_rejects_bad_rows(self):
        for mutate, msg in (
            (lambda r: r.update(seq_lengths=[3, 1]), "padding after"),
            (lambda r: r.update(seq_lengths=[6, 3]), "summing to 9"),
            (lambda r: r.update(position_ids=[0, 1, 2, 3, 4, 0, 0, 0]), "restart"),
            (lambda r: r.update(seq_lengths=[5, 0]), "positive"),
            (lambda r: r.update(labels=r["labels"][:-1]), "7 labels"),
        ):
            row = self.packed_row()
            mutate(row)
            with self.assertRaisesRegex(ks.ShardError, msg):
                ks.strip_sft_row(row)


class ScriptSettingsTest(unittest.TestCase):
    manifest = {
        "tool": "ktoloader",
        "config": {"kto_batch_size": 6, "max_len": 1536},
        "kto": {"batch_size": 6, "desirable_weight": 1.3, "undesirable_weight": 1.0},
        "tokenizer": {"demo": False},
    }

    def test_scripts_import_without_torch_or_trl(self):
        for mod in ("torch", "trl", "transformers", "datasets"):
            self.assertNotIn(mod, sys.modules)

    def test_kto_config(self):
        args = trl_kto.parse_args(["--data", "OUT"])
        kw = trl_kto.kto_config_kwargs(self.manifest, args, has_eval=True)
        self.assertEqual(kw["per_device_train_batch_size"], 6)
        self.assertEqual(kw["per_device_eval_batch_size"], 6)
        self.assertEqual(kw["train_sampling_strategy"], "sequential")
        self.assertEqual(kw["max_length"], 1536)
        self.assertEqual((kw["desirable_weight"], kw["undesirable_weight"]), (1.3, 1.0))
        self.assertIs(kw["remove_unused_columns"], False)
        self.assertIs(kw["dataloader_drop_last"], False)
        self.assertEqual(kw["model_init_kwargs"], {"dtype": "bfloat16"})
        self.assertNotIn("eval_strategy", kw)
        args = trl_kto.parse_args(["--data", "OUT", "--desirable-weight", "2", "--eval-steps", "5", "--lora-r", "0"])
        kw = trl_kto.kto_config_kwargs(self.manifest, args, has_eval=True)
        self.assertEqual((kw["desirable_weight"], kw["eval_strategy"], kw["eval_steps"], kw["learning_rate"]), (2.0, "steps", 5, 1e-6))

    def test_kl_check_rows(self):
        self.assertEqual(trl_kto.kl_check_rows(10, 4, 1), [0, 1, 2, 3, 8, 9])
        self.assertEqual(trl_kto.kl_check_rows(10, 4, 5), list(range(10)))
        self.assertEqual(trl_kto.kl_check_rows(8, 4, 1), list(range(8)))

    def test_sft_config(self):
        args = trl_sft.parse_args(["--data", "OUT"])
        kw = trl_sft.sft_config_kwargs(self.manifest, args, has_eval=False)
        self.assertEqual(kw["dataset_kwargs"], {"skip_prepare_dataset": True})
        self.assertIs(kw["padding_free"], True)
        self.assertIs(kw["packing"], False)
        self.assertIsNone(kw["max_length"])
        self.assertIs(kw["remove_unused_columns"], False)
        self.assertEqual(kw["model_init_kwargs"]["attn_implementation"], "flash_attention_2")


def load_rows(path):
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


class RealShardsTest(unittest.TestCase):
    """Every row of --data's kto/ and sft/ shards against the contract (skipped without --data)."""

    @classmethod
    def setUpClass(cls):
        if DATA is None:
            raise unittest.SkipTest("no --data OUT given")
        if ROWS_DIR is None:
            try:
                import pyarrow.parquet  # noqa: F401
            except ImportError:
                raise unittest.SkipTest(
                    "pyarrow is not installed: the shards were NOT checked "
                    "(run `ktoloader dump OUT --to DUMP` and give --rows-dir DUMP)"
                ) from None
        cls.m = ks.read_manifest(DATA)
        cls.rows = {}
        for kind in ("kto", "sft"):
            for split, paths in ks.shard_files(cls.m, DATA, kind).items():
                rows = []
                for path in paths:
                    if ROWS_DIR is not None:
                        rel = os.path.relpath(path, DATA)
                        path = os.path.join(ROWS_DIR, os.path.splitext(rel)[0] + ".jsonl")
                    rows += load_rows(path)
                cls.rows[kind, split] = rows

    def test_kto(self):
        b, max_len = ks.kto_batch_size(self.m), ks.max_len(self.m)
        vocab = (self.m.get("tokenizer") or {}).get("vocab_size")
        for (kind, split), rows in self.rows.items():
            if kind != "kto":
                continue
            with self.subTest(split=split):
                self.assertEqual(len(rows), ks.expected_rows(self.m, "kto", split))
                ks.check_columns(list(rows[0]), ks.KTO_COLUMNS, f"kto/{split}")
                p, c, k = ([r[key] for r in rows] for key in ("prompt_ids", "completion_ids", "KL_completion_ids"))
                self.assertEqual(ks.kl_pairing_errors(p, c, k, b, max_len), [])
                self.assertEqual(ks.kto_length_errors([len(x) for x in p], [len(x) for x in c], [len(x) for x in k], max_len), [])
                if "batch_index" in rows[0]:
                    self.assertEqual([r["batch_index"] for r in rows], [i // b for i in range(len(rows))])
                for r in rows:
                    self.assertEqual(r["prompt_ids"][0], 1)  # <s> at Mistral's id (the demo tokenizer keeps it)
                    self.assertEqual(r["completion_ids"][-1], 2)  # </s>
                    collated = ks.kto_collated(r, max_len)
                    self.assertEqual(collated["input_ids"], r["prompt_ids"] + r["completion_ids"])  # no cut
                    self.assertEqual(collated["KL_input_ids"], r["prompt_ids"] + r["KL_completion_ids"])
                if vocab:
                    self.assertLess(max(max(x) for col in (p, c, k) for x in col if x), int(vocab))

    def test_sft_is_desirable_kto_token_for_token(self):
        sft_loss = (self.m.get("config") or {}).get("sft_loss", "completion")
        for (kind, split), rows in self.rows.items():
            if kind != "sft":
                continue
            with self.subTest(split=split):
                self.assertEqual(len(rows), ks.expected_rows(self.m, "sft", split))
                stripped = [ks.strip_sft_row(r) for r in rows]
                seqs = []
                for r in stripped:
                    at = 0
                    for n in r["seq_lengths"]:
                        seqs.append((tuple(r["input_ids"][at : at + n]), tuple(r["labels"][at : at + n])))
                        at += n
                    for lbl, tok in zip(r["labels"], r["input_ids"]):
                        self.assertIn(lbl, (ks.IGNORE_INDEX, tok))  # labels are unshifted copies of ids
                packing = ((self.m.get("packing") or {}).get("sft") or {}).get(split)
                if packing:
                    self.assertEqual(len(seqs), packing["sequences"])
                    self.assertEqual(sum(len(s) for s, _ in seqs), packing["tokens"])
                # TRL's padding-free collator keeps every trained label (its position-0 masking is a no-op here).
                for i in range(0, len(stripped), 2):
                    pair = stripped[i : i + 2]
                    batch = ks.padding_free_batch(pair)
                    self.assertEqual(batch["labels"][0], [lbl for r in pair for lbl in r["labels"]])
                desirable = self.rows.get(("kto", split), [])
                want = sorted((tuple(r["prompt_ids"] + r["completion_ids"]),
                               tuple([ks.IGNORE_INDEX] * len(r["prompt_ids"]) + r["completion_ids"]))
                              for r in desirable if r["label"])
                got = sorted(seqs)
                if sft_loss == "completion":
                    self.assertEqual(got, want)
                else:
                    self.assertEqual([s for s, _ in got], [s for s, _ in want])


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


class _Stream:
    """The writeln stream unittest's result classes expect."""

    def __init__(self, f):
        self.f = f

    def write(self, s):
        self.f.write(s)

    def writeln(self, s=""):
        self.f.write(s + "\n")

    def flush(self):
        self.f.flush()


def run_checks(names, out=sys.stderr):
    """Run the checks (all, or the named ones) and return the exit status.

    unittest's own runner ends a run that skipped a test with "OK (skipped=1)" and status 0,
    which reads as a pass; here a skip is SKIPPED with its own status.
    """
    module = sys.modules[__name__]
    loader = unittest.TestLoader()
    suite = loader.loadTestsFromNames(names, module) if names else loader.loadTestsFromModule(module)
    if DATA is None and not names:  # not asked for: leave it out rather than report a skip
        suite = unittest.TestSuite(
            t for group in suite for t in (group if isinstance(group, unittest.TestSuite) else [group])
            if not isinstance(t, RealShardsTest) and not (isinstance(t, unittest.TestSuite) and
                                                           any(isinstance(x, RealShardsTest) for x in t))
        )
    stream = _Stream(out)
    result = unittest.TextTestResult(stream, True, 2)
    suite.run(result)
    result.printErrors()
    stream.writeln("-" * 70)
    if result.testsRun == 0:
        stream.writeln("FAILED: no checks ran")
        return EXIT_FAILED
    if result.failures or result.errors:
        stream.writeln(f"FAILED: {len(result.failures)} failures, {len(result.errors)} errors in {result.testsRun} checks")
        return EXIT_FAILED
    if result.skipped:
        stream.writeln(f"SKIPPED: {result.testsRun} checks ran and passed, but these could not run, so nothing is claimed about them:")
        for test, reason in result.skipped:
            stream.writeln(f"  {test.id()}: {reason}")
        return EXIT_SKIPPED
    what = f"shards of {DATA} checked row by row" if DATA else "helpers and settings only, no shards checked: give --data OUT for that"
    stream.writeln(f"OK: {result.testsRun} checks passed ({what})")
    return EXIT_OK


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a ktoloader prep output directory to check row by row")
    parser.add_argument("--rows-dir", help="JSONL dumps of --data's shards (`ktoloader dump OUT --to DUMP`), for machines without pyarrow")
    parser.add_argument("tests", nargs="*", help="run only these checks (e.g. RealShardsTest.test_kto)")
    opts = parser.parse_args()
    DATA, ROWS_DIR = opts.data, opts.rows_dir
    if ROWS_DIR is not None and DATA is None:
        parser.error("--rows-dir needs --data OUT (the manifest is read from there)")
    if ROWS_DIR is not None and not os.path.isdir(ROWS_DIR):
        parser.error(f"--rows-dir {ROWS_DIR}: not a directory")
    sys.exit(run_checks(opts.tests))
