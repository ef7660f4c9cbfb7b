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

import hashlib
import json
import math
import os
import platform
import sysconfig
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from recipe_utils import (
    GammaTrajectoryCallback,
    RunArguments,
    Stopwatch,
    ThroughputCallback,
    gamma_record,
    gamma_rms_by_role,
    parse_args,
    write_results,
)
from torch.utils.data import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, HfArgumentParser, set_seed

from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments

TEXT_SOURCES = ("file", "python-stdlib")


@dataclass
class LMArguments(RunArguments):
    text_source: str = field(default="file", metadata={
        "help": "'file': the characters of --text_file (the first --train_fraction trains, the rest validates); "
                "'python-stdlib': the running interpreter's standard-library source (~12 M characters on "
                "Python 3.11, tests excluded), built deterministically on any machine without a download; "
                "whole files are split between training and validation (no file in both)."})
    stdlib_root: str | None = field(default=None, metadata={
        "help": "With python-stdlib: the standard-library folder to read (default: the running interpreter's)."})
    text_file: str = field(default="../shared/data/tinyshakespeare/input.txt",
                           metadata={"help": "A UTF-8 text file; the model is trained on its characters."})
    train_fraction: float = field(default=0.9, metadata={
        "help": "With a file: the first fraction of its characters trains, the rest validates. With "
                "python-stdlib: the fraction of files that train (chosen by a hash of each file's path)."})
    block_size: int = field(default=256, metadata={"help": "Context length in characters."})
    n_layer: int = field(default=6)
    n_head: int = field(default=6)
    n_embd: int = field(default=384)
    dropout: float = field(default=0.2)
    max_eval_windows: int | None = field(default=None, metadata={"help": "Validate on the first N windows only."})
    trajectory_window: int = field(
        default=500, metadata={"help": "Steps per point of the γ RMS trajectory (per role) in results.json."})


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


def stdlib_files(root: str | None = None) -> list[str]:
    """The standard library's ``.py`` files (paths relative to ``root``, '/'-separated, sorted).

    ``root`` defaults to the running interpreter's stdlib. Excluded: test suites (any ``test``/``tests``/
    ``idle_test`` folder, ``test_*.py``), installed packages (``site-packages``/``dist-packages``), the build's
    ``config-*`` folder and ``_sysconfigdata*`` (build paths of this machine, not Python source anyone wrote).
    """
    root = root or sysconfig.get_paths()["stdlib"]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"standard library folder {root!r} does not exist")
    found = []
    for folder, dirs, names in os.walk(root):
        rel = os.path.relpath(folder, root)
        parts = [] if rel == "." else rel.split(os.sep)
        if any(p in ("test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__")
               or p.startswith("config-") for p in parts):
            dirs[:] = []
            continue
        for name in names:
            if name.endswith(".py") and not name.startswith(("test_", "_sysconfigdata")):
                found.append("/".join(parts + [name]))
    return sorted(found)


def is_validation_file(path: str, train_fraction: float) -> bool:
    """A file validates when the hash of its path falls in the last ``1 - train_fraction`` of [0, 1):
    stable under files added or removed elsewhere, the same on every machine."""
    bucket = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") / 2 ** 64
    return bucket >= train_fraction


def python_stdlib_corpus(train_fraction: float, root: str | None = None) -> tuple[str, str, dict]:
    """``(train_text, val_text, record)`` from the standard library's source; no file is in both splits.

    Each split is its files' text in sorted path order, each file ending in one newline; files are read as UTF-8
    (undecodable bytes replaced). ``record`` names the corpus: Python version, file and character counts, and
    the SHA-256 of each split and of both (train then validation), so a run says exactly what it read.
    """
    if not 0 < train_fraction < 1:
        raise ValueError(f"--train_fraction must be between 0 and 1, got {train_fraction}")
    root = root or sysconfig.get_paths()["stdlib"]
    files = stdlib_files(root)
    splits: dict[str, list[str]] = {"train": [], "validation": []}
    texts: dict[str, list[str]] = {"train": [], "validation": []}
    for path in files:
        with open(os.path.join(root, *path.split("/")), encoding="utf-8", errors="replace") as f:
            text = f.read()
        if not text.strip():
            continue  # empty __init__.py files carry no characters to learn
        split = "validation" if is_validation_file(path, train_fraction) else "train"
        splits[split].append(path)
        texts[split].append(text if text.endswith("\n") else text + "\n")
    train, val = "".join(texts["train"]), "".join(texts["validation"])
    if not splits["train"] or not splits["validation"]:
        raise ValueError(f"the standard library at {root!r} gave {len(splits['train'])} training and "
                         f"{len(splits['validation'])} validation files; both splits need at least one")
    sha = {k: hashlib.sha256(v.encode("utf-8")).hexdigest() for k, v in (("train", train), ("validation", val))}
    record = {
        "source": "python-stdlib", "python": platform.python_version(),
        "n_files": len(splits["train"]) + len(splits["validation"]),
        "n_train_files": len(splits["train"]), "n_val_files": len(splits["validation"]),
        "n_chars": len(train) + len(val), "n_train_chars": len(train), "n_val_chars": len(val),
        "sha256": hashlib.sha256((train + val).encode("utf-8")).hexdigest(),
        "train_sha256": sha["train"], "val_sha256": sha["validation"],
        "val_files": splits["validation"],
    }
    return train, val, record


