"""The mechanism behind the horizon ablation: γ RMS and effective step per BN category, `none` vs `guidelines`.

    python recipes/reports/horizon_mechanism.py --runs results/cifar10_resnet_horizon_cpu_runs \\
        --out docs/gamma_horizon_mechanism_cifar10_cpu.png

Reads the ``gamma_trajectory`` that ``recipes/cifar_resnet.py`` writes into each run's ``results.json``
(the sweep's records, one JSON a run, named ``<entry>-seed<k>.json``): for every window of steps, the RMS
of the γ in each BN category and the mean over that category's γ tensors of ‖γ_{t+1} − γ_t‖ / ‖γ_t‖, the
effective step the optimizer takes on them. The paper's second analysis says decaying a γ whose scale the
loss does not see (the inner BN, `invariant`) shrinks ‖γ‖ and so raises its effective learning rate
η/‖γ‖²: under `guidelines` the inner γ's effective step should rise above `none`'s as their RMS falls.
The figure has, per category, the γ RMS (top) and the effective step (bottom) over training, one line per
entry (mean over the seeds present, each seed faint); it prints the ratio guidelines / none of the
effective step in the stable-lr phase, per category and seed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys

CATEGORIES = ("inner", "last", "stem", "shortcut")
ENTRIES = ("none", "guidelines")


def load_runs(folder: str) -> dict[str, dict[int, list[dict]]]:
    """``{entry: {seed: trajectory}}`` for the entries in `ENTRIES` found in ``folder``."""
    out: dict[str, dict[int, list[dict]]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*-seed*.json"))):
        match = re.fullmatch(r"(.+)-seed(\d+)\.json", os.path.basename(path))
        if match is None or match.group(1) not in ENTRIES:
            continue
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if record.get("gamma_trajectory"):
            out.setdefault(match.group(1), {})[int(match.group(2))] = record["gamma_trajectory"]
    return out


def stable_phase_ratio(runs: dict, category: str, seed: int, lo: int, hi: int, key: str = "step_ratio") -> float | None:
    """guidelines / none of the mean ``key`` (effective step, or γ RMS) of ``category`` over steps ``lo``–``hi``."""
    means = []
    for entry in ENTRIES:
        points = [p[f"{key}_{category}"] for p in runs.get(entry, {}).get(seed, [])
                  if lo <= p["step"] <= hi and p.get(f"{key}_{category}") is not None]
        if not points:
            return None
        means.append(statistics.mean(points))
    return means[1] / means[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=os.path.join("results", "cifar10_resnet_horizon_cpu_runs"))
    p.add_argument("--out", default=os.path.join("docs", "gamma_horizon_mechanism_cifar10_cpu.png"))
    p.add_argument("--stable", nargs=2, type=int, default=(1000, 5400), metavar=("FROM", "TO"),
                   help="steps of the constant-lr phase over which the effective steps are compared")
    args = p.parse_args(argv)
    runs = load_runs(args.runs)
    missing = [e for e in ENTRIES if e not in runs]
    if missing:
        print(f"horizon_mechanism: no runs of {missing} with a gamma_trajectory in {args.runs}", file=sys.stderr)
        return 2
    seeds = sorted(set(runs["none"]) & set(runs["guidelines"]))
    print(f"seeds with both entries: {seeds}")
    print(f"guidelines / none over steps {args.stable[0]}–{args.stable[1]} (lr constant), per seed: the effective "
          "step ‖Δγ‖/‖γ‖, and what η/‖γ‖² predicts from the γ RMS, (RMS none / RMS guidelines)²")
    for cat in CATEGORIES:
        steps = [stable_phase_ratio(runs, cat, s, *args.stable) for s in seeds]
        rms = [stable_phase_ratio(runs, cat, s, *args.stable, key="gamma_rms") for s in seeds]
        predicted = [None if r is None else 1 / r ** 2 for r in rms]
        fmt = lambda xs: ", ".join("–" if x is None else f"{x:.2f}" for x in xs)  # noqa: E731
        print(f"  {cat:9s} effective step {fmt(steps)}   predicted {fmt(predicted)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(CATEGORIES), figsize=(4.0 * len(CATEGORIES), 6.4), sharex=True,
                             constrained_layout=True)
    colours = {"none": "#4c72b0", "guidelines": "#dd8452"}
    for col, cat in enumerate(CATEGORIES):
        for row, key, label in ((0, f"gamma_rms_{cat}", "γ RMS"), (1, f"step_ratio_{cat}", "‖Δγ‖ / ‖γ‖ per step")):
            ax = axes[row][col]
            for entry in ENTRIES:
                curves = []
                for seed in seeds:
                    points = [(q["step"], q[key]) for q in runs[entry][seed] if q.get(key) is not None]
                    if points:
                        xs, ys = zip(*points)
                        ax.plot(xs, ys, color=colours[entry], alpha=0.25, lw=0.8)
                        curves.append(dict(points))
                if curves:
                    steps = sorted(set.intersection(*(set(c) for c in curves)))
                    ax.plot(steps, [statistics.mean(c[s] for c in curves) for s in steps], color=colours[entry],
                            lw=1.8, label=f"{entry} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
            if row == 1:
                ax.set_yscale("log")
                ax.set_xlabel("step")
            ax.set_title(f"{cat} BN: {label}", fontsize=10)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("ResNet-20 on CIFAR-10 at Σ = 3.1 (cifar_resnet_horizon_cpu.yaml): decayed inner/last BN γ "
                 "under guidelines vs none", fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
