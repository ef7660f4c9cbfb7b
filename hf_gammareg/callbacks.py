"""Reporting: γ-norm tracking (`GammaNormCallback`), its history file and plots, the model-card section."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Iterable

import torch
from transformers import TrainerCallback

from .report import GammaReport
from .roles import ROLES, offset_form, offset_toward
from .tables import markdown_table
from .wrappers import is_dtensor

if TYPE_CHECKING:  # pragma: no cover
    from .plan import GammaDecayPlan

HISTORY_NAME = "gamma_history.jsonl"
REPORT_NAME = "gamma_report.json"


def gamma_norm_stats(model: torch.nn.Module, names_by_role: dict[str, list[str]] | GammaReport, *,
                     offsets: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """``{role: {"norm": mean ‖γ‖₂, "abs_mean": mean |γ|, "rms": RMS of the values, "count": n}}`` per role.

    The one place γ statistics are computed (the callback's logs, the recipes' RMS per role or per BN category).
    ``names_by_role`` is ``{role: [parameter names in model]}`` (any grouping: roles, categories) or a
    `GammaReport` of ``model``. γ is the scale the norm applies: for an offset scale ``c + w`` (Gemma's
    ``1 + w``; ``offsets`` ``{name in model: c}``, by default a report's own ``offsets``) the statistics are of
    ``c + w``, not of the parameter ``w``. A γ that is a
    `DTensor` (FSDP2 ``fully_shard``, tensor parallelism) holds one shard per rank: it is gathered with
    ``full_tensor()`` so the statistics are the global ones, the same on every rank — which makes this a
    collective under FSDP2: every rank must call it (the Trainer's callbacks run on every rank).
    """
    if isinstance(names_by_role, GammaReport):
        offsets = names_by_role.offsets if offsets is None else offsets
        by_role: dict[str, list[str]] = defaultdict(list)
        for name, role in names_by_role.roles.items():
            by_role[role].append(name)
        names_by_role = dict(by_role)
    params = dict(model.named_parameters())
    stats = {}
    with torch.no_grad():
        for role, names in names_by_role.items():
            names = [n for n in names if n in params]
            if not names:
                continue
            tensors = [params[n].detach() for n in names]
            tensors = [t.full_tensor() if is_dtensor(t) else t for t in tensors]
            tensors = [t.float() + offsets[n] if offsets and n in offsets else t for n, t in zip(names, tensors)]
            norms = [t.float().norm().item() for t in tensors]
            abs_sum = sum(t.float().abs().sum().item() for t in tensors)
            square_sum = sum(float(t.float().pow(2).sum()) for t in tensors)
            numel = sum(t.numel() for t in tensors)
            stats[role] = {"norm": sum(norms) / len(norms), "abs_mean": abs_sum / numel,
                           "rms": math.sqrt(square_sum / numel), "count": len(tensors)}
    return stats


class GammaNormCallback(TrainerCallback):
    """Adds mean ‖γ‖ and mean |γ| per role to the Trainer's logs and to ``output_dir/gamma_history.jsonl``.

    Log keys are ``gamma/<role>/norm`` and ``gamma/<role>/abs_mean``; TensorBoard, W&B and the
    console get them like any other metric; an offset scale counts as the scale ``c + w`` it applies.
    `GammaRegTrainer` installs this callback first in its list (so reporters that run after it see the
    keys) unless ``gamma_log_norms=False``; it fills in the role table once the model has been classified.
    Standalone use: ``GammaNormCallback(report)``.
    """

    def __init__(self, report: GammaReport | None = None, *, prefix: str = "", policy: str | None = None):
        self.names_by_role: dict[str, list[str]] = {}
        self.offsets: dict[str, float] = {}  # {name in model: c} of the offset scales c + w
        self.policy = policy
        self.invariance: str | None = None
        if report is not None:
            self.set_report(report, prefix=prefix)

    def set_report(self, report: GammaReport, *, prefix: str = "", policy: str | None = None) -> None:
        by_role: dict[str, list[str]] = defaultdict(list)
        for name, role in report.roles.items():
            by_role[role].append(prefix + name)
        self.names_by_role = {r: by_role[r] for r in ROLES if by_role.get(r)}
        self.offsets = {prefix + n: c for n, c in report.offsets.items()}
        # The roles were read under the report's invariance mode, so that is the one a plot must name.
        self.invariance = report.invariance
        if policy is not None:
            self.policy = policy

    def _record(self, args, state, model, logs=None) -> None:
        if model is None or not self.names_by_role:
            return
        stats = gamma_norm_stats(model, self.names_by_role, offsets=self.offsets)
        if logs is not None:
            keys = {}
            for role, s in stats.items():
                keys[f"gamma/{role}/norm"] = round(s["norm"], 6)
                keys[f"gamma/{role}/abs_mean"] = round(s["abs_mean"], 6)
            logs.update(keys)
            # Trainer.log appended its copy of `logs` to the history just before calling us: keep
            # trainer_state.json in step with what the reporters see.
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(keys)
        if state.is_world_process_zero and args.output_dir:
            os.makedirs(args.output_dir, exist_ok=True)
            line = {"step": state.global_step, "epoch": state.epoch, "policy": self.policy,
                    "invariance": self.invariance, "roles": stats}
            with open(os.path.join(args.output_dir, HISTORY_NAME), "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:  # the starting point of every trajectory; not repeated on resume
            self._record(args, state, model)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if logs is not None and ("loss" in logs or "train_loss" in logs):  # training logs, not eval
            self._record(args, state, model, logs)


def read_history(run_dir: str) -> list[dict]:
    """The records of ``run_dir/gamma_history.jsonl`` (or of that file given directly), oldest first.

    Each record holds ``step``, ``epoch``, ``policy``, ``roles`` (``{role: {"norm", "abs_mean", "count"}}``)
    and, in files written since it was added, ``invariance``; older files read the same without it.
    """
    path = os.path.join(run_dir, HISTORY_NAME) if os.path.isdir(run_dir) else run_dir
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {HISTORY_NAME} in {run_dir!r}: "
                                "train with GammaRegTrainer (gamma_log_norms=True) first")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _run_names(run_dirs: list[str]) -> list[str]:
    """The shortest trailing path parts that tell runs apart (``a/seed0``, ``b/seed0``, not ``seed0`` twice)."""
    parts = [os.path.normpath(os.path.abspath(d)).split(os.sep) for d in run_dirs]
    depth = 1
    while True:
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            return names
        depth += 1


def run_label(name: str, history: list[dict]) -> str:
    """``name (policy, invariance)`` from a run's history; what an old history lacks is left out."""
    first = lambda key: next((rec[key] for rec in history if rec.get(key)), None)  # noqa: E731
    setting = [s for s in (first("policy"), first("invariance")) if s]
    return f"{name} ({', '.join(setting)})" if setting else name


def history_figure(run_dirs: Iterable[str], *, stat: str = "norm", labels: list[str] | None = None,
                   title: str | None = None):
    """The figure `plot_history` saves: one panel per role, one colour per run in every panel, one legend.

    Each run keeps its colour (and line style) across all panels, and a single figure-level legend
    names every run once, as ``<dir> (<policy>, <invariance>)``: runs under different invariance modes
    have different roles, so a panel may hold only some of the runs (a note in it names the others).
    """
    from ._plotting import new_figure, plain_y_axis, run_styles

    if stat not in ("norm", "abs_mean"):
        raise ValueError(f"stat must be 'norm' or 'abs_mean', got {stat!r}")
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("give at least one run directory")
    histories = [read_history(d) for d in run_dirs]
    names = _run_names(run_dirs)
    if labels is None:
        labels = [run_label(name, h) for name, h in zip(names, histories)]
    elif len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    roles = [r for r in ROLES if any(r in rec["roles"] for h in histories for rec in h)]
    if not roles:
        raise ValueError("the history files hold no γ statistics")
    styles = run_styles(len(run_dirs))
    fig = new_figure(figsize=(max(4.2 * len(roles), 6.0), 3.9))
    axes = fig.subplots(1, len(roles), squeeze=False)[0]
    for ax, role in zip(axes, roles):
        absent = []
        for name, label, history, style in zip(names, labels, histories, styles):
            points = [(rec["step"], rec["roles"][role][stat]) for rec in history if role in rec["roles"]]
            if not points:
                absent.append(name)
                continue
            steps, values = zip(*points)
            ax.plot(steps, values, label=label, **{**style, "marker": style["marker"] if len(points) < 40 else None})
        if absent:
            ax.text(0.02, 0.02, f"no {role} γ in: {', '.join(absent)}", transform=ax.transAxes, fontsize=7,
                    color="0.35", va="bottom")
        ax.set_title(f"{role} γ")
        ax.set_xlabel("step")
        ax.set_ylabel("mean ‖γ‖₂" if stat == "norm" else "mean |γ|")
        ax.grid(alpha=0.3)
        plain_y_axis(ax)
    # One legend for the figure, built from the runs (not from one panel's lines, which may miss some).
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], **style) for style in styles]
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 2), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_history(run_dirs: Iterable[str], out_path: str, *, stat: str = "norm", labels: list[str] | None = None,
                 title: str | None = None) -> str:
    """Save one PNG of mean ‖γ‖ (``stat="norm"``) or mean |γ| per role over steps; returns ``out_path``.

    One panel per role; several run dirs are drawn in each panel (a policy comparison), each run in
    one colour throughout, named once in a legend under the panels (see `history_figure`). Needs
    matplotlib (``pip install 'hf_gammareg[plot]'``).
    """
    fig = history_figure(run_dirs, stat=stat, labels=labels, title=title)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=110)
    return out_path


