"""Reading a policy sweep: its CSV (`read_sweep_csv`), per-policy statistics (`summarize`, `t95`) and the bar chart
(`plot_sweep`, behind ``hf-gammareg plot --sweep``). Writing one — running the recipes, appending the CSV, the
Markdown table — is experiment machinery and lives with the recipes (``recipes/sweep.py``,
``recipes/sweep_records.py``), outside the wheel.

A sweep CSV holds one row per finished run (policy entry × seed), with ``# `` comment lines for the
provenance (command, versions, hardware). Runs of one seed share the initial weights and the data order
under every policy, so a policy's effect is measured as the **paired** difference to a baseline policy,
seed by seed, with a Student-t 95 % confidence interval over seeds.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import statistics
from typing import Iterable, Sequence

# Two-sided 95 % quantiles of Student's t, t_{0.975, df}, df = 1..30 (standard table values).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(df: int) -> float:
    """t_{0.975, df}: the factor of a two-sided 95 % confidence interval with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("a confidence interval needs at least 2 observations (df >= 1)")
    if df <= len(_T95):
        return _T95[df - 1]
    return 1.960 + 2.4 / df  # within 0.002 of the exact value for df > 30


def read_sweep_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    """``(comment lines without '# ', rows)`` of a sweep CSV; comment lines may appear anywhere."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    comments = [line[2:] if line.startswith("# ") else line[1:] for line in lines if line.startswith("#")]
    data = [line for line in lines if line and not line.startswith("#")]
    rows = list(csv.DictReader(io.StringIO("\n".join(data)))) if data else []
    return comments, rows


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


@dataclasses.dataclass
class EntrySummary:
    """One policy entry of a sweep: its metric over seeds and its paired difference to the baseline."""

    label: str
    seeds: list[int]
    values: list[float]
    mean: float
    std: float
    diff: float | None = None  # mean over shared seeds of (this − baseline)
    ci: tuple[float, float] | None = None  # 95 % CI of that mean difference
    n_pairs: int = 0

    @property
    def significant(self) -> bool | None:
        """Whether the 95 % CI of the difference excludes 0 (``None`` without a CI)."""
        if self.ci is None:
            return None
        return self.ci[0] > 0 or self.ci[1] < 0


def summarize(rows: Sequence[dict], metric: str, *, baseline: str | None = None, label_key: str = "label",
              order: Iterable[str] | None = None) -> list[EntrySummary]:
    """Per-entry mean ± std of ``metric`` and, against ``baseline``, the paired difference with a 95 % CI.

    Rows are matched to the baseline's by ``seed``; an entry needs ≥ 2 shared seeds for a CI.
    """
    by_label: dict[str, dict[int, float]] = {}
    for row in rows:
        value = _float(row.get(metric))
        if value is None:
            continue
        by_label.setdefault(row[label_key], {})[int(row["seed"])] = value
    if baseline is not None and baseline not in by_label:
        raise ValueError(f"baseline {baseline!r} has no runs; entries: {sorted(by_label)}")
    labels = [lab for lab in (order or by_label) if lab in by_label]
    labels += [lab for lab in by_label if lab not in labels]
    out = []
    base = by_label.get(baseline, {}) if baseline is not None else {}
    for label in labels:
        seeds = sorted(by_label[label])
        values = [by_label[label][s] for s in seeds]
        summary = EntrySummary(label, seeds, values, statistics.mean(values),
                               statistics.stdev(values) if len(values) > 1 else 0.0)
        shared = [s for s in seeds if s in base]
        if baseline is not None and label != baseline and shared:
            diffs = [by_label[label][s] - base[s] for s in shared]
            summary.diff, summary.n_pairs = statistics.mean(diffs), len(diffs)
            if len(diffs) > 1:
                half = t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
                summary.ci = (summary.diff - half, summary.diff + half)
        out.append(summary)
    return out


def sweep_figure(csv_path: str, *, metric: str | None = None, baseline: str | None = None,
                 title: str | None = None, order: Iterable[str] | None = None):
    """The figure `plot_sweep` saves: ``metric`` per entry as bars (mean ± std over seeds, each seed a dot)
    and, with a ``baseline``, a second panel of each entry's paired difference to it with its 95 % CI
    (red where the CI excludes 0)."""
    from ._plotting import new_figure, plain_y_axis

    _, rows = read_sweep_csv(csv_path)
    if not rows:
        raise ValueError(f"{csv_path} holds no runs")
    label_key = "label" if "label" in rows[0] else "entry"
    if metric is None:
        metric = rows[0].get("primary_metric") or next(
            (k for k in rows[0] if k not in ("seed", "n_gammas", "n_decayed") and _float(rows[0][k]) is not None), None)
    if metric is None or metric not in rows[0]:
        raise ValueError(f"{csv_path} has no column {metric!r}; columns: {list(rows[0])}")
    if order is None and baseline is not None:
        order = [baseline]  # the reference first; the others in the order the sweep ran them
    summaries = summarize(rows, metric, baseline=baseline, label_key=label_key, order=order)
    panels = 2 if baseline is not None else 1
    width = max(6.0, 0.9 * len(summaries) + 2)
    fig = new_figure(figsize=(width * panels * 0.75, 4.4))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _draw_means(axes[0], summaries, metric)
    if panels == 2:
        _draw_differences(axes[1], summaries, metric, baseline)
    for a in axes:
        plain_y_axis(a)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _draw_means(ax, summaries, metric: str) -> None:
    """Bars of each entry's mean ± std over seeds, each seed a dot, the axis cut to the data."""
    x = list(range(len(summaries)))
    ax.bar(x, [s.mean for s in summaries], yerr=[s.std for s in summaries], capsize=4, color="#8fb3d9",
           edgecolor="#33557a")
    for i, s in enumerate(summaries):
        ax.scatter([i] * len(s.values), s.values, s=10, color="black", zorder=3)
    low = min(min(min(s.values), s.mean - s.std) for s in summaries)
    high = max(max(max(s.values), s.mean + s.std) for s in summaries)
    # The axis is cut to the data (accuracies differ in the first decimal, not from 0): the bars show
    # where each mean lies, not its size from zero.
    pad = 0.15 * (high - low) or 0.05 * abs(high) or 0.5
    ax.set_ylim(low - 2 * pad, high + pad)
    ax.set_ylabel(metric)
    ax.set_title("mean ± std over seeds (dots: the seeds)", fontsize=9)
    ax.set_xticks(x, [s.label for s in summaries], rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)


