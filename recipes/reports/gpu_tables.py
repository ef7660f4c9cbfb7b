"""Render the GPU tables (results/sst2_gpu.md, results/iwslt14_gpu_budget.md) from the recorded runs.

    python recipes/reports/gpu_tables.py
    python recipes/reports/gpu_tables.py --histories runs/gpu   # also unpack each run's gamma_history.jsonl
    hf-gammareg plot runs/gpu/session1/mt-hf-default runs/gpu/session1/mt-guidelines \\
        --out docs/gamma_norms_iwslt14_gpu.png

Reads session*_results.json (each run's own results.json, as the recipes wrote them on the GPU
machine) and sessions.json (what the device printed); the CSVs and tables come out of recipes/sweep.py's
`append_row` and `render`, so they have the same layout as the CPU sweeps (with the paired difference to
`hf-default`).
"""

from __future__ import annotations

import argparse
import json
import os

import _recipes_path  # noqa: F401  (recipes/ on the path)
from sweep import append_row, parse_entry, record_row, render

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "results", "gpu")  # the device sessions' records

ENTRIES = {"hf-default": "hf-default", "guidelines": "guidelines", "guidelines-approx": "guidelines+approximate",
           "all": "all"}


def rows_for(prefix: str) -> list[dict]:
    rows = []
    for name in sorted(f for f in os.listdir(HERE) if f.startswith("session") and f.endswith("_results.json")):
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            runs = json.load(f)
        for run, files in runs.items():
            if not run.startswith(prefix) or "results.json" not in files:
                continue
            r = files["results.json"]
            rows.append(record_row(parse_entry(ENTRIES[run[len(prefix):]]), r.get("seed"), r))
    return rows


def write_tables(name: str, rows: list[dict], header: list[str], title: str, order: list[str]) -> None:
    csv_path = os.path.join(HERE, "..", f"{name}.csv")
    if os.path.exists(csv_path):
        os.remove(csv_path)
    for k, row in enumerate(rows):
        append_row(csv_path, row, header if k == 0 else [])
    seeds = sorted({int(r["seed"]) for r in rows})
    render(csv_path, os.path.join(HERE, "..", f"{name}.md"), title=title, baseline="hf-default", order=order,
           seeds=seeds)


def unpack_histories(target: str) -> None:
    """Write every recorded run's gamma_history.jsonl to ``target/<session>/<run>/`` for `hf-gammareg plot`."""
    for name in sorted(f for f in os.listdir(HERE) if f.startswith("session") and f.endswith("_results.json")):
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            runs = json.load(f)
        for run, files in runs.items():
            if "gamma_history.jsonl" in files:
                out = os.path.join(target, name[: -len("_results.json")], run)
                os.makedirs(out, exist_ok=True)
                with open(os.path.join(out, "gamma_history.jsonl"), "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(line) + "\n" for line in files["gamma_history.jsonl"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", help="also unpack the runs' gamma_history.jsonl files under this folder")
    cli = parser.parse_args(argv)
    if cli.histories:
        unpack_histories(cli.histories)
    with open(os.path.join(HERE, "sessions.json"), encoding="utf-8") as f:
        facts = json.load(f)
    common = [f"hardware: {facts['device']}", f"packages: {facts['software']}",
              "device script: recipes/reports/gpu_run.sh (six runs side by side on the one GPU), called as "
              + " and ".join(f"`{s['command']}` (wall {s['wall_s_all_six_runs_in_parallel']} s)"
                             for s in facts["sessions"]),
              f"model and data: {facts['carried']}",
              "recipe code: the recipes as they stood at the time (before they were first committed); the classifier "
              "head / translation model was initialized before the recipe called set_seed (fixed since), so a "
              "seed did not pin the initial weights of these runs"]
    sst2 = rows_for("sst2-")
    header = common + [
        "config: recipes/configs/sst2_bert.yaml (paper scale: full 67,349-sentence train set, length 128, batch 32, "
        "lr 2e-5, 3 epochs, 10 % warmup, weight decay 0.01, AdamW) with --model_name_or_path .devcarry/minilm "
        "--bf16 true; all-MiniLM-L6-v2 replaces bert-base-uncased, which cannot be downloaded here",
        f"seeds: {sorted({r['seed'] for r in sst2})}",
    ]
    write_tables("sst2_gpu", sst2, header, "sst2_gpu: sst2_bert.py over γ policies (one H200)",
                 list(ENTRIES.values()))
    mt = rows_for("mt-")
    header = common + [
        "config: recipes/configs/iwslt14_transformer.yaml (transformer_iwslt_de_en: 6+6 layers, d512, FFN 1024, "
        "4 heads, lr 5e-4 inverse-sqrt, 4,000 warmup steps, ~4,096-token batches) with --data_dir Multi30k "
        "(IWSLT14 is not available offline) --max_steps 2000 --bf16 true: a fixed budget of 2,000 steps "
        "(~17.5 epochs of Multi30k, still inside the 4,000-step warmup), beam 5 on the 1,000-sentence test set",
        f"seeds: {sorted({r['seed'] for r in mt})}",
    ]
    write_tables("iwslt14_gpu_budget", mt, header,
                 "iwslt14_gpu_budget: iwslt14_transformer.py at 2,000 steps over γ policies (one H200)",
                 ["hf-default", "guidelines"])
    print("wrote results/sst2_gpu.md and results/iwslt14_gpu_budget.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
