"""The γ of the LM horizon sweep over training: RMS per role, one line per policy (seed 0 by default).

    python recipes/reports/lm_trajectory.py --runs results/lm_horizon_cpu_runs \\
        --out docs/gamma_trajectory_lm_horizon_cpu.png

Reads the ``gamma_trajectory`` that ``recipes/lm_pretrain.py`` writes into each run's ``results.json`` (the
sweep's records, one JSON a run, named ``<entry>-seed<k>.json``): every ``trajectory_window`` steps, the RMS of
the γ of each role (GPT-2: ``branch`` = the block norms ``ln_1``/``ln_2``, ``head`` = ``ln_f``) and the mean
effective step ‖γ_{t+1} − γ_t‖ / ‖γ_t‖ over the window. The figure has one column per role, the RMS on top and
the effective step below, one line per entry; the printout gives, per entry and role, the RMS at the end and
where decay alone would have left it (the run's measured shrink).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

from hf_gammareg._plotting import new_figure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROLES = ("branch", "head")
ENTRIES = ("hf-default", "guidelines", "all", "only:head")


def load_runs(folder: str, seed: int) -> dict[str, dict]:
    """``{entry label: results.json record}`` of ``seed`` for the entries of `ENTRIES` found in ``folder``."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, f"*-seed{seed}.json"))):
        match = re.fullmatch(rf"(.+)-seed{seed}\.json", os.path.basename(path))
        label = match.group(1).replace("only-", "only:") if match else None
        if label not in ENTRIES:
            continue
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if record.get("gamma_trajectory"):
            out[label] = record
    return out


def end_lines(runs: dict[str, dict]) -> list[str]:
    lines = []
    for label in ENTRIES:
        if label not in runs:
            continue
        record = runs[label]
        last = record["gamma_trajectory"][-1]
        h = record["decay_horizon_measured"]
        rms = ", ".join(f"{role} {last[f'gamma_rms_{role}']:.3f}" for role in ROLES if f"gamma_rms_{role}" in last)
        lines.append(f"{label}: γ RMS at step {last['step']:,}: {rms}; val loss {record['metrics']['val_loss']:.4f}; "
                     f"Σ = {h['decay_horizon']:.3f}, decay alone leaves {h['shrink']:.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=os.path.join(ROOT, "results", "lm_horizon_cpu_runs"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "gamma_trajectory_lm_horizon_cpu.png"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    runs = load_runs(args.runs, args.seed)
    if not runs:
        raise SystemExit(f"no <entry>-seed{args.seed}.json with a gamma_trajectory in {args.runs}")
    fig = new_figure(figsize=(9.0, 6.0))
    axes = fig.subplots(2, len(ROLES), sharex=True, squeeze=False)
    for j, role in enumerate(ROLES):
        for label, record in runs.items():
            traj = [row for row in record["gamma_trajectory"] if row.get(f"gamma_rms_{role}") is not None]
            steps = [row["step"] for row in traj]
            marker = "o" if len(steps) < 5 else None
            axes[0][j].plot(steps, [row[f"gamma_rms_{role}"] for row in traj], label=label, marker=marker)
            axes[1][j].plot(steps, [row[f"step_ratio_{role}"] for row in traj], label=label, marker=marker)
        axes[0][j].set_title(f"{role} γ ({'ln_1, ln_2' if role == 'branch' else 'ln_f'})")
        axes[0][j].set_ylabel("γ RMS")
        axes[1][j].set_ylabel("‖Δγ‖ / ‖γ‖ per step")
        axes[1][j].set_yscale("log")
        axes[1][j].set_xlabel("step")
    axes[0][0].legend()
    sigma = sorted({f"{r['decay_horizon_measured']['decay_horizon']:.2f}" for r in runs.values()})
    fig.suptitle(f"char GPT-2, γ RMS per role over training: Σ lr·λ = {', '.join(sigma)} (seed {args.seed})")
    fig.savefig(args.out, dpi=110)
    print("\n".join(end_lines(runs)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
