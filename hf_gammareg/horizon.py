"""The decay horizon: how far weight decay alone can move a parameter over a run, known before the first step.

Under decoupled decay (AdamW, Lion, Adafactor) a parameter is multiplied by ``1 − lr_t·λ`` at every step, so
weight decay alone leaves ``Π_t (1 − lr_t·λ)`` of it. Under SGD's coupled L2 the term ``λ·θ`` joins the
gradient and momentum amplifies it by ``1 / (1 − μ)``: about ``exp(−Σ_t lr_t·λ / (1 − μ))`` (the exact
recurrence is used). The sum — the **decay integral** — is the run's time scale for the decayed γ: below
~0.05 decay cannot move them measurably (fine-tuning), around 3–20 they reach the equilibrium between decay
and gradient (the usual from-scratch CIFAR/ImageNet schedules). Under coupled L2 in an adaptive optimizer
(``torch.optim.Adam(weight_decay=…)``) the decay term is divided by the gradient's running RMS, so its effect
depends on the gradients and cannot be predicted from the schedule: the shrink is ``None`` with that reason.

:func:`decay_horizon` reads it from a real optimizer and scheduler without touching either: the learning
rates come from a copy of the scheduler bound to a stand-in optimizer, and the decay from the optimizer's
own update rule with a zero loss gradient (closed forms for the optimizers above; for any other class, its
``step()`` run on one scalar per group).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .roles import offset_form, offset_toward

__all__ = ["GroupHorizon", "decay_horizon", "horizon_lines", "planned_decay_horizon", "sgd_decay_shrink",
           "FINE_TUNING_SHRINK", "DecayRule", "OPTIMIZER_RULES", "register_optimizer", "decay_rule",
           "planned_optimizers"]

# Above this, weight decay moves a decayed γ by less than 5 %: the γ policy cannot change the result measurably.
FINE_TUNING_SHRINK = 0.95

# How each optimizer applies weight decay: the one table `decay_horizon`, `planned_decay_horizon` and the CLI's
# --optimizer read. A rule's `kind`:
#   "decoupled"         θ ← θ·(1 − lr·λ) at every step: Π (1 − lr_t·λ), in closed form;
#   "sgd"               SGD's coupled L2 through (Nesterov) momentum: the exact recurrence (`sgd_decay_shrink`);
#   "adaptive-coupled"  coupled L2 divided by the gradient's running RMS: unpredictable from the schedule → None;
#   "simulate"          the class's own step() on a stand-in scalar with a zero gradient (`decoupled` labels it).
# A group's own ``decoupled_weight_decay`` flag (torch's Adam/AdamW) wins over the rule's. Classes that say
# nothing fall to "simulate". Adding an optimizer is one `register_optimizer` call.


@dataclass(frozen=True)
class DecayRule:
    """How one optimizer class applies weight decay, for the decay horizon.

    Attributes:
        kind: ``"decoupled"``, ``"sgd"``, ``"adaptive-coupled"`` or ``"simulate"`` (see above).
        decoupled: for ``"simulate"``: whether the decay is decoupled (labels the horizon).
        cli_name: the name ``planned_decay_horizon(optimizer=...)`` and ``hf-gammareg inspect --optimizer`` take
            (``None``: not plannable).
        build: ``(params, lr, weight_decay, momentum, nesterov) → optimizer`` for a planned run (with ``cli_name``).
        prefix: for a rule keyed by class name: also match names that start with it (bitsandbytes' ``AdamW8bit``,
            ``PagedAdamW32bit``).
    """

    kind: str
    decoupled: bool = False
    cli_name: str | None = None
    build: Any = None
    prefix: bool = False


DECAY_KINDS = ("decoupled", "sgd", "adaptive-coupled", "simulate")
# Keyed by class (matched along the optimizer's MRO: the most derived registered class wins) or by class name
# (optimizers of packages that may not be installed: bitsandbytes, transformers' Adafactor).
OPTIMIZER_RULES: dict[type | str, DecayRule] = {}


def register_optimizer(key: type | str, kind: str, *, decoupled: bool = False, cli_name: str | None = None,
                       build=None, prefix: bool = False) -> DecayRule:
    """Declare how optimizer class ``key`` (a class, or a class name) applies weight decay; returns the rule."""
    if kind not in DECAY_KINDS:
        raise ValueError(f"kind: one of {DECAY_KINDS}, got {kind!r}")
    if cli_name is not None and build is None:
        raise ValueError(f"cli_name {cli_name!r} needs build=(params, lr, weight_decay, momentum, nesterov) → "
                         "optimizer")
    rule = DecayRule(kind, decoupled=decoupled or kind == "decoupled", cli_name=cli_name, build=build, prefix=prefix)
    OPTIMIZER_RULES[key] = rule
    return rule


def decay_rule(optimizer) -> DecayRule | None:
    """The registered rule of ``optimizer``'s class: by class along its MRO, then by its class name."""
    cls = type(optimizer)
    for klass in cls.__mro__:
        if klass in OPTIMIZER_RULES:
            return OPTIMIZER_RULES[klass]
    name = cls.__name__
    if name in OPTIMIZER_RULES:
        return OPTIMIZER_RULES[name]
    for key, rule in OPTIMIZER_RULES.items():
        if isinstance(key, str) and rule.prefix and name.startswith(key):
            return rule
    return None


