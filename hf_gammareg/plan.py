"""The plan: which parameters get weight decay, as optimizer parameter groups — for `GammaRegTrainer` and any loop.

:func:`decay_plan` is the one route to a :class:`GammaDecayPlan`: the γ decided by
:func:`hf_gammareg.decision.decide` (``plan.decisions``), every other parameter by the non-γ rule
(`transformers.Trainer`'s, or the caller's), laid out as ``plan.param_groups(model)``. :func:`param_groups` is its
shortcut for a ``torch.optim`` loop (timm's ``param_groups_weight_decay``, with γ split by role); `GammaRegTrainer`
calls :func:`decay_plan` with `transformers.Trainer`'s own decay names and builds its optimizer from the same
groups, so ``param_groups(model, wd, ...)`` and ``GammaRegTrainer(...).create_optimizer()`` agree. The plan also
says which optimizer group the decayed γ sit in (:meth:`GammaDecayPlan.decay_group`), for the decay horizon the
Trainer and the recipes report.
"""

from __future__ import annotations

import enum
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .analysis import classify_gammas
from .config import GammaRegConfig, check_coefficient
from .decision import Decisions, decide
from .hf_rule import hf_default_decay_names
from .horizon import GroupHorizon, decay_horizon, horizon_lines
from .patterns import unmatched_pattern_notices
from .policy import resolve_policy
from .report import GammaReport
from .roles import ROLES, offset_form, offset_toward
from .tables import text_table
from .wrappers import is_dtensor, is_fsdp1, parameter_name_map, unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["Decision", "DecayGroup", "GammaDecayPlan", "PlanRow", "decay_plan", "gamma_decay_plan", "l2_penalty",
           "param_groups"]

NoDecayRule = Sequence[str] | Callable[[nn.Module], Iterable[str]] | None


class Decision(str, enum.Enum):
    """What happens to one γ in the optimizer (the value is how a table shows it)."""

    DECAYED = "yes"  # the optimizer decays it (decoupled weight decay > 0)
    PENALIZED = "yes (L2)"  # an L2 penalty in the loss regularizes it
    KEPT = "no"  # in the optimizer, no decay
    FROZEN = "frozen"  # does not require grad: not trained
    NOT_IN_OPTIMIZER = "not in optimizer"  # trainable, but the optimizer does not hold it

    @property
    def regularized(self) -> bool:
        return self in (Decision.DECAYED, Decision.PENALIZED)


@dataclass(frozen=True)
class PlanRow:
    """One γ of a plan, as the optimizer treats it.

    ``overridden_by`` is ``"include"`` or ``"exclude"`` when a pattern changed what the role alone decides;
    ``coefficient`` is the weight decay of the group that holds it (the plan's own value before the optimizer
    exists), ``None`` for a γ that no group holds; ``offset`` is ``c`` for an offset scale ``c + w`` (decay pulls
    its scale toward ``c``), else ``None``.
    """

    name: str  # as the analysis names it
    model_name: str  # as the (maybe wrapped) model names it
    role: str
    decision: Decision
    coefficient: float | None
    numel: int = 0
    reason: str = ""
    overridden_by: str | None = None
    offset: float | None = None

    @property
    def decision_text(self) -> str:
        return self.decision.value + (f" ({self.overridden_by})" if self.overridden_by else "")


@dataclass(frozen=True)
class DecayGroup:
    """The optimizer parameter group whose weight decay the decayed γ get (chosen by `GammaDecayPlan.decay_group`).

    ``index`` is its place in ``optimizer.param_groups`` (``None`` for a plan whose optimizer is not built yet);
    ``weight_decay`` the λ the decayed γ get there; ``penalty``: λ is the coupled L2 penalty in the loss
    (``regularization="l2"``), not the group's own weight decay.
    """

    index: int | None
    weight_decay: float
    penalty: bool = False


