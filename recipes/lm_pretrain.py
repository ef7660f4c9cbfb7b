"""Pretrain a GPT-2-architecture language model from scratch on a text file with `GammaRegTrainer` (pre-LN).

Character-level, nanoGPT's ``shakespeare_char`` set-up: the first 90 % of the text trains, the last 10 %
validates; AdamW with weight decay 0.1, cosine schedule with warm-up. The GPT-2 blocks are pre-LN, so their
norms ``ln_1``/``ln_2`` are ``branch`` γ (decayed by ``guidelines``) and the final ``ln_f`` is ``head`` (spared);
``Trainer``'s default decays no norm at all:

    python recipes/lm_pretrain.py recipes/configs/lm_shakespeare_cpu.yaml --gamma_policy guidelines
    accelerate launch recipes/lm_pretrain.py recipes/configs/lm_shakespeare_gpu.yaml --gamma_policy all
    python recipes/sweep.py --recipe recipes/lm_pretrain.py --config recipes/configs/lm_shakespeare_cpu.yaml \\
        --name lm_shakespeare_cpu --seeds 0 1 2 --baseline hf-default --policies hf-default guidelines only:head all

Training batches are windows of ``block_size + 1`` characters at random offsets (drawn once from the seed, so a
seed pins the data as well as the initial weights); validation is every non-overlapping window of the validation
split. The log prints tokens/s; ``results.json`` records the validation loss (nats per character), its
perplexity, the loss of a unigram character model on the same split for scale, tokens/s, and the RMS of the γ
of each role at the end of training.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # recipe_utils, under python and accelerate

from recipe_utils import (
    RunArguments,
    Stopwatch,
    ThroughputCallback,
    gamma_record,
    gamma_rms_by_role,
    parse_args,
    write_results,
)
from transformers import GPT2Config, GPT2LMHeadModel, HfArgumentParser, set_seed

from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments


@dataclass
class LMArguments(RunArguments):
    text_file: str = field(default="../shared/data/tinyshakespeare/input.txt",
                           metadata={"help": "A UTF-8 text file; the model is trained on its characters."})
    train_fraction: float = field(default=0.9, metadata={"help": "The first fraction trains, the rest validates."})
    block_size: int = field(default=256, metadata={"help": "Context length in characters."})
    n_layer: int = field(default=6)
    n_head: int = field(default=6)
    n_embd: int = field(default=384)
    dropout: float = field(default=0.2)
    max_eval_windows: int | None = field(default=None, metadata={"help": "Validate on the first N windows only."})


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((LMArguments, GammaRegTrainingArguments))


# -- data ---------------------------------------------------------------------------------------------
class CharTokenizer:
    """One id per distinct character of the text (sorted, as nanoGPT's ``prepare.py``)."""

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "vocab.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"chars": self.chars}, f, ensure_ascii=False)
        return path


def read_text(path: str) -> str:
    """The file's text, or a clear error for a missing or empty file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--text_file {path!r} does not exist; pass a UTF-8 text file "
                                "(e.g. ../shared/data/tinyshakespeare/input.txt)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"--text_file {path!r} is empty; a language model needs text to train on")
    return text


def split_text(text: str, train_fraction: float, block_size: int) -> tuple[str, str]:
    """First ``train_fraction`` of the characters trains, the rest validates; both must hold a full window."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"--train_fraction must be between 0 and 1, got {train_fraction}")
    if block_size < 1:
        raise ValueError(f"--block_size must be positive, got {block_size}")
    cut = int(len(text) * train_fraction)
    train, val = text[:cut], text[cut:]
    for name, part in (("training", train), ("validation", val)):
        if len(part) < block_size + 1:
            raise ValueError(
                f"the {name} split has {len(part):,} characters, fewer than one context window of block_size + 1 = "
                f"{block_size + 1:,}; lower --block_size or use a longer --text_file")
    return train, val


class RandomWindows(Dataset):
    """``n`` windows of ``block_size`` tokens at offsets drawn once from ``seed``;
    labels = inputs (the model shifts)."""

    def __init__(self, ids: torch.Tensor, block_size: int, n: int, seed: int):
        self.ids, self.block_size = ids, block_size
        self.offsets = np.random.default_rng(seed).integers(0, len(ids) - block_size, size=n)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        window = self.ids[int(self.offsets[i]): int(self.offsets[i]) + self.block_size]
        return {"input_ids": window, "labels": window}


class ConsecutiveWindows(Dataset):
    """Every non-overlapping window of ``block_size`` tokens, in order."""

    def __init__(self, ids: torch.Tensor, block_size: int, limit: int | None = None):
        self.ids, self.block_size = ids, block_size
        self.n = len(ids) // block_size if limit is None else min(limit, len(ids) // block_size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        window = self.ids[i * self.block_size:(i + 1) * self.block_size]
        return {"input_ids": window, "labels": window}


def unigram_loss(train: str, val: str) -> float:
    """Cross-entropy (nats/char) on ``val`` of character frequencies counted on ``train`` (add-one smoothed)."""
    counts = Counter(train)
    vocab = set(train) | set(val)
    total = len(train) + len(vocab)
    return -sum(math.log((counts[c] + 1) / total) for c in val) / len(val)


def main(argv: list[str] | None = None) -> int:
    args, training_args = parse_args(make_parser(), argv)
    # Every check that needs no training comes first.
    text = read_text(args.text_file)
    train_text, val_text = split_text(text, args.train_fraction, args.block_size)
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise ValueError("--max_steps must be set: training windows are drawn for exactly max_steps batches")
    if args.torch_num_threads:
        torch.set_num_threads(args.torch_num_threads)
    clock = Stopwatch()
    tokenizer = CharTokenizer.from_text(text)
    train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    world = max(1, training_args.world_size)
    windows_per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world
    train = RandomWindows(train_ids, args.block_size, training_args.max_steps * windows_per_step, training_args.seed)
    validation = ConsecutiveWindows(val_ids, args.block_size, args.max_eval_windows)

    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=args.block_size, n_embd=args.n_embd,
                        n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=args.dropout, embd_pdrop=args.dropout,
                        attn_pdrop=args.dropout, bos_token_id=None, eos_token_id=None, use_cache=False)
    set_seed(training_args.seed)  # pins the initial weights; the Trainer seeds only after the model exists
    model = GPT2LMHeadModel(config)
    # nanoGPT shakespeare_char (GPU): 64 x 256 = 16,384 tokens a step, 5,000 steps = 82M tokens
    # (~73 epochs of 1M chars).
    tokens_per_step = windows_per_step * args.block_size
    trainer = GammaRegTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=validation,
                              callbacks=[ThroughputCallback(tokens_per_step, unit="tokens")])
    train_start = time.perf_counter()
    train_out = trainer.train()
    train_seconds = time.perf_counter() - train_start
    metrics = trainer.evaluate()
    if args.save_model:
        trainer.save_model()
        tokenizer.save(training_args.output_dir)
    gammas = gamma_record(trainer)
    rms = gamma_rms_by_role(trainer.model, trainer.gamma_report)
    tokens_per_s = training_args.max_steps * tokens_per_step / train_seconds
    unigram = unigram_loss(train_text, val_text)
    val_loss = metrics["eval_loss"]
    print_ = trainer.accelerator.print
    print_(f"hf_gammareg: {gammas['summary']}")
    print_(f"{training_args.max_steps} steps x {tokens_per_step:,} tokens at {tokens_per_s:,.0f} tokens/s; "
           f"validation loss {val_loss:.4f} nats/char (perplexity {math.exp(val_loss):.2f}; unigram model "
           f"{unigram:.3f}) on {len(validation) * args.block_size:,} characters")
    print_("γ RMS by role at the end: " + ", ".join(f"{role} {v:.3f}" for role, v in rms.items()))
    write_results(trainer, args.results_path(training_args.output_dir), {
        "recipe": "lm_pretrain", "seed": training_args.seed, "vocab_size": tokenizer.vocab_size,
        "n_params": sum(p.numel() for p in model.parameters()), "n_train_chars": len(train_text),
        "n_val_chars": len(val_text), "train_loss": train_out.training_loss,
        "metrics": {"val_loss": round(val_loss, 5), "perplexity": round(math.exp(val_loss), 4)},
        "primary_metric": "val_loss", "paper": {}, "unigram_val_loss": round(unigram, 4),
        "tokens_per_s": round(tokens_per_s, 1), "threads": torch.get_num_threads(),
        "table_columns": {"tokens_per_s": round(tokens_per_s, 1), **{f"gamma_rms_{r}": v for r, v in rms.items()}},
        "gamma": gammas, "wall_s": clock.seconds(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
