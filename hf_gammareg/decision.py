"""The decision: which γ of a `GammaReport` get weight decay under a `GammaRegConfig`, as typed rows.

:func:`decide` is the one function the plan, the Trainer's table, ``hf-gammareg inspect``, the model card and the
architecture benchmark call: ``decide(report, config, hf_decayed)`` → `Decisions`, one `GammaDecision` per γ
(decayed or not, what decided it — its role, the HF rule, an include/exclude regex — its coefficient and reason).
``hf_decayed`` is what `transformers.Trainer`'s rule decays for the model
(:func:`hf_gammareg.hf_rule.hf_default_decay_names`, or the Trainer's own ``get_decay_parameter_names``): the caller
has the model and computes it; a report holds roles, never a policy's answer nor the HF rule's. The rows stay data
until the edge: :func:`decision_table` and :func:`decision_summary` render them.

Layering: above the report, the analysis, the policies and the config (it applies a config's policy to a report),
below the plan (tests/test_layering.py).

The policy methods a `GammaReport` had in 0.1 — ``decay_names``, ``decisions``, ``to_table(policy)``,
``summary(policy)`` — are attached to it here, deprecated, for one release. They cannot live in report.py: the
report sits below the decision and imports nothing above it, not even lazily. Every import of hf_gammareg imports
this module (hf_gammareg/__init__.py), so old code keeps working, with a `DeprecationWarning` naming the new call;
``report.to_table()`` and ``report.summary()`` with no policy are the report's own (roles only) and do not warn.
A report no longer carries the HF rule's names, so a deprecated call that needs them (policy ``hf-default``, a γ
without a role) takes them as ``hf_decayed=`` and otherwise raises ``ValueError`` saying so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .config import GammaRegConfig
from .policy import apply_policy
from .report import GammaReport
from .tables import text_table

__all__ = ["Decisions", "GammaDecision", "decide", "decision_summary", "decision_table"]


@dataclass(frozen=True)
class GammaDecision:
    """What the decision does to one γ.

    Attributes:
        name: the parameter, as the report names it.
        role: its role (one of ``ROLES``), or ``"untracked"`` / ``"unused"`` for a γ without one.
        decayed: whether it gets weight decay.
        by: what decided it: ``"role"`` (the policy's roles), ``"offset scale"`` (``guidelines`` keeps a ``c + w``
            scale undecayed), ``"hf rule"`` (``hf-default``, and a γ without a role: what `transformers.Trainer`'s
            rule does), ``"policy"`` (``all`` / ``none``: every γ alike), or ``"include"`` / ``"exclude"`` where a
            regex changed what the policy alone decides.
        coefficient: its weight decay: ``0.0`` when not decayed; when decayed ``gamma_weight_decay``, else the
            ``weight_decay`` given to `decide` (``None`` when neither is known).
        reason: the one-line reason for its role (`GammaReport.reason_of`).
        pattern: the include/exclude regex that decided it (``by`` ``"include"`` / ``"exclude"``), else ``None``.
        norm: the class of its norm module (``"layer scale (<module class>)"`` for a layer scale).
        numel: its number of elements.
        offset: ``c`` for an offset scale ``c + w`` (decay pulls its scale toward ``c``), else ``None``.
    """

    name: str
    role: str
    decayed: bool
    by: str
    coefficient: float | None
    reason: str = ""
    pattern: str | None = None
    norm: str = "?"
    numel: int = 0
    offset: float | None = None

    @property
    def overridden_by(self) -> str | None:
        """``"include"`` / ``"exclude"`` where a regex changed what the policy alone decides, else ``None``."""
        return self.by if self.by in ("include", "exclude") else None

    @property
    def decision_text(self) -> str:
        """How a table shows it: ``"yes"`` / ``"no"``, and ``" (include)"`` / ``" (exclude)"`` where a regex decided."""
        return ("yes" if self.decayed else "no") + (f" ({self.overridden_by})" if self.overridden_by else "")


@dataclass(frozen=True)
class Decisions:
    """`decide`'s answer: one `GammaDecision` per γ of ``report``, in its order (classified, untracked, unused).

    Iterating gives the rows. ``hf_decayed`` is what the HF rule decays among the report's γ (``None`` when the
    caller did not give it; no row needed it then).
    """

    report: GammaReport
    policy: str
    rows: tuple[GammaDecision, ...]
    hf_decayed: frozenset[str] | None = None

    def __iter__(self) -> Iterator[GammaDecision]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def decayed(self) -> set[str]:
        """The names of the γ that get weight decay."""
        return {d.name for d in self.rows if d.decayed}

    def by_name(self) -> dict[str, GammaDecision]:
        """``{γ name: its row}``."""
        return {d.name: d for d in self.rows}


def decide(report: GammaReport, config: GammaRegConfig, hf_decayed: Iterable[str] | None, *,
           weight_decay: float | None = None) -> Decisions:
    """Which γ of ``report`` get weight decay under ``config`` (its policy, include and exclude), γ by γ.

    Args:
        report: the roles (``classify_gammas(model)``).
        config: the `GammaRegConfig`: ``policy``, ``include`` / ``exclude`` (regexes searched in the names; they win
            over the role, and ``exclude`` over ``include``), ``gamma_weight_decay``.
        hf_decayed: the parameters (the report's names) `transformers.Trainer`'s rule decays for the model —
            ``hf_default_decay_names(model)``, or the rule a caller uses instead (``param_groups``' ``no_decay``).
            ``hf-default`` follows it, and so does every γ without a role (untracked, unused) unless a regex names
            it. ``None`` only where none of these applies (a ``ValueError`` says so otherwise).
        weight_decay: the run's weight decay, for the ``coefficient`` of the decayed γ when ``gamma_weight_decay``
            is not set.

    Returns `Decisions`. The roles are the report's; nothing here reads the model.
    """
    choices = apply_policy(report, config.policy, include=config.include, exclude=config.exclude,
                           hf_decayed=hf_decayed)
    coefficient = config.gamma_coefficient(weight_decay)
    rows = tuple(
        GammaDecision(name=name, role=report.role_of(name), decayed=c.decayed, by=c.by,
                      coefficient=coefficient if c.decayed else 0.0, reason=report.reason_of(name),
                      pattern=c.pattern, norm=report.norm_types.get(name, "?"), numel=report.numel.get(name, 0),
                      offset=report.offsets.get(name))
        for name, c in choices.items())
    hf = None if hf_decayed is None else frozenset(hf_decayed) & frozenset(report.gammas)
    return Decisions(report=report, policy=config.policy, rows=rows, hf_decayed=hf)


# -- rendering ------------------------------------------------------------------------------------------------------
def decision_table(decisions: Decisions) -> str:
    """Plain-text table, one row per γ: name, norm type, role, decay (yes/no, "(include)"/"(exclude)"), reason."""
    rows = [(d.name, d.norm, d.role, d.decision_text, d.reason) for d in decisions]
    return "\n".join(text_table(("parameter", "norm", "role", "decay", "reason"), rows))


def decision_summary(decisions: Decisions) -> str:
    """One line: the report's counts per role (`GammaReport.summary`), how many offset scales and γ are decayed."""
    report, decayed = decisions.report, decisions.decayed
    line = report.summary()
    if report.offsets:
        line += f", {len(set(report.offsets) & decayed)} decayed"
    numel = sum(d.numel for d in decisions if d.decayed)
    return f"{line}; policy {decisions.policy!r} decays {len(decayed)} ({numel:,} values)"


# -- GammaReport's policy methods of 0.1, deprecated (see the module docstring) -------------------------------------
def _deprecated_decide(report: GammaReport, method: str, policy: str, include, exclude, hf_decayed) -> Decisions:
    warnings.warn(f"GammaReport.{method} is deprecated: a report holds roles, not a policy's decisions. Use "
                  "hf_gammareg.decision.decide(report, GammaRegConfig(policy=...), hf_default_decay_names(model)) "
                  "and decision_table / decision_summary; the old method goes in the next release.",
                  DeprecationWarning, stacklevel=3)
    return decide(report, GammaRegConfig(policy=policy, include=include, exclude=exclude), hf_decayed)


def _decay_names(self: GammaReport, policy: str = "guidelines", *, include: Iterable[str] = (),
                 exclude: Iterable[str] = (), hf_decayed: Iterable[str] | None = None) -> set[str]:
    """Deprecated: ``decide(report, config, hf_decayed).decayed``."""
    return _deprecated_decide(self, "decay_names", policy, include, exclude, hf_decayed).decayed


def _decisions(self: GammaReport, policy: str = "guidelines", *, include: Iterable[str] = (),
               exclude: Iterable[str] = (), hf_decayed: Iterable[str] | None = None) -> dict[str, str]:
    """Deprecated: ``{d.name: d.decision_text for d in decide(report, config, hf_decayed)}``."""
    return {d.name: d.decision_text
            for d in _deprecated_decide(self, "decisions", policy, include, exclude, hf_decayed)}


def _accepting_a_policy(own, render, method: str):
    """``own`` (the report's roles-only table or summary), also taking 0.1's policy arguments: then deprecated,
    rendering the decision with ``render``."""

    def with_policy(self: GammaReport, policy: str | None = None, *, include: Iterable[str] = (),
                    exclude: Iterable[str] = (), hf_decayed: Iterable[str] | None = None) -> str:
        if policy is None and not include and not exclude:
            return own(self)
        return render(_deprecated_decide(self, f"{method}(policy)", policy or "guidelines", include, exclude,
                                         hf_decayed))

    with_policy.__name__, with_policy.__qualname__ = own.__name__, own.__qualname__
    with_policy.__doc__ = (f"{own.__doc__}\n\n        Deprecated since 0.2: with a policy (and include/exclude, "
                           f"hf_decayed), what `{render.__name__}(decide(...))` renders.")
    return with_policy


GammaReport.decay_names = _decay_names
GammaReport.decisions = _decisions
GammaReport.to_table = _accepting_a_policy(GammaReport.to_table, decision_table, "to_table")
GammaReport.summary = _accepting_a_policy(GammaReport.summary, decision_summary, "summary")
