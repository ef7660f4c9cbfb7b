"""Policies: from γ roles to the set of γ that get weight decay (DESIGN.md § Policies)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

from .roles import ROLES

if TYPE_CHECKING:  # pragma: no cover
    from .roles import GammaReport

NAMED_POLICIES = ("guidelines", "hf-default", "all", "none")
POLICY_HELP = (
    "Which normalization scales (γ) get weight decay: 'guidelines' (the paper's: roles branch and "
    "invariant), 'hf-default' (what transformers.Trainer does), 'all', 'none', a comma list of roles "
    f"({', '.join(ROLES)}), or 'only:<role>'."
)
_MAX_PATTERN_LEN = 1000


def parse_policy(policy: str) -> str | frozenset[str]:
    """Validate ``policy``: a named policy (returned as is) or the frozenset of roles it decays."""
    if not isinstance(policy, str) or not policy.strip():
        raise ValueError(f"gamma policy must be a non-empty string; {POLICY_HELP}")
    text = policy.strip()
    if text in NAMED_POLICIES:
        return text
    if text.startswith("only:"):
        roles = [text[len("only:"):].strip()]
    else:
        roles = [r.strip() for r in text.split(",")]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown gamma policy or role {unknown or [text]!r} in {policy!r}. {POLICY_HELP}")
    return frozenset(roles)


def compile_patterns(patterns: Iterable[str] | str | None, field: str) -> list[re.Pattern]:
    """Compile include/exclude regexes, naming ``field`` in the error for a bad one."""
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()] if patterns else []
    out = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"{field}: every pattern must be a string, got {type(pattern).__name__}")
        if len(pattern) > _MAX_PATTERN_LEN:
            raise ValueError(f"{field}: pattern of {len(pattern)} characters is longer than {_MAX_PATTERN_LEN}")
        try:
            out.append(re.compile(pattern))
        except re.error as exc:
            raise ValueError(f"{field}: invalid regular expression {pattern!r}: {exc}") from exc
    return out


def select_decayed(
    report: "GammaReport", policy: str = "guidelines", *, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> set[str]:
    """The γ names that get weight decay under ``policy``; ``include``/``exclude`` regexes win over roles.

    ``include`` forces decay for γ whose name matches (``re.search``); ``exclude`` forbids it and
    wins over ``include``. γ that took no part in the forward pass (``report.unused``) follow
    ``hf-default`` unless a regex names them.
    """
    parsed = parse_policy(policy)
    inc = compile_patterns(include, "gamma_include")
    exc = compile_patterns(exclude, "gamma_exclude")
    hf = set(report.hf_default)
    decayed: set[str] = set()
    for name in report.gammas:
        role = report.roles.get(name)
        if parsed == "all":
            on = True
        elif parsed == "none":
            on = False
        elif parsed == "hf-default" or role is None:
            on = name in hf
        elif parsed == "guidelines":
            on = role in ("branch", "invariant")
        else:
            on = role in parsed
        if any(p.search(name) for p in inc):
            on = True
        if any(p.search(name) for p in exc):
            on = False
        if on:
            decayed.add(name)
    return decayed
