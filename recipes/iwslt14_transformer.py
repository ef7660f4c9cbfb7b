"""Train fairseq's ``transformer_iwslt_de_en`` from scratch as an HF `MarianMTModel`, with `GammaRegSeq2SeqTrainer`.

Paper scale (6+6 layers, d_model 512, FFN 1024, 4 heads, post-LN, dropout 0.3, label smoothing 0.1,
Adam β=(0.9, 0.98), lr 5e-4 inverse-sqrt after 4,000 warmup steps, weight decay 1e-4, ~4,096-token batches):

    python recipes/iwslt14_transformer.py recipes/configs/iwslt14_transformer.yaml --gamma_policy guidelines
    accelerate launch recipes/iwslt14_transformer.py recipes/configs/iwslt14_transformer.yaml --gamma_policy all

CPU scale (3+3 layers, d_model 256, a slice of Multi30k De→En, which stands in for IWSLT14 offline):

    HF_HUB_OFFLINE=1 python recipes/iwslt14_transformer.py recipes/configs/iwslt14_transformer_cpu.yaml

Data, first that is given: ``--train_src/--train_tgt/--eval_src/--eval_tgt`` files; ``--data_dir`` holding
``{train,valid,test}.{src_lang,tgt_lang}`` (fairseq's IWSLT14 layout, e.g. ``../shared/data/iwslt14-de-en``
with 160,239 / 7,283 / 6,750 pairs); ``--dataset_name`` (a Hub dataset with a ``translation`` column).
Line-aligned files are read with `datasets.load_dataset("text", ...)` (offline, cached), Hub datasets with
`datasets.load_dataset(name)`; both become one `Dataset` of ``src``/``tgt`` pairs, encoded with `Dataset.map`.

Tokenization: a joint SentencePiece model trained here on the training text (both sides) and saved as
``<output_dir>/spm.model``. Evaluation: beam search (``generation_num_beams``) on the eval split, then

* **sacreBLEU** (13a, cased) on detokenized text, and
* **tokenized BLEU** on lowercased, Moses-tokenized text with ``tokenize="none"`` — what fairseq papers
  report (the paper's 35.14 is of this kind),

both through `evaluate`'s ``sacrebleu`` module as run_translation.py computes its BLEU: the Hub's where the Hub
is reachable, offline ``recipes/metrics/sacrebleu.py`` loaded by path (``bleu.metric_module`` in ``results.json``).

With ``data_is_tokenized`` (IWSLT14 as fairseq prepares it, Multi30k) the references are already tokenized
and lowercased: the SentencePiece-decoded hypothesis is then tokenized text too (SentencePiece restores the
input's spaces), and both sides are detokenized for sacreBLEU with sacremoses when it is installed, else a
small rule-based detokenizer (recorded as ``detokenizer`` in ``results.json``). For raw data the order is
reversed: sacreBLEU on the text as is, tokenized BLEU after sacremoses or sacreBLEU's 13a tokenizer.

Writes into ``output_dir``: ``results.json`` (BLEU, samples and, for every γ, its role and the weight decay
of the optimizer group that holds it), ``gamma_history.jsonl`` (mean ‖γ‖ per role, for ``hf-gammareg plot``)
and ``spm.model``/``spm.vocab``. With ``--save_model true`` also the model, ``gammareg_config.json``,
``gamma_report.json`` and a model card (``README.md``) with a "γ regularization" section. With
``--push_to_hub true --hub_model_id NAMESPACE/NAME`` all of these are saved and uploaded to that repo.
"""

from __future__ import annotations

import html
import math
import os
import re
import time
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
from recipe_utils import (
    RunArguments,
    Stopwatch,
    ThroughputCallback,
    finish,
    first_rows,
    gamma_record,
    gamma_rms_by_role,
    load_data_file,
    load_metric,
    parse_args,
)
from torch.utils.data import DataLoader
from transformers import HfArgumentParser, MarianConfig, MarianMTModel, set_seed

from hf_gammareg import GammaRegSeq2SeqTrainer, GammaRegSeq2SeqTrainingArguments

PAPER = {"tok_bleu": 35.14}  # Kim et al., Transformer on IWSLT14 De→En (tokenized BLEU, test set)
PAD, UNK, EOS = 0, 1, 2  # SentencePiece ids; Marian starts decoding from PAD


