"""Compare one metric between two sweep CSVs whose runs are not paired by seed (two recipes draw their random
streams differently), and write the comparison as Markdown.

    python recipes/reports/compare_recipes.py results/sst2_recipe_cpu.csv results/sst2_recipe_no_trainer_cpu.csv \
        --metric eval_accuracy --out results/sst2_no_trainer_cpu.md \
        --title "SST-2 CPU config: Trainer recipe vs no_trainer recipe (seeds 0-2 each)"

The difference (B − A) gets a Welch 95 % interval: t quantile at the Welch–Satterthwaite degrees of freedom,
rounded down (conservative). Each CSV's comment header (command, date, packages, hardware) is carried over.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics

from hf_gammareg.sweeps import read_sweep_csv, t95


def _values(path: str, metric: str) -> tuple[list[str], list[tuple[int, float, dict]]]:
    header, rows = read_sweep_csv(path)
    runs = sorted(((int(r["seed"]), float(r[metric]), r) for r in rows if r.get(metric) not in (None, "")),
                  key=lambda run: run[0])
    if not runs:
        raise SystemExit(f"{path}: no run has a value for {metric!r}")
    return header, runs


def welch(a: list[float], b: list[float]) -> tuple[float, tuple[float, float] | None, float | None]:
    """Mean of b − mean of a, its 95 % Welch interval and degrees of freedom (None with < 2 runs a side)."""
    diff = statistics.mean(b) - statistics.mean(a)
    if len(a) < 2 or len(b) < 2:
        return diff, None, None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)  # squared standard errors
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, (diff, diff), None
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t95(max(1, math.floor(df))) * se
    return diff, (diff - half, diff + half), df


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv_a")
    p.add_argument("csv_b")
    p.add_argument("--metric", default="eval_accuracy")
    p.add_argument("--out", required=True)
    p.add_argument("--title", required=True)
    p.add_argument("--note", action="append", default=[], help="a paragraph to add under the numbers (repeatable)")
    args = p.parse_args(argv)
    header_a, runs_a = _values(args.csv_a, args.metric)
    header_b, runs_b = _values(args.csv_b, args.metric)
    a, b = [v for _, v, _ in runs_a], [v for _, v, _ in runs_b]

    def mean_std(x):
        return statistics.mean(x), statistics.stdev(x) if len(x) > 1 else float("nan")

    diff, ci, df = welch(a, b)
    lines = [f"# {args.title}", "",
             (f"- made by: `python recipes/reports/compare_recipes.py {args.csv_a} {args.csv_b} --metric {args.metric} "
              f"--out {args.out} --title ...{' --note ...' if args.note else ''}`")]
    for name, header in ((args.csv_a, header_a), (args.csv_b, header_b)):
        lines.append(f"- `{name}`:")
        lines += [f"  - {h}" for h in header]
    lines += ["", f"| recipe (CSV) | seed | {args.metric} | train_loss | run time (s) |", "|---|---|---|---|---|"]
    for name, runs in ((args.csv_a, runs_a), (args.csv_b, runs_b)):
        for seed, value, row in runs:
            lines.append(f"| `{os.path.basename(name)}` | {seed} | {value:.2f} | {row.get('train_loss', '–')} "
                         f"| {row.get('wall_s', '–')} |")
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    lines += ["", f"- A = `{os.path.basename(args.csv_a)}`: {ma:.2f} ± {sa:.2f} (mean ± std, n={len(a)})",
              f"- B = `{os.path.basename(args.csv_b)}`: {mb:.2f} ± {sb:.2f} (n={len(b)})"]
    if ci is None:
        lines.append(f"- B − A = {diff:+.2f} (too few runs for an interval)")
    else:
        verdict = "excludes 0: a difference beyond seed noise" if ci[0] > 0 or ci[1] < 0 else \
            "contains 0: within seed noise at this number of seeds"
        dfs = f", Welch df {df:.1f} → t at {max(1, math.floor(df))}" if df is not None else ""
        lines.append(f"- B − A = {diff:+.2f}, 95 % CI [{ci[0]:+.2f}, {ci[1]:+.2f}]{dfs}: the interval {verdict}")
    lines += ["", ("Runs are not paired: the two recipes draw head initialization, data order and dropout from "
                   "different random streams, so the interval is Welch's (unequal variances), not a paired one."), ""]
    for note in args.note:
        lines += [note, ""]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print("\n".join(lines[-6:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
