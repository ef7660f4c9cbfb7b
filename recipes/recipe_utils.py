"""Shared plumbing for the recipes: YAML + CLI arguments, plain-Python data files, the γ record.

Nothing here imports `datasets` or `evaluate`: local data and metrics must work on a machine that has
neither and no network. The Hub loader imports `datasets` only when a recipe is asked for a Hub dataset.
"""

from __future__ import annotations

import csv
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
    `TrlParser` solves it the same way: the YAML sets argparse defaults).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        with open(argv.pop(0), encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        actions = {a.dest: a for a in parser._actions}
        unknown = sorted(set(values) - set(actions))
        if unknown:
            raise ValueError(f"unknown key(s) in the YAML config: {unknown}")
        for key in values:
            actions[key].required = False  # the YAML supplies it; a CLI flag may still override
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


# -- data ---------------------------------------------------------------------------------------------
class ListDataset(torch.utils.data.Dataset):
    """A list of feature dicts; the Trainer needs nothing more."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def read_records(path: str) -> list[dict[str, Any]]:
    """Rows of a TSV, CSV, JSON (a list of objects) or JSON Lines file, as dicts keyed by column.

    TSV is read with ``QUOTE_NONE``: GLUE's SST-2 sentences contain bare quote characters.
    """
    ext = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8", newline="") as f:
        if ext == ".tsv":
            return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        if ext == ".csv":
            return list(csv.DictReader(f))
        if ext == ".jsonl":
            return [json.loads(line) for line in f if line.strip()]
        if ext == ".json":
            text = f.read()
            try:
                data = json.loads(text)
            except json.JSONDecodeError:  # JSON Lines saved as .json (what `datasets` writes)
                return [json.loads(line) for line in text.splitlines() if line.strip()]
            return data["data"] if isinstance(data, dict) and "data" in data else data
    raise ValueError(f"{path}: expected a .tsv, .csv, .json or .jsonl file")


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def load_hub_dataset(name: str, config: str | None, split: str):
    """A Hub dataset split; `datasets` is imported here only, so local runs never need it."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Hub datasets need `pip install datasets`; local files do not") from exc
    return datasets.load_dataset(name, config, split=split)


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