def planned_optimizers() -> dict[str, DecayRule]:
    """``{cli name: rule}`` of the optimizers a planned horizon can be computed for."""
    return {rule.cli_name: rule for rule in OPTIMIZER_RULES.values() if rule.cli_name}


register_optimizer(torch.optim.SGD, "sgd", cli_name="sgd", build=lambda params, lr, wd, momentum, nesterov:
                   torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                                   weight_decay=wd))
register_optimizer(torch.optim.AdamW, "decoupled", cli_name="adamw",
                   build=lambda params, lr, wd, momentum, nesterov: torch.optim.AdamW(params, lr=lr, weight_decay=wd))
for _cls in (torch.optim.Adam, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax, torch.optim.Adagrad,
             torch.optim.RMSprop, torch.optim.Adadelta, torch.optim.SparseAdam):
    register_optimizer(_cls, "adaptive-coupled")  # their coupled L2; a decoupled_weight_decay=True group is decoupled
    register_optimizer(_cls.__name__, "adaptive-coupled")  # and classes of other packages with the same name
for _name in ("AdamW", "Lion", "PagedAdamW", "PagedLion", "LAMB", "LARS"):  # bitsandbytes (8-bit, paged) and others
    register_optimizer(_name, "decoupled", prefix=True)
register_optimizer("Adafactor", "simulate", decoupled=True)  # its step size may depend on the step and the RMS


@dataclass(frozen=True)
class GroupHorizon:
    """What weight decay alone does to the parameters of one optimizer parameter group over a run.

    Attributes:
        group: the group's index in ``optimizer.param_groups``.
        weight_decay: the group's coefficient λ.
        decay: ``"decoupled"``, ``"coupled"`` (L2 through the gradient), or ``"none"`` (λ = 0).
        integral: Σ_t lr_t·λ (× the momentum gain 1/(1 − μ) under SGD's coupled L2); ``None`` if unpredictable.
        shrink: the factor weight decay alone multiplies a parameter by over ``num_steps`` (exact for the
            optimizer's update with a zero loss gradient); ``None`` with ``reason`` where it cannot be predicted.
        num_steps: optimizer steps covered.
        optimizer: the optimizer's class name.
        num_params: parameter tensors in the group.
        reason: why ``shrink`` is ``None`` (empty otherwise).
    """

    group: int
    weight_decay: float
    decay: str
    integral: float | None
    shrink: float | None
    num_steps: int
    optimizer: str
    num_params: int = 0
    reason: str = ""

    def describe(self, what: str = "a decayed parameter", *, plural: bool = False) -> str:
        """One sentence: ``"weight decay alone shrinks <what> to 82 % of its value over 790 steps (...)"``."""
        if self.shrink is None:
            return f"the decay horizon of {what} cannot be predicted: {self.reason}"
        if self.decay == "none":
            return f"weight decay is 0 for {what}: nothing shrinks {'them' if plural else 'it'} over {self._steps}"
        return (f"weight decay alone shrinks {what} to {_percent(self.shrink)} of {'their' if plural else 'its'} "
                f"value over {self._steps} ({self._how})")

    def describe_offset(self, what: str, c: str) -> str:
        """One sentence for decayed offset scales ``c + w`` (docs/design.md § Offset scales): decay pulls their scale
        toward ``c``; it never says "shrinks" of them."""
        if self.shrink is None:
            return (f"weight decay pulls the scale of {what} toward {c}, not 0, by an amount that cannot be predicted: "
                    f"{self.reason}")
        if self.decay == "none":
            return f"weight decay is 0: nothing moves the scale of {what} over {self._steps}"
        return (f"weight decay alone pulls the scale of {what} toward {c}, not 0: w keeps {_percent(self.shrink)} "
                f"of its value over {self._steps} ({self._how})")

    @property
    def _how(self) -> str:
        how = ("Σ lr·λ" if self.decay == "decoupled" else "Σ lr·λ/(1 − momentum)") + f" = {self.integral:.3g}"
        return f"{self.decay} decay, {how}"

    @property
    def _steps(self) -> str:
        return f"{self.num_steps:,} step" + ("" if self.num_steps == 1 else "s")

    @property
    def negligible(self) -> bool:
        """Whether decay moves a parameter of this group by less than 5 % (the policy cannot matter)."""
        return self.shrink is not None and self.shrink > FINE_TUNING_SHRINK

    def to_dict(self) -> dict:
        return {"group": self.group, "weight_decay": self.weight_decay, "decay": self.decay,
                "integral": self.integral, "shrink": self.shrink, "num_steps": self.num_steps,
                "optimizer": self.optimizer, "num_params": self.num_params, "reason": self.reason}


