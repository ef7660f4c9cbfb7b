"""Predicted decay horizon vs the γ measured at the end of every recorded sweep: ``results/decay_horizon.md``.

    python benchmarks/decay_horizon_validation.py --out results/decay_horizon.md

For each sweep the recipe's own parser reads its config (the sweep's ``gamma_weight_decay`` on top), and
`hf_gammareg.horizon.planned_decay_horizon` builds the optimizer and schedule `Trainer` builds from those arguments
on a stand-in scalar: the predicted factor by which weight decay alone multiplies a decayed γ over the run's
optimizer steps. The measured side is what each sweep recorded: the RMS at the end of training of the γ
categories (CIFAR) or roles (LM, translation) the entry decays — averaged over them and over seeds — next to
the same γ under the entry that decays none of them (`none`, or `hf-default` where it keeps them). γ start at
1.0 in these from-scratch runs, so "decayed / undecayed" is what decay did against the gradient's pull. The
SST-2 sweeps recorded no γ RMS: their rows give the prediction alone.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import os
import platform
import statistics
import sys
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")
sys.path.insert(0, RECIPES)

# name, csv, recipe, config, extra flags, optimizer steps of a run (and where that number comes from),
# {entry label: γ columns it decays}, the entry whose same columns are undecayed.
SWEEPS = [
    ("CIFAR-10 ResNet-20, CPU ablation", "cifar10_resnet_cpu.csv", "cifar_resnet", "cifar_resnet_cpu.yaml", [],
     790, "10 epochs × ⌈10,000 / 128⌉ (config comment)",
     {"guidelines": ["inner", "last"], "only:invariant": ["inner"], "only:branch": ["last"],
      "all": ["inner", "last", "stem", "shortcut"], "stem": ["stem"], "shortcut": ["shortcut"]}, "none"),
    ("CIFAR-10 ResNet-20, CPU ablation at its horizon", "cifar10_resnet_horizon_cpu.csv", "cifar_resnet",
     "cifar_resnet_horizon_cpu.yaml", [], 7200, "max_steps",
     {"guidelines": ["inner", "last"], "all": ["inner", "last", "stem", "shortcut"],
      "stem+shortcut": ["stem", "shortcut"], "only:invariant": ["inner"], "only:branch": ["last"]}, "none"),
    ("char-level GPT-2 LM, CPU", "lm_shakespeare_cpu.csv", "lm_pretrain", "lm_shakespeare_cpu.yaml", [],
     2000, "max_steps",
     {"guidelines": ["branch"], "all": ["branch", "head"], "only:head": ["head"]}, "hf-default"),
    ("Multi30k Transformer, CPU, recipe γ wd 1e-4", "iwslt14_cpu.csv", "iwslt14_transformer",
     "iwslt14_transformer_cpu.yaml", [], 735, "measured steps of a run (results/iwslt14_cpu_2core.md)",
     {"guidelines-approx": ["branch", "invariant"]}, "none"),
    ("Multi30k Transformer, CPU, γ wd 0.5", "iwslt14_cpu.csv", "iwslt14_transformer", "iwslt14_transformer_cpu.yaml",
     ["--gamma_weight_decay", "0.5"], 735, "measured steps of a run (results/iwslt14_cpu_2core.md)",
     {"guidelines-gwd0.5": ["branch", "invariant"], "guidelines-approx-gwd0.5": ["branch", "invariant"],
      "all-gwd0.5": ["branch", "invariant", "stream", "head"]}, "none"),
    ("SST-2 MiniLM fine-tuning, CPU", "sst2_recipe_cpu.csv", "sst2_bert", "sst2_bert_cpu.yaml",
     ["--model_name_or_path", "unused"], 250, "⌈4,000 / 16⌉, 1 epoch (config comment)", {}, None),
    ("SST-2 MiniLM fine-tuning, GPU (paper scale)", "sst2_gpu.csv", "sst2_bert", "sst2_bert.yaml", [],
     6315, "3 epochs × ⌈67,349 / 32⌉ (config comment)", {}, None),
]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"_recipe_{name}", os.path.join(RECIPES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rows_of(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def mean_rms(rows: list[dict], label: str, columns: list[str]) -> float | None:
    values = []
    for r in rows:
        if r.get("label", r.get("entry")) != label:
            continue
        cells = [r.get(f"gamma_rms_{c}") for c in columns]
        if any(c in (None, "") for c in cells):
            continue
        values.append(sum(float(c) for c in cells) / len(cells))
    return statistics.mean(values) if values else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("results", "decay_horizon.md"))
    args = p.parse_args(argv)
    from hf_gammareg.horizon import planned_decay_horizon

    table = ["| sweep | optimizer steps | γ weight decay | predicted: decay integral | predicted: shrink from decay "
             "alone | entry | decayed γ (columns) | measured end RMS, decayed | same γ, undecayed (entry) | "
             "decayed / undecayed |", "|" + "---|" * 10]
    pairs: list[tuple[float, float]] = []  # (predicted shrink, measured decayed / undecayed) where decay could act
    long_pairs: list[tuple[float, float]] = []  # the same at a horizon Σ ≥ 1
    for name, csv_name, recipe_name, config, extra, steps, steps_src, entries, reference in SWEEPS:
        recipe = load_recipe(recipe_name)
        parsed = recipe.parse_args(recipe.make_parser(), [os.path.join(RECIPES, "configs", config), *extra,
                                                          "--output_dir", os.path.join("runs", "horizon_check")])
        targs = parsed[-1]
        wd = targs.gamma_weight_decay if targs.gamma_weight_decay is not None else targs.weight_decay
        h = planned_decay_horizon(targs, num_steps=steps, weight_decay=wd, l2=targs.gamma_regularization == "l2")
        integral = "–" if h.integral is None else f"{h.integral:.3g}"
        shrink = "–" if h.shrink is None else f"{h.shrink:.4f}"
        head = f"{name} (`{config}`{' ' + ' '.join(extra[:2]) if extra and extra[0] != '--model_name_or_path' else ''})"
        step_cell = f"{steps:,} ({steps_src})"
        rows = rows_of(os.path.join(ROOT, "results", csv_name))
        if not entries:
            table.append(f"| {head} | {step_cell} | {wd:g} ({h.decay}) | {integral} | {shrink} | every entry | – | "
                         "not recorded | – | – |")
            continue
        for label, columns in entries.items():
            measured = mean_rms(rows, label, columns)
            undecayed = mean_rms(rows, reference, columns)
            m = "–" if measured is None else f"{measured:.3f}"
            u = "–" if undecayed is None else f"{undecayed:.3f} (`{reference}`)"
            ratio = "–" if measured is None or undecayed is None else f"{measured / undecayed:.3f}"
            if measured is not None and undecayed is not None and h.shrink is not None and h.shrink < 0.95:
                (pairs if h.integral < 1 else long_pairs).append((h.shrink, measured / undecayed))
            table.append(f"| {head} | {step_cell} | {wd:g} ({h.decay}) | {integral} | {shrink} | `{label}` | "
                         f"{', '.join(columns)} | {m} | {u} | {ratio} |")
    versions = ", ".join(f"{pkg} {metadata.version(pkg)}" for pkg in ("torch", "transformers", "hf_gammareg"))
    lines = [
        "# Decay horizon: predicted shrink vs the γ measured in the recorded sweeps", "",
        f"- command: python benchmarks/decay_horizon_validation.py --out {args.out}",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; python {platform.python_version()}, "
        f"{versions}",
        "- predicted: `hf_gammareg.horizon.planned_decay_horizon` on each sweep's config (the optimizer and schedule "
        "`Trainer` builds from it) over the run's optimizer steps; the shrink is exact for decay alone (a zero "
        "loss gradient).",
        "- measured: each sweep's CSV (`results/<sweep>.csv`), mean over seeds of the end-of-training RMS of the "
        "γ the entry decays (mean of the per-category/per-role RMS); γ start at 1.0 in the from-scratch runs.",
        "", *table, "",
        f"Reading: at Σ < 1, where decay could act (predicted shrink < 0.95; {len(pairs)} entries), the decayed γ "
        "ended at "
        f"{min(r for _, r in pairs):.3f}–{max(r for _, r in pairs):.3f} of the same γ left undecayed, against a "
        f"predicted {min(q for q, _ in pairs):.3f}–{max(q for q, _ in pairs):.3f} from decay alone: "
        f"{sum(r >= q for q, r in pairs)} of {len(pairs)} a little above the prediction (the gradient pulls γ "
        "back), none far from it — at a decay integral of ~0.2 decay sets how far a decayed γ moves, and it "
        "moves them ~20 %. Where the prediction is ≥ 0.999 (the recipe's translation γ wd, SST-2 fine-tuning) "
        "decay could not move a γ measurably, whatever the policy."
        + (f" At Σ ≥ 1 ({len(long_pairs)} entries: the CIFAR horizon ablation) the decayed γ ended at "
           f"{min(r for _, r in long_pairs):.2f}–{max(r for _, r in long_pairs):.2f} of the undecayed ones, far above "
           f"the {min(q for q, _ in long_pairs):.3f} decay alone would leave: the gradient holds them at the "
           "equilibrium between decay and gradient — which is the regime the paper's claims are about."
           if long_pairs else ""),
    ]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