@dataclass
class GammaDecayPlan:
    """Which parameters of one model get weight decay, and with which coefficient.

    γ follow the decision (``decisions``: by role, include/exclude); every other parameter follows the non-γ rule
    (`transformers.Trainer`'s unless the caller gave another). Names are the model's own, as its
    ``named_parameters()`` gives them (with any wrapper prefix); :meth:`param_groups` lays the plan out
    as optimizer parameter groups, :meth:`to_table` shows it γ by γ. Made by :func:`decay_plan`.
    """

    decayed: set[str]  # γ that are regularized (by the optimizer, or by the L2 penalty under "l2")
    gammas: set[str]  # every γ
    coefficient: float  # the γ coefficient
    regularization: str  # "decoupled" | "l2"
    frozen: set[str] = field(default_factory=set)  # γ that do not require grad (never decayed)
    weight_decay: float = 0.0  # the coefficient of the decayed non-γ parameters
    others_decayed: set[str] = field(default_factory=set)  # non-γ parameters the non-γ rule decays
    names: dict[str, str] = field(default_factory=dict)  # {γ name in the report: name in the model}
    report: GammaReport | None = None
    config: GammaRegConfig | None = None
    decisions: Decisions | None = None  # the decision for every γ (the report's names), which `decayed` applies

    @property
    def optimizer_decayed(self) -> set[str]:
        """The γ the optimizer itself decays (none under ``"l2"``: the loss carries their penalty)."""
        return self.decayed if self.regularization == "decoupled" else set()

    @property
    def gamma_group(self) -> bool:
        """Whether the decayed γ need a parameter group of their own (a coefficient other than the rest's)."""
        return bool(self.optimizer_decayed) and self.coefficient != self.weight_decay

    def decay_parameter_names(self) -> list[str]:
        """Every parameter the optimizer decays, any coefficient
        (what ``Trainer.get_decay_parameter_names`` returns)."""
        return sorted(self.others_decayed | self.optimizer_decayed)

    def weight_decay_of(self, name: str) -> float:
        """The weight decay the plan gives parameter ``name`` in the optimizer."""
        if name in self.gammas:
            return self.coefficient if name in self.optimizer_decayed else 0.0
        return self.weight_decay if name in self.others_decayed else 0.0

    def param_groups(self, model: nn.Module) -> list[dict]:
        """The plan as torch parameter groups for ``model`` (the model it was made for); frozen parameters left out.

        ``[{decayed at weight_decay}, {not decayed, 0.0}]`` — `transformers.Trainer`'s two groups, in
        ``named_parameters()`` order — then, when the γ coefficient differs from ``weight_decay``, the
        decayed γ in a third group ``{"weight_decay": coefficient, "gamma_group": True}`` (the marker lets
        a resumed run re-apply its own γ coefficient over the checkpoint's).
        """
        named = list(model.named_parameters())
        missing = sorted(self.gammas - {n for n, _ in named})
        if missing:
            raise ValueError(f"this plan was made for another model: {len(missing)} of its γ are not parameters "
                             f"of the one given (first: {missing[:3]}); make the plan from this model")
        decay, plain, gammas = [], [], []
        for name, p in named:
            if not p.requires_grad:
                continue
            if name in self.optimizer_decayed:
                (gammas if self.gamma_group else decay).append(p)
            elif name in self.others_decayed:
                decay.append(p)
            else:
                plain.append(p)
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": plain, "weight_decay": 0.0}]
        if gammas:
            groups.append({"params": gammas, "weight_decay": self.coefficient, "gamma_group": True})
        return groups

    # -- the decay horizon ------------------------------------------------------------------------------------
    def decay_group(self, model: nn.Module | None = None, optimizer=None) -> DecayGroup:
        """The parameter group of ``optimizer`` whose decay the decayed γ of ``model`` get: the one place it is chosen
        (the horizon, the Trainer's planned horizon and the recipes' measured one read it).

        The group that holds a decayed γ — or, when the policy decays none, the group with the largest weight decay
        (what decay would do to a γ moved there). Under ``regularization="l2"`` the decayed γ's λ is the plan's
        coefficient, as a penalty in the loss. Without an optimizer (not built yet), the plan's own values: the
        γ coefficient, or with no γ decayed the larger of the two coefficients.
        """
        penalty = self.regularization == "l2" and bool(self.decayed)
        if optimizer is None:
            return DecayGroup(None, self.coefficient if self.decayed else max(self.weight_decay, self.coefficient),
                              penalty)
        groups = getattr(optimizer, "param_groups", None) or []
        params = dict(model.named_parameters()) if model is not None else {}
        decayed_ids = {id(params[n]) for n in self.decayed if n in params}
        holding = next((k for k, g in enumerate(groups) if any(id(p) in decayed_ids for p in g["params"])), None)
        if holding is None:
            holding = max(range(len(groups)), key=lambda k: groups[k].get("weight_decay", 0) or 0) if groups else 0
        own = float(groups[holding].get("weight_decay", 0.0) or 0.0) if groups else 0.0
        return DecayGroup(holding, self.coefficient if penalty else own, penalty)

    def horizon(self, model: nn.Module, optimizer, num_steps: int, lr_scheduler=None) -> GroupHorizon:
        """What weight decay alone does to the decayed γ of ``model`` over ``num_steps`` steps of ``optimizer``.

        The horizon (:func:`hf_gammareg.decay_horizon`) of the group :meth:`decay_group` names; under
        ``regularization="l2"`` the γ's L2 penalty at the plan's coefficient.
        """
        group = self.decay_group(model, optimizer)
        penalty = {group.index: group.weight_decay} if group.penalty else None
        return decay_horizon(optimizer, num_steps, lr_scheduler, penalty=penalty)[group.index]

    def horizon_lines(self, horizon: GroupHorizon | None) -> tuple[str | None, str | None]:
        """``(the table's "decay horizon:" line, the "!" notice when decay barely moves γ)`` (see `horizon_lines`)."""
        offsets = self.report.offsets if self.report is not None else {}
        trained = {n: c for n, c in offsets.items() if self.names.get(n, n) not in self.frozen}
        decayed = [c for n, c in trained.items() if self.names.get(n, n) in self.decayed]
        kept = [c for n, c in trained.items() if self.names.get(n, n) not in self.decayed]
        return horizon_lines(horizon, len(self.decayed), offsets_decayed=decayed, offsets_kept=kept)

    # -- what the optimizer does, γ by γ ------------------------------------------------------------------
    def rows(self, model: nn.Module, optimizer=None) -> list[PlanRow]:
        """One `PlanRow` per γ of ``model``: read from ``optimizer.param_groups``, or planned when it is ``None``."""
        params = dict(model.named_parameters())
        in_optimizer: dict[int, float] | None = None
        if optimizer is not None:
            in_optimizer = {id(p): float(g.get("weight_decay", 0.0))
                            for g in optimizer.param_groups for p in g["params"]}
        report = self.report
        decided = self.decisions.by_name() if self.decisions is not None else {}
        rows = []
        for name in report.gammas if report is not None else sorted(self.gammas):
            model_name = self.names.get(name, name)
            param = params.get(model_name)
            if model_name in self.frozen or (param is not None and not param.requires_grad):
                wd, decision = None, Decision.FROZEN
            else:
                if in_optimizer is None:
                    wd = self.weight_decay_of(model_name)  # planned: the optimizer is not built yet
                else:
                    wd = in_optimizer.get(id(param)) if param is not None else None
                if wd is None:
                    decision = Decision.NOT_IN_OPTIMIZER
                elif self.regularization == "l2" and model_name in self.decayed and self.coefficient > 0:
                    decision = Decision.PENALIZED
                else:
                    decision = Decision.DECAYED if wd > 0 else Decision.KEPT
            # A regex that changed what the policy alone decides shows where the optimizer holds the γ.
            overridden = decided[name].overridden_by if name in decided and decision in (
                Decision.DECAYED, Decision.KEPT) else None
            if decision is Decision.PENALIZED:
                wd = self.coefficient
            rows.append(PlanRow(name=name, model_name=model_name, role=report.role_of(name) if report else "?",
                                decision=decision, coefficient=wd, numel=report.numel.get(name, 0) if report else 0,
                                reason=report.reason_of(name) if report else "", overridden_by=overridden,
                                offset=report.offsets.get(name) if report else None))
        return rows

    def notices(self, model: nn.Module, optimizer=None, *, arg_prefix: str = "") -> list[str]:
        """What deserves attention in this split, each with its fix in one sentence (empty when nothing does).

        ``arg_prefix`` names the arguments as the caller knows them (``"gamma_"`` for the Trainer's).
        """
        return self._notices(self.rows(model, optimizer), arg_prefix)

    def _notices(self, rows: list[PlanRow], arg_prefix: str) -> list[str]:
        cfg, report = self.config, self.report
        if cfg is None or report is None or self.decisions is None or not rows:
            return []
        arg = {"policy": f"{arg_prefix}policy", "invariance": f"{arg_prefix}invariance",
               "include": f"{arg_prefix}include", "exclude": f"{arg_prefix}exclude",
               "gwd": "gamma_weight_decay"}
        out = []
        policy = resolve_policy(cfg.policy)
        trainable = [r for r in rows if r.decision is not Decision.FROZEN]
        n_on = sum(r.decision.regularized for r in trainable)
        planned = self.decayed
        if planned and self.coefficient == 0:
            out.append(f"weight decay is 0, so none of the {len(planned)} γ that policy {cfg.policy!r} selects is "
                       f"decayed: set weight_decay (e.g. 0.01) or {arg['gwd']}.")
        elif trainable and not n_on and not (policy.every is False or policy.hf_rule):  # those decay none on purpose
            if not planned:
                hf = set(self.decisions.hf_decayed or ()) & {r.name for r in trainable}
                same = ("the same split as transformers.Trainer (hf-default)" if not hf
                        else f"fewer than transformers.Trainer, which decays {len(hf)}")
                roles = {r.role for r in trainable}
                spared = [r.offset for r in trainable if r.offset is not None and r.role in ("branch", "invariant")]
                if policy.spares_offsets and spared:
                    fix = (f"its {len(spared)} branch/invariant γ are offset scales ({offset_form(spared)}), which it "
                           f"keeps: weight decay pulls their scale toward {offset_toward(spared)}, not 0. "
                           f"{arg['policy']}='all' or {arg['include']} decays them.")
                elif cfg.invariance == "exact" and "stream" in roles and not roles & {"branch", "invariant"}:
                    fix = (f"post-LN model: try {arg['invariance']}='approximate' (its norms are then invariant), "
                           f"or {arg['policy']}='all'.")
                else:
                    fix = (f"no γ here has a role this policy decays; pick another {arg['policy']} or name γ "
                           f"with {arg['include']}.")
                out.append(f"policy {cfg.policy!r} decays none of the {len(trainable)} γ — {same}; {fix}")
            else:
                out.append("the optimizer does not decay the γ the policy selects (it was built elsewhere, with its "
                           "own groups): build its groups with hf_gammareg.param_groups(model, weight_decay, ...).")
        changed = [r for r in rows if r.overridden_by]
        if changed:
            shown = ", ".join(f"{r.name} ({r.role}{', offset scale' if r.offset is not None else ''} → "
                              f"{'decayed' if r.overridden_by == 'include' else 'kept'})" for r in changed[:3])
            shown += ", …" if len(changed) > 3 else ""
            out.append(f"{arg['include']}/{arg['exclude']} override the roles for {len(changed)} γ: {shown}; if that "
                       "is not what you meant, narrow the patterns.")
        out += unmatched_pattern_notices([r.name for r in rows], cfg.include, cfg.exclude,
                                         include_arg=arg["include"], exclude_arg=arg["exclude"])
        return out

    def warn(self, model: nn.Module, optimizer=None, *, arg_prefix: str = "") -> list[str]:
        """Log each of :meth:`notices` at WARNING (``hf_gammareg.plan``) and return them."""
        notices = self.notices(model, optimizer, arg_prefix=arg_prefix)
        for notice in notices:
            logger.warning("hf_gammareg: %s", notice)
        return notices

    def to_table(self, model: nn.Module, optimizer=None, *, arg_prefix: str = "", lr_scheduler=None,
                 num_steps: int | None = None, horizon: GroupHorizon | None = None, notices: bool = True) -> str:
        """What ``optimizer`` does to each γ of ``model``: a header, one row per γ, a summary, the notices.

        The coefficient column is read from ``optimizer.param_groups`` (the plan's own value, marked as
        planned, when ``optimizer`` is ``None``). Rows: parameter (as the analysis names it), role,
        decayed, coefficient, reason; "(include)"/"(exclude)" marks a decision a regex changed. Given
        ``num_steps`` (and the ``lr_scheduler``, if any) with the optimizer — or a computed ``horizon`` — a
        "decay horizon:" line says what weight decay alone does to the decayed γ over the run. ``notices=False``
        leaves out the lines of :meth:`notices`, for a caller that logs them on their own (the horizon's notice,
        which describes the run rather than naming a fix, stays).
        """
        if horizon is None and optimizer is not None and num_steps is not None:
            horizon = self.horizon(model, optimizer, num_steps, lr_scheduler)
        horizon_line, horizon_notice = self.horizon_lines(horizon)
        rows = self.rows(model, optimizer)
        cfg = self.config
        header = "γ weight decay " + ("of this optimizer" if optimizer is not None else
                                      "as planned (the optimizer is not built yet)")
        if cfg is not None:
            pats = {k: ", ".join(repr(p) for p in getattr(cfg, k)) or "none" for k in ("include", "exclude")}
            how = (f"decoupled weight decay {self.weight_decay:g}, decayed γ {self.coefficient:g}"
                   if self.regularization == "decoupled" else
                   f"weight decay {self.weight_decay:g}; decayed γ: L2 penalty {self.coefficient:g}/2·‖γ‖² in the loss")
            header += (f" — policy {cfg.policy!r}, invariance {cfg.invariance}, include {pats['include']}, "
                       f"exclude {pats['exclude']}; {how}")
        cells = [(r.name, r.role, r.decision_text,
                  "–" if r.coefficient is None
                  else f"{r.coefficient:g}" + (" (L2)" if r.decision is Decision.PENALIZED else ""),
                  r.reason) for r in rows]
        lines = [header, "", *text_table(("parameter", "role", "decayed", "coefficient", "reason"), cells)]
        on = [r for r in rows if r.decision.regularized]
        by_role = []
        for role in list(ROLES) + ["untracked", "unused"]:
            of_role = [r for r in rows if r.role == role]
            if of_role:
                by_role.append(f"{role} {sum(r.decision.regularized for r in of_role)}/{len(of_role)}")
        numel_on, numel_all = sum(r.numel for r in on), sum(r.numel for r in rows)
        lines += ["", (f"{len(on)} of {len(rows)} γ decayed ({numel_on:,} of {numel_all:,} values); "
                       f"decayed/total by role: {', '.join(by_role)}")]
        if horizon_line:
            lines.append(horizon_line)
        if self.report is not None:
            lines.append(self.report.inputs_line())
        if notices:
            lines += [f"! {n}" for n in self._notices(rows, arg_prefix)]
        if horizon_notice:
            lines.append(f"! {horizon_notice}")
        return "\n".join(lines)