@dataclass
class TranslationArguments(RunArguments):
    src_lang: str = field(default="de")
    tgt_lang: str = field(default="en")
    data_dir: str | None = field(default=None, metadata={"help": "Holds {train,valid,test}.{src,tgt} files."})
    train_src: str | None = field(default=None)
    train_tgt: str | None = field(default=None)
    eval_src: str | None = field(default=None)
    eval_tgt: str | None = field(default=None)
    eval_split: str = field(default="test", metadata={"help": "Split of data_dir/Hub scored with BLEU."})
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset with a `translation` column."})
    dataset_config_name: str | None = field(default=None)
    data_is_tokenized: bool = field(default=True, metadata={"help": "Text is lowercased + Moses-tokenized."})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    max_source_length: int = field(default=256, metadata={"help": "Longer pieces sequences are truncated."})
    max_tokens: int = field(default=4096, metadata={"help": "Padded tokens per training batch (per device)."})
    spm_vocab_size: int = field(default=10000)
    spm_model_type: str = field(default="bpe", metadata={"choices": ["bpe", "unigram"]})
    encoder_layers: int = field(default=6)
    decoder_layers: int = field(default=6)
    d_model: int = field(default=512)
    ffn_dim: int = field(default=1024)
    attention_heads: int = field(default=4)
    dropout: float = field(default=0.3)
    attention_dropout: float = field(default=0.0)
    activation_dropout: float = field(default=0.0)
    max_position_embeddings: int = field(default=1024)


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((TranslationArguments, GammaRegSeq2SeqTrainingArguments))


# -- data ---------------------------------------------------------------------------------------------
def load_pairs(args: TranslationArguments, split: str) -> datasets.Dataset:
    """The split's sentence pairs as columns ``src`` and ``tgt``, in file order."""
    hub_split = "train" if split == "train" else args.eval_split
    if args.train_src or args.eval_src:
        paths = (args.train_src, args.train_tgt) if split == "train" else (args.eval_src, args.eval_tgt)
    elif args.data_dir:
        paths = tuple(os.path.join(args.data_dir, f"{hub_split}.{lang}") for lang in (args.src_lang, args.tgt_lang))
    elif args.dataset_name:
        data = datasets.load_dataset(args.dataset_name, args.dataset_config_name, split=hub_split)
        data = data.map(lambda batch: {"src": [t[args.src_lang] for t in batch["translation"]],
                                       "tgt": [t[args.tgt_lang] for t in batch["translation"]]},
                        batched=True, remove_columns=data.column_names)
        paths = None
    else:
        raise ValueError("give --data_dir, --train_src/--train_tgt/--eval_src/--eval_tgt or --dataset_name")
    if paths is not None:
        src, tgt = (load_data_file(path, builder="text") for path in paths)  # one row per line, column `text`
        if len(src) != len(tgt):
            raise ValueError(f"{split}: {len(src)} source lines but {len(tgt)} target lines")
        data = datasets.concatenate_datasets([src.rename_column("text", "src"), tgt.rename_column("text", "tgt")],
                                             axis=1)
    return first_rows(data, args.max_train_samples if split == "train" else args.max_eval_samples)


def train_sentencepiece(lines: list[str], prefix: str, args: TranslationArguments):
    import sentencepiece as spm

    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=args.spm_vocab_size,
        model_type=args.spm_model_type, character_coverage=1.0, pad_id=PAD, unk_id=UNK, eos_id=EOS, bos_id=-1,
        hard_vocab_limit=False,  # a small slice may not support the full vocabulary; take what it has
        input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2,
    )


def encode(sp, pairs: datasets.Dataset, max_len: int) -> datasets.Dataset:
    """SentencePiece ids + EOS for both sides (``input_ids``, ``labels``), truncated to ``max_len``."""
    def pieces(batch):
        return {"input_ids": [s[: max_len - 1] + [EOS] for s in sp.encode(batch["src"])],
                "labels": [t[: max_len - 1] + [EOS] for t in sp.encode(batch["tgt"])]}

    return pairs.map(pieces, batched=True, remove_columns=pairs.column_names)