def model_card_section(plan: "GammaDecayPlan", *, horizon: str | None = None) -> str:
    """The "γ regularization" section GammaRegTrainer appends to the model card, from the run's plan: its decision
    (``plan.decisions``: the policy, the roles) and what was trained with decay (``plan.decayed``; frozen γ are not).

    ``horizon``: the "decay horizon: …" line of the run (what weight decay alone did to the decayed γ).
    """
    decisions, config = plan.decisions, plan.config
    report = decisions.report
    # `plan.decayed` holds the model's names; the card counts by the report's.
    decayed = {name for name, in_model in plan.names.items() if in_model in plan.decayed}
    counts = report.counts()
    lines = [
        "## γ regularization",
        "",
        f"Trained with [hf_gammareg](https://arxiv.org/abs/2205.07260): policy `{decisions.policy}`, invariance "
        f"`{config.invariance}`, {plan.regularization} weight decay {plan.coefficient:g} on {len(decayed)} of "
        f"{len(report.gammas)} normalization scales (γ). {report.inputs_line()}",
        "",
    ]
    rows = []
    for role in list(ROLES) + ["untracked", "unused"]:
        if role in counts:
            names = [d.name for d in decisions if d.role == role]
            rows.append((role, counts[role][0], f"{counts[role][1]:,}", sum(1 for n in names if n in decayed)))
    lines += markdown_table(("role", "γ", "values", "decayed"), rows)
    if report.offsets:
        offsets = report.offsets.values()
        lines += ["", f"{len(report.offsets)} of these γ are offset scales {offset_form(offsets)}: weight decay pulls "
                      f"their scale toward {offset_toward(offsets)}, not 0 "
                      f"({sum(1 for n in report.offsets if n in decayed)} of them decayed)."]
    if horizon:
        lines += ["", horizon[0].upper() + horizon[1:] + "."]
    lines += ["", f"Per-γ roles and reasons: `{REPORT_NAME}`; settings: `gammareg_config.json`.", ""]
    return "\n".join(lines)