def _percent(x: float) -> str:
    p = 100 * x
    return f"{p:.0f} %" if 1 <= p <= 99 or p in (0, 100) else f"{p:.3g} %"


def _unwrap_optimizer(optimizer):
    """The torch optimizer behind accelerate's `AcceleratedOptimizer` (and similar ``.optimizer`` wrappers)."""
    seen = set()
    # AcceleratedOptimizer is itself a torch Optimizer subclass: unwrap on the attribute, not the type.
    while (hasattr(optimizer, "optimizer") and hasattr(optimizer.optimizer, "param_groups")
           and id(optimizer) not in seen):
        seen.add(id(optimizer))
        optimizer = optimizer.optimizer
    return optimizer


def _unwrap_scheduler(scheduler):
    while not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler) and hasattr(scheduler, "scheduler"):
        scheduler = scheduler.scheduler
    return scheduler


def _check(optimizer, num_steps, lr_scheduler):
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps: expected the number of optimizer steps as an int, got {type(num_steps).__name__}")
    if num_steps <= 0:
        raise ValueError(f"num_steps: must be > 0 (the optimizer steps of the run: max_steps, or epochs × batches "
                         f"per epoch ÷ gradient_accumulation_steps), got {num_steps}")
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer with parameter groups, got "
                        f"{type(optimizer).__name__}; pass the optimizer the run steps (trainer.optimizer after "
                        "create_optimizer(), or the one built from param_groups(...))")
    inner = _unwrap_optimizer(optimizer)
    if lr_scheduler is not None:
        scheduler = _unwrap_scheduler(lr_scheduler)
        if not hasattr(scheduler, "optimizer") or not hasattr(scheduler, "step"):
            raise TypeError(f"lr_scheduler: expected a torch.optim.lr_scheduler.LRScheduler, got "
                            f"{type(lr_scheduler).__name__}")
        own = scheduler.optimizer
        if (own is not optimizer and _unwrap_optimizer(own) is not inner
                and getattr(own, "param_groups", None) is not groups):
            raise ValueError("lr_scheduler: this scheduler drives another optimizer, so its learning rates are not "
                             "this one's; pass the scheduler made for this optimizer (e.g. trainer.lr_scheduler "
                             "with trainer.optimizer)")
    return inner, groups


def _learning_rates(groups: list[dict], num_steps: int, lr_scheduler) -> list[list[float]]:
    """``[[lr at step 0, 1, …] per group]`` — what the optimizer will use, without stepping the real scheduler."""
    # Adafactor with relative_step holds lr=None: it computes its own step size (NaN here, _simulate skips it).
    current = [float("nan") if g.get("lr") is None else float(g["lr"]) for g in groups]
    if lr_scheduler is None:
        return [[lr] * num_steps for lr in current]
    scheduler = _unwrap_scheduler(lr_scheduler)
    if type(scheduler) is torch.optim.lr_scheduler.LambdaLR:
        # transformers' schedules: lr_t = base_lr · λ(t); step 0 uses the lr the optimizer holds now.
        start = scheduler.last_epoch
        return [[lr] + [base * fn(start + t) for t in range(1, num_steps)]
                for lr, base, fn in zip(current, scheduler.base_lrs, scheduler.lr_lambdas)]
    # Any other scheduler: a copy of it, bound to a stand-in optimizer holding copies of the groups.
    stand_in = torch.optim.SGD([{**{k: v for k, v in g.items() if k != "params"}, "params": [torch.zeros(1)]}
                                for g in groups])
    memo = {id(scheduler.optimizer): stand_in, id(_unwrap_optimizer(scheduler.optimizer)): stand_in}
    twin = copy.deepcopy(scheduler, memo)
    out: list[list[float]] = [[] for _ in groups]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": the stand-in never steps
        for t in range(num_steps):
            for k, g in enumerate(stand_in.param_groups):
                out[k].append(float(g["lr"]))
            if t + 1 < num_steps:
                twin.step()
    return out


