"""Draw docs/gamma_norms_exact_vs_approximate.png: γ norms of a tiny BERT on SST-2, `exact` vs `approximate`.

    python recipes/reports/gamma_norms_exact_vs_approximate.py [--data_dir ../shared/data/glue-sst2] [--work runs/docs]

Two real runs of ``recipes/sst2_bert.py`` that differ only in ``--gamma_invariance``. BERT is post-LN: under
`exact` its LayerNorm γ are `stream` (and the last one `head`), so `guidelines` decays none of them; under
`approximate` all but the last are `invariant` and decayed. The model is a tiny random BERT (2 layers,
hidden 64, a word vocabulary of the training slice) so the runs take a minute on a CPU; γ get a large
decay (``--gamma_weight_decay 5``, lr 1e-3 held constant: ×0.995 per step) so the decayed norms visibly
move in 60 steps. Then ``hf-gammareg plot`` draws both runs. Only the figure is kept; it is a picture of
what each mode decays, not a result about accuracy.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_tiny_bert(train_tsv: str, out_dir: str, n_sentences: int = 960) -> None:
    """A random 2-layer BERT and a word-level tokenizer over the words of the first ``n_sentences``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    with open(train_tsv, encoding="utf-8", newline="") as f:
        rows = [r for _, r in zip(range(n_sentences), csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))]
    counts = collections.Counter(w for r in rows for w in r["sentence"].split())
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(counts, key=lambda w: (-counts[w], w))
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=False)
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                 vocab_size=len(words), max_position_embeddings=64))
    tokenizer.save_pretrained(out_dir)
    model.save_pretrained(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "data", "glue-sst2"))
    parser.add_argument("--work", default=os.path.join("runs", "docs-exact-vs-approximate"))
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "gamma_norms_exact_vs_approximate.png"))
    args = parser.parse_args(argv)
    model_dir = os.path.join(args.work, "tiny-bert")
    make_tiny_bert(os.path.join(args.data_dir, "train.tsv"), model_dir)
    # This checkout's hf_gammareg, whatever is installed; nothing from the network.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs = []
    for invariance in ("exact", "approximate"):
        out = os.path.join(args.work, invariance)
        shutil.rmtree(out, ignore_errors=True)  # gamma_history.jsonl is appended to: start each run afresh
        # 960 sentences / 16 = 60 steps, one epoch; γ norms logged every 5 steps.
        subprocess.run([sys.executable, os.path.join(REPO, "recipes", "sst2_bert.py"),
                        "--model_name_or_path", model_dir, "--output_dir", out,
                        "--train_file", os.path.join(args.data_dir, "train.tsv"),
                        "--validation_file", os.path.join(args.data_dir, "validation.tsv"),
                        "--max_train_samples", "960", "--max_seq_length", "64", "--per_device_train_batch_size", "16",
                        "--max_steps", "60", "--learning_rate", "1e-3", "--lr_scheduler_type", "constant",
                        "--weight_decay", "0.01", "--gamma_weight_decay", "5", "--gamma_policy", "guidelines",
                        "--gamma_invariance", invariance, "--logging_steps", "5", "--save_strategy", "no",
                        "--eval_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--seed", "0",
                        "--disable_tqdm", "true"], check=True, env=env)
        runs.append(out)
    title = ("tiny BERT (2 layers, hidden 64) on 960 SST-2 sentences, 60 steps, policy guidelines, "
             "γ weight decay 5 at lr 1e-3")
    subprocess.run([sys.executable, "-m", "hf_gammareg.cli", "plot", *runs, "--out", args.out, "--title", title],
                   check=True, env=env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