def gamma_decay_plan(
    model: nn.Module,
    *,
    config: GammaRegConfig,
    weight_decay: float,
    report: GammaReport | None = None,
    hf_decay_names: Iterable[str] | None = None,
    inputs=None,
) -> tuple[GammaDecayPlan, GammaReport]:
    """Deprecated (0.2): ``decay_plan(model, weight_decay, config, report=..., inputs=..., hf_decay_names=...)``, whose
    plan holds the report (``plan.report``). Returns ``(plan, plan.report)`` as it did; goes in the next release."""
    warnings.warn("gamma_decay_plan is deprecated: decay_plan(model, weight_decay, config, report=..., "
                  "hf_decay_names=...) is the one route to a plan, and plan.report holds the report; "
                  "gamma_decay_plan goes in the next release", DeprecationWarning, stacklevel=2)
    plan = decay_plan(model, weight_decay, config, report=report, inputs=inputs, hf_decay_names=hf_decay_names)
    return plan, plan.report


def _report_for(model: nn.Module, config: GammaRegConfig, report: GammaReport | None, inputs) -> GammaReport:
    """``report`` checked against ``config`` (same invariance mode), or ``model``'s, classified (unwrapped)."""
    if report is not None and inputs is not None:
        raise ValueError("report= and inputs=: give one — a report already holds the roles that inputs= would "
                         "be classified from")
    if report is None:
        refuse_sharded(model)
        return classify_gammas(unwrap_model(model)[0], inputs=inputs, invariance=config.invariance)
    if report.invariance != config.invariance:
        raise ValueError(
            f"invariance: the γ report was classified with invariance={report.invariance!r}, not the requested "
            f"{config.invariance!r}; classify again with classify_gammas(model, invariance={config.invariance!r}) "
            "or ask for the report's mode")
    return report


