"""Shared plumbing for the recipes: YAML + CLI arguments, plain-Python data files, the γ record.

Nothing here imports `datasets` or `evaluate`: local data and metrics must work on a machine that has
neither and no network. The Hub loader imports `datasets` only when a recipe is asked for a Hub dataset.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from typing import Any, Sequence

import torch
import yaml
from transformers import HfArgumentParser


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
    """What the optimizer really does to each γ: role, policy decision and the param group's weight decay.

    Read from ``trainer.optimizer.param_groups`` — not from the plan — so a test can check that the
    requested policy reached the optimizer.
    """
    report, plan = trainer.gamma_report, trainer.gamma_plan
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    group_decay = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            if id(p) in names:
                group_decay[names[id(p)]] = float(group["weight_decay"])
    cfg = trainer.gamma_config
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


def write_results(trainer, path: str, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON from the main process only."""
    if trainer.is_world_process_zero():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 1)
