"""What `guidelines`, `hf-default` and `all` did, per model family and decay horizon: ``results/policy_by_family.md``.

    python recipes/reports/family_table.py [--update_docs]

One row per recorded sweep that ran these policies: the family, the model and data, the decay horizon Σ (what
weight decay alone does to a decayed γ over the run), the metric, and for each of the three policies the paired
difference to the sweep's entry that decays no γ (same seeds: same initial weights and data order) with its
Student-t 95 % interval and the number of pairs. On the transformers models `hf-default` decays no γ (Trainer
never decays a parameter named like a norm), so it *is* that entry; on the HF-style ResNet it decays every BN γ
(Trainer's name patterns miss them), so it equals `all`. A sweep still running gives the rows it has.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from hf_gammareg.sweeps import read_sweep_csv, summarize
from hf_gammareg.tables import markdown_table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

POLICIES = ("guidelines", "hf-default", "all")


@dataclasses.dataclass
class Source:
    family: str
    model: str
    sweep: str  # results/<sweep>.csv
    metric: str
    unit: str  # how to read the difference
    sigma: str  # the decay horizon of the γ the policies decay
    baseline: str  # the entry that decays no γ
    labels: dict  # policy -> entry label in the sweep, or "= <label>" where the policy equals that entry here


SOURCES = [
    Source("BN ResNet (CNN)", "ResNet-20, CIFAR-10 (10,000 images, 790 SGD steps)", "cifar10_resnet_cpu", "accuracy",
           "accuracy points (+ = better)", "0.198", "none",
           {"guidelines": "guidelines", "hf-default": "hf-default", "all": "all"}),
    Source("BN ResNet (CNN)", "ResNet-20, CIFAR-10 (50,000 images, 7,200 SGD steps)", "cifar10_resnet_horizon_cpu",
           "accuracy", "accuracy points (+ = better)", "3.1", "none",
           {"guidelines": "guidelines", "hf-default": "= all", "all": "all"}),
    Source("pre-LN transformer LM", "char GPT-2 4 x 128, Tiny Shakespeare (2,000 AdamW steps, ~4 passes)",
           "lm_shakespeare_cpu", "val_loss", "val loss, nats/char (− = better)", "0.219", "hf-default",
           {"guidelines": "guidelines", "hf-default": "= hf-default", "all": "all"}),
    Source("pre-LN transformer LM", "char GPT-2 4 x 128, Python stdlib source (17,000 AdamW steps, 0.80 passes)",
           "lm_horizon_cpu", "val_loss", "val loss, nats/char (− = better)", "3.10", "hf-default",
           {"guidelines": "guidelines", "hf-default": "= hf-default", "all": "all"}),
    Source("post-LN transformer (translation)", "Transformer 3+3 x 256, Multi30k De→En, γ wd 0.5 (735 AdamW steps)",
           "iwslt14_cpu", "tok_bleu", "BLEU (+ = better)", "0.233", "none",
           {"guidelines": "guidelines-gwd0.5", "hf-default": "= none", "all": "all-gwd0.5"}),
    Source("post-LN transformer (fine-tuning)", "MiniLM-L6 (all-MiniLM-L6-v2), SST-2 4,000 examples (250 steps)",
           "sst2_cpu", "eval_accuracy", "accuracy points (+ = better)", "6.3e-05", "none",
           {"guidelines": "guidelines", "hf-default": "hf-default", "all": "all"}),
]


def cell(summaries: dict, label: str, baseline: str) -> str:
    if label.startswith("= "):
        return f"= `{label[2:]}`" + (" (baseline)" if label[2:] == baseline else "")
    s = summaries.get(label)
    if s is None or s.diff is None:
        return "not run yet"
    if s.ci is None:
        return f"{s.diff:+.3f} (n={s.n_pairs}, no CI)"
    text = f"{s.diff:+.3f} [{s.ci[0]:+.3f}, {s.ci[1]:+.3f}] (n={s.n_pairs})"
    return f"**{text}**" if s.significant else text


def rows(sources=SOURCES, results_dir: str = os.path.join(ROOT, "results")) -> list[list[str]]:
    table = []
    for src in sources:
        path = os.path.join(results_dir, f"{src.sweep}.csv")
        if not os.path.exists(path):
            continue
        _, runs = read_sweep_csv(path)
        if not any(r.get("label", r.get("entry")) == src.baseline for r in runs):
            continue
        for r in runs:
            r.setdefault("label", r.get("entry"))
        summaries = {s.label: s for s in summarize(runs, src.metric, baseline=src.baseline)}
        base = summaries[src.baseline]
        table.append([src.family, src.model, src.sigma, f"`{src.sweep}`: {src.unit}; `{src.baseline}` "
                      f"{base.mean:.3f} (n={len(base.values)})",
                      *(cell(summaries, src.labels[p], src.baseline) for p in POLICIES)])
    return table


SHORT = {"BN ResNet (CNN)": "ResNet-20, CIFAR-10", "pre-LN transformer LM": "char GPT-2 LM",
         "post-LN transformer (translation)": "post-LN Transformer, Multi30k", "post-LN transformer (fine-tuning)":
         "post-LN MiniLM, SST-2 fine-tuning"}
START, END = "<!-- policy-by-family:start -->", "<!-- policy-by-family:end -->"


def compact(table: list[list[str]]) -> list[str]:
    """The table in five columns, for the README's first screen and results/README.md."""
    head = ["model, data", "Σ", "metric (better)", *(f"`{p}` Δ [95 % CI] (n)" for p in POLICIES)]
    rows = [[SHORT.get(r[0], r[0]), r[2], r[3].split(": ", 1)[1].split(";")[0], *r[4:]] for r in table]
    return markdown_table(head, rows)


def update_docs(paths: list[str], lines: list[str]) -> None:
    """Replace the block between the policy-by-family markers in each file with ``lines``."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if START not in text or END not in text:
            raise SystemExit(f"{path} has no {START} … {END} block to update")
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        with open(path, "w", encoding="utf-8") as f:
            f.write(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "results", "policy_by_family.md"))
    p.add_argument("--update_docs", action="store_true",
                   help="also rewrite the compact table in README.md and results/README.md (between its markers)")
    args = p.parse_args(argv)
    head = ["family", "model, data, run", "Σ", "metric; the entry that decays no γ",
            *(f"`{p}`: Δ [95 % CI]" for p in POLICIES)]
    lines = ["# What each policy did, per model family and decay horizon", "",
             "- made by: `python recipes/reports/family_table.py` from the sweep records named in the metric "
             "column (`results/<sweep>.csv`; their headers give commands, versions, hardware, wall time)",
             "- Σ: the decay horizon of the decayed γ, Σ lr·λ (÷ (1 − momentum) for SGD); decay alone leaves "
             "exp(−Σ) of a decayed γ",
             "- Δ: mean over seeds of the paired difference to the entry that decays no γ (same seed: same initial "
             "weights and data order), Student-t 95 % interval, n pairs; bold where the interval excludes 0 (each "
             "comparison on its own, uncorrected). `= x`: the policy decays exactly what entry x decays on this "
             "model", "",
             *markdown_table(head, rows()), ""]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    if args.update_docs:
        update_docs([os.path.join(ROOT, "README.md"), os.path.join(ROOT, "results", "README.md")], compact(rows()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
