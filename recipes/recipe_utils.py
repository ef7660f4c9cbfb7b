"""Shared plumbing for the recipes: YAML + CLI arguments, data files through `datasets`, the γ record.

Local data files are read with `datasets.load_dataset("csv" | "json" | "text", data_files=...)`: it works
offline, caches the parsed file as Arrow, and gives the same `Dataset` a Hub dataset gives, so one code
path (`Dataset.select`, `Dataset.map`) serves both.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
import sys
import time
from typing import Any, Sequence

import torch
import yaml
from transformers import HfArgumentParser, TrainerCallback


def parse_args(parser: HfArgumentParser, argv: Sequence[str] | None) -> tuple:
    """``recipe.py [config.yaml] [--flag value ...]``: YAML values become defaults, CLI flags override them.

    `HfArgumentParser.parse_yaml_file` alone cannot be overridden from the command line (trl's
    `TrlParser` solves it the same way: the YAML sets argparse defaults). A key the recipe does not
    know ends the run with exit status 2 and a message naming the key and the closest known one.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        path = argv.pop(0)
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, dict):
            parser.exit(2, f"{parser.prog}: error: {path}: expected `key: value` lines, "
                           f"got a {type(values).__name__}\n")
        actions = {a.dest: a for a in parser._actions if a.dest != "help"}
        unknown = [key for key in values if key not in actions]
        if unknown:
            problems = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), list(actions), n=1)
                problems.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            # parser.exit, not parser.error: the usage line of a TrainingArguments parser runs to pages.
            parser.exit(2, f"{parser.prog}: error: {path}: unknown key{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(problems)} (--help lists the known ones)\n")
        for key in values:
            actions[key].required = False  # the YAML supplies it; a CLI flag may still override
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


# -- data ---------------------------------------------------------------------------------------------
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}


def load_data_file(path: str, *, columns: dict[str, str] | None = None, builder: str | None = None):
    """One local file as a `datasets.Dataset` (split ``train`` of ``load_dataset(builder, data_files=path)``).

    ``builder`` defaults from the extension: ``.csv``/``.tsv`` → ``csv``, ``.json``/``.jsonl`` (a list
    of objects or JSON Lines) → ``json``, anything else → ``text`` (one row per line, column ``text``).
    CSV/TSV fields stay the text they are, as the `csv` module reads them: no NaN for ``NA``, ``null``
    or empty fields. TSV is read with ``QUOTE_NONE`` (GLUE's SST-2 sentences contain bare quotes).
    ``columns`` (``{name: datasets dtype}``) keeps only those columns, with those types.
    """
    import datasets

    ext = os.path.splitext(path)[1].lower()
    builder = builder or _BUILDERS.get(ext, "text")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such data file: {path}")
    features = datasets.Features({k: datasets.Value(v) for k, v in columns.items()}) if columns else None
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        kwargs = {"keep_default_na": False, "na_filter": False, "features": features,
                  "usecols": list(columns) if columns else None}
        if ext == ".tsv":
            kwargs.update(delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        data = datasets.load_dataset(builder, data_files=path, split="train", **kwargs)
    except ValueError as exc:  # e.g. pandas: "Usecols do not match columns"
        raise ValueError(f"{path}: cannot read it as {builder} with columns {list(columns or [])}: {exc}") from None
    if columns and builder != "csv":
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; it has {data.column_names}")
        data = data.select_columns(list(columns)).cast(features)
    return data


def first_rows(data, limit: int | None):
    """The first ``limit`` rows of a `Dataset` (all of them when ``limit`` is falsy), in order."""
    return data.select(range(min(limit, len(data)))) if limit else data


# -- the γ record ---------------------------------------------------------------------------------------
def gamma_record(trainer) -> dict[str, Any]:
    """:func:`optimizer_gamma_record` of a `GammaRegTrainer` after training."""
    return optimizer_gamma_record(trainer.model, trainer.optimizer, trainer.gamma_plan)


def optimizer_gamma_record(model: torch.nn.Module, optimizer, plan) -> dict[str, Any]:
    """What the optimizer really does to each γ: role, policy decision and the param group's weight decay.

    Read from ``optimizer.param_groups`` — not from the plan — so a test can check that the requested
    policy reached the optimizer. ``plan`` is the `GammaDecayPlan` the groups were built from (the
    Trainer's ``gamma_plan``, or ``hf_gammareg.decay_plan(...)`` in a loop of one's own).
    """
    report, cfg = plan.report, plan.config
    names = {id(p): n for n, p in model.named_parameters()}
    group_decay = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) in names:
                group_decay[names[id(p)]] = float(group["weight_decay"])
    return {
        "policy": cfg.policy,
        "invariance": cfg.invariance,
        "regularization": cfg.regularization,
        "summary": report.summary(cfg.policy, include=cfg.include, exclude=cfg.exclude),
        "gammas": {
            name: {"role": report.roles.get(name), "decayed": name in plan.decayed,
                   "optimizer_weight_decay": group_decay.get(name)}
            for name in sorted(plan.gammas)
        },
        "n_gammas": len(plan.gammas),
        "n_decayed": len(plan.decayed),
    }


def write_results(owner, path: str, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON from the main process only (``owner``: a Trainer or an ``Accelerator``)."""
    main = owner.is_world_process_zero() if hasattr(owner, "is_world_process_zero") else owner.is_main_process
    if main:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 1)


class ThroughputCallback(TrainerCallback):
    """Adds ``<unit>_per_s`` (over the steps since the previous log line) to every training log line."""

    def __init__(self, items_per_step: int, unit: str = "images"):
        self.items_per_step, self.key = items_per_step, f"{unit}_per_s"
        self._last: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self._last is None or "loss" not in logs:
            return
        now, step = time.perf_counter(), state.global_step
        seconds, steps = now - self._last[0], step - self._last[1]
        if seconds > 0 and steps > 0:
            logs[self.key] = round(steps * self.items_per_step / seconds, 1)
        self._last = (now, step)


def gamma_rms_by_role(model: torch.nn.Module, report) -> dict[str, float]:
    """Root mean square of the γ values of each role (1.0 for norms at initialization)."""
    sums: dict[str, list[float]] = {}
    params = dict(model.named_parameters())
    for name, role in report.roles.items():
        p = params.get(name)
        if p is None:
            continue
        s = sums.setdefault(role, [0.0, 0])
        s[0] += float(p.detach().float().pow(2).sum())
        s[1] += p.numel()
    return {role: round(math.sqrt(total / count), 5) for role, (total, count) in sorted(sums.items())}
