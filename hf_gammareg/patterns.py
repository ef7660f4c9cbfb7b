"""Include/exclude patterns: the one reading of a value (`normalize_patterns`), and the vetting every regex gets
before it runs — a config pulled from the Hub is untrusted, and Python's `re` has no timeout
(`check_pattern_backtracking`)."""

from __future__ import annotations

import re
from typing import Iterable

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


