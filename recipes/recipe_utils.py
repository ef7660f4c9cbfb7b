"""Shared plumbing for the recipes: YAML + CLI arguments, data files through `datasets`, the γ record.

Local data files are read with `datasets.load_dataset("csv" | "json" | "text", data_files=...)`: it works
offline, caches the parsed file as Arrow, and gives the same `Dataset` a Hub dataset gives, so one code
path (`Dataset.select`, `Dataset.map`) serves both.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from sweep_records import RunRecord
from transformers import HfArgumentParser, TrainerCallback

from hf_gammareg.callbacks import gamma_norm_stats
from hf_gammareg.decision import decision_summary
from hf_gammareg.horizon import sgd_decay_shrink


def parse_args(parser: HfArgumentParser, argv: Sequence[str] | None) -> tuple:
    """``recipe.py [config.yaml] [--flag value ...]``: YAML values become defaults, CLI flags override them.

    `HfArgumentParser.parse_yaml_file` alone cannot be overridden from the command line (trl's
    `TrlParser` solves it the same way: the YAML sets argparse defaults). A key the recipe does not
    know ends the run with exit status 2 and a message naming the key and the closest known one; so do a
    mistyped flag (``--gamma_polcy all``) and a value the arguments refuse (``--gamma_policy guideline``).
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
    try:
        *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False,
                                                              return_remaining_strings=True)
    except ValueError as exc:  # a value a dataclass refuses (--gamma_policy guideline, a bad regex, …)
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if unknown:
        flags = [opt for a in parser._actions for opt in a.option_strings if opt.startswith("--")]
        problems = []
        for arg in unknown:
            if not arg.startswith("-"):
                problems.append(repr(arg))
                continue
            close = difflib.get_close_matches(arg.split("=", 1)[0], flags, n=1)
            problems.append(f"{arg!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        parser.exit(2, f"{parser.prog}: error: unrecognized argument{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(problems)} (--help lists the known ones)\n")
    return tuple(parsed)


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
    """:func:`optimizer_gamma_record` of a `GammaRegTrainer` after training, with the run's decay horizon."""
    return optimizer_gamma_record(trainer.model, trainer.optimizer, trainer.gamma_plan, horizon=trainer.gamma_horizon)


def optimizer_gamma_record(model: torch.nn.Module, optimizer, plan, horizon=None) -> dict[str, Any]:
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
        "summary": decision_summary(plan.decisions),
        "inputs_source": report.inputs_source,  # which batch the roles were read from
        "gammas": {
            name: {"role": report.roles.get(name), "decayed": name in plan.decayed,
                   "optimizer_weight_decay": group_decay.get(name)}
            for name in sorted(plan.gammas)
        },
        "n_gammas": len(plan.gammas),
        "n_decayed": len(plan.decayed),
        "decay_horizon": None if horizon is None else {**horizon.to_dict(), "text": plan.horizon_lines(horizon)[0]},
    }


@dataclass
class RunArguments:
    """The arguments every recipe takes besides its own and the `TrainingArguments`."""

    torch_num_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads; default: torch's."})
    results_file: str | None = field(default=None, metadata={"help": "Defaults to <output_dir>/results.json."})
    save_model: bool = field(default=False, metadata={
        "help": "Save the model, its γ config and report and a model card into output_dir."})

    def results_path(self, output_dir: str) -> str:
        return self.results_file or os.path.join(output_dir, "results.json")


def check_run_record(record: dict[str, Any]) -> None:
    """Refuse a run record without a field `sweep_records.RunRecord` requires (``ValueError`` naming it)."""
    RunRecord.from_dict(record)


def finish(trainer, run: RunArguments, record: dict[str, Any], *, card: dict[str, Any] | None = None) -> None:
    """The end of a Trainer recipe: write ``results.json`` (a `RunRecord`), then push or save the model with its card.

    ``trainer.push_to_hub`` saves the model (with ``gammareg_config.json`` and ``gamma_report.json``), writes the
    model card (with its γ section) and uploads ``output_dir``, ``results.json`` included; ``--save_model``
    does the same locally.
    """
    write_results(trainer, run.results_path(trainer.args.output_dir), record)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**(card or {}))
    elif run.save_model:
        trainer.save_model()
        trainer.create_model_card(**(card or {}))


METRICS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics")
_TRUE = ("1", "ON", "YES", "TRUE")