def _draw_differences(ax, summaries, metric: str, baseline: str) -> None:
    """Each entry's paired difference to the baseline with its 95 % CI, red where the CI excludes 0."""
    compared = [s for s in summaries if s.diff is not None]
    for i, s in enumerate(compared):
        color = "#b03a2e" if s.significant else "#555555"
        if s.ci is not None:
            ax.errorbar([i], [s.diff], yerr=[[s.diff - s.ci[0]], [s.ci[1] - s.diff]], fmt="o", color=color,
                        capsize=4)
        else:
            ax.plot([i], [s.diff], "o", color=color)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(compared)), [s.label for s in compared], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(compared) - 0.5)
    ax.set_ylabel(f"Δ {metric} vs {baseline}")
    ax.set_title("paired by seed, 95 % CI (red: excludes 0)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def plot_sweep(csv_path: str, out_path: str, *, metric: str | None = None, baseline: str | None = None,
               title: str | None = None, order: Iterable[str] | None = None) -> str:
    """Save the bar chart of a sweep CSV (see `sweep_figure`) as a PNG; returns ``out_path``.

    Needs matplotlib (``pip install 'hf_gammareg[plot]'``).
    """
    fig = sweep_figure(csv_path, metric=metric, baseline=baseline, title=title, order=order)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=110)
    return out_path


# -- the CSV record and its Markdown table -------------------------------------------------------------------
