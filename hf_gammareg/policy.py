"""Policies: from γ roles to the set of γ that get weight decay (docs/design.md § Policies)."""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import TYPE_CHECKING, Iterable

from .hf_rule import hf_default_decay_names  # noqa: F401  (the HF rule, re-exported where it was)
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

    def decays(self, name: str, role: str | None, hf: set[str], offsets) -> bool:
        """Whether this policy decays γ ``name`` of role ``role`` (``hf``: what the HF rule decays)."""
        if self.every is not None:
            return self.every
        if self.hf_rule or role is None:
            return name in hf
        if self.spares_offsets and name in offsets:
            # Decay pulls a c + w scale toward c, which serves neither guideline.
            return False
        return role in self.roles


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


_MAX_PATTERN_LEN = 1000
# Python's `re` has no timeout, so a pattern is vetted before it is ever run. Parameter names are
# short (< ~150 characters), which bounds polynomial backtracking: k unbounded quantifiers cost up
# to ~len(name)**(k+1) steps on a failed search (measured: `.*.*.*x` 0.03 s, `.*` x5 14 s on 120
# characters). Nested or alternated quantifiers are exponential whatever the length.
_MAX_UNBOUNDED_QUANTIFIERS = 3

try:  # Python >= 3.11
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse
# Possessive repeats and atomic groups exist from Python 3.11 on.
_REPEATS = tuple(getattr(_sre_parse, n) for n in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
                 if hasattr(_sre_parse, n))
_ATOMIC_GROUP = getattr(_sre_parse, "ATOMIC_GROUP", object())


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


_MAX_PATTERNS = 256


def normalize_patterns(patterns: Iterable[str] | str | None, field: str) -> list[str]:
    """The one reading of an include/exclude value: ``None`` → ``[]``, a string → that one regex, a sequence of
    strings → those regexes. A string is never split on commas (``h\\.{1,3}`` is one pattern); each pattern is
    vetted (it compiles, and cannot backtrack catastrophically). ``ValueError`` names ``field``."""
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns] if patterns else []
    elif not isinstance(patterns, Iterable) or isinstance(patterns, (bytes, dict)):
        raise ValueError(f"{field}: expected a regular expression or a list of them, got {type(patterns).__name__}")
    patterns = list(patterns)
    if len(patterns) > _MAX_PATTERNS:
        raise ValueError(f"{field}: {len(patterns)} patterns is more than {_MAX_PATTERNS}")
    for pattern in patterns:
        _vet_pattern(pattern, field)
    return patterns


def compile_patterns(patterns: Iterable[str] | str | None, field: str) -> list[re.Pattern]:
    """:func:`normalize_patterns`, compiled."""
    return [re.compile(p) for p in normalize_patterns(patterns, field)]


def _vet_pattern(pattern, field: str) -> None:
    if not isinstance(pattern, str):
        raise ValueError(f"{field}: every pattern must be a string, got {type(pattern).__name__}")
    if len(pattern) > _MAX_PATTERN_LEN:
        raise ValueError(f"{field}: pattern of {len(pattern)} characters is longer than {_MAX_PATTERN_LEN}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{field}: invalid regular expression {pattern!r}: {exc}") from exc
    check_pattern_backtracking(pattern, field)


def unmatched_pattern_notices(names: Iterable[str], include: Iterable[str] = (), exclude: Iterable[str] = (), *,
                              include_arg: str = "include", exclude_arg: str = "exclude") -> list[str]:
    """One notice for each include/exclude pattern that matches none of ``names`` (a typo, usually)."""
    names = list(names)
    out = []
    for arg, patterns in ((include_arg, include), (exclude_arg, exclude)):
        for pattern, compiled in zip(normalize_patterns(patterns, arg), compile_patterns(patterns, arg)):
            if not any(compiled.search(n) for n in names):
                out.append(f"{arg} pattern {pattern!r} matches no γ; check it against the names in this table.")
    return out


def check_pattern_backtracking(pattern: str, field_name: str) -> None:
    """Refuse a regex that can backtrack catastrophically on a parameter name (``ValueError``).

    Refused: a variable quantifier over something that itself varies in length — a nested
    quantifier (``(a+)+``, ``(.*x)*``) or an alternation (``(a|ab)*``) — which is exponential, and
    more than ``_MAX_UNBOUNDED_QUANTIFIERS`` unbounded quantifiers (``*``, ``+``, ``{n,}``) in one
    pattern, which is polynomial of that degree. Patterns that select γ by name never need either;
    single-character alternatives (``(a|b)+``) compile to a character class and are fine.
    """
    unbounded = 0

    def varies(items) -> bool:
        for op, av in items:
            if op in _REPEATS:
                if av[0] != av[1] or varies(av[2]):
                    return True
            elif op is _sre_parse.BRANCH:
                return True
            elif op is _sre_parse.SUBPATTERN and varies(av[-1]):
                return True
            elif op is _ATOMIC_GROUP and varies(av):
                return True
        return False

    def walk(items) -> None:
        nonlocal unbounded
        for op, av in items:
            if op in _REPEATS:
                lo, hi, body = av
                if hi == _sre_parse.MAXREPEAT:
                    unbounded += 1
                if hi != lo and hi > 1 and varies(body):
                    raise ValueError(
                        f"{field_name}: pattern {pattern[:80]!r} nests a quantifier or an alternation inside a "
                        "quantifier (like `(a+)+` or `(a|ab)*`), which can backtrack for exponential time; "
                        "rewrite it without the nesting (e.g. `a+` for `(a+)+`)")
                walk(body)
            elif op is _sre_parse.BRANCH:
                for alternative in av[1]:
                    walk(alternative)
            elif op is _sre_parse.SUBPATTERN:
                walk(av[-1])
            elif op is _ATOMIC_GROUP:
                walk(av)
            elif op in (_sre_parse.ASSERT, _sre_parse.ASSERT_NOT):
                walk(av[1])
            elif op is _sre_parse.GROUPREF_EXISTS:
                walk(av[1])
                if av[2] is not None:
                    walk(av[2])

    walk(_sre_parse.parse(pattern))
    if unbounded > _MAX_UNBOUNDED_QUANTIFIERS:
        raise ValueError(
            f"{field_name}: pattern {pattern[:80]!r} has {unbounded} unbounded quantifiers (`*`, `+`, `{{n,}}`); "
            f"at most {_MAX_UNBOUNDED_QUANTIFIERS} are allowed, because backtracking over a name grows with "
            "its length to that power; anchor the pattern or spell out the literal parts")


def select_decayed(
    report: "GammaReport", policy: str = "guidelines", *, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> set[str]:
    """The γ names that get weight decay under ``policy``; ``include``/``exclude`` regexes win over roles.

    ``include`` forces decay for γ whose name matches (``re.search``); ``exclude`` forbids it and
    wins over ``include``. ``guidelines`` keeps the offset scales (``report.offsets``) undecayed; every other
    policy treats them by role like any γ. γ that took no part in the forward pass (``report.unused``) follow
    ``hf-default`` unless a regex names them.
    """
    chosen = resolve_policy(policy)
    inc = compile_patterns(include, "gamma_include")
    exc = compile_patterns(exclude, "gamma_exclude")
    hf = set(report.hf_default)
    decayed: set[str] = set()
    for name in report.gammas:
        on = chosen.decays(name, report.roles.get(name), hf, report.offsets)
        if any(p.search(name) for p in inc):
            on = True
        if any(p.search(name) for p in exc):
            on = False
        if on:
            decayed.add(name)
    return decayed


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