def load_metric(path: str, config_name: str | None = None, *, offline_module: str):
    """``(metric, where it came from)``: `evaluate.load` of the Hub's module ``path`` (``config_name``) where the
    Hub is reachable, else of ``recipes/metrics/<offline_module>.py`` by path — the same numbers, shipped here.

    Offline means ``HF_HUB_OFFLINE`` or ``HF_EVALUATE_OFFLINE`` set (`evaluate` itself reads only the latter), or
    a Hub load that fails (no network, or a module whose own imports are missing: the Hub's ``glue`` needs
    scikit-learn and SciPy). The metric keeps its rows in memory: no cache file, nothing shared between processes.
    """
    import evaluate

    if not any(os.environ.get(var, "").upper() in _TRUE for var in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE")):
        try:
            return evaluate.load(path, config_name, keep_in_memory=True), f"{path}/{config_name or ''}".rstrip("/")
        except (OSError, ImportError, ValueError) as exc:  # FileNotFoundError, ConnectionError are OSErrors
            print(f"evaluate.load({path!r}) failed ({type(exc).__name__}); using recipes/metrics/{offline_module}.py",
                  file=sys.stderr)
    local = os.path.join(METRICS_DIR, f"{offline_module}.py")
    return evaluate.load(local, keep_in_memory=True), os.path.join("recipes", "metrics", f"{offline_module}.py")


def accuracy_metrics(metric):
    """`Trainer`'s ``compute_metrics`` as transformers' run_glue.py writes it — arg-max of the logits, then
    ``metric.compute(predictions=..., references=...)`` — with each value in percent (``eval_accuracy``: 92.09)."""

    def compute_metrics(p) -> dict[str, float]:
        preds = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        result = metric.compute(predictions=np.argmax(preds, axis=1), references=p.label_ids)
        return {key: 100.0 * value for key, value in result.items()}

    return compute_metrics


def compute_accuracy(eval_pred) -> dict[str, float]:
    """`Trainer`'s ``compute_metrics`` for classifiers: accuracy in percent."""
    logits, labels = eval_pred
    return {"accuracy": 100.0 * float((np.argmax(logits, axis=-1) == labels).mean())}


def write_results(owner, path: str, record: dict[str, Any]) -> None:
    """Write ``record`` (checked against `RunRecord`) as JSON from the main process only.

    ``owner``: a Trainer or an ``Accelerator``.
    """
    check_run_record(record)
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


def gamma_rms(model: torch.nn.Module, names_by_group) -> dict[str, float]:
    """RMS of the γ values in each group (``{group: [names]}`` or a `GammaReport`: by role), 1.0 at init,
    from `hf_gammareg.callbacks.gamma_norm_stats`; groups in sorted order."""
    stats = gamma_norm_stats(model, names_by_group)
    return {group: round(stats[group]["rms"], 5) for group in sorted(stats)}


def gamma_rms_by_role(model: torch.nn.Module, report) -> dict[str, float]:
    """Root mean square of the γ values of each role (1.0 for norms at initialization)."""
    return gamma_rms(model, report)


class GammaTrajectoryCallback(TrainerCallback):
    """γ RMS and effective step size per category over training, and the run's measured decay horizon.

    Every step it records, for each category (``category(name)`` → a label or ``None``), the mean over
    that category's γ tensors of ``‖γ_{t+1} − γ_t‖ / ‖γ_t‖`` — the effective step the optimizer took on
    them, which for a γ under weight decay is where the paper's effective learning rate η/‖γ‖² shows — and
    averages it over windows of ``window`` steps, together with the γ RMS at the window's end.

    It also sums the learning rate the optimizer used at every step for the group whose decay the decayed γ get —
    the plan's choice (``GammaDecayPlan.decay_group``: the group that holds them, or with none decayed the one with
    the largest weight decay; ``plan`` returns the trainer's plan once it exists): the decay horizon of the run,
    measured, ``Σ_t lr_t·λ`` (÷ (1 − momentum) for SGD's coupled L2), and the exact factor by which weight decay
    alone (a zero loss gradient) multiplies a parameter of that group over the run.
    """

    def __init__(self, category, gammas: set[str], plan, window: int = 100):
        self.category, self.gammas, self.plan, self.window = category, set(gammas), plan, window
        self.params: dict[str, list] = {}
        self.names: dict[str, list[str]] = {}
        self.previous: dict[int, torch.Tensor] = {}
        self.sums: dict[str, list[float]] = {}
        self.trajectory: list[dict[str, Any]] = []
        self.lrs: list[float] = []
        self.group: dict[str, Any] | None = None
        self.weight_decay = 0.0  # the λ the decayed γ get in that group (the plan's, under an L2 penalty)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.params, self.names = {}, {}
        for name, p in model.named_parameters():
            cat = self.category(name) if name in self.gammas else None
            if cat is not None:
                self.params.setdefault(cat, []).append(p)
                self.names.setdefault(cat, []).append(name)
        self.previous = {id(p): p.detach().clone() for ps in self.params.values() for p in ps}

    def on_step_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
        if optimizer is None:
            return
        if self.group is None:
            chosen = self.plan().decay_group(model, optimizer)
            self.group, self.weight_decay = optimizer.param_groups[chosen.index], chosen.weight_decay
        self.lrs.append(float(self.group["lr"]))

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        for cat, ps in self.params.items():
            ratios = []
            for p in ps:
                prev = self.previous[id(p)]
                ratios.append(float((p.detach() - prev).norm() / prev.norm().clamp_min(1e-12)))
                prev.copy_(p.detach())
            s = self.sums.setdefault(cat, [0.0, 0])
            s[0] += sum(ratios) / len(ratios)
            s[1] += 1
        if state.global_step % self.window == 0 or state.global_step == state.max_steps:
            row: dict[str, Any] = {"step": state.global_step}
            rms = gamma_rms(model, self.names) if model is not None else {}
            for cat in self.params:
                total, n = self.sums.pop(cat, [0.0, 0])
                row[f"gamma_rms_{cat}"] = rms.get(cat)
                row[f"step_ratio_{cat}"] = total / n if n else None
            self.trajectory.append(row)

    def horizon(self) -> dict[str, Any]:
        """The measured decay horizon: ``{"decay_horizon": Σ, "shrink": factor, ...}`` of the decay group."""
        g = self.group or {}
        wd, momentum = float(self.weight_decay), float(g.get("momentum", 0.0) or 0.0)
        dampening, nesterov = float(g.get("dampening", 0.0) or 0.0), bool(g.get("nesterov", False))
        p = sgd_decay_shrink(self.lrs, wd, momentum, dampening, nesterov)  # the optimizer's zero-gradient recurrence
        return {"decay_horizon": round(wd * sum(self.lrs) / (1 - momentum), 4), "shrink": round(p, 5),
                "weight_decay": wd, "momentum": momentum, "nesterov": nesterov, "steps": len(self.lrs)}