def _model_names(model: nn.Module, report: GammaReport) -> dict[str, str]:
    """``{γ name in the report (the unwrapped model's): name in model}``; ``ValueError`` for a γ it lacks."""
    actual = parameter_name_map(model)
    missing = [n for n in report.gammas if n not in actual]
    if missing:
        # Never build an optimizer with a split that silently misses γ (e.g. FSDP without
        # use_orig_params=True, where the optimizer only sees `_flat_param`s; or a report made
        # for another model).
        raise ValueError(
            f"{len(missing)} γ of the γ report are not parameters of the model the optimizer is built for "
            f"(first: {missing[:3]}). Under FSDP set use_orig_params=True (fsdp_use_orig_params); a "
            "precomputed gamma_report= must come from this very model (after PEFT wrapping, if any).")
    return {n: actual[n] for n in report.gammas}


def refuse_sharded(model: nn.Module) -> None:
    """Raise ``ValueError`` (with the fix) for a model whose parameters are already FSDP/DTensor shards."""
    if is_fsdp1(model):
        # FSDP1 has already flattened and sharded the parameters: a forward on a copy of this
        # model sees the shards, not the layers. GammaRegTrainer.train classifies before wrapping.
        raise ValueError(
            "cannot classify γ of a model FSDP has already wrapped (its parameters are flattened "
            "shards); classify the model before wrapping it and pass the report: "
            "report = classify_gammas(model) before wrapping, then report=report")
    if any(is_dtensor(p) for p in model.parameters()):
        # FSDP2 (fully_shard) and tensor parallelism keep the names but hold one shard per rank, and
        # the analysis' forward pass on a meta copy cannot run the sharding's collectives.
        raise ValueError(
            "cannot classify γ of a model whose parameters are DTensor shards (fully_shard / tensor parallel); "
            "classify it before sharding and pass the report: report = classify_gammas(model); "
            "fully_shard(...); param_groups(model, weight_decay, report=report)")