def sgd_decay_shrink(lrs: list[float], wd: float, momentum: float, dampening: float, nesterov: bool) -> float:
    """torch.optim.SGD with a zero loss gradient, exactly:

    d = λ·p; buf = μ·buf + (1 − δ)·d; p −= lr·(d + μ·buf | buf).
    """
    p, buf = 1.0, None
    for lr in lrs:
        d = wd * p
        if momentum:
            buf = d if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p -= lr * d
    return p


def _simulate(inner, index: int, lrs: list[float]) -> float:
    """Step a fresh optimizer of ``inner``'s class on one scalar (value 1) with a zero gradient;
    the scalar at the end."""
    group = inner.param_groups[index]
    scalar = torch.ones(1, dtype=torch.float64, requires_grad=True)
    hyper = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
    for key in ("foreach", "fused", "capturable"):
        if key in hyper:
            hyper[key] = None if key != "capturable" else False
    twin = type(inner)([{"params": [scalar], **hyper}])
    scalar.grad = torch.zeros_like(scalar)
    for lr in lrs:
        if math.isfinite(lr):
            twin.param_groups[0]["lr"] = lr
        twin.step()
    return float(scalar.detach())


def _group_horizon(inner, index: int, group: dict, lrs: list[float], num_steps: int) -> GroupHorizon:
    name = type(inner).__name__
    wd = float(group.get("weight_decay", 0.0) or 0.0)
    base = {"group": index, "weight_decay": wd, "num_steps": num_steps, "optimizer": name,
            "num_params": len(group.get("params", []))}
    if wd == 0:
        return GroupHorizon(decay="none", integral=0.0, shrink=1.0, **base)
    rule = decay_rule(inner)
    if rule is not None and rule.kind == "sgd":
        mu = float(group.get("momentum", 0.0) or 0.0)
        damp = float(group.get("dampening", 0.0) or 0.0)
        nesterov = bool(group.get("nesterov", False))
        gain = (1 + mu * (1 - damp) / (1 - mu)) if nesterov else ((1 - damp) / (1 - mu) if mu else 1.0)
        return GroupHorizon(decay="coupled", integral=wd * gain * sum(lrs),
                            shrink=sgd_decay_shrink(lrs, wd, mu, damp, nesterov), **base)
    decoupled = group.get("decoupled_weight_decay")
    if decoupled is None:
        decoupled = rule is not None and rule.decoupled
    if not decoupled and rule is not None and rule.kind == "adaptive-coupled":
        return GroupHorizon(decay="coupled", integral=None, shrink=None, reason=(
            f"{name} adds λ·θ to the gradient (coupled L2) and then divides by the gradient's running RMS, so how far "
            "decay moves a parameter depends on the gradients, not on the schedule; use its decoupled form (AdamW, "
            "or decoupled_weight_decay=True) for a predictable decay"), **base)
    integral = wd * sum(lrs)
    if (rule is not None and rule.kind == "simulate") or not decoupled:
        # Adafactor's step size may depend on the step count and the parameter's own RMS; any other class:
        # its own update rule, run on a scalar with a zero gradient.
        try:
            shrink = _simulate(inner, index, lrs)
        except Exception as exc:  # an optimizer that cannot be rebuilt from its groups (or needs CUDA)
            return GroupHorizon(decay="decoupled" if decoupled else "coupled", integral=integral, shrink=None,
                                reason=f"{name} could not be stepped on a stand-in scalar "
                                       f"({type(exc).__name__}: {exc})", **base)
        if not math.isfinite(integral):  # Adafactor's relative step: no lr in the group; read the integral back
            integral = -math.log(shrink) if shrink > 0 else None
        return GroupHorizon(decay="decoupled" if decoupled else "coupled", integral=integral, shrink=shrink, **base)
    shrink = 1.0
    for lr in lrs:
        shrink *= 1.0 - lr * wd
    return GroupHorizon(decay="decoupled", integral=integral, shrink=shrink, **base)