def collate(features: list[dict]) -> dict[str, torch.Tensor]:
    """Pad sources with PAD, labels with -100; decoder inputs are labels shifted right after PAD (Marian)."""
    n, src_len = len(features), max(len(f["input_ids"]) for f in features)
    tgt_len = max(len(f["labels"]) for f in features)
    input_ids = torch.full((n, src_len), PAD)
    labels = torch.full((n, tgt_len), -100)
    for i, f in enumerate(features):
        input_ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
    # The Trainer pops `labels` when label smoothing is on, so the model cannot build these itself.
    shifted = labels[:, :-1].masked_fill(labels[:, :-1] == -100, PAD)
    decoder_input_ids = torch.cat([torch.full((n, 1), PAD), shifted], dim=1)
    return {"input_ids": input_ids, "attention_mask": (input_ids != PAD).long(), "labels": labels,
            "decoder_input_ids": decoder_input_ids}


class TokenBatchSampler:
    """fairseq-style batches: sentences sorted by length, packed up to ``max_tokens`` padded tokens.

    Ties in length are broken at random and the batch order is shuffled, anew each epoch, from ``seed``.
    Every process builds the same batches; `accelerate` hands each process its share.
    """

    def __init__(self, lengths: list[int], max_tokens: int, seed: int):
        self.lengths, self.max_tokens, self.seed, self.epoch = np.asarray(lengths), max_tokens, seed, 0
        self._len = len(self._batches(0))

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + epoch)
        perm = rng.permutation(len(self.lengths))
        order = perm[np.argsort(self.lengths[perm], kind="stable")]
        batches, batch, longest = [], [], 0
        for i in order.tolist():
            longest_if_added = max(longest, int(self.lengths[i]))
            if batch and (len(batch) + 1) * longest_if_added > self.max_tokens:
                batches.append(batch)
                batch, longest_if_added = [], int(self.lengths[i])
            batch.append(i)
            longest = longest_if_added
        if batch:
            batches.append(batch)
        rng.shuffle(batches)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1  # advance even when nobody calls set_epoch
        yield from self._batches(epoch)

    def __len__(self) -> int:
        return self._len  # the packing depends only on the sorted lengths, so it is the same every epoch


class TokenBatchTrainer(GammaRegSeq2SeqTrainer):
    """`GammaRegSeq2SeqTrainer` whose training batches hold ~``max_tokens`` tokens instead of N sentences."""

    def __init__(self, *args, max_tokens: int, **kwargs):
        self.max_tokens = max_tokens
        super().__init__(*args, **kwargs)

    def get_train_dataloader(self) -> DataLoader:
        data = self.train_dataset
        lengths = [max(len(s), len(t)) for s, t in zip(data["input_ids"], data["labels"])]
        sampler = TokenBatchSampler(lengths, self.max_tokens, self.args.seed)
        loader = DataLoader(data, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)


# -- BLEU -------------------------------------------------------------------------------------------------
_DETOK_RULES = [(re.compile(p), r) for p, r in [
    (r" ([.,!?;:%)\]}])", r"\1"), (r"([(\[{$#]) ", r"\1"), (r" (['’](s|re|ve|ll|d|m|t)\b)", r"\1"),
    (r" (n['’]t)\b", r"\1"), (r" - ", "-"), (r" @-@ ", "-"), (r"\s+", " ")]]


def simple_detokenize(text: str) -> str:
    """Undo Moses tokenization for English well enough for sacreBLEU's 13a (which re-splits punctuation)."""
    text = html.unescape(text)
    for pattern, repl in _DETOK_RULES:
        text = pattern.sub(repl, text)
    return text.strip()