def _decay_names(model: nn.Module, no_decay: NoDecayRule) -> set[str]:
    """The parameters (``model``'s names) that the non-γ rule ``no_decay`` decays."""
    if no_decay is None:
        return hf_default_decay_names(model)
    names = [n for n, _ in model.named_parameters()]
    if isinstance(no_decay, str):
        raise TypeError(f"no_decay: pass a list of name substrings such as ['bias', 'LayerNorm.weight'], not the "
                         f"single string {no_decay!r}")
    if callable(no_decay):
        excluded = no_decay(model)
        if isinstance(excluded, str) or not isinstance(excluded, Iterable):
            raise TypeError("no_decay: a callable must return the names of the parameters that get no decay")
        excluded = set(excluded)
        return {n for n in names if n not in excluded}
    if isinstance(no_decay, Iterable):
        parts = list(no_decay)
        if not all(isinstance(s, str) for s in parts):
            raise TypeError("no_decay: expected name substrings (strings), such as ['bias', 'LayerNorm.weight']")
        return {n for n in names if not any(s in n for s in parts)}
    raise TypeError(f"no_decay: expected None (transformers.Trainer's rule), a list of name substrings or a "
                     f"callable model -> names, got {type(no_decay).__name__}")


def decay_plan(
    model: nn.Module,
    weight_decay: float,
    config: GammaRegConfig | None = None,
    *,
    report: GammaReport | None = None,
    inputs=None,
    no_decay: NoDecayRule = None,
    hf_decay_names: Iterable[str] | None = None,
    **overrides,
) -> GammaDecayPlan:
    """The :class:`GammaDecayPlan` behind :func:`param_groups` (same arguments; ``regularization`` is one more
    `GammaRegConfig` field that matters here): the one route to a plan.

    Use it when the loop needs more than the groups: coupled L2 (``regularization="l2"`` and
    :func:`l2_penalty`), or the table of what the optimizer does (``plan.to_table(model, optimizer)``).
    ``plan.param_groups(model)`` gives the groups; ``plan.report`` the roles; ``plan.decisions`` the decision γ by γ.
    ``hf_decay_names``: the non-γ rule given as the parameters (``model``'s names) it decays — what
    ``Trainer.get_decay_parameter_names`` returns, which is how `GammaRegTrainer` passes its own rule — instead of
    ``no_decay``. ``model`` may be wrapped (DDP, torch.compile, FSDP1 with ``use_orig_params=True``) or sharded with
    FSDP2: the analysis runs on the unwrapped model, and a model whose parameters are already shards (FSDP1/2)
    needs a ``report`` made before sharding. Raises ``ValueError`` if a γ of the report is not a parameter of
    ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    weight_decay = check_coefficient("weight_decay", weight_decay, type_error=TypeError)
    # The γ options are GammaRegConfig's fields: a config, keywords naming its fields, or both (keywords win).
    # GammaRegConfig reads a string include/exclude as one regex, a list as several.
    config = GammaRegConfig.with_overrides(config, **overrides)
    if hf_decay_names is not None and no_decay is not None:
        raise TypeError("no_decay and hf_decay_names: give one — both state the rule for the parameters that are "
                        "not γ")
    decay_names = set(_decay_names(model, no_decay) if hf_decay_names is None else hf_decay_names)
    report = _report_for(model, config, report, inputs)
    names = _model_names(model, report)
    # The non-γ rule, as applied to this very model, is what `hf-default` and the γ without a role follow.
    decisions = decide(report, config, [n for n in report.gammas if names[n] in decay_names],
                       weight_decay=weight_decay)
    params = dict(model.named_parameters())
    # A frozen γ (a PEFT/LoRA base model's norms) is never in the optimizer; leaving it out of the
    # plan keeps the logged counts and the model card true to what is trained.
    frozen = {n for n in report.gammas if not params[names[n]].requires_grad}
    gammas = set(names.values())
    return GammaDecayPlan(
        decayed={names[n] for n in decisions.decayed - frozen},
        gammas=gammas,
        coefficient=config.gamma_coefficient(weight_decay),
        regularization=config.regularization,
        frozen={names[n] for n in frozen},
        weight_decay=weight_decay,
        others_decayed=decay_names - gammas,
        names=names,
        report=report,
        config=config,
        decisions=decisions,
    )


def param_groups(
    model: nn.Module,
    weight_decay: float,
    config: GammaRegConfig | None = None,
    *,
    report: GammaReport | None = None,
    inputs=None,
    no_decay: NoDecayRule = None,
    **overrides,
) -> list[dict]:
    """Parameter groups for any ``torch.optim`` optimizer: γ decayed by role and policy, the rest as `Trainer` does.

    Args:
        model: the model to optimize; may be wrapped (DDP, ``torch.compile``, PEFT) — the groups hold its
            own parameters. Parameters that do not require grad are left out.
        weight_decay: the coefficient of every decayed parameter (and of decayed γ unless ``gamma_weight_decay``).
        config: a `GammaRegConfig` (default: its defaults, policy ``"guidelines"``).
        **overrides: `GammaRegConfig` fields, replacing the config's:
            policy: which γ are decayed: ``"guidelines"`` (roles branch and invariant, offset scales excepted),
            ``"hf-default"`` (what the ``no_decay`` rule says), ``"all"``, ``"none"``, a comma list of roles or
            ``"only:<role>"``;
            invariance: ``"exact"`` or ``"approximate"`` (how the roles are read; docs/design.md § Invariance modes);
            gamma_weight_decay: a coefficient for decayed γ (they then get a third group of their own);
            include / exclude: regexes (``re.search`` on parameter names) of γ always / never decayed (exclude
            wins); regularization (only ``"decoupled"`` makes sense for groups: for ``"l2"`` use `decay_plan`).
        report: a `GammaReport` for this model (``classify_gammas(model)``); required for a model already
            sharded with FSDP2 ``fully_shard`` (classify before sharding: the names do not change).
        no_decay: the rule for every parameter that is not a γ: ``None`` is `transformers.Trainer`'s (no
            decay for biases and norm weights, by module type and name); a list of name substrings is the
            ``*_no_trainer.py`` examples' rule (``["bias", "LayerNorm.weight"]``); a callable ``model -> names``
            returns the parameters that get no decay.
        inputs: one batch the model's forward accepts (a dict of tensors such as your data collator's output,
            a tuple of positional tensors, or one tensor) to read the roles from; ``None`` builds dummy inputs
            from the config. Needed for a model whose forward takes inputs a config does not describe (a
            custom ``forward(features, condition, labels)``, image placeholder tokens, visual features), and
            better for a multimodal model, whose towers a dummy batch may not reach. Not with ``report=``.

    Returns ``[{"params": decayed, "weight_decay": weight_decay}, {"params": the rest, "weight_decay": 0.0}]``
    (plus ``{"params": decayed γ, "weight_decay": gamma_weight_decay, "gamma_group": True}`` when that
    coefficient differs), exactly the groups `GammaRegTrainer` builds for the same settings.

    Example (runs as is; a tiny GPT-2: ``ln_1``/``ln_2`` are ``branch`` γ and get decay, ``ln_f`` is ``head``):

    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from hf_gammareg import param_groups
    >>> model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64,
    ...                                    bos_token_id=0, eos_token_id=0))
    >>> groups = param_groups(model, 0.01)
    >>> [(g["weight_decay"], len(g["params"])) for g in groups]  # 10 matrices + 4 γ; 12 biases + ln_f's 2
    [(0.01, 14), (0.0, 14)]
    >>> optimizer = torch.optim.AdamW(groups, lr=1e-3)
    >>> ids = torch.randint(0, 64, (2, 8))
    >>> model(input_ids=ids, labels=ids).loss.backward()
    >>> optimizer.step()
    """
    plan = decay_plan(model, weight_decay, config, report=report, inputs=inputs, no_decay=no_decay, **overrides)
    plan.warn(model)  # the groups are all the caller sees: what deserves attention goes to the log, as in the Trainer
    return plan.param_groups(model)


def l2_penalty(model: nn.Module, plan: GammaDecayPlan) -> torch.Tensor:
    """The coupled L2 penalty λ/2·Σ‖γ‖² over the γ ``plan`` regularizes, to add to the training loss.

    ``plan`` comes from ``decay_plan(model, ..., regularization="l2")`` (its groups then give those γ no
    decoupled decay; a ``"decoupled"`` plan is refused, since its optimizer already decays them). Returns
    a zero tensor when nothing is penalized. A DTensor γ (FSDP2) is gathered with a differentiable
    ``full_tensor()``, so the value is the global one on every rank and each shard gets its own gradient;
    every rank must call it, as with any collective.
    """
    if plan.regularization != "l2":
        raise ValueError("l2_penalty: this plan decays γ in the optimizer (regularization='decoupled'); make it with "
                         "decay_plan(model, weight_decay, regularization='l2', ...) to move their decay into the loss")
    gammas = [p for n, p in model.named_parameters() if n in plan.decayed and p.requires_grad]
    if not gammas or plan.coefficient == 0:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return torch.zeros((), device=device)
    total = sum((p.full_tensor() if is_dtensor(p) else p).float().pow(2).sum() for p in gammas)
    return 0.5 * plan.coefficient * total