def decay_horizon(optimizer, num_steps: int, lr_scheduler=None, *,
                  penalty: dict[int, float] | None = None) -> list[GroupHorizon]:
    """What weight decay alone does to each parameter group of ``optimizer`` over ``num_steps`` optimizer steps.

    Args:
        optimizer: a ``torch.optim.Optimizer`` (or accelerate's wrapper of one), as it stands before the steps:
            the learning rates in its groups are those of the next step.
        num_steps: optimizer steps to cover (with gradient accumulation: optimizer steps, not batches).
        lr_scheduler: the scheduler that will step after every optimizer step (``None``: constant lr).
        penalty: ``{group index: λ}`` for groups whose parameters are regularized by an L2 penalty λ/2·‖θ‖²
            in the loss (``regularization="l2"``) instead of the optimizer's weight decay: coupled decay at λ,
            predictable under SGD, ``None`` with the reason under an adaptive optimizer.

    Returns one :class:`GroupHorizon` per group, in ``optimizer.param_groups`` order. Exact for the update
    rule with a zero loss gradient: AdamW (any ``foreach``/``fused`` variant) and other decoupled decays
    ``Π (1 − lr_t·λ)``; SGD with momentum, dampening, Nesterov by its recurrence; Adafactor and unknown
    classes by running their own ``step()`` on a stand-in scalar. Neither the optimizer, its parameters, nor
    the scheduler is changed. Linear in ``num_steps``: 100,000 steps of a transformers schedule take
    a fraction of a second.
    """
    inner, groups = _check(optimizer, num_steps, lr_scheduler)
    lrs = _learning_rates(groups, num_steps, lr_scheduler)
    out = []
    for k, g in enumerate(groups):
        if penalty and penalty.get(k):
            # The penalty's gradient λ·θ joins the loss gradient: coupled, whatever the optimizer's own decay is.
            g = {**g, "weight_decay": penalty[k], "decoupled_weight_decay": False}
            if not isinstance(inner, torch.optim.SGD):
                name = type(inner).__name__
                out.append(GroupHorizon(group=k, weight_decay=penalty[k], decay="coupled", integral=None, shrink=None,
                                        num_steps=num_steps, optimizer=name, num_params=len(g.get("params", [])),
                                        reason=f"an L2 penalty in the loss reaches the parameters through {name}'s "
                                               "normalized update, so how far it moves them depends on the gradients; "
                                               "under SGD it is predictable"))
                continue
        out.append(_group_horizon(inner, k, g, lrs[k], num_steps))
    return out


def horizon_lines(horizon: GroupHorizon | None, n_decayed: int, *, offsets_decayed: Sequence[float] = (),
                  offsets_kept: Sequence[float] = ()) -> tuple[str | None, str | None]:
    """``(the "decay horizon: …" line, the notice when decay barely moves γ)`` for a run that decays ``n_decayed`` γ.

    ``offsets_decayed`` / ``offsets_kept``: the offset ``c`` of each offset scale ``c + w`` among the decayed γ /
    among the γ not decayed (docs/design.md § Offset scales); the line says decay pulls their scale toward ``c``
    and counts them apart from the γ it shrinks. The notice does not depend on the policy: when weight decay cannot
    move a parameter measurably, no γ policy can change the run's result. ``(None, None)`` for no horizon.
    """
    if horizon is None:
        return None, None
    plain = n_decayed - len(offsets_decayed)
    if plain:
        line = "decay horizon: " + horizon.describe(f"the {plain} decayed γ", plural=True)
    elif n_decayed:
        line = "decay horizon: " + horizon.describe_offset(
            f"the {n_decayed} decayed offset γ ({offset_form(offsets_decayed)})", offset_toward(offsets_decayed))
    else:
        line = ("decay horizon: no γ is decayed; " + horizon.describe("a decayed parameter")
                .replace("weight decay alone shrinks", "weight decay alone would shrink", 1))
    if plain and offsets_decayed:
        line += (f"; on the {len(offsets_decayed)} decayed offset γ ({offset_form(offsets_decayed)}) it pulls the "
                 f"scale toward {offset_toward(offsets_decayed)}, not 0")
    if offsets_kept:
        line += (f"; the {len(offsets_kept)} offset γ ({offset_form(offsets_kept)}) are not decayed: decay would "
                 f"pull their scale toward {offset_toward(offsets_kept)}, not 0")
    notice = None
    if horizon.negligible:
        notice = ("weight decay barely moves γ in this run: the γ policy cannot change its result measurably — "
                  "expected for fine-tuning; from-scratch training or a larger gamma_weight_decay moves them.")
    return line, notice


