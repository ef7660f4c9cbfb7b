"""Writing a sweep's record: the append-only CSV (`append_row`, with its column declaration) and its Markdown table
(`render`). Experiment machinery, outside the wheel; the statistics and the chart it uses are the library's
(`hf_gammareg.sweeps`: `read_sweep_csv`, `summarize`, `plot_sweep`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any

from hf_gammareg.sweeps import read_sweep_csv, summarize
from hf_gammareg.tables import markdown_cell, markdown_table


@dataclasses.dataclass
class RunRecord:
    """The part of a recipe's ``results.json`` that ``recipes/sweep.py`` reads; a recipe may add other keys
    (samples, BLEU signatures, the γ trajectory). Every recipe writes it through ``recipe_utils.write_results``,
    which checks it with `RunRecord.from_dict`.

    Attributes:
        recipe: the recipe's name.
        seed: the run's seed.
        metrics: ``{name: value}``: the results a sweep summarizes per entry (mean ± std, paired Δ).
        primary_metric: the key of ``metrics`` the sweep compares entries on.
        gamma: ``optimizer_gamma_record(...)``: n_gammas, n_decayed, the decay horizon, every γ's decision.
        train_loss: the mean training loss.
        wall_s: the run's wall time, seconds.
        table_columns: ``{name: value}``: per-run diagnostics the sweep averages in a second table (optional).
        header: lines naming what the run read (e.g. its corpus and SHA-256); the first run's head the CSV (optional).
    """

    recipe: str
    seed: int
    metrics: dict[str, float]
    primary_metric: str
    gamma: dict[str, Any]
    train_loss: float | None
    wall_s: float | None
    table_columns: dict[str, Any] = dataclasses.field(default_factory=dict)
    header: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def required(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "RunRecord":
        """The record's sweep part; ``ValueError`` naming a missing key or a primary metric not in ``metrics``."""
        missing = [k for k in cls.required() if k not in record]
        if missing:
            raise ValueError(f"results.json record lacks {missing}; every recipe writes the fields of "
                             "sweep_records.RunRecord")
        if record["primary_metric"] not in record["metrics"]:
            raise ValueError(f"primary_metric {record['primary_metric']!r} "
                             f"is not one of the metrics {list(record['metrics'])}")
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})


BASE_FIELDS = ["label", "entry", "policy", "invariance", "include", "exclude", "gamma_weight_decay", "seed"]
TAIL_FIELDS = ["n_gammas", "n_decayed", "train_loss", "wall_s", "primary_metric"]


def column_roles(record: RunRecord) -> list[str]:
    """The comment lines that declare a new CSV's columns, from the run record: ``metrics: …`` (the record's
    ``metrics``, summarized per entry) and ``diagnostics: …`` (its ``table_columns``, per-run figures averaged in
    a second table)."""
    return [f"metrics: {' '.join(record.metrics)}", f"diagnostics: {' '.join(record.table_columns)}"]


def declared_columns(comments: list[str]) -> tuple[list[str] | None, list[str]]:
    """``(metrics, diagnostics)`` as a CSV's comment lines declare them (``None``: not declared)."""
    metrics, diagnostics = None, []
    for line in comments:
        key, _, value = line.partition(": ")
        if key == "metrics":
            metrics = value.split()
        elif key == "diagnostics":
            diagnostics = value.split()
    return metrics, diagnostics