def bleu_scores(hyps: list[str], refs: list[str], *, data_is_tokenized: bool, lang: str, metric=None) -> dict:
    """sacreBLEU and tokenized BLEU of ``hyps`` against ``refs`` through `evaluate`'s ``sacrebleu`` module
    (``metric``; by default the Hub's, or offline ``recipes/metrics/sacrebleu.py``, see `load_metric`)."""
    import sacrebleu

    source = None
    if metric is None:
        metric, source = load_metric("sacrebleu", offline_module="sacrebleu")

    try:
        from sacremoses import MosesDetokenizer, MosesTokenizer

        detok, tok, tool = MosesDetokenizer(lang).detokenize, MosesTokenizer(lang).tokenize, "sacremoses"
        detokenize = lambda s: detok(s.split())  # noqa: E731
        tokenize = lambda s: tok(s, return_str=True, escape=False)  # noqa: E731
    except ImportError:
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

        detokenize, tokenize, tool = simple_detokenize, Tokenizer13a(), "simple rules / sacrebleu 13a"
    if data_is_tokenized:
        tok_h, tok_r = hyps, refs
        det_h, det_r = [detokenize(h) for h in hyps], [detokenize(r) for r in refs]
    else:
        det_h, det_r = hyps, refs
        tok_h, tok_r = [tokenize(h) for h in hyps], [tokenize(r) for r in refs]
    # 13a tokenization, cased: sacreBLEU's defaults. The module returns no signature; sacreBLEU signs a metric once
    # it knows the number of references per sentence, which is 1 here.
    signer = sacrebleu.metrics.BLEU()
    signer.num_refs = 1
    sacre = metric.compute(predictions=det_h, references=[[r] for r in det_r])
    tok_bleu = metric.compute(predictions=[h.lower() for h in tok_h], references=[[r.lower()] for r in tok_r],
                              tokenize="none")
    return {"sacrebleu": round(sacre["score"], 2), "tok_bleu": round(tok_bleu["score"], 2),
            "sacrebleu_signature": str(signer.get_signature()), "detokenizer": tool,
            **({"metric_module": source} if source else {})}