def planned_decay_horizon(args=None, *, num_steps: int, weight_decay: float, l2: bool = False,
                          lr: float | None = None, optimizer: str = "adamw", momentum: float = 0.0,
                          nesterov: bool = False, schedule: str = "linear", warmup: int | float = 0) -> GroupHorizon:
    """The horizon of a run that is only planned: what weight decay alone does over ``num_steps`` optimizer steps to
    a parameter decayed at ``weight_decay`` (``l2``: an L2 penalty λ/2·‖θ‖² in the loss rather than the optimizer's
    weight decay). The one planned horizon: `GammaRegTrainer` and ``hf-gammareg inspect`` both call it.

    The run is described one of two ways:

    * ``args``, the ``TrainingArguments`` of a `Trainer` run: the optimizer and schedule `Trainer` builds from them
      (``Trainer.get_optimizer_cls_and_kwargs``, ``get_scheduler`` with ``args.get_warmup_steps``), on one stand-in
      scalar. Only this path imports ``transformers.Trainer``. It raises what building that optimizer raises on this
      machine (bitsandbytes without CUDA, …).
    * by name, as ``hf-gammareg inspect`` does: ``optimizer`` (a name of `planned_optimizers`: ``"adamw"``,
      ``"sgd"``, or one registered) at ``lr`` with transformers' ``schedule`` (``get_scheduler`` names: linear,
      cosine, constant, constant_with_warmup, …) after ``warmup`` steps (a float < 1: that fraction of
      ``num_steps``, as ``TrainingArguments.warmup_steps``).
    """
    if args is not None:
        if lr is not None:
            raise TypeError("planned_decay_horizon: args= describes the run (its lr included); lr=, optimizer=, "
                            "schedule= describe a run without TrainingArguments")
        return _planned_from_arguments(args, num_steps, weight_decay, l2)
    if lr is None:
        raise TypeError("planned_decay_horizon: describe the run by its TrainingArguments (args=) or by lr= "
                        "(with optimizer=, schedule=, warmup=)")
    plannable = planned_optimizers()
    if optimizer not in plannable:
        raise ValueError(f"optimizer: one of {sorted(plannable)}, got {optimizer!r}")
    for key, value in (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{key}: expected a finite number >= 0, got {value!r}")
    if momentum >= 1:
        raise ValueError(f"momentum: must be < 1, got {momentum}")
    from transformers import get_scheduler

    scalar = torch.zeros(1, requires_grad=True)
    opt = plannable[optimizer].build([scalar], lr, 0.0 if l2 else weight_decay, momentum, nesterov)
    if isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps > 0:
        warmup_steps = math.ceil(warmup * num_steps) if isinstance(warmup, float) and 0 <= warmup < 1 else int(warmup)
        scheduler = get_scheduler(schedule, opt, num_warmup_steps=warmup_steps, num_training_steps=num_steps)
    else:
        scheduler = None  # decay_horizon names the bad num_steps
    return decay_horizon(opt, num_steps, scheduler, penalty={0: weight_decay} if l2 else None)[0]


def _planned_from_arguments(args, num_steps: int, weight_decay: float, l2: bool) -> GroupHorizon:
    """`planned_decay_horizon` of the run ``args`` (TrainingArguments) describe: `Trainer`'s optimizer and schedule."""
    from transformers import Trainer, get_scheduler

    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    scalar = torch.nn.Parameter(torch.ones(1))
    optimizer = optimizer_cls([{"params": [scalar], "weight_decay": 0.0 if l2 else weight_decay}], **kwargs)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer=optimizer,
                              num_warmup_steps=args.get_warmup_steps(num_steps), num_training_steps=num_steps,
                              scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    return decay_horizon(optimizer, num_steps, scheduler, penalty={0: weight_decay} if l2 else None)[0]