def file_corpus(path: str, train_fraction: float, block_size: int) -> tuple[str, str, dict]:
    """``(train_text, val_text, record)`` of a text file split by characters (see `split_text`)."""
    text = read_text(path)
    train, val = split_text(text, train_fraction, block_size)
    return train, val, {"source": "file", "path": path, "n_chars": len(text), "n_train_chars": len(train),
                        "n_val_chars": len(val), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def load_corpus(args: "LMArguments") -> tuple[str, str, dict]:
    """The training and validation text the arguments name, and the record of what was read."""
    if args.text_source == "file":
        return file_corpus(args.text_file, args.train_fraction, args.block_size)
    if args.text_source == "python-stdlib":
        train, val, record = python_stdlib_corpus(args.train_fraction, args.stdlib_root)
        for name, part in (("training", train), ("validation", val)):
            if len(part) < args.block_size + 1:
                raise ValueError(f"the {name} split has {len(part):,} characters, fewer than one window of "
                                 f"block_size + 1 = {args.block_size + 1:,}; lower --block_size")
        return train, val, record
    raise ValueError(f"--text_source must be one of {TEXT_SOURCES}, got {args.text_source!r}")


def corpus_line(record: dict) -> str:
    """One line naming the corpus, for the log and the sweep table's header."""
    if record["source"] == "python-stdlib":
        return (f"corpus: Python {record['python']} standard library source, {record['n_files']} files "
                f"({record['n_train_files']} train / {record['n_val_files']} validation, no file in both), "
                f"{record['n_chars']:,} characters ({record['n_train_chars']:,} / {record['n_val_chars']:,}), "
                f"SHA-256 {record['sha256']}")
    return f"corpus: {record['path']}, {record['n_chars']:,} characters, SHA-256 {record['sha256']}"


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
    if args.text_source not in TEXT_SOURCES:
        raise ValueError(f"--text_source must be one of {TEXT_SOURCES}, got {args.text_source!r}")
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise ValueError("--max_steps must be set: training windows are drawn for exactly max_steps batches")
    clock = Stopwatch()
    train_text, val_text, corpus = load_corpus(args)
    if args.torch_num_threads:
        torch.set_num_threads(args.torch_num_threads)
    tokenizer = CharTokenizer.from_text(train_text + val_text)
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
    # γ RMS per role along the run, and the decay horizon measured from the lr of every step. The roles are
    # read from the first training batch when training starts, before the callback's on_train_begin.
    trajectory = GammaTrajectoryCallback(lambda name: trainer.gamma_report.roles.get(name),
                                         {name for name, _ in model.named_parameters()}, lambda: trainer.gamma_plan,
                                         window=args.trajectory_window)
    trainer = GammaRegTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=validation,
                              callbacks=[ThroughputCallback(tokens_per_step, unit="tokens"), trajectory])
    trainer.accelerator.print(corpus_line(corpus))
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
    horizon = trajectory.horizon()
    passes = training_args.max_steps * tokens_per_step / len(train_text)
    print_ = trainer.accelerator.print
    print_(f"hf_gammareg: {gammas['summary']}")
    print_(f"decay horizon (measured): Σ lr·λ = {horizon['decay_horizon']:.3f} over {horizon['steps']:,} steps; "
           f"weight decay alone shrinks a decayed parameter to {horizon['shrink']:.3f}; "
           f"{passes:.2f} passes over the {len(train_text):,} training characters")
    print_(f"{training_args.max_steps} steps x {tokens_per_step:,} tokens at {tokens_per_s:,.0f} tokens/s; "
           f"validation loss {val_loss:.4f} nats/char (perplexity {math.exp(val_loss):.2f}; unigram model "
           f"{unigram:.3f}) on {len(validation) * args.block_size:,} characters")
    print_("γ RMS by role at the end: " + ", ".join(f"{role} {v:.3f}" for role, v in rms.items()))
    write_results(trainer, args.results_path(training_args.output_dir), {
        "recipe": "lm_pretrain", "seed": training_args.seed, "vocab_size": tokenizer.vocab_size,
        "n_params": sum(p.numel() for p in model.parameters()), "n_train_chars": len(train_text),
        "n_val_chars": len(val_text), "corpus": corpus, "header": [corpus_line(corpus)],
        "passes": round(passes, 4), "train_loss": train_out.training_loss,
        "metrics": {"val_loss": round(val_loss, 5), "perplexity": round(math.exp(val_loss), 4)},
        "primary_metric": "val_loss", "paper": {}, "unigram_val_loss": round(unigram, 4),
        "tokens_per_s": round(tokens_per_s, 1), "threads": torch.get_num_threads(),
        "table_columns": {"decay_horizon": horizon["decay_horizon"], "shrink": horizon["shrink"],
                          "passes": round(passes, 4), "tokens_per_s": round(tokens_per_s, 1),
                          **{f"gamma_rms_{r}": v for r, v in rms.items()}},
        "decay_horizon_measured": horizon, "gamma_trajectory": trajectory.trajectory,
        "gamma": gammas, "wall_s": clock.seconds(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