def translate(trainer, sp, evaluation, args) -> list[str]:
    """Beam-search translations of every eval sentence, in order, computed whole on each process.

    Not through ``Trainer.predict``: distributed, it pads the last batches to equal sizes by repeating sentences
    and (transformers 5.24 / accelerate 1.15, generation path) returns the repeats too — 20 hypotheses for 11
    sentences on 2 processes. Beam search over a test set is short, so each process translates all of it.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    rows = [evaluation[i] for i in range(len(evaluation))]
    hyps: list[str] = []
    size = args.per_device_eval_batch_size
    with torch.no_grad():
        for start in range(0, len(rows), size):
            batch = collate(rows[start:start + size])
            out = model.generate(input_ids=batch["input_ids"].to(model.device),
                                 attention_mask=batch["attention_mask"].to(model.device),
                                 num_beams=args.generation_num_beams, max_length=args.generation_max_length)
            hyps += decode(sp, out.cpu().numpy())
    return hyps


def decode(sp, rows: np.ndarray) -> list[str]:
    out = []
    for row in rows.tolist():
        ids = [t for t in row if t >= 0]  # -100: padding added when predictions are gathered
        ids = ids[: ids.index(EOS)] if EOS in ids else ids
        out.append(sp.decode([t for t in ids if t != PAD]))
    return out


def main(argv: list[str] | None = None) -> int:
    args, training_args = parse_args(make_parser(), argv)
    # The eval loss comes from Trainer.evaluate (teacher forcing); BLEU from `translate` below.
    training_args.predict_with_generate = False
    if args.torch_num_threads:
        torch.set_num_threads(args.torch_num_threads)
    clock = Stopwatch()
    if training_args.disable_tqdm:
        datasets.disable_progress_bars()
    with training_args.main_process_first(desc="load data"):  # one process fills the datasets cache
        train_pairs, eval_pairs = load_pairs(args, "train"), load_pairs(args, "eval")

    import sentencepiece as spm

    prefix = os.path.join(training_args.output_dir, "spm")
    with training_args.main_process_first(desc="SentencePiece"):  # one process trains, the others read
        if training_args.process_index == 0 or not os.path.exists(prefix + ".model"):
            train_sentencepiece(list(train_pairs["src"]) + list(train_pairs["tgt"]), prefix, args)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    # Sorting the eval set by length makes beam search pad less; corpus BLEU does not depend on the order.
    eval_src = list(eval_pairs["src"])
    eval_pairs = eval_pairs.select(sorted(range(len(eval_src)), key=lambda i: len(eval_src[i].split())))
    eval_tgt = list(eval_pairs["tgt"])
    with training_args.main_process_first(desc="encode"):
        train, evaluation = (encode(sp, pairs, args.max_source_length) for pairs in (train_pairs, eval_pairs))

    vocab = sp.get_piece_size()
    config = MarianConfig(
        vocab_size=vocab, decoder_vocab_size=vocab, d_model=args.d_model,
        encoder_layers=args.encoder_layers, decoder_layers=args.decoder_layers,
        encoder_attention_heads=args.attention_heads, decoder_attention_heads=args.attention_heads,
        encoder_ffn_dim=args.ffn_dim, decoder_ffn_dim=args.ffn_dim, activation_function="relu",  # fairseq's
        dropout=args.dropout, attention_dropout=args.attention_dropout, activation_dropout=args.activation_dropout,
        max_position_embeddings=args.max_position_embeddings, scale_embedding=True,  # sinusoidal positions
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=PAD, eos_token_id=EOS, forced_eos_token_id=EOS, decoder_start_token_id=PAD, bos_token_id=None,
    )
    set_seed(training_args.seed)  # the Trainer seeds only after this initialization
    model = MarianMTModel(config)
    # IWSLT14: ~160k pairs, ~25 pieces per side -> ~150 pairs per 4,096-token batch -> ~1,100 steps per epoch.
    lengths = [len(r["input_ids"]) + len(r["labels"]) for r in train]
    steps_per_epoch = len(TokenBatchSampler([max(len(r["input_ids"]), len(r["labels"])) for r in train],
                                            args.max_tokens, training_args.seed))
    tokens_per_step = sum(lengths) / steps_per_epoch  # source + target tokens, padding not counted
    trainer = TokenBatchTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                                data_collator=collate, max_tokens=args.max_tokens,
                                callbacks=[ThroughputCallback(round(tokens_per_step * max(1, training_args.world_size)),
                                                              unit="tokens")])
    train_start = time.perf_counter()
    train_out = trainer.train()
    train_seconds = time.perf_counter() - train_start
    tokens_per_s = trainer.state.global_step * tokens_per_step * max(1, training_args.world_size) / train_seconds
    rms = gamma_rms_by_role(trainer.model, trainer.gamma_report)
    eval_loss = trainer.evaluate().get("eval_loss", math.nan)
    hyps = translate(trainer, sp, evaluation, training_args)
    scores = bleu_scores(hyps, eval_tgt, data_is_tokenized=args.data_is_tokenized, lang=args.tgt_lang)
    gammas = gamma_record(trainer)
    print_ = trainer.accelerator.print
    print_(f"hf_gammareg: {gammas['summary']}")
    print_(f"{trainer.state.global_step} steps at {tokens_per_s:,.0f} tokens/s (source + target, no padding); "
           "γ RMS by role at the end: " + ", ".join(f"{role} {v:.3f}" for role, v in rms.items()))
    print_(f"{len(hyps)} sentences, beam {training_args.generation_num_beams}: sacreBLEU {scores['sacrebleu']} "
           f"({scores['sacrebleu_signature']}), tokenized BLEU {scores['tok_bleu']} (paper: {PAPER['tok_bleu']})")
    record = {
        "recipe": "iwslt14_transformer", "seed": training_args.seed, "n_train": len(train), "n_eval": len(hyps),
        "vocab_size": vocab, "n_params": sum(p.numel() for p in model.parameters()),
        "train_loss": train_out.training_loss, "eval_loss": eval_loss,
        "metrics": {"sacrebleu": scores["sacrebleu"], "tok_bleu": scores["tok_bleu"]}, "primary_metric": "tok_bleu",
        "bleu": scores, "paper": PAPER, "samples": [{"hyp": h, "ref": r} for h, r in zip(hyps[-3:], eval_tgt[-3:])],
        "tokens_per_s": round(tokens_per_s, 1), "threads": torch.get_num_threads(),
        "table_columns": {"tokens_per_s": round(tokens_per_s, 1), **{f"gamma_rms_{r}": v for r, v in rms.items()}},
        "gamma": gammas, "wall_s": clock.seconds(),
    }
    card = {"tasks": "translation", "language": [args.src_lang, args.tgt_lang]}
    if args.dataset_name:
        card.update(dataset_tags=args.dataset_name, dataset=args.dataset_name)
    finish(trainer, args, record, card=card)  # output_dir holds spm.model too: it travels with the model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
