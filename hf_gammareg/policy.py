"""Policies: from γ roles to the set of γ that get weight decay (docs/design.md § Policies).

Policies are data (`POLICIES`, one `Policy` entry each); `apply_policy` applies one, with the include/exclude
patterns, to a report's roles γ by γ. :func:`hf_gammareg.decision.decide` builds its typed rows on it. What
`transformers.Trainer`'s rule decays is the caller's to give (``hf_decayed``): a report does not hold it.

Layering: above the report and the analysis (a deprecated alias forwards `classify_gammas` down to it), below the
config and the decision.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import TYPE_CHECKING, Container, Iterable

from .hf_rule import hf_default_decay_names  # noqa: F401  (the HF rule, re-exported where it was)
from .patterns import (  # noqa: F401  (re-exported where they were)
    check_pattern_backtracking,
    compile_patterns,
    normalize_patterns,
    unmatched_pattern_notices,
)
from .roles import ROLES

if TYPE_CHECKING:  # pragma: no cover
    from .report import GammaReport

@dataclasses.dataclass(frozen=True)
class Policy:
    """A named γ policy: which γ it decays. The one place a policy is defined (`POLICIES`).

    Attributes:
        name: what ``gamma_policy`` / ``--policy`` take.
        help: a few words for the help text (empty: the name says it).
        roles: the roles it decays.
        hf_rule: decay exactly what `transformers.Trainer`'s rule decays, whatever the role.
        every: ``True``: every γ; ``False``: none; ``None``: by role (γ without a role follow the HF rule).
        spares_offsets: keep offset scales ``c + w`` undecayed (docs/design.md "Offset scales").
    """

    name: str
    help: str = ""
    roles: frozenset = frozenset()
    hf_rule: bool = False
    every: bool | None = None
    spares_offsets: bool = False

    def decision(self, name: str, role: str | None, hf: Container[str] | None, offsets) -> tuple[bool, str]:
        """``(whether this policy decays γ name of role role, what decided it)``.

        What decided it is ``"policy"`` (``every``: all γ alike), ``"hf rule"`` (``hf_rule``, and a γ without a
        role: ``name in hf``, what the HF rule decays), ``"offset scale"`` (spared, ``spares_offsets``) or
        ``"role"``. ``hf`` ``None``: the HF rule's names are not known here, and a γ that needs them raises
        ``ValueError`` with the fix.
        """
        if self.every is not None:
            return self.every, "policy"
        if self.hf_rule or role is None:
            if hf is None:
                raise ValueError(
                    f"policy {self.name!r} decides γ {name!r} ({'hf-default' if self.hf_rule else 'no role'}) by "
                    "transformers.Trainer's rule, which a GammaReport does not hold: pass hf_decayed="
                    "hf_default_decay_names(model) (hf_gammareg.hf_rule), as hf_gammareg.decision.decide does")
            return name in hf, "hf rule"
        if self.spares_offsets and name in offsets:
            # Decay pulls a c + w scale toward c, which serves neither guideline.
            return False, "offset scale"
        return role in self.roles, "role"

    def decays(self, name: str, role: str | None, hf: Container[str] | None, offsets) -> bool:
        """Whether this policy decays γ ``name`` of role ``role`` (``hf``: what the HF rule decays; see `decision`)."""
        return self.decision(name, role, hf, offsets)[0]


POLICIES: dict[str, Policy] = {}


def register_policy(policy: Policy) -> Policy:
    """Add a named policy (a `Policy`); it is then valid wherever a policy is taken and listed in the help."""
    if not isinstance(policy, Policy):
        raise TypeError(f"register_policy takes a Policy, got {type(policy).__name__}")
    unknown = sorted(set(policy.roles) - set(ROLES))
    if unknown or policy.name in ROLES or policy.name.startswith("only:") or "," in policy.name:
        raise ValueError(f"policy {policy.name!r}: a name that is not a role, a role list or only:<role>, and roles "
                         f"among {ROLES} (got unknown {unknown})")
    POLICIES[policy.name] = policy
    return policy


register_policy(Policy("guidelines", "the paper's: roles branch and invariant, offset scales c + w excepted",
                       roles=frozenset({"branch", "invariant"}), spares_offsets=True))
register_policy(Policy("hf-default", "what transformers.Trainer does", hf_rule=True))
register_policy(Policy("all", every=True))
register_policy(Policy("none", every=False))

NAMED_POLICIES = tuple(POLICIES)  # the built-in ones; `POLICIES` holds any registered since


def policy_help() -> str:
    """The help text of every policy option, generated from `POLICIES`."""
    named = ", ".join(f"'{p.name}'" + (f" ({p.help})" if p.help else "") for p in POLICIES.values())
    return (f"Which normalization scales (γ) get weight decay: {named}, a comma list of roles "
            f"({', '.join(ROLES)}), or 'only:<role>'.")


POLICY_HELP = policy_help()  # the built-in policies' help, as a constant


def resolve_policy(policy: str) -> Policy:
    """The `Policy` a ``gamma_policy`` value names: a registered one, or the roles of a list / ``only:<role>``."""
    parsed = parse_policy(policy)
    return POLICIES[parsed] if isinstance(parsed, str) else Policy(policy.strip(), roles=parsed)


def parse_policy(policy: str) -> str | frozenset[str]:
    """Validate ``policy``: a named policy (returned as is) or the frozenset of roles it decays."""
    if not isinstance(policy, str) or not policy.strip():
        raise ValueError(f"gamma policy must be a non-empty string; {policy_help()}")
    text = policy.strip()
    if text in POLICIES:
        return text
    if text.startswith("only:"):
        roles = [text[len("only:"):].strip()]
    else:
        roles = [r.strip() for r in text.split(",")]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        known = [*POLICIES, *ROLES, *(f"only:{r}" for r in ROLES)]
        close = difflib.get_close_matches(text, known, n=1) or difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown gamma policy or role {unknown or [text]!r} in {policy!r}{hint}. {policy_help()}")
    return frozenset(roles)


@dataclasses.dataclass(frozen=True)
class PolicyChoice:
    """What a policy and the include/exclude patterns decide for one γ (the row `apply_policy` gives it).

    ``by``: what decided it — see `Policy.decision`, plus ``"include"`` / ``"exclude"`` where a pattern changed
    what the policy alone decides (``pattern``: that regex).
    """

    decayed: bool
    by: str
    pattern: str | None = None


def apply_policy(
    report: "GammaReport", policy: str = "guidelines", *, include: Iterable[str] = (), exclude: Iterable[str] = (),
    hf_decayed: Iterable[str] | None = None,
) -> dict[str, PolicyChoice]:
    """``{γ: PolicyChoice}`` for every γ of ``report`` (its order) under ``policy``; ``include``/``exclude`` win.

    ``include`` forces decay for γ whose name matches (``re.search``); ``exclude`` forbids it and wins over
    ``include``. ``guidelines`` keeps the offset scales (``report.offsets``) undecayed; every other policy treats
    them by role like any γ. ``hf_decayed``: the γ that ``transformers.Trainer``'s rule decays for this model
    (:func:`hf_gammareg.hf_rule.hf_default_decay_names`), which ``hf-default`` follows and so does every γ without
    a role (``report.unused``, ``report.untracked``) unless a regex names it; ``None`` where no γ needs it.
    """
    chosen = resolve_policy(policy)
    inc = compile_patterns(include, "gamma_include")
    exc = compile_patterns(exclude, "gamma_exclude")
    hf = None if hf_decayed is None else set(hf_decayed)
    out = {}
    for name in report.gammas:
        on, by = chosen.decision(name, report.roles.get(name), hf, report.offsets)
        forced = next((p for p in inc if p.search(name)), None)
        forbidden = next((p for p in exc if p.search(name)), None)
        if forbidden is not None and on:
            out[name] = PolicyChoice(False, "exclude", forbidden.pattern)
        elif forbidden is None and forced is not None and not on:
            out[name] = PolicyChoice(True, "include", forced.pattern)
        else:
            out[name] = PolicyChoice(on, by)
    return out


def select_decayed(
    report: "GammaReport", policy: str = "guidelines", *, include: Iterable[str] = (), exclude: Iterable[str] = (),
    hf_decayed: Iterable[str] | None = None,
) -> set[str]:
    """The γ names that get weight decay under ``policy`` (:func:`apply_policy`, the decayed ones)."""
    return {n for n, c in apply_policy(report, policy, include=include, exclude=exclude,
                                        hf_decayed=hf_decayed).items() if c.decayed}


def __getattr__(name: str):
    # Moved in 0.2: classify_gammas reads roles, so it lives with the analysis (hf_gammareg.analysis); the
    # policies sit below it. The old import path works for one release.
    if name == "classify_gammas":
        import warnings

        from .analysis import classify_gammas

        warnings.warn("hf_gammareg.policy.classify_gammas moved to hf_gammareg.classify_gammas "
                      "(hf_gammareg.analysis.classify_gammas); the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return classify_gammas
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