def append_row(csv_path: str, row: dict, comments: list[str]) -> None:
    """Append one run; the first run writes the comment lines and fixes the columns."""
    new = not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0
    if new:
        metrics = [k for k in row if k not in BASE_FIELDS + TAIL_FIELDS + ["recipe"]]
        fields = BASE_FIELDS + metrics + TAIL_FIELDS + ["recipe"]
    else:
        with open(csv_path, encoding="utf-8", newline="") as f:
            fields = next(csv.reader(line for line in f if not line.startswith("#")))
    with open(csv_path, "a", encoding="utf-8", newline="") as f:
        f.writelines(f"# {line}\n" for line in comments)
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _fmt(value: float, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{0.0 if abs(value) < 0.5 * 10 ** -digits else value:+.{digits}f}"


def render(csv_path: str, md_path: str, *, title: str, baseline: str | None, order: list[str],
           seeds: list[int]) -> None:
    """Write the Markdown table of a sweep CSV (provenance, per-policy statistics, per-run diagnostics)."""
    comments, rows = read_sweep_csv(csv_path)
    if not rows:
        return
    label_key = "label" if "label" in rows[0] else "entry"
    declared, extras = declared_columns(comments)
    extras = [k for k in extras if k in rows[0]]
    metrics = declared or [k for k in rows[0] if k not in BASE_FIELDS + TAIL_FIELDS + ["recipe"] + extras]
    # CSVs written before rows named their primary metric: the first metric column is it.
    primary = rows[0].get("primary_metric") or metrics[0]
    wall = sum(float(r["wall_s"]) for r in rows if r.get("wall_s"))
    lines = [f"# {title}", ""]
    lines += [f"- {c}" for c in comments if not c.startswith(("metrics: ", "diagnostics: "))]
    lines += [f"- runs: {len(rows)} ({len({r[label_key] for r in rows})} entries × seeds "
              f"{' '.join(sorted({r['seed'] for r in rows}, key=int))}); compute time, summed over runs: "
              f"{wall / 60:.1f} min ({wall:.0f} s)"]
    for key in extras:
        if key.endswith("_per_s"):
            values = [float(r[key]) for r in rows if r.get(key)]
            lines.append(f"- {key.replace('_', ' ')}: {min(values):.0f}–{max(values):.0f} over runs, "
                         f"mean {sum(values) / len(values):.0f}")
    lines.append("")
    summaries = {m: {s.label: s for s in summarize(rows, m, baseline=baseline, label_key=label_key, order=order)}
                 for m in metrics}
    labels = list(summaries[primary])
    # Percentages and BLEU read well to 2 decimals; losses and perplexities (below 10) need 4.
    dec = {m: 4 if max((abs(v) for s in summaries[m].values() for v in s.values), default=0) < 10 else 2
           for m in metrics}
    specs = {r[label_key]: r for r in rows}
    any_gwd = any(r.get("gamma_weight_decay") for r in rows)
    cols = ["entry", "γ setting", "γ decayed / total", *(f"{m} (mean ± std)" for m in metrics)]
    if baseline:
        cols += [f"Δ {primary} vs `{baseline}` [95 % CI]", "significant"]
    cols += [f"{primary} per seed"]
    table_rows = []
    for label in labels:
        runs = [r for r in rows if r[label_key] == label]
        spec = specs[label]
        setting = spec.get("policy", label) + ("" if spec.get("invariance", "exact") == "exact" else " + approximate")
        if spec.get("include"):
            setting += f", include `{markdown_cell(spec['include'])}`"
        if spec.get("exclude"):
            setting += f", exclude `{markdown_cell(spec['exclude'])}`"
        if spec.get("gamma_weight_decay"):
            setting += f", γ wd {spec['gamma_weight_decay']}"
        elif any_gwd and spec.get("policy") != "none":  # say what the other γ get when some entries set it
            setting += ", γ wd = weight decay"
        decayed = ", ".join(sorted({f"{r['n_decayed']} / {r['n_gammas']}" for r in runs}))
        cells = [f"`{label}`", setting, decayed]
        cells += [f"{summaries[m][label].mean:.{dec[m]}f} ± {summaries[m][label].std:.{dec[m]}f}"
                  if label in summaries[m] else "–" for m in metrics]
        s = summaries[primary][label]
        if baseline:
            if label == baseline:
                cells += ["(baseline)", ""]
            elif s.ci is not None:
                d = dec[primary]
                cells += [f"{_fmt(s.diff, d)} [{_fmt(s.ci[0], d)}, {_fmt(s.ci[1], d)}] (n={s.n_pairs})",
                          "**yes**" if s.significant else "no"]
            else:
                cells += [f"{_fmt(s.diff, dec[primary])} (n={s.n_pairs}, no CI)", "–"]
        by_seed = dict(zip(s.seeds, s.values))
        cells.append(", ".join(f"{by_seed[k]:.{dec[primary]}f}" if k in by_seed else "–"
                               for k in seeds + sorted(set(by_seed) - set(seeds))))
        table_rows.append(cells)
    lines += markdown_table(cols, table_rows)
    lines += ["", f"Per seed: `{primary}` for seeds {' '.join(map(str, seeds))} (– not run yet)."]
    if baseline:
        lines.append(
            f"Δ: the mean over seeds of ({primary} of the entry − {primary} of `{baseline}`) for the same seed — the "
            "recipes seed before building the model, so one seed gives every policy the same initial weights and data "
            "order (the header says where a run did not) — with a Student-t 95 % confidence interval over the seed "
            "pairs. \"significant\": the interval excludes 0 (each comparison on its own, no correction for testing "
            "several).")
    if extras:
        lines += ["", "Per-run diagnostics (mean over seeds):", ""]
        diagnostics = []
        for label in labels:
            runs = [r for r in rows if r[label_key] == label]
            vals = []
            for key in extras:
                nums = [float(r[key]) for r in runs if r.get(key) not in (None, "")]
                vals.append(f"{sum(nums) / len(nums):.4g}" if nums else "–")
            diagnostics.append([f"`{label}`", *vals])
        lines += markdown_table(["entry", *extras], diagnostics)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
